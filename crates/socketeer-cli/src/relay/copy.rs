//! Moving bytes between a client and its target: `splice(2)` through a pipe between plain TCP
//! and Unix sockets (the bytes never enter user space), a bounded buffer through TLS, and
//! chunks to and from datagrams. Each direction reads only once what it read before has been
//! written, so a slow side holds the other back and nothing buffers without bound.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use socketeer::{DatagramSocket, Stream};

use super::counters::End;

/// The copy buffer through TLS, and the most read at once to become one datagram.
const CHUNK: usize = 64 * 1024;
/// The largest UDP payload (a bigger read is sent as several datagrams).
pub(crate) const MAX_DATAGRAM: usize = 65_507;

/// Which side of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Target,
}

/// A failure on one side.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) side: Side,
    pub(crate) error: io::Error,
}

impl Failure {
    pub(crate) fn on(side: Side) -> impl FnOnce(io::Error) -> Failure {
        move |error| Failure { side, error }
    }

    pub(crate) fn end(&self) -> End {
        match self.side {
            Side::Client => End::ClientFailed,
            Side::Target => End::TargetFailed,
        }
    }
}

/// Bytes moved one way: this connection's count, the relay's, and the last moment anything
/// moved either way (for the idle timeout).
pub(crate) struct Meter<'a> {
    pub(crate) mine: &'a AtomicU64,
    pub(crate) all: &'a AtomicU64,
    pub(crate) activity: &'a Activity,
}

impl Meter<'_> {
    pub(crate) fn add(&self, n: usize) {
        self.mine.fetch_add(n as u64, Relaxed);
        self.all.fetch_add(n as u64, Relaxed);
        self.activity.touch();
    }
}

/// When bytes last moved, in milliseconds since the connection began.
pub(crate) struct Activity {
    began: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            began: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.began.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Relaxed);
    }

    /// Completes once nothing has moved for `idle` (never without one).
    pub(crate) async fn idle_for(&self, idle: Option<Duration>) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let due = self.began + Duration::from_millis(self.last_ms.load(Relaxed)) + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A plain socket whose descriptor can be spliced.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixStream),
}

impl<'a> Raw<'a> {
    fn of(stream: &'a Stream) -> Option<Raw<'a>> {
        match stream {
            Stream::Tcp(s) => Some(Raw::Tcp(s)),
            Stream::Unix(s) => Some(Raw::Unix(s)),
            _ => None,
        }
    }

    fn fd(self) -> BorrowedFd<'a> {
        match self {
            Raw::Tcp(s) => s.as_fd(),
            Raw::Unix(s) => s.as_fd(),
        }
    }

    async fn ready(self, interest: Interest) -> io::Result<()> {
        match self {
            Raw::Tcp(s) => s.ready(interest).await.map(drop),
            Raw::Unix(s) => s.ready(interest).await.map(drop),
        }
    }

    fn try_io<R>(self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Raw::Tcp(s) => s.try_io(interest, f),
            Raw::Unix(s) => s.try_io(interest, f),
        }
    }

    /// Half-close: the peer reads end of input, and can still send.
    fn shutdown_write(self) {
        let _ = rustix::net::shutdown(self.fd(), rustix::net::Shutdown::Write);
    }

    /// Waits for `interest`, then runs `op` until it does not say "would block".
    async fn io<R>(self, interest: Interest, op: impl Fn() -> io::Result<R>) -> io::Result<R> {
        loop {
            self.ready(interest).await?;
            match self.try_io(interest, &op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
    }
}

/// Copies both ways between two streams until both directions have ended (each end of input
/// passed on as a half-close), or one side fails.
pub(crate) async fn streams(
    client: &mut Stream,
    target: &mut Stream,
    up: Meter<'_>,
    down: Meter<'_>,
) -> Result<(), Failure> {
    if let (Some(c), Some(t)) = (Raw::of(client), Raw::of(target)) {
        let (up_pipe, down_pipe) = (Pipe::new(), Pipe::new());
        if let (Ok(up_pipe), Ok(down_pipe)) = (up_pipe, down_pipe) {
            let to_target = splice_one_way(c, t, up_pipe, Side::Client, Side::Target, &up);
            let to_client = splice_one_way(t, c, down_pipe, Side::Target, Side::Client, &down);
            return tokio::try_join!(to_target, to_client).map(drop);
        }
        // No pipes (out of descriptors): copy through user space instead.
    }
    let (mut client_in, mut client_out) = tokio::io::split(client);
    let (mut target_in, mut target_out) = tokio::io::split(target);
    let to_target = copy_one_way(
        &mut client_in,
        &mut target_out,
        Side::Client,
        Side::Target,
        &up,
    );
    let to_client = copy_one_way(
        &mut target_in,
        &mut client_out,
        Side::Target,
        Side::Client,
        &down,
    );
    tokio::try_join!(to_target, to_client).map(drop)
}

/// A pipe for splicing, both ends non-blocking. It starts at the kernel's default size
/// (64 KiB) and grows to [`BULK_PIPE`] the first time a splice fills it, while fewer than
/// [`MOST_GROWN`] pipes of the relay have grown: a bulk transfer then moves four times as
/// much per pair of calls (at 100 bulk connections the relay's CPU per GB 305–331 → 188–199 ms,
/// its MB/s +15%), while a connection that never fills its pipe keeps the small one. Pages in
/// a pipe are memory the kernel holds for the connection: with every pipe grown, 1,000
/// echoed bulk connections took TCP's memory to 331,710 pages (its pressure mark here is
/// 383,878) and carried 394 MB/s where small pipes carried 700, hence the bound. A user's pipes
/// are limited in all too (`fs.pipe-user-pages-soft`): where growing is refused the pipe stays
/// as it is. (1 MiB pipes were no faster than 256 KiB.)
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
    /// Grown, holding a place in [`GROWN`].
    grown: bool,
    /// Grown, or refused by the kernel: not to be tried again.
    settled: bool,
}

