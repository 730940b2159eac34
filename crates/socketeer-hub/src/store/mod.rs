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

mod activity;
mod checkpoint;
pub(crate) mod pg;
mod queue;
mod reads;
mod schema;
mod writer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::record::Record;
use crate::wire::{Reason, Refusal};

pub(crate) use activity::Activity;
use checkpoint::Checkpointer;
pub use pg::PostgresUrl;
use queue::{Budget, Job, Room};
pub(crate) use reads::Reader;
pub(crate) use reads::{
    Cell, DetectionQuery, Detections, DeviceRow, ExportQuery, ExportRow, FrameQuery, FrameRow,
    ImageQuery, Recorded, RecordingQuery, RecordingStream, Series, SeriesPoints, SeriesQuery,
    StoredImage, Streams,
};
use schema::open_writer;
#[cfg(test)]
pub(crate) use writer::committed;
use writer::{Engine, Writer};

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
#[derive(Clone)]
pub(crate) struct StoreConfig {
    /// The SQLite file, unless `postgres` is set.
    pub(crate) path: PathBuf,
    /// The PostgreSQL database to store in instead of a SQLite file.
    pub(crate) postgres: Option<PostgresUrl>,
    pub(crate) durability: Durability,
    /// Data older than this (by its timestamp) is deleted; `None` keeps everything.
    pub(crate) retention: Option<Duration>,
    /// Most records in one transaction.
    pub(crate) max_batch: usize,
    /// Where committed records are announced (one JSON object each), if anyone listens.
    pub(crate) live: Option<tokio::sync::broadcast::Sender<Arc<crate::live::Committed>>>,
    /// Where each stream's newest committed record is kept, if anywhere.
    pub(crate) newest: Option<Arc<crate::live::Newest>>,
    /// Counts of committed records by device.
    pub(crate) activity: Arc<Activity>,
    /// How much may wait for the writer.
    pub(crate) queue: QueueLimits,
    /// How many devices, and streams and fields per device, are kept.
    pub(crate) cardinality: Cardinality,
    /// How long, and how many bytes of, camera images are kept.
    pub(crate) images: ImageLimits,
    /// How often the retention pass runs.
    pub(crate) retention_every: Duration,
    /// Told of the (device, stream) pairs a retention pass left without data (and retired).
    pub(crate) on_retired: Option<Retired>,
}

/// Who is told of retired streams: (device, stream) pairs, after their commit.
pub(crate) type Retired = Arc<dyn Fn(Vec<(String, String)>) + Send + Sync>;

/// How long, and how many bytes of, camera images are kept.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ImageLimits {
    /// Images received longer ago go (their frames and detections stay).
    pub(crate) retention: Option<Duration>,
    /// Past this many bytes of images, the oldest go first.
    pub(crate) budget: Option<u64>,
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
/// About the most camera images one transaction carries, in KiB: a batch of frames is cut
/// short, so a sender's wait stays some milliseconds of writing and syncing. Readings are
/// bounded by `--max-batch` (8192) alone: each costs the writer about a microsecond, and
/// every commit costs a sync and a rewrite of each index's last pages, so the more a
/// transaction holds the better (8192 readings a transaction carried 13% more a second
/// than 2048 did).
const BATCH_IMAGE_KIB: usize = 2048;
/// A lane may hold at most this fraction of the queue (in records and in bytes).
const LANE_SHARE: usize = 4;

/// One record to store, with who sent it and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) device: Arc<str>,
    /// The session its `seq` belongs to.
    pub(crate) session: Arc<str>,
    pub(crate) record: Record,
    /// Receive time, Unix seconds.
    pub(crate) recv_ts: f64,
    /// What to add to the record's own time to put it on the hub's clock (its device's clock
    /// offset when it was received; 0 when unknown).
    pub(crate) offset: f64,
    /// The record's [`fingerprint`](writer::fingerprint) when it is numbered (else 0), and its
    /// values as the samples table stores them (JSON text; empty without values): worked out
    /// by the connection that received it, so the one writer thread does not have to.
    pub(crate) hash: i64,
    pub(crate) vals: String,
}

impl Item {
    /// A record from `device`, in the record's own session if it names one, else `session`.
    pub(crate) fn new(device: &Arc<str>, session: &Arc<str>, record: Record, recv_ts: f64) -> Item {
        let hash = if record.seq.is_some() {
            writer::fingerprint(&record)
        } else {
            0
        };
        let mut vals = String::new();
        if !record.values.is_empty() || !record.texts.is_empty() {
            writer::values_json(&record.values, &record.texts, &mut vals);
        }
        Item {
            device: Arc::clone(device),
            session: record
                .session
                .as_deref()
                .map_or_else(|| Arc::clone(session), Arc::from),
            record,
            recv_ts,
            offset: 0.0,
            hash,
            vals,
        }
    }
}

