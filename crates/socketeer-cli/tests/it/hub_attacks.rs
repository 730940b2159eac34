//! The hub under hostile or careless peers (issue 20): floods that must not take memory without
//! bound or hold acknowledged ingest back, and the limits that refuse them.

use std::io::{Read, Write};
use std::net::TcpStream;

use rusqlite::Connection;

use crate::hub::{Client, get_metric, start_hub_http, stored};
use crate::support::{DEADLINE, Proc, TempDir, addr, wait_until};

/// A hub with ingest, Influx at `influx` (`udp://127.0.0.1:0` or `tcp://...`) and HTTP, each on
/// a free port: the process, the three addresses and the database path.
fn start_hub_influx(dir: &TempDir, influx: &str, extra: &[&str]) -> (Proc, [String; 3], String) {
    let db = dir.0.join("hub.db").display().to_string();
    let mut args = vec![
        "hub",
        "--no-auth",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--influx",
        influx,
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut hub = Proc::spawn(&args);
    hub.stdout.wait_for("three endpoints", |seen| {
        crate::support::listening(seen).len() >= 3
    });
    let eps = crate::support::listening(&hub.stdout.seen);
    let web = addr(&eps[2]).trim_end_matches('/').to_owned();
    (hub, [addr(&eps[0]), addr(&eps[1]), web], db)
}

/// Holds the database's write lock, so the hub's writer waits (up to its 5 s busy timeout per
/// commit), until dropped.
struct WriteLock(Connection);

impl WriteLock {
    fn take(db: &str) -> WriteLock {
        let conn = Connection::open(db).expect("open");
        conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
        WriteLock(conn)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

#[test]
fn an_influx_udp_flood_is_dropped_when_the_writer_is_behind_and_robots_still_get_acks() {
    let dir = TempDir::new("hub-udp-flood");
    let (hub, [ingest, udp, web], db) = start_hub_influx(&dir, "udp://127.0.0.1:0", &[]);
    let lock = WriteLock::take(&db);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    // Datagrams of 1,000 readings each, from invented devices, until the hub says it drops
    // them (bounded: at most 5,000 datagrams).
    let mut datagram = String::new();
    for k in 0..1000 {
        datagram.push_str(&format!("flood,device=f{} v={k}\n", k % 10));
    }
    let mut sent = 0;
    while get_metric(&web, "socketeer_hub_influx_dropped_total") == 0 {
        assert!(sent < 5000, "5,000 datagrams and none dropped");
        for _ in 0..20 {
            socket.send_to(datagram.as_bytes(), &udp).expect("send");
        }
        sent += 20;
    }
    // A robot's record is queued at once (the flood may take only half of the queue) and
    // acknowledged once the writer can write.
    let mut robot = Client::connect(&ingest);
    robot.send("{\"stream\":\"imu\",\"seq\":1,\"values\":{\"ax\":1}}\n");
    drop(lock);
    assert_eq!(robot.answer(), serde_json::json!({"ack": 1}));
    // What was taken is stored; what was dropped was counted, nothing in between.
    let taken = get_metric(&web, "socketeer_hub_influx_lines_total");
    assert!(taken > 0);
    wait_until("the taken lines stored", || stored(&db) as u64 == taken + 1);
    let dropped = get_metric(&web, "socketeer_hub_influx_dropped_total");
    assert_eq!(dropped % 1000, 0, "whole datagrams are dropped: {dropped}");
    hub.stop_ok();
}

/// A connection to `web` that sends half a request head and stops.
fn half_sent(web: &str) -> TcpStream {
    let mut stream = TcpStream::connect(web).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("send");
    stream
}

/// Reads until the hub closes the connection; the error if it never does.
pub fn read_until_closed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut seen = Vec::new();
    match stream.read_to_end(&mut seen) {
        Ok(_) => Ok(seen),
        // Closed with unread data: a reset is a close too.
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => Ok(seen),
        Err(err) => Err(err),
    }
}

#[test]
fn http_connections_are_capped_and_half_sent_requests_closed_while_ingest_goes_on() {
    let dir = TempDir::new("hub-http-cap");
    let (hub, ingest, web, _db) = start_hub_http(
        &dir,
        &["--no-auth", "--http-max-conns", "4", "--http-timeout", "1"],
    );
    let mut stalled: Vec<TcpStream> = (0..4).map(|_| half_sent(&web)).collect();
    // One more is told why, and closed.
    let mut fifth = TcpStream::connect(&web).expect("connect");
    fifth.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let answer = read_until_closed(&mut fifth).expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .expect("Content-Length");
    assert_eq!(length, body.len(), "{answer}");
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("too many HTTP connections")
    );
    // Robots are not held back by a full HTTP listener.
    let mut robot = Client::connect(&ingest);
    robot.send("{\"stream\":\"imu\",\"seq\":1,\"values\":{\"ax\":1}}\n");
    assert_eq!(robot.answer(), serde_json::json!({"ack": 1}));
    // The half-sent heads are closed at their deadline, freeing their places.
    for stream in &mut stalled {
        read_until_closed(stream).expect("a half-sent request is closed at its deadline");
    }
    assert!(get_metric(&web, "socketeer_hub_http_connections_stalled_total") >= 4);
    assert!(get_metric(&web, "socketeer_hub_http_connections_refused_total") >= 1);
    hub.stop_ok();
}

#[test]
fn a_half_sent_request_does_not_keep_the_hub_alive_past_its_grace() {
    let dir = TempDir::new("hub-http-grace");
    let (hub, _ingest, web, _db) = start_hub_http(
        &dir,
        &["--no-auth", "--http-timeout", "600", "--grace", "1"],
    );
    let mut stalled = half_sent(&web);
    // Counted as open: it has been accepted.
    let _open = TcpStream::connect(&web);
    wait_until("the half-sent request accepted", || {
        get_metric(&web, "socketeer_hub_http_connections") >= 2
    });
    hub.stop_ok();
    read_until_closed(&mut stalled).expect("closed at the end of the grace period");
}

#[test]
fn bad_http_limits_are_refused() {
    let (status, _, err) = crate::support::run(
        &[
            "hub",
            "--no-auth",
            "--db",
            "/nonexistent/x.db",
            "--http-timeout",
            "0",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--http-timeout") && err.contains("must be above 0 seconds"),
        "{err}"
    );
}

#[test]
fn ingest_bodies_are_read_as_they_come_within_size_and_time() {
    let dir = TempDir::new("hub-http-bodies");
    let (hub, _ingest, web, _db) = start_hub_http(
        &dir,
        &[
            "--no-auth",
            "--http-ingest-no-auth",
            "--http-timeout",
            "0.5",
        ],
    );
    // Declared too large: refused before a byte of it is read.
    let mut stream = TcpStream::connect(&web).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(
            b"POST /api/ingest?device=d1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n\
              Content-Length: 999999999\r\n\r\n",
        )
        .expect("send");
    let answer =
        String::from_utf8_lossy(&read_until_closed(&mut stream).expect("answer")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Sent in chunks, many records: each acknowledged, in order.
    let mut stream = TcpStream::connect(&web).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(
            b"POST /api/ingest?device=d1&session=a HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
              Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .expect("send");
    for chunk in 0..10 {
        let mut lines = String::new();
        for k in chunk * 300..(chunk + 1) * 300 {
            lines.push_str(&format!(
                "{{\"stream\":\"s\",\"seq\":{k},\"values\":{{\"v\":{k}}}}}\n"
            ));
        }
        // A chunk boundary inside a line, too.
        let (a, b) = lines.split_at(lines.len() / 2 + 3);
        for part in [a, b] {
            stream
                .write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                .expect("chunk");
        }
    }
    stream.write_all(b"0\r\n\r\n").expect("end");
    let answer =
        String::from_utf8_lossy(&read_until_closed(&mut stream).expect("answer")).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let acks: Vec<u64> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["ack"]
                .as_u64()
                .expect("ack")
        })
        .collect();
    assert_eq!(acks, (0..3000).collect::<Vec<u64>>());

    // A body that stops coming: answered at the deadline with what it had, then the rest.
    let mut stream = TcpStream::connect(&web).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(
            b"POST /api/ingest?device=d1&session=b HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n\
              {\"stream\":\"s\",\"seq\":1,\"values\":{\"v\":1}}\n",
        )
        .expect("send");
    let answer =
        String::from_utf8_lossy(&read_until_closed(&mut stream).expect("answer")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("{\"ack\":1}"), "{answer}");
    assert!(answer.contains("not all sent within"), "{answer}");
    hub.stop_ok();
}

#[test]
fn a_detections_answer_is_capped_and_says_so() {
    let dir = TempDir::new("hub-detections-cap");
    let (hub, ingest, web, _db) = start_hub_http(&dir, &["--no-auth"]);
    let mut robot = Client::connect(&ingest);
    // 40 frames of 256 detections: 10,240, past the cap of 10,000.
    let detections: Vec<String> = (0..256)
        .map(|k| format!("{{\"label\":\"l{k}\",\"score\":0.9,\"box\":[0,0,1,1]}}"))
        .collect();
    for seq in 0..40 {
        robot.send(&format!(
            "{{\"stream\":\"cam\",\"seq\":{seq},\"ts\":{},\"frame\":{{\"w\":640,\"h\":480}},\"detections\":[{}]}}\n",
            1_800_000_000 + seq,
            detections.join(",")
        ));
        assert_eq!(robot.answer()["ack"], seq);
    }
    let answer = crate::hub::get_json(
        &web,
        "/api/detections?from=1700000000&to=1900000000&limit=1000",
    );
    assert_eq!(answer["truncated"], true);
    let frames = answer["frames"].as_array().expect("frames");
    assert_eq!(frames.len(), 39);
    assert!(
        frames
            .iter()
            .all(|f| f["detections"].as_array().map(Vec::len) == Some(256))
    );
    hub.stop_ok();
}

/// `POST /api/ingest?device=r1` of one reading, with `headers`.
fn post_reading(web: &str, headers: &str) -> (u16, String) {
    crate::hub::http(
        web,
        "POST",
        "/api/ingest?device=r1",
        headers,
        "{\"stream\":\"s\",\"values\":{\"v\":1}}\n",
    )
}

#[test]
fn web_pages_cannot_write_through_the_api_or_the_ingest_port() {
    let dir = TempDir::new("hub-cross-site");
    let (hub, _ingest, web, db) = start_hub_http(&dir, &["--no-auth", "--http-host", "hub.lab"]);
    let port = web.rsplit_once(':').expect("port").1.to_owned();
    let get = |host: &str| {
        let mut stream = TcpStream::connect(&web).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream
            .write_all(
                format!("GET /api/devices HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .expect("send");
        String::from_utf8_lossy(&read_until_closed(&mut stream).expect("answer")).into_owned()
    };
    // A name rebound to 127.0.0.1 by a web page's DNS is refused; addresses, localhost and
    // names the operator gave are answered.
    let rebound = get(&format!("evil.example:{port}"));
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(rebound.contains("--http-host"), "{rebound}");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("HUB.lab:{port}"),
    ] {
        let answer = get(&host);
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }

    let post = |headers: &str| post_reading(&web, headers);
    // Without a token, HTTP ingest is off unless asked for.
    let (status, body) = post("Content-Type: application/x-ndjson\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--http-ingest-no-auth"), "{body}");
    hub.stop_ok();

    let (hub, ingest, web, _) = start_hub_http(&dir, &["--no-auth", "--http-ingest-no-auth"]);
    let post = |headers: &str| post_reading(&web, headers);
    // What a form or a "simple" cross-site request can send is refused...
    for kind in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, body) = post(&format!("Content-Type: {kind}\r\n"));
        assert_eq!(status, 415, "{kind}: {body}");
    }
    // ...and so is any request from another origin.
    let (status, body) =
        post("Content-Type: application/x-ndjson\r\nOrigin: http://evil.example\r\n");
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        post("Content-Type: application/x-ndjson\r\nSec-Fetch-Site: cross-site\r\n");
    assert_eq!(status, 403, "{body}");
    // The page's own origin, or a program (no Origin), writes.
    let (status, body) = post(&format!(
        "Content-Type: application/x-ndjson\r\nOrigin: http://{web}\r\n"
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored(&db), 1);

    // A browser made to POST to the TCP ingest port: the request line closes the connection
    // before the body's lines can be taken.
    let mut stream = TcpStream::connect(&ingest).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: {ingest}\r\nContent-Type: text/plain\r\n\
                 Content-Length: 33\r\n\r\n{{\"stream\":\"x\",\"values\":{{\"v\":2}}}}\n"
            )
            .as_bytes(),
        )
        .expect("send");
    let answer =
        String::from_utf8_lossy(&read_until_closed(&mut stream).expect("closed")).into_owned();
    assert!(answer.contains("not HTTP"), "{answer}");
    assert_eq!(stored(&db), 1, "nothing of the request stored");
    hub.stop_ok();
}

/// The rejected-lines counter for one reason.
fn rejected(web: &str, reason: &str) -> u64 {
    let (_, text) = crate::hub::http(web, "GET", "/metrics", "", "");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "socketeer_hub_rejected_lines_total{{reason=\"{reason}\"}} "
            ))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn devices_streams_and_fields_are_limited_with_clear_refusals() {
    let dir = TempDir::new("hub-cardinality");
    let limits = [
        "--max-devices",
        "3",
        "--max-streams",
        "2",
        "--max-fields",
        "4",
    ];
    let mut args = vec!["--no-auth"];
    args.extend_from_slice(&limits);
    let (hub, ingest, web, db) = start_hub_http(&dir, &args);
    let mut robot = Client::connect(&ingest);
    let mut seq = 0;
    let mut send = |robot: &mut Client, device: &str, record: &str| {
        seq += 1;
        robot.send(&format!("{{\"device\":\"{device}\"}}\n"));
        robot.send(&format!("{{\"seq\":{seq},{record}}}\n"));
        robot.answer()
    };
    for device in ["d1", "d2", "d3"] {
        let answer = send(&mut robot, device, "\"stream\":\"s1\",\"values\":{\"a\":1}");
        assert!(answer["ack"].is_u64(), "{device}: {answer}");
    }
    let answer = send(&mut robot, "d4", "\"stream\":\"s1\",\"values\":{\"a\":1}");
    let why = answer["error"].as_str().unwrap_or_default();
    assert!(why.contains("most devices (3, --max-devices)"), "{answer}");

    // Streams: a second is taken, a third refused; the known ones go on.
    assert!(send(&mut robot, "d1", "\"stream\":\"s2\",\"values\":{\"a\":1}")["ack"].is_u64());
    let answer = send(&mut robot, "d1", "\"stream\":\"s3\",\"values\":{\"a\":1}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("most streams (2, --max-streams)"),
        "{answer}"
    );
    let answer = send(
        &mut robot,
        "d1",
        "\"stream\":\"s3\",\"frame\":{\"w\":1,\"h\":1},\"detections\":[]",
    );
    assert!(
        answer["error"].is_string(),
        "a frame's stream counts too: {answer}"
    );
    assert!(send(&mut robot, "d1", "\"stream\":\"s1\",\"values\":{\"a\":2}")["ack"].is_u64());

    // Fields, numbers and texts together: d1 has a (s1) and a (s2); two more fit, not three.
    let answer = send(
        &mut robot,
        "d1",
        "\"stream\":\"s1\",\"values\":{\"b\":1,\"c\":2,\"e\":3}",
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("most fields (4, --max-fields)"),
        "{answer}"
    );
    assert!(
        send(
            &mut robot,
            "d1",
            "\"stream\":\"s1\",\"values\":{\"b\":1,\"mode\":\"RTK\"}"
        )["ack"]
            .is_u64()
    );
    let answer = send(&mut robot, "d1", "\"stream\":\"s2\",\"values\":{\"z\":1}");
    assert!(answer["error"].is_string(), "{answer}");
    assert!(
        send(
            &mut robot,
            "d1",
            "\"stream\":\"s1\",\"values\":{\"a\":3,\"b\":4}"
        )["ack"]
            .is_u64()
    );

    assert_eq!(rejected(&web, "devices_limit"), 1);
    assert_eq!(rejected(&web, "streams_limit"), 2);
    assert_eq!(rejected(&web, "fields_limit"), 2);
    drop(robot);
    hub.stop_ok();
    let stored_before = stored(&db);

    // After a restart the limits count what is stored; Influx's invented devices are refused
    // and counted too.
    let (hub, [ingest, influx, web], _) = start_hub_influx(&dir, "tcp://127.0.0.1:0", &limits);
    let mut robot = Client::connect(&ingest);
    robot.send("{\"device\":\"d5\"}\n{\"seq\":1,\"stream\":\"s1\",\"values\":{\"a\":1}}\n");
    assert!(
        robot.answer()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-devices")
    );
    let mut telegraf = TcpStream::connect(&influx).expect("influx");
    for k in 0..100 {
        writeln!(telegraf, "cpu,host=invented-{k} usage=1").expect("send");
    }
    writeln!(telegraf, "cpu,host=d2 usage=1").expect("send");
    drop(telegraf);
    // d5 and the 100 invented ones.
    wait_until("the invented devices refused", || {
        rejected(&web, "devices_limit") == 101
    });
    wait_until("d2's line stored", || stored(&db) == stored_before + 1);
    let devices = crate::hub::get_json(&web, "/api/devices");
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(3));
    hub.stop_ok();
}

