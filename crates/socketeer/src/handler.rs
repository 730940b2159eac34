//! The [`Handler`] trait: Python's `BaseRequestHandler` with `setup`, `handle` and `finish`, one
//! value per connection. (The [`DatagramHandler`] trait for datagram servers lives with them,
//! in [`crate::datagram`], and is named here too.)

use crate::connection::Connection;
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

pub use crate::datagram::DatagramHandler;
