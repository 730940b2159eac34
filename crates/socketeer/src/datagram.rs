//! Datagrams: [`DatagramSocket`] (UDP or Unix datagram, bound or connected), and
//! [`DatagramServer`], which hands every datagram to a [`DatagramHandler`] in its own task with a
//! [`Datagram`] that can reply to its sender.
//!
//! A receive error is one bad datagram, never the end of the server. Datagrams over
//! `Limits::max_datagram` are dropped. Replies to source ports below `Limits::min_reply_port`
//! are refused, so a forged source address cannot aim us at another host's system services.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use socket2::{Domain, Socket, Type};
use tokio::net::{UdpSocket, UnixDatagram};

use crate::access::AccessList;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::ConnectionLimit;
use crate::limits::Limits;
use crate::listener::{BindOptions, UnixPathGuard, bind_inet, bind_unix_path, prepare_unix_path};
use crate::shutdown::Shutdown;
use crate::stream::PeerAddr;

/// Answers datagrams, as Python's `DatagramRequestHandler` does. One value serves every
/// datagram, each in its own task, so it takes `&self`; keep shared state behind a lock.
///
/// ```
/// use socketeer::{Datagram, DatagramHandler, Result};
///
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     async fn handle(&self, datagram: Datagram) -> Result<()> {
///         datagram.reply(datagram.data()).await
///     }
/// }
/// ```
pub trait DatagramHandler: Send + Sync + 'static {
    /// Handles one datagram.
    fn handle(&self, datagram: Datagram) -> impl Future<Output = Result<()>> + Send;
}

/// A UDP or Unix datagram socket.
#[derive(Debug)]
pub struct DatagramSocket {
    inner: Inner,
    local: Endpoint,
    _unix_file: Option<UnixPathGuard>,
}

#[derive(Debug)]
enum Inner {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DatagramSocket {
    /// Binds a datagram endpoint (`udp://` or `unixgram://`) to receive on.
    ///
    /// # Errors
    /// [`ErrorKind::Bind`] as for [`crate::Listener::bind`].
    pub async fn bind(endpoint: &Endpoint, options: &BindOptions) -> Result<Self> {
        let fail = |e: io::Error| {
            Error::new(ErrorKind::Bind, format!("cannot bind {endpoint}")).with_source(e)
        };
        match endpoint {
            Endpoint::Udp(hp) => {
                let socket = bind_inet(hp, Type::DGRAM, options).await?;
                let udp = UdpSocket::from_std(socket.into()).map_err(fail)?;
                let local = udp.local_addr().map(Endpoint::udp).map_err(fail)?;
                Ok(Self {
                    inner: Inner::Udp(udp),
                    local,
                    _unix_file: None,
                })
            }
            Endpoint::UnixDatagram(path) => {
                prepare_unix_path(path, Type::DGRAM).await?;
                let (socket, guard) = bind_unix_datagram(path, options.unix_mode)?;
                Ok(Self {
                    inner: Inner::Unix(socket),
                    local: endpoint.clone(),
                    _unix_file: Some(guard),
                })
            }
            _ => Err(Error::new(
                ErrorKind::Bind,
                format!("{endpoint} is a stream endpoint; bind it with Listener::bind"),
            )),
        }
    }

    /// A socket connected to `endpoint`, for clients: `send` goes there and `recv` hears only
    /// from there. A Unix datagram client binds a private path of its own (removed on drop) so
    /// that the server can answer it.
    ///
    /// # Errors
    /// [`ErrorKind::Connect`] when the name does not resolve or nothing listens at the path.
    pub async fn connect(endpoint: &Endpoint) -> Result<Self> {
        let fail = |e: io::Error| {
            Error::new(ErrorKind::Connect, format!("cannot connect to {endpoint}")).with_source(e)
        };
        match endpoint {
            Endpoint::Udp(hp) => {
                let target = *hp
                    .resolve()
                    .await?
                    .first()
                    .ok_or_else(|| fail(io::ErrorKind::NotFound.into()))?;
                let local: std::net::SocketAddr = if target.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let udp = UdpSocket::bind(local).await.map_err(fail)?;
                udp.connect(target).await.map_err(fail)?;
                Ok(Self {
                    inner: Inner::Udp(udp),
                    local: endpoint.clone(),
                    _unix_file: None,
                })
            }
            Endpoint::UnixDatagram(path) => {
                let (socket, guard) = bind_unix_datagram(&client_path(), 0o600)
                    .map_err(|e| fail(io::Error::other(e)))?;
                socket.connect(path).map_err(fail)?;
                Ok(Self {
                    inner: Inner::Unix(socket),
                    local: endpoint.clone(),
                    _unix_file: Some(guard),
                })
            }
            _ => Err(Error::new(
                ErrorKind::Connect,
                format!("{endpoint} is a stream endpoint"),
            )),
        }
    }

