//! The PostgreSQL writer: the same group commit as SQLite's, in batches shaped for a server.
//!
//! One transaction per batch: the devices and sessions the batch needs (cached), then every
//! idempotency key in one binary `COPY` straight into `received` — when one is already there
//! (a resend, or another node storing the same record at the same moment) the `COPY` fails on
//! the unique (session, seq) key and the keys go through a staging table with
//! `ON CONFLICT DO NOTHING` instead, which tells new from resent — then the new samples in
//! one binary `COPY`, frames with their detections and images, and the commit. Nobody is
//! answered before the commit returns.

use foldhash::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::BufMut;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Statement, Transaction};

use super::super::queue::Job;
use super::super::writer::{Adding, DeviceLoad, KnownStream, latest, seen};
use super::super::{Cardinality, Item, Limit, StoreConfig, Written, now_secs};
use super::{PostgresUrl, connect, describe};
use crate::record::Record;

/// The advisory lock a retention pass holds, so one node at a time does it.
const RETENTION_LOCK: i64 = 0x736f_636c;

/// A JSON object already written as text, sent as `jsonb` (binary format: version 1, text).
#[derive(Debug)]
pub(super) struct Jsonb<'a>(pub(super) &'a str);

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// What the writer knows of the database, to spare lookups; forgotten after a failed commit
/// and after a retention pass.
#[derive(Default)]
struct Known {
    devices: HashMap<Arc<str>, i64>,
    device_count: Option<usize>,
    streams: HashMap<i64, HashMap<String, KnownStream>>,
    loads: HashMap<i64, DeviceLoad>,
    sessions: HashMap<(i64, Arc<str>), i64>,
}

type Pg<T> = Result<T, postgres::Error>;

impl Known {
    /// The device's id, adding it if the device limit allows; `None` if it does not.
    fn device(
        &mut self,
        tx: &mut Transaction<'_>,
        name: &Arc<str>,
        at: f64,
        most: usize,
    ) -> Pg<Option<i64>> {
        if let Some(&id) = self.devices.get(name) {
            return Ok(Some(id));
        }
        let found = tx.query_opt("SELECT id FROM devices WHERE name = $1", &[&&**name])?;
        let id = match found {
            Some(row) => row.get(0),
            None => {
                let count = match self.device_count {
                    Some(count) => count,
                    None => tx
                        .query_one("SELECT count(*) FROM devices", &[])?
                        .get::<_, i64>(0) as usize,
                };
                self.device_count = Some(count);
                if count >= most {
                    return Ok(None);
                }
                // Another node may add it at the same moment: then its row is the one.
                let added = tx.query_opt(
                    "INSERT INTO devices (name, first_seen, last_seen) VALUES ($1, $2, $2)
                     ON CONFLICT (name) DO NOTHING RETURNING id",
                    &[&&**name, &at],
                )?;
                self.device_count = Some(count + 1);
                match added {
                    Some(row) => row.get(0),
                    None => tx
                        .query_one("SELECT id FROM devices WHERE name = $1", &[&&**name])?
                        .get(0),
                }
            }
        };
        self.devices.insert(Arc::clone(name), id);
        Ok(Some(id))
    }

