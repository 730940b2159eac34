//! `socketeer publish`: JSON lines to a hub, each numbered and kept until the hub has committed
//! it (the ingest protocol: `docs/protocol.md`).
//!
//! Lines are numbered (`"seq"`) within a session (random per run, or the spool's). Every line
//! stays in `unacked` — and, with `--spool DIR`, in an fsynced file — until its `{"ack":N}`.
//! When the link drops the client reconnects with exponential backoff and jitter and sends
//! every unacknowledged line again; the hub stores each (device, session, seq) once, so a
//! resend never duplicates. The program exits 0 once the input has ended and every line is
//! acknowledged; lines the hub refuses are reported and make the exit status 1.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::Value;
use socketeer::{ConnectionReader, ConnectionWriter, Endpoint, client};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, Semaphore};

use crate::cli::PublishArgs;
use crate::failure::{EXIT_INTERRUPTED, UsageError, parse_endpoint};
use crate::guard::{client_options, default_device};
use socketeer_hub::record::MAX_LINE;
use socketeer_hub::wire::Answer;

/// Backoff between connection attempts: from the first to the most, doubling, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MOST: Duration = Duration::from_secs(10);

/// A line waiting for its acknowledgement.
struct Entry {
    /// Its line number in the input (for messages).
    input_line: u64,
    /// The line as sent, `\n` included.
    bytes: Bytes,
    /// When it was first sent (for `--stats`).
    sent: Option<std::time::Instant>,
}

/// Most acknowledgement latencies kept for `--stats`.
const MAX_SAMPLES: usize = 10_000_000;

#[derive(Default)]
struct State {
    /// Send-to-acknowledgement times, microseconds.
    latencies_us: Vec<u32>,
    unacked: BTreeMap<u64, Entry>,
    input_done: bool,
    rejected: u64,
    acked: u64,
    resent: u64,
}

struct Shared {
    state: Mutex<State>,
    /// New lines to send, or everything acknowledged.
    changed: Notify,
    /// The input has ended (the receiver may be waiting for answers that will not come).
    input_ended: Notify,
    /// Room for more unacknowledged lines.
    room: Semaphore,
    spool: Option<Mutex<Spool>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finished(&self) -> bool {
        let state = self.lock();
        state.input_done && state.unacked.is_empty()
    }
}

