//! The writer thread: takes queued jobs in turn, commits them in one transaction (group
//! commit), answers each, announces what was committed to the live feed, and runs retention.

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;

use super::checkpoint::Checkpointer;
use super::queue::{Job, Lanes};
use super::{
    BATCH_IMAGE_KIB, Cardinality, Item, Limit, StoreConfig, StoreError, Written, now_secs,
};
use crate::live::Committed;
use crate::record::Record;

/// A fingerprint of what a record says (not of how its JSON was written), so a resend is told
/// from a different record under the same number. Stable across runs and versions: BLAKE3 of a
/// fixed encoding, 64 bits of it.
pub(crate) fn fingerprint(record: &Record) -> i64 {
    let mut h = Gathered::default();
    let text = |h: &mut Gathered, t: &str| {
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
        // Appended only for frames with an image, so fingerprints of earlier records stand.
        if let Some(image) = &frame.image {
            text(&mut h, image.format.name());
            h.update(&(image.data.len() as u64).to_le_bytes());
            h.update(&image.data);
        }
    } else {
        h.update(&[0]);
    }
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

/// A BLAKE3 hasher fed through a buffer of one chunk: the hash of a stream is the hash of its
/// bytes however they are split, and a reading's dozen or more small pieces hashed as one slice
/// cost a third less than as many calls to `update` (perf: 6% of the machine → 4%).
struct Gathered {
    hasher: blake3::Hasher,
    buf: [u8; 1024],
    len: usize,
}

impl Default for Gathered {
    fn default() -> Gathered {
        Gathered {
            hasher: blake3::Hasher::new(),
            buf: [0; 1024],
            len: 0,
        }
    }
}

impl Gathered {
    fn update(&mut self, bytes: &[u8]) -> &mut Gathered {
        if self.len + bytes.len() > self.buf.len() {
            self.hasher.update(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() >= self.buf.len() {
                self.hasher.update(bytes);
                return self;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    fn finalize(mut self) -> blake3::Hash {
        self.hasher.update(&self.buf[..self.len]);
        self.hasher.finalize()
    }
}

/// A stream the writer has seen: its id, and the fields already in `series`.
pub(super) struct KnownStream {
    pub(super) id: i64,
    /// Every field the stream has: numeric ones by name, text ones as `\0name`.
    pub(super) fields: HashSet<String>,
    /// The units of its numeric fields that have one.
    pub(super) units: HashMap<String, String>,
    /// The numeric field names, in order, of the last record found to add none: a stream's
    /// records usually all look alike, and comparing names is cheaper than hashing them.
    pub(super) shape: std::cell::RefCell<Vec<String>>,
}

impl KnownStream {
    pub(super) fn new(
        id: i64,
        fields: HashSet<String>,
        units: HashMap<String, String>,
    ) -> KnownStream {
        KnownStream {
            id,
            fields,
            units,
            shape: std::cell::RefCell::default(),
        }
    }

    /// How many of `record`'s fields the stream does not have yet.
    pub(super) fn new_fields(&self, record: &Record) -> usize {
        let names = || record.values.iter().map(|(f, _)| f.as_str());
        if record.texts.is_empty() && self.shape.borrow().iter().map(String::as_str).eq(names()) {
            return 0;
        }
        let new = self.count_new(record);
        if new == 0 && record.texts.is_empty() {
            *self.shape.borrow_mut() = names().map(str::to_owned).collect();
        }
        new
    }

    fn count_new(&self, record: &Record) -> usize {
        let numbers = record
            .values
            .iter()
            .filter(|(f, _)| !self.fields.contains(f.as_str()));
        let texts = record
            .texts
            .iter()
            .filter(|(f, _)| !self.fields.contains(format!("\0{f}").as_str()));
        numbers.count() + texts.count()
    }

    /// Stores the units `record` sends that differ from those kept.
    fn set_units(&mut self, tx: &Connection, device: i64, record: &Record) -> rusqlite::Result<()> {
        for (field, unit) in &record.units {
            if self.units.get(field) != Some(unit) {
                tx.prepare_cached(
                    "UPDATE series SET unit = ?4 WHERE device_id = ?1 AND stream = ?2 AND field = ?3",
                )?
                .execute(params![device, record.stream, field, unit])?;
                self.units.insert(field.clone(), unit.clone());
            }
        }
        Ok(())
    }
}

/// What storing a record would add to its device: a stream (if `known` is `None`) and fields.
pub(super) struct Adding {
    known: Option<i64>,
    fields: usize,
}

impl Adding {
    /// For `record`, whose stream is `known` (with its fields) or new.
    pub(super) fn of(record: &Record, known: Option<&KnownStream>) -> Adding {
        match known {
            None => Adding {
                known: None,
                fields: record.values.len() + record.texts.len(),
            },
            Some(stream) => Adding {
                known: Some(stream.id),
                fields: stream.new_fields(record),
            },
        }
    }

    /// The stream's id when nothing is to be added (all the writer needs).
    pub(super) fn ready(&self) -> Option<Option<i64>> {
        (self.fields == 0 && self.known.is_some()).then_some(self.known)
    }

    /// Whether the device's `load` leaves room for what is added: `Ok(None)` (something to
    /// add), or the limit it would pass.
    pub(super) fn within(
        &self,
        load: DeviceLoad,
        most: &Cardinality,
    ) -> Result<Option<i64>, Limit> {
        if self.known.is_none() && load.streams >= most.streams {
            return Err(Limit::Streams);
        }
        if load.fields + self.fields > most.fields {
            return Err(Limit::Fields);
        }
        Ok(None)
    }
}

/// How many streams and fields a device has, for the cardinality limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeviceLoad {
    pub(super) streams: usize,
    pub(super) fields: usize,
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
    pub(super) fn device(
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

    pub(super) fn load(
        &mut self,
        tx: &Connection,
        device: i64,
    ) -> rusqlite::Result<&mut DeviceLoad> {
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
    pub(super) fn stream(
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
            let mut fields = HashSet::default();
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
            let units = tx
                .prepare_cached(
                    "SELECT field, unit FROM series
                     WHERE device_id = ?1 AND stream = ?2 AND unit IS NOT NULL",
                )?
                .query_map(params![device, name], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            streams.insert(name.to_owned(), KnownStream::new(id, fields, units));
        }
        Ok(streams.get_mut(name))
    }

    /// The stream, added if it is new.
    pub(super) fn stream_or_add(
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
            let known = KnownStream::new(id, HashSet::default(), HashMap::default());
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
    pub(super) fn admit(
        &mut self,
        tx: &Connection,
        device: i64,
        record: &Record,
        most: &Cardinality,
    ) -> rusqlite::Result<Result<Option<i64>, Limit>> {
        if record.values.is_empty() && record.texts.is_empty() && record.frame.is_none() {
            return Ok(Ok(None));
        }
        let adding = Adding::of(record, self.stream(tx, device, &record.stream)?.as_deref());
        if let Some(ready) = adding.ready() {
            return Ok(Ok(ready));
        }
        Ok(adding.within(*self.load(tx, device)?, most))
    }

    pub(super) fn session(
        &mut self,
        tx: &Connection,
        device: i64,
        name: &Arc<str>,
        at: f64,
    ) -> rusqlite::Result<i64> {
        cached_session(tx, &mut self.sessions, device, name, at)
    }
}

/// The engine a writer commits with: one of the two backends.
pub(super) enum Engine {
    Sqlite(Box<Writer>),
    #[cfg(feature = "postgres")]
    Postgres(Box<super::pg::PgWriter>),
}

impl Engine {
    pub(super) fn config(&self) -> &StoreConfig {
        match self {
            Engine::Sqlite(w) => &w.config,
            #[cfg(feature = "postgres")]
            Engine::Postgres(w) => w.config(),
        }
    }

    fn commit(&mut self, jobs: &[Job]) -> Result<Vec<Written>, String> {
        match self {
            Engine::Sqlite(w) => w.commit(jobs).map_err(|e| {
                tracing::error!(error = %e, "commit failed; senders are told to retry");
                e.to_string()
            }),
            #[cfg(feature = "postgres")]
            Engine::Postgres(w) => w.commit(jobs),
        }
    }

    fn committed(&mut self) {
        match self {
            Engine::Sqlite(w) => w.committed(),
            #[cfg(feature = "postgres")]
            Engine::Postgres(w) => w.committed(),
        }
    }

    fn forget(&mut self) {
        match self {
            Engine::Sqlite(w) => w.forget(),
            #[cfg(feature = "postgres")]
            Engine::Postgres(w) => w.forget(),
        }
    }

    fn retention(&mut self) {
        match self {
            Engine::Sqlite(w) => w.retention(),
            #[cfg(feature = "postgres")]
            Engine::Postgres(w) => w.retention(),
        }
    }

    fn finish(self) {
        match self {
            Engine::Sqlite(w) => (*w).finish(),
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => {}
        }
    }
}

/// The writer's loop, whatever the backend: takes queued jobs a lane at a time into one
/// transaction, answers each job once it is committed (or failed), tells live viewers, and
/// runs retention — also when nobody writes. Ends once every sender is gone and all is answered.
pub(super) fn run(mut engine: Engine, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut lanes = Lanes::default();
    // Waiting for work wakes up for retention too: a hub nobody writes to still deletes
    // what has aged (a runtime of this thread's own, only for the timer).
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|err| tracing::warn!(error = %err, "no timer: retention runs only after writes"))
        .ok();
    let every = engine.config().retention_every;
    let max_batch = engine.config().max_batch;
    loop {
        if lanes.is_empty() {
            let next = match &timer {
                Some(timer) => {
                    timer.block_on(async { tokio::time::timeout(every, queue.recv()).await })
                }
                None => Ok(queue.blocking_recv()),
            };
            match next {
                Ok(Some(job)) => lanes.push(job),
                Ok(None) => break,
                Err(_idle) => {
                    engine.retention();
                    continue;
                }
            }
        }
        while let Ok(job) = queue.try_recv() {
            lanes.push(job);
        }
        let jobs = lanes.take(max_batch, BATCH_IMAGE_KIB);
        let count: usize = jobs.iter().map(|job| job.items.len()).sum();
        match engine.commit(&jobs) {
            Ok(mut outcomes) => {
                announce(engine.config(), &jobs, &outcomes);
                for job in jobs.into_iter().rev() {
                    let mine = outcomes.split_off(outcomes.len() - job.items.len());
                    let _ = job.done.send((Ok(mine), job.items));
                }
                engine.committed();
            }
            Err(err) => {
                // Ids cached during the failed transaction were rolled back with it.
                engine.forget();
                tracing::debug!(error = %err, records = count, "commit failed");
                let err = StoreError::Unavailable(err);
                for job in jobs {
                    let _ = job.done.send((Err(err.clone()), job.items));
                }
            }
        }
        engine.retention();
    }
    engine.finish();
}

/// Tells live viewers about what was just committed (nothing is built if none listen), and
/// keeps each stream's newest (built for the last record of each stream in the batch only).
pub(super) fn announce(config: &StoreConfig, jobs: &[Job], outcomes: &[Written]) {
    let live = config
        .live
        .as_ref()
        .filter(|live| live.receiver_count() > 0);
    if live.is_none() && config.newest.is_none() {
        return;
    }
    let items = jobs.iter().flat_map(|job| &job.items);
    // (device, stream) -> its last new record in the batch, and its event if one was built.
    type Last<'a> = HashMap<(&'a str, &'a str), (&'a Item, Option<Arc<Committed>>)>;
    let mut last: Last<'_> = HashMap::default();
    for (item, outcome) in items.zip(outcomes) {
        if *outcome != Written::New {
            continue;
        }
        let event = live.map(|live| {
            let event = Arc::new(committed(item));
            let _ = live.send(Arc::clone(&event));
            event
        });
        if config.newest.is_some() {
            last.insert((&item.device, &item.record.stream), (item, event));
        }
    }
    if let Some(newest) = &config.newest {
        for (item, event) in last.into_values() {
            newest.offer(&event.unwrap_or_else(|| Arc::new(committed(item))));
        }
    }
}

/// Samples inserted by one statement.
const SAMPLE_ROWS: usize = 32;

/// `INSERT INTO samples ... VALUES (...), (...)` for [`SAMPLE_ROWS`] rows.
static SAMPLES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let row = "(?, ?, ?, ?, ?)";
    format!(
        "INSERT INTO samples (stream_id, ts, recv_ts, vals, device_ts) VALUES {}",
        vec![row; SAMPLE_ROWS].join(", ")
    )
});

/// Keys of plain readings inserted by one statement.
const KEY_ROWS: usize = 32;

/// `INSERT INTO received ... VALUES (...), (...)` for [`KEY_ROWS`] rows. Without `OR IGNORE`:
/// usually every key is new and all go in at once; if one was there already the statement
/// fails whole (SQLite undoes just it) and the keys are written one at a time instead.
static KEYS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO received (session_id, seq, hash) VALUES {}",
        vec!["(?, ?, ?)"; KEY_ROWS].join(", ")
    )
});