    fn load(&mut self, tx: &mut Transaction<'_>, device: i64) -> Pg<&mut DeviceLoad> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.loads.entry(device) {
            let row = tx.query_one(
                "SELECT (SELECT count(*) FROM streams WHERE device_id = $1),
                        (SELECT count(*) FROM series WHERE device_id = $1)
                        + (SELECT count(*) FROM text_fields WHERE device_id = $1)",
                &[&device],
            )?;
            slot.insert(DeviceLoad {
                streams: row.get::<_, i64>(0) as usize,
                fields: row.get::<_, i64>(1) as usize,
            });
        }
        Ok(self.loads.get_mut(&device).expect("inserted above"))
    }

    /// The stream, if it exists, with all its fields (looked up once).
    fn stream(
        &mut self,
        tx: &mut Transaction<'_>,
        device: i64,
        name: &str,
    ) -> Pg<Option<&mut KnownStream>> {
        let streams = self.streams.entry(device).or_default();
        if !streams.contains_key(name) {
            let Some(row) = tx.query_opt(
                "SELECT id FROM streams WHERE device_id = $1 AND name = $2",
                &[&device, &name],
            )?
            else {
                return Ok(None);
            };
            let mut fields = HashSet::default();
            let mut units = HashMap::default();
            for row in tx.query(
                "SELECT field, unit FROM series WHERE device_id = $1 AND stream = $2",
                &[&device, &name],
            )? {
                let field: String = row.get(0);
                if let Some(unit) = row.get::<_, Option<String>>(1) {
                    units.insert(field.clone(), unit);
                }
                fields.insert(field);
            }
            for row in tx.query(
                "SELECT field FROM text_fields WHERE device_id = $1 AND stream = $2",
                &[&device, &name],
            )? {
                fields.insert(format!("\0{}", row.get::<_, String>(0)));
            }
            let id = row.get(0);
            streams.insert(name.to_owned(), KnownStream::new(id, fields, units));
        }
        Ok(streams.get_mut(name))
    }

    /// The stream, added if it is new.
    fn stream_or_add(
        &mut self,
        tx: &mut Transaction<'_>,
        device: i64,
        name: &str,
    ) -> Pg<&mut KnownStream> {
        if self.stream(tx, device, name)?.is_none() {
            tx.execute(
                "INSERT INTO streams (device_id, name) VALUES ($1, $2)
                 ON CONFLICT (device_id, name) DO NOTHING",
                &[&device, &name],
            )?;
            self.load(tx, device)?.streams += 1;
        }
        Ok(self.stream(tx, device, name)?.expect("added above"))
    }

    /// As SQLite's: which limit storing `record` would pass, or the stream id when nothing is
    /// to be added.
    fn admit(
        &mut self,
        tx: &mut Transaction<'_>,
        device: i64,
        record: &Record,
        most: &Cardinality,
    ) -> Pg<Result<Option<i64>, Limit>> {
        if record.values.is_empty() && record.texts.is_empty() && record.frame.is_none() {
            return Ok(Ok(None));
        }
        let adding = Adding::of(record, self.stream(tx, device, &record.stream)?.as_deref());
        if let Some(ready) = adding.ready() {
            return Ok(Ok(ready));
        }
        Ok(adding.within(*self.load(tx, device)?, most))
    }

    fn session(
        &mut self,
        tx: &mut Transaction<'_>,
        device: i64,
        name: &Arc<str>,
        at: f64,
    ) -> Pg<i64> {
        if let Some(&id) = self.sessions.get(&(device, Arc::clone(name))) {
            return Ok(id);
        }
        tx.execute(
            "INSERT INTO sessions (device_id, name, last_recv) VALUES ($1, $2, $3)
             ON CONFLICT (device_id, name) DO NOTHING",
            &[&device, &&**name, &at],
        )?;
        let id = tx
            .query_one(
                "SELECT id FROM sessions WHERE device_id = $1 AND name = $2",
                &[&device, &&**name],
            )?
            .get(0);
        self.sessions.insert((device, Arc::clone(name)), id);
        Ok(id)
    }
}

/// One numbered record's key: (session id, seq), its fingerprint, and its place in the batch.
struct Key {
    session: i64,
    seq: i64,
    hash: i64,
    at: usize,
}

/// A sample row for `COPY`.
struct SampleRow {
    stream: i64,
    ts: f64,
    recv_ts: f64,
    vals: String,
    device_ts: Option<f64>,
}

/// A connection and the statements every batch runs, prepared on it once.
struct Conn {
    client: Client,
    stmts: Stmts,
}

struct Stmts {
    copy_keys: Statement,
    copy_staging: Statement,
    copy_samples: Statement,
    lock_streams: Statement,
    touch: Statement,
}

pub(crate) struct PgWriter {
    url: PostgresUrl,
    client: Option<Conn>,
    config: StoreConfig,
    known: Known,
    last_retention: f64,
    /// Bytes of images stored (for the image budget), as of the last count.
    image_bytes: u64,
    /// Since when the server has not answered (to log once when it goes and when it is back).
    down_since: Option<Instant>,
}