/// Runs `socketeer publish`.
pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<i32> {
    let endpoint = parse_endpoint(&args.endpoint)?;
    if !endpoint.is_stream() {
        return Err(UsageError(format!("{endpoint}: publish needs a stream endpoint")).into());
    }
    let options = client_options(&args.guard, args.timeout)?;
    let input = Input::open(args.file.as_deref())?;
    let (spool, recovered) = match &args.spool {
        Some(dir) => {
            let (spool, recovered) = Spool::open(dir, input.file, &input.name)?;
            (Some(spool), recovered)
        }
        None => (None, Recovered::fresh()?),
    };
    let session = recovered.session.clone();
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Notify::new(),
        input_ended: Notify::new(),
        room: Semaphore::new(args.max_unacked as usize),
        spool: spool.map(Mutex::new),
    });
    {
        let mut state = shared.lock();
        for (seq, entry) in recovered.unacked {
            if let Ok(permit) = shared.room.try_acquire() {
                permit.forget();
            }
            state.unacked.insert(seq, entry);
        }
    }
    if !shared.lock().unacked.is_empty() {
        errln!(
            "socketeer: publish: {} unacknowledged lines from the spool will be sent first",
            shared.lock().unacked.len()
        );
    }
    if recovered.resume.offset > 0 {
        errln!(
            "socketeer: publish: {} resumes after line {} (byte {}), where the last run stopped",
            input.name,
            recovered.resume.lines,
            recovered.resume.offset
        );
    }
    let reader = tokio::spawn(read_input(
        input,
        recovered.next_seq,
        recovered.resume,
        Arc::clone(&shared),
    ));
    // The device line is for hubs without authentication; with a key the hub knows it.
    let hello = {
        let mut hello = String::new();
        if args.guard.key_file.is_none() {
            hello.push_str(&serde_json::json!({ "device": default_device() }).to_string());
            hello.push('\n');
        }
        hello.push_str(&serde_json::json!({ "session": session }).to_string());
        hello.push('\n');
        Bytes::from(hello)
    };
    let started = std::time::Instant::now();
    let deliver = deliver(endpoint, options, hello, Arc::clone(&shared));
    tokio::select! {
        result = deliver => result?,
        _ = tokio::signal::ctrl_c() => {
            let left = shared.lock().unacked.len();
            let kept = if shared.spool.is_some() { "kept in the spool" } else { "lost" };
            errln!("socketeer: publish: interrupted with {left} lines unacknowledged ({kept})");
            return Ok(EXIT_INTERRUPTED);
        }
    }
    reader.await.context("publish: the input reader")??;
    let mut state = shared.lock();
    if args.stats {
        let seconds = started.elapsed().as_secs_f64();
        state.latencies_us.sort_unstable();
        let percentile = |p: f64| -> f64 {
            let samples = &state.latencies_us;
            if samples.is_empty() {
                return 0.0;
            }
            let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
            f64::from(samples[at]) / 1000.0
        };
        let report = serde_json::json!({
            "acknowledged": state.acked,
            "refused": state.rejected,
            "resent": state.resent,
            "seconds": seconds,
            "lines_per_sec": state.acked as f64 / seconds.max(1e-9),
            "ack_ms": { "p50": percentile(0.5), "p99": percentile(0.99), "max": percentile(1.0) },
        });
        outln!("{report}")?;
    }
    if std::io::stderr().is_terminal() {
        errln!(
            "socketeer: publish: {} lines acknowledged ({} resent after reconnecting), {} refused",
            state.acked,
            state.resent,
            state.rejected
        );
    }
    Ok(if state.rejected > 0 { 1 } else { 0 })
}

/// Reads the input from `start` (a regular file an earlier run took lines of is picked up
/// there; anything else is read from its beginning), numbers each line, keeps it (spool
/// first), and wakes the sender.
async fn read_input(
    input: Input,
    mut next_seq: u64,
    start: Position,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncSeekExt;
    let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match input.source {
        Some(file) => {
            let mut file = tokio::fs::File::from_std(file);
            if start.offset > 0 {
                file.seek(std::io::SeekFrom::Start(start.offset))
                    .await
                    .with_context(|| format!("publish: cannot seek in {}", input.name))?;
            }
            Box::new(file)
        }
        None => Box::new(tokio::io::stdin()),
    };
    let mut reader = tokio::io::BufReader::new(reader);
    let mut at = start;
    let mut raw = Vec::new();
    loop {
        let n = read_line_bounded(&mut reader, &mut raw)
            .await
            .context("publish: reading the input")?;
        if n == 0 {
            break;
        }
        at.offset += n as u64;
        at.lines += 1;
        let input_line = at.lines;
        let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let numbered = match number(line, next_seq) {
            Ok(Some(line)) => line,
            Ok(None) => {
                passed(&shared, at);
                continue;
            }
            Err(why) => {
                errln!("socketeer: publish: input line {input_line}: {why}; not sent");
                shared.lock().rejected += 1;
                passed(&shared, at);
                continue;
            }
        };
        let permit = shared
            .room
            .acquire()
            .await
            .context("publish: the unacknowledged-line limit")?;
        permit.forget();
        // Spool and memory change together (under the spool's lock), so emptying the spool
        // when nothing is unacknowledged can never drop a line just taken.
        let mut spool = shared
            .spool
            .as_ref()
            .map(|spool| spool.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(spool) = spool.as_mut() {
            spool.append(&numbered, next_seq, at)?;
        }
        let entry = Entry {
            input_line,
            bytes: numbered,
            sent: None,
        };
        shared.lock().unacked.insert(next_seq, entry);
        drop(spool); // only now: the line is in memory too
        next_seq += 1;
        shared.changed.notify_one();
    }
    if let Some(spool) = shared.spool.as_ref() {
        // Lines passed over at the end are recorded too, if nothing waits to empty the logs.
        let mut spool = spool.lock().unwrap_or_else(|e| e.into_inner());
        if shared.lock().unacked.is_empty() {
            spool.settled()?;
        }
    }
    shared.lock().input_done = true;
    shared.changed.notify_one();
    shared.input_ended.notify_waiters();
    Ok(())
}

/// Reads one line (to `\n` or the end) into `raw`, keeping at most a little over
/// [`MAX_LINE`] of it (a longer line is refused by its length; memory stays bounded however
/// long it is). Returns the bytes taken from the input, 0 at its end.
async fn read_line_bounded(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    raw: &mut Vec<u8>,
) -> std::io::Result<usize> {
    const KEEP: usize = MAX_LINE + 2;
    raw.clear();
    let mut taken = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(taken);
        }
        let (piece, ended) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..=at], true),
            None => (buf, false),
        };
        let room = KEEP.saturating_sub(raw.len());
        raw.extend_from_slice(&piece[..piece.len().min(room)]);
        let len = piece.len();
        reader.consume(len);
        taken += len;
        if ended {
            return Ok(taken);
        }
    }
}

