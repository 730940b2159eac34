//! Every read the API serves, as typed answers: the devices, a device's streams, a series over
//! time (raw or bucketed), frames with their detections, and an export's rows.
//!
//! Reads run on read-only connections kept in a small pool (WAL lets them read while the writer
//! writes); each method blocks, so [`Store`](super::Store) runs them on blocking threads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;

/// Read connections kept open between reads.
const IDLE_CONNECTIONS: usize = 4;

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DeviceRow {
    pub(crate) name: String,
    pub(crate) first_seen: f64,
    pub(crate) last_seen: f64,
    /// Numeric series (stream and field) it has.
    pub(crate) series: i64,
}

/// What a device has sent: its streams' numeric fields, text states, and frame streams.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Streams {
    pub(crate) values: Vec<StreamFields>,
    pub(crate) texts: Vec<TextState>,
    pub(crate) frames: Vec<FrameStream>,
}

/// A stream's numeric fields, in name order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StreamFields {
    pub(crate) stream: String,
    pub(crate) fields: Vec<String>,
    /// The units sent for some of them (`"az"` → `"m/s²"`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) units: BTreeMap<String, String>,
}

/// A text field and its latest text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TextState {
    pub(crate) stream: String,
    pub(crate) field: String,
    pub(crate) ts: Option<f64>,
    pub(crate) text: Option<String>,
}

/// A stream of frames: how many, and the newest's time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FrameStream {
    pub(crate) stream: String,
    pub(crate) frames: i64,
    /// How many of them have a picture.
    pub(crate) images: i64,
    pub(crate) last_ts: f64,
}

/// Which series, over which time, at most how many points.
#[derive(Debug, Clone)]
pub(crate) struct SeriesQuery {
    pub(crate) device: String,
    pub(crate) stream: String,
    pub(crate) field: String,
    pub(crate) from: f64,
    pub(crate) to: f64,
    pub(crate) points: usize,
}

/// A series' points in a range: the points themselves, or equal buckets of them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    /// Points in the range.
    pub(crate) count: usize,
    pub(crate) points: SeriesPoints,
}

/// The points of a [`Series`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SeriesPoints {
    /// `(ts, value)`, in time order.
    Raw(Vec<(f64, f64)>),
    /// Buckets of `width` seconds: `(start, min, max, mean, count)`, in time order (empty
    /// buckets left out).
    Buckets {
        width: f64,
        rows: Vec<(f64, f64, f64, f64, i64)>,
    },
}

/// Which frames: all filters optional but the time range.
#[derive(Debug, Clone)]
pub(crate) struct DetectionQuery {
    pub(crate) device: Option<String>,
    pub(crate) stream: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) min_score: f64,
    pub(crate) from: f64,
    pub(crate) to: f64,
    /// Most frames.
    pub(crate) limit: usize,
    /// Most detections over all frames (past it the answer is truncated).
    pub(crate) max_detections: usize,
}

/// Frames with the detections that matched, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Detections {
    pub(crate) frames: Vec<FrameDetections>,
    /// The detection cap cut the answer short.
    pub(crate) truncated: bool,
}

/// One frame and its matching detections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FrameDetections {
    pub(crate) device: String,
    pub(crate) stream: String,
    pub(crate) ts: f64,
    pub(crate) frame: FrameSize,
    pub(crate) detections: Vec<DetectionRow>,
}

/// A frame's size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct FrameSize {
    pub(crate) w: i64,
    pub(crate) h: i64,
}

/// One detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DetectionRow {
    pub(crate) label: String,
    pub(crate) score: f64,
    #[serde(rename = "box")]
    pub(crate) bbox: [f64; 4],
}

/// Which frames: a device's, optionally one stream's, in a time range.
#[derive(Debug, Clone)]
pub(crate) struct FrameQuery {
    pub(crate) device: String,
    pub(crate) stream: Option<String>,
    pub(crate) from: f64,
    pub(crate) to: f64,
    /// Most frames.
    pub(crate) limit: usize,
}

