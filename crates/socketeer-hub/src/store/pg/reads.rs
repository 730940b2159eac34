//! Every read the API serves, from PostgreSQL: the same answers as the SQLite reader's (the
//! conformance suite holds both to them), on pooled connections. Names sort bytewise
//! (`COLLATE "C"`), as SQLite sorts them, whatever the database's locale.

use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use r2d2_postgres::PostgresConnectionManager;

use super::super::StoreError;
use super::super::reads::{
    Cell, DetectionQuery, DetectionRow, Detections, DeviceRow, ExportQuery, ExportRow, FRAME_PAGE,
    FrameDetections, FrameQuery, FrameRow, FrameSize, FrameStream, ImageInfo, ImageQuery, Recorded,
    RecordingQuery, RecordingStream, Row, SAMPLE_PAGE, Series, SeriesPoints, SeriesQuery, Source,
    StoredImage, Streams, TextState, by_stream, fold_detections, merge,
};
use super::{PostgresUrl, describe};

/// Most read connections open at once.
const POOL_SIZE: u32 = 8;

type Pg<T> = Result<T, postgres::Error>;

/// The read side of the PostgreSQL store: a pool of connections.
pub(crate) struct PgReader {
    /// Always `Some` but while dropping.
    pool: Option<r2d2::Pool<PostgresConnectionManager<postgres::NoTls>>>,
}

impl Drop for PgReader {
    /// Its connections close on a thread of their own: closing one blocks, and the last
    /// reader may go inside an async task.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("pg-pool-close".into())
                .spawn(move || drop(pool));
        }
    }
}

impl PgReader {
    /// A pool for `url`; connections are made as reads need them.
    pub(crate) fn new(url: &PostgresUrl) -> Result<PgReader, String> {
        let manager = PostgresConnectionManager::new(url.config()?, postgres::NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(5))
            .build_unchecked(manager);
        Ok(PgReader { pool: Some(pool) })
    }

    fn with<T>(&self, work: impl FnOnce(&mut Client) -> Pg<T>) -> Result<T, StoreError> {
        let pool = self.pool.as_ref().expect("only taken when dropped");
        let mut conn = pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: {e}")))?;
        work(&mut conn).map_err(|e| StoreError::Unavailable(describe(&e)))
    }

