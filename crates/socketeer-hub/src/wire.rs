//! The ingest protocol both ways, as types: what a robot sends (JSON lines, parsed by
//! [`record::parse_line`](crate::record::parse_line)) and what the hub answers ([`Answer`]),
//! with the reasons a line is refused ([`Reason`]). The hub's ingest (TCP and HTTP) writes
//! answers with [`Answer::write`]; `socketeer publish` and [`Publisher`](crate::Publisher)
//! read them with [`Answer::parse`]. `docs/protocol.md` describes the same bytes.
//!
//! ```
//! use socketeer_hub::wire::Answer;
//!
//! let mut out = Vec::new();
//! Answer::Ack(7).write(&mut out);
//! assert_eq!(out, b"{\"ack\":7}\n");
//! assert_eq!(Answer::parse(b"{\"error\":\"storage: disk full\",\"line\":3,\"retry\":true}"),
//!            Ok(Answer::Retry { line: 3, why: "storage: disk full".into() }));
//! ```

use serde_json::{Value, json};
use std::io::Write as _;

pub use crate::record::MAX_LINE;

/// Why a line or record was refused: one label per kind, for `/metrics`
/// (`rejected_lines_total{reason=..}`) and logs. Decided where the refusal is made, never
/// from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Not valid JSON, or not one JSON object.
    Json,
    /// Not UTF-8.
    Utf8,
    /// A line, name, label or text over its length limit.
    TooLong,
    /// Too many values or detections in one record.
    TooMany,
    /// A key the protocol does not have.
    UnknownKey,
    /// A bad stream, field, device or session name.
    Name,
    /// A device named on a connection whose authentication fixed another.
    Device,
    /// A value of the wrong kind or out of range.
    Value,
    /// An HTTP request sent to the ingest port.
    HttpRequest,
    /// A sequence number reused within a session for a different record.
    SeqReused,
    /// The hub keeps its most devices.
    DevicesLimit,
    /// The device has its most streams.
    StreamsLimit,
    /// The device has its most fields.
    FieldsLimit,
    /// The store could not take it now (the sender resends).
    Storage,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Json => "json",
            Reason::Utf8 => "utf8",
            Reason::TooLong => "too_long",
            Reason::TooMany => "too_many",
            Reason::UnknownKey => "unknown_key",
            Reason::Name => "name",
            Reason::Device => "device",
            Reason::Value => "value",
            Reason::HttpRequest => "http_request",
            Reason::SeqReused => "seq_reused",
            Reason::DevicesLimit => "devices_limit",
            Reason::StreamsLimit => "streams_limit",
            Reason::FieldsLimit => "fields_limit",
            Reason::Storage => "storage",
        }
    }
}

/// A line or record refused for good (resending it would be refused again): its reason and
/// what the sender is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Refusal {
    /// The kind, for metrics.
    pub reason: Reason,
    /// What the sender is told.
    pub why: String,
}

impl Refusal {
    /// A refusal of `reason`, saying `why`.
    pub fn new(reason: Reason, why: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            why: why.into(),
        }
    }

    /// The same refusal with `context: ` before what it says.
    #[must_use]
    pub fn within(self, context: impl std::fmt::Display) -> Refusal {
        Refusal {
            reason: self.reason,
            why: format!("{context}: {}", self.why),
        }
    }
}

/// What a connection that starts like an HTTP request is told.
pub const NOT_HTTP: &str =
    "this is the hub's ingest port, not HTTP (the API and dashboard are on --http); closing";

/// One answer from the hub, a JSON object on a line of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `{"ack":N}`: the record numbered N is committed (or was before: a resend).
    Ack(u64),
    /// `{"error":"why","line":N}`: line N (counted from 1 on this connection or body) is
    /// refused for good; do not resend it.
    Refused {
        /// The line it answers.
        line: u64,
        /// What is wrong with it.
        why: String,
    },
    /// `{"error":"storage: ...","line":N,"retry":true}`: line N could not be stored now (the
    /// disk, the database); resend it, on this connection or a new one.
    Retry {
        /// The line it answers.
        line: u64,
        /// What went wrong.
        why: String,
    },
    /// `{"error":"why"}`: about everything after the last answer (an HTTP body cut short);
    /// those lines were not read.
    Ended {
        /// Why.
        why: String,
    },
    /// `{"time":{"t0":T0,"t1":T1,"t2":T2}}`: the hub's half of a time exchange — the
    /// device's `t0` back, with when the hub read the request (`t1`) and wrote this answer
    /// (`t2`), on its clock.
    Time {
        /// The device's send time, as it sent it.
        t0: f64,
        /// The hub read the request.
        t1: f64,
        /// The hub wrote the answer: stamped as it is written when `None`.
        t2: Option<f64>,
    },
}

/// An answer line that is not one of [`Answer`]'s forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an answer of the ingest protocol: {0}")]
pub struct NotAnAnswer(pub String);

