//! [`Limits`]: every size and wait a peer controls, bounded, with safe defaults (each field says its own).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds a server puts on its peers. Every field has a safe default; change what you need:
///
/// ```
/// use std::time::Duration;
/// let mut limits = socketeer::Limits::default();
/// limits.max_line = 1024;
/// limits.idle_timeout = Some(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Connections served at once. At the cap the server stops accepting (new clients wait in
    /// the listen backlog) until one ends. Default 10 000.
    pub max_connections: usize,
    /// Longest line, not counting its `\n`. Default 8 KiB.
    pub max_line: usize,
    /// Largest length-prefixed frame payload. Default 16 MiB.
    pub max_frame: usize,
    /// Largest datagram accepted; larger ones are dropped. Default 65 507 (the UDP maximum).
    pub max_datagram: usize,
    /// How long a connection may go without the peer sending a byte (or taking one we write)
    /// before it is closed. Default 300 s; `None` never times out.
    pub idle_timeout: Option<Duration>,
    /// Deadline from accept until the connection is ready for the service (TLS and
    /// authentication). Default 10 s.
    pub handshake_timeout: Duration,
    /// After shutdown begins, how long live connections get to finish before they are dropped.
    /// Default 5 s.
    pub grace: Duration,
    /// Datagram replies to source ports below this are refused, so a forged source address
    /// cannot aim replies at another host's system services. Default 1024; 0 allows all.
    pub min_reply_port: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_line: 8 * 1024,
            max_frame: 16 * 1024 * 1024,
            max_datagram: 65_507,
            idle_timeout: Some(Duration::from_secs(300)),
            handshake_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            min_reply_port: 1024,
        }
    }
}

/// A cap on concurrent connections that several servers can share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnectionLimit(Arc<Semaphore>);

impl ConnectionLimit {
    /// Allows `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))))
    }

    /// Free places right now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }

    pub(crate) async fn acquire(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = Arc::clone(&self.0).try_acquire_owned() {
            return permit;
        }
        // Full: say so (once a minute at most), since clients now wait unseen in the backlog.
        static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
        {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
                *last = Some(now);
                tracing::warn!(
                    "connection cap reached: new clients wait in the listen backlog until one leaves"
                );
            }
        }
        // The semaphore is never closed, so acquiring cannot fail.
        #[allow(clippy::expect_used)]
        Arc::clone(&self.0)
            .acquire_owned()
            .await
            .expect("connection semaphore is never closed")
    }
}
