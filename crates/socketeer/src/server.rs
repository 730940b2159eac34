//! [`Server`]: the stream server. It accepts on a [`Listener`], gives every connection its own
//! task and a new [`Handler`], bounds how many run at once, backs off on accept errors, and
//! shuts down gracefully through a shared [`Shutdown`].
//!
//! A connection's life: a permit is taken from the connection limit *before* `accept`, so at
//! the cap the server simply stops accepting (clients wait in the backlog) rather than refusing
//! or spinning; the accepted stream is wrapped in a [`Connection`](crate::Connection) with the server's [`Limits`]
//! and drain token; the handler's `setup`, `handle` and `finish` run in a tracked task that holds
//! the permit until it ends.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use crate::access::{AccessList, Admission, Startup};
use crate::auth::Authenticator;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::gate::Gate;
pub use crate::greeting::REFUSAL_PREFIX;
use crate::handler::Handler;
pub use crate::limits::ConnectionLimit;
use crate::limits::Limits;
use crate::listener::Listener;
use crate::shutdown::{Drained, FINISH_TIMEOUT, Shutdown};
use crate::stream::{PeerAddr, Stream};
use crate::tls::TlsAcceptor;

const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A stream server: Python's `ThreadingTCPServer` / `ThreadingUnixStreamServer`, on tokio.
///
/// ```no_run
/// use socketeer::{BindOptions, Connection, Handler, Listener, Result, Server};
///
/// struct Echo;
/// impl Handler for Echo {
///     async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
///         while let Some(chunk) = conn.read_chunk().await? {
///             conn.send(&chunk).await?;
///         }
///         Ok(())
///     }
/// }
///
/// # async fn demo() -> Result<()> {
/// let listener = Listener::bind(&"127.0.0.1:9999".parse()?, &BindOptions::default()).await?;
/// let mut signals = socketeer::Signals::new()?;
/// let server = Server::new(listener, || Echo);
/// let shutdown = server.shutdown_handle();
/// tokio::spawn(async move {
///     signals.recv().await;
///     shutdown.trigger();
/// });
/// server.serve_forever().await
/// # }
/// ```
///
/// # The runtime
///
/// The server runs on the tokio runtime it is polled on. With many busy connections on the
/// multi-threaded runtime, cap how many sockets one poll of the I/O driver wakes, as the
/// `socketeer` program does: tokio's default (1024) lets one poll wake more tasks than a
/// worker's run queue holds (256), and those that spill over wait longest. At 1000 connections
/// the cap at 64 halved the p99 here, with throughput unchanged (docs/performance.md).
///
/// ```no_run
/// let runtime = tokio::runtime::Builder::new_multi_thread()
///     .max_io_events_per_tick(64)
///     .enable_all()
///     .build()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<F> {
    listener: Listener,
    make_handler: F,
    limits: Limits,
    connections: ConnectionLimit,
    shutdown: Shutdown,
    gate: Gate,
    threads: usize,
}

impl<F, H> Server<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler,
{
    /// A server that makes a handler with `make_handler` for each connection.
    pub fn new(listener: Listener, make_handler: F) -> Self {
        let limits = Limits::default();
        Self {
            listener,
            make_handler,
            connections: ConnectionLimit::new(limits.max_connections),
            limits,
            shutdown: Shutdown::new(),
            gate: Gate::default(),
            threads: 0,
        }
    }

