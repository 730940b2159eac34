//! The store's contract, checked through its interface only — [`Store::open`], `submit`, and
//! the reads the API serves — against known data, so every backend can be held to it: a
//! backend runs the whole suite with one line, `conformance!(its_open_function)`.
//!
//! Behaviours: idempotency on (device, session, seq) and refusal of a reused number,
//! cardinality limits, retention by receive time, and every read (devices, streams with text
//! states and frames, raw and bucketed series, detections with their filters and cap, export
//! rows in order with their filters and limit).

use std::sync::Arc;

use super::reads::FrameSize;
use super::*;
use crate::record::{Line, parse_line};
use crate::wire::Reason;

/// A fresh store, its writer, and what to clean up.
pub(super) struct Opened {
    pub(super) store: Store,
    pub(super) writer: std::thread::JoinHandle<()>,
    /// Removed when dropped.
    pub(super) place: Scratch,
}

/// A test's own directory, removed when dropped.
pub(super) struct Scratch(pub(super) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a backend opens a fresh, empty store for a test named `tag`, with the test's settings.
pub(super) type Open = fn(tag: &str, tweak: &dyn Fn(&mut StoreConfig)) -> Opened;

/// SQLite in a temporary directory.
/// A test's store settings: full durability, no retention, batches of 1,000, the default
/// limits; a SQLite file at `path` unless `postgres` is given.
pub(super) fn test_config(path: PathBuf, postgres: Option<PostgresUrl>) -> StoreConfig {
    StoreConfig {
        path,
        postgres,
        durability: Durability::Full,
        retention: None,
        max_batch: 1000,
        live: None,
        newest: None,
        activity: Arc::default(),
        queue: QueueLimits::default(),
        cardinality: Cardinality::default(),
        images: ImageLimits::default(),
        retention_every: Duration::from_secs(60),
        on_retired: None,
    }
}

/// A fresh directory of the test's own.
fn scratch(tag: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "socketeer-conformance-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    Scratch(dir)
}

pub(super) fn sqlite(tag: &str, tweak: &dyn Fn(&mut StoreConfig)) -> Opened {
    let place = scratch(tag);
    let config = test_config(place.0.join("hub.db"), None);
    open_in(place, config, tweak)
}

/// Opens a store with `config` as the test tweaks it; `place` is removed after.
fn open_in(place: Scratch, mut config: StoreConfig, tweak: &dyn Fn(&mut StoreConfig)) -> Opened {
    tweak(&mut config);
    let (store, writer) = Store::open(config).expect("open");
    Opened {
        store,
        writer,
        place,
    }
}

/// The throwaway PostgreSQL cluster this test process shares (started at first use), or why
/// there is none.
#[cfg(feature = "postgres")]
fn cluster() -> Result<&'static crate::testing::Postgres, &'static str> {
    static CLUSTER: std::sync::OnceLock<Result<crate::testing::Postgres, String>> =
        std::sync::OnceLock::new();
    CLUSTER
        .get_or_init(crate::testing::Postgres::start)
        .as_ref()
        .map_err(String::as_str)
}

/// Whether PostgreSQL is here to test; if not, says SKIPPED and why.
#[cfg(feature = "postgres")]
pub(super) fn postgres_here(test: &str) -> bool {
    match cluster() {
        Ok(_) => true,
        Err(why) => {
            crate::testing::say(&format!(
                "SKIPPED store conformance on PostgreSQL ({test}): {why} (CI installs it via .ci/run)"
            ));
            false
        }
    }
}

/// PostgreSQL: a database of the test's own in the shared throwaway cluster.
#[cfg(feature = "postgres")]
pub(super) fn postgres(tag: &str, tweak: &dyn Fn(&mut StoreConfig)) -> Opened {
    let cluster = cluster().expect("checked by postgres_here");
    let name = format!("conformance_{tag}");
    cluster.create_db(&name).expect("create database");
    let place = scratch(&format!("pg-{tag}"));
    let url = PostgresUrl::parse(&cluster.url(&name)).expect("url");
    let config = test_config(place.0.join("unused.db"), Some(url));
    open_in(place, config, tweak)
}

/// Nodes starting at once on an empty database: one migrates (under the advisory lock), the
/// others wait and find the schema made; every one opens, and the version is counted once.
#[cfg(feature = "postgres")]
pub(super) async fn nodes_starting_together_migrate_once() {
    if !postgres_here("migrate_once") {
        return;
    }
    let cluster = cluster().expect("checked");
    cluster.create_db("together").expect("create database");
    let url = PostgresUrl::parse(&cluster.url("together")).expect("url");
    let opened: Vec<_> = (0..4)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || {
                let place = scratch(&format!("together-{n}"));
                let config = test_config(place.0.join("unused.db"), Some(url));
                let (store, writer) = Store::open(config).expect("every node opens");
                drop(store);
                writer.join().expect("writer");
                drop(place);
            })
        })
        .collect();
    for node in opened {
        node.join().expect("node");
    }
    let versions = cluster
        .sql(
            "together",
            "SELECT count(*) || ' ' || max(version) FROM socketeer_schema",
        )
        .expect("query");
    assert_eq!(versions[0].as_deref(), Some("1 1"));
}

