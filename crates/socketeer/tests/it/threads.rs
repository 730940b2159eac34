//! `Server::threads`: connections served on the server's own single-threaded runtimes, and
//! cleaned up with them (the drain and grace deadline with threads: shutdown.rs).

use std::time::Duration;

use socketeer::{BindOptions, Connection, Endpoint, Handler, Limits, Listener, Result, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::{TempDir, UpperLines, exchange, read_to_end, refused_soon, start_with};

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

#[tokio::test]
async fn dropping_serve_forever_stops_the_threads_and_closes_their_connections() {
    let server = start_with(|| UpperLines, Limits::default(), |s| s.threads(2)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut client, b"hi\n", b"HI\n").await;
    server.task.abort();
    let _ = server.task.await;
    // The connection's thread let it go: the client reads the end, not a hang.
    assert!(read_to_end(&mut client).await.is_empty());
    assert!(
        refused_soon(server.addr).await,
        "no thread is accepting any more"
    );
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