/// A sample row: stream, time, receive time, values (JSON), device time.
type Sample<'a> = (i64, f64, f64, &'a str, Option<f64>);

/// Adds a sample to those waiting, inserting them once there are [`SAMPLE_ROWS`].
fn push_sample<'a>(
    insert: &mut rusqlite::CachedStatement<'_>,
    samples: &mut Vec<Sample<'a>>,
    sample: Sample<'a>,
) -> rusqlite::Result<()> {
    samples.push(sample);
    if samples.len() == SAMPLE_ROWS {
        for (row, sample) in samples.drain(..).enumerate() {
            let at = row * 5;
            insert.raw_bind_parameter(at + 1, sample.0)?;
            insert.raw_bind_parameter(at + 2, sample.1)?;
            insert.raw_bind_parameter(at + 3, sample.2)?;
            insert.raw_bind_parameter(at + 4, sample.3)?;
            insert.raw_bind_parameter(at + 5, sample.4)?;
        }
        insert.raw_execute()?;
    }
    Ok(())
}

/// A plain reading waiting for its key's insert.
struct Keyed<'a> {
    /// Its place in the commit's outcomes.
    at: usize,
    item: &'a Item,
    session: i64,
    seq: i64,
    stream_id: i64,
}

/// Inserts the keys of the readings in `pending` (all at once if there are [`KEY_ROWS`], else
/// one by one) and settles each: a new one's sample is written, one whose key was there
/// already is a duplicate or (another record under the same key) a conflict. Earlier ones
/// come first, so of two with one key in the batch the first is the new one.
fn settle_keys<'a>(
    tx: &Connection,
    insert_keys: &mut rusqlite::CachedStatement<'_>,
    pending: &mut Vec<Keyed<'a>>,
    outcomes: &mut [Written],
    push: &mut dyn FnMut(Sample<'a>) -> rusqlite::Result<()>,
    committed: &mut Vec<(&'a Arc<str>, u64)>,
) -> rusqlite::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut inserted: Vec<(i64, i64)> = Vec::with_capacity(pending.len());
    let mut one_by_one = pending.len() < KEY_ROWS;
    if !one_by_one {
        for (row, keyed) in pending.iter().enumerate() {
            let at = row * 3;
            insert_keys.raw_bind_parameter(at + 1, keyed.session)?;
            insert_keys.raw_bind_parameter(at + 2, keyed.seq)?;
            insert_keys.raw_bind_parameter(at + 3, keyed.item.hash)?;
        }
        match insert_keys.raw_execute() {
            Ok(_) => inserted.extend(pending.iter().map(|k| (k.session, k.seq))),
            // A key that was there already (a resend): nothing of this statement was written.
            Err(rusqlite::Error::SqliteFailure(err, _))
                if err.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                one_by_one = true;
            }
            Err(err) => return Err(err),
        }
    }
    if one_by_one {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO received (session_id, seq, hash) VALUES (?1, ?2, ?3)",
        )?;
        for keyed in pending.iter() {
            if insert.execute(params![keyed.session, keyed.seq, keyed.item.hash])? == 1 {
                inserted.push((keyed.session, keyed.seq));
            }
        }
    }
    for keyed in pending.drain(..) {
        let item = keyed.item;
        if let Some(i) = inserted
            .iter()
            .position(|&key| key == (keyed.session, keyed.seq))
        {
            inserted.swap_remove(i);
            push((
                keyed.stream_id,
                item.ts(),
                item.recv_ts,
                &item.vals,
                item.device_ts(),
            ))?;
            match committed.last_mut() {
                Some((last, n)) if Arc::ptr_eq(last, &item.device) => *n += 1,
                _ => committed.push((&item.device, 1)),
            }
            continue;
        }
        let stored: Option<i64> = tx
            .prepare_cached("SELECT hash FROM received WHERE session_id = ?1 AND seq = ?2")?
            .query_row(params![keyed.session, keyed.seq], |row| row.get(0))?;
        outcomes[keyed.at] = if stored.is_none_or(|stored| stored == item.hash) {
            Written::Duplicate
        } else {
            Written::Conflict
        };
    }
    Ok(())
}