/// The time the known data is received at (a fixed moment, well inside any retention here).
fn now() -> f64 {
    now_secs()
}

fn item_at(device: &str, session: &str, line: &str, recv_ts: f64) -> Item {
    let Ok(Line::Record(record)) = parse_line(line) else {
        panic!("bad test line {line}");
    };
    Item::new(&device.into(), &session.into(), record, recv_ts)
}

fn item(device: &str, session: &str, line: &str) -> Item {
    item_at(device, session, line, now())
}

async fn write(store: &Store, items: Vec<Item>) -> Vec<Outcome> {
    store.submit(&"test".into(), items).await.await
}

fn refused(outcome: &Outcome) -> Option<Reason> {
    match outcome {
        Err(StoreError::Rejected(refusal)) => Some(refusal.reason),
        _ => None,
    }
}

pub(super) async fn idempotent_by_device_session_and_seq(open: Open) {
    let o = open("idempotent", &|_| {});
    let one = r#"{"stream":"imu","seq":1,"values":{"ax":1}}"#;
    let first = write(&o.store, vec![item("r1", "s", one), item("r1", "s", one)]).await;
    assert_eq!(first, [Ok(Stored::New), Ok(Stored::Duplicate)]);
    let again = write(&o.store, vec![item("r1", "s", one)]).await;
    assert_eq!(again, [Ok(Stored::Duplicate)], "a resend is a duplicate");
    // The same number in another session, or from another device, is another record.
    let others = write(&o.store, vec![item("r1", "t", one), item("r2", "s", one)]).await;
    assert_eq!(others, [Ok(Stored::New), Ok(Stored::New)]);
    // The same number for a different record is refused, not acknowledged as a duplicate.
    let reused = r#"{"stream":"imu","seq":1,"values":{"ax":2}}"#;
    let outcome = write(&o.store, vec![item("r1", "s", reused)]).await;
    assert_eq!(refused(&outcome[0]), Some(Reason::SeqReused), "{outcome:?}");
    // A resend written differently (key order, number form) is the same record.
    let rewritten = r#"{"values":{"ax":1.0},"seq":1,"stream":"imu"}"#;
    let outcome = write(&o.store, vec![item("r1", "s", rewritten)]).await;
    assert_eq!(outcome, [Ok(Stored::Duplicate)]);
    // Records without a number are always new.
    let plain = r#"{"stream":"imu","values":{"ax":3}}"#;
    let outcome = write(
        &o.store,
        vec![item("r1", "s", plain), item("r1", "s", plain)],
    )
    .await;
    assert_eq!(outcome, [Ok(Stored::New), Ok(Stored::New)]);
    let series = series(&o.store, "r1", "imu", "ax", 1000).await;
    assert_eq!(series.count, 4, "two numbered and two plain: {series:?}");
}

