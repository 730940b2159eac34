//! The hub's storage: one SQLite file in WAL mode, written by one thread.
//!
//! Connections hand records to the writer and wait for the answer; the writer takes everything
//! queued (up to a batch size) into one transaction, commits it — one fsync for the lot with
//! `synchronous=FULL` — and only then answers each caller. That is group commit: under load a
//! commit carries many records, so acknowledgements stay fast without weakening durability.
//!
//! A record with a sequence number is stored at most once per (device, session, seq): the key
//! goes into `received` in the same transaction as the data, so after a crash either both are
//! there or neither, and a resend finds the key and is answered as a duplicate.
//!
//! What waits for the writer is bounded in records and in bytes ([`QueueLimits`]): a
//! submission waits for room (back-pressure on a stream), or — for senders nobody answers,
//! such as Influx over UDP — is dropped when there is none, and may never take more than half
//! of it. A submission is cut into jobs of at most [`JOB_RECORDS`] records, and each
//! transaction takes jobs from its senders in turn (one *lane* per device or source), so a
//! sender with much to write cannot make another wait behind all of it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::record::Record;
use crate::wire::{Reason, Refusal};

/// The schema, one migration per version (`PRAGMA user_version` counts those applied). Never
/// edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: devices, series of numbers, frames with detections, idempotency keys by session.
    "CREATE TABLE devices (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id),
        stream TEXT NOT NULL,
        field TEXT NOT NULL,
        UNIQUE (device_id, stream, field)
    );
    CREATE TABLE points (
        series_id INTEGER NOT NULL,
        ts REAL NOT NULL,
        recv_ts REAL NOT NULL,
        value REAL NOT NULL
    );
    CREATE INDEX points_by_series_time ON points (series_id, ts);
    CREATE TABLE frames (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id),
        stream TEXT NOT NULL,
        ts REAL NOT NULL,
        recv_ts REAL NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL
    );
    CREATE INDEX frames_by_device_time ON frames (device_id, ts);
    CREATE TABLE detections (
        frame_id INTEGER NOT NULL REFERENCES frames(id),
        label TEXT NOT NULL,
        score REAL NOT NULL,
        x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL
    );
    CREATE INDEX detections_by_frame ON detections (frame_id);
    CREATE INDEX detections_by_label ON detections (label, frame_id);
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id),
        name TEXT NOT NULL,
        last_recv REAL NOT NULL,
        UNIQUE (device_id, name)
    );
    CREATE INDEX sessions_by_last_recv ON sessions (last_recv);
    CREATE TABLE received (
        session_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;",
    // 2: one row per reading instead of one per value (a third of the B-tree inserts for a
    // reading of three values): `samples` keeps the values as a JSON object, read with
    // `vals ->> 'field'`; the view `points` still shows one row per value.
    "CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id),
        name TEXT NOT NULL,
        UNIQUE (device_id, name)
    );
    CREATE TABLE samples (
        stream_id INTEGER NOT NULL,
        ts REAL NOT NULL,
        recv_ts REAL NOT NULL,
        vals TEXT NOT NULL
    );
    CREATE INDEX samples_by_stream_time ON samples (stream_id, ts);
    INSERT INTO streams (device_id, name) SELECT DISTINCT device_id, stream FROM series;
    INSERT INTO samples (stream_id, ts, recv_ts, vals)
        SELECT st.id, p.ts, p.recv_ts, json_group_object(s.field, p.value)
        FROM points p
        JOIN series s ON s.id = p.series_id
        JOIN streams st ON st.device_id = s.device_id AND st.name = s.stream
        GROUP BY st.id, p.ts, p.recv_ts
        ORDER BY min(p.rowid);
    DROP TABLE points;
    CREATE VIEW points (series_id, ts, recv_ts, value) AS
        SELECT se.id, sa.ts, sa.recv_ts, j.value
        FROM samples sa
        JOIN streams st ON st.id = sa.stream_id
        JOIN json_each(sa.vals) j
        JOIN series se ON se.device_id = st.device_id AND se.stream = st.name AND se.field = j.key;",
    // 3: text states (`"mode":"RTK"`): kept in `samples.vals` as JSON strings beside the
    // numbers; their fields are listed here, not in `series` (which stays numbers only).
    "CREATE TABLE text_fields (
        device_id INTEGER NOT NULL REFERENCES devices(id),
        stream TEXT NOT NULL,
        field TEXT NOT NULL,
        UNIQUE (device_id, stream, field)
    );",
    // 4: what each numbered record said (`fingerprint`), so a number reused for a different
    // record is refused instead of acknowledged as a duplicate. NULL for rows from before:
    // those are taken as resends, as they were.
    "ALTER TABLE received ADD COLUMN hash INTEGER;",
];

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit is on disk before it is acknowledged (default).
    Full,
    /// `synchronous=NORMAL`: survives a crash of the hub, may lose the last commits if the
    /// machine loses power.
    Normal,
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub(crate) path: PathBuf,
    pub(crate) durability: Durability,
    /// Data older than this (by its timestamp) is deleted; `None` keeps everything.
    pub(crate) retention: Option<Duration>,
    /// Most records in one transaction.
    pub(crate) max_batch: usize,
    /// Where committed records are announced (one JSON object each), if anyone listens.
    pub(crate) live: Option<tokio::sync::broadcast::Sender<Arc<str>>>,
    /// Counts of committed records by device.
    pub(crate) activity: Arc<Activity>,
    /// How much may wait for the writer.
    pub(crate) queue: QueueLimits,
    /// How many devices, and streams and fields per device, are kept.
    pub(crate) cardinality: Cardinality,
}

/// How much may wait for the writer at once (queued or being committed).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most records waiting.
    pub records: usize,
    /// Estimated memory of the waiting records, in bytes.
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            records: 65_536,
            bytes: 64 * 1024 * 1024,
        }
    }
}

/// Most records in one job: bigger submissions are cut, so the writer can take turns.
pub(crate) const JOB_RECORDS: usize = 256;
/// About the most one transaction carries, in KiB of records ([`Item::weight`]): a batch of
/// large records is cut short, so a sender's wait stays a few milliseconds of writing.
const BATCH_KIB: usize = 2048;
/// A lane may hold at most this fraction of the queue (in records and in bytes).
const LANE_SHARE: usize = 4;

/// Records committed by each device since the hub started, and over the last ten seconds (for
/// the fleet view's rates); and failed authentications claiming each device's name.
#[derive(Debug, Default)]
pub(crate) struct Activity(std::sync::Mutex<HashMap<Arc<str>, Counts>>);

/// One device's counts.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Counts {
    pub(crate) records: u64,
    pub(crate) auth_failures: u64,
    /// The Unix second `window` ends at.
    second: u64,
    /// The Unix second of the first record counted (a rate is over at most that long).
    since: u64,
    /// Records per second, indexed by second modulo the window.
    window: [u32; Activity::WINDOW as usize],
}

impl Counts {
    /// Records per second over the window ending at `now` (Unix seconds).
    pub(crate) fn rate(&self, now: u64) -> f64 {
        let w = Activity::WINDOW;
        let mut sum = 0u64;
        for (i, &n) in self.window.iter().enumerate() {
            // Bucket i holds the second s ≡ i (mod w) in (self.second - w, self.second].
            let s = self.second as i64 - ((self.second + w - i as u64 % w) % w) as i64;
            if s + w as i64 > now as i64 {
                sum += u64::from(n);
            }
        }
        // A device that started sending three seconds ago sends sum/3 per second, not sum/10.
        let span = if self.since == 0 {
            w
        } else {
            (now.saturating_sub(self.since) + 1).min(w)
        };
        sum as f64 / span as f64
    }

    fn advance(&mut self, now: u64) {
        if now <= self.second {
            return;
        }
        let gap = (now - self.second).min(Activity::WINDOW);
        for k in 1..=gap {
            self.window[((self.second + k) % Activity::WINDOW) as usize] = 0;
        }
        self.second = now;
    }
}