    pub(crate) fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT name, first_seen, last_seen,
                        (SELECT count(*) FROM series s WHERE s.device_id = d.id)
                 FROM devices d ORDER BY name COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| DeviceRow {
                name: r.get(0),
                first_seen: r.get(1),
                last_seen: r.get(2),
                series: r.get(3),
            })
            .collect())
        })
    }

    pub(crate) fn streams(&self, device: &str) -> Result<Option<Streams>, StoreError> {
        self.with(|c| {
            let Some(device) = c.query_opt("SELECT id FROM devices WHERE name = $1", &[&device])?
            else {
                return Ok(None);
            };
            let device: i64 = device.get(0);
            let values = by_stream(
                c.query(
                    "SELECT stream, field, unit FROM series WHERE device_id = $1
                     ORDER BY stream COLLATE \"C\", field COLLATE \"C\"",
                    &[&device],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            );
            let frames = c
                .query(
                    "SELECT f.stream, count(*), max(f.ts), count(i.frame_id)
                     FROM frames f LEFT JOIN images i ON i.frame_id = f.id
                     WHERE f.device_id = $1 GROUP BY f.stream ORDER BY f.stream COLLATE \"C\"",
                    &[&device],
                )?
                .iter()
                .map(|r| FrameStream {
                    stream: r.get(0),
                    frames: r.get(1),
                    last_ts: r.get(2),
                    images: r.get(3),
                })
                .collect();
            // Text states: each field's latest text (the newest sample that holds it).
            let texts = c
                .query(
                    "SELECT tf.stream, tf.field, l.ts, l.text FROM text_fields tf
                     JOIN streams st ON st.device_id = tf.device_id AND st.name = tf.stream
                     LEFT JOIN LATERAL (
                         SELECT sa.ts, sa.vals ->> tf.field AS text FROM samples sa
                         WHERE sa.stream_id = st.id AND jsonb_typeof(sa.vals -> tf.field) = 'string'
                         ORDER BY sa.ts DESC LIMIT 1) l ON true
                     WHERE tf.device_id = $1
                     ORDER BY tf.stream COLLATE \"C\", tf.field COLLATE \"C\"",
                    &[&device],
                )?
                .iter()
                .map(|r| TextState {
                    stream: r.get(0),
                    field: r.get(1),
                    ts: r.get(2),
                    text: r.get(3),
                })
                .collect();
            Ok(Some(Streams {
                values,
                texts,
                frames,
            }))
        })
    }

    pub(crate) fn series(&self, q: &SeriesQuery) -> Result<Option<Series>, StoreError> {
        self.with(|c| {
            let Some(stream) = c.query_opt(
                "SELECT st.id FROM streams st JOIN devices d ON d.id = st.device_id
                 JOIN series s ON s.device_id = d.id AND s.stream = st.name AND s.field = $3
                 WHERE d.name = $1 AND st.name = $2",
                &[&q.device, &q.stream, &q.field],
            )?
            else {
                return Ok(None);
            };
            let stream: i64 = stream.get(0);
            let (from, to, points) = (q.from, q.to, q.points.max(1));
            let summary = c.query_one(
                "SELECT count(*), min(ts), max(ts) FROM samples
                 WHERE stream_id = $1 AND ts BETWEEN $2 AND $3
                   AND jsonb_typeof(vals -> $4::text) = 'number'",
                &[&stream, &from, &to, &q.field],
            )?;
            let count = summary.get::<_, i64>(0) as usize;
            let (first, last): (Option<f64>, Option<f64>) = (summary.get(1), summary.get(2));
            if count <= points {
                let rows = c
                    .query(
                        "SELECT ts, (vals ->> $4::text)::float8 FROM samples
                         WHERE stream_id = $1 AND ts BETWEEN $2 AND $3
                           AND jsonb_typeof(vals -> $4::text) = 'number'
                         ORDER BY ts, id",
                        &[&stream, &from, &to, &q.field],
                    )?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                return Ok(Some(Series {
                    count,
                    points: SeriesPoints::Raw(rows),
                }));
            }
            let (start, end) = (first.unwrap_or(from), last.unwrap_or(to));
            let width = ((end - start) / points as f64).max(f64::MIN_POSITIVE);
            let rows = c
                .query(
                    "SELECT least(floor((ts - $2) / $4)::bigint, $5::bigint - 1) AS b,
                            min(v), max(v), avg(v), count(*)
                     FROM (SELECT ts, (vals ->> $6::text)::float8 AS v FROM samples
                           WHERE stream_id = $1 AND ts BETWEEN $2 AND $3
                             AND jsonb_typeof(vals -> $6::text) = 'number') s
                     GROUP BY b ORDER BY b",
                    &[&stream, &start, &end, &width, &(points as i64), &q.field],
                )?
                .iter()
                .map(|r| {
                    let bucket: i64 = r.get(0);
                    (
                        start + bucket as f64 * width,
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                    )
                })
                .collect();
            Ok(Some(Series {
                count,
                points: SeriesPoints::Buckets { width, rows },
            }))
        })
    }

    pub(crate) fn detections(&self, q: &DetectionQuery) -> Result<Detections, StoreError> {
        self.with(|c| {
            let rows = c.query(
                "SELECT f.id, dv.name, f.stream, f.ts, f.width, f.height,
                        d.label, d.score, d.x, d.y, d.w, d.h
                 FROM frames f JOIN devices dv ON dv.id = f.device_id
                 JOIN detections d ON d.frame_id = f.id
                 WHERE f.id IN (
                     SELECT f2.id FROM frames f2 JOIN devices dv2 ON dv2.id = f2.device_id
                     WHERE f2.ts BETWEEN $1 AND $2
                       AND ($3::text IS NULL OR dv2.name = $3)
                       AND ($4::text IS NULL OR f2.stream = $4)
                       AND EXISTS (SELECT 1 FROM detections d2 WHERE d2.frame_id = f2.id
                                   AND ($5::text IS NULL OR d2.label = $5) AND d2.score >= $6)
                     ORDER BY f2.ts DESC LIMIT $7)
                   AND ($5::text IS NULL OR d.label = $5) AND d.score >= $6
                 ORDER BY f.ts DESC, f.id DESC, d.id
                 LIMIT $8",
                &[
                    &q.from,
                    &q.to,
                    &q.device,
                    &q.stream,
                    &q.label,
                    &q.min_score,
                    &(q.limit as i64),
                    &(q.max_detections as i64 + 1),
                ],
            )?;
            let rows = rows.iter().map(|r| {
                Ok::<_, postgres::Error>((
                    r.get::<_, i64>(0),
                    FrameDetections {
                        device: r.get(1),
                        stream: r.get(2),
                        ts: r.get(3),
                        frame: FrameSize {
                            w: i64::from(r.get::<_, i32>(4)),
                            h: i64::from(r.get::<_, i32>(5)),
                        },
                        detections: Vec::new(),
                    },
                    DetectionRow {
                        label: r.get(6),
                        score: r.get(7),
                        bbox: [r.get(8), r.get(9), r.get(10), r.get(11)],
                    },
                ))
            });
            fold_detections(rows, q.max_detections)
        })
    }

    pub(crate) fn frames(&self, q: &FrameQuery) -> Result<(Vec<FrameRow>, bool), StoreError> {
        self.with(|c| {
            let mut rows: Vec<FrameRow> = c
                .query(
                    "SELECT f.id, f.stream, f.ts, f.recv_ts, f.width, f.height,
                            (SELECT count(*) FROM detections d WHERE d.frame_id = f.id),
                            i.format, i.size
                     FROM devices dv JOIN frames f ON f.device_id = dv.id
                     LEFT JOIN images i ON i.frame_id = f.id
                     WHERE dv.name = $1 AND ($2::text IS NULL OR f.stream = $2)
                       AND f.ts BETWEEN $3 AND $4
                     ORDER BY f.ts, f.id LIMIT $5",
                    &[&q.device, &q.stream, &q.from, &q.to, &(q.limit as i64 + 1)],
                )?
                .iter()
                .map(|r| FrameRow {
                    id: r.get(0),
                    stream: r.get(1),
                    ts: r.get(2),
                    recv_ts: r.get(3),
                    w: i64::from(r.get::<_, i32>(4)),
                    h: i64::from(r.get::<_, i32>(5)),
                    detections: r.get(6),
                    image: r.get::<_, Option<String>>(7).map(|format| ImageInfo {
                        format,
                        bytes: r.get(8),
                    }),
                })
                .collect();
            let more = rows.len() > q.limit;
            rows.truncate(q.limit);
            Ok((rows, more))
        })
    }

    pub(crate) fn image(&self, q: &ImageQuery) -> Result<Option<StoredImage>, StoreError> {
        self.with(|c| {
            let row = match q {
                ImageQuery::Id(id) => c.query_opt(
                    "SELECT f.id, f.stream, f.ts, i.format, i.data
                     FROM images i JOIN frames f ON f.id = i.frame_id WHERE i.frame_id = $1",
                    &[id],
                )?,
                ImageQuery::At { device, stream, at } => c.query_opt(
                    "SELECT f.id, f.stream, f.ts, i.format, i.data
                     FROM devices dv JOIN frames f ON f.device_id = dv.id
                     JOIN images i ON i.frame_id = f.id
                     WHERE dv.name = $1 AND ($2::text IS NULL OR f.stream = $2) AND f.ts <= $3
                     ORDER BY f.ts DESC, f.id DESC LIMIT 1",
                    &[device, stream, at],
                )?,
            };
            Ok(row.map(|r| StoredImage {
                frame_id: r.get(0),
                stream: r.get(1),
                ts: r.get(2),
                format: r.get(3),
                data: r.get(4),
            }))
        })
    }

    pub(crate) fn export(
        &self,
        q: &ExportQuery,
        mut each: impl FnMut(ExportRow) -> bool,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let max = q.max_rows as i64;
            let params: [&(dyn postgres::types::ToSql + Sync); 6] =
                [&q.device, &q.stream, &q.field, &q.from, &q.to, &max];
            // Streamed: rows are read from the server as they are handed on.
            let mut rows = c.query_raw(
                "SELECT sa.ts, sa.recv_ts, st.name, j.key, jsonb_typeof(j.value), j.value #>> '{}'
                 FROM devices d JOIN streams st ON st.device_id = d.id
                 JOIN samples sa ON sa.stream_id = st.id
                 CROSS JOIN LATERAL jsonb_each(sa.vals) j
                 WHERE d.name = $1 AND ($2::text IS NULL OR st.name = $2)
                   AND ($3::text IS NULL OR j.key = $3) AND sa.ts BETWEEN $4 AND $5
                 ORDER BY sa.ts, sa.id LIMIT $6",
                params,
            )?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(4);
                let text: Option<String> = r.get(5);
                let value = match (kind.as_str(), text) {
                    ("string", Some(text)) => Cell::Text(text),
                    ("number", Some(text)) => number(&text),
                    _ => Cell::Empty,
                };
                let row = ExportRow {
                    ts: r.get(0),
                    recv_ts: r.get(1),
                    stream: r.get(2),
                    field: r.get(3),
                    value,
                };
                if !each(row) {
                    break;
                }
            }
            Ok(())
        })
    }

    pub(crate) fn recording(
        &self,
        q: &RecordingQuery,
        begin: impl FnOnce(&[RecordingStream]),
        each: impl FnMut(Recorded<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let mut streams: Vec<(i64, i64, RecordingStream)> = c
                .query(
                    "SELECT d.id, st.id, d.name, st.name FROM streams st
                     JOIN devices d ON d.id = st.device_id
                     WHERE $1::text IS NULL OR d.name = $1
                     ORDER BY d.name COLLATE \"C\", st.name COLLATE \"C\"",
                    &[&q.device],
                )?
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        RecordingStream {
                            device: r.get(2),
                            stream: r.get(3),
                            numbers: Vec::new(),
                            texts: Vec::new(),
                            dotted: false,
                        },
                    )
                })
                .collect();
            for (device, _, stream) in &mut streams {
                for (table, into) in [
                    ("series", &mut stream.numbers),
                    ("text_fields", &mut stream.texts),
                ] {
                    let sql = format!(
                        "SELECT field FROM {table} WHERE device_id = $1 AND stream = $2
                         ORDER BY field COLLATE \"C\""
                    );
                    for r in c.query(&sql, &[device, &stream.stream])? {
                        into.push(r.get(0));
                    }
                }
            }
            merge(streams, q, begin, each, |source, device, stream, id, to| {
                refill(c, source, device, stream, id, to)
            })
        })
    }
}

