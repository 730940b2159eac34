//! Graceful shutdown: new connections refused at once, in-flight replies complete, idle
//! connections end, and the grace deadline is honoured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use socketeer::{Connection, Handler, Limits, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::support::{exchange, read_to_end, start};

/// Upper-cases lines; a line starting "slow" is held until the test says go.
struct Slow {
    got: mpsc::UnboundedSender<()>,
    go: Arc<Notify>,
}

impl Handler for Slow {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while let Some(line) = conn.read_line().await? {
            if line.starts_with(b"slow") {
                self.got.send(()).ok();
                self.go.notified().await;
            }
            conn.send(&line.to_ascii_uppercase()).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn shutdown_refuses_new_clients_finishes_in_flight_replies_and_closes_idle_ones() {
    let (got, mut received) = mpsc::unbounded_channel();
    let go = Arc::new(Notify::new());
    let handler_go = Arc::clone(&go);
    let server = start(
        move || Slow {
            got: got.clone(),
            go: Arc::clone(&handler_go),
        },
        Limits::default(),
    )
    .await;
    let mut idle = TcpStream::connect(server.addr).await.expect("idle");
    let mut busy = TcpStream::connect(server.addr).await.expect("busy");
    exchange(&mut idle, b"warm up\n", b"WARM UP\n").await;
    busy.write_all(b"slow request\n").await.expect("send");
    received.recv().await.expect("the server has the request");

    server.shutdown.trigger();
    // The idle connection ends at once.
    assert!(read_to_end(&mut idle).await.is_empty());
    // New connections are refused as soon as the accept loop has dropped the listener; give
    // the runtime turns (not time) until it has.
    let mut refused = false;
    for _ in 0..1000 {
        if TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "connect after shutdown must be refused");
    // The in-flight request is answered, then that connection ends too.
    go.notify_one();
    exchange(&mut busy, b"", b"SLOW REQUEST\n").await;
    assert!(read_to_end(&mut busy).await.is_empty());
    server.task.await.expect("join").expect("serve_forever");
}

struct Stubborn {
    events: mpsc::UnboundedSender<&'static str>,
}

impl Handler for Stubborn {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        self.events.send("handle").ok();
        // Never finishes a message: waits on a line that never comes.
        let _ = conn.read_line().await?;
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn finish(&mut self, _conn: &mut Connection) {
        self.events.send("finish").ok();
    }
}

#[tokio::test]
async fn the_grace_deadline_is_honoured_and_finish_still_runs() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut limits = Limits::default();
    limits.grace = Duration::from_millis(300);
    let server = start(move || Stubborn { events: tx.clone() }, limits).await;
    let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
    stuck.write_all(b"no newline ever").await.expect("send");
    assert_eq!(events.recv().await, Some("handle"));

    let started = Instant::now();
    server.shutdown.trigger();
    server.task.await.expect("join").expect("serve_forever");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "waited the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "but not much longer: {took:?}"
    );
    assert_eq!(
        events.recv().await,
        Some("finish"),
        "finish ran for the cancelled connection"
    );
    assert!(read_to_end(&mut stuck).await.is_empty(), "dropped");
}
