//! The hub's HTTP listener: each connection served by hyper under the limits every socketeer
//! server keeps, which `axum::serve` does not have.
//!
//! - At most [`Limits::max_conns`] connections; one more is told `503` and closed at once, so
//!   a flood of HTTP connections cannot take the descriptors robots' ingest needs.
//! - The request head within [`Limits::header_timeout`] (hyper's header deadline), and no
//!   connection lives through [`Limits::stall_timeout`] without a byte moving either way: a
//!   half-sent request, an idle keep-alive, a reader that stopped reading are all closed.
//! - On shutdown no new connections; live ones finish their request (keep-alive ends) within
//!   the same grace period as the hub's other servers, then are dropped.
//! - Handlers can close their own connection at once ([`Hangup`]): a live viewer that fell
//!   behind is disconnected, and everything queued for it freed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

/// How the HTTP listener guards itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most connections at once.
    pub(crate) max_conns: usize,
    /// Longest wait for a request's head, from its first byte (or the connection's start).
    pub(crate) header_timeout: Duration,
    /// Longest time a connection may go without a byte moving in either direction.
    pub(crate) stall_timeout: Duration,
}

impl Limits {
    /// The limits for `--http-max-conns` and `--http-timeout`. Without a cap given, at most 256
    /// connections and never more than a quarter of the descriptors the process may open (the
    /// rest are ingest's).
    pub(crate) fn for_this_process(max_conns: Option<usize>, timeout: Duration) -> Limits {
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let share = usize::try_from(descriptors / 4).unwrap_or(usize::MAX);
        Limits {
            max_conns: max_conns.unwrap_or(share.clamp(16, 256)),
            header_timeout: timeout,
            stall_timeout: timeout * 6,
        }
    }
}

/// Counters of the HTTP listener, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections open now.
    pub(crate) open: AtomicU64,
    /// Connections refused at the cap.
    pub(crate) refused: AtomicU64,
    /// Connections closed for stalling (no head in time, nothing moving).
    pub(crate) stalled: AtomicU64,
}

/// Closes the connection a request came on, at once. Handlers find it among the request's
/// extensions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hangup(Arc<Notify>);

impl Hangup {
    pub(crate) fn now(&self) {
        self.0.notify_one();
    }
}

/// What one refused connection is told (written only if the socket takes it at once).
const BUSY: &str = "{\"error\":\"too many HTTP connections at once; try again in a moment\"}";

fn busy_response() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{BUSY}",
        BUSY.len()
    )
}

/// Serves `router` on `listener` until `shutdown` is triggered; connections are drained with
/// the shutdown's grace (they are its tasks).
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: socketeer::Shutdown,
    limits: Limits,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_conns));
    let mut last_complaint: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.triggered() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, most likely: wait a little rather than spin.
                    tracing::warn!(error = %err, "http: cannot accept");
                    tokio::select! {
                        () = shutdown.triggered() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            if last_complaint.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                last_complaint = Some(Instant::now());
                tracing::warn!(
                    max = limits.max_conns,
                    "http: connection cap reached; refusing more until some close"
                );
            }
            let _ = stream.try_write(busy_response().as_bytes());
            continue;
        };
        let (router, shutdown2, counters) =
            (router.clone(), shutdown.clone(), Arc::clone(&counters));
        shutdown.spawn(async move {
            counters.open.fetch_add(1, Ordering::Relaxed);
            connection(stream, peer, router, shutdown2, limits, &counters).await;
            counters.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: axum::Router,
    shutdown: socketeer::Shutdown,
    limits: Limits,
    counters: &Counters,
) {
    let _ = stream.set_nodelay(true);
    let start = Instant::now();
    let moved = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        moved: Arc::clone(&moved),
        start,
    });
    let hangup = Hangup::default();
    let service = {
        let hangup = hangup.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request.extensions_mut().insert(hangup.clone());
            router.clone().oneshot(request)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, service)
        // A Foxglove client's WebSocket leaves HTTP here: it keeps its own limits.
        .with_upgrades();
    tokio::pin!(conn);
    let stalled = stalled(&moved, start, limits.stall_timeout);
    tokio::pin!(stalled);
    let ended = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = &mut stalled => None,
        () = hangup.0.notified() => return,
        () = shutdown.triggered() => {
            // Finish the request in progress, if any; keep-alive ends.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => Some(result),
                () = &mut stalled => None,
                () = hangup.0.notified() => return,
                () = shutdown.forced() => return,
            }
        }
    };
    match ended {
        None => {
            counters.stalled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "http: connection closed: nothing moved in time");
        }
        Some(Err(err)) if err.is_timeout() => {
            counters.stalled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "http: connection closed: request head not sent in time");
        }
        Some(Err(err)) => tracing::debug!(%peer, error = %err, "http: connection ended"),
        Some(Ok(())) => {}
    }
}

/// Completes once nothing has moved on the connection for `limit`.
async fn stalled(moved: &AtomicU64, start: Instant, limit: Duration) {
    loop {
        let last = start + Duration::from_millis(moved.load(Ordering::Relaxed));
        let until = last + limit;
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep_until(until.into()).await;
    }
}

/// A stream that notes when a byte last moved through it.
struct Watched {
    inner: TcpStream,
    /// Milliseconds after `start`.
    moved: Arc<AtomicU64>,
    start: Instant,
}

impl Watched {
    fn note<T>(&self, result: &Poll<std::io::Result<T>>, moved: bool) {
        if moved && matches!(result, Poll::Ready(Ok(_))) {
            let at = self.start.elapsed().as_millis() as u64;
            self.moved.store(at, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(&result, buf.filled().len() > before);
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&result, matches!(result, Poll::Ready(Ok(n)) if n > 0));
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&result, matches!(result, Poll::Ready(Ok(n)) if n > 0));
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
