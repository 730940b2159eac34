//! Camera frames (issue 22): images ingested on the TCP link (a header line, then the bytes)
//! and over HTTP, stored with their detections, listed and served back; every bad input
//! refused without losing the stream or buffering past the cap; the byte budget.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::hub::{Client, get_json, http, start_hub_http};
use crate::hub_attacks::read_until_closed;
use crate::support::{DEADLINE, TempDir, wait_until};

/// A real PNG of `w` x `h` pixels of one colour (stored deflate blocks: valid, uncompressed).
pub fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
    }
    // Each row: filter type 0 (none), then the pixels.
    let row: Vec<u8> = std::iter::once(0)
        .chain(std::iter::repeat_n(rgb, w as usize).flatten())
        .collect();
    let raw = row.repeat(h as usize);
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The start of a JPEG file saying `w` x `h` (start of image, a JFIF segment, a baseline
/// frame header, end of image): enough for the hub, which reads the size and never decodes.
pub fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut out = vec![0xff, 0xd8];
    out.extend_from_slice(&[0xff, 0xe0, 0x00, 0x10]);
    out.extend_from_slice(b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00");
    out.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}

/// A header line for `image` (format, its length) with `extra` fields.
pub fn header(format: &str, image: &[u8], extra: Value) -> String {
    let mut header = extra;
    header["image"] = json!({ "format": format, "bytes": image.len() });
    format!("{header}\n")
}

/// An HTTP request with a binary body; the status, the head and the body's bytes.
pub fn http_bytes(
    web: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    http_bytes_as("1.1", web, method, path, headers, body)
}

/// [`http_bytes`] as HTTP/`version` (as 1.0, a streamed body comes as it is, not in chunks).
pub fn http_bytes_as(
    version: &str,
    web: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(web).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let head = format!(
        "{method} {path} HTTP/{version}\r\nHost: {web}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&response[..at]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, response[at + 4..].to_vec())
}

#[test]
fn frames_with_images_are_stored_listed_and_served_back_byte_for_byte() {
    let dir = TempDir::new("hub-images");
    let (hub, ingest, web, _db) = start_hub_http(&dir, &["--no-auth"]);
    let mut robot = Client::connect(&ingest);
    robot.send("{\"device\":\"cam-1\"}\n{\"session\":\"s\"}\n");
    let red = png(64, 48, [200, 10, 10]);
    let blue = png(64, 48, [10, 10, 200]);
    // An image with its detections (size from the image), then one with a size given.
    let first = header(
        "png",
        &red,
        json!({"stream":"camera","ts":1800000000.0,"seq":1,
               "detections":[{"label":"cone","score":0.9,"box":[4,5,10,12]}]}),
    );
    robot.send(&first);
    robot.writer_bytes(&red);
    assert_eq!(robot.answer(), json!({"ack": 1}));
    robot.send(&header(
        "png",
        &blue,
        json!({"stream":"camera","ts":1800000001.0,"seq":2,"frame":{"w":640,"h":480}}),
    ));
    robot.writer_bytes(&blue);
    // A reading on the same link after the bytes: the stream is followed exactly.
    robot.send("{\"stream\":\"imu\",\"seq\":3,\"values\":{\"ax\":1}}\n");
    assert_eq!(robot.answer(), json!({"ack": 2}));
    assert_eq!(robot.answer(), json!({"ack": 3}));
    // A resend is acknowledged and stored once.
    robot.send(&first);
    robot.writer_bytes(&red);
    assert_eq!(robot.answer(), json!({"ack": 1}));

    let frames = get_json(&web, "/api/frames?device=cam-1&from=0&to=4000000000");
    let list = frames["frames"].as_array().expect("frames");
    assert_eq!(list.len(), 2, "{frames}");
    assert_eq!(
        (&list[0]["w"], &list[0]["h"]),
        (&json!(64), &json!(48)),
        "size from the image"
    );
    assert_eq!(list[0]["detections"], 1);
    assert_eq!(list[0]["image"], json!({"format":"png","bytes": red.len()}));
    assert_eq!(
        (&list[1]["w"], &list[1]["h"]),
        (&json!(640), &json!(480)),
        "size as sent"
    );
    let detections = get_json(&web, "/api/detections?device=cam-1&from=0&to=4000000000");
    assert_eq!(detections["frames"][0]["frame"], json!({"w":64,"h":48}));

    // Served back: by id (immutable), and the newest at or before a time (revalidated).
    let id = list[0]["id"].as_i64().expect("id");
    let (status, head, body) = http_bytes(&web, "GET", &format!("/api/frame?id={id}"), "", b"");
    assert_eq!(status, 200, "{head}");
    assert!(body == red, "the bytes sent");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(head.contains("immutable"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an etag")
        .to_owned();
    let (status, _, body) = http_bytes(
        &web,
        "GET",
        &format!("/api/frame?id={id}"),
        &format!("If-None-Match: {etag}\r\n"),
        b"",
    );
    assert_eq!((status, body.len()), (304, 0));
    let (status, _, body) = http_bytes(
        &web,
        "GET",
        "/api/frame?device=cam-1&stream=camera&at=1800000000.5",
        "",
        b"",
    );
    assert_eq!((status, body == red), (200, true), "the frame at or before");
    let (_, _, body) = http_bytes(
        &web,
        "GET",
        "/api/frame?device=cam-1&stream=camera",
        "",
        b"",
    );
    assert!(body == blue, "the newest");
    let (status, _, _) = http_bytes(
        &web,
        "GET",
        "/api/frame?device=cam-1&stream=camera&at=1700000000",
        "",
        b"",
    );
    assert_eq!(status, 404, "none before");
    drop(robot);
    hub.stop_ok();
}

#[test]
fn bad_image_input_is_refused_and_never_buffered_past_the_cap() {
    let dir = TempDir::new("hub-images-bad");
    let (hub, ingest, web, _db) = start_hub_http(
        &dir,
        &["--no-auth", "--http-ingest-no-auth", "--max-image", "8KiB"],
    );
    let image = png(8, 8, [1, 2, 3]);
    let mut robot = Client::connect(&ingest);
    // Bytes that are not the format announced: refused, the link goes on.
    robot.send(&header("jpeg", &image, json!({"stream":"camera","seq":1})));
    robot.writer_bytes(&image);
    let answer = robot.answer();
    assert_eq!(answer["line"], 1, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a jpeg image")),
        "{answer}"
    );
    // A header refused for another reason: its bytes are skipped, the link goes on.
    robot.send(&header("png", &image, json!({"stream":"bad name","seq":2})));
    robot.writer_bytes(&image);
    let answer = robot.answer();
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("bad stream name")),
        "{answer}"
    );
    // A JPEG announced as JPEG is taken.
    let jpeg = jpeg_header(320, 240);
    robot.send(&header("jpeg", &jpeg, json!({"stream":"camera","seq":3})));
    robot.writer_bytes(&jpeg);
    assert_eq!(robot.answer(), json!({"ack": 3}));
    drop(robot);

    // Lengths that cannot be followed: over the cap, negative, not a number. Refused, closed.
    for bad in [
        json!({"format":"png","bytes": 9000}),
        json!({"format":"png","bytes": 9_000_000_000_000_000_000u64}),
        json!({"format":"png","bytes": -5}),
        json!({"format":"png","bytes": "many"}),
    ] {
        let mut stream = TcpStream::connect(&ingest).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let line = format!("{}\n", json!({"stream":"camera","seq":9,"image": bad}));
        stream.write_all(line.as_bytes()).expect("send");
        // Bytes keep coming: the hub does not read them, it closes.
        let _ = stream.write_all(&[0u8; 4096]);
        let answer =
            String::from_utf8(read_until_closed(&mut stream).expect("read")).expect("text");
        assert!(answer.contains("\"line\":1"), "{bad}: {answer:?}");
        assert_eq!(
            answer.matches('\n').count(),
            1,
            "{bad}: one answer, then closed: {answer:?}"
        );
    }
    // An image cut short (the sender goes away): nothing stored, nothing acknowledged.
    let mut stream = TcpStream::connect(&ingest).expect("connect");
    let line = header("png", &image, json!({"stream":"cut","seq":1}));
    stream.write_all(line.as_bytes()).expect("send");
    stream.write_all(&image[..image.len() / 2]).expect("send");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half close");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let answer = read_until_closed(&mut stream).expect("read");
    assert!(
        answer.is_empty(),
        "no answer for an image that never arrived"
    );
    let frames = get_json(&web, "/api/frames?device=unnamed&from=0");
    let streams: Vec<&str> = frames["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter_map(|f| f["stream"].as_str())
        .collect();
    assert_eq!(streams, ["camera"], "only the JPEG: {frames}");
    // JSON lines over HTTP cannot carry image bytes.
    let body = header("png", &image, json!({"stream":"camera"}));
    let (status, answer) = http(
        &web,
        "POST",
        "/api/ingest?device=web",
        "Content-Type: application/x-ndjson\r\n",
        &body,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("/api/ingest/image"), "{answer}");
    hub.stop_ok();
}

#[test]
fn images_are_uploaded_over_http_under_the_ingest_rules() {
    let dir = TempDir::new("hub-images-http");
    let (hub, _ingest, web, _db) = start_hub_http(
        &dir,
        &["--no-auth", "--http-ingest-no-auth", "--max-image", "8KiB"],
    );
    let image = png(16, 16, [0, 200, 0]);
    let detections = "%5B%7B%22label%22%3A%22leaf%22%2C%22score%22%3A0.5%2C%22box%22%3A%5B1%2C1%2C4%2C4%5D%7D%5D";
    let path = format!(
        "/api/ingest/image?device=cam-2&stream=camera&ts=1800000000&seq=7&session=up&detections={detections}"
    );
    let (status, head, body) =
        http_bytes(&web, "POST", &path, "Content-Type: image/png\r\n", &image);
    assert_eq!(status, 200, "{head}");
    assert_eq!(String::from_utf8_lossy(&body), "{\"ack\":7}\n");
    // Idempotent, as on the TCP link.
    let (status, _, body) = http_bytes(&web, "POST", &path, "Content-Type: image/png\r\n", &image);
    assert_eq!(
        (status, String::from_utf8_lossy(&body).into_owned()),
        (200, "{\"ack\":7}\n".to_owned())
    );
    let frames = get_json(&web, "/api/frames?device=cam-2&from=0&to=4000000000");
    assert_eq!(
        frames["frames"].as_array().map(Vec::len),
        Some(1),
        "{frames}"
    );
    assert_eq!(frames["frames"][0]["detections"], 1);
    // Not an image type; not the type said; too large.
    let (status, _, _) = http_bytes(&web, "POST", &path, "Content-Type: text/plain\r\n", &image);
    assert_eq!(status, 415);
    let other = "/api/ingest/image?device=cam-2&stream=camera&seq=8&session=up";
    let (status, _, body) = http_bytes(&web, "POST", other, "Content-Type: image/jpeg\r\n", &image);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let big = png(64, 64, [9, 9, 9]);
    assert!(big.len() > 8192);
    let (status, _, _) = http_bytes(&web, "POST", other, "Content-Type: image/png\r\n", &big);
    assert_eq!(status, 413);
    hub.stop_ok();
}

#[test]
fn past_the_image_budget_the_oldest_images_go_and_readings_stay() {
    let dir = TempDir::new("hub-images-budget");
    let (hub, ingest, web, _db) = start_hub_http(&dir, &["--no-auth", "--image-budget", "20KiB"]);
    let mut robot = Client::connect(&ingest);
    robot.send("{\"device\":\"cam-3\"}\n");
    // Twelve images of about 3 KiB (36 KiB in all), each beside a reading.
    for k in 0..12u32 {
        let image = png(32, 32, [k as u8, 0, 0]);
        robot.send(&format!(
            "{{\"stream\":\"imu\",\"seq\":{},\"values\":{{\"v\":{k}}}}}\n",
            100 + k
        ));
        robot.send(&header(
            "png",
            &image,
            json!({"stream":"camera","ts": 1800000000 + k,"seq": k}),
        ));
        robot.writer_bytes(&image);
        assert_eq!(robot.answer(), json!({"ack": 100 + k}));
        assert_eq!(robot.answer(), json!({"ack": k}));
    }
    wait_until("the oldest images deleted", || {
        let frames = get_json(&web, "/api/frames?device=cam-3&from=0&to=4000000000");
        let kept: u64 = frames["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .filter_map(|f| f["image"]["bytes"].as_u64())
            .sum();
        kept <= 20 * 1024
    });
    let frames = get_json(&web, "/api/frames?device=cam-3&from=0&to=4000000000");
    let list = frames["frames"].as_array().expect("frames");
    assert_eq!(list.len(), 12, "every frame stays, with its detections");
    assert!(
        list[0]["image"].is_null(),
        "the oldest image went: {}",
        list[0]
    );
    assert!(!list[11]["image"].is_null(), "the newest stays");
    let series = get_json(&web, "/api/series?device=cam-3&stream=imu&field=v&from=0");
    assert_eq!(series["count"], 12, "readings untouched");
    drop(robot);
    hub.stop_ok();
}

#[test]
fn publish_sends_an_image_file_and_passes_image_headers_through_from_stdin() {
    let dir = TempDir::new("hub-images-publish");
    let (hub, ingest, web, _db) = start_hub_http(&dir, &["--no-auth"]);
    let file = dir.0.join("shot.png");
    let shot = png(40, 30, [120, 130, 140]);
    std::fs::write(&file, &shot).expect("write");
    let (status, _, err) = crate::support::run(
        &[
            "publish",
            &ingest,
            "--image",
            &file.display().to_string(),
            "--stream",
            "front",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    // Header lines with their bytes, among plain lines, on stdin.
    let jpeg = jpeg_header(640, 480);
    let mut input = Vec::new();
    input.extend_from_slice(b"{\"stream\":\"imu\",\"values\":{\"ax\":1}}\n");
    input.extend_from_slice(
        header(
            "jpeg",
            &jpeg,
            json!({"stream":"rear","detections":[{"label":"cart","score":0.7,"box":[1,2,3,4]}]}),
        )
        .as_bytes(),
    );
    input.extend_from_slice(&jpeg);
    input.extend_from_slice(b"{\"stream\":\"imu\",\"values\":{\"ax\":2}}\n");
    let (status, _, err) = crate::support::run(&["publish", &ingest, "--stats"], &input);
    assert!(status.success(), "{err}");
    let device = get_json(&web, "/api/devices")["devices"][0]["name"]
        .as_str()
        .expect("a device")
        .to_owned();
    let frames = get_json(
        &web,
        &format!("/api/frames?device={device}&from=0&to=4000000000"),
    );
    let streams: Vec<(&str, u64)> = frames["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| {
            (
                f["stream"].as_str().unwrap_or(""),
                f["image"]["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(streams.contains(&("front", shot.len() as u64)), "{frames}");
    assert!(streams.contains(&("rear", jpeg.len() as u64)), "{frames}");
    let series = get_json(
        &web,
        &format!("/api/series?device={device}&stream=imu&field=ax&from=0"),
    );
    assert_eq!(series["count"], 2, "the lines around the image: {series}");
    let (_, _, body) = http_bytes(
        &web,
        "GET",
        &format!("/api/frame?device={device}&stream=front"),
        "",
        b"",
    );
    assert!(body == shot, "the file, byte for byte");
    // Not an image; an image header whose bytes cannot be told apart.
    let text = dir.0.join("notes.txt");
    std::fs::write(&text, "hello").expect("write");
    let (status, _, err) = crate::support::run(
        &["publish", &ingest, "--image", &text.display().to_string()],
        b"",
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("not a JPEG or PNG file"), "{err}");
    let (status, _, err) = crate::support::run(
        &["publish", &ingest],
        b"{\"stream\":\"x\",\"image\":{\"format\":\"png\",\"bytes\":-1}}\n",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot be told from the next line"), "{err}");
    hub.stop_ok();
}

#[test]
fn sigkill_during_frame_ingest_loses_no_acknowledged_image() {
    let dir = TempDir::new("hub-images-kill");
    let db = dir.0.join("hub.db").display().to_string();
    let args = [
        "hub",
        "--no-auth",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--no-influx",
        "--no-http",
    ];
    let (hub, eps) = crate::support::Proc::serve(&args);
    let address = crate::support::addr(&eps[0]);
    let stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    // Answers are collected as they come; images are sent until the link breaks.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let reader = {
        let acked = std::sync::Arc::clone(&acked);
        let stream = stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stream)) {
                let Ok(line) = line else { break };
                let answer: Value = serde_json::from_str(&line).expect("an answer");
                acked
                    .lock()
                    .expect("lock")
                    .push(answer["ack"].as_u64().expect("an ack"));
            }
        })
    };
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            for k in 1..=2000u64 {
                let image = png(24, 24, [(k % 256) as u8, (k / 256) as u8, 7]);
                let line = header(
                    "png",
                    &image,
                    json!({"stream":"camera","ts": 1_800_000_000 + k,"seq": k}),
                );
                if stream.write_all(line.as_bytes()).is_err() || stream.write_all(&image).is_err() {
                    break;
                }
            }
        })
    };
    wait_until("some images acknowledged", || {
        acked.lock().expect("lock").len() >= 200
    });
    hub.signal("KILL");
    let _ = hub.wait();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let _ = reader.join();
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 200);
    // The hub again on the same database (recovering it), then every acknowledged image read.
    let (hub, _) = crate::support::Proc::serve(&args);
    hub.stop_ok();
    let conn = rusqlite::Connection::open(&db).expect("open");
    let mut query = conn
        .prepare("SELECT i.size FROM frames f JOIN images i ON i.frame_id = f.id WHERE f.ts = ?1")
        .expect("prepare");
    for seq in &acked {
        let size: i64 = query
            .query_row([1_800_000_000 + *seq as i64], |r| r.get(0))
            .unwrap_or_else(|e| panic!("image {seq} was acknowledged but is not stored: {e}"));
        let sent = png(24, 24, [(seq % 256) as u8, (seq / 256) as u8, 7]).len() as i64;
        assert_eq!(size, sent, "image {seq}");
    }
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
}

/// The hub's resident memory, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_viewer_that_never_reads_neither_slows_frame_ingest_nor_holds_frames() {
    let dir = TempDir::new("hub-images-viewer");
    let (hub, ingest, web, _db) = start_hub_http(
        &dir,
        &["--no-auth", "--http-timeout", "600", "--image-budget", "0"],
    );
    let viewer = crate::hub::stalled_viewer(&web);
    // 400 frames of 64 KiB each (25 MiB in all), each acknowledged after commit while the
    // viewer stalls. Its queue holds the frames' events (detections, size), never their bytes.
    let image = {
        let mut png = png(128, 128, [1, 2, 3]);
        png.resize(64 * 1024, 0); // bytes after IEND: still a PNG to the hub
        png
    };
    let before = rss_kib(hub.pid());
    let mut robot = Client::connect(&ingest);
    for k in 0..400u32 {
        robot.send(&header("png", &image, json!({"stream":"camera","seq": k})));
        robot.writer_bytes(&image);
        assert_eq!(robot.answer(), json!({"ack": k}));
    }
    let grown = rss_kib(hub.pid()).saturating_sub(before);
    assert!(
        grown < 20 * 1024,
        "25 MiB of frames went by a stalled viewer; the hub grew {grown} KiB"
    );
    drop(robot);
    drop(viewer);
    hub.stop_ok();
}

