//! `Server::threads`: connections served on the server's own single-threaded runtimes, with
//! the same drain, grace deadline and clean-up as on the caller's runtime.

use std::sync::Arc;
use std::time::Duration;

use socketeer::{BindOptions, Connection, Endpoint, Handler, Limits, Listener, Result, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::support::{TempDir, UpperLines, exchange, read_to_end, start_with};

/// Answers each line with the name of the thread the connection runs on.
struct WhereAmI;

impl Handler for WhereAmI {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while conn.read_line().await?.is_some() {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            conn.send(format!("{name}\n").as_bytes()).await?;
        }
        Ok(())
    }
}

async fn thread_of(stream: &mut BufReader<TcpStream>) -> String {
    stream.get_mut().write_all(b"?\n").await.expect("ask");
    let mut name = String::new();
    stream.read_line(&mut name).await.expect("answer");
    name.trim_end().to_owned()
}

#[tokio::test]
async fn connections_run_on_the_servers_own_threads_while_all_are_served() {
    let server = start_with(|| WhereAmI, Limits::default(), |s| s.threads(2)).await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(BufReader::new(
            TcpStream::connect(server.addr).await.expect("connect"),
        ));
    }
    // Every connection is live at once and each answers from one of the server's threads
    // (none from the runtime the test and serve_forever run on).
    for client in &mut clients {
        let name = thread_of(client).await;
        assert!(
            name == "socketeer-0" || name == "socketeer-1",
            "served on {name:?}"
        );
        // A connection stays on the thread that accepted it.
        assert_eq!(thread_of(client).await, name);
    }
    drop(clients);
    server.shutdown.trigger();
    server.task.await.expect("join").expect("serve_forever");
}

/// Upper-cases lines; a line starting "slow" is held until the test says go.
struct Held {
    got: mpsc::UnboundedSender<()>,
    go: Arc<Notify>,
}

impl Handler for Held {
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
async fn with_threads_shutdown_still_refuses_new_clients_and_finishes_in_flight_replies() {
    let (got, mut received) = mpsc::unbounded_channel();
    let go = Arc::new(Notify::new());
    let handler_go = Arc::clone(&go);
    let server = start_with(
        move || Held {
            got: got.clone(),
            go: Arc::clone(&handler_go),
        },
        Limits::default(),
        |s| s.threads(2),
    )
    .await;
    let mut idle = TcpStream::connect(server.addr).await.expect("idle");
    let mut busy = TcpStream::connect(server.addr).await.expect("busy");
    exchange(&mut idle, b"warm up\n", b"WARM UP\n").await;
    busy.write_all(b"slow request\n").await.expect("send");
    received.recv().await.expect("the server has the request");

    server.shutdown.trigger();
    assert!(read_to_end(&mut idle).await.is_empty(), "idle one ends");
    // Every thread's handle on the listening socket goes; then connecting is refused. (Turns
    // of the runtime, not time: the threads notice the trigger on their own.)
    let mut refused = false;
    for _ in 0..10_000 {
        if TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "connect after shutdown must be refused");
    go.notify_one();
    let mut reply = vec![0; 13];
    tokio::io::AsyncReadExt::read_exact(&mut busy, &mut reply)
        .await
        .expect("the in-flight reply");
    assert_eq!(reply, b"SLOW REQUEST\n");
    assert!(read_to_end(&mut busy).await.is_empty());
    server.task.await.expect("join").expect("serve_forever");
}

struct Stuck {
    events: mpsc::UnboundedSender<&'static str>,
}

impl Handler for Stuck {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        self.events.send("handle").ok();
        let _ = conn.read_line().await?;
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn finish(&mut self, _conn: &mut Connection) {
        self.events.send("finish").ok();
    }
}

#[tokio::test]
async fn with_threads_the_grace_deadline_is_honoured_and_finish_still_runs() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut limits = Limits::default();
    limits.grace = Duration::from_millis(300);
    let server = start_with(
        move || Stuck { events: tx.clone() },
        limits,
        |s| s.threads(2),
    )
    .await;
    let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
    stuck.write_all(b"no newline ever").await.expect("send");
    assert_eq!(events.recv().await, Some("handle"));

    let started = std::time::Instant::now();
    server.shutdown.trigger();
    server.task.await.expect("join").expect("serve_forever");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "waited the grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "but not much longer: {took:?}"
    );
    // serve_forever returned only after the thread had run finish and dropped the connection.
    assert_eq!(events.try_recv(), Ok("finish"));
    assert!(read_to_end(&mut stuck).await.is_empty(), "dropped");
}

#[tokio::test]
async fn dropping_serve_forever_stops_the_threads_and_closes_their_connections() {
    let server = start_with(|| UpperLines, Limits::default(), |s| s.threads(2)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut client, b"hi\n", b"HI\n").await;
    server.task.abort();
    let _ = server.task.await;
    // The connection's thread let it go: the client reads the end, not a hang.
    assert!(read_to_end(&mut client).await.is_empty());
    let mut refused = false;
    for _ in 0..10_000 {
        if TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "no thread is accepting any more");
}

#[tokio::test]
async fn unix_endpoints_are_served_on_threads_and_their_file_removed_on_stop() {
    let dir = TempDir::new("threads");
    let path = dir.path("t.sock");
    let endpoint = Endpoint::Unix(path.clone());
    let listener = Listener::bind(&endpoint, &BindOptions::default())
        .await
        .expect("bind");
    let server = Server::new(listener, || WhereAmI).threads(3);
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.serve_forever());
    let mut conn = socketeer::client::connect(&endpoint)
        .await
        .expect("connect");
    conn.send(b"?\n").await.expect("ask");
    let name = conn.read_line().await.expect("answer").expect("a line");
    assert!(name.starts_with(b"socketeer-"), "{name:?}");
    drop(conn);
    shutdown.trigger();
    task.await.expect("join").expect("serve_forever");
    assert!(!path.exists(), "socket file removed on stop");
}

/// Spawns a task that never ends, holding a sender, for each connection.
struct Spawner {
    keep: mpsc::UnboundedSender<()>,
}

impl Handler for Spawner {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let keep = self.keep.clone();
        tokio::spawn(async move {
            let _keep = keep;
            std::future::pending::<()>().await;
        });
        while let Some(line) = conn.read_line().await? {
            conn.send(&line).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn serve_forever_returns_once_the_threads_are_gone_with_the_tasks_handlers_spawned() {
    let (keep, mut kept) = mpsc::unbounded_channel();
    let server = start_with(
        move || Spawner { keep: keep.clone() },
        Limits::default(),
        |s| s.threads(2),
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut client, b"hi\n", b"hi\n").await;
    drop(client);
    server.shutdown.trigger();
    server.task.await.expect("join").expect("serve_forever");
    // The thread's runtime is gone, and the never-ending task with it: every sender dropped.
    // (The timeout only turns a regression into a failure instead of a hang.)
    let ended = tokio::time::timeout(Duration::from_secs(30), kept.recv()).await;
    assert_eq!(ended, Ok(None), "the spawned task outlived serve_forever");
}
