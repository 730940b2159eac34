//! [`Connection`]: owns one stream and its buffers, and reads and writes raw chunks, lines and
//! length-prefixed frames, all bounded by [`Limits`]. [`Connection::into_split`] gives a
//! [`ConnectionReader`] and a [`ConnectionWriter`] with the same methods, for tasks that read
//! and write at once.
//!
//! Reads are cancel-safe: a partly received line or frame stays in the buffer, so a read can sit
//! in a `tokio::select!` beside other events and lose nothing when another branch wins. Writes
//! are buffered: `write_*` queue, [`flush`](Connection::flush) sends (or `send`, which does both).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::codec::{FrameCodec, LineCodec};
use crate::error::{Error, ErrorKind, Result};
use crate::idle::IdleTimer;
use crate::limits::Limits;
use crate::shutdown::CancelWait;
use crate::stream::{PeerAddr, Stream};
use crate::tls::EXPORTER_LEN;

const SMALL_READ: usize = 8 * 1024;
const LARGE_READ: usize = 64 * 1024;
/// The most one [`Connection::read_up_to`] reads at once.
const BULK_READ: usize = 1024 * 1024;
/// Queued output at or above this size is written without waiting for `flush`.
const FLUSH_AT: usize = 64 * 1024;
/// Buffers handed to one vectored write (Linux's IOV_MAX is 1024).
const MAX_IOVECS: usize = 1024;

/// The receiving side's state: buffered input, codecs, idle deadline, and the drain signal.
#[derive(Debug)]
struct Inbound {
    buf: BytesMut,
    lines: LineCodec,
    frames: FrameCodec,
    idle: Option<IdleTimer>,
    /// This connection's own child of the server's shutdown token and one wait on it for the
    /// connection's life: a wake-up takes only this connection's lock, and only when the
    /// task's waker changes.
    drain: Option<CancelWait>,
    eof: bool,
    last_read_filled: bool,
}

fn idle_error(limit: Duration, what: &str) -> Error {
    Error::new(ErrorKind::IdleTimeout, format!("peer {what} for {limit:?}"))
}

enum Fill {
    Data,
    Eof,
    Drained,
}

