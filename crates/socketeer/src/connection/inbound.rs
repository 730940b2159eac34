//! The read side: buffered input, the line and frame codecs, the idle deadline, and the drain
//! signal. Partial input stays buffered, so every read is cancel-safe.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::codec::{FrameCodec, LineCodec};
use crate::error::{Error, Result};
use crate::idle::IdleTimer;
use crate::limits::Limits;
use crate::shutdown::CancelWait;

use super::{BULK_READ, LARGE_READ, SMALL_READ, idle_error, spare};

/// The receiving side's state: buffered input, codecs, idle deadline, and the drain signal.
#[derive(Debug)]
pub(super) struct Inbound {
    pub(super) buf: BytesMut,
    pub(super) lines: LineCodec,
    pub(super) frames: FrameCodec,
    pub(super) idle: Option<IdleTimer>,
    /// This connection's own child of the server's shutdown token and one wait on it for the
    /// connection's life: a wake-up takes only this connection's lock, and only when the
    /// task's waker changes.
    pub(super) drain: Option<CancelWait>,
    pub(super) eof: bool,
    pub(super) last_read_filled: bool,
}

enum Fill {
    Data,
    Eof,
    Drained,
}

impl Inbound {
    pub(super) fn new(limits: &Limits) -> Self {
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
    pub(super) fn poll_decode<R, D>(
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
    pub(super) fn decode<'a, R, D>(
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

    pub(super) fn chunk<'a, R: AsyncRead + Unpin>(
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
    pub(super) async fn up_to<R: AsyncRead + Unpin>(
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

    pub(super) fn line<'a, R: AsyncRead + Unpin>(
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

    pub(super) fn frame<'a, R: AsyncRead + Unpin>(
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
