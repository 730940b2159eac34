//! What a socketeer server may send before any protocol starts, and recognising it in a
//! client: the refusal line, the authentication challenge, a TLS record.

use crate::error::{Error, ErrorKind, Remedy};

/// The line a refused connection is sent before it is closed (`socketeer: refused: WHY`), in
/// plain text so that nc shows it and socketeer's clients recognise it ([`recognize`]).
pub const REFUSAL_PREFIX: &str = "socketeer: refused: ";

/// Length of the server's challenge and of the client's nonce.
pub const NONCE_LEN: usize = 32;

/// What a server's first bytes say when they are not what the client expected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// It refused the connection, saying why ([`REFUSAL_PREFIX`]).
    Refused(String),
    /// It asked for a key: it sent an authentication challenge.
    AsksForKey,
    /// It speaks TLS.
    SpeaksTls,
}

impl Mismatch {
    /// The error to report; `over_tls` when the client was starting TLS.
    pub fn into_error(self, over_tls: bool) -> Error {
        match self {
            Self::Refused(why) => Error::new(
                ErrorKind::Refused,
                format!("the server refused the connection: {why}"),
            ),
            Self::AsksForKey if over_tls => Error::new(
                ErrorKind::Tls,
                "this server does not speak TLS; it asks for a key",
            )
            .with_remedy(Remedy::NoTlsUseKey),
            Self::AsksForKey => Error::new(ErrorKind::Auth, "this server asks for a key")
                .with_remedy(Remedy::UseKey),
            Self::SpeaksTls => {
                Error::new(ErrorKind::Tls, "this server speaks TLS").with_remedy(Remedy::UseTls)
            }
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.clone().into_error(false).to_string())
    }
}

/// Recognises the handshakes socketeer servers speak in the first bytes a server sent, for a
/// client that got something it did not expect: a refusal line, a 32-byte authentication
/// challenge, or a TLS record. `None` when the bytes are none of these (or too few to tell).
///
/// ```
/// use socketeer::client::{recognize, Mismatch};
/// assert_eq!(
///     recognize(b"socketeer: refused: too busy\n"),
///     Some(Mismatch::Refused("too busy".into()))
/// );
/// assert_eq!(recognize(&[0x16, 0x03, 0x03, 0x00, 0x31]), Some(Mismatch::SpeaksTls));
/// assert_eq!(recognize(b"hello\n"), None);
/// ```
pub fn recognize(first: &[u8]) -> Option<Mismatch> {
    let prefix = REFUSAL_PREFIX.as_bytes();
    if let Some(rest) = first.strip_prefix(prefix) {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let why = String::from_utf8_lossy(&line[..line.len().min(300)]);
        return Some(Mismatch::Refused(why.trim_end().to_owned()));
    }
    // A TLS record: content type 20-23 (alert 21, handshake 22), then version 3.x.
    if first.len() >= 3 && (20..=23).contains(&first[0]) && first[1] == 3 && first[2] <= 4 {
        return Some(Mismatch::SpeaksTls);
    }
    // A challenge: exactly 32 random bytes, which are never all text.
    let text = |b: &u8| b.is_ascii_graphic() || b.is_ascii_whitespace();
    if first.len() == NONCE_LEN && !first.iter().all(text) {
        return Some(Mismatch::AsksForKey);
    }
    None
}