/// Records input taken that has nothing to send, so a resumed run does not read it again.
fn passed(shared: &Shared, at: Position) {
    if let Some(spool) = shared.spool.as_ref() {
        spool.lock().unwrap_or_else(|e| e.into_inner()).passed(at);
    }
}

/// Adds `"seq"` to one input line; `None` for a blank line.
fn number(raw: &[u8], seq: u64) -> Result<Option<Bytes>, String> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if raw.len() > MAX_LINE {
        return Err(format!("longer than {MAX_LINE} bytes"));
    }
    let mut object: serde_json::Map<String, Value> =
        serde_json::from_slice(raw).map_err(|e| format!("not a JSON object: {e}"))?;
    for key in ["seq", "session", "device"] {
        if object.contains_key(key) {
            return Err(format!("publish sets {key:?} itself; leave it out"));
        }
    }
    object.insert("seq".into(), seq.into());
    let mut line = serde_json::to_vec(&object).map_err(|e| e.to_string())?;
    line.push(b'\n');
    Ok(Some(Bytes::from(line)))
}

/// Connects, sends, reads acknowledgements; reconnects until everything is acknowledged.
async fn deliver(
    endpoint: Endpoint,
    options: socketeer::ClientOptions,
    hello: Bytes,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut backoff = BACKOFF_FIRST;
    let mut first = true;
    while !shared.finished() {
        let conn = match client::connect_with(&endpoint, &options).await {
            Ok(conn) => conn,
            Err(err) => {
                if err.kind() == socketeer::ErrorKind::Auth {
                    anyhow::bail!("publish: {endpoint}: {err}");
                }
                let wait = jitter(backoff);
                errln!(
                    "socketeer: publish: {endpoint}: {}; {} lines unacknowledged; retrying in {} ms",
                    crate::failure::describe_error(&err),
                    shared.lock().unacked.len(),
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MOST);
                continue;
            }
        };
        let (reader, writer) = conn.into_split();
        let sent = Arc::new(Mutex::new(VecDeque::new()));
        let resend = !first;
        first = false;
        let sending = tokio::spawn(send(
            writer,
            hello.clone(),
            Arc::clone(&shared),
            Arc::clone(&sent),
            resend,
        ));
        let outcome = receive(reader, &shared, &sent).await;
        sending.abort();
        match outcome {
            Ok(()) if shared.finished() => return Ok(()),
            Ok(()) => errln!("socketeer: publish: the hub closed the connection; reconnecting"),
            Err(err) => errln!(
                "socketeer: publish: link lost ({err}); {} lines unacknowledged; reconnecting",
                shared.lock().unacked.len()
            ),
        }
        // A connection that got somewhere resets the backoff; a flapping one keeps growing it.
        backoff = BACKOFF_FIRST;
        tokio::time::sleep(jitter(backoff)).await;
    }
    Ok(())
}