#[test]
fn one_device_with_much_to_write_does_not_hold_another_behind_all_of_it() {
    let dir = TempDir::new("hub-writer-turns");
    let (hub, ingest, web, db) = start_hub_http(&dir, &["--no-auth", "--max-batch", "100"]);
    let lock = WriteLock::take(&db);
    // A device queues 3,000 records while the writer is held...
    let mut hog = Client::connect(&ingest);
    let mut lines = String::from("{\"device\":\"hog\"}\n");
    for k in 0..3000 {
        lines.push_str(&format!(
            "{{\"stream\":\"s\",\"seq\":{k},\"values\":{{\"v\":{k}}}}}\n"
        ));
    }
    hog.send(&lines);
    wait_until("the hog's records queued", || {
        get_metric(&web, "socketeer_hub_writer_queued_records") >= 3000
    });
    // ...then a robot sends one.
    let mut robot = Client::connect(&ingest);
    robot.send("{\"device\":\"robot\"}\n{\"stream\":\"s\",\"seq\":1,\"values\":{\"v\":1}}\n");
    drop(lock);
    assert_eq!(robot.answer(), serde_json::json!({"ack": 1}));
    // Transactions of at most 100 records, senders in turn: the robot's went in within the
    // first few, not after the hog's 3,000.
    let conn = Connection::open(&db).expect("db");
    let row: i64 = conn
        .query_row(
            "SELECT sa.rowid FROM samples sa JOIN streams st ON st.id = sa.stream_id
             JOIN devices d ON d.id = st.device_id WHERE d.name = 'robot'",
            [],
            |r| r.get(0),
        )
        .expect("stored");
    assert!(row <= 600, "the robot's record was row {row} of 3,001");
    for _ in 0..3000 {
        assert!(hog.answer()["ack"].is_u64());
    }
    hub.stop_ok();
}