impl PgWriter {
    /// A writer on `client`, already connected and migrated.
    pub(crate) fn new(url: PostgresUrl, mut client: Client, config: StoreConfig) -> PgWriter {
        let image_bytes = image_bytes(&mut client).unwrap_or(0);
        let conn = prepare(&mut client)
            .ok()
            .map(|stmts| Conn { client, stmts });
        PgWriter {
            url,
            client: conn,
            config,
            known: Known::default(),
            last_retention: 0.0,
            image_bytes,
            down_since: None,
        }
    }

    pub(crate) fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub(crate) fn forget(&mut self) {
        self.known = Known::default();
    }

    pub(crate) fn committed(&mut self) {}

    /// Commits a batch: one outcome per record, or why nothing was (and senders are told to
    /// retry).
    pub(in crate::store) fn commit(&mut self, jobs: &[Job]) -> Result<Vec<Written>, String> {
        let result = self.try_commit(jobs);
        match &result {
            Ok(_) => {
                if let Some(since) = self.down_since.take() {
                    tracing::warn!(
                        db = %self.url,
                        after_ms = since.elapsed().as_millis() as u64,
                        "PostgreSQL answers again: storing resumes"
                    );
                }
            }
            Err(err) => {
                if self.down_since.is_none() {
                    self.down_since = Some(Instant::now());
                    tracing::error!(
                        db = %self.url, error = %err,
                        "PostgreSQL cannot store now: robots are answered \"retry\" and keep their records until it is back"
                    );
                }
                // A connection left in doubt is not used again.
                if self.client.as_ref().is_some_and(|c| c.client.is_closed()) {
                    self.client = None;
                }
            }
        }
        result
    }

    fn try_commit(&mut self, jobs: &[Job]) -> Result<Vec<Written>, String> {
        let most = self.config.cardinality;
        let activity = Arc::clone(&self.config.activity);
        let items: Vec<&Item> = jobs.iter().flat_map(|job| &job.items).collect();
        let known = &mut self.known;
        let conn = ensure(&mut self.client, &self.url)?;
        let (outcomes, images) =
            write_batch(conn, known, &items, &most).map_err(|e| e.describe())?;
        self.image_bytes += images;
        let now = now_secs() as u64;
        let mut counted: Vec<(&Arc<str>, u64)> = Vec::new();
        for (item, outcome) in items.iter().zip(&outcomes) {
            if *outcome != Written::New {
                continue;
            }
            match counted.last_mut() {
                Some((last, n)) if Arc::ptr_eq(last, &item.device) => *n += 1,
                _ => counted.push((&item.device, 1)),
            }
        }
        for (device, n) in counted {
            activity.committed(device, n, now);
        }
        Ok(outcomes)
    }

    /// Deletes what has aged (one node at a time), and the oldest images past their budget.
    pub(crate) fn retention(&mut self) {
        let now = now_secs();
        let budget_due = self
            .config
            .images
            .budget
            .is_some_and(|b| self.image_bytes > b);
        let due = now - self.last_retention >= self.config.retention_every.as_secs_f64();
        if !due && !budget_due {
            return;
        }
        let config = self.config.clone();
        let client = match ensure(&mut self.client, &self.url).map(|c| &mut c.client) {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "retention pass skipped: PostgreSQL unreachable");
                return;
            }
        };
        if due {
            match retention_pass(client, &config, now) {
                Ok(retired) => {
                    if !retired.is_empty() {
                        tracing::info!(
                            streams = retired.len(),
                            "retention: streams left without data retired"
                        );
                        if let Some(tell) = &config.on_retired {
                            tell(retired);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %describe(&err), "retention pass failed; will try again");
                }
            }
            self.last_retention = now;
        }
        if let Some(budget) = config.images.budget {
            let client = &mut self.client.as_mut().expect("connected above").client;
            if let Err(err) = image_budget(client, budget) {
                tracing::warn!(error = %describe(&err), "image budget pass failed; will try again");
            }
        }
        let client = &mut self.client.as_mut().expect("connected above").client;
        self.image_bytes = image_bytes(client).unwrap_or(self.image_bytes);
        self.forget();
    }
}

