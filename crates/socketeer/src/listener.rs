//! Binding: [`BindOptions`] and [`Listener`], a bound stream socket (TCP or Unix) made with
//! socket2 so that address reuse, backlog, `TCP_NODELAY` and keepalive are all set as asked.
//!
//! Unix socket paths are handled the way operators expect: a stale socket file left by a dead
//! server is replaced; one a live server answers on, or a path that is not a socket, is an error;
//! the file is created mode 0600 (unless told otherwise) before the socket starts listening, and
//! removed again when the listener is dropped, if it is still ours.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, UnixListener};

use crate::endpoint::{Endpoint, HostPort};
use crate::error::{Error, ErrorKind, Result};
use crate::stream::{PeerAddr, Stream};

/// How sockets are bound and how accepted connections are configured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BindOptions {
    /// Listen backlog. Default 1024.
    pub backlog: u32,
    /// `SO_REUSEADDR`, so a restarted server can bind while old connections sit in `TIME_WAIT`.
    /// Default on.
    pub reuse_address: bool,
    /// `TCP_NODELAY` on accepted TCP connections. Default on: request/response protocols want
    /// replies sent at once.
    pub nodelay: bool,
    /// TCP keepalive idle time on accepted connections, to notice peers that vanished.
    /// Default 60 s; `None` leaves keepalive off.
    pub keepalive: Option<Duration>,
    /// Permission bits of a Unix socket file. Default `0o600` (only this user may connect).
    pub unix_mode: u32,
}

impl Default for BindOptions {
    fn default() -> Self {
        Self {
            backlog: 1024,
            reuse_address: true,
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            unix_mode: 0o600,
        }
    }
}

/// A bound, listening stream socket: TCP or Unix.
///
/// ```no_run
/// # async fn demo() -> socketeer::Result<()> {
/// use socketeer::{BindOptions, Listener};
/// let listener = Listener::bind(&"127.0.0.1:0".parse()?, &BindOptions::default()).await?;
/// println!("listening on {}", listener.local_endpoint());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
    local: Endpoint,
    options: BindOptions,
    _unix_file: Option<UnixPathGuard>,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds a stream endpoint (`tcp://` or `unix://`).
    ///
    /// # Errors
    /// [`ErrorKind::Bind`] if the endpoint is a datagram one, the address is in use, the Unix
    /// path belongs to a live server or is not a socket, or the system refuses.
    pub async fn bind(endpoint: &Endpoint, options: &BindOptions) -> Result<Self> {
        match endpoint {
            Endpoint::Tcp(hp) => {
                let socket = bind_inet(hp, Type::STREAM, options).await?;
                socket
                    .listen(backlog(options))
                    .map_err(|e| bind_error(endpoint, e))?;
                let listener =
                    TcpListener::from_std(socket.into()).map_err(|e| bind_error(endpoint, e))?;
                Ok(Self::from_tcp_with(listener, options.clone()))
            }
            Endpoint::Unix(path) => {
                prepare_unix_path(path, Type::STREAM).await?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
                    .map_err(|e| bind_error(endpoint, e))?;
                socket
                    .set_nonblocking(true)
                    .map_err(|e| bind_error(endpoint, e))?;
                let guard = bind_unix_path(&socket, path, options.unix_mode)?;
                socket
                    .listen(backlog(options))
                    .map_err(|e| bind_error(endpoint, e))?;
                let std_listener: std::os::unix::net::UnixListener = socket.into();
                let listener =
                    UnixListener::from_std(std_listener).map_err(|e| bind_error(endpoint, e))?;
                Ok(Self {
                    inner: Inner::Unix(listener),
                    local: endpoint.clone(),
                    options: options.clone(),
                    _unix_file: Some(guard),
                })
            }
            Endpoint::Udp(_) | Endpoint::UnixDatagram(_) => Err(Error::new(
                ErrorKind::Bind,
                format!("{endpoint} is a datagram endpoint; bind it with DatagramSocket::bind"),
            )),
        }
    }

    /// Wraps a TCP listener bound elsewhere (for example by a test on `127.0.0.1:0`).
    pub fn from_tcp(listener: TcpListener) -> Self {
        Self::from_tcp_with(listener, BindOptions::default())
    }

    fn from_tcp_with(listener: TcpListener, options: BindOptions) -> Self {
        let local = listener
            .local_addr()
            .map(Endpoint::tcp)
            .unwrap_or_else(|_| Endpoint::tcp(SocketAddr::from(([0, 0, 0, 0], 0))));
        Self {
            inner: Inner::Tcp(listener),
            local,
            options,
            _unix_file: None,
        }
    }

    /// The endpoint really bound: with port 0 resolved to the port the system chose.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// The bound socket address, for TCP listeners.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::Tcp(l) => l.local_addr().ok(),
            Inner::Unix(_) => None,
        }
    }

    /// Accepts one connection, configured as the [`BindOptions`] say.
    ///
    /// # Errors
    /// The accept error; see [`crate::server`] for how the server classifies and backs off.
    ///
    /// # Cancel safety
    /// Cancel-safe: a connection is either returned or left in the backlog.
    pub async fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match &self.inner {
            Inner::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                configure_tcp(&stream, &self.options);
                Ok((Stream::Tcp(stream), PeerAddr::Inet(peer)))
            }
            Inner::Unix(l) => {
                let (stream, peer) = l.accept().await?;
                Ok((Stream::Unix(stream), PeerAddr::from_unix(&peer)))
            }
        }
    }
}

