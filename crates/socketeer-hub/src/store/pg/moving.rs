//! Moving up: a single-machine SQLite history copied into PostgreSQL (`socketeer hub migrate`).
//!
//! Resumable and idempotent: samples and frames are copied in chunks in the source's row
//! order, each chunk in one PostgreSQL transaction together with how far the copy of this
//! source has come (`socketeer_moves`), so an interrupted copy goes on where its last chunk
//! committed, and a second run copies nothing twice (only what the source gained since).
//! Devices, streams, fields, sessions and idempotency keys are matched by name (and key),
//! so the target may already hold data of its own — robots that moved first keep their
//! records, and a resend of a record the SQLite hub stored is still a duplicate.

use std::collections::HashMap;
use std::path::Path;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use rusqlite::{OpenFlags, params};

use super::writer::Jsonb;
use super::{PostgresUrl, connect, describe, migrate};

/// Samples per chunk (one transaction each).
const SAMPLE_CHUNK: i64 = 20_000;
/// Frames per chunk (each may carry an image of up to 16 MiB).
const FRAME_CHUNK: i64 = 64;

/// How far a copy has come: shown as it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveProgress {
    /// Samples copied (in this and earlier runs) of those in the source.
    pub samples: (u64, u64),
    /// Frames copied of those in the source.
    pub frames: (u64, u64),
}

/// What a copy did, and the check at its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveSummary {
    /// Devices in the source.
    pub devices: u64,
    /// Samples and frames copied by this run.
    pub copied: (u64, u64),
    /// Samples and frames of the source now in the target (this run and earlier ones).
    pub total: (u64, u64),
    /// Devices whose samples or frames in the target are fewer than in the source: must be
    /// empty (a copy that is complete).
    pub short: Vec<String>,
}

fn fail(err: postgres::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", describe(&err))
}

