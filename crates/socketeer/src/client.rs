//! The client side: connect to any stream endpoint with a deadline and get the same
//! [`Connection`] the servers use; datagram clients use [`crate::DatagramSocket::connect`].

use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use crate::connection::Connection;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::listener::{BindOptions, configure_tcp};
use crate::stream::{PeerAddr, Stream};

/// The connect deadline [`connect`] uses.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to a stream endpoint with the default 10 s deadline and default [`Limits`].
///
/// # Errors
/// As [`connect_stream`].
pub async fn connect(endpoint: &Endpoint) -> Result<Connection> {
    let (stream, peer) = connect_stream(endpoint, DEFAULT_CONNECT_TIMEOUT).await?;
    Ok(Connection::with_limits(stream, peer, &Limits::default()))
}

/// Connects to a stream endpoint (`tcp://` or `unix://`) within `timeout`. Host names may
/// resolve to several addresses; each is tried in turn within the one deadline.
///
/// # Errors
/// [`ErrorKind::Connect`] naming the endpoint, with the last failure as its cause;
/// [`ErrorKind::Timeout`] when the deadline passes.
pub async fn connect_stream(endpoint: &Endpoint, timeout: Duration) -> Result<(Stream, PeerAddr)> {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp(hp) => {
                if hp.host().is_none() {
                    return Err(Error::new(
                        ErrorKind::Connect,
                        format!("{endpoint}: a host is needed to connect"),
                    ));
                }
                let mut last = None;
                for addr in hp.resolve().await? {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            configure_tcp(&stream, &BindOptions::default());
                            return Ok((Stream::Tcp(stream), PeerAddr::Inet(addr)));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let cause = last.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into());
                Err(
                    Error::new(ErrorKind::Connect, format!("cannot connect to {endpoint}"))
                        .with_source(cause),
                )
            }
            Endpoint::Unix(path) => match UnixStream::connect(path).await {
                Ok(stream) => Ok((Stream::Unix(stream), PeerAddr::Unix(Some(path.clone())))),
                Err(e) => Err(Error::new(
                    ErrorKind::Connect,
                    format!("cannot connect to {endpoint}"),
                )
                .with_source(e)),
            },
            Endpoint::Udp(_) | Endpoint::UnixDatagram(_) => Err(Error::new(
                ErrorKind::Connect,
                format!("{endpoint} is a datagram endpoint; use DatagramSocket::connect"),
            )),
        }
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        Error::new(
            ErrorKind::Timeout,
            format!("cannot connect to {endpoint}: no answer within {timeout:?}"),
        )
    })?
}