impl Item {
    /// Its time on the hub's clock: its own corrected by its device's offset, else when it was
    /// received.
    pub(crate) fn ts(&self) -> f64 {
        self.record.ts.map_or(self.recv_ts, |ts| ts + self.offset)
    }

    /// Its own time as sent, when it differs from [`ts`](Item::ts) (a corrected clock).
    pub(crate) fn device_ts(&self) -> Option<f64> {
        self.record.ts.filter(|_| self.offset != 0.0)
    }

    /// True when it carries an image.
    pub(crate) fn has_image(&self) -> bool {
        self.record
            .frame
            .as_ref()
            .is_some_and(|f| f.image.is_some())
    }

    /// The bytes of the camera image it carries (0 without one).
    pub(crate) fn image_bytes(&self) -> usize {
        let image = self.record.frame.as_ref().and_then(|f| f.image.as_ref());
        image.map_or(0, |i| i.data.len())
    }

    /// About how much memory the item holds, for the writer queue's byte bound.
    pub(crate) fn weight(&self) -> usize {
        let r = &self.record;
        let strings = |list: &[(String, String)]| {
            list.iter()
                .map(|(a, b)| a.len() + b.len() + 48)
                .sum::<usize>()
        };
        std::mem::size_of::<Item>()
            + self.vals.len()
            + r.stream.len()
            + r.values.iter().map(|(f, _)| f.len() + 32).sum::<usize>()
            + strings(&r.texts)
            + r.frame.as_ref().map_or(0, |f| {
                f.detections
                    .iter()
                    .map(|d| d.label.len() + 64)
                    .sum::<usize>()
            })
            + self.image_bytes()
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

/// A handle to the writer; clone it freely. The writer thread ends once every handle is gone,
/// after committing what was queued.
#[derive(Clone)]
pub(crate) struct Store {
    jobs: mpsc::UnboundedSender<Job>,
    budget: Arc<Budget>,
    cardinality: Cardinality,
    reader: Arc<Reader>,
}

impl Store {
    /// Opens (creating and migrating) the database and starts the writer thread. Join the
    /// returned handle after dropping every `Store` to know that all is committed.
    pub(crate) fn open(
        config: StoreConfig,
    ) -> anyhow::Result<(Store, std::thread::JoinHandle<()>)> {
        let (engine, reader) = match config.postgres.clone() {
            None => {
                let conn = open_writer(&config)?;
                let reader = Reader::new(config.path.clone());
                let checkpoints = Checkpointer::start(&config)?;
                (
                    Engine::Sqlite(Box::new(Writer::new(conn, config, checkpoints))),
                    reader,
                )
            }
            // The synchronous client runs its own runtime: opened on a thread of its own, as
            // the caller may be inside one.
            #[cfg(feature = "postgres")]
            Some(url) => std::thread::scope(|scope| {
                scope
                    .spawn(move || open_postgres(url, config))
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("opening PostgreSQL failed")))
            })?,
            #[cfg(not(feature = "postgres"))]
            Some(url) => anyhow::bail!("{url}: this build has no PostgreSQL support"),
        };
        let reader = Arc::new(reader);
        // Unbounded as a channel, bounded by the budget: every job holds its room.
        let (jobs, queue) = mpsc::unbounded_channel();
        let budget = Arc::new(Budget::new(engine.config().queue));
        let cardinality = engine.config().cardinality;
        let writer = std::thread::Builder::new()
            .name("hub-writer".into())
            .spawn(move || writer::run(engine, queue))
            .context("cannot start the storage thread")?;
        Ok((
            Store {
                jobs,
                budget,
                cardinality,
                reader,
            },
            writer,
        ))
    }

    /// Hands one job to the writer; the answer to come (already failed if the writer is gone).
    fn send(&self, lane: &Arc<str>, items: Vec<Item>, room: Room) -> Part {
        let count = items.len();
        let (done, answer) = oneshot::channel();
        let image_bytes: usize = items.iter().map(Item::image_bytes).sum();
        let job = Job {
            lane: Arc::clone(lane),
            items,
            image_kib: u32::try_from(image_bytes.div_ceil(1024)).unwrap_or(u32::MAX),
            done,
            _room: room,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            let _ = job.done.send((Err(stopped()), job.items));
        }
        (count, answer)
    }