    /// Runs a TLS handshake on every connection before anything else (within
    /// `Limits::handshake_timeout`, in the connection's own task).
    #[must_use]
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.gate = self.gate.tls(acceptor);
        self
    }

    /// Authenticates every connection (after TLS, within the same deadline) before its handler
    /// runs; the handler sees [`Connection::identity`](crate::Connection::identity).
    #[must_use]
    pub fn authenticate(mut self, authenticator: Authenticator) -> Self {
        self.gate = self.gate.authenticate(authenticator);
        self
    }

    /// Drops connections the list does not permit, before reading anything from them.
    #[must_use]
    pub fn access(mut self, access: AccessList) -> Self {
        self.gate = self.gate.access(access);
        self
    }

    /// Caps and penalties for connections still in their handshake, shared with other servers.
    /// Servers with TLS or authentication get [`AdmissionLimits::default`](crate::AdmissionLimits) otherwise.
    #[must_use]
    pub fn admission(mut self, admission: Arc<Admission>) -> Self {
        self.gate = self.gate.admission(admission);
        self
    }

    /// Uses a whole [`Gate`] (access list, admission, TLS, authentication) at once.
    #[must_use]
    pub fn gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    /// Sets the limits (and a connection cap of `limits.max_connections` for this server).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.connections = ConnectionLimit::new(limits.max_connections);
        self.limits = limits;
        self
    }

    /// Shares a connection cap with other servers (set after [`limits`](Self::limits)).
    #[must_use]
    pub fn connection_limit(mut self, limit: ConnectionLimit) -> Self {
        self.connections = limit;
        self
    }

    /// Uses a shutdown switch shared with other servers.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Serves on `n` threads of the server's own, each running a single-threaded tokio runtime
    /// with its own accept loop on the one listening socket, the way nginx runs its workers.
    /// A connection stays on the thread that accepted it: its wake-ups never cross threads or
    /// wait in another thread's queue, which keeps the slowest replies close to the typical
    /// ones when thousands of connections are busy (docs/performance.md has the figures).
    /// Tasks a handler spawns run on its connection's thread.
    ///
    /// `0`, the default, serves on the runtime [`serve_forever`](Self::serve_forever) is
    /// awaited on. With threads, that runtime only waits for shutdown and drains; dropping the
    /// `serve_forever` future stops the threads and closes their connections.
    /// [`std::thread::available_parallelism`] is the usual `n`.
    ///
    /// The trade: no connection can move to an idle thread. When the clients share the
    /// server's cores, a few dozen busy connections see a slower 99th percentile (a thread
    /// waits out the scheduler's time slice) while thousands see a faster one.
    ///
    /// ```no_run
    /// # use socketeer::{BindOptions, Connection, Handler, Listener, Result, Server};
    /// # struct Echo;
    /// # impl Handler for Echo {
    /// #     async fn handle(&mut self, conn: &mut Connection) -> Result<()> { Ok(()) }
    /// # }
    /// # async fn demo() -> Result<()> {
    /// let listener = Listener::bind(&"127.0.0.1:9999".parse()?, &BindOptions::default()).await?;
    /// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// Server::new(listener, || Echo).threads(cores).serve_forever().await
    /// # }
    /// ```
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// The switch that stops this server.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The endpoint really bound (port 0 resolved).
    pub fn local_endpoint(&self) -> &Endpoint {
        self.listener.local_endpoint()
    }

    /// Serves until shutdown is triggered, then stops accepting at once (new connections are
    /// refused), waits up to `Limits::grace` for live connections, drops the rest and returns.
    ///
    /// # Errors
    /// With [`threads`](Self::threads), [`ErrorKind::Io`] if a thread, its runtime or its
    /// handle on the listening socket cannot be made. Accept errors are logged and backed
    /// off, not returned.
    pub async fn serve_forever(self) -> Result<()> {
        let Self {
            listener,
            make_handler,
            limits,
            connections,
            shutdown,
            gate,
            threads,
        } = self;
        let endpoint = listener.local_endpoint().clone();
        let grace = limits.grace;
        let shared = Arc::new(Shared {
            make_handler,
            limits: Arc::new(limits),
            connections,
            shutdown: shutdown.clone(),
            gate: Arc::new(gate),
        });
        let workers = if threads == 0 {
            accept_loop(&listener, &shared).await;
            drop(listener);
            None
        } else {
            let workers = Workers::start(&listener, &shared, threads, &endpoint)?;
            shutdown.triggered().await;
            drop(listener);
            Some(workers)
        };
        tracing::info!(%endpoint, live = shutdown.live(), "stopped accepting; draining");
        match shutdown.drain(grace).await {
            Drained::Graceful => tracing::info!(%endpoint, "all connections finished"),
            Drained::Forced(n) => {
                tracing::warn!(%endpoint, dropped = n, "grace period over; dropped connections");
            }
        }
        if let Some(workers) = workers {
            workers.stop().await;
        }
        Ok(())
    }

    /// Accepts exactly one connection and serves it to the end, like Python's
    /// `handle_request()` (connections the access list or admission refuse do not count).
    /// Wrap it in `tokio::time::timeout` for Python's `server.timeout`.
    ///
    /// # Errors
    /// The accept error, if accepting fails.
    pub async fn handle_request(&self) -> Result<()> {
        let gate = Arc::new(self.gate.clone());
        loop {
            let (stream, peer, permit) = accept_with_permit(&self.listener, &self.connections)
                .await
                .map_err(|e| Error::new(ErrorKind::Io, "accept failed").with_source(e))?;
            let Ok(startup) = gate.admit(&peer) else {
                continue;
            };
            let limits = Arc::new(self.limits.clone());
            let accepted = Accepted {
                stream,
                peer,
                startup,
            };
            serve_connection(
                (self.make_handler)(),
                accepted,
                limits,
                self.shutdown.clone(),
                gate,
            )
            .await;
            drop(permit);
            return Ok(());
        }
    }
}