/// One frame as listed: when, its size, how many detections, and its image if it has one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FrameRow {
    pub(crate) id: i64,
    pub(crate) stream: String,
    pub(crate) ts: f64,
    pub(crate) recv_ts: f64,
    pub(crate) w: i64,
    pub(crate) h: i64,
    pub(crate) detections: i64,
    pub(crate) image: Option<ImageInfo>,
}

/// An image's format and size in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ImageInfo {
    pub(crate) format: String,
    pub(crate) bytes: i64,
}

/// Which image: a frame's, by id, or a stream's newest at or before a time.
#[derive(Debug, Clone)]
pub(crate) enum ImageQuery {
    Id(i64),
    At {
        device: String,
        stream: Option<String>,
        at: f64,
    },
}

/// A stored image with its frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredImage {
    pub(crate) frame_id: i64,
    pub(crate) stream: String,
    pub(crate) ts: f64,
    pub(crate) format: String,
    pub(crate) data: Vec<u8>,
}

/// What an export holds.
#[derive(Debug, Clone)]
pub(crate) struct ExportQuery {
    pub(crate) device: String,
    pub(crate) stream: Option<String>,
    pub(crate) field: Option<String>,
    pub(crate) from: f64,
    pub(crate) to: f64,
    /// Most rows.
    pub(crate) max_rows: usize,
}

/// One value of one sample.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExportRow {
    pub(crate) ts: f64,
    pub(crate) recv_ts: f64,
    pub(crate) stream: String,
    pub(crate) field: String,
    pub(crate) value: Cell,
}

/// A stored value: a number or a text state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Integer(i64),
    Real(f64),
    Text(String),
    /// Anything else (not written by this hub).
    Empty,
}