pub(super) async fn cardinality_limits_refuse_and_store_nothing(open: Open) {
    let o = open("cardinality", &|c| {
        c.cardinality = Cardinality {
            devices: 2,
            streams: 2,
            fields: 3,
        };
    });
    let line =
        |stream: &str, fields: &str| format!(r#"{{"stream":"{stream}","values":{{{fields}}}}}"#);
    let outcomes = write(
        &o.store,
        vec![
            item("a", "", &line("s1", r#""x":1,"y":2"#)),
            item("b", "", &line("s1", r#""x":1"#)),
            item("c", "", &line("s1", r#""x":1"#)),
            item("a", "", &line("s2", r#""z":1"#)),
            item("a", "", &line("s3", r#""x":1"#)),
            item("a", "", &line("s2", r#""w":1"#)),
            item("a", "", &line("s1", r#""x":5"#)),
        ],
    )
    .await;
    let reasons: Vec<Option<Reason>> = outcomes.iter().map(refused).collect();
    assert_eq!(
        reasons,
        [
            None,
            None,
            Some(Reason::DevicesLimit),
            None,
            Some(Reason::StreamsLimit),
            Some(Reason::FieldsLimit),
            None
        ],
        "{outcomes:?}"
    );
    let devices: Vec<String> = o
        .store
        .devices()
        .await
        .expect("devices")
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(devices, ["a", "b"]);
    let streams = o
        .store
        .streams("a".into())
        .await
        .expect("streams")
        .expect("a");
    let names: Vec<(String, Vec<String>)> = streams
        .values
        .into_iter()
        .map(|s| (s.stream, s.fields))
        .collect();
    assert_eq!(
        names,
        [
            ("s1".to_owned(), vec!["x".to_owned(), "y".to_owned()]),
            ("s2".to_owned(), vec!["z".to_owned()])
        ]
    );
}

pub(super) async fn retention_goes_by_receive_time(open: Open) {
    let retired = Arc::new(std::sync::Mutex::new(Vec::new()));
    let told = Arc::clone(&retired);
    let tell: crate::store::Retired = Arc::new(move |streams: Vec<(String, String)>| {
        told.lock().expect("lock").extend(streams);
    });
    let o = open("retention", &move |c| {
        c.retention = Some(Duration::from_secs(3600));
        c.on_retired = Some(Arc::clone(&tell));
    });
    let now = now();
    let old = now - 7200.0;
    let outcomes = write(
        &o.store,
        vec![
            // Received and dated two hours ago: gone.
            item_at("r", "", &format!(r#"{{"stream":"s","ts":{old},"values":{{"v":1}}}}"#), old),
            // Received now, dated two hours ago (a slow clock): kept.
            item_at("r", "", &format!(r#"{{"stream":"s","ts":{old},"values":{{"v":2}}}}"#), now),
            // Received now: kept.
            item_at("r", "", &format!(r#"{{"stream":"s","ts":{now},"values":{{"v":3}}}}"#), now),
            // A stream with nothing but old data: retired.
            item_at("r", "", &format!(r#"{{"stream":"gone","ts":{old},"values":{{"w":1,"t":"x"}}}}"#), old),
            // An old frame: gone with its detections.
            item_at(
                "r",
                "",
                &format!(
                    r#"{{"stream":"cam","ts":{old},"frame":{{"w":10,"h":10}},"detections":[{{"label":"a","score":1,"box":[0,0,1,1]}}]}}"#
                ),
                old,
            ),
        ],
    )
    .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    // The writer's first pass runs after its first commit; the next write is after it.
    write(
        &o.store,
        vec![item("r", "", r#"{"stream":"s","values":{"v":4}}"#)],
    )
    .await;
    let mut kept = Vec::new();
    export(&o.store, "r", None, |row| {
        kept.push(row.value);
        true
    })
    .await;
    assert_eq!(kept, [Cell::Real(2.0), Cell::Real(3.0), Cell::Real(4.0)]);
    let frames = detections(&o.store, DetectionFilter::default()).await;
    assert!(frames.frames.is_empty(), "{frames:?}");
    // Streams left without data are retired — no longer listed, their fields not counted —
    // and whoever listens is told; "s" still has data.
    let mut told = retired.lock().expect("lock").clone();
    told.sort();
    assert_eq!(
        told,
        [
            ("r".to_owned(), "cam".to_owned()),
            ("r".to_owned(), "gone".to_owned())
        ]
    );
    let streams = o
        .store
        .streams("r".into())
        .await
        .expect("streams")
        .expect("r");
    let names: Vec<&str> = streams.values.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(names, ["s"]);
    assert!(
        streams.texts.is_empty() && streams.frames.is_empty(),
        "{streams:?}"
    );
    let devices = o.store.devices().await.expect("devices");
    assert_eq!(devices[0].series, 1, "only s's field v is counted");
}

/// Known data for the reads: two devices, readings of two streams with a text state, frames.
async fn known(store: &Store, base: f64) {
    let mut items = Vec::new();
    for k in 0..100 {
        let ts = base + f64::from(k);
        items.push(item(
            "rover",
            "s",
            &format!(r#"{{"stream":"imu","seq":{k},"ts":{ts},"values":{{"ax":{k},"az":9.5}}}}"#),
        ));
    }
    items.push(item(
        "rover",
        "s",
        &format!(r#"{{"stream":"gps","ts":{base},"values":{{"mode":"FLOAT","sats":7}}}}"#),
    ));
    items.push(item(
        "rover",
        "s",
        &format!(
            r#"{{"stream":"gps","ts":{},"values":{{"mode":"RTK","sats":9}}}}"#,
            base + 50.0
        ),
    ));
    for (k, (label, score)) in [("person", 0.9), ("cart", 0.4), ("person", 0.6)]
        .iter()
        .enumerate()
    {
        let ts = base + 10.0 * k as f64;
        items.push(item(
            "rover",
            "s",
            &format!(
                r#"{{"stream":"cam","ts":{ts},"frame":{{"w":640,"h":480}},"detections":[{{"label":"{label}","score":{score},"box":[1,2,3,4]}},{{"label":"dog","score":0.5,"box":[5,6,7,8]}}]}}"#
            ),
        ));
    }
    items.push(item(
        "arm",
        "",
        &format!(r#"{{"stream":"joint","ts":{base},"values":{{"q1":0.5}}}}"#),
    ));
    let outcomes = write(store, items).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
}

pub(super) async fn reads_devices_and_streams(open: Open) {
    let o = open("devices", &|_| {});
    let base = now() - 500.0;
    known(&o.store, base).await;
    let devices = o.store.devices().await.expect("devices");
    let names: Vec<(&str, i64)> = devices
        .iter()
        .map(|d| (d.name.as_str(), d.series))
        .collect();
    assert_eq!(names, [("arm", 1), ("rover", 3)], "series: ax, az, sats");
    assert!(devices.iter().all(|d| d.first_seen <= d.last_seen));
    assert!(
        o.store
            .streams("nobody".into())
            .await
            .expect("streams")
            .is_none()
    );
    let streams = o
        .store
        .streams("rover".into())
        .await
        .expect("streams")
        .expect("rover");
    let values: Vec<(&str, Vec<&str>)> = streams
        .values
        .iter()
        .map(|s| {
            (
                s.stream.as_str(),
                s.fields.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(values, [("gps", vec!["sats"]), ("imu", vec!["ax", "az"])]);
    assert_eq!(streams.texts.len(), 1);
    let text = &streams.texts[0];
    assert_eq!((text.stream.as_str(), text.field.as_str()), ("gps", "mode"));
    assert_eq!(text.text.as_deref(), Some("RTK"), "the latest text");
    assert_eq!(text.ts, Some(base + 50.0));
    assert_eq!(streams.frames.len(), 1);
    assert_eq!(
        (
            streams.frames[0].stream.as_str(),
            streams.frames[0].frames,
            streams.frames[0].last_ts
        ),
        ("cam", 3, base + 20.0)
    );
}

/// The units of `stream`'s fields as `streams` reads them.
async fn units_of(store: &Store, stream: &str) -> Vec<(String, String)> {
    let streams = store
        .streams("rover".into())
        .await
        .expect("streams")
        .expect("rover");
    streams
        .values
        .into_iter()
        .find(|s| s.stream == stream)
        .map(|s| s.units.into_iter().collect())
        .unwrap_or_default()
}

pub(super) async fn units_are_kept_per_field_until_another_is_sent(open: Open) {
    let o = open("units", &|_| {});
    let line = |values: &str, units: &str| {
        item(
            "rover",
            "",
            &format!(r#"{{"stream":"imu","values":{values}{units}}}"#),
        )
    };
    let pair = |f: &str, u: &str| (f.to_owned(), u.to_owned());
    // Sent with the stream's first record, in one batch with records that send none.
    let first = vec![
        line(r#"{"ax":0.1,"az":9.8}"#, r#","units":{"az":"m/s²"}"#),
        line(r#"{"ax":0.2,"az":9.7}"#, ""),
    ];
    assert!(write(&o.store, first).await.iter().all(Result::is_ok));
    assert_eq!(units_of(&o.store, "imu").await, [pair("az", "m/s²")]);
    // Kept while records send none; changed, and added, when one does (a known stream).
    assert!(write(&o.store, vec![line(r#"{"ax":0.3,"az":9.6}"#, "")]).await[0].is_ok());
    assert_eq!(units_of(&o.store, "imu").await, [pair("az", "m/s²")]);
    let changed = line(
        r#"{"ax":0.4,"az":9.5}"#,
        r#","units":{"ax":"g","az":"m/s^2"}"#,
    );
    assert!(write(&o.store, vec![changed]).await[0].is_ok());
    assert_eq!(
        units_of(&o.store, "imu").await,
        [pair("ax", "g"), pair("az", "m/s^2")]
    );
    // A new field with its unit in the same record.
    let new = line(r#"{"ax":0.5,"gz":0.01}"#, r#","units":{"gz":"rad/s"}"#);
    assert!(write(&o.store, vec![new]).await[0].is_ok());
    assert_eq!(
        units_of(&o.store, "imu").await,
        [pair("ax", "g"), pair("az", "m/s^2"), pair("gz", "rad/s")]
    );
}

async fn series(store: &Store, device: &str, stream: &str, field: &str, points: usize) -> Series {
    store
        .series(SeriesQuery {
            device: device.into(),
            stream: stream.into(),
            field: field.into(),
            from: 0.0,
            to: f64::MAX,
            points,
        })
        .await
        .expect("series")
        .expect("a series")
}

pub(super) async fn reads_series_raw_and_bucketed(open: Open) {
    let o = open("series", &|_| {});
    let base = now() - 500.0;
    known(&o.store, base).await;
    let raw = series(&o.store, "rover", "imu", "ax", 100).await;
    assert_eq!(raw.count, 100);
    let SeriesPoints::Raw(points) = raw.points else {
        panic!("100 points fit in 100: {raw:?}");
    };
    assert_eq!(points.len(), 100);
    assert_eq!(points[0], (base, 0.0));
    assert_eq!(points[99], (base + 99.0, 99.0));
    // Ten buckets of the 99 s the points span: min, max, mean and count of each.
    let bucketed = series(&o.store, "rover", "imu", "ax", 10).await;
    assert_eq!(bucketed.count, 100);
    let SeriesPoints::Buckets { width, rows } = bucketed.points else {
        panic!("100 points in 10 buckets: {bucketed:?}");
    };
    assert!((width - 9.9).abs() < 1e-9, "{width}");
    assert_eq!(rows.len(), 10);
    assert_eq!(rows.iter().map(|r| r.4).sum::<i64>(), 100);
    let first = rows[0];
    assert_eq!((first.0, first.1, first.2, first.4), (base, 0.0, 9.0, 10));
    assert!((first.3 - 4.5).abs() < 1e-9);
    assert_eq!(rows[9].2, 99.0, "the last point in the last bucket");
    // A range inside the data; a text field is not a series; an unknown one is none.
    let some = o
        .store
        .series(SeriesQuery {
            device: "rover".into(),
            stream: "imu".into(),
            field: "ax".into(),
            from: base + 10.0,
            to: base + 19.0,
            points: 1000,
        })
        .await
        .expect("series")
        .expect("a series");
    assert_eq!(some.count, 10);
    for (device, stream, field) in [
        ("rover", "gps", "mode"),
        ("rover", "imu", "nope"),
        ("x", "imu", "ax"),
    ] {
        let none = o
            .store
            .series(SeriesQuery {
                device: device.into(),
                stream: stream.into(),
                field: field.into(),
                from: 0.0,
                to: f64::MAX,
                points: 10,
            })
            .await
            .expect("series");
        assert!(none.is_none(), "{device} {stream} {field}");
    }
}

#[derive(Default)]
struct DetectionFilter {
    device: Option<&'static str>,
    label: Option<&'static str>,
    min_score: f64,
    limit: Option<usize>,
    max_detections: Option<usize>,
}

async fn detections(store: &Store, f: DetectionFilter) -> Detections {
    store
        .detections(DetectionQuery {
            device: f.device.map(str::to_owned),
            stream: None,
            label: f.label.map(str::to_owned),
            min_score: f.min_score,
            from: 0.0,
            to: f64::MAX,
            limit: f.limit.unwrap_or(100),
            max_detections: f.max_detections.unwrap_or(10_000),
        })
        .await
        .expect("detections")
}

pub(super) async fn reads_detections_with_filters_and_cap(open: Open) {
    let o = open("detections", &|_| {});
    let base = now() - 500.0;
    known(&o.store, base).await;
    let all = detections(&o.store, DetectionFilter::default()).await;
    let times: Vec<f64> = all.frames.iter().map(|f| f.ts).collect();
    assert_eq!(times, [base + 20.0, base + 10.0, base], "newest first");
    assert!(!all.truncated);
    assert_eq!(all.frames[0].frame, FrameSize { w: 640, h: 480 });
    let labels: Vec<&str> = all.frames[0]
        .detections
        .iter()
        .map(|d| d.label.as_str())
        .collect();
    assert_eq!(labels, ["person", "dog"], "in the order sent");
    assert_eq!(all.frames[0].detections[1].bbox, [5.0, 6.0, 7.0, 8.0]);
    let people = detections(
        &o.store,
        DetectionFilter {
            label: Some("person"),
            min_score: 0.7,
            ..DetectionFilter::default()
        },
    )
    .await;
    assert_eq!(people.frames.len(), 1);
    assert_eq!(people.frames[0].ts, base);
    assert_eq!(
        people.frames[0].detections.len(),
        1,
        "only the matching detection"
    );
    let newest = detections(
        &o.store,
        DetectionFilter {
            limit: Some(1),
            ..DetectionFilter::default()
        },
    )
    .await;
    assert_eq!(newest.frames.len(), 1);
    let nobody = detections(
        &o.store,
        DetectionFilter {
            device: Some("arm"),
            ..DetectionFilter::default()
        },
    )
    .await;
    assert!(nobody.frames.is_empty());
    let capped = detections(
        &o.store,
        DetectionFilter {
            max_detections: Some(3),
            ..DetectionFilter::default()
        },
    )
    .await;
    assert!(capped.truncated);
    assert_eq!(
        capped.frames.len(),
        1,
        "a frame cut short is left out: {capped:?}"
    );
    assert_eq!(capped.frames[0].detections.len(), 2);
}

async fn export(
    store: &Store,
    device: &str,
    field: Option<&str>,
    mut each: impl FnMut(ExportRow) -> bool,
) {
    let mut rx = store.export(
        ExportQuery {
            device: device.into(),
            stream: None,
            field: field.map(str::to_owned),
            from: 0.0,
            to: f64::MAX,
            max_rows: 1_000_000,
        },
        7,
    );
    while let Some(chunk) = rx.recv().await {
        for row in chunk.expect("export") {
            if !each(row) {
                return;
            }
        }
    }
}

pub(super) async fn reads_export_rows_in_order(open: Open) {
    let o = open("export", &|_| {});
    let base = now() - 500.0;
    known(&o.store, base).await;
    let mut rows = Vec::new();
    export(&o.store, "rover", None, |row| {
        rows.push(row);
        true
    })
    .await;
    // 100 readings of two values, two of two: frames are not rows.
    assert_eq!(rows.len(), 204);
    assert!(rows.windows(2).all(|w| w[0].ts <= w[1].ts), "in time order");
    let gps: Vec<(&str, &Cell)> = rows
        .iter()
        .filter(|r| r.stream == "gps")
        .map(|r| (r.field.as_str(), &r.value))
        .collect();
    assert!(
        gps.contains(&("mode", &Cell::Text("RTK".into()))),
        "{gps:?}"
    );
    assert!(
        gps.iter()
            .any(|(f, v)| *f == "sats" && matches!(v, Cell::Integer(9) | Cell::Real(9.0)))
    );
    let mut ax = Vec::new();
    export(&o.store, "rover", Some("ax"), |row| {
        ax.push(row.value);
        true
    })
    .await;
    assert_eq!(ax.len(), 100);
    // The reader stops when asked to.
    let mut taken = 0;
    export(&o.store, "rover", None, |_| {
        taken += 1;
        taken < 10
    })
    .await;
    assert_eq!(taken, 10);
    let limited = o.store.export(
        ExportQuery {
            device: "rover".into(),
            stream: Some("imu".into()),
            field: Some("az".into()),
            from: 0.0,
            to: f64::MAX,
            max_rows: 5,
        },
        100,
    );
    let mut limited = limited;
    let mut n = 0;
    while let Some(chunk) = limited.recv().await {
        n += chunk.expect("export").len();
    }
    assert_eq!(n, 5);
}

pub(super) async fn answers_everything_queued_before_it_stops(open: Open) {
    let o = open("close", &|_| {});
    let items = (0..500)
        .map(|k| {
            item(
                "r",
                "s",
                &format!(r#"{{"stream":"s","seq":{k},"values":{{"v":{k}}}}}"#),
            )
        })
        .collect();
    let pending = o.store.submit(&"test".into(), items).await;
    let Opened {
        store,
        writer,
        place,
    } = o;
    // Every handle gone: the writer commits what was queued, answers, then stops.
    drop(store);
    let outcomes = pending.await;
    assert_eq!(outcomes.len(), 500);
    assert!(
        outcomes.iter().all(|o| *o == Ok(Stored::New)),
        "{:?}",
        outcomes[0]
    );
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .expect("join")
        .expect("the writer ends");
    drop(place);
}

/// Camera images: stored with their frames, read by frame and by time, and past the byte
/// budget the oldest go first (their frames and detections stay).
pub(super) async fn images_are_read_and_kept_within_their_budget(open: Open) {
    let o = open("images", &|c| {
        c.images.budget = Some(10 * 1024);
    });
    let base = now() - 100.0;
    for k in 0..5u8 {
        let mut item = item(
            "cam-robot",
            "s",
            &format!(
                r#"{{"stream":"front","seq":{k},"ts":{},"frame":{{"w":8,"h":8}},"detections":[{{"label":"cone","score":0.9,"box":[1,1,2,2]}}]}}"#,
                base + f64::from(k)
            ),
        );
        let frame = item.record.frame.as_mut().expect("a frame");
        frame.image = Some(crate::record::Image {
            format: crate::record::ImageFormat::Png,
            data: bytes::Bytes::from(vec![k; 4096]),
        });
        // Made again, as a connection makes it: with its image (in its fingerprint).
        let item = Item::new(&item.device, &item.session, item.record, item.recv_ts);
        assert_eq!(write(&o.store, vec![item]).await, vec![Ok(Stored::New)]);
    }
    // The budget pass runs after a commit is answered: one more record, answered after the
    // pass that followed the last frame, so what is read below is what that pass left.
    let after = item("cam-robot", "s", r#"{"stream":"other","values":{"v":1}}"#);
    assert_eq!(write(&o.store, vec![after]).await, vec![Ok(Stored::New)]);
    // The newest, by time: its bytes as sent.
    let newest = o
        .store
        .image(ImageQuery::At {
            device: "cam-robot".into(),
            stream: Some("front".into()),
            at: base + 10.0,
        })
        .await
        .expect("read")
        .expect("an image");
    assert_eq!((newest.format.as_str(), newest.data.len()), ("png", 4096));
    assert_eq!(newest.data[0], 4);
    let by_id = o
        .store
        .image(ImageQuery::Id(newest.frame_id))
        .await
        .expect("read")
        .expect("by id");
    assert_eq!(by_id.data, newest.data);
    // 20 KiB sent, 10 KiB allowed: the oldest went, the newest stayed; every frame is listed.
    let (frames, more) = o
        .store
        .frames(FrameQuery {
            device: "cam-robot".into(),
            stream: None,
            from: 0.0,
            to: f64::MAX,
            limit: 100,
        })
        .await
        .expect("frames");
    assert!(!more);
    assert_eq!(frames.len(), 5);
    let kept: Vec<bool> = frames.iter().map(|f| f.image.is_some()).collect();
    assert!(kept[4] && !kept[0], "oldest gone, newest kept: {kept:?}");
    assert!(kept.iter().filter(|k| **k).count() <= 2, "{kept:?}");
    assert!(frames.iter().all(|f| f.detections == 1));
    let oldest = o
        .store
        .image(ImageQuery::Id(frames[0].id))
        .await
        .expect("read");
    assert!(oldest.is_none());
}

/// The whole suite for the backend `open`.
macro_rules! conformance {
    ($open:path $(, unless $missing:path)?) => {
        mod conformance_suite {
            use super::conformance::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn idempotency() {
                $( if !$missing(stringify!($open)) { return; } )?
                idempotent_by_device_session_and_seq($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cardinality() {
                $( if !$missing(stringify!($open)) { return; } )?
                cardinality_limits_refuse_and_store_nothing($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention() {
                $( if !$missing(stringify!($open)) { return; } )?
                retention_goes_by_receive_time($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn devices_and_streams() {
                $( if !$missing(stringify!($open)) { return; } )?
                reads_devices_and_streams($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn units() {
                $( if !$missing(stringify!($open)) { return; } )?
                units_are_kept_per_field_until_another_is_sent($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn series() {
                $( if !$missing(stringify!($open)) { return; } )?
                reads_series_raw_and_bucketed($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn detections() {
                $( if !$missing(stringify!($open)) { return; } )?
                reads_detections_with_filters_and_cap($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn export() {
                $( if !$missing(stringify!($open)) { return; } )?
                reads_export_rows_in_order($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn images() {
                $( if !$missing(stringify!($open)) { return; } )?
                images_are_read_and_kept_within_their_budget($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn close() {
                $( if !$missing(stringify!($open)) { return; } )?
                answers_everything_queued_before_it_stops($open).await;
            }
        }
    };
}