impl Inbound {
    fn new(limits: &Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            lines: LineCodec::new(limits.max_line),
            frames: FrameCodec::new(limits.max_frame),
            idle: limits.idle_timeout.map(IdleTimer::new),
            drain: None,
            eof: false,
            last_read_filled: false,
        }
    }

    /// One step of reading more bytes into the buffer, as a poll: buffer, socket, idle
    /// deadline and drain in one function, so each message costs one short call chain.
    ///
    /// At a message boundary (nothing buffered, nothing arrived) a shutdown drain ends the
    /// input cleanly; bytes that have already arrived are served first. A read that has to
    /// wait there lets the buffer go: an idle connection holds no read buffer (8 KiB less
    /// each), and takes one again when woken for bytes. `waiting_since` belongs to the caller's
    /// wait: it is set when the read first has to wait and cleared when bytes arrive.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        waiting_since: &mut Option<Instant>,
    ) -> Poll<Result<Fill>> {
        let want = if self.last_read_filled {
            LARGE_READ
        } else {
            SMALL_READ
        };
        if self.buf.capacity() == 0 {
            self.buf = spare::take();
        }
        // Room for at least half a read is enough: a buffer whose front went out in earlier
        // messages is reclaimed (or replaced) only every few dozen small ones, not every time.
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        let room = self.buf.capacity() - self.buf.len();
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf) {
            Poll::Ready(Ok(n)) => {
                *waiting_since = None;
                self.last_read_filled = n == room;
                return Poll::Ready(Ok(if n == 0 { Fill::Eof } else { Fill::Data }));
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
            Poll::Pending => {}
        }
        if self.buf.is_empty() {
            spare::give(std::mem::take(&mut self.buf));
            if let Some(drain) = &mut self.drain
                && drain.poll_cancelled(cx).is_ready()
            {
                return Poll::Ready(Ok(Fill::Drained));
            }
        }
        if let Some(timer) = &mut self.idle
            && timer.poll_expired(cx, waiting_since).is_ready()
        {
            return Poll::Ready(Err(idle_error(timer.limit(), "sent nothing")));
        }
        Poll::Pending
    }

    /// One step of decoding the next item, reading as needed. `reading` is the caller's: set
    /// while a read is pending (the buffer has not changed, so decoding again can wait).
    fn poll_decode<R, D>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        decoder: &mut D,
        waiting_since: &mut Option<Instant>,
        reading: &mut bool,
    ) -> Poll<Result<Option<D::Item>>>
    where
        R: AsyncRead + Unpin,
        D: Decoder,
        Error: From<D::Error>,
    {
        loop {
            if !*reading {
                if let Some(item) = decoder.decode(&mut self.buf)? {
                    return Poll::Ready(Ok(Some(item)));
                }
                if self.eof {
                    return Poll::Ready(Ok(decoder.decode_eof(&mut self.buf)?));
                }
                *reading = true;
            }
            match ready!(self.poll_fill(cx, io, waiting_since))? {
                Fill::Data => {}
                Fill::Eof => self.eof = true,
                Fill::Drained => return Poll::Ready(Ok(None)),
            }
            *reading = false;
        }
    }

    /// Decodes the next item, reading as needed. (The read methods return these poll loops
    /// themselves, not `async` wrappers around them: one less state machine per message.)
    fn decode<'a, R, D>(
        &'a mut self,
        io: &'a mut R,
        decoder: &'a mut D,
    ) -> impl Future<Output = Result<Option<D::Item>>> + 'a
    where
        R: AsyncRead + Unpin,
        D: Decoder,
        Error: From<D::Error>,
    {
        let mut waiting_since = None;
        let mut reading = false;
        std::future::poll_fn(move |cx| {
            self.poll_decode(cx, io, decoder, &mut waiting_since, &mut reading)
        })
    }

    fn chunk<'a, R: AsyncRead + Unpin>(
        &'a mut self,
        io: &'a mut R,
    ) -> impl Future<Output = Result<Option<Bytes>>> + 'a {
        let mut waiting_since = None;
        std::future::poll_fn(move |cx| {
            if self.buf.is_empty() && !self.eof {
                match ready!(self.poll_fill(cx, io, &mut waiting_since))? {
                    Fill::Data => {}
                    Fill::Eof => self.eof = true,
                    Fill::Drained => return Poll::Ready(Ok(None)),
                }
            }
            Poll::Ready(Ok((!self.buf.is_empty()).then(|| self.buf.split().freeze())))
        })
    }

    /// At most `max` bytes: buffered ones first, else one read of up to `max` (capped at
    /// [`BULK_READ`]) straight into a buffer of its own.
    async fn up_to<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        max: usize,
    ) -> Result<Option<Bytes>> {
        if max == 0 {
            return Ok(Some(Bytes::new()));
        }
        if !self.buf.is_empty() {
            let n = self.buf.len().min(max);
            return Ok(Some(self.buf.split_to(n).freeze()));
        }
        if self.eof {
            return Ok(None);
        }
        let mut buf = BytesMut::with_capacity(max.min(BULK_READ));
        let n = match &mut self.idle {
            Some(timer) => timer
                .run(io.read_buf(&mut buf))
                .await
                .map_err(|()| idle_error(timer.limit(), "sent nothing"))?,
            None => io.read_buf(&mut buf).await,
        }
        .map_err(Error::from)?;
        if n == 0 {
            self.eof = true;
            return Ok(None);
        }
        Ok(Some(buf.freeze()))
    }

    fn line<'a, R: AsyncRead + Unpin>(
        &'a mut self,
        io: &'a mut R,
    ) -> impl Future<Output = Result<Option<Bytes>>> + 'a {
        let mut waiting_since = None;
        let mut reading = false;
        std::future::poll_fn(move |cx| {
            // The codec remembers how far it has searched; it is lent out for the call.
            let mut lines = self.lines.clone();
            let polled = self.poll_decode(cx, io, &mut lines, &mut waiting_since, &mut reading);
            self.lines = lines;
            polled
        })
    }

    fn frame<'a, R: AsyncRead + Unpin>(
        &'a mut self,
        io: &'a mut R,
    ) -> impl Future<Output = Result<Option<Bytes>>> + 'a {
        let mut waiting_since = None;
        let mut reading = false;
        let mut frames = self.frames.clone();
        std::future::poll_fn(move |cx| {
            self.poll_decode(cx, io, &mut frames, &mut waiting_since, &mut reading)
        })
    }
}