    /// The endpoint bound (port 0 resolved) or, for a connected socket, the one connected to.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// Receives one datagram into `buf`, returning its length and sender.
    ///
    /// # Errors
    /// The receive error.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        match &self.inner {
            Inner::Udp(s) => s.recv_from(buf).await.map(|(n, a)| (n, PeerAddr::Inet(a))),
            Inner::Unix(s) => s
                .recv_from(buf)
                .await
                .map(|(n, a)| (n, PeerAddr::from_unix(&a))),
        }
    }

    /// Sends one datagram to `peer`.
    ///
    /// # Errors
    /// The send error; `InvalidInput` when the peer cannot be addressed (an unnamed Unix peer).
    pub async fn send_to(&self, data: &[u8], peer: &PeerAddr) -> io::Result<usize> {
        match (&self.inner, peer) {
            (Inner::Udp(s), PeerAddr::Inet(addr)) => s.send_to(data, addr).await,
            (Inner::Unix(s), PeerAddr::Unix(Some(path))) => s.send_to(data, path).await,
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send to {peer}"),
            )),
        }
    }

    /// Sends one datagram on a connected socket.
    ///
    /// # Errors
    /// The send error.
    pub async fn send(&self, data: &[u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Udp(s) => s.send(data).await,
            Inner::Unix(s) => s.send(data).await,
        }
    }

    /// Receives one datagram on a connected socket.
    ///
    /// # Errors
    /// The receive error (on UDP, an ICMP "port unreachable" shows up here as `ConnectionRefused`).
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Udp(s) => s.recv(buf).await,
            Inner::Unix(s) => s.recv(buf).await,
        }
    }
}

fn bind_unix_datagram(path: &Path, mode: u32) -> Result<(UnixDatagram, UnixPathGuard)> {
    let fail = |e: io::Error| {
        Error::new(
            ErrorKind::Bind,
            format!("cannot bind unixgram://{}", path.display()),
        )
        .with_source(e)
    };
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    let guard = bind_unix_path(&socket, path, mode)?;
    let std_socket: std::os::unix::net::UnixDatagram = socket.into();
    Ok((UnixDatagram::from_std(std_socket).map_err(fail)?, guard))
}

/// A fresh path for a Unix datagram client's own socket.
fn client_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("socketeer-client-{}-{n}.sock", std::process::id()))
}

/// One received datagram, with the means to answer its sender.
#[derive(Debug, Clone)]
pub struct Datagram {
    data: Bytes,
    peer: PeerAddr,
    socket: Arc<DatagramSocket>,
    min_reply_port: u16,
}

impl Datagram {
    /// The datagram's bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Who sent it.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// Sends `data` back to the sender.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidData`] when the sender's port is below `Limits::min_reply_port` or it
    /// cannot be answered (an unnamed Unix socket); the send error otherwise.
    pub async fn reply(&self, data: &[u8]) -> Result<()> {
        if let PeerAddr::Inet(addr) = &self.peer {
            if addr.port() < self.min_reply_port {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    format!(
                        "not replying to {addr}: source port below {}",
                        self.min_reply_port
                    ),
                ));
            }
        }
        if self.peer == PeerAddr::Unix(None) {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "not replying: the sender's socket is unnamed",
            ));
        }
        self.socket.send_to(data, &self.peer).await?;
        Ok(())
    }
}

