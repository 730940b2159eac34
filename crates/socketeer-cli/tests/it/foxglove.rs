//! The hub's Foxglove WebSocket: the Foxglove project's own client library
//! (`tests/browser/foxglove.mjs`, npm `@foxglove/ws-protocol`) decoding what the hub sends and
//! hostile clients answered, and a client that stops reading dropped while ingest goes on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::hub::{get_metric, numbered_input, start_hub_http};
use crate::support::{DEADLINE, TempDir, bin, have, run, wait_until};

#[test]
fn the_foxglove_client_library_decodes_what_the_hub_sends() {
    let test = "the_foxglove_client_library_decodes_what_the_hub_sends";
    if !have("node", test) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    let library = dir.join("node_modules/@foxglove/ws-protocol");
    if !library.exists() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: @foxglove/ws-protocol is not installed at {} (npm ci --prefix \
             tests/browser; CI does it via .ci/run)",
            library.display()
        );
        return;
    }
    let scratch = TempDir::new("foxglove-node");
    let output = Command::new("node")
        .arg(dir.join("foxglove.mjs"))
        .env("SOCKETEER_BIN", bin())
        .env("TMPDIR", &scratch.0)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Foxglove client test failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "foxglove.sdk.v1: serverInfo",
        "foxglove.websocket.v1: serverInfo",
        "hostile messages: each answered with a status",
        "oversized message: closed",
        "foxglove test: ok",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
}

/// A WebSocket client written out by hand: the upgrade, masked text frames out, frames in.
struct Ws(TcpStream);

impl Ws {
    /// Connects with a small receive buffer (so that not reading soon stops the hub's sends).
    fn connect(web: &str, small: bool) -> Ws {
        Ws::connect_to(web, "/foxglove", small)
    }

    /// [`connect`](Ws::connect) to `path` (with a query, say).
    fn connect_to(web: &str, path: &str, small: bool) -> Ws {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        if small {
            socket.set_recv_buffer_size(4096).expect("rcvbuf");
        }
        let target: std::net::SocketAddr = web.parse().expect("address");
        socket.connect(&target.into()).expect("connect");
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {web}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: foxglove.websocket.v1\r\n\r\n"
        )
        .expect("upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-protocol: foxglove.websocket.v1"),
            "{head}"
        );
        Ws(stream)
    }

    fn send_text(&mut self, text: &str) {
        let mask = [0x5a, 0x13, 0xc4, 0x7e];
        let mut frame = vec![0x81];
        match text.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame).expect("send");
    }

    /// The next frame: its opcode and payload.
    fn next(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.0.read_exact(&mut head).expect("frame");
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.0.read_exact(&mut n).expect("length");
                u64::from(u16::from_be_bytes(n))
            }
            127 => {
                let mut n = [0u8; 8];
                self.0.read_exact(&mut n).expect("length");
                u64::from_be_bytes(n)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        self.0.read_exact(&mut payload).expect("payload");
        (head[0] & 0x0f, payload)
    }

    /// The next JSON message with this `op`.
    fn next_op(&mut self, op: &str) -> Value {
        loop {
            let (code, payload) = self.next();
            if code == 1 {
                let message: Value = serde_json::from_slice(&payload).expect("json");
                if message["op"] == op {
                    return message;
                }
            }
        }
    }
}

#[test]
fn a_foxglove_client_that_stops_reading_is_dropped_and_ingest_goes_on() {
    let dir = TempDir::new("foxglove-slow");
    let (hub, ingest, web, _db) = start_hub_http(&dir, &["--no-auth", "--http-timeout", "600"]);
    let first = numbered_input(&dir, "flood", 1);
    let (status, _, err) = run(&["publish", &ingest, "--file", &first], b"");
    assert!(status.success(), "{err}");
    let mut client = Ws::connect(&web, true);
    let info = client.next_op("serverInfo");
    assert_eq!(info["capabilities"], serde_json::json!(["time"]));
    let advertised = client.next_op("advertise");
    let channel = advertised["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["topic"].as_str().is_some_and(|t| t.ends_with("/flood")))
        .expect("the flood channel")["id"]
        .clone();
    // A hundred subscriptions to it: each reading is a hundred messages to this client.
    let subscriptions: Vec<Value> = (0..100)
        .map(|id| serde_json::json!({ "id": id, "channelId": channel }))
        .collect();
    client.send_text(
        &serde_json::json!({ "op": "subscribe", "subscriptions": subscriptions }).to_string(),
    );
    wait_until("the client counted", || {
        get_metric(&web, "socketeer_hub_foxglove_clients") == 1
    });
    // It reads nothing more while 20,000 readings are published, every one acknowledged.
    let input = numbered_input(&dir, "flood", 20_000);
    let (status, _, err) = run(&["publish", &ingest, "--file", &input], b"");
    assert!(
        status.success(),
        "every line acknowledged while the client stalls: {err}"
    );
    wait_until("the stalled client dropped", || {
        get_metric(&web, "socketeer_hub_foxglove_clients_dropped_total") == 1
    });
    wait_until("and gone", || {
        get_metric(&web, "socketeer_hub_foxglove_clients") == 0
    });
    assert_eq!(get_metric(&web, "socketeer_hub_records_total"), 20_001);
    // A new client is served as before.
    let mut again = Ws::connect(&web, false);
    again.next_op("serverInfo");
    drop(client);
    drop(again);
    hub.stop_ok();
}

#[test]
fn the_foxglove_socket_keeps_the_token_rules_and_a_new_session_each_run() {
    let dir = TempDir::new("foxglove-token");
    let token = "a-token-for-foxglove-0123";
    let args = ["--no-auth", "--http-token", token];
    let (hub, _ingest, web, _db) = start_hub_http(&dir, &args);
    // Without the token: refused before any upgrade.
    let mut stream = TcpStream::connect(&web).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        stream,
        "GET /foxglove HTTP/1.1\r\nHost: {web}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: foxglove.sdk.v1\r\n\r\n"
    )
    .expect("send");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("status");
    assert_eq!(&head, b"HTTP/1.1 401");
    // With it: the socket, and this run's session.
    let first = Ws::connect_to(&web, &format!("/foxglove?token={token}"), false)
        .next_op("serverInfo")["sessionId"]
        .clone();
    hub.stop_ok();
    // The same database, a new run: a new session (a Foxglove app then starts afresh).
    let (hub, _ingest, web, _db) = start_hub_http(&dir, &args);
    let second = Ws::connect_to(&web, &format!("/foxglove?token={token}"), false)
        .next_op("serverInfo")["sessionId"]
        .clone();
    assert!(first.is_string() && second.is_string());
    assert_ne!(first, second);
    hub.stop_ok();
}
