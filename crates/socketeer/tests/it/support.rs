//! Shared test handlers and a `start` helper that serves on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use socketeer::{
    BindOptions, Connection, Endpoint, Handler, Limits, Listener, Result, Server, Shutdown,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
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
    start_with(make, limits, |server| server).await
}

/// Like [`start`], with the server configured further by `configure` (TLS, auth, access...).
pub async fn start_with<H: Handler, F>(
    make: F,
    limits: Limits,
    configure: impl FnOnce(Server<F>) -> Server<F>,
) -> Running
where
    F: Fn() -> H + Send + Sync + 'static,
{
    let listener = Listener::bind(
        &"tcp://127.0.0.1:0".parse().expect("ep"),
        &BindOptions::default(),
    )
    .await
    .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = configure(Server::new(listener, make).limits(limits));
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

/// A TCP connection to `addr` from the loopback address `source` (e.g. 127.0.0.2), so tests
/// can play several hosts.
pub async fn connect_from(source: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind source");
    socket.connect(addr).await.expect("connect")
}

/// The Python tutorial client's answer: HMAC-SHA256(key, challenge) as lowercase hex.
pub fn tutorial_answer(key: &str, challenge: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(challenge);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the 32-byte challenge.
pub async fn challenge(stream: &mut TcpStream) -> [u8; 32] {
    let mut c = [0u8; 32];
    stream.read_exact(&mut c).await.expect("challenge");
    c
}

pub const KEY_A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
pub const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Writes a key file with mode 0600.
pub fn key_file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path(name);
    std::fs::write(&path, text).expect("write key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A CA and a server certificate for localhost/127.0.0.1, written as PEM files in `dir`:
/// (ca.pem, server.pem, server-key.pem, server certificate DER).
pub fn certificates(dir: &TempDir, tag: &str) -> (PathBuf, PathBuf, PathBuf, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let ca = dir.path(&format!("{tag}-ca.pem"));
    let server = dir.path(&format!("{tag}-server.pem"));
    let server_key = dir.path(&format!("{tag}-server-key.pem"));
    std::fs::write(&ca, ca_cert.pem()).expect("write");
    std::fs::write(&server, cert.pem()).expect("write");
    std::fs::write(&server_key, key.serialize_pem()).expect("write");
    (ca, server, server_key, cert.der().to_vec())
}

/// Upper-cases lines; a line starting "slow" is held until the test says go.
pub struct Slow {
    pub got: mpsc::UnboundedSender<()>,
    pub go: Arc<Notify>,
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

/// Waits forever on a line that never comes; reports `handle` and `finish`.
pub struct Stubborn {
    pub events: mpsc::UnboundedSender<&'static str>,
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

/// Whether connecting to `addr` is refused within a bounded number of runtime turns (not
/// time): a stopping server drops its listener(s) on its own schedule.
pub async fn refused_soon(addr: std::net::SocketAddr) -> bool {
    for _ in 0..10_000 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}