impl Activity {
    const WINDOW: u64 = 10;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Counts>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` records from `device` committed at `now` (Unix seconds).
    pub(crate) fn committed(&self, device: &Arc<str>, n: u64, now: u64) {
        let mut map = self.lock();
        let counts = map.entry(Arc::clone(device)).or_default();
        if counts.since == 0 {
            counts.since = now;
        }
        counts.advance(now);
        counts.records += n;
        let slot = &mut counts.window[(now % Self::WINDOW) as usize];
        *slot = slot.saturating_add(n.min(u64::from(u32::MAX)) as u32);
    }

    /// A failed authentication that claimed `device`.
    pub(crate) fn auth_failed(&self, device: &str) {
        let mut map = self.lock();
        match map.get_mut(device) {
            Some(counts) => counts.auth_failures += 1,
            None => {
                // Bounded: a stranger inventing names must not grow the map without end.
                if map.len() < 100_000 {
                    map.entry(Arc::from(device)).or_default().auth_failures += 1;
                }
            }
        }
    }

    /// Every device's counts.
    pub(crate) fn snapshot(&self) -> HashMap<Arc<str>, Counts> {
        self.lock().clone()
    }
}

/// One record to store, with who sent it and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) device: Arc<str>,
    /// The session its `seq` belongs to.
    pub(crate) session: Arc<str>,
    pub(crate) record: Record,
    /// Receive time, Unix seconds.
    pub(crate) recv_ts: f64,
}

impl Item {
    /// A record from `device`, in the record's own session if it names one, else `session`.
    pub(crate) fn new(device: &Arc<str>, session: &Arc<str>, record: Record, recv_ts: f64) -> Item {
        Item {
            device: Arc::clone(device),
            session: record
                .session
                .as_deref()
                .map_or_else(|| Arc::clone(session), Arc::from),
            record,
            recv_ts,
        }
    }
}

impl Item {
    /// About how much memory the item holds, for the writer queue's byte bound.
    pub(crate) fn weight(&self) -> usize {
        let r = &self.record;
        let strings = |list: &[(String, String)]| {
            list.iter()
                .map(|(a, b)| a.len() + b.len() + 48)
                .sum::<usize>()
        };
        std::mem::size_of::<Item>()
            + r.stream.len()
            + r.values.iter().map(|(f, _)| f.len() + 32).sum::<usize>()
            + strings(&r.texts)
            + r.frame.as_ref().map_or(0, |f| {
                f.detections
                    .iter()
                    .map(|d| d.label.len() + 64)
                    .sum::<usize>()
            })
            + r.session.as_ref().map_or(0, String::len)
    }
}

/// What became of a record that is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Committed now.
    New,
    /// Its (device, session, seq) was committed before, with the same content; nothing
    /// written (a resend).
    Duplicate,
}

/// What the writer did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Committed now.
    New,
    /// Committed before with the same content.
    Duplicate,
    /// Its (device, session, seq) was committed before with *different* content: a reused
    /// number, not a resend. Nothing written; the sender is told to start a new session.
    Conflict,
    /// It would pass one of the hub's cardinality limits. Nothing written.
    Refused(Limit),
}

impl Written {
    fn outcome(self, cardinality: &Cardinality) -> Outcome {
        match self {
            Written::New => Ok(Stored::New),
            Written::Duplicate => Ok(Stored::Duplicate),
            Written::Conflict => Err(StoreError::Rejected(Refusal::new(
                Reason::SeqReused,
                CONFLICT,
            ))),
            Written::Refused(limit) => Err(StoreError::Rejected(cardinality.refusal(limit))),
        }
    }
}

/// A cardinality limit: how many devices the hub keeps, and streams and fields per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Devices,
    Streams,
    Fields,
}

/// The cardinality limits (`--max-devices`, `--max-streams`, `--max-fields`).
#[derive(Debug, Clone, Copy)]
pub struct Cardinality {
    /// Most devices kept.
    pub devices: usize,
    /// Most streams per device.
    pub streams: usize,
    /// Most fields per device, over all its streams, numbers and text states together.
    pub fields: usize,
}

impl Default for Cardinality {
    fn default() -> Cardinality {
        Cardinality {
            devices: 10_000,
            streams: 256,
            fields: 1024,
        }
    }
}

impl Cardinality {
    /// What a sender is told of a record refused for `limit`.
    fn refusal(&self, limit: Limit) -> Refusal {
        let reason = match limit {
            Limit::Devices => Reason::DevicesLimit,
            Limit::Streams => Reason::StreamsLimit,
            Limit::Fields => Reason::FieldsLimit,
        };
        let why = match limit {
            Limit::Devices => format!(
                "the hub already keeps its most devices ({}, --max-devices): records of a new \
                 device are refused",
                self.devices
            ),
            Limit::Streams => format!(
                "this device already has its most streams ({}, --max-streams): records of a \
                 new stream are refused",
                self.streams
            ),
            Limit::Fields => format!(
                "this device already has its most fields ({}, --max-fields): records with new \
                 fields are refused",
                self.fields
            ),
        };
        Refusal::new(reason, why)
    }
}

/// What a sender is told of a record under a number already used for another.
pub(crate) const CONFLICT: &str = "this seq was already stored in this session for a different \
    record: numbers are never reused within a session; start a new session";

/// A fingerprint of what a record says (not of how its JSON was written), so a resend is told
/// from a different record under the same number. Stable across runs and versions: BLAKE3 of a
/// fixed encoding, 64 bits of it.
pub(crate) fn fingerprint(record: &Record) -> i64 {
    let mut h = blake3::Hasher::new();
    let text = |h: &mut blake3::Hasher, t: &str| {
        h.update(&(t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    };
    text(&mut h, &record.stream);
    match record.ts {
        Some(ts) => h.update(&[1]).update(&ts.to_bits().to_le_bytes()),
        None => h.update(&[0]),
    };
    h.update(&(record.values.len() as u64).to_le_bytes());
    for (field, value) in &record.values {
        text(&mut h, field);
        h.update(&value.to_bits().to_le_bytes());
    }
    h.update(&(record.texts.len() as u64).to_le_bytes());
    for (field, value) in &record.texts {
        text(&mut h, field);
        text(&mut h, value);
    }
    if let Some(frame) = &record.frame {
        h.update(&[1]);
        h.update(&frame.width.to_le_bytes())
            .update(&frame.height.to_le_bytes());
        h.update(&(frame.detections.len() as u64).to_le_bytes());
        for d in &frame.detections {
            text(&mut h, &d.label);
            h.update(&d.score.to_bits().to_le_bytes());
            for v in d.bbox {
                h.update(&v.to_bits().to_le_bytes());
            }
        }
    } else {
        h.update(&[0]);
    }
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

/// Why a record was not stored: for now (resend it later) or for good (do not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The store cannot take records now (the disk, the database, shutting down): nothing of
    /// the record was stored; resend it.
    #[error("storage: {0}")]
    Unavailable(String),
    /// The store will never take this record (a number reused, a cardinality limit): do not
    /// resend it.
    #[error("{0}")]
    Rejected(Refusal),
}

struct Job {
    /// Whose turn it is in: a device's or a source's.
    lane: Arc<str>,
    items: Vec<Item>,
    /// The items' weight, KiB.
    kib: u32,
    done: oneshot::Sender<Result<Vec<Written>, StoreError>>,
    /// Its room in the queue, given back once it is committed.
    _room: Room,
}

/// Room in the writer's queue, in records and KiB: the lane's share and the whole queue's.
struct Room(
    #[allow(dead_code, reason = "held, not read: dropping it gives the room back")]
    Vec<OwnedSemaphorePermit>,
);

/// Records and KiB, as permits.
struct Allowance {
    records: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

impl Allowance {
    fn new(records: usize, kib: usize) -> Allowance {
        Allowance {
            records: Arc::new(Semaphore::new(records.max(1))),
            kib: Arc::new(Semaphore::new(kib.max(1))),
        }
    }

    async fn wait(
        &self,
        records: u32,
        kib: u32,
        room: &mut Vec<OwnedSemaphorePermit>,
    ) -> Result<(), StoreError> {
        for (semaphore, n) in [(&self.records, records), (&self.kib, kib)] {
            let permit = Arc::clone(semaphore)
                .acquire_many_owned(n)
                .await
                .map_err(|_| stopped())?;
            room.push(permit);
        }
        Ok(())
    }

    /// Permits now, if `keep` of each stays free after.
    fn try_take(
        &self,
        records: u32,
        kib: u32,
        keep: (usize, usize),
        room: &mut Vec<OwnedSemaphorePermit>,
    ) -> bool {
        for (semaphore, n, keep) in [(&self.records, records, keep.0), (&self.kib, kib, keep.1)] {
            if semaphore.available_permits() < n as usize + keep {
                return false;
            }
            match Arc::clone(semaphore).try_acquire_many_owned(n) {
                Ok(permit) => room.push(permit),
                Err(_) => return false,
            }
        }
        true
    }

    /// Nobody holds or waits for any of it.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.records) == 1 && Arc::strong_count(&self.kib) == 1
    }
}

/// The writer's queue bound: the whole queue's, and each lane's share of it (a quarter), so
/// that one busy device cannot take all the room and make every other wait to be let in.
struct Budget {
    all: Allowance,
    lanes: std::sync::Mutex<HashMap<Arc<str>, Arc<Allowance>>>,
    limits: QueueLimits,
}

impl Budget {
    fn new(limits: QueueLimits) -> Budget {
        Budget {
            all: Allowance::new(limits.records, limits.bytes.div_ceil(1024)),
            lanes: std::sync::Mutex::default(),
            limits,
        }
    }

    /// `lane`'s share.
    fn lane(&self, lane: &Arc<str>) -> Arc<Allowance> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = lanes.get(lane) {
            return Arc::clone(share);
        }
        if lanes.len() >= 1024 {
            lanes.retain(|_, share| !share.idle());
        }
        let share = Arc::new(Allowance::new(
            self.limits.records / LANE_SHARE,
            self.limits.bytes.div_ceil(1024) / LANE_SHARE,
        ));
        lanes.insert(Arc::clone(lane), Arc::clone(&share));
        share
    }

    /// Cuts items into jobs that fit a lane's share: at most [`JOB_RECORDS`] records and an
    /// eighth of the byte bound each (a single record always fits: lines are far smaller).
    fn cut(&self, items: Vec<Item>) -> Vec<(Vec<Item>, u32, u32)> {
        let most_kib = (self.limits.bytes / 8 / 1024).max(1);
        let most_records = JOB_RECORDS.min(self.limits.records / LANE_SHARE).max(1);
        let mut jobs = Vec::new();
        let mut job = Vec::new();
        let mut kib = 0;
        for item in items {
            let weight = item.weight().div_ceil(1024);
            if !job.is_empty() && (job.len() == most_records || kib + weight > most_kib) {
                jobs.push((std::mem::take(&mut job), std::mem::take(&mut kib)));
            }
            kib += weight;
            job.push(item);
        }
        if !job.is_empty() {
            jobs.push((job, kib));
        }
        jobs.into_iter()
            .map(|(job, kib)| {
                let records = job.len() as u32;
                (job, records, kib.min(most_kib) as u32)
            })
            .collect()
    }

    /// Waits for room in `lane`'s share, then in the queue.
    async fn wait(&self, lane: &Arc<str>, records: u32, kib: u32) -> Result<Room, StoreError> {
        let mut room = Vec::with_capacity(4);
        self.lane(lane).wait(records, kib, &mut room).await?;
        self.all.wait(records, kib, &mut room).await?;
        Ok(Room(room))
    }

    /// Whether `records` more could be taken now by [`try_take`](Self::try_take) (as far as
    /// the record count tells): checked before a datagram is parsed.
    fn could_take(&self, lane: &Arc<str>, records: usize) -> bool {
        let free = |a: &Allowance| a.records.available_permits();
        free(&self.lane(lane)) >= records && free(&self.all) >= records + self.limits.records / 2
    }

    /// Room now in `lane`'s share and in the queue, if taking it leaves at least half of the
    /// queue free.
    fn try_take(
        &self,
        lane: &Arc<str>,
        records: u32,
        kib: u32,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut room = Vec::with_capacity(4);
        let half = (
            self.limits.records / 2,
            self.limits.bytes.div_ceil(1024) / 2,
        );
        (self.lane(lane).try_take(records, kib, (0, 0), &mut room)
            && self.all.try_take(records, kib, half, &mut room))
        .then_some(room)
    }
}

/// A handle to the writer; clone it freely. The writer thread ends once every handle is gone,
/// after committing what was queued.
#[derive(Clone)]
pub(crate) struct Store {
    jobs: mpsc::UnboundedSender<Job>,
    budget: Arc<Budget>,
    cardinality: Cardinality,
}

impl Store {
    /// Opens (creating and migrating) the database and starts the writer thread. Join the
    /// returned handle after dropping every `Store` to know that all is committed.
    pub(crate) fn open(
        config: StoreConfig,
    ) -> anyhow::Result<(Store, std::thread::JoinHandle<()>)> {
        let conn = open_writer(&config)?;
        let checkpoints = Checkpointer::start(&config)?;
        // Unbounded as a channel, bounded by the budget: every job holds its room.
        let (jobs, queue) = mpsc::unbounded_channel();
        let budget = Arc::new(Budget::new(config.queue));
        let cardinality = config.cardinality;
        let writer = std::thread::Builder::new()
            .name("hub-writer".into())
            .spawn(move || Writer::new(conn, config, checkpoints).run(queue))
            .context("cannot start the storage thread")?;
        Ok((
            Store {
                jobs,
                budget,
                cardinality,
            },
            writer,
        ))
    }

    /// Hands one job to the writer; the answer to come (already failed if the writer is gone).
    fn send(&self, lane: &Arc<str>, items: Vec<Item>, kib: u32, room: Room) -> Part {
        let count = items.len();
        let (done, answer) = oneshot::channel();
        let job = Job {
            lane: Arc::clone(lane),
            items,
            kib,
            done,
            _room: room,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            let _ = job.done.send(Err(stopped()));
        }
        (count, answer)
    }

    /// Queues records for the writer in `lane`'s turn (waiting while the queue is full) and
    /// returns the answer to come: one outcome per record, once all are committed or failed.
    pub(crate) async fn submit(&self, lane: &Arc<str>, items: Vec<Item>) -> Pending {
        let mut parts = VecDeque::new();
        for (job, records, kib) in self.budget.cut(items) {
            let part = match self.budget.wait(lane, records, kib).await {
                Ok(room) => self.send(lane, job, kib, room),
                Err(err) => failed(job.len(), err),
            };
            parts.push_back(part);
        }
        Pending {
            parts,
            done: Vec::new(),
            cardinality: self.cardinality,
        }
    }

    /// Queues records only if there is room now, and never more than half of the queue: for
    /// senders nobody answers (a datagram dropped is counted, not waited for). `None`: no room,
    /// nothing queued.
    pub(crate) fn try_submit(&self, lane: &Arc<str>, items: Vec<Item>) -> Option<Pending> {
        let jobs = self.budget.cut(items);
        let records = jobs.iter().map(|(_, r, _)| r).sum();
        let kib = jobs.iter().map(|(_, _, k)| k).sum();
        // Taken together, then shared out: the lane's share and the queue's, per job.
        let mut all = self.budget.try_take(lane, records, kib)?;
        let mut parts = VecDeque::new();
        for (job, records, kib) in jobs {
            let room = all
                .iter_mut()
                .zip([records, kib, records, kib])
                .map(|(permit, n)| permit.split(n as usize).expect("taken together"))
                .collect();
            parts.push_back(self.send(lane, job, kib, Room(room)));
        }
        Some(Pending {
            parts,
            done: Vec::new(),
            cardinality: self.cardinality,
        })
    }

    /// Records waiting for the writer or being committed now.
    pub(crate) fn queued(&self) -> usize {
        self.budget.limits.records
            - self
                .budget
                .all
                .records
                .available_permits()
                .min(self.budget.limits.records)
    }

    /// Whether [`try_submit`](Self::try_submit) of `records` would find room now, as far as
    /// their count tells: lets a datagram that would be dropped be dropped before parsing.
    pub(crate) fn has_room(&self, lane: &Arc<str>, records: usize) -> bool {
        self.budget.could_take(lane, records)
    }

    /// Stores records, returning once they are committed (or failed): one outcome each.
    #[cfg(test)]
    pub(crate) async fn write(&self, lane: &Arc<str>, items: Vec<Item>) -> Vec<Outcome> {
        self.submit(lane, items).await.await
    }
}

/// What became of one submitted record: stored (or found stored), or why it could not be.
pub(crate) type Outcome = Result<Stored, StoreError>;

/// One job's answer to come, with how many records it holds.
type Part = (usize, oneshot::Receiver<Result<Vec<Written>, StoreError>>);

fn failed(count: usize, err: StoreError) -> Part {
    let (done, answer) = oneshot::channel();
    let _ = done.send(Err(err));
    (count, answer)
}

/// The writer's answer to one submission, to await: an outcome per record, in order. The
/// jobs it was cut into commit separately, so some may be stored and others failed.
pub(crate) struct Pending {
    parts: VecDeque<Part>,
    done: Vec<Outcome>,
    cardinality: Cardinality,
}

impl std::future::Future for Pending {
    type Output = Vec<Outcome>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        while let Some((count, part)) = this.parts.front_mut() {
            let count = *count;
            let std::task::Poll::Ready(answer) = std::pin::Pin::new(part).poll(cx) else {
                return std::task::Poll::Pending;
            };
            this.parts.pop_front();
            match answer.unwrap_or_else(|_| Err(stopped())) {
                Ok(written) => {
                    let cardinality = this.cardinality;
                    this.done
                        .extend(written.into_iter().map(|w| w.outcome(&cardinality)));
                }
                Err(err) => this.done.extend(std::iter::repeat_n(Err(err), count)),
            }
        }
        std::task::Poll::Ready(std::mem::take(&mut this.done))
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the storage thread has stopped".into())
}

fn open_writer(config: &StoreConfig) -> anyhow::Result<Connection> {
    let path = &config.path;
    let what = || format!("{}", path.display());
    let mut conn = Connection::open(path).with_context(|| format!("cannot open {}", what()))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .with_context(|| format!("{}: cannot switch to WAL", what()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!("{}: the journal stays in {mode} mode, not WAL", what());
    }
    let synchronous = match config.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // The checkpoint thread does it, off the commit path.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    migrate(&mut conn).with_context(|| format!("{}: schema migration failed", what()))?;
    Ok(conn)
}

/// Keeps the write-ahead log short without making commits wait.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold and, with
/// `synchronous=FULL`, syncs the database file: every record in that commit waits for it. A
/// passive checkpoint on another connection waits for nobody, but while the writer keeps
/// appending it never copies the whole log, and the log only starts over once it has all
/// been copied: it would grow without end. So the work is split: a thread copies the bulk
/// (and syncs the database file) in the background; each time it has, the writer — after
/// answering its batch — copies the few pages added meanwhile, and its next transaction
/// starts the log over. That step costs the writer a millisecond or a few, never the full copy.
struct Checkpointer {
    /// A commit happened (bounded to one: wake-ups fold together).
    wake: std::sync::mpsc::SyncSender<()>,
    /// The background thread finished a pass since the writer last looked.
    caught_up: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Pause between background passes, letting commits gather.
    const PAUSE: Duration = Duration::from_millis(100);

    fn start(config: &StoreConfig) -> anyhow::Result<Checkpointer> {
        let conn = Connection::open(&config.path)
            .with_context(|| format!("cannot open {}", config.path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (wake, commits) = std::sync::mpsc::sync_channel::<()>(1);
        let caught_up = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&caught_up);
        let thread = std::thread::Builder::new()
            .name("hub-checkpoint".into())
            .spawn(move || {
                // Until the writer is gone.
                while commits.recv().is_ok() {
                    match checkpoint(&conn, "PASSIVE") {
                        Ok(()) => done.store(true, Ordering::Release),
                        Err(err) => {
                            tracing::warn!(error = %err, "checkpoint failed; will try again")
                        }
                    }
                    std::thread::sleep(Self::PAUSE);
                }
                // Everything into the database file and the log emptied, as a clean close does.
                if let Err(err) = checkpoint(&conn, "TRUNCATE") {
                    tracing::warn!(error = %err, "final checkpoint failed; the log is kept");
                }
            })
            .context("cannot start the checkpoint thread")?;
        Ok(Checkpointer {
            wake,
            caught_up,
            thread,
        })
    }

    /// Called by the writer after each commit, once its answers are sent.
    fn committed(&self, writer: &Connection) {
        let _ = self.wake.try_send(()); // one wake-up pending is enough
        if self.caught_up.swap(false, Ordering::AcqRel) {
            if let Err(err) = checkpoint(writer, "PASSIVE") {
                tracing::warn!(error = %err, "checkpoint failed; will try again");
            }
        }
    }

    /// After the writer's last commit: the final checkpoint, waited for.
    fn finish(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
}

/// Brings the schema up to date, one transaction per migration.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "the database has schema version {version}, newer than this socketeer knows ({}); \
             use a newer socketeer",
            MIGRATIONS.len()
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// A stream the writer has seen: its id, and the fields already in `series`.
/// Jobs waiting for the writer, by lane, taken in turn.
#[derive(Default)]
struct Lanes {
    waiting: HashMap<Arc<str>, VecDeque<Job>>,
    /// Lanes with jobs, in the order of their next turn.
    turns: VecDeque<Arc<str>>,
}

impl Lanes {
    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn push(&mut self, job: Job) {
        let lane = self.waiting.entry(Arc::clone(&job.lane)).or_default();
        if lane.is_empty() {
            self.turns.push_back(Arc::clone(&job.lane));
        }
        lane.push_back(job);
    }

    /// One job from each lane in turn until `most` records or `most_kib` of them are taken
    /// (at least one job).
    fn take(&mut self, most: usize, most_kib: usize) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut count = 0;
        let mut kib = 0;
        while count < most && kib < most_kib {
            let Some(key) = self.turns.pop_front() else {
                break;
            };
            let lane = self
                .waiting
                .get_mut(&key)
                .expect("a lane with a turn has jobs");
            let job = lane.pop_front().expect("a lane with a turn has jobs");
            if lane.is_empty() {
                self.waiting.remove(&key);
            } else {
                self.turns.push_back(key);
            }
            count += job.items.len();
            kib += job.kib as usize;
            jobs.push(job);
        }
        jobs
    }
}

struct KnownStream {
    id: i64,
    /// Every field the stream has: numeric ones by name, text ones as `\0name`.
    fields: HashSet<String>,
}

/// How many streams and fields a device has, for the cardinality limits.
#[derive(Debug, Clone, Copy)]
struct DeviceLoad {
    streams: usize,
    fields: usize,
}

/// What the writer knows of the database, to spare lookups; forgotten after a failed commit
/// (rolled back) and after a retention pass.
#[derive(Default)]
struct Known {
    devices: HashMap<Arc<str>, i64>,
    /// How many devices there are, once counted.
    device_count: Option<usize>,
    /// By device and stream name: the stream's id and all its fields.
    streams: HashMap<i64, HashMap<String, KnownStream>>,
    loads: HashMap<i64, DeviceLoad>,
    sessions: HashMap<(i64, Arc<str>), i64>,
}

impl Known {
    /// The device's id, adding it if the device limit allows; `None` if it does not.
    fn device(
        &mut self,
        tx: &Connection,
        name: &Arc<str>,
        at: f64,
        most: usize,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(&id) = self.devices.get(name) {
            return Ok(Some(id));
        }
        let found = tx
            .prepare_cached("SELECT id FROM devices WHERE name = ?1")?
            .query_row(params![&**name], |row| row.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                let count = match self.device_count {
                    Some(count) => count,
                    None => tx.query_row("SELECT count(*) FROM devices", [], |row| {
                        row.get::<_, i64>(0)
                    })? as usize,
                };
                self.device_count = Some(count);
                if count >= most {
                    return Ok(None);
                }
                tx.prepare_cached(
                    "INSERT INTO devices (name, first_seen, last_seen) VALUES (?1, ?2, ?2)",
                )?
                .execute(params![&**name, at])?;
                self.device_count = Some(count + 1);
                tx.last_insert_rowid()
            }
        };
        self.devices.insert(Arc::clone(name), id);
        Ok(Some(id))
    }

    fn load(&mut self, tx: &Connection, device: i64) -> rusqlite::Result<&mut DeviceLoad> {
        match self.loads.entry(device) {
            std::collections::hash_map::Entry::Occupied(load) => Ok(load.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let count = |sql: &str| {
                    tx.prepare_cached(sql)?
                        .query_row(params![device], |row| row.get::<_, i64>(0))
                        .map(|n| n as usize)
                };
                Ok(slot.insert(DeviceLoad {
                    streams: count("SELECT count(*) FROM streams WHERE device_id = ?1")?,
                    fields: count("SELECT count(*) FROM series WHERE device_id = ?1")?
                        + count("SELECT count(*) FROM text_fields WHERE device_id = ?1")?,
                }))
            }
        }
    }

    /// The stream, if it exists, with all its fields (looked up once).
    fn stream(
        &mut self,
        tx: &Connection,
        device: i64,
        name: &str,
    ) -> rusqlite::Result<Option<&mut KnownStream>> {
        let streams = self.streams.entry(device).or_default();
        if !streams.contains_key(name) {
            let Some(id) = tx
                .prepare_cached("SELECT id FROM streams WHERE device_id = ?1 AND name = ?2")?
                .query_row(params![device, name], |row| row.get(0))
                .optional()?
            else {
                return Ok(None);
            };
            let mut fields = HashSet::new();
            for (sql, prefix) in [
                (
                    "SELECT field FROM series WHERE device_id = ?1 AND stream = ?2",
                    "",
                ),
                (
                    "SELECT field FROM text_fields WHERE device_id = ?1 AND stream = ?2",
                    "\0",
                ),
            ] {
                let mut stmt = tx.prepare_cached(sql)?;
                for field in stmt.query_map(params![device, name], |row| row.get::<_, String>(0))? {
                    fields.insert(format!("{prefix}{}", field?));
                }
            }
            streams.insert(name.to_owned(), KnownStream { id, fields });
        }
        Ok(streams.get_mut(name))
    }

    /// The stream, added if it is new.
    fn stream_or_add(
        &mut self,
        tx: &Connection,
        device: i64,
        name: &str,
    ) -> rusqlite::Result<&mut KnownStream> {
        if self.stream(tx, device, name)?.is_none() {
            tx.prepare_cached("INSERT INTO streams (device_id, name) VALUES (?1, ?2)")?
                .execute(params![device, name])?;
            let id = tx.last_insert_rowid();
            self.load(tx, device)?.streams += 1;
            let known = KnownStream {
                id,
                fields: HashSet::new(),
            };
            self.streams
                .entry(device)
                .or_default()
                .insert(name.to_owned(), known);
        }
        Ok(self
            .streams
            .get_mut(&device)
            .and_then(|streams| streams.get_mut(name))
            .expect("known just above"))
    }

    /// Which limit, if any, storing `record` would pass: `Err(limit)`; else `Ok(Some(id))`
    /// when its stream and every field of it are known already (nothing to add: the id is all
    /// the writer needs), `Ok(None)` when something is to be added.
    fn admit(
        &mut self,
        tx: &Connection,
        device: i64,
        record: &Record,
        most: &Cardinality,
    ) -> rusqlite::Result<Result<Option<i64>, Limit>> {
        let fields = record.values.len() + record.texts.len();
        if fields == 0 && record.frame.is_none() {
            return Ok(Ok(None));
        }
        let (known_id, new_fields) = match self.stream(tx, device, &record.stream)? {
            None => (None, fields),
            Some(known) => {
                let numbers = record
                    .values
                    .iter()
                    .filter(|(f, _)| !known.fields.contains(f.as_str()));
                let texts = record
                    .texts
                    .iter()
                    .filter(|(f, _)| !known.fields.contains(format!("\0{f}").as_str()));
                (Some(known.id), numbers.count() + texts.count())
            }
        };
        if new_fields == 0 && known_id.is_some() {
            return Ok(Ok(known_id));
        }
        let load = *self.load(tx, device)?;
        if known_id.is_none() && load.streams >= most.streams {
            return Ok(Err(Limit::Streams));
        }
        if load.fields + new_fields > most.fields {
            return Ok(Err(Limit::Fields));
        }
        Ok(Ok(None))
    }

    fn session(
        &mut self,
        tx: &Connection,
        device: i64,
        name: &Arc<str>,
        at: f64,
    ) -> rusqlite::Result<i64> {
        cached_session(tx, &mut self.sessions, device, name, at)
    }
}

struct Writer {
    conn: Connection,
    config: StoreConfig,
    checkpoints: Checkpointer,
    known: Known,
    /// The JSON object of a sample's values, reused.
    vals: String,
    last_retention: f64,
}

impl Writer {
    fn new(conn: Connection, config: StoreConfig, checkpoints: Checkpointer) -> Writer {
        Writer {
            conn,
            config,
            checkpoints,
            known: Known::default(),
            vals: String::new(),
            last_retention: 0.0,
        }
    }

    fn run(mut self, mut queue: mpsc::UnboundedReceiver<Job>) {
        let mut lanes = Lanes::default();
        loop {
            if lanes.is_empty() {
                match queue.blocking_recv() {
                    Some(job) => lanes.push(job),
                    None => break,
                }
            }
            while let Ok(job) = queue.try_recv() {
                lanes.push(job);
            }
            let jobs = lanes.take(self.config.max_batch, BATCH_KIB);
            let count: usize = jobs.iter().map(|job| job.items.len()).sum();
            match self.commit(&jobs) {
                Ok(mut outcomes) => {
                    self.announce(&jobs, &outcomes);
                    for job in jobs.into_iter().rev() {
                        let mine = outcomes.split_off(outcomes.len() - job.items.len());
                        let _ = job.done.send(Ok(mine));
                    }
                    self.checkpoints.committed(&self.conn);
                }
                Err(err) => {
                    // Ids cached during the failed transaction were rolled back with it.
                    self.forget();
                    tracing::error!(error = %err, records = count, "commit failed");
                    let err = StoreError::Unavailable(err.to_string());
                    for job in jobs {
                        let _ = job.done.send(Err(err.clone()));
                    }
                }
            }
            self.retention();
        }
        self.checkpoints.finish();
    }

    /// Tells live viewers about what was just committed (nothing is built if none listen).
    fn announce(&self, jobs: &[Job], outcomes: &[Written]) {
        let Some(live) = &self.config.live else {
            return;
        };
        if live.receiver_count() == 0 {
            return;
        }
        let items = jobs.iter().flat_map(|job| &job.items);
        for (item, outcome) in items.zip(outcomes) {
            if *outcome == Written::New {
                let _ = live.send(event(item).into());
            }
        }
    }

    fn forget(&mut self) {
        self.known = Known::default();
    }

    fn commit(&mut self, jobs: &[Job]) -> rusqlite::Result<Vec<Written>> {
        // The write lock from the start: a transaction that reads first and writes later cannot
        // wait for a lock someone else holds (SQLite answers "busy" at once instead).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut insert_received = tx.prepare_cached(
            "INSERT OR IGNORE INTO received (session_id, seq, hash) VALUES (?1, ?2, ?3)",
        )?;
        let mut insert_sample = tx.prepare_cached(
            "INSERT INTO samples (stream_id, ts, recv_ts, vals) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut outcomes = Vec::new();
        // New records by device, consecutive ones folded together.
        let mut committed: Vec<(&Arc<str>, u64)> = Vec::new();
        // (id, latest receive time) of the devices and sessions written to. A job is one
        // connection's, so consecutive items mostly share both: those are looked up once.
        let mut seen_devices: Vec<(i64, f64)> = Vec::new();
        let mut seen_sessions: Vec<(i64, f64)> = Vec::new();
        let mut last_device: Option<(&Arc<str>, i64)> = None;
        let mut last_session: Option<(&Arc<str>, i64, i64)> = None;
        let known = &mut self.known;
        let most = &self.config.cardinality;
        for item in jobs.iter().flat_map(|job| &job.items) {
            let device = match last_device {
                Some((name, id)) if *name == item.device => id,
                _ => match known.device(&tx, &item.device, item.recv_ts, most.devices)? {
                    Some(id) => id,
                    None => {
                        outcomes.push(Written::Refused(Limit::Devices));
                        continue;
                    }
                },
            };
            last_device = Some((&item.device, device));
            let record = &item.record;
            // Before its number is taken: a refused record may be sent again once there is room.
            let ready = match known.admit(&tx, device, record, most)? {
                Ok(ready) => ready,
                Err(limit) => {
                    outcomes.push(Written::Refused(limit));
                    continue;
                }
            };
            seen(&mut seen_devices, device, item.recv_ts);
            if let Some(seq) = record.seq {
                let session = match last_session {
                    Some((name, of, id)) if of == device && *name == item.session => id,
                    _ => known.session(&tx, device, &item.session, item.recv_ts)?,
                };
                last_session = Some((&item.session, device, session));
                seen(&mut seen_sessions, session, item.recv_ts);
                let hash = fingerprint(record);
                let inserted = insert_received.execute(params![session, seq as i64, hash])?;
                if inserted == 0 {
                    let stored: Option<i64> = tx
                        .prepare_cached(
                            "SELECT hash FROM received WHERE session_id = ?1 AND seq = ?2",
                        )?
                        .query_row(params![session, seq as i64], |row| row.get(0))?;
                    outcomes.push(if stored.is_none_or(|stored| stored == hash) {
                        Written::Duplicate
                    } else {
                        Written::Conflict
                    });
                    continue;
                }
            }
            let ts = record.ts.unwrap_or(item.recv_ts);
            if let (Some(stream_id), false) =
                (ready, record.values.is_empty() && record.texts.is_empty())
            {
                // The usual case: a known stream with known fields.
                values_json(&record.values, &record.texts, &mut self.vals);
                insert_sample.execute(params![stream_id, ts, item.recv_ts, self.vals])?;
            } else if !record.values.is_empty() || !record.texts.is_empty() {
                let stream = known.stream_or_add(&tx, device, &record.stream)?;
                let (stream_id, mut added) = (stream.id, 0);
                for (field, _) in &record.values {
                    if !stream.fields.contains(field.as_str()) {
                        add_series(&tx, device, &record.stream, field)?;
                        stream.fields.insert(field.clone());
                        added += 1;
                    }
                }
                for (field, _) in &record.texts {
                    // Text fields are kept apart from numeric ones (a NUL never starts a
                    // checked name, so the two cannot collide).
                    let key = format!("\0{field}");
                    if !stream.fields.contains(key.as_str()) {
                        tx.prepare_cached(
                            "INSERT OR IGNORE INTO text_fields (device_id, stream, field)
                             VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![device, record.stream, field])?;
                        stream.fields.insert(key);
                        added += 1;
                    }
                }
                if added > 0 {
                    known.load(&tx, device)?.fields += added;
                }
                values_json(&record.values, &record.texts, &mut self.vals);
                insert_sample.execute(params![stream_id, ts, item.recv_ts, self.vals])?;
            }
            if let Some(frame) = &record.frame {
                // A frame's stream is one of the device's streams too.
                known.stream_or_add(&tx, device, &record.stream)?;
                tx.prepare_cached(
                    "INSERT INTO frames (device_id, stream, ts, recv_ts, width, height)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    device,
                    record.stream,
                    ts,
                    item.recv_ts,
                    frame.width,
                    frame.height
                ])?;
                let frame_id = tx.last_insert_rowid();
                let mut insert = tx.prepare_cached(
                    "INSERT INTO detections (frame_id, label, score, x, y, w, h)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for d in &frame.detections {
                    let [x, y, w, h] = d.bbox;
                    insert.execute(params![frame_id, d.label, d.score, x, y, w, h])?;
                }
            }
            outcomes.push(Written::New);
            match committed.last_mut() {
                Some((last, n)) if Arc::ptr_eq(last, &item.device) => *n += 1,
                _ => committed.push((&item.device, 1)),
            }
        }
        drop((insert_received, insert_sample));
        for (device, at) in latest(seen_devices) {
            tx.prepare_cached("UPDATE devices SET last_seen = max(last_seen, ?2) WHERE id = ?1")?
                .execute(params![device, at])?;
        }
        for (session, at) in latest(seen_sessions) {
            tx.prepare_cached("UPDATE sessions SET last_recv = max(last_recv, ?2) WHERE id = ?1")?
                .execute(params![session, at])?;
        }
        tx.commit()?;
        let now = now_secs() as u64;
        for (device, n) in committed {
            self.config.activity.committed(device, n, now);
        }
        Ok(outcomes)
    }

    /// Deletes data older than the retention period, at most once a minute.
    fn retention(&mut self) {
        let Some(keep) = self.config.retention else {
            return;
        };
        let now = now_secs();
        if now - self.last_retention < 60.0 {
            return;
        }
        self.last_retention = now;
        let cutoff = now - keep.as_secs_f64();
        if let Err(err) = delete_older(&mut self.conn, cutoff, now) {
            tracing::warn!(error = %err, "retention pass failed; will try again");
        }
        self.forget();
    }
}

/// A committed record as the live feed and the dashboard see it.
pub(crate) fn event(item: &Item) -> String {
    let record = &item.record;
    let mut event = serde_json::json!({
        "device": &*item.device,
        "stream": record.stream,
        "ts": record.ts.unwrap_or(item.recv_ts),
        "recv_ts": item.recv_ts,
    });
    if !record.values.is_empty() {
        let values: serde_json::Map<String, serde_json::Value> = record
            .values
            .iter()
            .map(|(field, value)| (field.clone(), (*value).into()))
            .collect();
        event["values"] = values.into();
    }
    if !record.texts.is_empty() {
        let texts: serde_json::Map<String, serde_json::Value> = record
            .texts
            .iter()
            .map(|(field, text)| (field.clone(), text.as_str().into()))
            .collect();
        event["texts"] = texts.into();
    }
    if let Some(frame) = &record.frame {
        event["frame"] = serde_json::json!({ "w": frame.width, "h": frame.height });
        event["detections"] = frame
            .detections
            .iter()
            .map(|d| serde_json::json!({ "label": d.label, "score": d.score, "box": d.bbox }))
            .collect();
    }
    event.to_string()
}

/// One retention pass (Unix seconds): what was *received* before `cutoff` goes, so the
/// device's clock decides nothing — a record dated 2000 is kept for the whole period after it
/// arrived, one dated 2099 goes when its period is over. Deleted: received before `cutoff` and
/// dated before `cutoff` or after `now` (both ends of the time index, which is what makes the
/// pass cheap); a record dated inside the period but received before it (a clock that ran
/// ahead) goes once its date leaves the period.
pub(crate) fn delete_older(conn: &mut Connection, cutoff: f64, now: f64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    // Through the (stream, time) and (device, time) indexes, one stream or device at a time
    // (CROSS JOIN keeps that order: two range searches per stream, never a scan of the table).
    tx.execute(
        "DELETE FROM samples WHERE rowid IN (
             SELECT sa.rowid FROM streams st CROSS JOIN samples sa ON sa.stream_id = st.id
                 AND (sa.ts < ?1 OR sa.ts > ?2) AND sa.recv_ts < ?1)",
        params![cutoff, now],
    )?;
    tx.execute(
        "DELETE FROM detections WHERE frame_id IN (
             SELECT f.id FROM devices d CROSS JOIN frames f ON f.device_id = d.id
                 AND (f.ts < ?1 OR f.ts > ?2) AND f.recv_ts < ?1)",
        params![cutoff, now],
    )?;
    tx.execute(
        "DELETE FROM frames WHERE id IN (
             SELECT f.id FROM devices d CROSS JOIN frames f ON f.device_id = d.id
                 AND (f.ts < ?1 OR f.ts > ?2) AND f.recv_ts < ?1)",
        params![cutoff, now],
    )?;
    // Idempotency keys of sessions silent since the cutoff: a resend that late is new data.
    tx.execute(
        "DELETE FROM received WHERE session_id IN (SELECT id FROM sessions WHERE last_recv < ?1)",
        params![cutoff],
    )?;
    tx.execute("DELETE FROM sessions WHERE last_recv < ?1", params![cutoff])?;
    tx.commit()
}

/// Notes that `id` was written to at `at` (consecutive repeats folded into one entry).
fn seen(list: &mut Vec<(i64, f64)>, id: i64, at: f64) {
    match list.last_mut() {
        Some((last, when)) if *last == id => *when = when.max(at),
        _ => list.push((id, at)),
    }
}

/// Each id once, with its latest time.
fn latest(mut list: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
    list.sort_unstable_by_key(|&(id, _)| id);
    list.dedup_by(|later, kept| {
        if later.0 != kept.0 {
            return false;
        }
        kept.1 = kept.1.max(later.1);
        true
    });
    list
}

fn cached_session(
    conn: &Connection,
    cache: &mut HashMap<(i64, Arc<str>), i64>,
    device: i64,
    name: &Arc<str>,
    at: f64,
) -> rusqlite::Result<i64> {
    if let Some(&id) = cache.get(&(device, Arc::clone(name))) {
        return Ok(id);
    }
    conn.prepare_cached(
        "INSERT INTO sessions (device_id, name, last_recv) VALUES (?1, ?2, ?3)
         ON CONFLICT (device_id, name) DO NOTHING",
    )?
    .execute(params![device, &**name, at])?;
    let id = conn
        .prepare_cached("SELECT id FROM sessions WHERE device_id = ?1 AND name = ?2")?
        .query_row(params![device, &**name], |row| row.get(0))?;
    cache.insert((device, Arc::clone(name)), id);
    Ok(id)
}

/// Records that `device`'s `stream` has `field` (what `/api/streams` lists).
fn add_series(conn: &Connection, device: i64, stream: &str, field: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO series (device_id, stream, field) VALUES (?1, ?2, ?3)
         ON CONFLICT (device_id, stream, field) DO NOTHING",
    )?
    .execute(params![device, stream, field])?;
    Ok(())
}

/// Writes `values` as one JSON object into `out`. Field names are checked names (letters,
/// digits and `_.:/-`), so they need no escaping; values are finite, and Rust's shortest
/// round-trip form of a finite `f64` (`1.0`, `0.1`, `1e300`) is a JSON number.
fn values_json(values: &[(String, f64)], texts: &[(String, String)], out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    out.push('{');
    for (i, (field, value)) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        debug_assert!(!field.contains(['"', '\\']) && value.is_finite());
        let _ = write!(out, "\"{field}\":{value:?}");
    }
    for (i, (field, text)) in texts.iter().enumerate() {
        if i > 0 || !values.is_empty() {
            out.push(',');
        }
        // Text is the device's: serde_json escapes it.
        let text = serde_json::Value::from(text.as_str());
        let _ = write!(out, "\"{field}\":{text}");
    }
    out.push('}');
}

/// The time now, Unix seconds.
/// True when the database at `db` has no device in it, so nothing was ever stored there (a
/// hub that failed to start may remove a database it created).
pub fn holds_nothing(db: &std::path::Path) -> bool {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    Connection::open_with_flags(db, flags)
        .and_then(|conn| {
            conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM devices)", [], |row| {
                row.get::<_, bool>(0)
            })
        })
        .unwrap_or(false)
}

/// Removes a SQLite database and its WAL files (what is missing is skipped).
pub fn remove_database(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.to_owned().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

/// The time now, in Unix seconds.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Line, parse_line};

    struct Db(PathBuf);

    impl Db {
        fn new(tag: &str) -> Db {
            let dir =
                std::env::temp_dir().join(format!("socketeer-store-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir");
            Db(dir)
        }

        fn config(&self) -> StoreConfig {
            StoreConfig {
                path: self.0.join("hub.db"),
                durability: Durability::Full,
                retention: None,
                max_batch: 1000,
                live: None,
                activity: Arc::default(),
                queue: QueueLimits::default(),
                cardinality: Cardinality::default(),
            }
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn item(device: &str, session: &str, line: &str) -> Item {
        let Ok(Line::Record(record)) = parse_line(line) else {
            panic!("bad test line {line}");
        };
        Item {
            device: device.into(),
            session: session.into(),
            record,
            recv_ts: 1_800_000_000.0,
        }
    }

    /// Writes in one lane, every record expected to reach an outcome.
    async fn write(store: &Store, items: Vec<Item>) -> Vec<Stored> {
        store
            .write(&"test".into(), items)
            .await
            .into_iter()
            .map(|outcome| outcome.expect("write"))
            .collect()
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |row| row.get(0)).expect(sql)
    }

    /// Holds the database's write lock (the writer's commits wait, up to its busy timeout of
    /// 5 s) until dropped.
    struct WriteLock(Connection);

    impl WriteLock {
        fn take(db: &Db) -> WriteLock {
            let conn = Connection::open(db.0.join("hub.db")).expect("open");
            conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
            WriteLock(conn)
        }
    }

    impl Drop for WriteLock {
        fn drop(&mut self) {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }

    fn readings(device: &str, from: u64, n: u64) -> Vec<Item> {
        (from..from + n)
            .map(|k| {
                item(
                    device,
                    "s",
                    &format!(r#"{{"stream":"imu","seq":{k},"values":{{"ax":{k}}}}}"#),
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_waits_for_the_writer_is_bounded_and_unanswered_senders_get_half() {
        let db = Db::new("bounded");
        let mut config = db.config();
        config.queue = QueueLimits {
            records: 32,
            bytes: 1024 * 1024,
        };
        let (store, writer) = Store::open(config).expect("open");
        let lock = WriteLock::take(&db);
        let udp: Arc<str> = "influx 127.0.0.1".into();
        let other: Arc<str> = "influx 127.0.0.2".into();
        // A datagram's records are queued while its lane has room (a quarter: 8)...
        let first = store.try_submit(&udp, readings("u", 0, 8)).expect("room");
        assert!(
            store.try_submit(&udp, readings("u", 8, 1)).is_none(),
            "its lane is full"
        );
        // ...and while the queue keeps half free: another source gets 8, not 9.
        assert!(
            store.try_submit(&other, readings("v", 0, 9)).is_none(),
            "past half"
        );
        let second = store
            .try_submit(&other, readings("v", 0, 8))
            .expect("room for half");
        // A sender that waits still finds room at once...
        let robot: Arc<str> = "r1".into();
        let acked = store.submit(&robot, readings("r1", 0, 8)).await;
        // ...until its lane's share is taken: then it waits for the writer.
        let mut next = Box::pin(store.submit(&robot, readings("r1", 8, 1)));
        assert!(
            futures_util::poll!(&mut next).is_pending(),
            "no room while the writer is held"
        );
        drop(lock);
        let next = next.await;
        for outcomes in [first.await, second.await, acked.await, next.await] {
            assert!(
                outcomes
                    .iter()
                    .all(|o| *o.as_ref().expect("stored") == Stored::New)
            );
        }
        drop(store);
        writer.join().expect("writer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_takes_senders_in_turn_and_cuts_large_submissions() {
        let db = Db::new("turns");
        let mut config = db.config();
        config.max_batch = 4;
        let (store, writer) = Store::open(config).expect("open");
        let lock = WriteLock::take(&db);
        let hog: Arc<str> = "hog".into();
        let mut hogs = Vec::new();
        for job in 0..10 {
            hogs.push(store.submit(&hog, readings("hog", job * 4, 4)).await);
        }
        // One submission larger than a job: cut, each part in its turn.
        let big = store
            .submit(&hog, readings("hog", 100, JOB_RECORDS as u64 + 10))
            .await;
        let robot = store.submit(&"r1".into(), readings("r1", 0, 1)).await;
        drop(lock);
        assert_eq!(robot.await.len(), 1);
        let big = big.await;
        assert_eq!(big.len(), JOB_RECORDS + 10);
        assert!(
            big.iter()
                .all(|o| *o.as_ref().expect("stored") == Stored::New)
        );
        for hog in hogs {
            hog.await;
        }
        let conn = Connection::open(db.0.join("hub.db")).expect("open");
        let position = count(
            &conn,
            "SELECT s.rowid FROM samples s JOIN streams st ON st.id = s.stream_id
             JOIN devices d ON d.id = st.device_id WHERE d.name = 'r1'",
        );
        // Held, the writer had taken at most the first job; then one hog job, then the robot's
        // — not after the 40 records queued before it.
        assert!(position <= 9, "the robot's record was row {position}");
        drop(store);
        writer.join().expect("writer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_idempotent_by_device_session_and_seq() {
        let db = Db::new("idem");
        let (store, writer) = Store::open(db.config()).expect("open");
        let line =
            |seq: u64| format!(r#"{{"stream":"imu","seq":{seq},"values":{{"ax":{seq},"ay":1}}}}"#);
        let first: Vec<Item> = (0..10).map(|s| item("r1", "a", &line(s))).collect();
        assert_eq!(write(&store, first.clone()).await, vec![Stored::New; 10]);
        // A resend of all ten, and the same numbers in another session and from another device.
        assert_eq!(write(&store, first).await, vec![Stored::Duplicate; 10]);
        let other_session = vec![item("r1", "b", &line(3))];
        assert_eq!(write(&store, other_session).await, [Stored::New]);
        let other_device = vec![item("r2", "a", &line(3))];
        assert_eq!(write(&store, other_device).await, [Stored::New]);
        // Duplicates inside one batch.
        let twice = vec![item("r1", "c", &line(1)), item("r1", "c", &line(1))];
        assert_eq!(write(&store, twice).await, [Stored::New, Stored::Duplicate]);
        // Without seq there is no key: each one is stored.
        let plain = vec![item("r1", "a", r#"{"stream":"t","values":{"c":20.5}}"#); 2];
        assert_eq!(write(&store, plain).await, [Stored::New; 2]);
        drop(store);
        writer.join().expect("writer");
        let reader = Connection::open(db.config().path).expect("open");
        assert_eq!(count(&reader, "SELECT count(*) FROM points"), 2 * 13 + 2);
        assert_eq!(count(&reader, "SELECT count(*) FROM devices"), 2);
        assert_eq!(count(&reader, "SELECT count(*) FROM series"), 2 + 2 + 1);
        let check: String = reader
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("check");
        assert_eq!(check, "ok");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_detections_schema_version_and_retention() {
        let db = Db::new("frames");
        let (store, writer) = Store::open(db.config()).expect("open");
        let frame = |ts: f64| {
            format!(
                r#"{{"stream":"cam","ts":{ts},"frame":{{"w":640,"h":480}},"detections":[
                {{"label":"person","score":0.9,"box":[1,2,3,4]}},{{"label":"<b>dog</b>","score":0.5,"box":[5,6,7,8]}}]}}"#
            )
        };
        let items = vec![
            item("r1", "s", &frame(1_000_000_000.0)),
            item("r1", "s", &frame(2_050_000_000.0)),
            item(
                "r1",
                "s",
                r#"{"stream":"imu","ts":1000000000,"values":{"ax":1}}"#,
            ),
            item(
                "r1",
                "s",
                r#"{"stream":"imu","ts":2050000000,"values":{"ax":2}}"#,
            ),
        ];
        write(&store, items).await;
        drop(store);
        writer.join().expect("writer");
        let mut conn = Connection::open(db.config().path).expect("open");
        assert_eq!(count(&conn, "SELECT count(*) FROM frames"), 2);
        assert_eq!(count(&conn, "SELECT count(*) FROM detections"), 4);
        let label: String = conn
            .query_row(
                "SELECT label FROM detections WHERE score = 0.5 LIMIT 1",
                [],
                |row| row.get(0),
            )
            .expect("label");
        assert_eq!(label, "<b>dog</b>", "stored as text, as sent");
        assert_eq!(count(&conn, "PRAGMA user_version"), MIGRATIONS.len() as i64);
        // By receive time (all of it arrived at 1.8e9): a cutoff before that keeps even the
        // records dated 2001.
        delete_older(&mut conn, 1_500_000_000.0, 1_500_000_000.0 + 86_400.0).expect("retention");
        assert_eq!(count(&conn, "SELECT count(*) FROM frames"), 2);
        assert_eq!(count(&conn, "SELECT count(*) FROM points"), 2);
        // A period that ended after their arrival: the record dated before the cutoff goes,
        // the one dated inside the period (a clock ahead, 2034) stays until its date leaves it.
        delete_older(&mut conn, 1_800_000_000.0 + 1.0, 2_100_000_000.0).expect("retention");
        assert_eq!(count(&conn, "SELECT count(*) FROM frames"), 1);
        assert_eq!(count(&conn, "SELECT count(*) FROM detections"), 2);
        assert_eq!(count(&conn, "SELECT count(*) FROM points"), 1);
        // Dated after "now" (the far future), received before the cutoff: it goes too.
        delete_older(&mut conn, 1_800_000_000.0 + 1.0, 1_900_000_000.0).expect("retention");
        assert_eq!(count(&conn, "SELECT count(*) FROM frames"), 0);
        assert_eq!(count(&conn, "SELECT count(*) FROM points"), 0);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        // Reopening applies nothing twice; a newer schema is refused with a clear message.
        drop(conn);
        let (store, writer) = Store::open(db.config()).expect("reopen");
        drop(store);
        writer.join().expect("writer");
        let conn = Connection::open(db.config().path).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = Store::open(db.config()).err().expect("refused");
        assert!(
            format!("{err:#}").contains("schema version 99, newer"),
            "{err:#}"
        );
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_1_points_move_into_samples() {
        let db = Db::new("migrate");
        let conn = Connection::open(db.config().path).expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("version 1");
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO devices VALUES (1, 'r1', 10, 20);
             INSERT INTO series VALUES (1, 1, 'imu', 'ax'), (2, 1, 'imu', 'ay'), (3, 1, 't', 'c');
             INSERT INTO points VALUES (1, 1000000100, 101, 0.5), (2, 1000000100, 101, -1),
                                       (1, 1000000200, 201, 1.5), (3, 1000000150, 151, 20.25);",
        )
        .expect("v1 data");
        drop(conn);
        let (store, writer) = Store::open(db.config()).expect("migrate");
        // New data lands next to the migrated, in a stream the migration created.
        let new = vec![item(
            "r1",
            "s",
            r#"{"stream":"imu","ts":1000000300,"values":{"ax":2.5}}"#,
        )];
        write(&store, new).await;
        drop(store);
        writer.join().expect("writer");
        let conn = Connection::open(db.config().path).expect("open");
        assert_eq!(count(&conn, "PRAGMA user_version"), MIGRATIONS.len() as i64);
        assert_eq!(count(&conn, "SELECT count(*) FROM streams"), 2);
        let mut stmt = conn
            .prepare("SELECT ts, vals FROM samples ORDER BY ts")
            .expect("samples");
        let samples: Vec<(f64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            samples,
            [
                (1_000_000_100.0, r#"{"ax":0.5,"ay":-1.0}"#.to_owned()),
                (1_000_000_150.0, r#"{"c":20.25}"#.to_owned()),
                (1_000_000_200.0, r#"{"ax":1.5}"#.to_owned()),
                (1_000_000_300.0, r#"{"ax":2.5}"#.to_owned()),
            ]
        );
        // The view still shows one row per value, with its series.
        let mut stmt = conn
            .prepare("SELECT series_id, ts, recv_ts, value FROM points ORDER BY ts, series_id")
            .expect("points");
        let points: Vec<(i64, f64, f64, f64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            points,
            [
                (1, 1_000_000_100.0, 101.0, 0.5),
                (2, 1_000_000_100.0, 101.0, -1.0),
                (3, 1_000_000_150.0, 151.0, 20.25),
                (1, 1_000_000_200.0, 201.0, 1.5),
                (1, 1_000_000_300.0, 1_800_000_000.0, 2.5),
            ]
        );
    }

    #[test]
    fn values_are_written_as_a_json_object() {
        let mut out = String::from("left over");
        let values = [
            ("ax".to_owned(), 1.0),
            ("b.c:d/e-f".to_owned(), -0.1),
            ("big".to_owned(), 1e300),
            ("tiny".to_owned(), 5e-324),
        ];
        values_json(&values, &[], &mut out);
        assert_eq!(
            out,
            r#"{"ax":1.0,"b.c:d/e-f":-0.1,"big":1e300,"tiny":5e-324}"#
        );
        let back: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(back["big"].as_f64(), Some(1e300));
        assert_eq!(back["tiny"].as_f64(), Some(5e-324));
    }
    #[test]
    fn devices_and_sessions_seen_keep_their_latest_time() {
        let mut list = Vec::new();
        for (id, at) in [(2, 1.0), (2, 3.0), (1, 2.0), (2, 2.5), (1, 1.0), (3, 0.5)] {
            seen(&mut list, id, at);
        }
        assert_eq!(list.len(), 5, "the repeat of 2 folded");
        assert_eq!(latest(list), [(1, 2.0), (2, 3.0), (3, 0.5)]);
    }
    /// The write-ahead log's checkpoint sequence number: it grows each time the log starts over.
    fn log_restarts(db: &Db) -> u32 {
        let mut wal = db.config().path.into_os_string();
        wal.push("-wal");
        let header = std::fs::read(&wal).unwrap_or_default();
        header
            .get(12..16)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[test]
    fn after_a_background_pass_the_writer_copies_the_rest_and_the_log_starts_over() {
        let db = Db::new("inline");
        let conn = open_writer(&db.config()).expect("open");
        // A checkpointer whose background thread does nothing: only the writer's step runs.
        let (wake, _commits) = std::sync::mpsc::sync_channel(1);
        let checkpoints = Checkpointer {
            wake,
            caught_up: Arc::new(AtomicBool::new(false)),
            thread: std::thread::spawn(|| {}),
        };
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        let first = log_restarts(&db);
        checkpoints.committed(&conn);
        conn.execute("INSERT INTO t VALUES (2)", []).expect("write");
        assert_eq!(
            log_restarts(&db),
            first,
            "no pass finished: the log goes on"
        );
        checkpoints.caught_up.store(true, Ordering::Release);
        checkpoints.committed(&conn);
        assert!(
            !checkpoints.caught_up.load(Ordering::Acquire),
            "the pass is taken"
        );
        conn.execute("INSERT INTO t VALUES (3)", []).expect("write");
        assert_eq!(
            log_restarts(&db),
            first + 1,
            "everything copied: the log started over"
        );
        checkpoints.finish();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_starts_over_while_writes_go_on_and_is_emptied_at_the_end() {
        let db = Db::new("wal");
        let (store, writer) = Store::open(db.config()).expect("open");
        let first = log_restarts(&db);
        // Four writers with several batches queued each: the writer is never idle, so a
        // checkpoint on another connection alone could never copy the whole log.
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            writers.push(tokio::spawn(async move {
                let mut pending = std::collections::VecDeque::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch = (n..n + 50)
                        .map(|k| {
                            let line =
                                format!(r#"{{"stream":"imu","seq":{k},"values":{{"ax":{k}}}}}"#);
                            item("r1", &format!("s{w}"), &line)
                        })
                        .collect();
                    pending.push_back(store.submit(&"test".into(), batch).await);
                    n += 50;
                    if pending.len() > 4 {
                        let answer = pending.pop_front().expect("queued").await;
                        assert!(answer.iter().all(Result::is_ok), "stored");
                    }
                }
                for answer in pending {
                    assert!(answer.await.iter().all(Result::is_ok), "stored");
                }
                n
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        // Bounded: until the log has started over twice while the writes went on.
        while log_restarts(&db) < first + 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log never started over"
            );
            tokio::task::yield_now().await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut n = 0;
        for w in writers {
            n += w.await.expect("writer task");
        }
        drop(store);
        writer.join().expect("writer");
        let mut wal = db.config().path.into_os_string();
        wal.push("-wal");
        let left = std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert_eq!(left, 0, "the log was emptied into the database");
        let conn = Connection::open(db.config().path).expect("open");
        assert_eq!(count(&conn, "SELECT count(*) FROM samples"), n as i64);
    }

    #[test]
    fn rates_count_the_last_ten_seconds() {
        let activity = Activity::default();
        let robot: Arc<str> = "r1".into();
        activity.committed(&robot, 50, 1000);
        activity.committed(&robot, 30, 1005);
        let counts = activity.snapshot()[&robot].clone();
        assert_eq!(counts.records, 80);
        assert_eq!(
            counts.rate(1005),
            80.0 / 6.0,
            "over the 6 s it has been sending"
        );
        assert_eq!(counts.rate(1009), 8.0);
        assert_eq!(counts.rate(1010), 3.0, "second 1000 has left the window");
        assert_eq!(counts.rate(1100), 0.0);
        activity.committed(&robot, 10, 1100);
        let counts = activity.snapshot()[&robot].clone();
        assert_eq!(counts.rate(1100), 1.0, "old buckets cleared");
        activity.auth_failed("r1");
        activity.auth_failed("stranger");
        let all = activity.snapshot();
        assert_eq!(all[&robot].auth_failures, 1);
        assert_eq!(all["stranger"].auth_failures, 1);
        assert_eq!(all["stranger"].rate(5), 0.0);
    }
}