/// Read buffers that waiting connections let go, kept a few per thread for the next connection
/// that has bytes to read: a busy server reuses them instead of allocating one per message, and
/// thousands of idle connections hold none.
mod spare {
    use std::cell::RefCell;

    use bytes::BytesMut;

    /// Buffers kept per thread (at most `KEEP * LARGE_READ` bytes).
    const KEEP: usize = 16;

    thread_local! {
        static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// A kept buffer, or an empty one.
    pub(super) fn take() -> BytesMut {
        SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps an empty buffer for reuse (or frees it, when enough are kept).
    pub(super) fn give(buf: BytesMut) {
        if buf.capacity() == 0 || buf.capacity() > super::LARGE_READ {
            return;
        }
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEEP {
                spare.push(buf);
            }
        });
    }
}

/// The sending side's state: queued output and the idle deadline for writes.
#[derive(Debug)]
struct Outbound {
    buf: BytesMut,
    frames: FrameCodec,
    idle: Option<IdleTimer>,
}

impl Outbound {
    fn new(limits: &Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            frames: FrameCodec::new(limits.max_frame),
            idle: limits.idle_timeout.map(IdleTimer::new),
        }
    }

    async fn write_all<W: AsyncWrite + Unpin>(&mut self, io: &mut W, data: &[u8]) -> Result<()> {
        if self.buf.is_empty() && data.len() >= FLUSH_AT {
            return self.write_direct(io, data).await;
        }
        self.buf.extend_from_slice(data);
        self.flush_if_full(io).await
    }

    /// Writes `data` and flushes, in one poll loop (socket writes, flush, idle deadline). With
    /// nothing queued `data` goes straight from the caller, uncopied; otherwise it joins the
    /// queue (on the first poll) and goes in the same writes.
    fn send<'a, W: AsyncWrite + Unpin>(
        &'a mut self,
        io: &'a mut W,
        data: &'a [u8],
    ) -> impl Future<Output = Result<()>> + 'a {
        let mut rest = data;
        let mut started = false;
        let mut waiting_since = None;
        std::future::poll_fn(move |cx| {
            if !started {
                started = true;
                if !self.buf.is_empty() {
                    self.buf.extend_from_slice(rest);
                    rest = &[];
                }
            }
            while !self.buf.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, &self.buf) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        bytes::Buf::advance(&mut self.buf, n);
                        waiting_since = None;
                    }
                    polled => return self.write_stalled(cx, polled, &mut waiting_since),
                }
            }
            while !rest.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, rest) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        rest = &rest[n..];
                        waiting_since = None;
                    }
                    polled => return self.write_stalled(cx, polled, &mut waiting_since),
                }
            }
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Ready(flushed) => Poll::Ready(flushed.map_err(Error::from)),
                Poll::Pending => self.poll_stalled(cx, &mut waiting_since),
            }
        })
    }

    /// A write that made no progress: its error, `WriteZero`, or a wait under the idle timeout.
    fn write_stalled(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<usize>>,
        waiting_since: &mut Option<Instant>,
    ) -> Poll<Result<()>> {
        match polled {
            Poll::Ready(Ok(_)) => Poll::Ready(Err(std::io::Error::from(
                std::io::ErrorKind::WriteZero,
            )
            .into())),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err.into())),
            Poll::Pending => self.poll_stalled(cx, waiting_since),
        }
    }

    /// For a write found pending: the idle timeout's error once the peer has taken nothing for
    /// that long, else `Pending`.
    fn poll_stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        waiting_since: &mut Option<Instant>,
    ) -> Poll<Result<T>> {
        if let Some(timer) = &mut self.idle
            && timer.poll_expired(cx, waiting_since).is_ready()
        {
            return Poll::Ready(Err(idle_error(timer.limit(), "took nothing we sent")));
        }
        Poll::Pending
    }

    /// Sends queued output, then `parts` with vectored writes (no copy into the buffer), then
    /// flushes.
    async fn send_parts<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        parts: &[Bytes],
    ) -> Result<()> {
        self.send_buffered(io).await?;
        let mut index = 0;
        let mut offset = 0;
        while index < parts.len() {
            let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&parts[index][offset..])
                .chain(parts[index + 1..].iter().map(|p| &p[..]))
                .take(MAX_IOVECS)
                .map(std::io::IoSlice::new)
                .collect();
            let mut n = self.progress(io.write_vectored(&slices)).await?;
            while index < parts.len() && n >= parts[index].len() - offset {
                n -= parts[index].len() - offset;
                index += 1;
                offset = 0;
            }
            offset += n;
        }
        self.flush_io(io).await
    }

    async fn write_direct<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        mut data: &[u8],
    ) -> Result<()> {
        while !data.is_empty() {
            let n = self.progress(io.write(data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    async fn flush_if_full<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.send_buffered(io).await
        } else {
            Ok(())
        }
    }

    async fn send_buffered<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        while !self.buf.is_empty() {
            let mut buf = std::mem::take(&mut self.buf);
            let result = self.progress(io.write_buf(&mut buf)).await;
            self.buf = buf;
            result?;
        }
        Ok(())
    }

    async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        self.send_buffered(io).await?;
        self.flush_io(io).await
    }

    async fn flush_io<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        match &mut self.idle {
            Some(timer) => timer
                .run(io.flush())
                .await
                .map_err(|()| idle_error(timer.limit(), "took nothing we sent"))?,
            None => io.flush().await,
        }
        .map_err(Error::from)
    }

    /// One write call; it must make progress within the idle timeout.
    async fn progress(
        &mut self,
        write: impl Future<Output = std::io::Result<usize>>,
    ) -> Result<usize> {
        let n = match &mut self.idle {
            Some(timer) => timer
                .run(write)
                .await
                .map_err(|()| idle_error(timer.limit(), "took nothing we sent"))?,
            None => write.await,
        }?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        Ok(n)
    }
}