/// Between half and all of `base`, so many robots do not reconnect in step.
fn jitter(base: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    base / 2 + base.mul_f64(f64::from(random) / f64::from(u32::MAX) / 2.0)
}

/// Sends the hello lines, every unacknowledged line in order, then new lines as they come.
async fn send(
    mut writer: ConnectionWriter,
    hello: Bytes,
    shared: Arc<Shared>,
    sent: Arc<Mutex<VecDeque<(u64, u64)>>>,
    resend: bool,
) -> anyhow::Result<()> {
    let hello_lines = hello.iter().filter(|&&b| b == b'\n').count() as u64;
    writer.write_all(&hello).await?;
    let mut line_no = hello_lines;
    let mut next = 0u64; // the lowest seq not yet sent on this connection
    loop {
        let notified = shared.changed.notified();
        let batch: Vec<(u64, Bytes)> = {
            let mut state = shared.lock();
            let now = std::time::Instant::now();
            let batch: Vec<(u64, Bytes)> = state
                .unacked
                .range_mut(next..)
                .take(1024)
                .map(|(&seq, entry)| {
                    entry.sent.get_or_insert(now);
                    (seq, entry.bytes.clone())
                })
                .collect();
            if resend && next == 0 {
                state.resent += state.unacked.len() as u64;
            }
            batch
        };
        if batch.is_empty() {
            writer.flush().await?;
            if shared.finished() {
                return Ok(());
            }
            notified.await;
            continue;
        }
        for (seq, bytes) in batch {
            line_no += 1;
            sent.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back((line_no, seq));
            writer.write_all(&bytes).await?;
            next = seq + 1;
        }
    }
}

/// Reads the hub's answers until everything is acknowledged or the connection ends.
async fn receive(
    mut reader: ConnectionReader,
    shared: &Shared,
    sent: &Mutex<VecDeque<(u64, u64)>>,
) -> anyhow::Result<()> {
    loop {
        // If the last line was acknowledged before the input ended, no answer is coming:
        // the end of the input is what finishes.
        let input_ended = shared.input_ended.notified();
        tokio::pin!(input_ended);
        input_ended.as_mut().enable();
        if shared.finished() {
            return Ok(());
        }
        let line = tokio::select! {
            line = reader.read_line() => line?,
            () = &mut input_ended => continue,
        };
        let Some(line) = line else {
            return Ok(());
        };
        let answer = match Answer::parse(&line) {
            Ok(answer) => answer,
            Err(err) => {
                if let Some(mismatch) = socketeer::client::recognize(&line) {
                    return Err(mismatch.into_error(false).into());
                }
                anyhow::bail!("the hub sent {:?}: {err}", String::from_utf8_lossy(&line));
            }
        };
        match answer {
            Answer::Ack(seq) => {
                let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                while sent.front().is_some_and(|&(_, s)| s <= seq) {
                    sent.pop_front();
                }
                drop(sent);
                acknowledge(shared, seq, Settled::Stored)?;
            }
            Answer::Refused {
                line: line_no,
                ref why,
            }
            | Answer::Retry {
                line: line_no,
                ref why,
            } => {
                let retry = matches!(answer, Answer::Retry { .. });
                let seq = {
                    let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                    while sent.front().is_some_and(|&(l, _)| l < line_no) {
                        sent.pop_front();
                    }
                    sent.front()
                        .filter(|&&(l, _)| l == line_no)
                        .map(|&(_, s)| s)
                };
                let Some(seq) = seq else {
                    anyhow::bail!("the hub refused a line we did not send ({line_no}): {why}");
                };
                if retry {
                    // The hub could not commit: not the line's fault. Reconnect and send it again.
                    anyhow::bail!("the hub could not store line {seq}: {why}");
                }
                let input_line = shared.lock().unacked.get(&seq).map_or(0, |e| e.input_line);
                errln!("socketeer: publish: input line {input_line}: refused by the hub: {why}");
                acknowledge(shared, seq, Settled::Refused)?; // it will never be stored
            }
            Answer::Ended { why } => {
                anyhow::bail!(
                    "the hub sent an answer publish does not know: {{\"error\":{why:?}}}"
                );
            }
        }
    }
}