/// A datagram server: Python's `ThreadingUDPServer` / `ThreadingUnixDatagramServer`, on tokio.
///
/// ```no_run
/// use socketeer::{BindOptions, Datagram, DatagramHandler, DatagramServer, DatagramSocket, Result};
///
/// struct Echo;
/// impl DatagramHandler for Echo {
///     async fn handle(&self, datagram: Datagram) -> Result<()> {
///         datagram.reply(datagram.data()).await
///     }
/// }
///
/// # async fn demo() -> Result<()> {
/// let socket = DatagramSocket::bind(&"udp://127.0.0.1:9999".parse()?, &BindOptions::default()).await?;
/// DatagramServer::new(socket, Echo).serve_forever().await
/// # }
/// ```
pub struct DatagramServer<H> {
    socket: Arc<DatagramSocket>,
    handler: Arc<H>,
    limits: Limits,
    in_flight: ConnectionLimit,
    shutdown: Shutdown,
    access: AccessList,
}

impl<H: DatagramHandler> DatagramServer<H> {
    /// A server answering datagrams on `socket` with `handler`.
    pub fn new(socket: DatagramSocket, handler: H) -> Self {
        let limits = Limits::default();
        Self {
            socket: Arc::new(socket),
            handler: Arc::new(handler),
            in_flight: ConnectionLimit::new(limits.max_connections),
            limits,
            shutdown: Shutdown::new(),
            access: AccessList::default(),
        }
    }

    /// Drops datagrams from senders the list does not permit, unanswered.
    #[must_use]
    pub fn access(mut self, access: AccessList) -> Self {
        self.access = access;
        self
    }

    /// Sets the limits; `max_connections` bounds datagrams handled at once.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.in_flight = ConnectionLimit::new(limits.max_connections);
        self.limits = limits;
        self
    }

    /// Uses a shutdown switch shared with other servers.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The switch that stops this server.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The endpoint really bound.
    pub fn local_endpoint(&self) -> &Endpoint {
        self.socket.local_endpoint()
    }

    /// Receives and handles datagrams until shutdown, then waits up to `Limits::grace` for
    /// handlers still running.
    ///
    /// # Errors
    /// None in practice: receive errors are logged and the loop goes on.
    pub async fn serve_forever(self) -> Result<()> {
        let mut buf = vec![0u8; self.limits.max_datagram + 1];
        loop {
            let permit = tokio::select! {
                biased;
                () = self.shutdown.triggered() => break,
                permit = self.in_flight.acquire() => permit,
            };
            let received = tokio::select! {
                biased;
                () = self.shutdown.triggered() => break,
                received = self.receive(&mut buf) => received,
            };
            let Some(datagram) = received else { continue };
            let handler = Arc::clone(&self.handler);
            self.shutdown.spawn(async move {
                let peer = datagram.peer.clone();
                if let Err(err) = handler.handle(datagram).await {
                    tracing::info!(%peer, error = %err, "datagram handler failed");
                }
                drop(permit);
            });
        }
        self.shutdown.drain(self.limits.grace).await;
        Ok(())
    }

    /// Receives and handles exactly one datagram (skipping any that are dropped as too large).
    ///
    /// # Errors
    /// The handler's error.
    pub async fn handle_request(&self) -> Result<()> {
        let mut buf = vec![0u8; self.limits.max_datagram + 1];
        loop {
            if let Some(datagram) = self.receive(&mut buf).await {
                return self.handler.handle(datagram).await;
            }
        }
    }

    /// One receive; `None` for a datagram that was dropped or a receive error (both logged).
    async fn receive(&self, buf: &mut [u8]) -> Option<Datagram> {
        match self.socket.recv_from(buf).await {
            Ok((_, peer)) if !self.access.permits(&peer) => {
                tracing::debug!(%peer, "datagram dropped: not in the access list");
                None
            }
            Ok((n, peer)) if n > self.limits.max_datagram => {
                tracing::info!(%peer, limit = self.limits.max_datagram, "dropping oversized datagram");
                None
            }
            Ok((n, peer)) => Some(Datagram {
                data: Bytes::copy_from_slice(&buf[..n]),
                peer,
                socket: Arc::clone(&self.socket),
                min_reply_port: self.limits.min_reply_port,
            }),
            Err(err) => {
                // On UDP this is usually an ICMP error for an earlier reply; it is one bad
                // datagram, not the end of the server.
                tracing::debug!(error = %err, "datagram receive error");
                if !matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) {
                    // Not an ICMP echo of a reply: pause so a persistent error cannot spin a core.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                None
            }
        }
    }
}