impl Answer {
    /// Appends the answer and its line ending to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Answer::Ack(seq) => {
                // Written into `out` directly: an ack per record, no string of its own.
                let _ = write!(out, "{{\"ack\":{seq}}}");
            }
            Answer::Refused { line, why } => {
                let text = json!({ "error": why, "line": line }).to_string();
                out.extend_from_slice(text.as_bytes());
            }
            Answer::Retry { line, why } => {
                let text = json!({ "error": why, "line": line, "retry": true }).to_string();
                out.extend_from_slice(text.as_bytes());
            }
            Answer::Ended { why } => {
                out.extend_from_slice(json!({ "error": why }).to_string().as_bytes());
            }
            Answer::Time { t0, t1, t2 } => {
                let t2 = t2.unwrap_or_else(crate::store::now_secs);
                let text = format!("{{\"time\":{{\"t0\":{t0},\"t1\":{t1:.6},\"t2\":{t2:.6}}}}}");
                out.extend_from_slice(text.as_bytes());
            }
        }
        out.push(b'\n');
    }

    /// The answer as a line of text (with its ending).
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        self.write(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Reads one answer line (with or without its ending).
    ///
    /// # Errors
    /// The line is not JSON, or not one of the answers.
    pub fn parse(line: &[u8]) -> Result<Answer, NotAnAnswer> {
        // Nearly every answer is `{"ack":N}`: read without building a JSON value.
        if let Some(seq) = plain_ack(line) {
            return Ok(Answer::Ack(seq));
        }
        let shown = || String::from_utf8_lossy(line).chars().take(200).collect();
        let value: Value = serde_json::from_slice(line).map_err(|_| NotAnAnswer(shown()))?;
        if let Some(seq) = value.get("ack").and_then(Value::as_u64) {
            return Ok(Answer::Ack(seq));
        }
        if let Some(time) = value.get("time") {
            let get = |key: &str| time.get(key).and_then(Value::as_f64);
            return match (get("t0"), get("t1"), get("t2")) {
                (Some(t0), Some(t1), Some(t2)) => Ok(Answer::Time {
                    t0,
                    t1,
                    t2: Some(t2),
                }),
                _ => Err(NotAnAnswer(shown())),
            };
        }
        let Some(why) = value.get("error").and_then(Value::as_str) else {
            return Err(NotAnAnswer(shown()));
        };
        let why = why.to_owned();
        Ok(match value.get("line").and_then(Value::as_u64) {
            None => Answer::Ended { why },
            Some(line) if value.get("retry") == Some(&Value::Bool(true)) => {
                Answer::Retry { line, why }
            }
            Some(line) => Answer::Refused { line, why },
        })
    }
}

/// The number of an ack written as the hub writes it, `{"ack":N}` (with or without its line
/// ending); `None` for anything else, which is then read as JSON.
fn plain_ack(line: &[u8]) -> Option<u64> {
    let digits = line
        .trim_ascii_end()
        .strip_prefix(b"{\"ack\":")?
        .strip_suffix(b"}")?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether a line (with or without its ending) is an HTTP request line, `POST / HTTP/1.1`: a
/// web page has made a browser send to a port that is not HTTP, hoping the body's lines are
/// taken. A connection that starts so is closed before anything of it is taken.
pub fn http_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty() && method.iter().all(u8::is_ascii_uppercase) && version.starts_with(b"HTTP/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        for answer in [
            Answer::Ack(0),
            Answer::Ack(u64::MAX),
            Answer::Refused {
                line: 4,
                why: "not valid JSON: \"x\"\n".into(),
            },
            Answer::Retry {
                line: 1,
                why: "storage: disk I/O error".into(),
            },
            Answer::Ended {
                why: "the body may be at most 16 bytes".into(),
            },
            Answer::Time {
                t0: 1_800_000_000.25,
                t1: 1_800_003_600.5,
                t2: Some(1_800_003_600.500_25),
            },
        ] {
            let line = answer.to_line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Answer::parse(line.as_bytes()), Ok(answer));
        }
    }

    #[test]
    fn refusals_keep_their_wire_form() {
        let refused = Answer::Refused {
            line: 2,
            why: "bad".into(),
        };
        assert_eq!(refused.to_line(), "{\"error\":\"bad\",\"line\":2}\n");
        assert!(Answer::parse(b"{\"ok\":1}").is_err());
        assert!(Answer::parse(b"SSH-2.0-OpenSSH").is_err());
    }

    #[test]
    fn acks_read_the_same_written_plainly_or_not() {
        for (line, seq) in [
            (&b"{\"ack\":7}"[..], Some(7)),
            (b"{\"ack\":18446744073709551615}\r\n", Some(u64::MAX)),
            // Not as the hub writes them, still JSON acks.
            (b"{ \"ack\": 7 }\n", Some(7)),
            (b"{\"ack\":7,\"x\":1}", Some(7)),
            // Not acks.
            (b"{\"ack\":18446744073709551616}", None),
            (b"{\"ack\":+7}", None),
            (b"{\"ack\":-7}", None),
            (b"{\"ack\":}", None),
            (b"{\"ack\":7", None),
        ] {
            let read = match Answer::parse(line) {
                Ok(Answer::Ack(n)) => Some(n),
                _ => None,
            };
            assert_eq!(read, seq, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn http_request_lines() {
        assert!(http_request_line(b"POST / HTTP/1.1\r\n"));
        assert!(http_request_line(b"GET /x HTTP/1.0"));
        assert!(!http_request_line(b"{\"stream\":\"a\"}"));
        assert!(!http_request_line(b"post / HTTP/1.1"));
    }
}