/// How the hub settled a line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    Stored,
    Refused,
}

/// Forgets a settled line, counts it as acknowledged or refused, and makes room for another.
fn acknowledge(shared: &Shared, seq: u64, how: Settled) -> anyhow::Result<()> {
    let mut spool = shared
        .spool
        .as_ref()
        .map(|spool| spool.lock().unwrap_or_else(|e| e.into_inner()));
    let (removed, empty) = {
        let mut state = shared.lock();
        let removed = state.unacked.remove(&seq);
        if let Some(sent) = removed.as_ref().and_then(|e| e.sent) {
            if how == Settled::Stored && state.latencies_us.len() < MAX_SAMPLES {
                let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                state.latencies_us.push(micros);
            }
        }
        let removed = removed.is_some();
        match how {
            _ if !removed => {}
            Settled::Stored => state.acked += 1,
            Settled::Refused => state.rejected += 1,
        }
        (removed, state.unacked.is_empty())
    };
    if removed {
        if let Some(spool) = spool.as_mut() {
            spool.acked(seq, empty)?;
        }
        drop(spool);
        shared.room.add_permits(1);
        shared.changed.notify_one();
    }
    Ok(())
}

/// The input, opened: a regular file (from `--file`, or redirected to stdin) can be picked up
/// by a later run where this one stopped; a pipe, terminal or socket cannot, and is never
/// skipped into.
struct Input {
    /// The file to read; `None` for a stdin that is not a file.
    source: Option<std::fs::File>,
    /// Set for a regular file: which file it is and how long it is now.
    file: Option<(InputId, u64)>,
    /// For messages.
    name: String,
}

/// A regular file, by device and inode (a path can be reused; an inode in use cannot).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
struct InputId {
    dev: u64,
    ino: u64,
}

impl Input {
    fn open(path: Option<&Path>) -> anyhow::Result<Input> {
        use std::os::unix::fs::MetadataExt;
        let (source, name) = match path {
            Some(path) => (
                std::fs::File::open(path)
                    .with_context(|| format!("publish: cannot read {}", path.display()))?,
                path.display().to_string(),
            ),
            None => {
                use std::os::fd::AsFd;
                // Stdin redirected from a file (`< readings.jsonl`) is that file; read through
                // a descriptor of our own so it can seek.
                let file = std::io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .map(std::fs::File::from)
                    .ok()
                    .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
                    // Offsets count from its start; one already partly read is read on as
                    // a stream (`(head -1; socketeer publish …) < file`).
                    .filter(|mut f| std::io::Seek::stream_position(&mut f).is_ok_and(|p| p == 0));
                let Some(file) = file else {
                    return Ok(Input {
                        source: None,
                        file: None,
                        name: "stdin".to_string(),
                    });
                };
                (file, "stdin".to_string())
            }
        };
        let meta = source
            .metadata()
            .with_context(|| format!("publish: cannot read {name}"))?;
        let file = meta.is_file().then(|| {
            (
                InputId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                },
                meta.len(),
            )
        });
        Ok(Input {
            source: Some(source),
            file,
            name,
        })
    }
}

/// Where reading starts: a byte offset into a resumable input and the lines before it.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Position {
    offset: u64,
    lines: u64,
}

