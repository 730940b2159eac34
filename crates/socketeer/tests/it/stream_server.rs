//! The stream server over TCP: many clients at once, setup/handle/finish, handle_request.

use socketeer::{Connection, Handler, Limits, Result, client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::{ChunkEcho, UpperLines, exchange, read_to_end, start};

#[tokio::test]
async fn upper_case_keeps_non_ascii_bytes() {
    let server = start(|| UpperLines, Limits::default()).await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut s, "hello 欢迎\n".as_bytes(), "HELLO 欢迎\n".as_bytes()).await;
}

#[tokio::test]
async fn three_clients_are_served_while_a_fourth_sits_silent() {
    let server = start(|| ChunkEcho, Limits::default()).await;
    let _silent = TcpStream::connect(server.addr)
        .await
        .expect("silent client");
    let clients = (0..3).map(|i| {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            for round in 0..20 {
                let msg = format!("client {i} round {round}\n");
                exchange(&mut s, msg.as_bytes(), msg.as_bytes()).await;
            }
        })
    });
    for client in clients {
        client.await.expect("client finished");
    }
}

#[tokio::test]
async fn a_client_vanishing_mid_line_does_not_disturb_the_server() {
    let server = start(|| UpperLines, Limits::default()).await;
    let mut rude = TcpStream::connect(server.addr).await.expect("connect");
    rude.write_all(b"half a li").await.expect("send");
    // Reset, not a polite FIN: linger 0 then drop.
    #[allow(deprecated)] // linger 0 does not block; it makes close send a reset
    rude.set_linger(Some(std::time::Duration::ZERO))
        .expect("linger");
    drop(rude);
    let mut polite = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut polite, b"still here\n", b"STILL HERE\n").await;
}

/// Reports each phase to the test, and fails in `handle` when asked to.
struct Phases {
    tx: mpsc::UnboundedSender<&'static str>,
}

impl Handler for Phases {
    async fn setup(&mut self, conn: &mut Connection) -> Result<()> {
        self.tx.send("setup").ok();
        conn.send(b"welcome\n").await
    }

    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        self.tx.send("handle").ok();
        let line = conn.read_line().await?.unwrap_or_default();
        if line.starts_with(b"fail") {
            return Err(socketeer::Error::new(
                socketeer::ErrorKind::InvalidData,
                "asked to fail",
            ));
        }
        conn.send(&line).await
    }

    async fn finish(&mut self, conn: &mut Connection) {
        self.tx.send("finish").ok();
        let _ = conn.send(b"bye\n").await;
    }
}

#[tokio::test]
async fn setup_handle_finish_run_in_order_and_finish_runs_after_a_failure() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start(move || Phases { tx: tx.clone() }, Limits::default()).await;
    let mut conn = client::connect(&server.endpoint).await.expect("connect");
    assert_eq!(
        conn.read_line().await.expect("welcome").as_deref(),
        Some(&b"welcome\n"[..])
    );
    conn.send(b"fail now\n").await.expect("send");
    assert_eq!(
        conn.read_line().await.expect("bye").as_deref(),
        Some(&b"bye\n"[..])
    );
    assert_eq!(conn.read_line().await.expect("eof"), None);
    for phase in ["setup", "handle", "finish"] {
        assert_eq!(rx.recv().await, Some(phase));
    }
}

#[tokio::test]
async fn handle_request_serves_exactly_one_connection() {
    let listener =
        socketeer::Listener::bind(&"127.0.0.1:0".parse().expect("ep"), &Default::default())
            .await
            .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = socketeer::Server::new(listener, || UpperLines);
    let mut first = TcpStream::connect(addr).await.expect("first");
    let mut second = TcpStream::connect(addr)
        .await
        .expect("second (waits in the backlog)");
    second.write_all(b"am i served?\n").await.expect("send");
    let serve = tokio::spawn(async move {
        server.handle_request().await.expect("one request");
        server // dropped below, closing the listener and the backlog
    });
    exchange(&mut first, b"one\n", b"ONE\n").await;
    drop(first);
    drop(serve.await.expect("served"));
    assert!(
        read_to_end(&mut second).await.is_empty(),
        "the second connection got no reply"
    );
}
