//! The client side: connect to any stream endpoint with a deadline — optionally over TLS and
//! authenticated — and get the same [`Connection`] the servers use; datagram clients use
//! [`crate::DatagramSocket::connect`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use crate::auth::{AuthMode, client_handshake};
use crate::connection::Connection;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Remedy, Result};
use crate::keys::ClientKey;
use crate::limits::Limits;
use crate::listener::{BindOptions, configure_tcp};
use crate::stream::{PeerAddr, Stream};
use crate::tls::TlsConnector;

pub use crate::greeting::{Mismatch, recognize};

/// The connect deadline [`connect`] uses.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`connect_with`] connects.
///
/// ```no_run
/// # async fn demo() -> socketeer::Result<()> {
/// use socketeer::{client, AuthMode, ClientKey, ClientOptions, ServerVerification, TlsConnector};
/// let mut options = ClientOptions::default();
/// options.tls = Some(TlsConnector::new(ServerVerification::ca_file("ca.pem".as_ref())?)?);
/// options.key = Some(ClientKey::from_file("robot.key".as_ref(), "robot-7")?);
/// let mut conn = client::connect_with(&"hub.local:7000".parse()?, &options).await?;
/// conn.send(b"hello\n").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Deadline for connecting, the TLS handshake and authentication together. Default 10 s.
    pub timeout: Duration,
    /// Run TLS over the connection.
    pub tls: Option<TlsConnector>,
    /// The name to check the server's certificate against; by default the endpoint's host
    /// (`localhost` for Unix sockets).
    pub server_name: Option<String>,
    /// Authenticate with this key.
    pub key: Option<ClientKey>,
    /// How to authenticate. Default [`AuthMode::Socketeer`], which also checks the server's proof.
    pub auth_mode: AuthMode,
    /// Limits for the connection. Default: [`Limits::default`] without an idle timeout.
    pub limits: Limits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let limits = Limits {
            idle_timeout: None,
            ..Limits::default()
        };
        Self {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
            server_name: None,
            key: None,
            auth_mode: AuthMode::Socketeer,
            limits,
        }
    }
}

/// Connects to a stream endpoint, then runs TLS and authentication as `options` say, all within
/// `options.timeout`.
///
/// # Errors
/// [`ErrorKind::Connect`], [`ErrorKind::Timeout`], [`ErrorKind::Tls`] (including a certificate
/// that fails verification), [`ErrorKind::Auth`] (refused, or a server that cannot prove it
/// holds the key).
pub async fn connect_with(endpoint: &Endpoint, options: &ClientOptions) -> Result<Connection> {
    let started = tokio::time::Instant::now();
    let (stream, peer) = connect_stream(endpoint, options.timeout).await?;
    let rest = async {
        let (stream, exporter) = match &options.tls {
            Some(tls) => {
                let name = options
                    .server_name
                    .clone()
                    .unwrap_or_else(|| default_server_name(endpoint));
                // What the server sends first is kept, to say what it is if it is not TLS.
                let seen = Arc::new(Mutex::new(Vec::new()));
                let recorded = Stream::other(Recorder {
                    inner: stream,
                    seen: Arc::clone(&seen),
                    full: false,
                });
                let (stream, exporter) = match tls.connect(recorded, &name).await {
                    Ok(done) => done,
                    Err(err) => {
                        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        // TLS records are what a TLS server sends: then the error is TLS's.
                        return Err(match recognize(&seen) {
                            Some(Mismatch::SpeaksTls) | None => err,
                            Some(mismatch) => mismatch.into_error(true),
                        });
                    }
                };
                (stream, Some(exporter))
            }
            None => (stream, None),
        };
        let mut conn = Connection::with_limits(stream, peer, &options.limits);
        if let Some(exporter) = exporter {
            conn.set_tls_exporter(exporter);
        }
        if let Some(key) = &options.key {
            client_handshake(&mut conn, key, options.auth_mode).await?;
        }
        Ok(conn)
    };
    let left = options.timeout.saturating_sub(started.elapsed());
    tokio::time::timeout(left, rest).await.map_err(|_| {
        let err = Error::new(
            ErrorKind::Timeout,
            format!(
                "{endpoint}: handshake not finished within {:?}",
                options.timeout
            ),
        );
        // A TLS server waits for a TLS client, as a keyed one waits for our answer: say so.
        match (&options.tls, &options.key) {
            (None, Some(_)) => err.with_remedy(Remedy::MaybeUseTls),
            _ => err,
        }
    })?
}

/// Keeps the first bytes read from a stream (up to 256) while passing everything through;
/// once it has them, reads cost no lock.
struct Recorder {
    inner: Stream,
    seen: Arc<Mutex<Vec<u8>>>,
    full: bool,
}

impl tokio::io::AsyncRead for Recorder {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.full {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let new = &buf.filled()[before..];
            let room = 256usize.saturating_sub(seen.len());
            seen.extend_from_slice(&new[..new.len().min(room)]);
            let full = seen.len() >= 256;
            drop(seen);
            self.full = full;
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn default_server_name(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp(hp) | Endpoint::Udp(hp) => hp.host().unwrap_or("localhost").to_owned(),
        Endpoint::Unix(_) | Endpoint::UnixDatagram(_) => "localhost".to_owned(),
    }
}

/// Connects to a stream endpoint with the default 10 s deadline and default [`Limits`].
///
/// # Errors
/// As [`connect_stream`].
pub async fn connect(endpoint: &Endpoint) -> Result<Connection> {
    let (stream, peer) = connect_stream(endpoint, DEFAULT_CONNECT_TIMEOUT).await?;
    Ok(Connection::with_limits(stream, peer, &Limits::default()))
}

/// Connects to a stream endpoint (`tcp://` or `unix://`) within `timeout`. Host names may
/// resolve to several addresses; each is tried in turn within the one deadline.
///
/// # Errors
/// [`ErrorKind::Connect`] naming the endpoint, with the last failure as its cause;
/// [`ErrorKind::Timeout`] when the deadline passes.
pub async fn connect_stream(endpoint: &Endpoint, timeout: Duration) -> Result<(Stream, PeerAddr)> {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp(hp) => {
                if hp.host().is_none() {
                    return Err(Error::new(
                        ErrorKind::Connect,
                        format!("{endpoint}: a host is needed to connect"),
                    ));
                }
                let mut last = None;
                for addr in hp.resolve().await? {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            configure_tcp(&stream, &BindOptions::default());
                            return Ok((Stream::Tcp(stream), PeerAddr::Inet(addr)));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let cause = last.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into());
                Err(
                    Error::new(ErrorKind::Connect, format!("cannot connect to {endpoint}"))
                        .with_source(cause),
                )
            }
            Endpoint::Unix(path) => match UnixStream::connect(path).await {
                Ok(stream) => Ok((Stream::Unix(stream), PeerAddr::Unix(Some(path.clone())))),
                Err(e) => Err(Error::new(
                    ErrorKind::Connect,
                    format!("cannot connect to {endpoint}"),
                )
                .with_source(e)),
            },
            Endpoint::Udp(_) | Endpoint::UnixDatagram(_) => Err(Error::new(
                ErrorKind::Connect,
                format!("{endpoint} is a datagram endpoint; use DatagramSocket::connect"),
            )),
        }
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        Error::new(
            ErrorKind::Timeout,
            format!("cannot connect to {endpoint}: no answer within {timeout:?}"),
        )
    })?
}