/// The size a pipe grows to once a splice has filled it.
const BULK_PIPE: usize = 256 * 1024;
/// At most this many grown pipes at once in the whole relay (32 MiB of pipe space).
const MOST_GROWN: usize = 128;
static GROWN: AtomicUsize = AtomicUsize::new(0);

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let size = rustix::pipe::fcntl_getpipe_size(&write).unwrap_or(64 * 1024);
        Ok(Pipe {
            read,
            write,
            size,
            grown: false,
            settled: false,
        })
    }

    /// After a splice into the (empty) pipe moved `got` bytes: a full pipe grows if there is
    /// room in the relay's bound (else it may the next time it fills).
    fn filled(&mut self, got: usize) {
        if got < self.size || self.settled {
            return;
        }
        if GROWN.fetch_add(1, Relaxed) >= MOST_GROWN {
            GROWN.fetch_sub(1, Relaxed);
            return;
        }
        self.settled = true;
        match rustix::pipe::fcntl_setpipe_size(&self.write, BULK_PIPE) {
            Ok(size) => {
                self.size = size;
                self.grown = true;
            }
            // Refused (the user's pipe space): give the place back, and stay small.
            Err(_) => _ = GROWN.fetch_sub(1, Relaxed),
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.grown {
            GROWN.fetch_sub(1, Relaxed);
        }
    }
}

async fn splice_one_way(
    from: Raw<'_>,
    to: Raw<'_>,
    mut pipe: Pipe,
    from_side: Side,
    to_side: Side,
    meter: &Meter<'_>,
) -> Result<(), Failure> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        // Fill the (empty) pipe with what the socket has ...
        let got = from
            .io(Interest::READABLE, || {
                Ok(rustix::pipe::splice(
                    from.fd(),
                    None,
                    &pipe.write,
                    None,
                    pipe.size,
                    flags,
                )?)
            })
            .await
            .map_err(Failure::on(from_side))?;
        if got == 0 {
            to.shutdown_write();
            return Ok(());
        }
        pipe.filled(got);
        // ... and empty it into the other socket before reading more.
        let mut left = got;
        while left > 0 {
            let sent = to
                .io(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(
                        &pipe.read,
                        None,
                        to.fd(),
                        None,
                        left,
                        flags,
                    )?)
                })
                .await
                .map_err(Failure::on(to_side))?;
            left -= sent;
            meter.add(sent);
        }
    }
}

async fn copy_one_way(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    from_side: Side,
    to_side: Side,
    meter: &Meter<'_>,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await.map_err(Failure::on(from_side))?;
        if n == 0 {
            // The other side's end of input; a peer already gone is not a failure here.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n])
            .await
            .map_err(Failure::on(to_side))?;
        to.flush().await.map_err(Failure::on(to_side))?;
        meter.add(n);
    }
}

/// Copies between a stream client and a datagram target: each read from the client (at most a
/// datagram's worth) is sent as one datagram, each datagram received is written to the client.
/// Ends when either side fails; the client's end of input ends nothing (answers may still
/// come back): the idle timeout ends it then.
pub(crate) async fn stream_and_datagrams(
    client: &mut Stream,
    target: &DatagramSocket,
    up: Meter<'_>,
    down: Meter<'_>,
) -> Result<(), Failure> {
    let (mut input, mut output) = tokio::io::split(client);
    let send = async {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let n = input
                .read(&mut buf)
                .await
                .map_err(Failure::on(Side::Client))?;
            if n == 0 {
                return std::future::pending::<Result<(), Failure>>().await;
            }
            target
                .send(&buf[..n])
                .await
                .map_err(Failure::on(Side::Target))?;
            up.add(n);
        }
    };
    tokio::try_join!(send, datagrams_to_stream(target, &mut output, &down)).map(drop)
}

/// Writes each datagram `from` receives to `to`, until either fails.
async fn datagrams_to_stream(
    from: &DatagramSocket,
    to: &mut (impl AsyncWrite + Unpin),
    meter: &Meter<'_>,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let n = from
            .recv(&mut buf)
            .await
            .map_err(Failure::on(Side::Target))?;
        to.write_all(&buf[..n])
            .await
            .map_err(Failure::on(Side::Client))?;
        to.flush().await.map_err(Failure::on(Side::Client))?;
        meter.add(n);
    }
}