/// What a run starts from.
struct Recovered {
    session: String,
    next_seq: u64,
    /// Where an earlier run left this same input (zero for a new input or a pipe).
    resume: Position,
    unacked: Vec<(u64, Entry)>,
}

impl Recovered {
    fn fresh() -> anyhow::Result<Recovered> {
        Ok(Recovered {
            session: new_session()?,
            next_seq: 1,
            resume: Position::default(),
            unacked: Vec::new(),
        })
    }
}

fn new_session() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("publish: no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The on-disk spool: `lines` (every numbered line, written before it is sent), `acked` (the
/// numbers acknowledged; lost ones only cost a resend the hub ignores) and `state.json`
/// (session, next number, and — for a regular-file input — which file and how far into it).
/// Both logs are emptied whenever nothing is unacknowledged.
struct Spool {
    dir: PathBuf,
    lines: std::fs::File,
    acked: std::fs::File,
    /// Whether the input can be resumed (records then carry their offset).
    resumable: bool,
    state: SpoolState,
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct SpoolState {
    session: String,
    next_seq: u64,
    /// The regular file the offsets below are into; `None` for a pipe.
    #[serde(default)]
    input: Option<InputId>,
    /// Bytes of it taken (sent, or refused locally).
    #[serde(default)]
    offset: u64,
    /// Lines of it taken.
    #[serde(default)]
    lines: u64,
}

/// One record of the `lines` log: `INPUT_LINE OFFSET JSON`, OFFSET being the byte offset just
/// past the line in a resumable input, or `-` (a pipe's line, or one from an earlier input).
struct Record<'a> {
    input_line: u64,
    end: Option<u64>,
    json: &'a [u8],
}

impl<'a> Record<'a> {
    fn parse(raw: &'a [u8]) -> Option<Record<'a>> {
        let number = |t: &[u8]| std::str::from_utf8(t).ok()?.parse::<u64>().ok();
        let space = raw.iter().position(|&b| b == b' ')?;
        let input_line = number(&raw[..space])?;
        let rest = &raw[space + 1..];
        if rest.first() == Some(&b'{') {
            // The form before offsets, `INPUT_LINE JSON`: it says nothing of where the input
            // stood, so it resumes nothing.
            return Some(Record {
                input_line,
                end: None,
                json: rest,
            });
        }
        let space = rest.iter().position(|&b| b == b' ')?;
        let end = match &rest[..space] {
            b"-" => None,
            digits => Some(number(digits)?),
        };
        Some(Record {
            input_line,
            end,
            json: &rest[space + 1..],
        })
    }
}

impl Spool {
    fn open(
        dir: &Path,
        input: Option<(InputId, u64)>,
        name: &str,
    ) -> anyhow::Result<(Spool, Recovered)> {
        let what = || format!("--spool {}", dir.display());
        std::fs::create_dir_all(dir).with_context(what)?;
        let state_path = dir.join("state.json");
        let mut state = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice::<SpoolState>(&bytes)
                .with_context(|| format!("{}: state.json is damaged", what()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => SpoolState {
                session: new_session()?,
                next_seq: 1,
                input: None,
                offset: 0,
                lines: 0,
            },
            Err(err) => return Err(err).with_context(what),
        };
        let id = input.map(|(id, _)| id);
        let same_input = id.is_some() && state.input == id;
        let mut acked = std::collections::HashSet::new();
        if let Ok(text) = std::fs::read_to_string(dir.join("acked")) {
            acked.extend(text.lines().filter_map(|l| l.parse::<u64>().ok()));
        }
        let mut unacked = Vec::new();
        let mut position = Position {
            offset: state.offset,
            lines: state.lines,
        };
        let log = std::fs::read(dir.join("lines")).unwrap_or_default();
        for raw in log.split(|&b| b == b'\n') {
            // A torn last record has no seq and is dropped: it was never sent.
            let Some(record) = Record::parse(raw) else {
                continue;
            };
            let Some(seq) = serde_json::from_slice::<Value>(record.json)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
            else {
                continue;
            };
            state.next_seq = state.next_seq.max(seq + 1);
            if let (true, Some(end)) = (same_input, record.end) {
                if end > position.offset {
                    position = Position {
                        offset: end,
                        lines: record.input_line,
                    };
                }
            }
            if !acked.contains(&seq) {
                let mut line = record.json.to_vec();
                line.push(b'\n');
                unacked.push((
                    seq,
                    Entry {
                        input_line: record.input_line,
                        bytes: Bytes::from(line),
                        sent: None,
                    },
                ));
            }
        }
        let mut resume = Position::default();
        match input {
            Some((_, len)) if same_input && len < position.offset => errln!(
                "socketeer: publish: {name} is shorter than where the last run stopped \
                 (byte {}); it was replaced or truncated, so it is read from the start",
                position.offset
            ),
            _ if same_input => resume = position,
            _ => {}
        }
        state.input = id;
        state.offset = resume.offset;
        state.lines = resume.lines;
        let open = |name: &str, truncate: bool| {
            let mut options = std::fs::OpenOptions::new();
            options.create(true);
            if truncate {
                options.write(true).truncate(true);
            } else {
                options.append(true);
            }
            options.open(dir.join(name)).with_context(what)
        };
        // Records that belong to another input (or an earlier pass over this one) must not
        // say where this input stands: keep only the unacknowledged ones, without offsets.
        let rewrite = !log.is_empty() && resume == Position::default();
        if rewrite {
            let mut records = Vec::new();
            for (_, entry) in &unacked {
                records.extend_from_slice(format!("{} - ", entry.input_line).as_bytes());
                records.extend_from_slice(&entry.bytes);
            }
            let tmp = dir.join("lines.tmp");
            std::fs::write(&tmp, &records).with_context(what)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(what)?;
            std::fs::rename(&tmp, dir.join("lines")).with_context(what)?;
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            lines: open("lines", false)?,
            acked: open("acked", rewrite)?,
            resumable: id.is_some(),
            state: state.clone(),
        };
        spool.save_state()?;
        Ok((
            spool,
            Recovered {
                session: state.session,
                next_seq: state.next_seq,
                resume,
                unacked,
            },
        ))
    }

    /// Keeps a numbered line on disk before it is sent: one write, which survives publish
    /// being killed (the kernel has it); the state file is only rewritten when the logs are
    /// emptied, since the log itself says how far the numbering and the input got.
    fn append(&mut self, line: &[u8], seq: u64, at: Position) -> anyhow::Result<()> {
        let mut record = if self.resumable {
            format!("{} {} ", at.lines, at.offset)
        } else {
            format!("{} - ", at.lines)
        }
        .into_bytes();
        record.extend_from_slice(line);
        self.lines
            .write_all(&record)
            .context("publish: writing the spool")?;
        self.state.next_seq = seq + 1;
        self.passed(at);
        Ok(())
    }

    /// Notes input taken without a record (blank lines, lines refused before sending).
    fn passed(&mut self, at: Position) {
        if self.resumable {
            self.state.offset = at.offset;
            self.state.lines = at.lines;
        }
    }

    fn acked(&mut self, seq: u64, nothing_left: bool) -> anyhow::Result<()> {
        if nothing_left {
            return self.settled();
        }
        writeln!(self.acked, "{seq}").context("publish: writing the spool")?;
        Ok(())
    }

    /// Nothing is unacknowledged: where numbering and input stand, first; then the logs go.
    fn settled(&mut self) -> anyhow::Result<()> {
        self.save_state()?;
        self.lines.set_len(0)?;
        self.acked.set_len(0)?;
        Ok(())
    }

    fn save_state(&self) -> anyhow::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.state)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("state.json"))?;
        Ok(())
    }
}
