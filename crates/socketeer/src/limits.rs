//! [`Limits`]: every size and wait a peer controls, bounded, with the defaults SPEC §3 gives.

use std::time::Duration;

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