/// The connection in `slot`, made again if it was lost.
fn ensure<'a>(slot: &'a mut Option<Conn>, url: &PostgresUrl) -> Result<&'a mut Conn, String> {
    if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
        *slot = None;
    }
    if slot.is_none() {
        let mut client = connect(url)?;
        let stmts = prepare(&mut client).map_err(|e| describe(&e))?;
        *slot = Some(Conn { client, stmts });
    }
    Ok(slot.as_mut().expect("connected above"))
}

/// Per connection: the staging table resent keys go through, and every batch's statements
/// (prepared once: a batch then costs one round trip per step, not two).
fn prepare(client: &mut Client) -> Pg<Stmts> {
    client.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_keys (
             session_id bigint NOT NULL, seq bigint NOT NULL, hash bigint)
         ON COMMIT DELETE ROWS",
    )?;
    Ok(Stmts {
        copy_keys: client
            .prepare("COPY received (session_id, seq, hash) FROM STDIN (FORMAT binary)")?,
        copy_staging: client
            .prepare("COPY incoming_keys (session_id, seq, hash) FROM STDIN (FORMAT binary)")?,
        copy_samples: client.prepare(
            "COPY samples (stream_id, ts, recv_ts, vals, device_ts) FROM STDIN (FORMAT binary)",
        )?,
        lock_streams: client
            .prepare("SELECT id FROM streams WHERE id = ANY($1) ORDER BY id FOR KEY SHARE")?,
        // Both in one statement, rows in id order (two nodes lock them in the same order).
        touch: client.prepare(
            "WITH d AS (
                 UPDATE devices t SET last_seen = greatest(t.last_seen, v.at)
                 FROM unnest($1::bigint[], $2::float8[]) AS v(id, at) WHERE t.id = v.id)
             UPDATE sessions t SET last_recv = greatest(t.last_recv, v.at)
             FROM unnest($3::bigint[], $4::float8[]) AS v(id, at) WHERE t.id = v.id",
        )?,
    })
}

fn image_bytes(client: &mut Client) -> Pg<u64> {
    let row = client.query_one("SELECT coalesce(sum(size), 0)::bigint FROM images", &[])?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Writes the keys with binary `COPY` (`copy`: into received, or the staging table).
fn copy_keys(tx: &mut Transaction<'_>, copy: &Statement, keys: &[Key]) -> Pg<()> {
    let sink = tx.copy_in(copy)?;
    let mut writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8, Type::INT8]);
    for key in keys {
        writer.write(&[&key.session, &key.seq, &key.hash])?;
    }
    writer.finish()?;
    Ok(())
}

