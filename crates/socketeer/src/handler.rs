//! The [`Handler`] trait: Python's `BaseRequestHandler` with `setup`, `handle` and `finish`, one
//! value per connection, and the [`DatagramHandler`] trait for datagram servers.

use crate::connection::Connection;
use crate::datagram::Datagram;
use crate::error::Result;

/// Serves one connection, as a Python `socketserver.BaseRequestHandler` does.
///
/// The server makes a new handler for every connection (from the closure it was given) and
/// calls `setup`, then `handle`, then `finish`. `finish` runs whenever `setup` succeeded: after
/// `handle` returns, after it fails, and after it is cancelled by a shutdown whose grace period
/// ran out (then with a one-second limit). Errors are logged by the server with the peer's
/// address; they never reach the accept loop.
///
/// ```
/// use socketeer::{Connection, Handler, Result};
///
/// /// The tutorials' upper-case echo server, line by line.
/// struct Upper;
///
/// impl Handler for Upper {
///     async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
///         while let Some(line) = conn.read_line().await? {
///             conn.send(&line.to_ascii_uppercase()).await?;
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + 'static {
    /// Runs before `handle`: greet the peer, check it, set up per-connection state.
    /// An error here skips `handle` and `finish`.
    fn setup(&mut self, conn: &mut Connection) -> impl Future<Output = Result<()>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// Serves the connection. Returning ends it (the server closes the stream).
    fn handle(&mut self, conn: &mut Connection) -> impl Future<Output = Result<()>> + Send;

    /// Cleans up after `handle`, however it ended.
    fn finish(&mut self, conn: &mut Connection) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }
}

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