/// A second handle on a [`Listener`]'s socket (the same open socket, a new descriptor), not yet
/// registered with a runtime: it moves to another thread and becomes a [`Listener`] there.
#[derive(Debug)]
pub(crate) struct ListenerHandle {
    socket: Socket,
    unix: bool,
    local: Endpoint,
    options: BindOptions,
}

impl Listener {
    /// Another handle on this socket for a thread with its own runtime (see
    /// [`Server::threads`](crate::Server::threads)). The socket stays open until every handle
    /// is dropped; a Unix path is removed with this listener, not with the handles.
    pub(crate) fn handle(&self) -> io::Result<ListenerHandle> {
        let (socket, unix) = match &self.inner {
            Inner::Tcp(l) => (SockRef::from(l).try_clone()?, false),
            Inner::Unix(l) => (SockRef::from(l).try_clone()?, true),
        };
        Ok(ListenerHandle {
            socket,
            unix,
            local: self.local.clone(),
            options: self.options.clone(),
        })
    }
}

impl ListenerHandle {
    /// Registers the socket with the current runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, as tokio's `from_std` does.
    pub(crate) fn into_listener(self) -> io::Result<Listener> {
        let inner = if self.unix {
            Inner::Unix(UnixListener::from_std(self.socket.into())?)
        } else {
            Inner::Tcp(TcpListener::from_std(self.socket.into())?)
        };
        Ok(Listener {
            inner,
            local: self.local,
            options: self.options,
            _unix_file: None,
        })
    }
}

/// Applies nodelay and keepalive to a connected TCP stream; failures are harmless and ignored.
pub(crate) fn configure_tcp(stream: &tokio::net::TcpStream, options: &BindOptions) {
    let sock = SockRef::from(stream);
    if options.nodelay {
        let _ = sock.set_tcp_nodelay(true);
    }
    if let Some(idle) = options.keepalive {
        let _ = sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle));
    }
}

fn backlog(options: &BindOptions) -> i32 {
    i32::try_from(options.backlog).unwrap_or(i32::MAX)
}

fn bind_error(endpoint: &Endpoint, err: io::Error) -> Error {
    Error::new(ErrorKind::Bind, format!("cannot bind {endpoint}")).with_source(err)
}

/// Creates a non-blocking IP socket of `ty` bound to the first address of `hp` that binds.
/// `:PORT` binds the IPv6 wildcard dual-stack, falling back to IPv4 where IPv6 is missing.
pub(crate) async fn bind_inet(hp: &HostPort, ty: Type, options: &BindOptions) -> Result<Socket> {
    let scheme = if ty == Type::DGRAM { "udp" } else { "tcp" };
    let describe = || format!("cannot bind {scheme}://{hp}");
    let mut addrs = hp
        .resolve()
        .await
        .map_err(|e| Error::new(ErrorKind::Bind, describe()).with_source(e))?;
    if hp.host().is_none() {
        addrs.push(SocketAddr::from(([0, 0, 0, 0], hp.port())));
    }
    let mut last = None;
    for addr in addrs {
        match bind_one(addr, ty, options, hp.host().is_none()) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    let err = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable));
    Err(Error::new(ErrorKind::Bind, describe()).with_source(err))
}

fn bind_one(
    addr: SocketAddr,
    ty: Type,
    options: &BindOptions,
    dual_stack: bool,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if options.reuse_address {
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() && dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Removes a stale Unix socket file at `path`, or says why the path cannot be used.
pub(crate) async fn prepare_unix_path(path: &Path, ty: Type) -> Result<()> {
    let in_use = |why: &str| {
        Error::new(
            ErrorKind::Bind,
            format!("cannot bind unix://{}: {why}", path.display()),
        )
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(in_use("cannot inspect the path").with_source(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(in_use(
            "the path exists and is not a socket; remove it or choose another path",
        ));
    }
    match probe_unix(path, ty).await {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing stale unix socket");
            std::fs::remove_file(path)
                .map_err(|e| in_use("cannot remove the stale socket").with_source(e))
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            Err(in_use("a live server is using it (it is busy)"))
        }
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            Err(in_use("a live server of another socket type is using it"))
        }
        Err(e) => Err(in_use("cannot probe the existing socket").with_source(e)),
        Ok(()) => Err(in_use("a live server is using it")),
    }
}

async fn probe_unix(path: &Path, ty: Type) -> io::Result<()> {
    if ty == Type::DGRAM {
        let probe = std::os::unix::net::UnixDatagram::unbound()?;
        return probe.connect(path);
    }
    match tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::UnixStream::connect(path),
    )
    .await
    {
        Ok(result) => result.map(drop),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Binds `socket` to `path`, sets its mode before anyone can connect, and returns a guard that
/// removes the file when dropped.
pub(crate) fn bind_unix_path(socket: &Socket, path: &Path, mode: u32) -> Result<UnixPathGuard> {
    let fail = |what: &str, e: io::Error| {
        Error::new(
            ErrorKind::Bind,
            format!("cannot bind unix://{}: {what}", path.display()),
        )
        .with_source(e)
    };
    let addr = SockAddr::unix(path).map_err(|e| fail("bad path", e))?;
    socket.bind(&addr).map_err(|e| fail("bind failed", e))?;
    let guard = UnixPathGuard::new(path.to_path_buf())
        .map_err(|e| fail("cannot stat the new socket", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail("cannot set its mode", e))?;
    Ok(guard)
}

/// Removes a Unix socket file on drop, but only if the file there is still the one we made.
#[derive(Debug)]
pub(crate) struct UnixPathGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl UnixPathGuard {
    pub(crate) fn new(path: PathBuf) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(&path)?;
        Ok(Self {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
