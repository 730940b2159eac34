//! `socketeer publish`: JSON lines to a hub, each numbered and kept until the hub has committed
//! it (the ingest protocol: `docs/protocol.md`).
//!
//! Delivery is the hub crate's [`Publisher`]: each line numbered (`"seq"`) within a session
//! (random per run, or the spool's), kept until its `{"ack":N}`, resent after a reconnect; the
//! hub stores each (device, session, seq) once, so a resend never duplicates. This file reads
//! the input (resuming a file where an earlier run stopped), keeps the spool (`--spool DIR`,
//! the publisher's journal: a line is on disk before it is sent), and reports. The program
//! exits 0 once the input has ended and every line is acknowledged; lines the hub refuses are
//! reported and make the exit status 1.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use serde_json::Value;
use socketeer_hub::publisher::{Event, Journal, PublishError, Publisher, PublisherConfig};
use tokio::io::AsyncBufReadExt;

use crate::cli::PublishArgs;
use crate::failure::{EXIT_INTERRUPTED, UsageError, hub_endpoints};
use crate::guard::{client_options, default_device};
use socketeer_hub::record::{ImageFormat, MAX_LINE};

/// Runs `socketeer publish`.
pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<i32> {
    let mut endpoints = hub_endpoints("publish", args.endpoint.as_deref(), &args.hubs)?;
    let endpoint = endpoints.remove(0);
    let options = client_options(&args.guard, args.timeout)?;
    let input = Input::open(args.file.as_deref())?;
    let (spool, recovered) = match &args.spool {
        Some(dir) => {
            let (spool, recovered) = Spool::open(dir, input.file, &input.name)?;
            (Some(spool), recovered)
        }
        None => (None, Recovered::fresh()?),
    };
    if !recovered.unacked.is_empty() {
        errln!(
            "socketeer: publish: {} unacknowledged lines from the spool will be sent first",
            recovered.unacked.len()
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
    let mut config = PublisherConfig::new(endpoint.clone(), recovered.session.clone());
    config.fallbacks = endpoints;
    config.options = options;
    config.max_unacked = args.max_unacked as usize;
    config.max_unacked_bytes = usize::try_from(args.max_unacked_bytes).unwrap_or(usize::MAX);
    config.clock_every = (!args.clock_every.is_zero()).then_some(args.clock_every);
    // The device line is for hubs without authentication; with a key the hub knows it.
    if args.guard.key_file.is_none() {
        config.device = Some(default_device());
    }
    let kept = if spool.is_some() {
        "kept in the spool"
    } else {
        "lost"
    };
    let journal = spool.map(|spool| Box::new(spool) as Box<dyn Journal<Position>>);
    let (publisher, delivery) = Publisher::start(
        config,
        journal,
        socketeer_hub::publisher::Recovered {
            next_seq: recovered.next_seq,
            unacked: recovered.unacked,
        },
        move |event| match event {
            Event::Refused { tag, why, .. } => {
                errln!(
                    "socketeer: publish: input line {}: refused by the hub: {why}",
                    tag.lines
                );
            }
            Event::Unreachable {
                error,
                unacked,
                retry_in,
            } => errln!(
                "socketeer: publish: {endpoint}: {}; {unacked} lines unacknowledged; retrying in {} ms",
                crate::failure::describe_error(error),
                retry_in.as_millis()
            ),
            Event::Clock { offset, rtt } => {
                tracing::debug!(offset, rtt, "clock: a time exchange with the hub");
            }
            event => errln!("socketeer: publish: {event}"),
        },
    );
    let refused_here = Arc::new(AtomicU64::new(0));
    let reader = {
        let publisher = publisher.clone();
        let image = args.image.clone();
        let stream = args.stream.clone();
        let refused = Arc::clone(&refused_here);
        tokio::spawn(async move {
            let read = match image {
                Some(path) => send_image(path, stream, publisher.clone()).await,
                None => read_input(input, recovered.resume, publisher.clone(), refused).await,
            };
            // Input that cannot be read on ends the input: what was taken is still delivered,
            // then the error is the outcome.
            if read.is_err() {
                let _ = publisher.end();
            }
            read
        })
    };
    let started = std::time::Instant::now();
    let report = tokio::select! {
        report = delivery => report.context("publish")?,
        _ = tokio::signal::ctrl_c() => {
            let left = publisher.unacked();
            errln!("socketeer: publish: interrupted with {left} lines unacknowledged ({kept})");
            return Ok(EXIT_INTERRUPTED);
        }
    };
    reader.await.context("publish: the input reader")??;
    let refused = report.refused + refused_here.load(Ordering::Relaxed);
    if args.stats {
        let seconds = started.elapsed().as_secs_f64();
        let stats = serde_json::json!({
            "acknowledged": report.acknowledged,
            "refused": refused,
            "resent": report.resent,
            "seconds": seconds,
            "lines_per_sec": report.acknowledged as f64 / seconds.max(1e-9),
            "ack_ms": {
                "p50": report.latency_ms(0.5),
                "p99": report.latency_ms(0.99),
                "max": report.latency_ms(1.0),
            },
        });
        outln!("{stats}")?;
    }
    if std::io::stderr().is_terminal() {
        errln!(
            "socketeer: publish: {} lines acknowledged ({} resent after reconnecting), {} refused",
            report.acknowledged,
            report.resent,
            refused
        );
    }
    Ok(if refused > 0 { 1 } else { 0 })
}

/// Reads the input from `start` (a regular file an earlier run took lines of is picked up
/// there; anything else is read from its beginning) and publishes each line.
async fn read_input(
    input: Input,
    start: Position,
    publisher: Publisher<Position>,
    refused: Arc<AtomicU64>,
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
        // An image header: its bytes follow the line, raw, and go with it.
        let result = match image_header(&raw) {
            None => publisher.publish(&raw, at).await,
            Some(Err(why)) => {
                anyhow::bail!(
                    "publish: input line {}: {why}; the bytes after it cannot be told from \
                     the next line, so nothing more is read",
                    at.lines
                );
            }
            Some(Ok((format, len))) => {
                let mut image = vec![0; len];
                tokio::io::AsyncReadExt::read_exact(&mut reader, &mut image)
                    .await
                    .with_context(|| {
                        format!(
                            "publish: input line {}: the image after it is cut short",
                            at.lines
                        )
                    })?;
                at.offset += len as u64;
                publisher
                    .publish_image(&raw, format, image.into(), at)
                    .await
                    .map(Some)
            }
        };
        match result {
            Ok(Some(_)) => {}
            Ok(None) => publisher.skipped(&at),
            Err(PublishError::Invalid(why)) => {
                errln!(
                    "socketeer: publish: input line {}: {why}; not sent",
                    at.lines
                );
                refused.fetch_add(1, Ordering::Relaxed);
                publisher.skipped(&at);
            }
            // Delivery has stopped: it says why.
            Err(PublishError::Stopped) => return Ok(()),
            Err(err) => return Err(err).context("publish"),
        }
    }
    publisher.end()
}

/// `--image FILE`: one record of `stream` with the file as its image, dated now.
async fn send_image(
    path: PathBuf,
    stream: String,
    publisher: Publisher<Position>,
) -> anyhow::Result<()> {
    let size = tokio::fs::metadata(&path)
        .await
        .with_context(|| format!("publish: --image {}", path.display()))?
        .len();
    if size == 0 || size > socketeer_hub::publisher::MAX_IMAGE_SENT as u64 {
        return Err(UsageError(format!(
            "--image {}: {size} bytes; an image is 1 byte to {}",
            path.display(),
            socketeer_hub::publisher::MAX_IMAGE_SENT
        ))
        .into());
    }
    let image = tokio::fs::read(&path)
        .await
        .with_context(|| format!("publish: --image {}", path.display()))?;
    let format = if image.starts_with(&[0xff, 0xd8, 0xff]) {
        ImageFormat::Jpeg
    } else if image.starts_with(b"\x89PNG\r\n\x1a\n") {
        ImageFormat::Png
    } else {
        return Err(UsageError(format!(
            "--image {}: not a JPEG or PNG file",
            path.display()
        ))
        .into());
    };
    let header = serde_json::json!({ "stream": stream, "ts": socketeer_hub::now_secs() });
    let at = Position {
        offset: 0,
        lines: 1,
    };
    match publisher
        .publish_image(header.to_string().as_bytes(), format, image.into(), at)
        .await
    {
        Ok(_) | Err(PublishError::Stopped) => {}
        Err(err) => {
            return Err(err).with_context(|| format!("publish: --image {}", path.display()));
        }
    }
    publisher.end()
}

/// An image header among the input's lines: `Some(Ok((format, length)))`, `Some(Err)` for an
/// `"image"` whose length cannot be followed, `None` for any other line.
fn image_header(raw: &[u8]) -> Option<Result<(ImageFormat, usize), String>> {
    // Most lines are readings: without the text `"image"` (or an escape that could spell it)
    // a line is not parsed here at all.
    // (The searchers are built once: building one per line cost as much as the search.)
    static IMAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"image\""));
    static ESCAPE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));
    if IMAGE.find(raw).is_none() && ESCAPE.find(raw).is_none() {
        return None;
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(raw) else {
        return None;
    };
    let spec = object.get("image")?;
    let format = spec
        .get("format")
        .and_then(Value::as_str)
        .and_then(ImageFormat::from_name);
    let len = spec
        .get("bytes")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| (1..=socketeer_hub::publisher::MAX_IMAGE_SENT).contains(&n));
    Some(match (format, len) {
        (Some(format), Some(len)) => Ok((format, len)),
        _ => Err(format!(
            "\"image\" must be {{\"format\":\"jpeg\" or \"png\",\"bytes\":N}} with N from 1 to {}",
            socketeer_hub::publisher::MAX_IMAGE_SENT
        )),
    })
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
    unacked: Vec<(u64, Bytes, Position)>,
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
/// A record with an image keeps its header line in `lines` and its bytes in `images/SEQ`,
/// written first (a header in `lines` always has its image; an image file without its line is
/// an orphan, removed). Both logs are emptied, and `images/` too, whenever nothing is
/// unacknowledged.
struct Spool {
    dir: PathBuf,
    lines: std::fs::File,
    acked: std::fs::File,
    /// Unacknowledged records whose image is in `images/`.
    images: std::collections::HashSet<u64>,
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
        let mut images = std::collections::HashSet::new();
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
                if let Some(len) = image_header(record.json)
                    .and_then(Result::ok)
                    .map(|(_, n)| n)
                {
                    match std::fs::read(image_path(dir, seq)) {
                        Ok(image) if image.len() == len => {
                            line.extend_from_slice(&image);
                            images.insert(seq);
                        }
                        found => {
                            let found = found.map_or_else(
                                |e| e.to_string(),
                                |image| format!("{} bytes, not {len}", image.len()),
                            );
                            errln!(
                                "socketeer: publish: --spool {}: the image of input line {} \
                                 is damaged ({found}); that record is not sent",
                                dir.display(),
                                record.input_line
                            );
                            continue;
                        }
                    }
                }
                let tag = Position {
                    offset: 0,
                    lines: record.input_line,
                };
                unacked.push((seq, Bytes::from(line), tag));
            }
        }
        remove_images(dir, |seq| !images.contains(&seq)).with_context(what)?;
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
            for (_, bytes, at) in &unacked {
                records.extend_from_slice(format!("{} - ", at.lines).as_bytes());
                records.extend_from_slice(header_of(bytes));
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
            images,
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
        let header = header_of(line);
        if header.len() < line.len() {
            let images = self.dir.join("images");
            std::fs::create_dir_all(&images)
                .and_then(|()| std::fs::write(image_path(&self.dir, seq), &line[header.len()..]))
                .context("publish: writing an image to the spool")?;
            self.images.insert(seq);
        }
        let line = header;
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
        if self.images.remove(&seq) {
            // Its line says it is acknowledged; a file left by a crash here goes at the next
            // start (an orphan).
            match std::fs::remove_file(image_path(&self.dir, seq)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).context("publish: removing an image from the spool");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Nothing is unacknowledged: where numbering and input stand, first; then the logs go.
    fn settled(&mut self) -> anyhow::Result<()> {
        self.save_state()?;
        self.lines.set_len(0)?;
        self.acked.set_len(0)?;
        if !self.images.is_empty() {
            self.images.clear();
            remove_images(&self.dir, |_| true).context("publish: emptying the spool's images")?;
        }
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

/// Where the spool keeps the image of record `seq`.
fn image_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join("images").join(seq.to_string())
}

/// Removes the spool's image files whose number `doomed` says (and any file not named by a
/// number: not ours to keep).
fn remove_images(dir: &Path, doomed: impl Fn(u64) -> bool) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir.join("images")) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries?,
    };
    for entry in entries {
        let entry = entry?;
        let seq = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok());
        if seq.is_none_or(&doomed) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A numbered record's line, with its `\n`: all of it, or the header line of one whose image
/// follows.
fn header_of(record: &[u8]) -> &[u8] {
    match record.iter().position(|&b| b == b'\n') {
        Some(end) => &record[..=end],
        None => record,
    }
}

/// The spool is the publisher's journal: a line is on disk before it is sent.
impl Journal<Position> for Spool {
    fn kept(&mut self, seq: u64, line: &[u8], at: &Position) -> anyhow::Result<()> {
        self.append(line, seq, *at)
    }

    fn settled(&mut self, seq: u64, nothing_left: bool) -> anyhow::Result<()> {
        self.acked(seq, nothing_left)
    }

    fn skipped(&mut self, at: &Position) {
        self.passed(*at);
    }

    fn drained(&mut self) -> anyhow::Result<()> {
        self.settled()
    }
}