/// Copies the hub database `from` (SQLite; it may be running) into `to` (its schema created
/// or migrated), telling `progress` after each chunk.
///
/// # Errors
/// Either database cannot be read or written; what was committed stays, and a new run goes
/// on from there.
pub fn sqlite_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    mut progress: impl FnMut(MoveProgress),
) -> anyhow::Result<MoveSummary> {
    if !from.is_file() {
        anyhow::bail!("{}: no such database", from.display());
    }
    let source_name = std::fs::canonicalize(from)?.display().to_string();
    let src = rusqlite::Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut pg = connect(to).map_err(anyhow::Error::msg)?;
    migrate(&mut pg).map_err(fail)?;
    pg.batch_execute(
        "CREATE TABLE IF NOT EXISTS socketeer_moves (
             source text PRIMARY KEY,
             samples_after bigint NOT NULL DEFAULT 0,
             frames_after bigint NOT NULL DEFAULT 0)",
    )
    .map_err(fail)?;
    pg.execute(
        "INSERT INTO socketeer_moves (source) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&source_name],
    )
    .map_err(fail)?;

    // Devices, streams, fields and sessions, by name: the ids in the target.
    let mut devices: HashMap<i64, (String, i64)> = HashMap::new();
    {
        let mut stmt = src.prepare("SELECT id, name, first_seen, last_seen FROM devices")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, name, first, last): (i64, String, f64, f64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let target: i64 = pg
                .query_one(
                    "INSERT INTO devices (name, first_seen, last_seen) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET
                         first_seen = least(devices.first_seen, excluded.first_seen),
                         last_seen = greatest(devices.last_seen, excluded.last_seen)
                     RETURNING id",
                    &[&name, &first, &last],
                )
                .map_err(fail)?
                .get(0);
            devices.insert(id, (name, target));
        }
    }
    let device = |id: i64| -> anyhow::Result<i64> {
        devices
            .get(&id)
            .map(|d| d.1)
            .ok_or_else(|| anyhow::anyhow!("the source has a row of device {id}, which it lacks"))
    };
    let mut streams: HashMap<i64, i64> = HashMap::new();
    {
        let mut stmt = src.prepare("SELECT id, device_id, name FROM streams")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, dev, name): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let dev = device(dev)?;
            pg.execute(
                "INSERT INTO streams (device_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&dev, &name],
            )
            .map_err(fail)?;
            let target: i64 = pg
                .query_one(
                    "SELECT id FROM streams WHERE device_id = $1 AND name = $2",
                    &[&dev, &name],
                )
                .map_err(fail)?
                .get(0);
            streams.insert(id, target);
        }
    }
    for table in ["series", "text_fields"] {
        let unit = if table == "series" { "unit" } else { "NULL" };
        let mut stmt = src.prepare(&format!(
            "SELECT device_id, stream, field, {unit} FROM {table}"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (dev, stream, field, unit): (i64, String, String, Option<String>) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let dev = device(dev)?;
            if table == "series" {
                pg.execute(
                    "INSERT INTO series (device_id, stream, field, unit) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (device_id, stream, field)
                     DO UPDATE SET unit = coalesce(series.unit, excluded.unit)",
                    &[&dev, &stream, &field, &unit],
                )
            } else {
                pg.execute(
                    "INSERT INTO text_fields (device_id, stream, field) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&dev, &stream, &field],
                )
            }
            .map_err(fail)?;
        }
    }
    let mut sessions: HashMap<i64, i64> = HashMap::new();
    {
        let mut stmt = src.prepare("SELECT id, device_id, name, last_recv FROM sessions")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, dev, name, last): (i64, i64, String, f64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let dev = device(dev)?;
            let target: i64 = pg
                .query_one(
                    "INSERT INTO sessions (device_id, name, last_recv) VALUES ($1, $2, $3)
                     ON CONFLICT (device_id, name)
                     DO UPDATE SET last_recv = greatest(sessions.last_recv, excluded.last_recv)
                     RETURNING id",
                    &[&dev, &name, &last],
                )
                .map_err(fail)?
                .get(0);
            sessions.insert(id, target);
        }
    }
    // The idempotency keys: a robot that resends to the new store what the old one stored
    // gets "duplicate", not a second copy.
    {
        let mut tx = pg.transaction().map_err(fail)?;
        tx.batch_execute(
            "CREATE TEMP TABLE moving_keys (session_id bigint, seq bigint, hash bigint)
             ON COMMIT DROP",
        )
        .map_err(fail)?;
        let sink = tx
            .copy_in("COPY moving_keys FROM STDIN (FORMAT binary)")
            .map_err(fail)?;
        let mut writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8, Type::INT8]);
        let mut stmt = src.prepare("SELECT session_id, seq, hash FROM received")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (session, seq, hash): (i64, i64, Option<i64>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            // Keys of sessions retention already removed are kept by no one: skipped.
            if let Some(session) = sessions.get(&session) {
                writer.write(&[session, &seq, &hash]).map_err(fail)?;
            }
        }
        writer.finish().map_err(fail)?;
        tx.execute(
            "INSERT INTO received SELECT * FROM moving_keys ON CONFLICT DO NOTHING",
            &[],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }

    let total_samples: i64 = src.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
    let total_frames: i64 = src.query_row("SELECT count(*) FROM frames", [], |r| r.get(0))?;
    let marks = pg
        .query_one(
            "SELECT samples_after, frames_after FROM socketeer_moves WHERE source = $1",
            &[&source_name],
        )
        .map_err(fail)?;
    let (mut samples_after, mut frames_after): (i64, i64) = (marks.get(0), marks.get(1));
    let done_before = |table: &str, after: i64| -> rusqlite::Result<i64> {
        src.query_row(
            &format!("SELECT count(*) FROM {table} WHERE rowid <= ?1"),
            params![after],
            |r| r.get(0),
        )
    };
    let mut summary = MoveSummary {
        devices: devices.len() as u64,
        ..MoveSummary::default()
    };
    let mut state = MoveProgress {
        samples: (
            done_before("samples", samples_after)? as u64,
            total_samples as u64,
        ),
        frames: (
            done_before("frames", frames_after)? as u64,
            total_frames as u64,
        ),
    };
    progress(state);

    // Samples, a chunk per transaction, with the mark.
    let mut stmt = src.prepare(
        "SELECT rowid, stream_id, ts, recv_ts, vals, device_ts FROM samples
         WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
    )?;
    loop {
        let rows: Vec<(i64, i64, f64, f64, String, Option<f64>)> = stmt
            .query_map(params![samples_after, SAMPLE_CHUNK], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        let mut tx = pg.transaction().map_err(fail)?;
        let sink = tx
            .copy_in(
                "COPY samples (stream_id, ts, recv_ts, vals, device_ts) FROM STDIN (FORMAT binary)",
            )
            .map_err(fail)?;
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
        let mut copied = 0u64;
        for (_, stream, ts, recv_ts, vals, device_ts) in &rows {
            let Some(stream) = streams.get(stream) else {
                continue; // a sample of a stream the source no longer has
            };
            writer
                .write(&[stream, ts, recv_ts, &Jsonb(vals), device_ts])
                .map_err(fail)?;
            copied += 1;
        }
        writer.finish().map_err(fail)?;
        tx.execute(
            "UPDATE socketeer_moves SET samples_after = $2 WHERE source = $1",
            &[&source_name, &last],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        samples_after = last;
        summary.copied.0 += copied;
        state.samples.0 += rows.len() as u64;
        progress(state);
    }
    drop(stmt);

    // Frames with their detections and images.
    let mut stmt = src.prepare(
        "SELECT f.rowid, f.device_id, f.stream, f.ts, f.recv_ts, f.width, f.height, f.device_ts,
                i.format, i.size, i.data
         FROM frames f LEFT JOIN images i ON i.frame_id = f.id
         WHERE f.rowid > ?1 ORDER BY f.rowid LIMIT ?2",
    )?;
    let mut detections = src.prepare(
        "SELECT label, score, x, y, w, h FROM detections WHERE frame_id = ?1 ORDER BY rowid",
    )?;
    type FrameRow = (
        i64,
        i64,
        String,
        f64,
        f64,
        i64,
        i64,
        Option<f64>,
        Option<String>,
        Option<i64>,
        Option<Vec<u8>>,
    );
    loop {
        let rows: Vec<FrameRow> = stmt
            .query_map(params![frames_after, FRAME_CHUNK], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        let mut tx = pg.transaction().map_err(fail)?;
        for (id, dev, stream, ts, recv_ts, w, h, device_ts, format, size, data) in &rows {
            let dev = device(*dev)?;
            let frame: i64 = tx
                .query_one(
                    "INSERT INTO frames (device_id, stream, ts, recv_ts, width, height, device_ts)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[
                        &dev,
                        stream,
                        ts,
                        recv_ts,
                        &(*w as i32),
                        &(*h as i32),
                        device_ts,
                    ],
                )
                .map_err(fail)?
                .get(0);
            let found = detections
                .query_map(params![id], |d| {
                    Ok((
                        d.get::<_, String>(0)?,
                        d.get::<_, f64>(1)?,
                        d.get::<_, f64>(2)?,
                        d.get::<_, f64>(3)?,
                        d.get::<_, f64>(4)?,
                        d.get::<_, f64>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (label, score, x, y, w, h) in found {
                tx.execute(
                    "INSERT INTO detections (frame_id, label, score, x, y, w, h)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&frame, &label, &score, &x, &y, &w, &h],
                )
                .map_err(fail)?;
            }
            if let (Some(format), Some(size), Some(data)) = (format, size, data) {
                tx.execute(
                    "INSERT INTO images (frame_id, format, size, data) VALUES ($1, $2, $3, $4)",
                    &[&frame, format, size, data],
                )
                .map_err(fail)?;
            }
        }
        tx.execute(
            "UPDATE socketeer_moves SET frames_after = $2 WHERE source = $1",
            &[&source_name, &last],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        frames_after = last;
        summary.copied.1 += rows.len() as u64;
        state.frames.0 += rows.len() as u64;
        progress(state);
    }
    drop((stmt, detections));

    // The check: per device, at least as many samples and frames in the target as in the
    // source.
    summary.total = (state.samples.0, state.frames.0);
    let mut per_device = src.prepare(
        "SELECT d.name,
                (SELECT count(*) FROM samples sa JOIN streams st ON st.id = sa.stream_id
                 WHERE st.device_id = d.id),
                (SELECT count(*) FROM frames f WHERE f.device_id = d.id)
         FROM devices d ORDER BY d.name",
    )?;
    let expected: Vec<(String, i64, i64)> = per_device
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, samples, frames) in expected {
        let row = pg
            .query_one(
                "SELECT (SELECT count(*) FROM samples sa JOIN streams st ON st.id = sa.stream_id
                         WHERE st.device_id = d.id),
                        (SELECT count(*) FROM frames f WHERE f.device_id = d.id)
                 FROM devices d WHERE d.name = $1",
                &[&name],
            )
            .map_err(fail)?;
        let (have_samples, have_frames): (i64, i64) = (row.get(0), row.get(1));
        if have_samples < samples || have_frames < frames {
            summary.short.push(name);
        }
    }
    Ok(summary)
}
