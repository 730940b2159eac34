//! MCAP recordings (`GET /api/export.mcap`, `socketeer export`) read back by the mcap project's
//! own Python reader (PyPI `mcap`, CRCs checked): `tests/python/read_mcap.py`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::hub::{Client, start_hub_http};
use crate::hub_images::{header, png};
use crate::support::{TempDir, have, run};

/// Whether python3 with the `mcap` package is here; says SKIPPED if not.
fn have_mcap_reader(test: &str) -> bool {
    if !have("python3", test) {
        return false;
    }
    let found = Command::new("python3")
        .args(["-c", "import mcap.reader"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: the Python package mcap is not installed (pip install mcap; CI \
             installs it via .ci/run)"
        );
    }
    found
}

/// What the mcap project's reader makes of `file`.
fn read_mcap(file: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/read_mcap.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the mcap reader refused {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `GET path` as HTTP/1.0 (the body ends with the connection): status and body.
fn get_bytes(web: &str, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = crate::hub_images::http_bytes_as("1.0", web, "GET", path, "", b"");
    (status, body)
}

#[test]
fn mcap_recordings_are_read_back_whole_by_the_mcap_projects_own_reader() {
    let test = "mcap_recordings_are_read_back_whole_by_the_mcap_projects_own_reader";
    if !have_mcap_reader(test) {
        return;
    }
    let dir = TempDir::new("recording");
    let (hub, ingest, web, db) = start_hub_http(&dir, &["--no-auth"]);
    let base = 1_800_000_000.0;
    let mut rover = Client::connect(&ingest);
    rover.send("{\"device\":\"rover\"}\n{\"session\":\"s\"}\n");
    let mut seq = 0;
    let ack = |client: &mut Client, seq: u64| assert_eq!(client.answer(), json!({"ack": seq}));
    for k in 0..30u32 {
        seq += 1;
        let mode = if k % 2 == 0 { "A" } else { "B" };
        let line = json!({"stream": "imu", "seq": seq, "ts": base + f64::from(k) * 0.1,
                          "values": {"ax": k, "pose": {"x": k * 2}, "mode": mode}});
        rover.send(&format!("{line}\n"));
        ack(&mut rover, seq);
    }
    let images: Vec<Vec<u8>> = (0..5u8).map(|k| png(32, 24, [k * 40, 20, 200])).collect();
    for (k, image) in images.iter().enumerate() {
        seq += 1;
        let extra = json!({"stream": "camera", "seq": seq, "ts": base + k as f64 + 0.05,
            "detections": [{"label": "person", "score": 0.9, "box": [1, 2, 10, 12]},
                           {"label": "cart", "score": 0.5, "box": [5, 5, 8, 8]}]});
        rover.send(&header("png", image, extra));
        rover.writer_bytes(image);
        ack(&mut rover, seq);
    }
    for k in 0..3u32 {
        seq += 1;
        let line = json!({"stream": "lidar-cam", "seq": seq, "ts": base + f64::from(k) + 0.5,
            "frame": {"w": 100, "h": 100},
            "detections": [{"label": "wall", "score": 0.7, "box": [0, 0, 50, 50]}]});
        rover.send(&format!("{line}\n"));
        ack(&mut rover, seq);
    }
    let mut arm = Client::connect(&ingest);
    arm.send("{\"device\":\"arm\"}\n{\"session\":\"s\"}\n");
    for k in 1..=10u32 {
        let line =
            json!({"stream": "joint", "seq": k, "ts": base + f64::from(k), "values": {"q1": k}});
        arm.send(&format!("{line}\n"));
        ack(&mut arm, u64::from(k));
    }

    // Over HTTP, one device, a range holding all of it.
    let query = format!("device=rover&from={}&to={}", base - 1.0, base + 100.0);
    let (status, bytes) = get_bytes(&web, &format!("/api/export.mcap?{query}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let file = dir.0.join("rover.mcap");
    std::fs::write(&file, &bytes).expect("write");
    let read = read_mcap(&file);
    assert_eq!(read["compression"], json!(["zstd"]));
    assert!(read["chunks"].as_u64() >= Some(1));
    let topics = [
        "/rover/camera/annotations",
        "/rover/camera/image",
        "/rover/imu",
        "/rover/lidar-cam/annotations",
    ];
    let channels = read["channels"].as_object().expect("channels");
    assert_eq!(channels.keys().collect::<Vec<_>>(), topics);
    assert_eq!(
        read["message_index_channels"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(read["statistics"]["messages"], 30 + 5 * 2 + 3);
    let imu = &channels["/rover/imu"];
    assert_eq!(imu["encoding"], "json");
    assert_eq!(imu["schema_encoding"], "jsonschema");
    assert_eq!(imu["schema_name"], "socketeer.Reading");
    assert_eq!(imu["schema"]["type"], "object");
    assert_eq!(imu["schema"]["properties"]["ax"]["type"], "number");
    assert_eq!(
        imu["schema"]["properties"]["pose"]["properties"]["x"]["type"],
        "number"
    );
    assert_eq!(imu["schema"]["properties"]["mode"]["type"], "string");
    assert_eq!(
        channels["/rover/camera/image"]["schema_name"],
        "foxglove.CompressedImage"
    );
    assert_eq!(
        channels["/rover/camera/annotations"]["schema_name"],
        "foxglove.ImageAnnotations"
    );
    let messages = read["messages"].as_array().expect("messages");
    // In time order; each record once.
    let times: Vec<u64> = messages
        .iter()
        .map(|m| m["log_time"].as_u64().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in time order");
    let mut ax: Vec<u64> = messages
        .iter()
        .filter(|m| m["topic"] == "/rover/imu")
        .map(|m| {
            let ax = m["data"]["ax"].as_f64().expect("ax");
            assert_eq!(m["data"]["pose"]["x"].as_f64(), Some(ax * 2.0));
            ax as u64
        })
        .collect();
    ax.sort_unstable();
    assert_eq!(ax, (0..30).collect::<Vec<_>>());
    let pictures: Vec<&Value> = messages
        .iter()
        .filter(|m| m["topic"] == "/rover/camera/image")
        .collect();
    assert_eq!(pictures.len(), 5);
    for (picture, sent) in pictures.iter().zip(&images) {
        let data = picture["data"]["data"].as_str().expect("base64");
        let decoded = base64_decode(data);
        assert_eq!(&decoded, sent, "a picture is not the bytes sent");
        assert_eq!(picture["data"]["format"], "png");
        // Its annotations: the same log time and timestamp.
        let boxes = messages
            .iter()
            .find(|m| {
                m["topic"] == "/rover/camera/annotations" && m["log_time"] == picture["log_time"]
            })
            .expect("the picture's annotations");
        assert_eq!(
            boxes["data"]["points"][0]["timestamp"],
            picture["data"]["timestamp"]
        );
        assert_eq!(boxes["data"]["points"].as_array().map(Vec::len), Some(2));
        assert_eq!(boxes["data"]["texts"][1]["text"], "cart 0.50");
    }
    assert_eq!(
        times[0], 1_800_000_000_000_000_000,
        "the first reading's time in ns"
    );

    // Offline, from the database file, lz4 and uncompressed: the same messages.
    for (compression, name) in [("lz4", "lz4"), ("none", "")] {
        let out = dir.0.join(format!("rover-{compression}.mcap"));
        let (status, _, err) = run(
            &[
                "export",
                "--db",
                &db,
                "--device",
                "rover",
                "--compression",
                compression,
                "-o",
                &out.display().to_string(),
            ],
            b"",
        );
        assert!(status.success(), "{err}");
        assert!(err.contains("43 messages on 4 channels"), "{err}");
        let offline = read_mcap(&out);
        assert_eq!(offline["compression"], json!([name]));
        assert_eq!(offline["messages"], read["messages"], "{compression}");
        assert_eq!(offline["channels"], read["channels"], "{compression}");
    }
    // The whole fleet; a narrower range.
    let all = dir.0.join("all.mcap");
    let (status, _, err) = run(
        &["export", "--db", &db, "-o", &all.display().to_string()],
        b"",
    );
    assert!(status.success(), "{err}");
    let fleet = read_mcap(&all);
    assert!(
        fleet["channels"]
            .as_object()
            .expect("channels")
            .contains_key("/arm/joint")
    );
    assert_eq!(fleet["statistics"]["messages"], 43 + 10);
    let (status, bytes) = get_bytes(
        &web,
        &format!(
            "/api/export.mcap?device=rover&from={}&to={}",
            base + 1.0,
            base + 2.0
        ),
    );
    assert_eq!(status, 200);
    std::fs::write(&file, &bytes).expect("write");
    let narrow = read_mcap(&file);
    let inside = narrow["messages"].as_array().expect("messages");
    assert!(inside.iter().all(|m| {
        let t = m["log_time"].as_u64().expect("time");
        (1_800_000_001_000_000_000..=1_800_000_002_000_000_000).contains(&t)
    }));
    // Readings 10 to 20 (at 1.0, 1.1, ... 2.0 s), and the frames at 1.05 (a picture and its
    // annotations) and at 1.5 (lidar-cam).
    assert_eq!(inside.len(), 11 + 3, "{inside:?}");

    // Bad requests.
    for (path, status) in [
        ("/api/export.mcap?compression=gzip", 400),
        ("/api/export.mcap?device=no%20such", 400),
        ("/api/export.mcap?from=10&to=5", 400),
    ] {
        assert_eq!(get_bytes(&web, path).0, status, "{path}");
    }
    let (status, _, err) = run(
        &[
            "export",
            "--db",
            &dir.0.join("none.db").display().to_string(),
            "-o",
            "x.mcap",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no such database"), "{err}");
    let (status, _, err) = run(
        &[
            "export", "--db", &db, "--from", "5", "--to", "1", "-o", "x.mcap",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(2), "{err}");
    drop(rover);
    drop(arm);
    hub.stop_ok();
}

/// Standard base64, decoded (the test's own, to check the hub's encoding independently).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for group in digits.chunks(4) {
        let n = group.iter().fold(0u32, |n, &d| (n << 6) | u32::from(d)) << (6 * (4 - group.len()));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out
}

/// Two simulated robots for two seconds, one with its clock an hour ahead; the hub's database.
fn two_clocks(dir: &TempDir) -> (crate::support::Proc, String, String) {
    let (hub, ingest, web, db) = start_hub_http(dir, &["--no-auth"]);
    let robot = |prefix: &str, offset: &str| {
        crate::support::Proc::spawn(&[
            "simulate",
            &ingest,
            "--devices",
            "1",
            "--rate",
            "20",
            "--camera-fps",
            "2",
            "--prefix",
            prefix,
            "--clock-offset",
            offset,
            "--duration",
            "2",
        ])
    };
    let (ahead, right) = (robot("ahead", "3600"), robot("right", "0"));
    for robot in [ahead, right] {
        let (status, _, err) = robot.wait();
        assert!(status.success(), "{err}");
    }
    (hub, web, db)
}

/// `ts` and `recv_ts` of every IMU row of `device`, from the CSV export.
fn imu_times(web: &str, device: &str) -> Vec<(f64, f64)> {
    let now = socketeer_hub::now_secs();
    let path = format!(
        "/api/export.csv?device={device}&stream=imu&field=az&from={}&to={}",
        now - 600.0,
        now + 600.0
    );
    let (status, body) = crate::hub::http(web, "GET", &path, "", "");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .skip(1)
        .map(|line| {
            let mut cells = line.split(',');
            let ts: f64 = cells.next().and_then(|c| c.parse().ok()).expect("ts");
            let recv: f64 = cells.next().and_then(|c| c.parse().ok()).expect("recv_ts");
            (ts, recv)
        })
        .collect()
}

#[test]
fn a_robot_whose_clock_is_an_hour_ahead_lines_up_with_the_rest() {
    let dir = TempDir::new("clock-api");
    let (hub, web, db) = two_clocks(&dir);
    // The API serves corrected time: each robot's readings sit within 50 ms of when the hub
    // received them, the one an hour ahead included, from its first reading on.
    for device in ["ahead-1", "right-1"] {
        let rows = imu_times(&web, device);
        assert!(rows.len() >= 30, "{device}: {} rows", rows.len());
        let worst = rows
            .iter()
            .map(|(ts, recv)| (ts - recv).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 0.05,
            "{device}: a reading {worst:.3} s from its receive time"
        );
    }
    // The device's own times are kept beside them, as sent.
    let conn = crate::hub::read_db(&db);
    let (shift, rows): (f64, i64) = conn
        .query_row(
            "SELECT avg(sa.device_ts - sa.ts), count(*) FROM samples sa
             JOIN streams st ON st.id = sa.stream_id JOIN devices d ON d.id = st.device_id
             WHERE d.name = 'ahead-1' AND sa.device_ts IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("device times");
    assert!(
        rows > 0 && (shift - 3600.0).abs() < 0.05,
        "{rows} rows, {shift}"
    );
    // The fleet view's numbers: the offset and round trip of each.
    let devices: Value = crate::hub::get_json(&web, "/api/devices");
    for d in devices["devices"].as_array().expect("devices") {
        let offset = d["clock"]["offset"].as_f64().expect("an offset");
        let want = if d["name"] == "ahead-1" { -3600.0 } else { 0.0 };
        assert!((offset - want).abs() < 0.05, "{d}");
        assert!(d["clock"]["rtt"].as_f64().expect("rtt") < 0.05, "{d}");
    }
    hub.stop_ok();
}

#[test]
fn a_recording_puts_a_robot_with_a_wrong_clock_at_the_right_time() {
    let test = "a_recording_puts_a_robot_with_a_wrong_clock_at_the_right_time";
    if !have_mcap_reader(test) {
        return;
    }
    let dir = TempDir::new("clock-mcap");
    let (hub, web, db) = two_clocks(&dir);
    let received: Vec<(f64, f64)> = imu_times(&web, "ahead-1");
    hub.stop_ok();
    let out = dir.0.join("fleet.mcap");
    let (status, _, err) = run(
        &["export", "--db", &db, "-o", &out.display().to_string()],
        b"",
    );
    assert!(status.success(), "{err}");
    let read = read_mcap(&out);
    let times = |topic: &str| -> Vec<f64> {
        read["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["topic"] == topic)
            .map(|m| m["log_time"].as_f64().expect("time") / 1e9)
            .collect()
    };
    let (ahead, right) = (times("/ahead-1/imu"), times("/right-1/imu"));
    assert!(!ahead.is_empty() && !right.is_empty());
    // Both robots' readings span the same two seconds, to within 50 ms at each end.
    let span = |t: &[f64]| {
        (
            t.iter().copied().fold(f64::MAX, f64::min),
            t.iter().copied().fold(0.0, f64::max),
        )
    };
    let ((a0, a1), (r0, r1)) = (span(&ahead), span(&right));
    assert!(
        (a0 - r0).abs() < 0.05 && (a1 - r1).abs() < 0.05,
        "{a0}..{a1} vs {r0}..{r1}"
    );
    // And each is the corrected time the API serves.
    for (t, (ts, _)) in ahead.iter().zip(&received) {
        assert!((t - ts).abs() < 1e-5, "{t} vs {ts}");
    }
}

/// A second hub in a directory of its own.
fn another_hub(tag: &str) -> (TempDir, crate::support::Proc, String, String, String) {
    let dir = TempDir::new(tag);
    let (hub, ingest, web, db) = start_hub_http(&dir, &["--no-auth"]);
    (dir, hub, ingest, web, db)
}

#[test]
fn export_then_import_then_export_gives_the_same_recording() {
    let test = "export_then_import_then_export_gives_the_same_recording";
    if !have_mcap_reader(test) {
        return;
    }
    let (dir, hub, ingest, web, _db) = another_hub("roundtrip-a");
    let base = 1_800_000_000.0;
    let mut rover = Client::connect(&ingest);
    rover.send("{\"device\":\"rover\"}\n{\"session\":\"s\"}\n");
    let mut seq = 0;
    for k in 0..20u32 {
        seq += 1;
        let line = json!({"stream": "/robot/imu", "seq": seq, "ts": base + f64::from(k) * 0.05,
            "values": {"ax": f64::from(k) * 0.25, "pose": {"x": -1.5, "y": k}, "mode": "RTK", "ok": true}});
        rover.send(&format!("{line}\n"));
        assert_eq!(rover.answer(), json!({"ack": seq}));
    }
    for k in 0..4u8 {
        seq += 1;
        let picture = png(20 + u32::from(k), 10, [k * 50, 1, 2]);
        let extra = json!({"stream": "camera", "seq": seq, "ts": base + f64::from(k) + 0.125,
            "detections": [{"label": "a person, walking", "score": 0.905, "box": [1.5, 2, 3, 4]},
                           {"label": "cart", "score": 0.25, "box": [0, 0, 5, 5]}]});
        rover.send(&header("png", &picture, extra));
        rover.writer_bytes(&picture);
        assert_eq!(rover.answer(), json!({"ack": seq}));
        seq += 1;
        let line = json!({"stream": "lidar", "seq": seq, "ts": base + f64::from(k) + 0.5,
            "frame": {"w": 320, "h": 200}, "detections": [{"label": "wall", "score": 0.5, "box": [10, 10, 300, 20]}]});
        rover.send(&format!("{line}\n"));
        assert_eq!(rover.answer(), json!({"ack": seq}));
    }
    let mut arm = Client::connect(&ingest);
    arm.send("{\"device\":\"arm\"}\n{\"session\":\"s\"}\n");
    for k in 1..=5u32 {
        let line =
            json!({"stream": "joint", "seq": k, "ts": base + f64::from(k), "values": {"q1": k}});
        arm.send(&format!("{line}\n"));
        assert_eq!(arm.answer(), json!({"ack": k}));
    }
    let range = format!("from={}&to={}", base - 1.0, base + 100.0);
    let (status, bytes) = get_bytes(&web, &format!("/api/export.mcap?{range}"));
    assert_eq!(status, 200);
    let first = dir.0.join("first.mcap");
    std::fs::write(&first, &bytes).expect("write");
    drop((rover, arm));
    hub.stop_ok();

    // Into a hub of its own that takes only devices with their keys, twice (each device
    // authenticated with its own): acknowledged both times, stored once.
    let dir_b = TempDir::new("roundtrip-b");
    let keys = dir_b.0.join("devices.key");
    let lines: String = ["rover", "arm"]
        .iter()
        .map(|d| {
            std::fs::read_to_string(crate::security::make_key(&dir_b, d, Some(d))).expect("key")
        })
        .collect();
    std::fs::write(&keys, lines).expect("keys");
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let keys = keys.display().to_string();
    let (hub_b, ingest_b, web_b, db_b) = start_hub_http(&dir_b, &["--key-file", &keys]);
    let file = first.display().to_string();
    for round in 0..2 {
        let (status, _, err) = run(&["import", &ingest_b, &file, "--key-file", &keys], b"");
        assert!(status.success(), "round {round}: {err}");
        assert!(
            err.contains(
                "33 records acknowledged (4 with pictures) for 2 devices, 0 refused, 0 skipped"
            ),
            "round {round}: {err}"
        );
    }
    let stored: i64 = crate::hub::read_db(&db_b)
        .query_row(
            "SELECT (SELECT count(*) FROM samples) + (SELECT count(*) FROM frames)",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(stored, 20 + 4 + 4 + 5, "each record once");
    let (status, bytes) = get_bytes(&web_b, &format!("/api/export.mcap?{range}"));
    assert_eq!(status, 200);
    let second = dir_b.0.join("second.mcap");
    std::fs::write(&second, &bytes).expect("write");
    let (a, b) = (read_mcap(&first), read_mcap(&second));
    assert_eq!(a["channels"], b["channels"]);
    assert_eq!(a["statistics"], b["statistics"]);
    let (ma, mb) = (
        a["messages"].as_array().expect("messages"),
        b["messages"].as_array().expect("messages"),
    );
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(mb) {
        assert_eq!(x, y, "the same records, at the same times");
    }
    hub_b.stop_ok();
}

#[test]
fn import_lists_and_skips_what_it_cannot_take_and_refuses_what_is_not_mcap() {
    let test = "import_lists_and_skips_what_it_cannot_take_and_refuses_what_is_not_mcap";
    if !have_mcap_reader(test) {
        return;
    }
    let (dir, hub, ingest, _web, db) = another_hub("import-skips");
    // Written by the mcap project's own Python writer: a JSON channel of another tool's, a
    // protobuf channel and a ROS 2 one.
    let file = dir.0.join("mixed.mcap");
    let script = r#"
import json, sys
from mcap.writer import Writer
with open(sys.argv[1], "wb") as f:
    w = Writer(f)
    w.start()
    js = w.register_schema(name="Odom", encoding="jsonschema", data=b'{"type":"object"}')
    pb = w.register_schema(name="foo.Bar", encoding="protobuf", data=b"")
    ros = w.register_schema(name="sensor_msgs/msg/Imu", encoding="ros2msg", data=b"")
    odom = w.register_channel(topic="/odom", message_encoding="json", schema_id=js)
    bar = w.register_channel(topic="/bar", message_encoding="protobuf", schema_id=pb)
    imu = w.register_channel(topic="/imu", message_encoding="cdr", schema_id=ros)
    for k in range(3):
        t = 1800000000 * 10**9 + k * 10**8
        w.add_message(channel_id=odom, log_time=t, publish_time=t, data=json.dumps({"x": k, "v": {"lin": 0.5}}).encode())
        w.add_message(channel_id=bar, log_time=t, publish_time=t, data=b"\x08\x01")
        w.add_message(channel_id=imu, log_time=t, publish_time=t, data=b"\x00\x01\x00\x00")
    w.finish()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &file.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = file.display().to_string();
    let (status, _, err) = run(&["import", &ingest, &path, "--as", "rover-9"], b"");
    assert!(status.success(), "{err}");
    assert!(
        err.contains("/bar: 3 protobuf messages (foo.Bar) skipped"),
        "{err}"
    );
    assert!(
        err.contains("/imu: 3 cdr messages (sensor_msgs/msg/Imu) skipped"),
        "{err}"
    );
    assert!(
        err.contains("3 records acknowledged (0 with pictures) for 1 device, 0 refused, 6 skipped"),
        "{err}"
    );
    let conn = crate::hub::read_db(&db);
    let (device, stream, n): (String, String, i64) = conn
        .query_row(
            "SELECT d.name, st.name, count(*) FROM samples sa JOIN streams st ON st.id = sa.stream_id
             JOIN devices d ON d.id = st.device_id GROUP BY st.id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("stored");
    assert_eq!(
        (device.as_str(), stream.as_str(), n),
        ("rover-9", "odom", 3)
    );
    // A message too large to be a record: reported and counted, the rest still sent.
    let big = dir.0.join("big.mcap");
    let script = r#"
import json, sys
from mcap.writer import Writer
with open(sys.argv[1], "wb") as f:
    w = Writer(f)
    w.start()
    js = w.register_schema(name="Odom", encoding="jsonschema", data=b'{"type":"object"}')
    ch = w.register_channel(topic="/odom", message_encoding="json", schema_id=js)
    t = 1800000000 * 10**9
    w.add_message(channel_id=ch, log_time=t, publish_time=t, data=json.dumps({"x": 1}).encode())
    w.add_message(channel_id=ch, log_time=t + 1, publish_time=t + 1, data=json.dumps({"s": "y" * 100000}).encode())
    w.finish()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &big.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, err) = run(
        &[
            "import",
            &ingest,
            &big.display().to_string(),
            "--as",
            "rover-8",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("rover-8: a record not sent: longer than"),
        "{err}"
    );
    assert!(
        err.contains("1 record acknowledged (0 with pictures) for 1 device, 1 refused"),
        "{err}"
    );
    // Not MCAP, or cut short: refused with why, nothing sent.
    let junk = dir.0.join("junk.mcap");
    std::fs::write(&junk, b"this is not an mcap file at all").expect("write");
    let (status, _, err) = run(&["import", &ingest, &junk.display().to_string()], b"");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not a whole MCAP file"), "{err}");
    let bytes = std::fs::read(&file).expect("read");
    let cut = dir.0.join("cut.mcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let (status, _, err) = run(&["import", &ingest, &cut.display().to_string()], b"");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not a whole MCAP file"), "{err}");
    let (status, _, err) = run(&["import", &ingest, "/no/such/file.mcap"], b"");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read /no/such/file.mcap"), "{err}");
    hub.stop_ok();
}