#[test]
fn a_record_the_store_cannot_take_now_is_answered_retry_and_publish_sends_it_again() {
    let dir = TempDir::new("hub-retry");
    let (hub, [ingest, _, web], db) = start_hub_influx(&dir, "udp://127.0.0.1:0", &[]);
    // The writer cannot commit while another holds the lock (its busy timeout is 5 s): the
    // answer says so, and that the line may be sent again — it was not refused.
    let lock = WriteLock::take(&db);
    let mut robot = Client::connect(&ingest);
    robot.send("{\"stream\":\"imu\",\"seq\":1,\"values\":{\"ax\":1}}\n");
    let answer = robot.answer();
    assert_eq!(answer["line"], 1, "{answer}");
    assert_eq!(answer["retry"], true, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("storage: ")),
        "{answer}"
    );
    assert_eq!(
        get_metric(
            &web,
            "socketeer_hub_rejected_lines_total{reason=\"storage\"}"
        ),
        1
    );
    // publish resends such a line (reconnecting) until it is stored, and succeeds.
    let mut publish = Proc::spawn(&["publish", &ingest]);
    publish.write_stdin(b"{\"stream\":\"imu\",\"values\":{\"ax\":2}}\n");
    wait_until("publish told to retry", || {
        get_metric(
            &web,
            "socketeer_hub_rejected_lines_total{reason=\"storage\"}",
        ) >= 2
    });
    drop(lock);
    publish.close_stdin();
    let (status, _, err) = publish.wait();
    assert!(status.success(), "{err}");
    assert!(err.contains("the hub cannot store now"), "{err}");
    assert_eq!(stored(&db), 1);
    hub.stop_ok();
}