/// The batch in one transaction; the outcomes, and the bytes of images added.
fn write_batch(
    conn: &mut Conn,
    known: &mut Known,
    items: &[&Item],
    most: &Cardinality,
) -> Result<(Vec<Written>, u64), Fail> {
    let stmts = &conn.stmts;
    let mut tx = conn.client.transaction()?;
    let count = items.len();
    let mut outcomes: Vec<Option<Written>> = vec![None; count];
    let mut devices = vec![0i64; count];
    let mut sessions = vec![0i64; count];
    let mut seen_devices: Vec<(i64, f64)> = Vec::new();
    let mut seen_sessions: Vec<(i64, f64)> = Vec::new();
    // Devices and sessions.
    for (at, item) in items.iter().enumerate() {
        let Some(device) = known.device(&mut tx, &item.device, item.recv_ts, most.devices)? else {
            outcomes[at] = Some(Written::Refused(Limit::Devices));
            continue;
        };
        devices[at] = device;
        if item.record.seq.is_some() {
            sessions[at] = known.session(&mut tx, device, &item.session, item.recv_ts)?;
        }
    }
    // The keys: new, resent (the same record), or reused (a different one).
    let mut keys: Vec<Key> = Vec::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    let mut first: HashMap<(i64, i64), usize> = HashMap::default();
    for (at, item) in items.iter().enumerate() {
        let (Some(seq), None) = (item.record.seq, outcomes[at]) else {
            continue;
        };
        let key = (sessions[at], seq as i64);
        match first.get(&key) {
            Some(&k) => repeats.push((at, k)),
            None => {
                first.insert(key, keys.len());
                keys.push(Key {
                    session: key.0,
                    seq: key.1,
                    hash: item.hash,
                    at,
                });
            }
        }
    }
    // The hash each key stands for: the stored one's if it was stored before.
    let mut standing: Vec<Option<i64>> = keys.iter().map(|k| Some(k.hash)).collect();
    if !keys.is_empty() {
        // A savepoint left standing (it goes with the commit): one round trip, not two.
        tx.batch_execute("SAVEPOINT keys")?;
        let fast = match copy_keys(&mut tx, &stmts.copy_keys, &keys) {
            Ok(()) => true,
            Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT keys")?;
                false
            }
            Err(err) => return Err(err.into()),
        };
        if !fast {
            copy_keys(&mut tx, &stmts.copy_staging, &keys)?;
            let new: HashSet<(i64, i64)> = tx
                .query(
                    "INSERT INTO received (session_id, seq, hash)
                     SELECT session_id, seq, hash FROM incoming_keys
                     ON CONFLICT DO NOTHING RETURNING session_id, seq",
                    &[],
                )?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let stored: HashMap<(i64, i64), Option<i64>> = tx
                .query(
                    "SELECT r.session_id, r.seq, r.hash FROM received r
                     JOIN incoming_keys k ON k.session_id = r.session_id AND k.seq = r.seq",
                    &[],
                )?
                .iter()
                .map(|row| ((row.get(0), row.get(1)), row.get(2)))
                .collect();
            tx.execute("DELETE FROM incoming_keys", &[])?;
            for (k, key) in keys.iter().enumerate() {
                if new.contains(&(key.session, key.seq)) {
                    continue;
                }
                let hash = stored.get(&(key.session, key.seq)).copied().flatten();
                standing[k] = hash;
                outcomes[key.at] = Some(if hash.is_none_or(|h| h == key.hash) {
                    Written::Duplicate
                } else {
                    Written::Conflict
                });
            }
        }
    }
    for (at, k) in repeats {
        let hash = items[at].hash;
        outcomes[at] = Some(if standing[k].is_none_or(|h| h == hash) {
            Written::Duplicate
        } else {
            Written::Conflict
        });
    }
    // The records themselves.
    let mut samples: Vec<SampleRow> = Vec::new();
    let mut untaken: Vec<(i64, i64)> = Vec::new();
    let mut image_bytes = 0u64;
    for (at, item) in items.iter().enumerate() {
        if outcomes[at].is_some() {
            continue;
        }
        let device = devices[at];
        let record = &item.record;
        let ready = match known.admit(&mut tx, device, record, most)? {
            Ok(ready) => ready,
            Err(limit) => {
                outcomes[at] = Some(Written::Refused(limit));
                // Its number stays free: it may be sent again once there is room.
                if let Some(seq) = record.seq {
                    untaken.push((sessions[at], seq as i64));
                }
                continue;
            }
        };
        outcomes[at] = Some(Written::New);
        seen(&mut seen_devices, device, item.recv_ts);
        if record.seq.is_some() {
            seen(&mut seen_sessions, sessions[at], item.recv_ts);
        }
        let readings = !record.values.is_empty() || !record.texts.is_empty();
        let stream_id = if !readings {
            None
        } else if let Some(id) = ready {
            if !record.units.is_empty() {
                if let Some(stream) = known.stream(&mut tx, device, &record.stream)? {
                    set_units(&mut tx, stream, device, record)?;
                }
            }
            Some(id)
        } else {
            let (id, added) = add_fields(&mut tx, known, device, record)?;
            if added > 0 {
                known.load(&mut tx, device)?.fields += added;
            }
            Some(id)
        };
        let (ts, device_ts) = (item.ts(), item.device_ts());
        if let Some(stream) = stream_id {
            samples.push(SampleRow {
                stream,
                ts,
                recv_ts: item.recv_ts,
                vals: item.vals.clone(),
                device_ts,
            });
        }
        if let Some(frame) = &record.frame {
            known.stream_or_add(&mut tx, device, &record.stream)?;
            let frame_id: i64 = tx
                .query_one(
                    "INSERT INTO frames (device_id, stream, ts, recv_ts, width, height, device_ts)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[
                        &device,
                        &record.stream,
                        &ts,
                        &item.recv_ts,
                        &(frame.width as i32),
                        &(frame.height as i32),
                        &device_ts,
                    ],
                )?
                .get(0);
            for d in &frame.detections {
                let [x, y, w, h] = d.bbox;
                tx.execute(
                    "INSERT INTO detections (frame_id, label, score, x, y, w, h)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&frame_id, &d.label, &d.score, &x, &y, &w, &h],
                )?;
            }
            if let Some(image) = &frame.image {
                tx.execute(
                    "INSERT INTO images (frame_id, format, size, data) VALUES ($1, $2, $3, $4)",
                    &[
                        &frame_id,
                        &image.format.name(),
                        &(image.data.len() as i64),
                        &&image.data[..],
                    ],
                )?;
                image_bytes += image.data.len() as u64;
            }
        }
    }
    for (session, seq) in untaken {
        tx.execute(
            "DELETE FROM received WHERE session_id = $1 AND seq = $2",
            &[&session, &seq],
        )?;
    }
    if !samples.is_empty() {
        // The streams written to must still be there (another node's retention may have
        // retired one this node still had cached): locked against retirement until commit.
        let mut ids: Vec<i64> = samples.iter().map(|s| s.stream).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = tx.query(&stmts.lock_streams, &[&ids])?.len();
        if found != ids.len() {
            return Err(Fail::StreamRetired);
        }
        let sink = tx.copy_in(&stmts.copy_samples)?;
        let mut writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::INT8,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::JSONB,
                Type::FLOAT8,
            ],
        );
        for row in &samples {
            writer.write(&[
                &row.stream,
                &row.ts,
                &row.recv_ts,
                &Jsonb(&row.vals),
                &row.device_ts,
            ])?;
        }
        writer.finish()?;
    }
    let (devices, sessions) = (latest(seen_devices), latest(seen_sessions));
    if !devices.is_empty() || !sessions.is_empty() {
        let split = |list: Vec<(i64, f64)>| -> (Vec<i64>, Vec<f64>) { list.into_iter().unzip() };
        let ((d_ids, d_at), (s_ids, s_at)) = (split(devices), split(sessions));
        tx.execute(&stmts.touch, &[&d_ids, &d_at, &s_ids, &s_at])?;
    }
    tx.commit()?;
    Ok((
        outcomes
            .into_iter()
            .map(|o| o.expect("every record has an outcome"))
            .collect(),
        image_bytes,
    ))
}

