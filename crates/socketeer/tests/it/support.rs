//! Shared test handlers and a `start` helper that serves on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use socketeer::{
    BindOptions, Connection, Endpoint, Handler, Limits, Listener, Result, Server, Shutdown,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Echoes lines back, upper-cased.
pub struct UpperLines;

impl Handler for UpperLines {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while let Some(line) = conn.read_line().await? {
            conn.send(&line.to_ascii_uppercase()).await?;
        }
        Ok(())
    }
}

/// Echoes chunks back as they come.
pub struct ChunkEcho;

impl Handler for ChunkEcho {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while let Some(chunk) = conn.read_chunk().await? {
            conn.send(&chunk).await?;
        }
        Ok(())
    }
}

/// A running server and the means to stop it.
pub struct Running {
    pub endpoint: Endpoint,
    pub addr: std::net::SocketAddr,
    pub shutdown: Shutdown,
    pub task: JoinHandle<Result<()>>,
}

pub async fn start<H: Handler>(
    make: impl Fn() -> H + Send + Sync + 'static,
    limits: Limits,
) -> Running {
    let listener = Listener::bind(
        &"tcp://127.0.0.1:0".parse().expect("ep"),
        &BindOptions::default(),
    )
    .await
    .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::new(listener, make).limits(limits);
    let endpoint = server.local_endpoint().clone();
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.serve_forever());
    Running {
        endpoint,
        addr,
        shutdown,
        task,
    }
}

/// Sends `msg` and reads exactly `expect.len()` bytes back.
pub async fn exchange(stream: &mut TcpStream, msg: &[u8], expect: &[u8]) {
    stream.write_all(msg).await.expect("send");
    let mut got = vec![0u8; expect.len()];
    stream.read_exact(&mut got).await.expect("reply");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expect)
    );
}

/// Reads until EOF (or a reset, which also ends the connection) and returns what came.
pub async fn read_to_end(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out
}

/// An event log shared between handlers and the test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, event: impl Into<String>) {
        self.0.lock().expect("log").push(event.into());
    }

    pub fn events(&self) -> Vec<String> {
        self.0.lock().expect("log").clone()
    }
}

/// A fresh temp directory for Unix sockets, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("socketeer-it-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