#[test]
fn a_viewer_behind_gets_the_newest_picture_not_every_one_and_is_not_dropped_for_them() {
    let dir = TempDir::new("hub-images-latest");
    let (hub, ingest, web, _db) = start_hub_http(&dir, &["--no-auth", "--http-timeout", "600"]);
    let viewer = crate::hub::stalled_viewer(&web);
    // 4,000 frames (about 8 MB of events: more than the stalled viewer's socket holds, the
    // kernel's send buffer of 4 MiB at most included, and four times its queue of records)
    // while it does not read, then three readings.
    let image = png(24, 24, [9, 9, 9]);
    let boxes: Vec<Value> = (0..20)
        .map(|i| {
            let label = format!("an-object-with-a-long-name-{i}");
            json!({"label": label, "score": 0.5, "box": [i, i, 4, 4]})
        })
        .collect();
    const FRAMES: u32 = 4000;
    let mut robot = Client::connect(&ingest);
    for batch in 0..FRAMES / 500 {
        for k in batch * 500..(batch + 1) * 500 {
            let extra = json!({"stream": "camera", "seq": k, "ts": 1_800_000_000 + k,
                               "detections": boxes});
            robot.send(&header("png", &image, extra));
            robot.writer_bytes(&image);
        }
        for k in batch * 500..(batch + 1) * 500 {
            assert_eq!(robot.answer(), json!({"ack": k}));
        }
    }
    for k in 0..3 {
        let seq = FRAMES + k;
        robot.send(&format!(
            "{{\"stream\":\"imu\",\"seq\":{seq},\"ts\":{},\"values\":{{\"ax\":{k}}}}}\n",
            1_800_000_000 + seq
        ));
        assert_eq!(robot.answer(), json!({"ack": seq}));
    }
    // Now it reads: pictures never older than one it saw, ending with the newest; the
    // readings all there; and it was never dropped for the pictures it missed.
    viewer.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut viewer = std::io::BufReader::new(viewer);
    let mut head = String::new();
    while head != "\r\n" {
        head.clear();
        std::io::BufRead::read_line(&mut viewer, &mut head).expect("head");
    }
    let (mut pictures, mut readings, mut last) = (0u32, 0u32, 0.0f64);
    while readings < 3 || last < f64::from(1_800_000_000 + FRAMES - 1) {
        let event = crate::hub::next_event(&mut viewer);
        let ts = event["ts"].as_f64().expect("ts");
        if event["stream"] == "camera" {
            assert!(
                ts > last,
                "a picture older than one already shown: {ts} after {last}"
            );
            assert_eq!(event["detections"].as_array().map(Vec::len), Some(20));
            last = ts;
            pictures += 1;
        } else {
            readings += 1;
        }
    }
    eprintln!("pictures seen: {pictures} of {FRAMES}");
    assert!(
        pictures < FRAMES,
        "a stalled viewer was sent every picture ({pictures}); it should see only the newest"
    );
    assert_eq!(
        crate::hub::get_metric(&web, "socketeer_hub_live_viewers_dropped_total"),
        0
    );
    drop(robot);
    drop(viewer);
    hub.stop_ok();
}