/// Why a batch was not committed (all of it rolled back; its senders retry).
enum Fail {
    Db(postgres::Error),
    /// A stream this node had cached was retired by another node's retention meanwhile.
    StreamRetired,
}

impl From<postgres::Error> for Fail {
    fn from(err: postgres::Error) -> Fail {
        Fail::Db(err)
    }
}

impl Fail {
    fn describe(&self) -> String {
        match self {
            Fail::Db(err) => describe(err),
            Fail::StreamRetired => "a stream was retired by a retention pass meanwhile; it is \
                 made again when the records are resent"
                .into(),
        }
    }
}

/// Adds the stream and the record's new fields (and units); the stream's id and how many
/// fields were added.
fn add_fields(
    tx: &mut Transaction<'_>,
    known: &mut Known,
    device: i64,
    record: &Record,
) -> Pg<(i64, usize)> {
    let stream = known.stream_or_add(tx, device, &record.stream)?;
    let mut added = 0;
    for (field, _) in &record.values {
        if !stream.fields.contains(field.as_str()) {
            tx.execute(
                "INSERT INTO series (device_id, stream, field) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&device, &record.stream, field],
            )?;
            stream.fields.insert(field.clone());
            added += 1;
        }
    }
    for (field, _) in &record.texts {
        let key = format!("\0{field}");
        if !stream.fields.contains(key.as_str()) {
            tx.execute(
                "INSERT INTO text_fields (device_id, stream, field) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&device, &record.stream, field],
            )?;
            stream.fields.insert(key);
            added += 1;
        }
    }
    set_units(tx, stream, device, record)?;
    Ok((stream.id, added))
}

/// Stores the units `record` sends that differ from those kept.
fn set_units(
    tx: &mut Transaction<'_>,
    stream: &mut KnownStream,
    device: i64,
    record: &Record,
) -> Pg<()> {
    for (field, unit) in &record.units {
        if stream.units.get(field) != Some(unit) {
            tx.execute(
                "UPDATE series SET unit = $4 WHERE device_id = $1 AND stream = $2 AND field = $3",
                &[&device, &record.stream, field, unit],
            )?;
            stream.units.insert(field.clone(), unit.clone());
        }
    }
    Ok(())
}