/// A JSON number as stored: an integer when written as one.
fn number(text: &str) -> Cell {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(n) = text.parse() {
            return Cell::Integer(n);
        }
    }
    text.parse().map_or(Cell::Empty, Cell::Real)
}

/// Reads a source's next page, if the last one did not end its stream.
fn refill(
    c: &mut Client,
    source: &mut Source,
    device: i64,
    stream: &RecordingStream,
    id: i64,
    to: f64,
) -> Pg<()> {
    if source.done {
        return Ok(());
    }
    let before = source.rows.len();
    let (after_ts, after_id) = source.after;
    if source.frames {
        let frames = c.query(
            "SELECT f.id, f.ts, i.format, i.data, f.width, f.height FROM frames f
             LEFT JOIN images i ON i.frame_id = f.id
             WHERE f.device_id = $1 AND f.stream = $2 AND (f.ts, f.id) > ($3, $4)
               AND f.ts <= $5
             ORDER BY f.ts, f.id LIMIT $6",
            &[
                &device,
                &stream.stream,
                &after_ts,
                &after_id,
                &to,
                &FRAME_PAGE,
            ],
        )?;
        for r in frames {
            let (frame, ts): (i64, f64) = (r.get(0), r.get(1));
            let detections = c
                .query(
                    "SELECT label, score, x, y, w, h FROM detections WHERE frame_id = $1 ORDER BY id",
                    &[&frame],
                )?
                .iter()
                .map(|d| crate::record::Detection {
                    label: d.get(0),
                    score: d.get(1),
                    bbox: [d.get(2), d.get(3), d.get(4), d.get(5)],
                })
                .collect();
            let image = r
                .get::<_, Option<String>>(2)
                .map(|format| (format, r.get::<_, Vec<u8>>(3)));
            source.after = (ts, frame);
            source.rows.push_back(Row::Frame {
                ts,
                size: (r.get::<_, i32>(4) as u32, r.get::<_, i32>(5) as u32),
                detections,
                image,
            });
        }
        source.done = source.rows.len() - before < FRAME_PAGE as usize;
    } else {
        for r in c.query(
            "SELECT ts, id, vals::text FROM samples
             WHERE stream_id = $1 AND (ts, id) > ($2, $3) AND ts <= $4
             ORDER BY ts, id LIMIT $5",
            &[&id, &after_ts, &after_id, &to, &SAMPLE_PAGE],
        )? {
            let (ts, row): (f64, i64) = (r.get(0), r.get(1));
            source.after = (ts, row);
            source.rows.push_back(Row::Sample { ts, vals: r.get(2) });
        }
        source.done = source.rows.len() - before < SAMPLE_PAGE as usize;
    }
    Ok(())
}