/// What every accept loop of a server shares.
struct Shared<F> {
    make_handler: F,
    limits: Arc<Limits>,
    connections: ConnectionLimit,
    shutdown: Shutdown,
    gate: Arc<Gate>,
}

/// Accepts until shutdown is triggered, spawning each connection's task on the current runtime.
async fn accept_loop<F, H>(listener: &Listener, shared: &Shared<F>)
where
    F: Fn() -> H,
    H: Handler,
{
    let mut backoff = BACKOFF_START;
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.shutdown.triggered() => return,
            accepted = accept_with_permit(listener, &shared.connections) => accepted,
        };
        match accepted {
            Ok((stream, peer, permit)) => {
                backoff = BACKOFF_START;
                let startup = match shared.gate.admit(&peer) {
                    Ok(startup) => startup,
                    Err(why) => {
                        drop(permit); // a refused peer holds no place
                        refuse(stream, &peer, &why);
                        continue;
                    }
                };
                let task = serve_connection(
                    (shared.make_handler)(),
                    Accepted {
                        stream,
                        peer,
                        startup,
                    },
                    Arc::clone(&shared.limits),
                    shared.shutdown.clone(),
                    Arc::clone(&shared.gate),
                );
                shared.shutdown.spawn(async move {
                    task.await;
                    drop(permit);
                });
            }
            Err(err) => {
                if let Some(pause) = accept_backoff(&err, &mut backoff) {
                    tokio::select! {
                        () = shared.shutdown.triggered() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// A server's own threads ([`Server::threads`]), each a single-threaded runtime running an
/// accept loop and the connections it accepted. Dropped, it tells them to stop at once.
struct Workers {
    /// Cancelled when the threads should end: after the drain, or when the server is dropped.
    release: tokio_util::sync::DropGuard,
    done: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Workers {
    fn start<F, H>(
        listener: &Listener,
        shared: &Arc<Shared<F>>,
        threads: usize,
        endpoint: &Endpoint,
    ) -> Result<Self>
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: Handler,
    {
        let release = tokio_util::sync::CancellationToken::new();
        let mut workers = Self {
            release: release.clone().drop_guard(),
            done: Vec::with_capacity(threads),
        };
        let failed = |what: &str, err: io::Error| {
            Error::new(ErrorKind::Io, format!("{endpoint}: cannot start {what}")).with_source(err)
        };
        for n in 0..threads {
            let handle = listener
                .handle()
                .map_err(|e| failed("a server thread's listener", e))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| failed("a server thread's runtime", e))?;
            // Registered with the thread's runtime here, so that a failure is this call's error.
            let listener = {
                let _in_runtime = runtime.enter();
                handle
                    .into_listener()
                    .map_err(|e| failed("a server thread's listener", e))?
            };
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let shared = Arc::clone(shared);
            let release = release.clone();
            std::thread::Builder::new()
                .name(format!("socketeer-{n}"))
                .spawn(move || {
                    runtime.block_on(async {
                        tokio::select! {
                            () = accept_loop(&listener, &shared) => {}
                            () = release.cancelled() => {}
                        }
                        drop(listener);
                        // Keep serving this thread's connections until the drain is over.
                        release.cancelled().await;
                    });
                    // Whatever is left (tasks the handlers spawned) is dropped here, without
                    // waiting for blocking work such as a read of stdin.
                    runtime.shutdown_background();
                    let _ = done_tx.send(());
                })
                .map_err(|e| failed("a server thread", e))?;
            workers.done.push(done_rx);
        }
        Ok(workers)
    }

    /// Ends the threads once their connections have drained, and waits for them to go.
    async fn stop(self) {
        drop(self.release);
        for done in self.done {
            let _ = done.await;
        }
    }
}

/// A connection just accepted, with its place among the handshakes (if it has one).
struct Accepted {
    stream: Stream,
    peer: PeerAddr,
    startup: Option<Startup>,
}

async fn accept_with_permit(
    listener: &Listener,
    connections: &ConnectionLimit,
) -> io::Result<(Stream, PeerAddr, OwnedSemaphorePermit)> {
    let permit = connections.acquire().await;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// Most refused connections given their refusal line at once; past that they are just closed.
const MAX_REFUSING: usize = 256;
/// How long a refused connection is kept to deliver its line (its unread input is drained, so
/// closing does not reset the connection before the line arrives).
const REFUSING_FOR: Duration = Duration::from_secs(2);

/// Refuses a connection the accept loop took: tells the peer why in one line
/// ([`REFUSAL_PREFIX`] and `why`; at most 256 connections at once are given it, each for at
/// most 2 s, with what they send read and dropped), logs the refusal at most once a second
/// (counting those not logged), and closes the connection. Needs a tokio runtime.
///
/// ```no_run
/// # async fn demo(listener: socketeer::Listener, gate: socketeer::Gate) -> socketeer::Result<()> {
/// let (stream, peer) = listener.accept().await?;
/// if let Err(why) = gate.admit(&peer) {
///     socketeer::server::refuse(stream, &peer, &why);
/// }
/// # Ok(()) }
/// ```
pub fn refuse(stream: Stream, peer: &PeerAddr, why: &Error) {
    static REFUSING: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
        std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING)));
    static LOG: std::sync::Mutex<Option<(std::time::Instant, u64)>> = std::sync::Mutex::new(None);
    {
        let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match log.as_mut() {
            Some((last, quiet)) if now.duration_since(*last) < Duration::from_secs(1) => {
                *quiet += 1
            }
            _ => {
                let unlogged = log.map_or(0, |(_, quiet)| quiet);
                tracing::info!(%peer, reason = %why, unlogged, "connection refused");
                *log = Some((now, 0));
            }
        }
    }
    let Ok(place) = Arc::clone(&REFUSING).try_acquire_owned() else {
        return; // too many being refused: close without a word
    };
    let line = format!("{REFUSAL_PREFIX}{why}\n");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let deliver = async {
            stream.write_all(line.as_bytes()).await?;
            stream.shutdown().await?;
            // Read (and drop) what the peer sent until it closes: closing with unread input
            // would reset the connection and could destroy the line in flight.
            let mut sink = [0u8; 1024];
            let mut left = 64 * 1024;
            while left > 0 {
                let n = stream.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                left -= n.min(left);
            }
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(REFUSING_FOR, deliver).await;
        drop(place);
    });
}

/// Decides what an accept error means: `None` to retry at once (the failed connection was the
/// peer's problem), or how long to pause (the process is short of descriptors or memory, or
/// something unexpected happened), doubling up to a second so the loop never spins a core.
fn accept_backoff(err: &io::Error, backoff: &mut Duration) -> Option<Duration> {
    use io::ErrorKind as K;
    if matches!(
        err.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
    ) || err.raw_os_error() == Some(libc::EPROTO)
    {
        tracing::debug!(error = %err, "accept: peer gave up before we took it");
        return None;
    }
    let pause = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    let scarce = matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if scarce {
        tracing::warn!(error = %err, ?pause, "accept: out of resources; pausing");
    } else {
        tracing::error!(error = %err, ?pause, "accept failed; pausing");
    }
    Some(pause)
}

/// Runs one connection: the gate's handshake, then setup, handle, finish; logs how it ended.
async fn serve_connection<H: Handler>(
    mut handler: H,
    accepted: Accepted,
    limits: Arc<Limits>,
    shutdown: Shutdown,
    gate: Arc<Gate>,
) {
    let Accepted {
        stream,
        peer,
        startup,
    } = accepted;
    tracing::debug!(%peer, "connection accepted");
    // Boxed: the handshake's future (TLS, authentication) is large and lives only until the
    // connection is open; inline, it would size every connection's task for its whole life.
    let opened = Box::pin(gate.open(
        stream,
        peer.clone(),
        &limits,
        Some(&shutdown.token()),
        startup,
    ))
    .await;
    let mut conn = match opened {
        Ok(conn) => conn,
        Err(err) => {
            let cause = std::error::Error::source(&err).map(ToString::to_string);
            match err.kind() {
                ErrorKind::Auth => tracing::warn!(%peer, error = %err, "authentication refused"),
                _ => tracing::info!(%peer, error = %err, cause, "handshake failed"),
            }
            return;
        }
    };
    let mut hard = crate::shutdown::CancelWait::new(shutdown.hard_token().clone());
    let mut set_up = false;
    let outcome = tokio::select! {
        biased;
        () = hard.cancelled() => Err(Error::new(ErrorKind::Shutdown, "grace period over")),
        result = async {
            handler.setup(&mut conn).await?;
            set_up = true;
            handler.handle(&mut conn).await
        } => result,
    };
    if set_up {
        let _ = tokio::time::timeout(FINISH_TIMEOUT, handler.finish(&mut conn)).await;
    }
    // Flush, then close the sending side properly (a TLS close_notify, a TCP FIN).
    let _ = tokio::time::timeout(FINISH_TIMEOUT, conn.shutdown_write()).await;
    log_end(conn.peer_addr(), outcome);
}

fn log_end(peer: &PeerAddr, outcome: Result<()>) {
    match outcome {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(err) if err.is_disconnect() => tracing::debug!(%peer, error = %err, "peer went away"),
        Err(err) => {
            let cause = std::error::Error::source(&err).map(ToString::to_string);
            tracing::info!(%peer, error = %err, cause, "closing connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_side_accept_errors_retry_at_once_and_resource_errors_back_off_doubling() {
        let mut backoff = BACKOFF_START;
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(accept_backoff(&aborted, &mut backoff), None);
        assert_eq!(
            backoff, BACKOFF_START,
            "a peer's error does not grow the pause"
        );

        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<_> = (0..10)
            .map(|_| accept_backoff(&emfile, &mut backoff))
            .collect();
        assert_eq!(pauses[0], Some(Duration::from_millis(5)));
        assert_eq!(pauses[1], Some(Duration::from_millis(10)));
        assert_eq!(pauses[9], Some(BACKOFF_MAX), "capped at one second");
    }
}