    /// Queues records for the writer in `lane`'s turn (waiting while the queue is full) and
    /// returns the answer to come: one outcome per record, once all are committed or failed.
    pub(crate) async fn submit(&self, lane: &Arc<str>, items: Vec<Item>) -> Pending {
        let mut parts = VecDeque::new();
        for (job, records, kib) in self.budget.cut(items) {
            let part = match self.budget.wait(lane, records, kib).await {
                Ok(room) => self.send(lane, job, room),
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
            parts.push_back(self.send(lane, job, Room(room)));
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

/// The reads: each runs on a blocking thread with a pooled read-only connection.
impl Store {
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || work(&reader))
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the query stopped".into())))
    }

    /// The read side, for work that runs on a blocking thread of its own (a recording).
    pub(crate) fn reader(&self) -> Arc<Reader> {
        Arc::clone(&self.reader)
    }

    /// Every device, by name.
    pub(crate) async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        self.read(Reader::devices).await
    }

    /// What `device` has sent; `None` if there is no such device.
    pub(crate) async fn streams(&self, device: String) -> Result<Option<Streams>, StoreError> {
        self.read(move |r| r.streams(&device)).await
    }

    /// A series over a time range, raw or in buckets; `None` if there is no such series.
    pub(crate) async fn series(&self, query: SeriesQuery) -> Result<Option<Series>, StoreError> {
        self.read(move |r| r.series(&query)).await
    }

    /// Frames with their matching detections, newest first.
    pub(crate) async fn detections(&self, query: DetectionQuery) -> Result<Detections, StoreError> {
        self.read(move |r| r.detections(&query)).await
    }

    /// A device's frames in a range, in time order, and whether there were more.
    pub(crate) async fn frames(
        &self,
        query: FrameQuery,
    ) -> Result<(Vec<FrameRow>, bool), StoreError> {
        self.read(move |r| r.frames(&query)).await
    }

    /// One stored image, by frame or by time.
    pub(crate) async fn image(&self, query: ImageQuery) -> Result<Option<StoredImage>, StoreError> {
        self.read(move |r| r.image(&query)).await
    }

    /// An export's rows in chunks of up to `chunk`, read as the receiver takes them (a few
    /// chunks ahead) and no further once it is dropped; an error ends it.
    pub(crate) fn export(
        &self,
        query: ExportQuery,
        chunk: usize,
    ) -> mpsc::Receiver<Result<Vec<ExportRow>, StoreError>> {
        let (tx, rx) = mpsc::channel(EXPORT_CHUNKS_AHEAD);
        let reader = Arc::clone(&self.reader);
        let chunk = chunk.max(1);
        tokio::task::spawn_blocking(move || {
            let mut rows = Vec::with_capacity(chunk);
            let result = reader.export(&query, |row| {
                rows.push(row);
                rows.len() < chunk
                    || tx
                        .blocking_send(Ok(std::mem::replace(&mut rows, Vec::with_capacity(chunk))))
                        .is_ok()
            });
            let _ = tx.blocking_send(result.map(|()| rows));
        });
        rx
    }
}

/// Connects, migrates, and makes the writer and the reader of a PostgreSQL store.
#[cfg(feature = "postgres")]
fn open_postgres(url: PostgresUrl, config: StoreConfig) -> anyhow::Result<(Engine, Reader)> {
    let mut client = pg::connect(&url).map_err(anyhow::Error::msg)?;
    pg::migrate(&mut client)
        .map_err(|e| anyhow::anyhow!("{url}: schema migration failed: {}", pg::describe(&e)))?;
    let (version, known) =
        pg::versions(&mut client).map_err(|e| anyhow::anyhow!("{url}: {}", pg::describe(&e)))?;
    if version > known {
        anyhow::bail!(
            "{url}: the database has schema version {version}, newer than this socketeer \
             knows ({known}); use a newer socketeer"
        );
    }
    let reader = Reader::Postgres(pg::PgReader::new(&url).map_err(anyhow::Error::msg)?);
    Ok((
        Engine::Postgres(Box::new(pg::PgWriter::new(url, client, config))),
        reader,
    ))
}

/// Chunks of an export read ahead of its receiver.
const EXPORT_CHUNKS_AHEAD: usize = 4;

/// What became of one submitted record: stored (or found stored), or why it could not be.
pub(crate) type Outcome = Result<Stored, StoreError>;

/// One job's answer to come, with how many records it holds.
type Part = (usize, oneshot::Receiver<queue::Answered>);

fn failed(count: usize, err: StoreError) -> Part {
    let (done, answer) = oneshot::channel();
    let _ = done.send((Err(err), Vec::new()));
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
            // (The records handed back are dropped here, on this task's thread.)
            let (answer, _items) = answer.unwrap_or_else(|_| (Err(stopped()), Vec::new()));
            match answer {
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
mod tests;

#[cfg(test)]
#[macro_use]
mod conformance;
#[cfg(test)]
conformance!(sqlite);

#[cfg(all(test, feature = "postgres"))]
mod on_postgres {
    use super::conformance;
    conformance!(
        crate::store::conformance::postgres,
        unless crate::store::conformance::postgres_here
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_together_migrate_once() {
        conformance::nodes_starting_together_migrate_once().await;
    }
}
