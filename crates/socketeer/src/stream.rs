//! [`Stream`]: one connected byte stream of any transport (TCP, Unix, or a boxed stream such as
//! TLS or an in-memory pipe), and [`PeerAddr`]: who is on the other end.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Any byte stream a [`Stream`] can carry besides the built-in transports.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A connected byte stream: TCP, Unix, or any other [`AsyncStream`] (TLS, `tokio::io::duplex`).
#[non_exhaustive]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
    /// A TLS session over another stream (server or client side).
    Tls(Box<tokio_rustls::TlsStream<Stream>>),
    /// Any other stream, boxed (TLS sessions, in-memory pipes for tests).
    Other(Box<dyn AsyncStream>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Self::Unix(s) => f.debug_tuple("Unix").field(s).finish(),
            Self::Tls(s) => f.debug_tuple("Tls").field(s.get_ref().0).finish(),
            Self::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl Stream {
    /// Wraps any stream, e.g. one half of `tokio::io::duplex` in a test.
    pub fn other(stream: impl AsyncStream) -> Self {
        Self::Other(Box::new(stream))
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::Tls($s) => $e,
            Stream::Other($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            Self::Other(s) => s.is_write_vectored(),
        }
    }
}

/// The address of the other end of a connection or datagram.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// An IPv4 or IPv6 peer.
    Inet(SocketAddr),
    /// A Unix socket peer; `None` when the peer's socket is unnamed (the usual case for clients).
    Unix(Option<PathBuf>),
    /// A peer of a stream whose address is not known (in-memory pipes).
    Unknown,
}

impl PeerAddr {
    /// The IP address, for network peers.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Inet(a) => Some(a.ip()),
            _ => None,
        }
    }

    /// The socket address, for network peers.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Inet(a) => Some(*a),
            _ => None,
        }
    }

    pub(crate) fn from_unix(addr: &tokio::net::unix::SocketAddr) -> Self {
        Self::Unix(addr.as_pathname().map(PathBuf::from))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) => write!(f, "{a}"),
            Self::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            Self::Unix(None) => f.write_str("unix:(unnamed)"),
            Self::Unknown => f.write_str("(unknown)"),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Inet(addr)
    }
}
