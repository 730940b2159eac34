//! Ingest over a stream connection: JSON lines in, acknowledgements and errors out.
//!
//! Lines are read while earlier ones are still being committed (up to [`MAX_IN_FLIGHT`] per
//! connection), and answered in the order they came: `{"ack":N}` for a record with `"seq":N`
//! once it is committed (or found committed before), `{"error":...,"line":N}` for a line that
//! is refused. A bad line never ends the connection; a line over the size limit does (the
//! stream cannot be resynchronised without reading it), with a logged reason.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use socketeer::{Connection, Handler, Result};

use crate::record::{Line, parse_raw_line};
use crate::store::{CONFLICT, Item, Pending, Store, Stored, now_secs};

/// Most lines of one connection waiting for their commit.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// The device name of a connection that neither authenticated one nor sent `{"device":..}`.
pub(crate) const UNNAMED: &str = "unnamed";

/// Counters for `/metrics` and the logs.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Records committed.
    pub(crate) records: AtomicU64,
    /// Acknowledgements sent.
    pub(crate) acks: AtomicU64,
    /// Resent records found committed before.
    pub(crate) duplicates: AtomicU64,
    /// Lines refused.
    pub(crate) rejected: AtomicU64,
    /// Influx lines taken (stored without acknowledgement).
    pub(crate) influx_lines: AtomicU64,
    /// Influx lines of datagrams dropped because the writer's queue had no room.
    pub(crate) influx_dropped: AtomicU64,
    /// Connections that failed authentication.
    pub(crate) auth_failures: Arc<AtomicU64>,
    /// Live feed viewers now.
    pub(crate) viewers: AtomicU64,
    /// Live feed viewers dropped for falling behind.
    pub(crate) viewers_dropped: AtomicU64,
    /// Refused lines by reason.
    reasons: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counts a refused line under a short reason taken from the message.
    pub(crate) fn reject(&self, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let reason = reason_of(why);
        *self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Refused lines by reason, for `/metrics`.
    pub(crate) fn rejected_by_reason(&self) -> Vec<(&'static str, u64)> {
        let reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        reasons.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// The metric label for a refusal message.
fn reason_of(why: &str) -> &'static str {
    const REASONS: &[(&str, &str)] = &[
        ("--max-devices", "devices_limit"),
        ("--max-streams", "streams_limit"),
        ("--max-fields", "fields_limit"),
        ("not valid JSON", "json"),
        ("not UTF-8", "utf8"),
        ("longer than", "too_long"),
        ("more than", "too_many"),
        ("unknown key", "unknown_key"),
        ("name", "name"),
        ("authenticated as", "device"),
        ("storage", "storage"),
        ("not HTTP", "http_request"),
        (
            "already stored in this session for a different record",
            "seq_reused",
        ),
    ];
    REASONS
        .iter()
        .find(|(needle, _)| why.contains(needle))
        .map_or("value", |(_, reason)| reason)
}

/// Which devices have ingest connections open, and how many.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    open: Mutex<HashMap<String, u32>>,
}

/// Marks a device connected until dropped.
pub(crate) struct Here {
    presence: Arc<Presence>,
    device: String,
}

impl Presence {
    pub(crate) fn enter(self: &Arc<Self>, device: &str) -> Here {
        *self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(device.to_owned())
            .or_default() += 1;
        Here {
            presence: Arc::clone(self),
            device: device.to_owned(),
        }
    }

    /// Connections per connected device.
    pub(crate) fn snapshot(&self) -> HashMap<String, u32> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Here {
    fn drop(&mut self) {
        let mut open = self.presence.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.device) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.device);
            }
        }
    }
}

/// What the ingest handler shares between connections.
pub(crate) struct Ingest {
    pub(crate) store: Store,
    pub(crate) stats: Arc<Stats>,
    pub(crate) presence: Arc<Presence>,
}

/// The per-connection handler.
#[derive(Clone)]
pub struct IngestHandler(pub(crate) Arc<Ingest>);

enum Answer {
    /// Ready to send.
    Now(Vec<u8>),
    /// Waiting for the writer: the lines of one job, each with its seq.
    Later {
        pending: Pending,
        lines: Vec<(Option<u64>, u64)>,
    },
}

/// Most records of one connection in one job.
const BATCH: usize = 256;

/// Records read together, submitted as one job.
#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    /// (seq, line number) of each item.
    lines: Vec<(Option<u64>, u64)>,
}

impl Batch {
    /// Hands the records to the writer (if any) in the device's turn and queues their answer.
    async fn submit(&mut self, ingest: &Ingest, device: &Arc<str>, answers: &mut VecDeque<Answer>) {
        if self.items.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.items);
        let lines = std::mem::take(&mut self.lines);
        let pending = ingest.store.submit(device, items).await;
        answers.push_back(Answer::Later { pending, lines });
    }
}

fn error_line(why: &str, line: u64) -> Vec<u8> {
    let mut out = serde_json::json!({ "error": why, "line": line }).to_string();
    out.push('\n');
    out.into_bytes()
}

