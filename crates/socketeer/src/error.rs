//! The library's one public error type: an [`ErrorKind`] to match on, a message that says what
//! failed, and the underlying cause (usually an [`std::io::Error`]) as its `source()`.

use std::fmt;
use std::io;

/// What kind of failure an [`Error`] is. Match on this, not on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An endpoint string could not be parsed (`bad endpoint "tcp//x": expected tcp://HOST:PORT`).
    BadEndpoint,
    /// Binding or preparing a listening socket failed (address in use, permission, live Unix socket).
    Bind,
    /// Connecting to a peer failed or timed out.
    Connect,
    /// A line or frame from the peer was larger than the configured limit.
    TooLarge,
    /// The peer sent nothing (or accepted nothing we wrote) for longer than the idle timeout.
    IdleTimeout,
    /// An operation ran past its deadline.
    Timeout,
    /// The peer closed the connection in the middle of a frame.
    UnexpectedEof,
    /// The peer sent bytes that break the framing rules.
    InvalidData,
    /// The connection was closed by a server shutdown before the handler finished.
    Shutdown,
    /// Authentication failed: a wrong or malformed answer, an unknown device, a bad key file,
    /// or a server that could not prove it holds the key.
    Auth,
    /// A TLS handshake or configuration failed.
    Tls,
    /// The peer was not admitted: an access list or a pre-authentication limit refused it.
    Refused,
    /// Any other I/O error; see `source()`.
    Io,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::BadEndpoint => "bad endpoint",
            Self::Bind => "cannot bind",
            Self::Connect => "cannot connect",
            Self::TooLarge => "message too large",
            Self::IdleTimeout => "idle timeout",
            Self::Timeout => "timed out",
            Self::UnexpectedEof => "unexpected end of stream",
            Self::InvalidData => "invalid data",
            Self::Shutdown => "server shutting down",
            Self::Auth => "authentication failed",
            Self::Tls => "TLS failed",
            Self::Refused => "refused",
            Self::Io => "i/o error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller could change for the operation to succeed, when the library can tell: for
/// programs to say it in their own terms (a flag, a setting, a button).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Remedy {
    /// Connect with TLS: the server speaks it.
    UseTls,
    /// The server may speak TLS (it sent nothing while waiting for the client): try TLS.
    MaybeUseTls,
    /// Connect without TLS, with a key: the server does not speak TLS and asks for a key.
    NoTlsUseKey,
    /// Authenticate with a key: the server asks for one.
    UseKey,
    /// Say which device of a per-device key file this is.
    NameDevice,
}

/// The error type of every fallible operation in this crate.
///
/// `Display` gives a one-line message (without the cause); walk `source()` for the cause, or
/// print it with `{:#}` through `anyhow`.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    remedy: Option<Remedy>,
}

/// `Result<T, socketeer::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message saying what failed.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
            remedy: None,
        }
    }

    /// Notes what the caller could change to succeed.
    #[must_use]
    pub fn with_remedy(mut self, remedy: Remedy) -> Self {
        self.remedy = Some(remedy);
        self
    }

    /// What the caller could change to succeed, if the library can tell.
    pub fn remedy(&self) -> Option<Remedy> {
        self.remedy
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The I/O error underneath, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source
            .as_ref()
            .and_then(|s| s.downcast_ref::<io::Error>())
    }

    /// True when the peer went away abruptly (reset, broken pipe, aborted): routine for servers.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self.io_error().map(io::Error::kind),
            Some(
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            )
        ) || self.kind == ErrorKind::UnexpectedEof
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::UnexpectedEof => ErrorKind::UnexpectedEof,
            io::ErrorKind::InvalidData => ErrorKind::InvalidData,
            _ => ErrorKind::Io,
        };
        Self {
            kind,
            message: kind.as_str().to_owned(),
            source: Some(Box::new(err)),
            remedy: None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        let kind = match err.kind {
            ErrorKind::Timeout | ErrorKind::IdleTimeout => io::ErrorKind::TimedOut,
            ErrorKind::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            ErrorKind::TooLarge | ErrorKind::InvalidData => io::ErrorKind::InvalidData,
            ErrorKind::BadEndpoint => io::ErrorKind::InvalidInput,
            ErrorKind::Auth | ErrorKind::Refused => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_cause_and_map_kinds() {
        let err: Error = io::Error::new(io::ErrorKind::TimedOut, "slow").into();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert_eq!(
            err.io_error().map(io::Error::kind),
            Some(io::ErrorKind::TimedOut)
        );
        let reset: Error = io::Error::from(io::ErrorKind::ConnectionReset).into();
        assert!(reset.is_disconnect());
    }
}
