//! Graceful shutdown: new connections refused at once, in-flight replies complete, idle
//! connections end, and the grace deadline is honoured — on the caller's runtime and on the
//! server's own threads alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use socketeer::Limits;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::support::{Slow, Stubborn, exchange, read_to_end, refused_soon, start_with};

#[tokio::test]
async fn shutdown_refuses_new_clients_finishes_in_flight_replies_and_closes_idle_ones() {
    refuses_new_finishes_in_flight_closes_idle(0).await;
}

#[tokio::test]
async fn with_threads_shutdown_still_refuses_new_clients_and_finishes_in_flight_replies() {
    refuses_new_finishes_in_flight_closes_idle(2).await;
}

async fn refuses_new_finishes_in_flight_closes_idle(threads: usize) {
    let (got, mut received) = mpsc::unbounded_channel();
    let go = Arc::new(Notify::new());
    let handler_go = Arc::clone(&go);
    let server = start_with(
        move || Slow {
            got: got.clone(),
            go: Arc::clone(&handler_go),
        },
        Limits::default(),
        |s| s.threads(threads),
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
    assert!(
        refused_soon(server.addr).await,
        "connect after shutdown must be refused"
    );
    // The in-flight request is answered, then that connection ends too.
    go.notify_one();
    exchange(&mut busy, b"", b"SLOW REQUEST\n").await;
    assert!(read_to_end(&mut busy).await.is_empty());
    server.task.await.expect("join").expect("serve_forever");
}

#[tokio::test]
async fn the_grace_deadline_is_honoured_and_finish_still_runs() {
    grace_is_honoured_and_finish_runs(0).await;
}

#[tokio::test]
async fn with_threads_the_grace_deadline_is_honoured_and_finish_still_runs() {
    grace_is_honoured_and_finish_runs(2).await;
}

async fn grace_is_honoured_and_finish_runs(threads: usize) {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut limits = Limits::default();
    limits.grace = Duration::from_millis(300);
    let server = start_with(
        move || Stubborn { events: tx.clone() },
        limits,
        |s| s.threads(threads),
    )
    .await;
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
    // serve_forever returned only after finish had run and the connection was dropped.
    assert_eq!(
        events.try_recv(),
        Ok("finish"),
        "finish ran for the cancelled connection"
    );
    assert!(read_to_end(&mut stuck).await.is_empty(), "dropped");
}
