//! The files protocol's messages (docs/protocol.md, "files"): JSON control messages in
//! length-prefixed frames; file contents as raw bytes of the announced length between them.
//! Digests are BLAKE3 (SHA-256 on one core is slower than loopback), written as 64 hex digits.

use serde::{Deserialize, Serialize};

use super::root::Entry;

/// The largest control message either side accepts (a listing page is kept well under it).
pub(crate) const MAX_CONTROL: usize = 4 << 20;

/// The first message of a connection, from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Request {
    /// List a directory, from after `after` (a previous answer's `next`).
    Ls {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Upload `size` bytes to `path`.
    Put { path: String, size: u64 },
    /// Download `path`, resuming after `offset` bytes whose digest is `prefix`.
    Get {
        path: String,
        #[serde(default)]
        offset: u64,
        #[serde(default)]
        prefix: Option<String>,
    },
}

/// A server's answer. `ok: false` comes with `error`, and ends the exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Response {
    pub(crate) ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// put: bytes the server already holds from an interrupted upload; get: where the data
    /// that follows starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<u64>,
    /// put: the digest of those `offset` bytes, for the client to check against its file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prefix: Option<String>,
    /// get: the file's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    /// put, at the end: the digest of the stored file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<String>,
    /// ls: the entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) entries: Option<Vec<Entry>>,
    /// ls: more entries follow (ask again with `after` set to `next`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) truncated: bool,
    /// ls: where the next page starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
}

impl Response {
    pub(crate) fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            ..Self::default()
        }
    }
}

/// put: the client's choice after the server's first answer: resume at the offered offset
/// (its own file's first bytes have that digest) or start again at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resume {
    pub(crate) offset: u64,
}

/// After the data: the sender's digest of the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Trailer {
    pub(crate) digest: String,
}

/// Hex digits of a digest.
pub(crate) fn hex(hash: &blake3::Hash) -> String {
    hash.to_hex().to_string()
}