/// Generates the reading methods shared by [`Connection`] and [`ConnectionReader`].
macro_rules! reading_methods {
    () => {
        /// Returns the next bytes received, as they came (the tutorials' `recv(1024)`), or
        /// `None` at end of input.
        ///
        /// # Errors
        /// I/O errors and the idle timeout.
        ///
        /// # Cancel safety
        /// Cancel-safe.
        pub fn read_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send + '_ {
            self.inbound.chunk(&mut self.io)
        }

        /// Returns at most `max` of the next bytes received, or `None` at end of input: for
        /// bulk data of a known length between framed messages (a file after its header), read
        /// without over-reading into what follows. With nothing buffered, one read of up to
        /// `max` bytes (at most 1 MiB) goes straight into the returned buffer, uncopied.
        ///
        /// # Errors
        /// I/O errors and the idle timeout.
        ///
        /// # Cancel safety
        /// Cancel-safe.
        pub async fn read_up_to(&mut self, max: usize) -> Result<Option<Bytes>> {
            self.inbound.up_to(&mut self.io, max).await
        }

        /// Returns the next line, `\n` (or `\r\n`) included, or `None` at end of input. An
        /// unterminated last line is returned as it is.
        ///
        /// # Errors
        /// [`ErrorKind::TooLarge`] past `Limits::max_line`; I/O errors; the idle timeout.
        ///
        /// # Cancel safety
        /// Cancel-safe: a partial line stays buffered.
        pub fn read_line(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send + '_ {
            self.inbound.line(&mut self.io)
        }

        /// Returns the next length-prefixed frame's payload, or `None` at a clean end of input.
        ///
        /// # Errors
        /// [`ErrorKind::TooLarge`] past `Limits::max_frame`; [`ErrorKind::UnexpectedEof`] when
        /// the stream ends inside a frame; I/O errors; the idle timeout.
        ///
        /// # Cancel safety
        /// Cancel-safe: a partial frame stays buffered.
        pub fn read_frame(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send + '_ {
            self.inbound.frame(&mut self.io)
        }

        /// Decodes the next item with any tokio-util [`Decoder`], sharing this connection's
        /// buffer (so you can switch framing mid-stream, as a protocol upgrade does).
        ///
        /// # Errors
        /// The decoder's errors; I/O errors; the idle timeout.
        ///
        /// # Cancel safety
        /// Cancel-safe if the decoder keeps its progress in itself or the buffer.
        pub async fn read_with<D>(&mut self, decoder: &mut D) -> Result<Option<D::Item>>
        where
            D: Decoder,
            Error: From<D::Error>,
        {
            self.inbound.decode(&mut self.io, decoder).await
        }

        /// Bytes received but not yet returned by a read.
        pub fn buffered(&self) -> &[u8] {
            &self.inbound.buf
        }

        /// Changes the idle timeout for reads.
        pub fn set_read_idle_timeout(&mut self, idle: Option<Duration>) {
            self.inbound.idle = idle.map(IdleTimer::new);
        }
    };
}