/// A commit at least this long is logged, with how much of it was writing and how much the
/// sync: it is the acknowledgement latency every record in it saw.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

pub(super) struct Writer {
    conn: Connection,
    config: StoreConfig,
    checkpoints: Checkpointer,
    known: Known,
    last_retention: f64,
    /// Bytes of images stored (for the image budget).
    image_bytes: u64,
}

impl Writer {
    pub(super) fn new(conn: Connection, config: StoreConfig, checkpoints: Checkpointer) -> Writer {
        let image_bytes = conn
            .query_row("SELECT coalesce(sum(size), 0) FROM images", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(0, |n| u64::try_from(n).unwrap_or(0));
        Writer {
            conn,
            config,
            checkpoints,
            known: Known::default(),
            last_retention: 0.0,
            image_bytes,
        }
    }

    /// After a commit: the WAL checkpoint's turn.
    pub(super) fn committed(&self) {
        self.checkpoints.committed(&self.conn);
    }

    /// When the writer stops.
    pub(super) fn finish(self) {
        self.checkpoints.finish();
    }

    pub(super) fn forget(&mut self) {
        self.known = Known::default();
    }

    pub(super) fn commit(&mut self, jobs: &[Job]) -> rusqlite::Result<Vec<Written>> {
        // The write lock from the start: a transaction that reads first and writes later cannot
        // wait for a lock someone else holds (SQLite answers "busy" at once instead).
        let began = std::time::Instant::now();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut insert_received = tx.prepare_cached(
            "INSERT OR IGNORE INTO received (session_id, seq, hash) VALUES (?1, ?2, ?3)",
        )?;
        let mut insert_sample = tx.prepare_cached(
            "INSERT INTO samples (stream_id, ts, recv_ts, vals, device_ts)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut insert_samples = tx.prepare_cached(&SAMPLES_SQL)?;
        let mut insert_keys = tx.prepare_cached(&KEYS_SQL)?;
        // Plain readings whose keys go in KEY_ROWS at a time: each has its place in
        // `outcomes` kept until its key's insert says whether it is new.
        let mut pending: Vec<Keyed> = Vec::with_capacity(KEY_ROWS);
        // Samples go in SAMPLE_ROWS at a time (one statement's work for many rows); the rest
        // one by one before the commit.
        let mut samples: Vec<(i64, f64, f64, &str, Option<f64>)> = Vec::with_capacity(SAMPLE_ROWS);
        let mut outcomes = Vec::new();
        let mut new_image_bytes = 0u64;
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
        // Writes the keys of the readings waiting (and their samples), before anything that
        // must come after them.
        macro_rules! settle {
            () => {
                settle_keys(
                    &tx,
                    &mut insert_keys,
                    &mut pending,
                    &mut outcomes,
                    &mut |sample| push_sample(&mut insert_samples, &mut samples, sample),
                    &mut committed,
                )?
            };
        }
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
            let plain = record.frame.is_none()
                && record.units.is_empty()
                && (!record.values.is_empty() || !record.texts.is_empty());
            if let Some(seq) = record.seq {
                let session = match last_session {
                    Some((name, of, id)) if of == device && *name == item.session => id,
                    _ => known.session(&tx, device, &item.session, item.recv_ts)?,
                };
                last_session = Some((&item.session, device, session));
                seen(&mut seen_sessions, session, item.recv_ts);
                if let (Some(stream_id), true) = (ready, plain) {
                    // The usual case, a reading of known fields: its key goes in with others.
                    pending.push(Keyed {
                        at: outcomes.len(),
                        item,
                        session,
                        seq: seq as i64,
                        stream_id,
                    });
                    outcomes.push(Written::New);
                    if pending.len() == KEY_ROWS {
                        settle!();
                    }
                    continue;
                }
                // Anything else is written in the order it came, after those before it.
                settle!();
                let hash = item.hash;
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
            let (ts, device_ts) = (item.ts(), item.device_ts());
            let readings = !record.values.is_empty() || !record.texts.is_empty();
            let sample_stream = if let (Some(stream_id), true) = (ready, readings) {
                // The usual case: a known stream with known fields.
                if !record.units.is_empty() {
                    if let Some(stream) = known.stream(&tx, device, &record.stream)? {
                        stream.set_units(&tx, device, record)?;
                    }
                }
                Some(stream_id)
            } else if readings {
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
                stream.set_units(&tx, device, record)?;
                if added > 0 {
                    known.load(&tx, device)?.fields += added;
                }
                Some(stream_id)
            } else {
                None
            };
            if let Some(stream_id) = sample_stream {
                push_sample(
                    &mut insert_samples,
                    &mut samples,
                    (stream_id, ts, item.recv_ts, &item.vals, device_ts),
                )?;
            }
            if let Some(frame) = &record.frame {
                // A frame's stream is one of the device's streams too.
                known.stream_or_add(&tx, device, &record.stream)?;
                tx.prepare_cached(
                    "INSERT INTO frames (device_id, stream, ts, recv_ts, width, height, device_ts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    device,
                    record.stream,
                    ts,
                    item.recv_ts,
                    frame.width,
                    frame.height,
                    device_ts
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
                if let Some(image) = &frame.image {
                    tx.prepare_cached(
                        "INSERT INTO images (frame_id, format, size, data) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        frame_id,
                        image.format.name(),
                        image.data.len() as i64,
                        &image.data[..]
                    ])?;
                    new_image_bytes += image.data.len() as u64;
                }
            }
            outcomes.push(Written::New);
            match committed.last_mut() {
                Some((last, n)) if Arc::ptr_eq(last, &item.device) => *n += 1,
                _ => committed.push((&item.device, 1)),
            }
        }
        settle!();
        for (stream_id, ts, recv_ts, vals, device_ts) in samples {
            insert_sample.execute(params![stream_id, ts, recv_ts, vals, device_ts])?;
        }
        drop((insert_received, insert_sample, insert_samples, insert_keys));
        for (device, at) in latest(seen_devices) {
            tx.prepare_cached("UPDATE devices SET last_seen = max(last_seen, ?2) WHERE id = ?1")?
                .execute(params![device, at])?;
        }
        for (session, at) in latest(seen_sessions) {
            tx.prepare_cached("UPDATE sessions SET last_recv = max(last_recv, ?2) WHERE id = ?1")?
                .execute(params![session, at])?;
        }
        let written = began.elapsed();
        tx.commit()?;
        let took = began.elapsed();
        if took >= SLOW_COMMIT {
            // Every record in the batch waited this long for its answer: say where it went.
            tracing::warn!(
                records = outcomes.len(),
                writing_ms = written.as_millis() as u64,
                syncing_ms = (took - written).as_millis() as u64,
                "a commit took {} ms",
                took.as_millis()
            );
        }
        self.image_bytes += new_image_bytes;
        let now = now_secs() as u64;
        for (device, n) in committed {
            self.config.activity.committed(device, n, now);
        }
        Ok(outcomes)
    }

    /// Deletes data older than the retention periods, at most once a minute, and the oldest
    /// images once they pass their budget.
    pub(super) fn retention(&mut self) {
        if let Err(err) = self.image_budget() {
            tracing::warn!(error = %err, "image budget pass failed; will try again");
        }
        let now = now_secs();
        if now - self.last_retention < self.config.retention_every.as_secs_f64() {
            return;
        }
        self.last_retention = now;
        if let Some(keep) = self.config.images.retention {
            let cutoff = now - keep.as_secs_f64();
            if let Err(err) = self.delete_images(
                "SELECT f.id FROM frames f JOIN images i ON i.frame_id = f.id
                 WHERE f.recv_ts < ?1",
                cutoff,
            ) {
                tracing::warn!(error = %err, "image retention pass failed; will try again");
            }
        }
        let Some(keep) = self.config.retention else {
            return;
        };
        let cutoff = now - keep.as_secs_f64();
        match delete_older(&mut self.conn, cutoff, now) {
            Err(err) => tracing::warn!(error = %err, "retention pass failed; will try again"),
            Ok(retired) if retired.is_empty() => {}
            Ok(retired) => {
                tracing::info!(
                    streams = retired.len(),
                    "retention: streams left without data retired"
                );
                if let Some(tell) = &self.config.on_retired {
                    tell(retired);
                }
            }
        }
        self.image_bytes = self
            .conn
            .query_row("SELECT coalesce(sum(size), 0) FROM images", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(self.image_bytes, |n| u64::try_from(n).unwrap_or(0));
        self.forget();
    }

    /// Past the budget, the oldest images go (by arrival), until the rest fit.
    fn image_budget(&mut self) -> rusqlite::Result<()> {
        let Some(budget) = self.config.images.budget else {
            return Ok(());
        };
        if self.image_bytes <= budget {
            return Ok(());
        }
        // Down to nine tenths of the budget: the next passes are a while off.
        let excess = self.image_bytes - budget / 10 * 9;
        // The oldest images whose sizes add up to the excess: everything up to the last of them.
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT frame_id FROM (
                 SELECT frame_id, sum(size) OVER (ORDER BY frame_id) AS freed FROM images)
             WHERE freed >= ?1 ORDER BY frame_id LIMIT 1",
                params![excess as i64],
                |r| r.get(0),
            )
            .optional()?;
        let last = last.unwrap_or(i64::MAX);
        self.delete_images("SELECT frame_id FROM images WHERE frame_id <= ?1", last)?;
        tracing::debug!(up_to_frame = last, "image budget: oldest images deleted");
        Ok(())
    }

    /// Deletes the images of the frames `select` (with `?1` = `at`) finds.
    fn delete_images(&mut self, select: &str, at: impl rusqlite::ToSql) -> rusqlite::Result<()> {
        let freed: i64 = self.conn.query_row(
            &format!("SELECT coalesce(sum(size), 0) FROM images WHERE frame_id IN ({select})"),
            params![at],
            |r| r.get(0),
        )?;
        self.conn.execute(
            &format!("DELETE FROM images WHERE frame_id IN ({select})"),
            params![at],
        )?;
        self.image_bytes = self
            .image_bytes
            .saturating_sub(u64::try_from(freed).unwrap_or(0));
        Ok(())
    }
}

/// A committed record as the live feed carries it.
pub(crate) fn committed(item: &Item) -> Committed {
    Committed {
        device: Arc::clone(&item.device),
        stream: item.record.stream.as_str().into(),
        ts: item.ts(),
        picture: item
            .record
            .frame
            .as_ref()
            .is_some_and(|frame| frame.image.is_some()),
        json: event(item).into(),
        record: item.record.clone(),
        foxglove: std::sync::OnceLock::new(),
        origin: None,
    }
}

/// A committed record as the live feed and the dashboard see it.
pub(crate) fn event(item: &Item) -> String {
    let record = &item.record;
    let mut event = serde_json::json!({
        "device": &*item.device,
        "stream": record.stream,
        "ts": item.ts(),
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
    if !record.units.is_empty() {
        let units: serde_json::Map<String, serde_json::Value> = record
            .units
            .iter()
            .map(|(field, unit)| (field.clone(), unit.as_str().into()))
            .collect();
        event["units"] = units.into();
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
        if let Some(image) = &frame.image {
            event["image"] =
                serde_json::json!({ "format": image.format.name(), "bytes": image.data.len() });
        }
    }
    event.to_string()
}

/// One retention pass (Unix seconds): what was *received* before `cutoff` goes, so the
/// device's clock decides nothing — a record dated 2000 is kept for the whole period after it
/// arrived, one dated 2099 goes when its period is over. Deleted: received before `cutoff` and
/// dated before `cutoff` or after `now` (both ends of the time index, which is what makes the
/// pass cheap); a record dated inside the period but received before it (a clock that ran
/// ahead) goes once its date leaves the period.
pub(super) fn delete_older(
    conn: &mut Connection,
    cutoff: f64,
    now: f64,
) -> rusqlite::Result<Vec<(String, String)>> {
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
        "DELETE FROM images WHERE frame_id IN (
             SELECT f.id FROM devices d CROSS JOIN frames f ON f.device_id = d.id
                 AND (f.ts < ?1 OR f.ts > ?2) AND f.recv_ts < ?1)",
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
    // Streams left without any data are retired: their fields go with them (what
    // `/api/streams` lists, what the cardinality limits count), so a stream that comes back
    // is new again. Through the (stream, time) and (device, stream, time) indexes.
    let retired: Vec<(i64, i64, String, String)> = tx
        .prepare(
            "SELECT st.id, st.device_id, d.name, st.name FROM streams st
             JOIN devices d ON d.id = st.device_id
             WHERE NOT EXISTS (SELECT 1 FROM samples sa WHERE sa.stream_id = st.id)
               AND NOT EXISTS (SELECT 1 FROM frames f
                               WHERE f.device_id = st.device_id AND f.stream = st.name)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, device, _, stream) in &retired {
        tx.execute(
            "DELETE FROM series WHERE device_id = ?1 AND stream = ?2",
            params![device, stream],
        )?;
        tx.execute(
            "DELETE FROM text_fields WHERE device_id = ?1 AND stream = ?2",
            params![device, stream],
        )?;
        tx.execute("DELETE FROM streams WHERE id = ?1", params![id])?;
    }
    tx.commit()?;
    Ok(retired
        .into_iter()
        .map(|(_, _, device, stream)| (device, stream))
        .collect())
}

/// Notes that `id` was written to at `at` (consecutive repeats folded into one entry).
pub(super) fn seen(list: &mut Vec<(i64, f64)>, id: i64, at: f64) {
    match list.last_mut() {
        Some((last, when)) if *last == id => *when = when.max(at),
        _ => list.push((id, at)),
    }
}

/// Each id once, with its latest time.
pub(super) fn latest(mut list: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
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
pub(super) fn values_json(values: &[(String, f64)], texts: &[(String, String)], out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    // Room for all of it at once (a number is at most 24 bytes; text as sent, before escapes).
    out.reserve(
        2 + values.iter().map(|(f, _)| f.len() + 28).sum::<usize>()
            + texts
                .iter()
                .map(|(f, t)| f.len() + t.len() + 6)
                .sum::<usize>(),
    );
    out.push('{');
    let mut number = zmij::Buffer::new();
    for (i, (field, value)) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        debug_assert!(!field.contains(['"', '\\']) && value.is_finite());
        out.push('"');
        out.push_str(field);
        out.push_str("\":");
        // (Values are finite: the parser refuses NaN and infinities.) The shortest digits that
        // read back as the same number, written as they always were stored: `1e16`, not
        // zmij's `1e+16` (a test compares with ryu, which wrote them before).
        let text = number.format_finite(*value);
        match text.split_once("e+") {
            Some((mantissa, exponent)) => {
                out.push_str(mantissa);
                out.push('e');
                out.push_str(exponent);
            }
            None => out.push_str(text),
        }
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

#[cfg(test)]
mod tests {
    use super::fingerprint;
    use crate::record::{Line, Record, parse_line};

    fn record(line: &str) -> Record {
        match parse_line(line) {
            Ok(Line::Record(record)) => record,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// Values are stored as JSON text: numbers as the shortest digits that read back the same,
    /// written as ryu wrote them when it formatted them (the text stays the same across
    /// versions, exponents without a `+`).
    #[test]
    fn stored_numbers_read_as_they_always_did() {
        let stored = |v: f64| {
            let mut out = String::new();
            super::values_json(&[("v".to_owned(), v)], &[], &mut out);
            out.strip_prefix("{\"v\":")
                .and_then(|t| t.strip_suffix('}'))
                .expect("one value")
                .to_owned()
        };
        for (v, text) in [
            (0.25, "0.25"),
            (-1.5, "-1.5"),
            (9.81, "9.81"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (1e16, "1e16"),
            (1.5e300, "1.5e300"),
            (1e-7, "1e-7"),
            (1_800_000_000.5, "1800000000.5"),
        ] {
            assert_eq!(stored(v), text);
        }
        let mut ryu = ryu::Buffer::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i % 2 == 0 {
                f64::from_bits(x)
            } else {
                ((x % 2_000_000_001) as f64 - 1e9) / 10f64.powi((i % 7) as i32)
            };
            if v.is_finite() {
                assert_eq!(stored(v), ryu.format_finite(v), "{v:e}");
            }
        }
    }

    /// Fingerprints are stored with every numbered record and compared with a resend's: the
    /// same record must give the same number in every version, or a resend after an upgrade
    /// would be refused as a reused number. These values were computed by the first version.
    #[test]
    fn fingerprints_stay_what_they_were() {
        for (line, expected) in [
            (
                r#"{"stream":"imu","values":{"ax":0.25,"ay":-1.5,"az":9.81}}"#,
                9165207800608749278,
            ),
            (
                r#"{"stream":"gps","ts":1800000000.5,"values":{"lat":52.1,"fix":true,"mode":"RTK"}}"#,
                946173033959610757,
            ),
            (
                r#"{"stream":"camera","frame":{"w":640,"h":480},"detections":[{"label":"person","score":0.9,"box":[1,2,3,4]},{"label":"dog","score":0.5,"box":[5,6,7,8]}]}"#,
                3892171882272820115,
            ),
            (
                &format!(
                    r#"{{"stream":"{}","values":{{{}}}}}"#,
                    "s".repeat(100),
                    (0..60)
                        .map(|i| format!(r#""field_number_{i}":{i}.5"#))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                -5323986073769181384,
            ),
        ] {
            assert_eq!(fingerprint(&record(line)), expected, "{line}");
        }
        // A frame with its image: the image's bytes are hashed too.
        let mut camera = record(r#"{"stream":"camera","frame":{"w":4,"h":4},"detections":[]}"#);
        if let Some(frame) = camera.frame.as_mut() {
            frame.image = Some(crate::record::Image {
                format: crate::record::ImageFormat::Jpeg,
                data: (0..5000u32)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>()
                    .into(),
            });
        }
        assert_eq!(
            fingerprint(&camera),
            385336918079922474,
            "a frame with an image"
        );
    }
}
