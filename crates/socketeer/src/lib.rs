//! # socketeer — a socketserver for Rust
//!
//! Python's `socketserver`, done on tokio: bind any endpoint (`tcp://`, `udp://`, `unix://`,
//! `unixgram://`), write a [`Handler`] with `setup`, `handle` and `finish`, and a [`Server`]
//! serves many clients at once, each connection in its own task, with every size and wait a
//! peer controls bounded by [`Limits`], and a graceful [`Shutdown`].
//!
//! ```no_run
//! use socketeer::{BindOptions, Connection, Handler, Listener, Result, Server};
//!
//! /// The tutorials' upper-case echo server.
//! struct Upper;
//!
//! impl Handler for Upper {
//!     async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
//!         while let Some(line) = conn.read_line().await? {
//!             conn.send(&line.to_ascii_uppercase()).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<()> {
//!     let listener = Listener::bind(&"127.0.0.1:9999".parse()?, &BindOptions::default()).await?;
//!     println!("listening on {}", listener.local_endpoint());
//!     Server::new(listener, || Upper).serve_forever().await
//! }
//! ```
//!
//! ## Layout
//!
//! | module | holds |
//! |---|---|
//! | [`endpoint`] | parsing `tcp://` `udp://` `unix://` `unixgram://` |
//! | [`listener`] | binding stream sockets (socket2 options, stale Unix sockets) |
//! | [`server`] | the stream server: accept loop, permits, backoff, shutdown |
//! | [`datagram`] | datagram sockets and the datagram server |
//! | [`handler`] | the [`Handler`] and [`DatagramHandler`] traits |
//! | [`connection`] | [`Connection`]: bounded, cancel-safe chunks, lines and frames |
//! | [`codec`] | the bounded line and length-prefixed frame codecs |
//! | [`limits`] | [`Limits`] and their defaults |
//! | [`shutdown`] | [`Shutdown`]: stop accepting, drain with a deadline |
//! | [`client`] | connecting to any endpoint, with TLS and authentication |
//! | [`auth`] | HMAC challenge-response, tutorial and socketeer modes |
//! | [`keys`] | key files, per-device keys, key generation |
//! | [`tls`] | rustls acceptor and connector (CA, pin, insecure), exporter |
//! | [`access`] | allow/deny lists, pre-auth caps and penalties |
//! | [`gate`] | [`Gate`]: access, admission, TLS and authentication before a handler |
//! | [`stream`] | [`Stream`] and [`PeerAddr`] |
//! | [`error`] | the one [`Error`] type and its [`ErrorKind`] |

pub mod access;
pub mod auth;
pub mod client;
pub mod codec;
pub mod connection;
pub mod datagram;
pub mod endpoint;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
mod greeting;
pub mod handler;
mod identity;
mod idle;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod server;
pub mod shutdown;
pub mod stream;
pub mod tls;

pub use access::{AccessList, Admission, AdmissionLimits, Refusal, Startup};
pub use auth::{AuthFailure, AuthMode, Authenticator, Identity};
pub use client::ClientOptions;
pub use connection::{Connection, ConnectionReader, ConnectionWriter};
pub use datagram::{Datagram, DatagramServer, DatagramSocket};
pub use endpoint::{Endpoint, HostPort};
pub use error::{Error, ErrorKind, Remedy, Result};
pub use gate::{AuthFailureHook, Gate};
pub use handler::{DatagramHandler, Handler};
pub use keys::{ClientKey, KeyStore, Keys};
pub use limits::Limits;
pub use listener::{BindOptions, Listener};
pub use server::{ConnectionLimit, Server};
pub use shutdown::{Drained, Shutdown, Signals};
pub use stream::{PeerAddr, Stream};
pub use tls::{ServerVerification, TlsAcceptor, TlsConnector};