/// Generates the writing methods shared by [`Connection`] and [`ConnectionWriter`].
macro_rules! writing_methods {
    () => {
        /// Queues `data`; large output is written as it accumulates. Call
        /// [`flush`](Self::flush) (or use [`send`](Self::send)) to send it.
        ///
        /// # Errors
        /// I/O errors; the idle timeout when the peer takes nothing.
        ///
        /// # Cancel safety
        /// Not cancel-safe: do not race writes in `select!`.
        pub async fn write_all(&mut self, data: &[u8]) -> Result<()> {
            self.outbound.write_all(&mut self.io, data).await
        }

        /// Queues `line` followed by `\n` (unless it already ends in one).
        ///
        /// # Errors
        /// As [`write_all`](Self::write_all).
        pub async fn write_line(&mut self, line: &[u8]) -> Result<()> {
            LineCodec::new(usize::MAX).encode(line, &mut self.outbound.buf)?;
            self.outbound.flush_if_full(&mut self.io).await
        }

        /// Queues a length-prefixed frame.
        ///
        /// # Errors
        /// [`ErrorKind::TooLarge`] past `Limits::max_frame`; as [`write_all`](Self::write_all).
        pub async fn write_frame(&mut self, payload: &[u8]) -> Result<()> {
            self.outbound
                .frames
                .encode(payload, &mut self.outbound.buf)?;
            self.outbound.flush_if_full(&mut self.io).await
        }

        /// Sends everything queued.
        ///
        /// # Errors
        /// I/O errors; the idle timeout when the peer takes nothing.
        pub async fn flush(&mut self) -> Result<()> {
            self.outbound.flush(&mut self.io).await
        }

        /// `write_all` then `flush`: the tutorials' `sendall`.
        ///
        /// # Errors
        /// As [`flush`](Self::flush).
        pub fn send<'a>(
            &'a mut self,
            data: &'a [u8],
        ) -> impl Future<Output = Result<()>> + Send + 'a {
            self.outbound.send(&mut self.io, data)
        }

        /// Sends `parts` one after another, then flushes, with vectored writes that hand the
        /// buffers to the kernel uncopied — for fanning one shared message out to many peers.
        /// Output queued by `write_*` goes first.
        ///
        /// # Errors
        /// As [`flush`](Self::flush).
        ///
        /// # Cancel safety
        /// Not cancel-safe.
        pub async fn send_parts(&mut self, parts: &[Bytes]) -> Result<()> {
            self.outbound.send_parts(&mut self.io, parts).await
        }

        /// Flushes, then closes the sending direction (TCP half-close): the peer reads end of
        /// input while this side can still receive.
        ///
        /// # Errors
        /// As [`flush`](Self::flush).
        pub async fn shutdown_write(&mut self) -> Result<()> {
            self.flush().await?;
            self.io.shutdown().await?;
            Ok(())
        }
    };
}

