//! The store's own tests: the writer, its queue, checkpoints, migrations and retention.
use super::checkpoint::Checkpointer;
use super::schema::{MIGRATIONS, open_writer};
use super::writer::{delete_older, latest, seen, values_json};
use super::*;
use crate::record::{Line, parse_line};
use std::sync::atomic::{AtomicBool, Ordering};

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
        super::conformance::test_config(self.0.join("hub.db"), None)
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
    Item::new(&device.into(), &session.into(), record, 1_800_000_000.0)
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
async fn small_records_are_weighed_in_bytes_not_a_kib_each() {
    let db = Db::new("weighed");
    let mut config = db.config();
    // Records plentiful, bytes scarce: a lane's share is 16 KiB.
    config.queue = QueueLimits {
        records: 100_000,
        bytes: 64 * 1024,
    };
    let (store, writer) = Store::open(config).expect("open");
    let lock = WriteLock::take(&db);
    let weight = readings("r", 0, 1)[0].weight();
    assert!(weight < 1024, "a reading weighs {weight} bytes");
    // Jobs of 20 readings: each costs its bytes rounded up to a KiB, once per job.
    let per_job: u64 = 20;
    let job_kib = (per_job as usize * weight).div_ceil(1024);
    let fit = 16 / job_kib;
    assert!(fit >= 1, "a job of {job_kib} KiB must fit a 16 KiB share");
    let robot: Arc<str> = "r".into();
    let mut held = Vec::new();
    for job in 0..fit as u64 {
        let mut next = Box::pin(store.submit(&robot, readings("r", job * per_job, per_job)));
        let std::task::Poll::Ready(pending) = futures_util::poll!(&mut next) else {
            panic!("job {job} of {fit} ({job_kib} KiB each) finds no room in a 16 KiB share");
        };
        held.push(pending);
    }
    let mut over = Box::pin(store.submit(&robot, readings("r", 1000, per_job)));
    assert!(
        futures_util::poll!(&mut over).is_pending(),
        "the share is full after {fit} jobs"
    );
    drop(lock);
    held.push(over.await);
    for pending in held {
        assert!(pending.await.iter().all(|o| o.is_ok()));
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
async fn keys_written_many_at_a_time_keep_each_records_answer_in_order() {
    // Plain readings' keys go in 32 to a statement; everything else one at a time, in order.
    let db = Db::new("keys");
    let (store, writer) = Store::open(db.config()).expect("open");
    let line = |seq: u64, ax: u64| {
        format!(r#"{{"stream":"imu","seq":{seq},"values":{{"ax":{ax},"ay":1}}}}"#)
    };
    let mut items = Vec::new();
    let mut expected = Vec::new();
    for seq in 0..100u64 {
        items.push(item("r1", "a", &line(seq, seq)));
        expected.push(Ok(Stored::New));
        match seq {
            // A resend within the batch (and within the same 32), a resend 32 later, and the
            // same number for another record.
            10 | 40 => {
                items.push(item("r1", "a", &line(seq, seq)));
                expected.push(Ok(Stored::Duplicate));
            }
            20 => {
                items.push(item("r1", "a", &line(seq, 999)));
                expected.push(Err(Reason::SeqReused));
            }
            // Records that are not plain readings come between, in their turn.
            50 => {
                items.push(item(
                    "r1",
                    "a",
                    r#"{"stream":"imu","seq":1000,"values":{"ax":1},"units":{"ax":"m/s2"}}"#,
                ));
                expected.push(Ok(Stored::New));
                items.push(item("r1", "a", &line(5, 5)));
                expected.push(Ok(Stored::Duplicate));
            }
            _ => {}
        }
    }
    let outcomes: Vec<Result<Stored, Reason>> = store
        .write(&"test".into(), items)
        .await
        .into_iter()
        .map(|outcome| match outcome {
            Ok(stored) => Ok(stored),
            Err(StoreError::Rejected(refusal)) => Err(refusal.reason),
            Err(other) => panic!("{other}"),
        })
        .collect();
    assert_eq!(outcomes, expected);
    // The same hundred again: every one a duplicate, none written twice.
    let again: Vec<Item> = (0..100)
        .map(|seq| item("r1", "a", &line(seq, seq)))
        .collect();
    assert_eq!(write(&store, again).await, vec![Stored::Duplicate; 100]);
    drop(store);
    writer.join().expect("writer");
    let reader = Connection::open(db.config().path).expect("open");
    assert_eq!(count(&reader, "SELECT count(*) FROM received"), 101);
    assert_eq!(count(&reader, "SELECT count(*) FROM samples"), 101);
    let unit: String = reader
        .query_row("SELECT unit FROM series WHERE field = 'ax'", [], |row| {
            row.get(0)
        })
        .expect("unit");
    assert_eq!(unit, "m/s2");
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
                        let line = format!(r#"{{"stream":"imu","seq":{k},"values":{{"ax":{k}}}}}"#);
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