impl Handler for IngestHandler {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let ingest = &self.0;
        let authenticated = conn.device().map(str::to_owned);
        let mut device: Arc<str> = authenticated.as_deref().unwrap_or(UNNAMED).into();
        let mut session: Arc<str> = "".into();
        let mut line_no = 0u64;
        let mut answers: VecDeque<Answer> = VecDeque::new();
        let mut eof = false;
        // An authenticated device is connected from the start; others once they send.
        let mut here = authenticated
            .as_deref()
            .map(|device| ingest.presence.enter(device));
        loop {
            while matches!(answers.front(), Some(Answer::Now(_))) {
                if let Some(Answer::Now(bytes)) = answers.pop_front() {
                    conn.write_all(&bytes).await?;
                }
            }
            if answers.is_empty() {
                conn.flush().await?;
                if eof {
                    return Ok(());
                }
            }
            let waiting = matches!(answers.front(), Some(Answer::Later { .. }));
            let can_read = !eof && answers.len() < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                outcome = async {
                    match answers.front_mut() {
                        Some(Answer::Later { pending, .. }) => pending.await,
                        _ => std::future::pending().await,
                    }
                }, if waiting => {
                    let Some(Answer::Later { lines, .. }) = answers.pop_front() else {
                        continue;
                    };
                    let mut out = Vec::new();
                    for ((seq, line), outcome) in lines.iter().zip(&outcome) {
                        match outcome {
                            Ok(Stored::New) => {
                                ingest.stats.records.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Stored::Duplicate) => {
                                ingest.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Stored::Conflict) => {
                                // Not stored, and not acknowledged: a different record under a
                                // number already used.
                                ingest.stats.reject(CONFLICT);
                                out.extend_from_slice(&error_line(CONFLICT, *line));
                                continue;
                            }
                            Ok(Stored::Refused(limit)) => {
                                let why = ingest.store.refusal(*limit);
                                ingest.stats.reject(&why);
                                out.extend_from_slice(&error_line(&why, *line));
                                continue;
                            }
                            Err(err) => {
                                out.extend_from_slice(&error_line(&err.to_string(), *line));
                                continue;
                            }
                        }
                        if let Some(seq) = seq {
                            out.extend_from_slice(format!("{{\"ack\":{seq}}}\n").as_bytes());
                            ingest.stats.acks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    conn.write_all(&out).await?;
                    // More answers may be ready: flush only when nothing else is.
                    if !matches!(answers.front(), Some(Answer::Now(_))) && answers.is_empty() {
                        conn.flush().await?;
                    }
                }
                read = conn.read_line(), if can_read => {
                    let Some(mut raw) = read? else {
                        eof = true;
                        continue;
                    };
                    if line_no == 0 && crate::record::http_request_line(&raw) {
                        ingest.stats.reject(crate::record::NOT_HTTP);
                        tracing::debug!(peer = %conn.peer_addr(), "ingest: an HTTP request; closed");
                        conn.write_all(&error_line(crate::record::NOT_HTTP, 1)).await?;
                        conn.flush().await?;
                        return Ok(());
                    }
                    // Every complete line already received goes into one job for the writer
                    // (up to BATCH): one queue operation and one wake-up for all of them.
                    let mut batch = Batch::default();
                    loop {
                        line_no += 1;
                        let parsed = parse_raw_line(&raw);
                        let mut refusal = None;
                        match parsed {
                            None => {}
                            Some(Err(why)) => refusal = Some(why),
                            Some(Ok(Line::Session(name))) => session = name.into(),
                            Some(Ok(Line::Device(name))) => match &authenticated {
                                Some(fixed) => {
                                    refusal = Some(format!(
                                        "this connection authenticated as {fixed:?}; its device cannot change"
                                    ));
                                }
                                None => {
                                    device = name.into();
                                    here = None;
                                }
                            },
                            Some(Ok(Line::Record(record))) => {
                                if here.is_none() {
                                    here = Some(ingest.presence.enter(&device));
                                }
                                batch.lines.push((record.seq, line_no));
                                batch
                                    .items
                                    .push(Item::new(&device, &session, record, now_secs()));
                            }
                        }
                        if let Some(why) = refusal {
                            // Answers keep line order: what came before is queued first.
                            batch.submit(ingest, &device, &mut answers).await;
                            ingest.stats.reject(&why);
                            answers.push_back(Answer::Now(error_line(&why, line_no)));
                        }
                        let more = batch.items.len() < BATCH
                            && answers.len() < MAX_IN_FLIGHT
                            && conn.buffered().contains(&b'\n');
                        if !more {
                            break;
                        }
                        match conn.read_line().await? {
                            Some(next) => raw = next,
                            None => {
                                eof = true;
                                break;
                            }
                        }
                    }
                    batch.submit(ingest, &device, &mut answers).await;
                }
            }
        }
    }
}