/// One connection: the stream, its input and output buffers, and who the peer is.
///
/// ```no_run
/// # async fn demo() -> socketeer::Result<()> {
/// use socketeer::{client, Endpoint};
/// let mut conn = client::connect(&"127.0.0.1:9999".parse::<Endpoint>()?).await?;
/// conn.write_line(b"hello").await?;
/// conn.flush().await?;
/// if let Some(reply) = conn.read_line().await? {
///     println!("{}", String::from_utf8_lossy(&reply));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Connection {
    io: Stream,
    inbound: Inbound,
    outbound: Outbound,
    peer: PeerAddr,
    tls_exporter: Option<[u8; EXPORTER_LEN]>,
    identity: Option<Identity>,
}

impl Connection {
    /// Wraps a connected stream with default [`Limits`].
    pub fn new(stream: Stream, peer: PeerAddr) -> Self {
        Self::with_limits(stream, peer, &Limits::default())
    }

    /// Wraps a connected stream with the given limits.
    pub fn with_limits(stream: Stream, peer: PeerAddr, limits: &Limits) -> Self {
        Self {
            io: stream,
            inbound: Inbound::new(limits),
            outbound: Outbound::new(limits),
            peer,
            tls_exporter: None,
            identity: None,
        }
    }

    /// Records the TLS exporter value of the session under this connection (set by the server
    /// and client after a TLS handshake; authentication binds to it).
    pub fn set_tls_exporter(&mut self, exporter: [u8; EXPORTER_LEN]) {
        self.tls_exporter = Some(exporter);
    }

    /// The TLS exporter value, when the connection runs over TLS.
    pub fn tls_exporter(&self) -> Option<&[u8]> {
        self.tls_exporter.as_ref().map(|e| &e[..])
    }

    /// True when the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.io, Stream::Tls(_))
    }

    /// Who the peer authenticated as, when the server requires authentication.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The authenticated device name, if any (shorthand for `identity()?.device`).
    pub fn device(&self) -> Option<&str> {
        self.identity.as_ref().and_then(|id| id.device.as_deref())
    }

    pub(crate) fn set_identity(&mut self, identity: Identity) {
        self.identity = Some(identity);
    }

    /// Makes reads end cleanly (return `None`) at the next message boundary once `token` is
    /// cancelled. Servers set this to their shutdown token.
    pub fn set_drain(&mut self, token: &CancellationToken) {
        self.inbound.drain = Some(CancelWait::new(token.child_token()));
    }

    /// The token set by [`set_drain`](Self::set_drain): cancelled when the server is shutting
    /// down. Handlers with loops of their own can watch it.
    pub fn drain_token(&self) -> Option<&CancellationToken> {
        self.inbound.drain.as_ref().map(CancelWait::token)
    }

    /// Who is on the other end.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    /// The underlying stream. Reading from it directly bypasses [`buffered`](Self::buffered)
    /// input; flush before writing to it directly.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.io
    }

    /// Changes the idle timeout for reads and writes.
    pub fn set_idle_timeout(&mut self, idle: Option<Duration>) {
        self.inbound.idle = idle.map(IdleTimer::new);
        self.outbound.idle = idle.map(IdleTimer::new);
    }

    reading_methods!();
    writing_methods!();

    /// Gives back the stream and any input received but not yet read (output still queued is
    /// dropped: flush first). For handing a connection to code that wants the raw stream.
    pub fn into_parts(self) -> (Stream, Bytes) {
        (self.io, self.inbound.buf.freeze())
    }

    /// Splits into a reading half and a writing half that can be used from two tasks at once.
    /// Buffered input and queued output go with their halves.
    pub fn into_split(self) -> (ConnectionReader, ConnectionWriter) {
        let (read, write) = tokio::io::split(self.io);
        (
            ConnectionReader {
                io: read,
                inbound: self.inbound,
                peer: self.peer.clone(),
            },
            ConnectionWriter {
                io: write,
                outbound: self.outbound,
                peer: self.peer,
            },
        )
    }
}

