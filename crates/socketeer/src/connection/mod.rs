//! [`Connection`]: owns one stream and its buffers, and reads and writes raw chunks, lines and
//! length-prefixed frames, all bounded by [`Limits`]. [`Connection::into_split`] gives a
//! [`ConnectionReader`] and a [`ConnectionWriter`] with the same methods, for tasks that read
//! and write at once.
//!
//! Reads are cancel-safe: a partly received line or frame stays in the buffer, so a read can sit
//! in a `tokio::select!` beside other events and lose nothing when another branch wins. Writes
//! are buffered: `write_*` queue, [`flush`](Connection::flush) sends (or `send`, which does both).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use crate::codec::LineCodec;
use crate::error::{Error, ErrorKind, Result};
use crate::identity::Identity;
use crate::idle::IdleTimer;
use crate::limits::Limits;
use crate::shutdown::CancelWait;
use crate::stream::{PeerAddr, Stream};
use crate::tls::EXPORTER_LEN;

mod inbound;
mod outbound;
mod spare;

use inbound::Inbound;
use outbound::Outbound;

const SMALL_READ: usize = 8 * 1024;
const LARGE_READ: usize = 64 * 1024;
/// The most one [`Connection::read_up_to`] reads at once.
const BULK_READ: usize = 1024 * 1024;
/// Queued output at or above this size is written without waiting for `flush`.
const FLUSH_AT: usize = 64 * 1024;
/// Buffers handed to one vectored write (Linux's IOV_MAX is 1024).
const MAX_IOVECS: usize = 1024;

fn idle_error(limit: Duration, what: &str) -> Error {
    Error::new(ErrorKind::IdleTimeout, format!("peer {what} for {limit:?}"))
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
mod tests;