#[test]
fn publish_with_a_spool_keeps_images_through_its_own_sigkill() {
    let dir = TempDir::new("hub-images-spool");
    // Header lines and their bytes, as a camera program would pipe them.
    let frames: Vec<Vec<u8>> = (0..40u8)
        .map(|k| png(16 + u32::from(k), 16, [k, 3, 5]))
        .collect();
    let mut input = Vec::new();
    for (k, image) in frames.iter().enumerate() {
        let extra = json!({"stream": "camera", "ts": 1_800_000_000 + k});
        input.extend_from_slice(header("png", image, extra).as_bytes());
        input.extend_from_slice(image);
        input.extend_from_slice(b"{\"stream\":\"imu\",\"values\":{\"k\":1}}\n");
    }
    let file = dir.0.join("frames.bin");
    std::fs::write(&file, &input).expect("input");
    let (file, spool) = (
        file.display().to_string(),
        dir.0.join("spool").display().to_string(),
    );
    // First to a hub that is not there: everything spooled, nothing acknowledged; then killed.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let first =
        crate::support::Proc::spawn(&["publish", &nowhere, "--file", &file, "--spool", &spool]);
    let lines = dir.0.join("spool/lines");
    wait_until("every record spooled", || {
        std::fs::read(&lines).is_ok_and(|l| l.iter().filter(|&&b| b == b'\n').count() == 80)
    });
    first.signal("KILL");
    let _ = first.wait();
    let images = dir.0.join("spool/images");
    assert_eq!(std::fs::read_dir(&images).expect("images").count(), 40);
    // An image whose line never made it to the log (killed between the two): an orphan.
    std::fs::write(images.join("999"), b"orphan").expect("orphan");
    // Then to a hub: the spooled records go, images included, each stored once as sent.
    let (hub, ingest, _web, db) = start_hub_http(&dir, &["--no-auth"]);
    let (status, _, err) = crate::support::run(
        &["publish", &ingest, "--file", &file, "--spool", &spool],
        b"",
    );
    assert!(status.success(), "{err}");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let mut query = conn
        .prepare("SELECT i.data FROM frames f JOIN images i ON i.frame_id = f.id WHERE f.ts = ?1")
        .expect("prepare");
    for (k, image) in frames.iter().enumerate() {
        let stored: Vec<u8> = query
            .query_row([1_800_000_000 + k as i64], |r| r.get(0))
            .unwrap_or_else(|e| panic!("image {k}: {e}"));
        assert_eq!(&stored, image, "image {k}");
    }
    let count: i64 = conn
        .query_row("SELECT count(*) FROM frames", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 40, "each image once");
    // Everything acknowledged: the spool is empty again, its images gone.
    assert_eq!(std::fs::metadata(&lines).expect("lines").len(), 0);
    assert_eq!(std::fs::read_dir(&images).expect("images").count(), 0);
    hub.stop_ok();
}
