//! The hub and a robot in one process, through real sockets on 127.0.0.1:0: what a Rust
//! program embedding either side does.

#![allow(unreachable_pub)]

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use socketeer::{BindOptions, Endpoint, Listener, Server, Shutdown};
use socketeer_hub::publisher::{Event, Publisher, PublisherConfig, Recovered};
use socketeer_hub::{HttpConfig, Hub, HubConfig};

/// A directory of the test's own, removed at the end.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("socketeer-hub-it-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A hub serving ingest on `at` (or a free port) and HTTP on a free port.
struct Running {
    hub: Hub,
    shutdown: Shutdown,
    ingest: Endpoint,
    http: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

async fn start(dir: &Scratch, at: &str) -> Running {
    start_with(dir, at, |_| {}).await
}

async fn start_with(dir: &Scratch, at: &str, tweak: impl FnOnce(&mut HubConfig)) -> Running {
    let mut config = HubConfig::new(dir.0.join("hub.db"));
    tweak(&mut config);
    let hub = Hub::open(config).expect("open");
    let shutdown = Shutdown::new();
    let listener = Listener::bind(&at.parse().expect("endpoint"), &BindOptions::default())
        .await
        .expect("bind");
    let ingest = listener.local_endpoint().clone();
    let server = Server::new(listener, hub.ingest_handler()).shutdown(shutdown.clone());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_at = http.local_addr().expect("addr");
    let api = hub
        .serve_http(http, HttpConfig::default(), shutdown.clone())
        .expect("http");
    let tasks = vec![
        tokio::spawn(async move { Ok(server.serve_forever().await?) }),
        tokio::spawn(api),
    ];
    Running {
        hub,
        shutdown,
        ingest,
        http: http_at,
        tasks,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.trigger();
        for task in self.tasks {
            task.await.expect("join").expect("served");
        }
        self.hub.close().await.expect("close");
    }
}

/// `GET path` on the hub's API, the body as JSON.
fn get(http: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(http).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_delivers_to_a_hub_in_the_same_process_and_hears_refusals() {
    let dir = Scratch::new("deliver");
    let hub = start(&dir, "127.0.0.1:0").await;
    let mut config = PublisherConfig::new(hub.ingest.clone(), "run-1");
    config.device = Some("robot-1".into());
    config.max_unacked = 16; // a small window: publishing waits for acknowledgements
    let refused = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::clone(&refused);
    let (publisher, delivery) =
        Publisher::start(config, None, Recovered::default(), move |event| {
            if let Event::Refused { tag, why, .. } = event {
                heard.lock().expect("lock").push((*tag, why.to_owned()));
            }
        });
    for k in 0..200u32 {
        let line = format!(r#"{{"stream":"imu","values":{{"ax":{k}}}}}"#);
        assert_eq!(
            publisher
                .publish(line.as_bytes(), k)
                .await
                .expect("publish"),
            Some(u64::from(k) + 1)
        );
    }
    // One the hub refuses (a bad stream name), one the publisher refuses itself.
    publisher
        .publish(br#"{"stream":"bad name","values":{"v":1}}"#, 999)
        .await
        .expect("sent");
    assert!(
        publisher
            .publish(br#"{"seq":5,"stream":"x"}"#, 1000)
            .await
            .is_err()
    );
    assert_eq!(publisher.publish(b"  \n", 1001).await.expect("blank"), None);
    publisher.end().expect("end");
    let report = delivery.await.expect("delivered");
    assert_eq!((report.acknowledged, report.refused), (200, 1));
    assert_eq!(report.latencies_us.len(), 200);
    let refused = refused.lock().expect("lock").clone();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 999, "the refusal carries the caller's tag");
    assert!(refused[0].1.contains("bad stream name"), "{refused:?}");
    let devices = get(hub.http, "/api/devices");
    assert_eq!(devices["devices"][0]["name"], "robot-1", "{devices}");
    let series = get(
        hub.http,
        "/api/series?device=robot-1&stream=imu&field=ax&from=0",
    );
    assert_eq!(series["count"], 200, "{series}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_waits_for_a_hub_that_is_not_there_yet_and_then_delivers() {
    let dir = Scratch::new("late");
    // A free port, then nothing listening on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let at = format!("127.0.0.1:{port}");
    let mut config = PublisherConfig::new(at.parse().expect("endpoint"), "run-2");
    config.device = Some("robot-2".into());
    let (unreachable, mut told) = tokio::sync::mpsc::unbounded_channel();
    let (publisher, delivery) =
        Publisher::start(config, None, Recovered::default(), move |event| {
            if let Event::Unreachable { .. } = event {
                let _ = unreachable.send(());
            }
        });
    for k in 0..10 {
        let line = format!(r#"{{"stream":"s","values":{{"v":{k}}}}}"#);
        publisher
            .publish(line.as_bytes(), ())
            .await
            .expect("publish");
    }
    told.recv().await.expect("told the hub is unreachable");
    assert_eq!(publisher.unacked(), 10);
    let hub = start(&dir, &at).await;
    publisher.end().expect("end");
    let report = delivery.await.expect("delivered");
    assert_eq!(report.acknowledged, 10);
    let series = get(
        hub.http,
        "/api/series?device=robot-2&stream=s&field=v&from=0",
    );
    assert_eq!(series["count"], 10, "{series}");
    hub.stop().await;
}

/// A listener for a test's own stand-in hub, and the endpoint a publisher reaches it at.
async fn stand_in_hub() -> (tokio::net::TcpListener, Endpoint) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let at = format!("tcp://{}", listener.local_addr().expect("address"))
        .parse()
        .expect("endpoint");
    (listener, at)
}

#[tokio::test]
async fn a_publisher_holds_at_most_its_byte_room_of_unacknowledged_images() {
    use futures_util::FutureExt;
    use socketeer_hub::record::ImageFormat;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    // A hub that takes what it is sent and answers only when told to.
    let (listener, at) = stand_in_hub().await;
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<u64>(4);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<serde_json::Value>(16);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::new(read);
        tokio::spawn(async move {
            while let Some(seq) = ack_rx.recv().await {
                let answer = format!("{{\"ack\":{seq}}}\n");
                write.write_all(answer.as_bytes()).await.expect("answer");
            }
        });
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await.expect("read") == 0 {
                return;
            }
            let record: serde_json::Value = serde_json::from_str(&line).expect("json");
            if let Some(len) = record["image"]["bytes"].as_u64() {
                let mut image = vec![0; len as usize];
                read.read_exact(&mut image).await.expect("image");
            }
            if record.get("stream").is_some() {
                let _ = seen_tx.send(record).await;
            }
        }
    });
    let mut config = PublisherConfig::new(at, "bytes");
    config.device = Some("cam".into());
    config.max_unacked_bytes = 100_000;
    let (publisher, _delivery) = Publisher::start(config, None, Recovered::<()>::default(), |_| {});
    let image = bytes::Bytes::from(vec![0xAB; 40_000]);
    let header = br#"{"stream":"camera"}"#;
    for seq in [1, 2] {
        let published = publisher
            .publish_image(header, ImageFormat::Jpeg, image.clone(), ())
            .await;
        assert_eq!(published.expect("room"), seq);
    }
    // 80 KB waiting of 100 KB: a third image does not fit until one is acknowledged.
    let mut third = Box::pin(publisher.publish_image(header, ImageFormat::Jpeg, image.clone(), ()));
    assert!(
        (&mut third).now_or_never().is_none(),
        "no room for a third image"
    );
    for _ in 0..2 {
        let record = seen_rx.recv().await.expect("a record");
        assert_eq!(record["image"]["bytes"], 40_000);
    }
    ack_tx.send(1).await.expect("ack");
    assert_eq!(third.await.expect("room after an ack"), 3);
    // Small records are weighed by their size too, and still fit beside the images.
    publisher
        .publish(br#"{"stream":"imu","values":{"ax":1}}"#, ())
        .await
        .expect("a reading fits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_retention_empties_is_unadvertised_to_foxglove_clients() {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let dir = Scratch::new("retire");
    // Data kept one second, retention passes ten times a second.
    let hub = start_with(&dir, "127.0.0.1:0", |c| {
        c.retention = Some(std::time::Duration::from_secs(1));
        c.retention_every = std::time::Duration::from_millis(100);
    })
    .await;
    let mut request = format!("ws://{}/foxglove", hub.http)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "foxglove.websocket.v1".parse().expect("header"),
    );
    let stream = tokio::net::TcpStream::connect(hub.http)
        .await
        .expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WebSocket");
    // One reading of a robot's: its channel is advertised...
    let mut robot =
        tokio::net::TcpStream::connect(hub.ingest.to_string().trim_start_matches("tcp://"))
            .await
            .expect("ingest");
    robot
        .write_all(
            b"{\"device\":\"rover\"}\n{\"stream\":\"imu\",\"seq\":1,\"values\":{\"ax\":1}}\n",
        )
        .await
        .expect("send");
    // One deadline for each wait, however many other messages (time, every 100 ms) come.
    let mut next_op = async |op: &str| -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let message = tokio::time::timeout_at(deadline, ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {op} in time"))
                .expect("open")
                .expect("message");
            if let Message::Text(text) = message {
                let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if value["op"] == op {
                    return value;
                }
            }
        }
    };
    let channel = loop {
        let advertised = next_op("advertise").await;
        let found = advertised["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .find(|c| c["topic"] == "/rover/imu")
            .map(|c| c["id"].clone());
        if let Some(id) = found {
            break id;
        }
    };
    // ... and once retention has taken its only reading, withdrawn.
    let gone = next_op("unadvertise").await;
    assert_eq!(gone["channelIds"], serde_json::json!([channel]));
    let streams = get(hub.http, "/api/streams?device=rover");
    assert_eq!(streams["values"], serde_json::json!([]), "{streams}");
    drop(ws);
    drop(robot);
    hub.stop().await;
}

#[tokio::test]
async fn acks_received_before_a_broken_answer_are_settled_not_sent_again() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // A hub that acks the first two records, then sends a line that is no answer (in the same
    // write, so the acks wait in the publisher's buffer with it), and on the connection that
    // follows acks whatever comes.
    let (listener, at) = stand_in_hub().await;
    let (resent_tx, mut resent) = tokio::sync::mpsc::unbounded_channel::<u64>();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (read, mut write) = stream.into_split();
            let mut read = tokio::io::BufReader::new(read);
            let mut line = String::new();
            let mut seqs = Vec::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let record: serde_json::Value = serde_json::from_str(&line).expect("json");
                let Some(seq) = record["seq"].as_u64() else {
                    continue; // the device and session lines
                };
                seqs.push(seq);
                if connection == 0 && seqs.len() == 3 {
                    let broken = "{\"ack\":1}\n{\"ack\":2}\nnot an answer\n";
                    write.write_all(broken.as_bytes()).await.expect("write");
                }
                if connection > 0 {
                    let _ = resent_tx.send(seq);
                    let ack = format!("{{\"ack\":{seq}}}\n");
                    write.write_all(ack.as_bytes()).await.expect("write");
                }
            }
        }
    });
    let mut config = PublisherConfig::new(at, "broken");
    config.device = Some("r".into());
    config.clock_every = None;
    let (publisher, delivery) = Publisher::start(config, None, Recovered::<()>::default(), |_| {});
    for k in 0..3 {
        let line = format!(r#"{{"stream":"s","values":{{"v":{k}}}}}"#);
        publisher
            .publish(line.as_bytes(), ())
            .await
            .expect("publish");
    }
    publisher.end().expect("end");
    let report = delivery.await.expect("delivered");
    assert_eq!(report.acknowledged, 3);
    let mut again = Vec::new();
    while let Ok(seq) = resent.try_recv() {
        again.push(seq);
    }
    assert_eq!(again, [3], "only the record not acknowledged is sent again");
}
