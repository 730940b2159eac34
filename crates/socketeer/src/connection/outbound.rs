//! The write side: queued output, frames encoded into it, vectored writes of large parts, and
//! the idle deadline for writes (a peer that takes nothing is timed out).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::codec::FrameCodec;
use crate::error::{Error, Result};
use crate::idle::IdleTimer;
use crate::limits::Limits;

use super::{FLUSH_AT, MAX_IOVECS, idle_error};

/// The sending side's state: queued output and the idle deadline for writes.
#[derive(Debug)]
pub(super) struct Outbound {
    pub(super) buf: BytesMut,
    pub(super) frames: FrameCodec,
    pub(super) idle: Option<IdleTimer>,
}

impl Outbound {
    pub(super) fn new(limits: &Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            frames: FrameCodec::new(limits.max_frame),
            idle: limits.idle_timeout.map(IdleTimer::new),
        }
    }

    pub(super) async fn write_all<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        data: &[u8],
    ) -> Result<()> {
        if self.buf.is_empty() && data.len() >= FLUSH_AT {
            return self.write_direct(io, data).await;
        }
        self.buf.extend_from_slice(data);
        self.flush_if_full(io).await
    }

    /// Writes `data` and flushes, in one poll loop (socket writes, flush, idle deadline). With
    /// nothing queued `data` goes straight from the caller, uncopied; otherwise it joins the
    /// queue (on the first poll) and goes in the same writes.
    pub(super) fn send<'a, W: AsyncWrite + Unpin>(
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
    pub(super) fn write_stalled(
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
    pub(super) fn poll_stalled<T>(
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
    pub(super) async fn send_parts<W: AsyncWrite + Unpin>(
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

    pub(super) async fn write_direct<W: AsyncWrite + Unpin>(
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

    pub(super) async fn flush_if_full<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.send_buffered(io).await
        } else {
            Ok(())
        }
    }

    pub(super) async fn send_buffered<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        while !self.buf.is_empty() {
            let mut buf = std::mem::take(&mut self.buf);
            let result = self.progress(io.write_buf(&mut buf)).await;
            self.buf = buf;
            result?;
        }
        Ok(())
    }

    pub(super) async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        self.send_buffered(io).await?;
        self.flush_io(io).await
    }

    pub(super) async fn flush_io<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
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
    pub(super) async fn progress(
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
