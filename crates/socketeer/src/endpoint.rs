//! Endpoints: the `tcp://`, `udp://`, `unix://` and `unixgram://` addresses a user writes, parsed
//! into an [`Endpoint`] and resolved to socket addresses.
//!
//! | written | means |
//! |---|---|
//! | `tcp://HOST:PORT`, `HOST:PORT` | TCP (IPv6 as `[::1]:PORT`; host names resolved) |
//! | `:PORT` | TCP on all interfaces (listen only) |
//! | `udp://HOST:PORT` | UDP |
//! | `unix:///path/to.sock` | Unix stream socket |
//! | `unixgram:///path/to.sock` | Unix datagram socket |

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// A host and port; `host == None` means every interface (written `:PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: Option<String>,
    port: u16,
}

impl HostPort {
    /// The host name or address literal, or `None` for "all interfaces".
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The port; 0 asks the system for a free one when binding.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resolves to socket addresses (DNS for names; literals need no lookup).
    ///
    /// `None` host resolves to the unspecified IPv6 address, bound dual-stack by the listeners.
    ///
    /// # Errors
    /// [`ErrorKind::Connect`] when the name does not resolve.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let Some(host) = &self.host else {
            return Ok(vec![SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                self.port,
            )]);
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), self.port))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Connect, format!("cannot resolve {host}")).with_source(e)
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::new(
                ErrorKind::Connect,
                format!("cannot resolve {host}: no addresses"),
            ));
        }
        Ok(addrs)
    }

    /// True when the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        match &self.host {
            None => false,
            Some(h) if h.eq_ignore_ascii_case("localhost") => true,
            Some(h) => h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

/// Where to listen or connect: a transport and an address.
///
/// Parse one from the written form with [`str::parse`]:
///
/// ```
/// use socketeer::Endpoint;
/// let ep: Endpoint = "udp://127.0.0.1:9999".parse()?;
/// assert!(!ep.is_stream());
/// assert_eq!(ep.to_string(), "udp://127.0.0.1:9999");
/// let err = "tcp//x".parse::<Endpoint>().unwrap_err();
/// assert_eq!(err.to_string(), r#"bad endpoint "tcp//x": expected tcp://HOST:PORT"#);
/// # Ok::<(), socketeer::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(HostPort),
    /// A UDP address.
    Udp(HostPort),
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// A Unix datagram socket path.
    UnixDatagram(PathBuf),
}

impl Endpoint {
    /// A TCP endpoint for a socket address (handy with `127.0.0.1:0` in tests).
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::Tcp(HostPort {
            host: Some(addr.ip().to_string()),
            port: addr.port(),
        })
    }

    /// A UDP endpoint for a socket address.
    pub fn udp(addr: SocketAddr) -> Self {
        Self::Udp(HostPort {
            host: Some(addr.ip().to_string()),
            port: addr.port(),
        })
    }

    /// True for byte-stream transports (TCP, Unix stream); false for datagram ones.
    pub fn is_stream(&self) -> bool {
        matches!(self, Self::Tcp(_) | Self::Unix(_))
    }

    /// True when traffic never leaves this machine: loopback addresses and Unix sockets.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Tcp(hp) | Self::Udp(hp) => hp.is_loopback(),
            Self::Unix(_) | Self::UnixDatagram(_) => true,
        }
    }

    /// The Unix socket path, for the Unix transports.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(p) | Self::UnixDatagram(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(hp) => write!(f, "tcp://{hp}"),
            Self::Udp(hp) => write!(f, "udp://{hp}"),
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::UnixDatagram(p) => write!(f, "unixgram://{}", p.display()),
        }
    }
}

fn bad(input: &str, why: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::BadEndpoint,
        format!("bad endpoint \"{input}\": {why}"),
    )
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        if input.is_empty() {
            return Err(bad(input, "empty; expected tcp://HOST:PORT"));
        }
        let Some((scheme, rest)) = input.split_once("://") else {
            return parse_host_port(input, input, "tcp").map(Self::Tcp);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => parse_host_port(input, rest, "tcp").map(Self::Tcp),
            "udp" => parse_host_port(input, rest, "udp").map(Self::Udp),
            "unix" => parse_path(input, rest, "unix").map(Self::Unix),
            "unixgram" => parse_path(input, rest, "unixgram").map(Self::UnixDatagram),
            other => Err(bad(
                input,
                format!("unknown scheme \"{other}\" (expected tcp, udp, unix or unixgram)"),
            )),
        }
    }
}

fn parse_path(input: &str, rest: &str, scheme: &str) -> Result<PathBuf> {
    if rest.is_empty() {
        return Err(bad(input, format!("expected {scheme}:///path/to.sock")));
    }
    if rest.contains('\0') {
        return Err(bad(input, "the path contains a NUL byte"));
    }
    Ok(PathBuf::from(rest))
}

fn parse_host_port(input: &str, rest: &str, scheme: &str) -> Result<HostPort> {
    let expected = || bad(input, format!("expected {scheme}://HOST:PORT"));
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        let (v6, tail) = after.split_once(']').ok_or_else(expected)?;
        let port = tail.strip_prefix(':').ok_or_else(expected)?;
        let ip: Ipv6Addr = v6
            .parse()
            .map_err(|_| bad(input, format!("\"{v6}\" is not an IPv6 address")))?;
        (Some(ip.to_string()), port)
    } else {
        let (host, port) = rest.rsplit_once(':').ok_or_else(expected)?;
        if host.contains(':') {
            return Err(bad(
                input,
                "write IPv6 addresses in brackets, as [::1]:PORT",
            ));
        }
        let valid = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid {
            return Err(bad(
                input,
                format!("\"{host}\" is not a host name or address"),
            ));
        }
        ((!host.is_empty()).then(|| host.to_owned()), port)
    };
    if port.is_empty() {
        return Err(expected());
    }
    let port = port.parse::<u16>().map_err(|_| {
        bad(
            input,
            format!("port \"{port}\" must be a number from 0 to 65535"),
        )
    })?;
    Ok(HostPort { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        s.parse::<Endpoint>().expect_err(s).to_string()
    }

    #[test]
    fn parses_every_written_form() {
        assert_eq!(ok("tcp://127.0.0.1:80").to_string(), "tcp://127.0.0.1:80");
        assert_eq!(ok("localhost:9999").to_string(), "tcp://localhost:9999");
        assert_eq!(ok(":9999").to_string(), "tcp://:9999");
        assert_eq!(ok("[::1]:7").to_string(), "tcp://[::1]:7");
        assert_eq!(ok("udp://[::1]:0").to_string(), "udp://[::1]:0");
        assert_eq!(
            ok("unix:///tmp/a.sock"),
            Endpoint::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            ok("unixgram:///tmp/b"),
            Endpoint::UnixDatagram("/tmp/b".into())
        );
        assert!(ok("[::1]:7").is_local() && ok("unix:///x").is_local() && !ok(":1").is_local());
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        assert_eq!(
            err("tcp//x"),
            r#"bad endpoint "tcp//x": expected tcp://HOST:PORT"#
        );
        assert!(err("tcp://h:99999").contains("0 to 65535"));
        assert!(err("tcp://h:").contains("expected tcp://HOST:PORT"));
        assert!(err("sctp://h:1").contains("unknown scheme \"sctp\""));
        assert!(err("::1:80").contains("brackets"));
        assert!(err("[zz]:80").contains("not an IPv6 address"));
        assert!(err("unix://").contains("unix:///path"));
        assert!(err("a b:1").contains("not a host name"));
        assert!(err("").contains("empty"));
    }
}