/// The read side of the SQLite store.
pub(crate) struct SqliteReader {
    db: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

fn unavailable(err: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

impl SqliteReader {
    pub(crate) fn new(db: PathBuf) -> SqliteReader {
        SqliteReader {
            db,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `work` on a pooled read-only connection.
    fn with<T>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_read(&self.db).map_err(|e| unavailable(&e))?,
        };
        let result = work(&conn).map_err(|e| unavailable(&e));
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if result.is_ok() && idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
        result
    }

    /// Every device, by name.
    pub(crate) fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, first_seen, last_seen,
                        (SELECT count(*) FROM series s WHERE s.device_id = d.id)
                 FROM devices d ORDER BY name",
            )?;
            stmt.query_map([], |r| {
                Ok(DeviceRow {
                    name: r.get(0)?,
                    first_seen: r.get(1)?,
                    last_seen: r.get(2)?,
                    series: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// What `device` has sent; `None` if there is no such device.
    pub(crate) fn streams(&self, device: &str) -> Result<Option<Streams>, StoreError> {
        self.with(|conn| {
            let Some(device) = device_id(conn, device)? else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT stream, field, unit FROM series WHERE device_id = ?1
                 ORDER BY stream, field",
            )?;
            let values = by_stream(
                stmt.query_map(params![device], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            );
            let mut stmt = conn.prepare_cached(
                "SELECT f.stream, count(*), max(f.ts), count(i.frame_id)
                 FROM frames f LEFT JOIN images i ON i.frame_id = f.id
                 WHERE f.device_id = ?1 GROUP BY f.stream",
            )?;
            let frames = stmt
                .query_map(params![device], |r| {
                    Ok(FrameStream {
                        stream: r.get(0)?,
                        frames: r.get(1)?,
                        last_ts: r.get(2)?,
                        images: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // Text states: each field's latest text (the newest sample that holds it).
            let mut stmt = conn.prepare_cached(
                "SELECT tf.stream, tf.field,
                        (SELECT json_array(sa.ts, sa.vals ->> ('$.\"' || tf.field || '\"'))
                         FROM samples sa
                         WHERE sa.stream_id = st.id
                           AND json_type(sa.vals, '$.\"' || tf.field || '\"') = 'text'
                         ORDER BY sa.ts DESC LIMIT 1)
                 FROM text_fields tf
                 JOIN streams st ON st.device_id = tf.device_id AND st.name = tf.stream
                 WHERE tf.device_id = ?1 ORDER BY tf.stream, tf.field",
            )?;
            let texts = stmt
                .query_map(params![device], |r| {
                    let latest: Option<String> = r.get(2)?;
                    let latest: Option<(f64, String)> =
                        latest.and_then(|l| serde_json::from_str(&l).ok());
                    Ok(TextState {
                        stream: r.get(0)?,
                        field: r.get(1)?,
                        ts: latest.as_ref().map(|l| l.0),
                        text: latest.map(|l| l.1),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(Streams {
                values,
                texts,
                frames,
            }))
        })
    }

    /// A series over a time range: the points themselves when there are at most `points`,
    /// else that many equal buckets with min, max, mean and count each — so a plot keeps every
    /// spike however far it is zoomed out. `None` if the device, stream or field is unknown.
    pub(crate) fn series(&self, q: &SeriesQuery) -> Result<Option<Series>, StoreError> {
        self.with(|conn| {
            // The field must be one the stream has: then it is a checked name, safe in a path.
            let Some(stream) = conn
                .query_row(
                    "SELECT st.id FROM streams st JOIN devices d ON d.id = st.device_id
                     JOIN series s ON s.device_id = d.id AND s.stream = st.name AND s.field = ?3
                     WHERE d.name = ?1 AND st.name = ?2",
                    params![q.device, q.stream, q.field],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
            else {
                return Ok(None);
            };
            let (from, to, points) = (q.from, q.to, q.points.max(1));
            let path = format!("$.\"{}\"", q.field);
            // How many points, and the span they really cover: buckets divide that span, not
            // the asked-for window (the last minute's data over the default hour is still
            // `points` buckets, not seven).
            let (count, first, last): (usize, Option<f64>, Option<f64>) = conn.query_row(
                "SELECT count(v), min(ts), max(ts) FROM (
                     SELECT ts, vals ->> ?4 AS v FROM samples
                     WHERE stream_id = ?1 AND ts BETWEEN ?2 AND ?3)
                 WHERE typeof(v) IN ('integer', 'real')",
                params![stream, from, to, path],
                |r| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?, r.get(2)?)),
            )?;
            if count <= points {
                let mut stmt = conn.prepare_cached(
                    "SELECT ts, v FROM (
                         SELECT ts, vals ->> ?4 AS v FROM samples
                         WHERE stream_id = ?1 AND ts BETWEEN ?2 AND ?3)
                     WHERE typeof(v) IN ('integer', 'real') ORDER BY ts",
                )?;
                let rows = stmt
                    .query_map(params![stream, from, to, path], |r| {
                        Ok((r.get::<_, f64>(0)?, r.get::<_, f64>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                return Ok(Some(Series {
                    count,
                    points: SeriesPoints::Raw(rows),
                }));
            }
            let (start, end) = (first.unwrap_or(from), last.unwrap_or(to));
            // The last point's bucket is closed at `end` (the min() below); a span of one
            // instant is one bucket.
            let width = ((end - start) / points as f64).max(f64::MIN_POSITIVE);
            let mut stmt = conn.prepare_cached(
                "SELECT min(CAST((ts - ?2) / ?4 AS INTEGER), ?5 - 1) AS b,
                        min(v), max(v), avg(v), count(*)
                 FROM (SELECT ts, vals ->> ?6 AS v FROM samples
                       WHERE stream_id = ?1 AND ts BETWEEN ?2 AND ?3)
                 WHERE typeof(v) IN ('integer', 'real')
                 GROUP BY b ORDER BY b",
            )?;
            let rows = stmt
                .query_map(
                    params![stream, start, end, width, points as i64, path],
                    |r| {
                        let bucket: i64 = r.get(0)?;
                        Ok((
                            start + bucket as f64 * width,
                            r.get::<_, f64>(1)?,
                            r.get::<_, f64>(2)?,
                            r.get::<_, f64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(Series {
                count,
                points: SeriesPoints::Buckets { width, rows },
            }))
        })
    }

    /// Frames with the detections that match, newest first.
    pub(crate) fn detections(&self, q: &DetectionQuery) -> Result<Detections, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.id, dv.name, f.stream, f.ts, f.width, f.height,
                        d.label, d.score, d.x, d.y, d.w, d.h
                 FROM frames f JOIN devices dv ON dv.id = f.device_id
                 JOIN detections d ON d.frame_id = f.id
                 WHERE f.id IN (
                     SELECT f2.id FROM frames f2 JOIN devices dv2 ON dv2.id = f2.device_id
                     WHERE f2.ts BETWEEN ?1 AND ?2
                       AND (?3 IS NULL OR dv2.name = ?3) AND (?4 IS NULL OR f2.stream = ?4)
                       AND EXISTS (SELECT 1 FROM detections d2 WHERE d2.frame_id = f2.id
                                   AND (?5 IS NULL OR d2.label = ?5) AND d2.score >= ?6)
                     ORDER BY f2.ts DESC LIMIT ?7)
                   AND (?5 IS NULL OR d.label = ?5) AND d.score >= ?6
                 ORDER BY f.ts DESC, f.id DESC, d.rowid
                 LIMIT ?8",
            )?;
            let rows = stmt.query_map(
                params![
                    q.from,
                    q.to,
                    q.device,
                    q.stream,
                    q.label,
                    q.min_score,
                    q.limit as i64,
                    q.max_detections as i64 + 1
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        FrameDetections {
                            device: r.get(1)?,
                            stream: r.get(2)?,
                            ts: r.get(3)?,
                            frame: FrameSize {
                                w: r.get(4)?,
                                h: r.get(5)?,
                            },
                            detections: Vec::new(),
                        },
                        DetectionRow {
                            label: r.get(6)?,
                            score: r.get(7)?,
                            bbox: [r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?],
                        },
                    ))
                },
            )?;
            fold_detections(rows, q.max_detections)
        })
    }

    /// A device's frames in a range, in time order (at most `limit`; `true` when there were
    /// more).
    pub(crate) fn frames(&self, q: &FrameQuery) -> Result<(Vec<FrameRow>, bool), StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.id, f.stream, f.ts, f.recv_ts, f.width, f.height,
                        (SELECT count(*) FROM detections d WHERE d.frame_id = f.id),
                        i.format, i.size
                 FROM devices dv JOIN frames f ON f.device_id = dv.id
                 LEFT JOIN images i ON i.frame_id = f.id
                 WHERE dv.name = ?1 AND (?2 IS NULL OR f.stream = ?2) AND f.ts BETWEEN ?3 AND ?4
                 ORDER BY f.ts, f.id LIMIT ?5",
            )?;
            let mut rows = stmt
                .query_map(
                    params![q.device, q.stream, q.from, q.to, q.limit as i64 + 1],
                    |r| {
                        let format: Option<String> = r.get(7)?;
                        Ok(FrameRow {
                            id: r.get(0)?,
                            stream: r.get(1)?,
                            ts: r.get(2)?,
                            recv_ts: r.get(3)?,
                            w: r.get(4)?,
                            h: r.get(5)?,
                            detections: r.get(6)?,
                            image: match format {
                                Some(format) => Some(ImageInfo {
                                    format,
                                    bytes: r.get(8)?,
                                }),
                                None => None,
                            },
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = rows.len() > q.limit;
            rows.truncate(q.limit);
            Ok((rows, more))
        })
    }

    /// An image: a frame's by id, or the newest of a device's (stream's) frames that have one,
    /// dated at or before a time.
    pub(crate) fn image(&self, q: &ImageQuery) -> Result<Option<StoredImage>, StoreError> {
        self.with(|conn| {
            let row = |r: &rusqlite::Row<'_>| {
                Ok(StoredImage {
                    frame_id: r.get(0)?,
                    stream: r.get(1)?,
                    ts: r.get(2)?,
                    format: r.get(3)?,
                    data: r.get(4)?,
                })
            };
            match q {
                ImageQuery::Id(id) => conn
                    .prepare_cached(
                        "SELECT f.id, f.stream, f.ts, i.format, i.data
                         FROM images i JOIN frames f ON f.id = i.frame_id WHERE i.frame_id = ?1",
                    )?
                    .query_row(params![id], row)
                    .optional(),
                ImageQuery::At { device, stream, at } => conn
                    .prepare_cached(
                        "SELECT f.id, f.stream, f.ts, i.format, i.data
                         FROM devices dv JOIN frames f ON f.device_id = dv.id
                         JOIN images i ON i.frame_id = f.id
                         WHERE dv.name = ?1 AND (?2 IS NULL OR f.stream = ?2) AND f.ts <= ?3
                         ORDER BY f.ts DESC, f.id DESC LIMIT 1",
                    )?
                    .query_row(params![device, stream, at], row)
                    .optional(),
            }
        })
    }

    /// The values of one device (optionally one stream and field) in a range, in time order,
    /// handed to `each` until it returns false.
    pub(crate) fn export(
        &self,
        q: &ExportQuery,
        mut each: impl FnMut(ExportRow) -> bool,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sa.ts, sa.recv_ts, st.name, j.key, j.value
                 FROM devices d JOIN streams st ON st.device_id = d.id
                 JOIN samples sa ON sa.stream_id = st.id JOIN json_each(sa.vals) j
                 WHERE d.name = ?1 AND (?2 IS NULL OR st.name = ?2) AND (?3 IS NULL OR j.key = ?3)
                   AND sa.ts BETWEEN ?4 AND ?5
                 ORDER BY sa.ts LIMIT ?6",
            )?;
            let mut rows = stmt.query(params![
                q.device,
                q.stream,
                q.field,
                q.from,
                q.to,
                q.max_rows as i64
            ])?;
            while let Some(row) = rows.next()? {
                let value = match row.get::<_, rusqlite::types::Value>(4)? {
                    rusqlite::types::Value::Real(n) => Cell::Real(n),
                    rusqlite::types::Value::Integer(n) => Cell::Integer(n),
                    rusqlite::types::Value::Text(text) => Cell::Text(text),
                    _ => Cell::Empty,
                };
                let row = ExportRow {
                    ts: row.get(0)?,
                    recv_ts: row.get(1)?,
                    stream: row.get(2)?,
                    field: row.get(3)?,
                    value,
                };
                if !each(row) {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// (stream, field, unit) rows, in stream and field order, as each stream's fields and units.
pub(super) fn by_stream(rows: Vec<(String, String, Option<String>)>) -> Vec<StreamFields> {
    let mut values: BTreeMap<String, StreamFields> = BTreeMap::new();
    for (stream, field, unit) in rows {
        let fields = values
            .entry(stream)
            .or_insert_with_key(|stream| StreamFields {
                stream: stream.clone(),
                fields: Vec::new(),
                units: BTreeMap::new(),
            });
        if let Some(unit) = unit {
            fields.units.insert(field.clone(), unit);
        }
        fields.fields.push(field);
    }
    values.into_values().collect()
}

/// Rows of (frame id, frame, one of its detections), newest frame first, folded into frames;
/// past `max` detections the answer is cut (and says so).
pub(super) fn fold_detections<E>(
    rows: impl IntoIterator<Item = Result<(i64, FrameDetections, DetectionRow), E>>,
    max: usize,
) -> Result<Detections, E> {
    let mut frames: Vec<FrameDetections> = Vec::new();
    let mut last_id = None;
    let mut taken = 0;
    let mut truncated = false;
    for row in rows {
        taken += 1;
        if taken > max {
            // The last frame may lack some of its detections: leave it out (unless it is the
            // only one) and say the answer is cut.
            truncated = true;
            if frames.len() > 1 {
                frames.pop();
            }
            break;
        }
        let (id, frame, detection) = row?;
        if last_id != Some(id) {
            frames.push(frame);
            last_id = Some(id);
        }
        if let Some(frame) = frames.last_mut() {
            frame.detections.push(detection);
        }
    }
    Ok(Detections { frames, truncated })
}

/// A read-only connection to the database.
fn open_read(db: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn device_id(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT id FROM devices WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )
    .optional()
}

/// Which records a recording holds: one device's or all, over a time range (inclusive).
#[derive(Debug, Clone)]
pub(crate) struct RecordingQuery {
    pub(crate) device: Option<String>,
    pub(crate) from: f64,
    pub(crate) to: f64,
}

/// A stream a recording may hold records of, with its fields (for a schema).
#[derive(Debug, Clone)]
pub(crate) struct RecordingStream {
    pub(crate) device: String,
    pub(crate) stream: String,
    pub(crate) numbers: Vec<String>,
    pub(crate) texts: Vec<String>,
    /// Whether a field's name is dotted (a nested value, flattened when stored).
    pub(crate) dotted: bool,
}

/// One stored record, in time order: a sample (its values as stored, a JSON object with
/// dotted field names) or a frame with its detections and image, if it has one.
pub(crate) enum Recorded<'a> {
    Sample {
        stream: &'a RecordingStream,
        ts: f64,
        vals: &'a str,
    },
    Frame {
        stream: &'a RecordingStream,
        ts: f64,
        /// Width and height in pixels.
        size: (u32, u32),
        detections: &'a [crate::record::Detection],
        image: Option<(&'a str, &'a [u8])>,
    },
}

/// Rows of one stream's samples or frames, read a page at a time after `after`.
pub(super) struct Source {
    stream: usize,
    pub(super) frames: bool,
    /// (ts, row id) of the last row read.
    pub(super) after: (f64, i64),
    pub(super) done: bool,
    pub(super) rows: std::collections::VecDeque<Row>,
}

pub(super) enum Row {
    Sample {
        ts: f64,
        vals: String,
    },
    Frame {
        ts: f64,
        size: (u32, u32),
        detections: Vec<crate::record::Detection>,
        image: Option<(String, Vec<u8>)>,
    },
}

impl Row {
    fn ts(&self) -> f64 {
        match self {
            Row::Sample { ts, .. } | Row::Frame { ts, .. } => *ts,
        }
    }
}

/// Samples read per page of one stream.
pub(super) const SAMPLE_PAGE: i64 = 1024;
/// Frames read per page of one stream (each may hold an image of up to 16 MiB).
pub(super) const FRAME_PAGE: i64 = 8;

impl Source {
    /// Reads the next page, if the last one did not end the stream.
    fn refill(
        &mut self,
        conn: &Connection,
        device: i64,
        stream: &RecordingStream,
        id: i64,
        to: f64,
    ) -> rusqlite::Result<()> {
        if self.done {
            return Ok(());
        }
        let before = self.rows.len();
        if self.frames {
            let mut stmt = conn.prepare_cached(
                "SELECT f.id, f.ts, i.format, i.data, f.width, f.height FROM frames f
                 LEFT JOIN images i ON i.frame_id = f.id
                 WHERE f.device_id = ?1 AND f.stream = ?2 AND (f.ts, f.id) > (?3, ?4)
                   AND f.ts <= ?5
                 ORDER BY f.ts, f.id LIMIT ?6",
            )?;
            let mut rows = stmt.query(params![
                device,
                stream.stream,
                self.after.0,
                self.after.1,
                to,
                FRAME_PAGE
            ])?;
            let mut detections = conn.prepare_cached(
                "SELECT label, score, x, y, w, h FROM detections WHERE frame_id = ?1 ORDER BY rowid",
            )?;
            while let Some(row) = rows.next()? {
                let (id, ts): (i64, f64) = (row.get(0)?, row.get(1)?);
                let size: (u32, u32) = (row.get(4)?, row.get(5)?);
                let format: Option<String> = row.get(2)?;
                let image = match format {
                    Some(format) => Some((format, row.get::<_, Vec<u8>>(3)?)),
                    None => None,
                };
                let found = detections
                    .query_map(params![id], |d| {
                        Ok(crate::record::Detection {
                            label: d.get(0)?,
                            score: d.get(1)?,
                            bbox: [d.get(2)?, d.get(3)?, d.get(4)?, d.get(5)?],
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                self.after = (ts, id);
                self.rows.push_back(Row::Frame {
                    ts,
                    size,
                    detections: found,
                    image,
                });
            }
            self.done = self.rows.len() - before < FRAME_PAGE as usize;
        } else {
            let mut stmt = conn.prepare_cached(
                "SELECT ts, rowid, vals FROM samples
                 WHERE stream_id = ?1 AND (ts, rowid) > (?2, ?3) AND ts <= ?4
                 ORDER BY ts, rowid LIMIT ?5",
            )?;
            let mut rows = stmt.query(params![id, self.after.0, self.after.1, to, SAMPLE_PAGE])?;
            while let Some(row) = rows.next()? {
                let (ts, rowid): (f64, i64) = (row.get(0)?, row.get(1)?);
                self.after = (ts, rowid);
                self.rows.push_back(Row::Sample {
                    ts,
                    vals: row.get(2)?,
                });
            }
            self.done = self.rows.len() - before < SAMPLE_PAGE as usize;
        }
        Ok(())
    }
}

impl SqliteReader {
    /// The recording `q` asks for: first `begin` with every stream it may hold, then each
    /// record in time order (ties in stream order) until `each` says stop. Memory stays a few
    /// pages per stream whatever the range: each stream is read a page at a time along its
    /// time index, and the streams are merged as they are read.
    pub(crate) fn recording(
        &self,
        q: &RecordingQuery,
        begin: impl FnOnce(&[RecordingStream]),
        each: impl FnMut(Recorded<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            // (device id, stream id) and the stream, for every stream of the devices asked.
            let mut streams: Vec<(i64, i64, RecordingStream)> = Vec::new();
            {
                let mut stmt = conn.prepare_cached(
                    "SELECT d.id, st.id, d.name, st.name FROM streams st
                     JOIN devices d ON d.id = st.device_id
                     WHERE ?1 IS NULL OR d.name = ?1 ORDER BY d.name, st.name",
                )?;
                let mut rows = stmt.query(params![q.device])?;
                while let Some(row) = rows.next()? {
                    streams.push((
                        row.get(0)?,
                        row.get(1)?,
                        RecordingStream {
                            device: row.get(2)?,
                            stream: row.get(3)?,
                            numbers: Vec::new(),
                            texts: Vec::new(),
                            dotted: false,
                        },
                    ));
                }
            }
            for (device, _, stream) in &mut streams {
                for (sql, into) in [
                    ("SELECT field FROM series WHERE device_id = ?1 AND stream = ?2 ORDER BY field", &mut stream.numbers),
                    ("SELECT field FROM text_fields WHERE device_id = ?1 AND stream = ?2 ORDER BY field", &mut stream.texts),
                ] {
                    let mut stmt = conn.prepare_cached(sql)?;
                    for field in stmt.query_map(params![*device, stream.stream], |r| r.get::<_, String>(0))? {
                        into.push(field?);
                    }
                }
            }
            merge(streams, q, begin, each, |source, device, stream, id, to| {
                source.refill(conn, device, stream, id, to)
            })
        })
    }
}

/// The records of `streams` ((device id, stream id, stream) each) in time order, ties in
/// stream order: `begin` with the streams, then `each` record until it says stop. `refill`
/// reads a source's next page from the backend; memory stays a few pages per stream.
pub(super) fn merge<E>(
    mut streams: Vec<(i64, i64, RecordingStream)>,
    q: &RecordingQuery,
    begin: impl FnOnce(&[RecordingStream]),
    mut each: impl FnMut(Recorded<'_>) -> bool,
    mut refill: impl FnMut(&mut Source, i64, &RecordingStream, i64, f64) -> Result<(), E>,
) -> Result<(), E> {
    for (_, _, stream) in &mut streams {
        stream.dotted = stream
            .numbers
            .iter()
            .chain(&stream.texts)
            .any(|f| f.contains('.'));
    }
    let list: Vec<RecordingStream> = streams.iter().map(|(_, _, s)| s.clone()).collect();
    begin(&list);
    let mut sources: Vec<Source> = (0..streams.len())
        .flat_map(|stream| {
            [false, true].map(|frames| Source {
                stream,
                frames,
                after: (q.from, i64::MIN),
                done: false,
                rows: std::collections::VecDeque::new(),
            })
        })
        .collect();
    // The heads of the sources by time (times are positive: their bits order as they do).
    let mut heads = std::collections::BinaryHeap::new();
    for (i, source) in sources.iter_mut().enumerate() {
        let (device, id, stream) = &streams[source.stream];
        refill(source, *device, stream, *id, q.to)?;
        if let Some(row) = source.rows.front() {
            heads.push(std::cmp::Reverse((row.ts().to_bits(), i)));
        }
    }
    while let Some(std::cmp::Reverse((_, i))) = heads.pop() {
        let source = &mut sources[i];
        let Some(row) = source.rows.pop_front() else {
            continue;
        };
        let (device, id, stream) = &streams[source.stream];
        let go_on = match &row {
            Row::Sample { ts, vals } => each(Recorded::Sample {
                stream,
                ts: *ts,
                vals,
            }),
            Row::Frame {
                ts,
                size,
                detections,
                image,
            } => each(Recorded::Frame {
                stream,
                ts: *ts,
                size: *size,
                detections,
                image: image.as_ref().map(|(f, d)| (f.as_str(), d.as_slice())),
            }),
        };
        if !go_on {
            break;
        }
        if source.rows.is_empty() {
            refill(source, *device, stream, *id, q.to)?;
        }
        if let Some(next) = source.rows.front() {
            heads.push(std::cmp::Reverse((next.ts().to_bits(), i)));
        }
    }
    Ok(())
}

/// The read side of the store, whichever backend holds it.
pub(crate) enum Reader {
    Sqlite(SqliteReader),
    #[cfg(feature = "postgres")]
    Postgres(super::pg::PgReader),
}

/// Runs the same call on whichever backend this is.
macro_rules! either {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            Reader::Sqlite($r) => $call,
            #[cfg(feature = "postgres")]
            Reader::Postgres($r) => $call,
        }
    };
}

impl Reader {
    /// The SQLite database at `db`.
    pub(crate) fn new(db: PathBuf) -> Reader {
        Reader::Sqlite(SqliteReader::new(db))
    }

    /// The PostgreSQL database at `url` (its schema must be there: a hub made it).
    pub(crate) fn postgres(url: &super::PostgresUrl) -> anyhow::Result<Reader> {
        #[cfg(feature = "postgres")]
        return super::pg::PgReader::new(url)
            .map(Reader::Postgres)
            .map_err(anyhow::Error::msg);
        #[cfg(not(feature = "postgres"))]
        anyhow::bail!("{url}: this build has no PostgreSQL support")
    }

    pub(crate) fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        either!(self, r => r.devices())
    }

    pub(crate) fn streams(&self, device: &str) -> Result<Option<Streams>, StoreError> {
        either!(self, r => r.streams(device))
    }

    pub(crate) fn series(&self, q: &SeriesQuery) -> Result<Option<Series>, StoreError> {
        either!(self, r => r.series(q))
    }

    pub(crate) fn detections(&self, q: &DetectionQuery) -> Result<Detections, StoreError> {
        either!(self, r => r.detections(q))
    }

    pub(crate) fn frames(&self, q: &FrameQuery) -> Result<(Vec<FrameRow>, bool), StoreError> {
        either!(self, r => r.frames(q))
    }

    pub(crate) fn image(&self, q: &ImageQuery) -> Result<Option<StoredImage>, StoreError> {
        either!(self, r => r.image(q))
    }

    pub(crate) fn export(
        &self,
        q: &ExportQuery,
        each: impl FnMut(ExportRow) -> bool,
    ) -> Result<(), StoreError> {
        either!(self, r => r.export(q, each))
    }

    pub(crate) fn recording(
        &self,
        q: &RecordingQuery,
        begin: impl FnOnce(&[RecordingStream]),
        each: impl FnMut(Recorded<'_>) -> bool,
    ) -> Result<(), StoreError> {
        either!(self, r => r.recording(q, begin, each))
    }
}