/// One retention pass, as SQLite's (what was received before the cutoff goes, if dated
/// outside the period), if no other node is running one; the streams retired.
fn retention_pass(
    client: &mut Client,
    config: &StoreConfig,
    now: f64,
) -> Pg<Vec<(String, String)>> {
    let mut tx = client.transaction()?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK])?
        .get(0);
    if !locked {
        return Ok(Vec::new());
    }
    if let Some(keep) = config.images.retention {
        let cutoff = now - keep.as_secs_f64();
        tx.execute(
            "DELETE FROM images WHERE frame_id IN (SELECT id FROM frames WHERE recv_ts < $1)",
            &[&cutoff],
        )?;
    }
    let Some(keep) = config.retention else {
        tx.commit()?;
        return Ok(Vec::new());
    };
    let cutoff = now - keep.as_secs_f64();
    // Through the (stream, time) index, a stream at a time: dated before the period or after
    // now (both ends of the index), and received before the period — as SQLite's.
    tx.execute(
        "DELETE FROM samples sa USING streams st
         WHERE sa.stream_id = st.id AND (sa.ts < $1 OR sa.ts > $2) AND sa.recv_ts < $1",
        &[&cutoff, &now],
    )?;
    // Detections and images go with their frames (ON DELETE CASCADE).
    tx.execute(
        "DELETE FROM frames WHERE recv_ts < $1 AND (ts < $1 OR ts > $2)",
        &[&cutoff, &now],
    )?;
    tx.execute(
        "DELETE FROM received WHERE session_id IN (SELECT id FROM sessions WHERE last_recv < $1)",
        &[&cutoff],
    )?;
    tx.execute("DELETE FROM sessions WHERE last_recv < $1", &[&cutoff])?;
    // Streams left without data: locked first (waiting for commits that write to them), then
    // looked at again in a statement of their own, which sees what those commits wrote.
    let candidates: Vec<i64> = tx
        .query(
            "SELECT st.id FROM streams st
             WHERE NOT EXISTS (SELECT 1 FROM samples sa WHERE sa.stream_id = st.id)
               AND NOT EXISTS (SELECT 1 FROM frames f
                               WHERE f.device_id = st.device_id AND f.stream = st.name)
             ORDER BY st.id FOR UPDATE",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let retired: Vec<(i64, i64, String, String)> = tx
        .query(
            "SELECT st.id, st.device_id, d.name, st.name FROM streams st
             JOIN devices d ON d.id = st.device_id
             WHERE st.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM samples sa WHERE sa.stream_id = st.id)
               AND NOT EXISTS (SELECT 1 FROM frames f
                               WHERE f.device_id = st.device_id AND f.stream = st.name)",
            &[&candidates],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    for (id, device, _, stream) in &retired {
        tx.execute(
            "DELETE FROM series WHERE device_id = $1 AND stream = $2",
            &[device, stream],
        )?;
        tx.execute(
            "DELETE FROM text_fields WHERE device_id = $1 AND stream = $2",
            &[device, stream],
        )?;
        tx.execute("DELETE FROM streams WHERE id = $1", &[id])?;
    }
    tx.commit()?;
    Ok(retired
        .into_iter()
        .map(|(_, _, device, stream)| (device, stream))
        .collect())
}

/// Past the budget, the oldest images go (by arrival), down to nine tenths of it.
fn image_budget(client: &mut Client, budget: u64) -> Pg<()> {
    let total = image_bytes(client)?;
    if total <= budget {
        return Ok(());
    }
    let excess = (total - budget / 10 * 9) as i64;
    client.execute(
        "DELETE FROM images WHERE frame_id <= coalesce((
             SELECT frame_id FROM (
                 SELECT frame_id, (sum(size) OVER (ORDER BY frame_id))::bigint AS freed FROM images) s
             WHERE freed >= $1 ORDER BY frame_id LIMIT 1), 9223372036854775807)",
        &[&excess],
    )?;
    Ok(())
}
