//! The native exec protocol's messages (docs/protocol.md, "exec"): length-prefixed frames whose
//! first byte says what they carry.

use serde::{Deserialize, Serialize};

/// Client → server, first frame: the command text (UTF-8).
pub(crate) const COMMAND: u8 = b'C';
/// Client → server: bytes for the command's stdin.
pub(crate) const STDIN: u8 = b'I';
/// Client → server: stdin is finished (the command reads EOF).
pub(crate) const STDIN_END: u8 = b'Z';
/// Server → client: bytes the command wrote to stdout.
pub(crate) const STDOUT: u8 = b'O';
/// Server → client: bytes the command wrote to stderr.
pub(crate) const STDERR: u8 = b'E';
/// Server → client, last frame: a JSON [`Report`].
pub(crate) const EXIT: u8 = b'X';

/// The largest frame either side sends or accepts.
pub(crate) const MAX_FRAME: usize = 1 << 20;

/// How the request ended, as the last frame carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Report {
    /// `exited`, `signaled`, `refused` (nothing was run) or `failed` (could not run it).
    pub(crate) status: String,
    /// The exit code (exited), or the code the client should exit with (refused, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<i32>,
    /// The signal that ended the command (signaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signal: Option<i32>,
    /// The command was killed at the server's --cmd-timeout.
    #[serde(default)]
    pub(crate) timed_out: bool,
    /// Output past the server's --max-output was dropped.
    #[serde(default)]
    pub(crate) truncated: bool,
    /// Why it was refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

impl Report {
    /// A request that ran nothing.
    pub(crate) fn refused(code: i32, message: impl Into<String>) -> Self {
        Self {
            status: "refused".into(),
            code: Some(code),
            signal: None,
            timed_out: false,
            truncated: false,
            message: Some(message.into()),
        }
    }

    /// The exit status a client reports: the code, 128 + the signal, or 1.
    pub(crate) fn exit_status(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }
}

/// A frame: the tag, then the payload.
pub(crate) fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(tag);
    out.extend_from_slice(payload);
    out
}

/// A frame from the client, as the server reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromClient {
    /// The command text (first frame only); invalid UTF-8 is replaced.
    Command(String),
    /// Bytes for stdin: the frame after its tag.
    Stdin,
    /// Stdin is finished.
    StdinEnd,
}

/// Reads a client's frame; `None` for a frame the protocol does not have.
pub(crate) fn from_client(frame: &[u8]) -> Option<FromClient> {
    match frame.split_first()? {
        (&COMMAND, text) => Some(FromClient::Command(
            String::from_utf8_lossy(text).into_owned(),
        )),
        (&STDIN, _) => Some(FromClient::Stdin),
        (&STDIN_END, []) => Some(FromClient::StdinEnd),
        _ => None,
    }
}

/// A frame from the server, as the client reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromServer<'a> {
    /// Bytes the command wrote to stdout.
    Stdout(&'a [u8]),
    /// Bytes the command wrote to stderr.
    Stderr(&'a [u8]),
    /// The last frame: how the request ended.
    Exit(Report),
}

/// Reads a server's frame; the error says what is wrong with it.
pub(crate) fn from_server(frame: &[u8]) -> Result<FromServer<'_>, String> {
    match frame.split_first() {
        Some((&STDOUT, data)) => Ok(FromServer::Stdout(data)),
        Some((&STDERR, data)) => Ok(FromServer::Stderr(data)),
        Some((&EXIT, json)) => serde_json::from_slice(json)
            .map(FromServer::Exit)
            .map_err(|err| format!("the server sent a malformed exit report: {err}")),
        _ => Err("the server sent a frame this client does not know".into()),
    }
}