/// The reading half of a [`Connection`].
#[derive(Debug)]
pub struct ConnectionReader {
    io: ReadHalf<Stream>,
    inbound: Inbound,
    peer: PeerAddr,
}

impl ConnectionReader {
    /// Who is on the other end.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    reading_methods!();
}

/// The writing half of a [`Connection`].
#[derive(Debug)]
pub struct ConnectionWriter {
    io: WriteHalf<Stream>,
    outbound: Outbound,
    peer: PeerAddr,
}

impl ConnectionWriter {
    /// Who is on the other end.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    /// Changes the idle timeout for writes.
    pub fn set_write_idle_timeout(&mut self, idle: Option<Duration>) {
        self.outbound.idle = idle.map(IdleTimer::new);
    }

    writing_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(limits: &Limits) -> (Connection, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (
            Connection::with_limits(Stream::other(a), PeerAddr::Unknown, limits),
            b,
        )
    }

    #[tokio::test]
    async fn a_connection_waiting_between_messages_holds_no_read_buffer() {
        let (mut conn, mut peer) = pair(&Limits::default());
        peer.write_all(b"one\n").await.expect("write");
        assert_eq!(
            conn.read_line().await.expect("line").as_deref(),
            Some(&b"one\n"[..])
        );
        assert!(
            conn.inbound.buf.capacity() > 0,
            "the buffer stays while bytes flow"
        );
        {
            let mut read = std::pin::pin!(conn.read_line());
            let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "nothing to read yet");
        }
        assert_eq!(conn.inbound.buf.capacity(), 0, "let go while waiting");
        // Half a line: the wait for the rest keeps what arrived.
        peer.write_all(b"tw").await.expect("write");
        {
            let mut read = std::pin::pin!(conn.read_line());
            let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "the line is not complete");
        }
        assert_eq!(&conn.inbound.buf[..], b"tw");
        peer.write_all(b"o\n").await.expect("write");
        assert_eq!(
            conn.read_line().await.expect("line").as_deref(),
            Some(&b"two\n"[..])
        );
    }

    #[tokio::test]
    async fn bulk_reads_never_take_more_than_asked() {
        let (mut conn, mut peer) = pair(&Limits::default());
        // A frame, 10 raw bytes, and another frame, all in one write.
        peer.write_all(b"\0\0\0\x02hi0123456789\0\0\0\x03end")
            .await
            .expect("write");
        drop(peer);
        assert_eq!(
            conn.read_frame().await.expect("frame").as_deref(),
            Some(&b"hi"[..])
        );
        let mut raw = Vec::new();
        while raw.len() < 10 {
            let piece = conn
                .read_up_to(10 - raw.len())
                .await
                .expect("raw")
                .expect("data");
            assert!(!piece.is_empty() && piece.len() <= 10);
            raw.extend_from_slice(&piece);
        }
        assert_eq!(raw, b"0123456789");
        assert_eq!(
            conn.read_frame().await.expect("frame").as_deref(),
            Some(&b"end"[..])
        );
        assert_eq!(conn.read_up_to(5).await.expect("eof"), None);
    }

    #[tokio::test]
    async fn reads_lines_frames_and_chunks_from_one_buffer() {
        let (mut conn, mut peer) = pair(&Limits::default());
        peer.write_all(b"one\n\0\0\0\x03abcrest")
            .await
            .expect("write");
        drop(peer);
        assert_eq!(
            conn.read_line().await.expect("line").as_deref(),
            Some(&b"one\n"[..])
        );
        assert_eq!(
            conn.read_frame().await.expect("frame").as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            conn.read_chunk().await.expect("chunk").as_deref(),
            Some(&b"rest"[..])
        );
        assert_eq!(conn.read_chunk().await.expect("eof"), None);
    }

    #[tokio::test]
    async fn a_read_cancelled_mid_line_loses_nothing() {
        let (mut conn, mut peer) = pair(&Limits::default());
        peer.write_all(b"hel").await.expect("write");
        let cancelled = tokio::time::timeout(Duration::from_millis(20), conn.read_line()).await;
        assert!(cancelled.is_err(), "no full line yet");
        peer.write_all(b"lo\n").await.expect("write");
        assert_eq!(
            conn.read_line().await.expect("line").as_deref(),
            Some(&b"hello\n"[..])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_peers_time_out() {
        let limits = Limits {
            idle_timeout: Some(Duration::from_secs(5)),
            ..Limits::default()
        };
        let (mut conn, _peer) = pair(&limits);
        let err = conn.read_line().await.expect_err("idle");
        assert_eq!(err.kind(), ErrorKind::IdleTimeout);
    }

    #[tokio::test]
    async fn drain_ends_input_only_at_a_message_boundary() {
        let (mut conn, mut peer) = pair(&Limits::default());
        let token = CancellationToken::new();
        conn.set_drain(&token);
        peer.write_all(b"par").await.expect("write");
        token.cancel();
        let finish = async {
            peer.write_all(b"tial\n").await.expect("write");
            peer
        };
        let (line, _peer) = tokio::join!(conn.read_line(), finish);
        assert_eq!(line.expect("line").as_deref(), Some(&b"partial\n"[..]));
        assert_eq!(conn.read_line().await.expect("drained"), None);
    }

    #[tokio::test]
    async fn send_parts_writes_every_part_in_order_after_queued_output() {
        let (mut conn, mut peer) = pair(&Limits::default());
        conn.write_all(b"queued ").await.expect("queue");
        let parts: Vec<Bytes> = (0..2000).map(|i| Bytes::from(format!("{i} "))).collect();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.expect("read");
            got
        });
        conn.send_parts(&parts).await.expect("send");
        drop(conn);
        let got = reading.await.expect("reader");
        let want: String = std::iter::once("queued ".to_owned())
            .chain((0..2000).map(|i| format!("{i} ")))
            .collect();
        assert_eq!(String::from_utf8(got).expect("utf8"), want);
    }

    /// A connection over a pipe that holds only `room` bytes: every large write is partial.
    fn narrow_pair(limits: &Limits, room: usize) -> (Connection, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(room);
        (
            Connection::with_limits(Stream::other(a), PeerAddr::Unknown, limits),
            b,
        )
    }

    #[tokio::test]
    async fn send_through_partial_writes_delivers_queued_output_then_the_data_in_order() {
        let (mut conn, mut peer) = narrow_pair(&Limits::default(), 61);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.expect("read");
            got
        });
        // Straight from the caller's slice ...
        conn.send(&data).await.expect("send");
        // ... and joined to queued output.
        conn.write_line(b"queued").await.expect("queue");
        conn.send(&data[..5000]).await.expect("send after queue");
        conn.send(b"").await.expect("empty send");
        drop(conn);
        let got = reading.await.expect("reader");
        let mut want = data.clone();
        want.extend_from_slice(b"queued\n");
        want.extend_from_slice(&data[..5000]);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes out of order");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_nothing_times_out_a_send() {
        let limits = Limits {
            idle_timeout: Some(Duration::from_secs(5)),
            ..Limits::default()
        };
        let (mut conn, _peer) = narrow_pair(&limits, 16);
        let started = tokio::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(60), conn.send(&[1u8; 64]))
            .await
            .expect("the idle timeout ends the send")
            .expect_err("stalled");
        assert_eq!(err.kind(), ErrorKind::IdleTimeout);
        assert!(err.to_string().contains("took nothing"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn split_halves_keep_buffers() {
        let (mut conn, mut peer) = pair(&Limits::default());
        peer.write_all(b"a\nb\n").await.expect("write");
        assert_eq!(
            conn.read_line().await.expect("a").as_deref(),
            Some(&b"a\n"[..])
        );
        conn.write_line(b"queued").await.expect("queue");
        let (mut reader, mut writer) = conn.into_split();
        assert_eq!(
            reader.read_line().await.expect("b").as_deref(),
            Some(&b"b\n"[..])
        );
        writer.flush().await.expect("flush");
        let mut got = [0u8; 7];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"queued\n");
    }
}
