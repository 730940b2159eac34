//! Limits: oversize lines and frames close only their connection; the connection cap holds;
//! idle peers are closed.

use std::time::Duration;

use socketeer::{Connection, Handler, Limits, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{Log, UpperLines, exchange, read_to_end, start};

#[tokio::test]
async fn an_oversize_line_closes_only_that_connection() {
    let mut limits = Limits::default();
    limits.max_line = 64;
    let server = start(|| UpperLines, limits).await;
    let mut bystander = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut bystander, b"before\n", b"BEFORE\n").await;

    let mut big = TcpStream::connect(server.addr).await.expect("connect");
    big.write_all(&[b'x'; 65]).await.expect("send");
    assert!(
        read_to_end(&mut big).await.is_empty(),
        "closed without a reply"
    );

    exchange(&mut bystander, b"after\n", b"AFTER\n").await;
    assert!(!server.task.is_finished());
}

struct FrameEcho;

impl Handler for FrameEcho {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while let Some(frame) = conn.read_frame().await? {
            conn.write_frame(&frame).await?;
            conn.flush().await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_oversize_frame_header_closes_the_connection_before_any_payload() {
    let mut limits = Limits::default();
    limits.max_frame = 1024;
    let server = start(|| FrameEcho, limits).await;
    let mut ok = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut ok, b"\0\0\0\x02hi", b"\0\0\0\x02hi").await;
    let mut hostile = TcpStream::connect(server.addr).await.expect("connect");
    hostile
        .write_all(&1025u32.to_be_bytes())
        .await
        .expect("header");
    assert!(read_to_end(&mut hostile).await.is_empty());
    exchange(&mut ok, b"\0\0\0\x03bye", b"\0\0\0\x03bye").await;
}

/// Logs when each connection starts and ends.
struct Logged {
    log: Log,
}

impl Handler for Logged {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        self.log.push("start");
        while let Some(line) = conn.read_line().await? {
            conn.send(&line).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, _conn: &mut Connection) {
        self.log.push("end");
    }
}

#[tokio::test]
async fn the_connection_cap_holds_and_waiting_clients_are_served_when_a_place_frees() {
    let mut limits = Limits::default();
    limits.max_connections = 2;
    let log = Log::default();
    let handler_log = log.clone();
    let server = start(
        move || Logged {
            log: handler_log.clone(),
        },
        limits,
    )
    .await;

    let mut a = TcpStream::connect(server.addr).await.expect("a");
    let mut b = TcpStream::connect(server.addr).await.expect("b");
    exchange(&mut a, b"a\n", b"a\n").await;
    exchange(&mut b, b"b\n", b"b\n").await;

    // The third completes its TCP handshake in the backlog but is not accepted yet.
    let mut c = TcpStream::connect(server.addr).await.expect("c");
    c.write_all(b"c\n").await.expect("send");
    drop(a);
    exchange(&mut c, b"", b"c\n").await;

    let events = log.events();
    assert_eq!(events.iter().filter(|e| *e == "start").count(), 3);
    let third_start = events
        .iter()
        .rposition(|e| e == "start")
        .expect("third start");
    let first_end = events.iter().position(|e| e == "end").expect("an end");
    assert!(
        first_end < third_start,
        "the third started only after one ended: {events:?}"
    );
}

#[tokio::test]
async fn idle_peers_are_closed() {
    let mut limits = Limits::default();
    limits.idle_timeout = Some(Duration::from_millis(200));
    let server = start(|| UpperLines, limits).await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    assert!(
        read_to_end(&mut silent).await.is_empty(),
        "closed by the server"
    );
}

/// Writes forever to a peer that never reads.
struct Firehose {
    ended: tokio::sync::mpsc::UnboundedSender<socketeer::ErrorKind>,
}

impl Handler for Firehose {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let block = vec![b'x'; 64 * 1024];
        loop {
            if let Err(err) = conn.send(&block).await {
                self.ended.send(err.kind()).ok();
                return Err(err);
            }
        }
    }
}

#[tokio::test]
async fn a_peer_that_never_reads_is_closed_by_the_idle_timeout_on_writes() {
    let (ended, mut kinds) = tokio::sync::mpsc::unbounded_channel();
    let mut limits = Limits::default();
    limits.idle_timeout = Some(Duration::from_millis(200));
    let server = start(
        move || Firehose {
            ended: ended.clone(),
        },
        limits,
    )
    .await;
    let _never_reads = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(kinds.recv().await, Some(socketeer::ErrorKind::IdleTimeout));
}
