//! A fleet beyond one machine: hub nodes sharing a PostgreSQL store and a NATS bus, against
//! throwaway servers these tests start from the installed binaries (`initdb`/`pg_ctl` and
//! `nats-server -js` on free ports) so they can stop, kill and cut them off. Without the
//! binaries each test prints SKIPPED and why.

use std::time::{Duration, Instant};

use socketeer_hub::testing::{Nats, Postgres, say};

use crate::hub::{get_json, get_metric, live_viewer, next_event};
use crate::support::{DEADLINE, Proc, TempDir, addr, wait_until};

/// A throwaway PostgreSQL cluster with database `db`, or `None` after saying SKIPPED.
fn postgres(test: &str, db: &str) -> Option<Postgres> {
    match Postgres::start() {
        Ok(cluster) => {
            cluster.create_db(db).expect("create database");
            Some(cluster)
        }
        Err(why) => {
            say(&format!(
                "SKIPPED {test}: {why} (CI installs postgresql via .ci/run)"
            ));
            None
        }
    }
}

/// A throwaway NATS server, or `None` after saying SKIPPED.
fn nats(test: &str) -> Option<Nats> {
    match Nats::start() {
        Ok(nats) => Some(nats),
        Err(why) => {
            say(&format!(
                "SKIPPED {test}: {why} (CI installs nats-server via .ci/run)"
            ));
            None
        }
    }
}

/// A hub node on `url`, ingest and HTTP on free ports.
struct Node {
    proc: Proc,
    ingest: String,
    web: String,
}

fn node(url: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--no-auth"];
    args.extend_from_slice(extra);
    node_with(url, &args)
}

/// A hub node on `url` with `args` (its authentication among them).
fn node_with(url: &str, args_given: &[&str]) -> Node {
    let mut args = vec![
        "hub",
        "--db",
        url,
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--no-influx",
    ];
    args.extend_from_slice(args_given);
    let mut proc = Proc::spawn(&args);
    proc.stdout.wait_for("two endpoints", |seen| {
        crate::support::listening(seen).len() >= 2
    });
    let eps = crate::support::listening(&proc.stdout.seen);
    Node {
        ingest: addr(&eps[0]),
        web: addr(&eps[1]).trim_end_matches('/').to_owned(),
        proc,
    }
}

/// One number from `sql`.
fn number(pg: &Postgres, db: &str, sql: &str) -> i64 {
    pg.sql(db, sql).expect("query")[0]
        .as_deref()
        .expect("a value")
        .parse()
        .expect("a number")
}

/// Lines `{"stream":STREAM,"values":{"n":K}}` for K in `range`.
fn lines(stream: &str, range: std::ops::Range<u64>) -> String {
    range
        .map(|k| format!("{{\"stream\":\"{stream}\",\"values\":{{\"n\":{k}}}}}\n"))
        .collect()
}

/// Samples of `stream`, and how many distinct `n` among them.
fn stored(pg: &Postgres, db: &str, stream: &str) -> (i64, i64) {
    let rows = pg
        .sql(
            db,
            &format!(
                "SELECT count(*) || ' ' || count(DISTINCT sa.vals ->> 'n') FROM samples sa
                 JOIN streams st ON st.id = sa.stream_id WHERE st.name = '{stream}'"
            ),
        )
        .expect("query");
    let text = rows[0].as_deref().expect("counts");
    let (all, distinct) = text.split_once(' ').expect("two numbers");
    (all.parse().expect("n"), distinct.parse().expect("n"))
}

#[test]
fn a_killed_node_robots_move_to_another_within_seconds_nothing_lost_or_doubled() {
    let test = "a_killed_node_robots_move_to_another_within_seconds_nothing_lost_or_doubled";
    let Some(pg) = postgres(test, "fleet") else {
        return;
    };
    let url = pg.url("fleet");
    let a = node(&url, &[]);
    let b = node(&url, &[]);
    let mut publish = Proc::spawn(&[
        "publish",
        "--hub",
        &a.ingest,
        "--hub",
        &b.ingest,
        "--max-unacked",
        "500",
    ]);
    publish.write_stdin(lines("imu", 0..2000).as_bytes());
    wait_until("node A stored some", || {
        stored(&pg, "fleet", "imu").0 >= 200
    });
    // SIGKILL: no drain, no goodbye; what A committed is in PostgreSQL, the rest the
    // publisher still holds.
    a.proc.signal("KILL");
    let killed = Instant::now();
    publish.write_stdin(lines("imu", 2000..4000).as_bytes());
    publish
        .stderr
        .wait_for_text(&format!("failing over to tcp://{}", b.ingest));
    let moved = killed.elapsed();
    // On the other node within seconds (the goal: 5 s), and storing there.
    assert!(moved < Duration::from_secs(5), "moved after {moved:?}");
    // (B may already have stored all that was left by the time this looks.)
    let before = stored(&pg, "fleet", "imu").0;
    wait_until("B stores what A left", || {
        let now = stored(&pg, "fleet", "imu").0;
        now > before || now == 4000
    });
    let delivered = killed.elapsed();
    assert!(
        delivered < Duration::from_secs(5),
        "storing again {delivered:?} after the kill"
    );
    publish.close_stdin();
    let (status, _, err) = publish.wait();
    assert!(status.success(), "{err}");
    assert_eq!(
        stored(&pg, "fleet", "imu"),
        (4000, 4000),
        "every record exactly once"
    );
    // Every node reads the same store.
    let devices = get_json(&b.web, "/api/devices");
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));
}

#[test]
fn postgres_restarting_nodes_answer_retry_and_ingest_resumes_by_itself() {
    let test = "postgres_restarting_nodes_answer_retry_and_ingest_resumes_by_itself";
    let Some(pg) = postgres(test, "fleet") else {
        return;
    };
    let url = pg.url("fleet");
    let mut hub = node(&url, &[]);
    let dir = TempDir::new("pg-restart");
    let spool = dir.0.join("spool").display().to_string();
    let mut publish = Proc::spawn(&["publish", &hub.ingest, "--spool", &spool]);
    publish.write_stdin(lines("env", 0..100).as_bytes());
    wait_until("the first hundred", || stored(&pg, "fleet", "env").0 == 100);
    pg.stop();
    publish.write_stdin(lines("env", 100..200).as_bytes());
    // The node says "retry" (not an error): the robot keeps its records.
    publish.stderr.wait_for_text("the hub cannot store now");
    hub.proc.stderr.wait_for_text("PostgreSQL cannot store now");
    let (status, body) = crate::hub::http(&hub.web, "GET", "/api/devices", "", "");
    assert_eq!(status, 500, "reads fail plainly while it is away: {body}");
    pg.start_again().expect("restart");
    publish.close_stdin();
    let (status, _, err) = publish.wait();
    assert!(status.success(), "{err}");
    hub.proc.stderr.wait_for_text("PostgreSQL answers again");
    assert_eq!(stored(&pg, "fleet", "env"), (200, 200));
    hub.proc.stop_ok();
}

#[test]
fn a_password_in_the_url_is_never_shown_and_pgpassword_and_pgpass_work() {
    let test = "a_password_in_the_url_is_never_shown_and_pgpassword_and_pgpass_work";
    let Some(pg) = postgres(test, "fleet") else {
        return;
    };
    // In the URL: logs at debug, errors, metrics and the API never show it.
    let hub = node(&pg.url("fleet"), &["-vv"]);
    let mut publish = Proc::spawn(&["publish", &hub.ingest]);
    publish.write_stdin(lines("a", 0..10).as_bytes());
    publish.close_stdin();
    assert!(publish.wait().0.success());
    let (_, metrics) = crate::hub::http(&hub.web, "GET", "/metrics", "", "");
    let (_, devices) = crate::hub::http(&hub.web, "GET", "/api/devices", "", "");
    hub.proc.signal("TERM");
    let (_, out, err) = hub.proc.wait();
    assert!(
        err.contains(&format!("postgres://{}:***@", pg.user)),
        "{err}"
    );
    for text in [&out, &err, &metrics, &devices] {
        assert!(
            !text.contains(&pg.password),
            "the password was shown: {text}"
        );
    }
    // A wrong password: the error says so, without the URL's password.
    let wrong = pg.url("fleet").replace(&pg.password, "not-the-password");
    let (status, _, err) = crate::support::run(
        &[
            "hub",
            "--no-auth",
            "--db",
            &wrong,
            "--no-http",
            "--no-influx",
        ],
        b"",
    );
    assert!(!status.success());
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    let bare = format!("postgres://{}@127.0.0.1:{}/fleet", pg.user, pg.port);
    for (how, env) in [
        ("PGPASSWORD", vec![("PGPASSWORD", pg.password.clone())]),
        ("a password file", {
            let dir = TempDir::new("pgpass");
            let file = dir.0.join("pgpass");
            std::fs::write(
                &file,
                format!(
                    "# ours\n127.0.0.1:{}:fleet:{}:{}\n",
                    pg.port, pg.user, pg.password
                ),
            )
            .expect("write");
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
            let kept = file.display().to_string();
            std::mem::forget(dir); // removed with the temp dir below
            vec![("PGPASSFILE", kept)]
        }),
    ] {
        let mut command = std::process::Command::new(crate::support::bin());
        command
            .args(["hub", "--no-auth", "--db", &bare, "--listen", "127.0.0.1:0"])
            .args(["--no-http", "--no-influx"])
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("hub");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read");
        let _ = child.kill();
        let _ = child.wait();
        assert!(line.starts_with("listening on"), "{how}: {line}");
        if let Some((_, file)) = env.iter().find(|(k, _)| *k == "PGPASSFILE") {
            let _ = std::fs::remove_dir_all(std::path::Path::new(file).parent().expect("dir"));
        }
    }
}

#[test]
fn migrate_copies_a_sqlite_history_resumably_and_idempotently() {
    let test = "migrate_copies_a_sqlite_history_resumably_and_idempotently";
    let Some(pg) = postgres(test, "moved") else {
        return;
    };
    let dir = TempDir::new("migrate");
    let (hub, ingest, _web, db) = crate::hub::start_hub_http(&dir, &["--no-auth"]);
    let mut publish = Proc::spawn(&["publish", &ingest]);
    publish.write_stdin(lines("imu", 0..60_000).as_bytes());
    publish.write_stdin(lines("gps", 0..500).as_bytes());
    publish.close_stdin();
    assert!(publish.wait().0.success());
    // A camera frame with its picture and a detection.
    let picture = dir.0.join("shot.png");
    std::fs::write(&picture, crate::hub_images::png(4, 3, [200, 40, 10])).expect("png");
    let (status, _, err) = crate::support::run(
        &[
            "publish",
            &ingest,
            "--image",
            &picture.display().to_string(),
            "--stream",
            "front",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    hub.stop_ok();
    let url = pg.url("moved");

    // Interrupted once some chunks are in: the next run goes on where it stopped.
    let first = Proc::spawn(&["hub", "migrate", "--from", &db, "--to", &url]);
    wait_until("a first chunk copied", || {
        pg.sql("moved", "SELECT count(*) FROM samples")
            .ok()
            .and_then(|r| r[0].clone())
            .is_some_and(|n| n != "0")
    });
    first.signal("KILL");
    let _ = first.wait();
    let (status, out, err) =
        crate::support::run(&["hub", "migrate", "--from", &db, "--to", &url], b"");
    assert!(status.success(), "{err}");
    assert!(out.contains("counts checked"), "{out}");
    assert!(
        err.contains("samples 60500/60500, frames 1/1"),
        "progress: {err}"
    );
    assert!(!err.contains(&pg.password), "{err}");
    assert_eq!(stored(&pg, "moved", "imu"), (60_000, 60_000));
    assert_eq!(stored(&pg, "moved", "gps"), (500, 500));
    // Again: nothing copied twice.
    let (status, out, _) =
        crate::support::run(&["hub", "migrate", "--from", &db, "--to", &url], b"");
    assert!(status.success());
    assert!(
        out.contains("0 samples and 0 frames copied now (60500 and 1 in all)"),
        "{out}"
    );
    assert_eq!(stored(&pg, "moved", "imu"), (60_000, 60_000));
    // A hub on the new store serves the history, the picture byte for byte.
    let hub = node(&url, &[]);
    let devices = get_json(&hub.web, "/api/devices");
    assert_eq!(devices["devices"][0]["series"], 2);
    let device = devices["devices"][0]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let frames = get_json(
        &hub.web,
        &format!("/api/frames?device={device}&from=0&to=4000000000"),
    );
    let frame = &frames["frames"][0];
    assert_eq!(frame["stream"], "front", "{frames}");
    let id = frame["id"].as_i64().expect("id");
    let (status, _, body) =
        crate::hub_images::http_bytes(&hub.web, "GET", &format!("/api/frame?id={id}"), "", b"");
    assert_eq!(status, 200);
    assert_eq!(body, crate::hub_images::png(4, 3, [200, 40, 10]));
    // Bad command lines.
    for (args, why) in [
        (
            vec!["--from", &url, "--to", &url],
            "give the SQLite database",
        ),
        (vec!["--from", &db, "--to", &db], "give a PostgreSQL URL"),
    ] {
        let mut full = vec!["hub", "migrate"];
        full.extend(args);
        let (status, _, err) = crate::support::run(&full, b"");
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.starts_with("socketeer: hub migrate: "), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

#[test]
fn nats_down_ingest_goes_on_and_the_cross_node_view_comes_back_with_it() {
    let test = "nats_down_ingest_goes_on_and_the_cross_node_view_comes_back_with_it";
    let Some(pg) = postgres(test, "fleet") else {
        return;
    };
    let Some(mut bus) = nats(test) else {
        return;
    };
    let url = pg.url("fleet");
    let a = node(&url, &["--bus", &bus.url(), "--node", "node-a"]);
    let mut b = node(&url, &["--bus", &bus.url(), "--node", "node-b"]);
    for n in [&a, &b] {
        wait_until("the bus connected", || {
            get_metric(&n.web, "socketeer_hub_bus_connected") == 1
        });
    }
    // A viewer on B sees what a robot sends to A.
    let mut viewer = live_viewer(&b.web, "");
    let mut robot = crate::hub::Client::connect(&a.ingest);
    robot.send("{\"device\":\"rover-7\"}\n");
    robot.send("{\"stream\":\"imu\",\"seq\":1,\"values\":{\"ax\":1.5}}\n");
    assert_eq!(robot.answer()["ack"], 1);
    let event = next_event(&mut viewer);
    assert_eq!(
        (event["device"].as_str(), event["values"]["ax"].as_f64()),
        (Some("rover-7"), Some(1.5))
    );
    // Presence: B knows the robot is on A.
    wait_until("presence on B", || {
        get_json(&b.web, "/api/devices")["devices"][0]["node"] == "node-a"
    });

    // NATS goes: ingest and storage go on.
    bus.stop();
    b.proc.stderr.wait_for_text("NATS unreachable");
    for seq in 2..=20 {
        robot.send(&format!(
            "{{\"stream\":\"imu\",\"seq\":{seq},\"values\":{{\"ax\":{seq}}}}}\n"
        ));
        assert_eq!(
            robot.answer()["ack"],
            seq,
            "acknowledged while NATS is down"
        );
    }
    assert_eq!(stored_field(&pg, "imu"), 20);
    // NATS comes back: so does the cross-node view, by itself.
    bus.start_again().expect("restart NATS");
    wait_until("the bus reconnected", || {
        get_metric(&a.web, "socketeer_hub_bus_connected") == 1
            && get_metric(&b.web, "socketeer_hub_bus_connected") == 1
    });
    let mut seq = 21;
    let seen = loop {
        robot.send(&format!(
            "{{\"stream\":\"imu\",\"seq\":{seq},\"values\":{{\"ax\":{seq}}}}}\n"
        ));
        assert_eq!(robot.answer()["ack"], seq);
        let event = next_event(&mut viewer);
        if event["values"]["ax"].as_f64() == Some(seq as f64) {
            break seq;
        }
        seq += 1;
        assert!(seq < 200, "the live view did not come back");
    };
    assert!(seen >= 21);
    // A new viewer on B gets every stream's latest at once.
    drop(viewer);
    let mut late = live_viewer(&b.web, "");
    assert_eq!(next_event(&mut late)["device"], "rover-7");
    b.proc.stderr.wait_for_text("NATS connected");
}

/// Samples of stream `stream`.
fn stored_field(pg: &Postgres, stream: &str) -> i64 {
    number(
        pg,
        "fleet",
        &format!(
            "SELECT count(*) FROM samples sa JOIN streams st ON st.id = sa.stream_id
             WHERE st.name = '{stream}'"
        ),
    )
}

/// Per device: samples of stream `imu`, and distinct `n` among them.
fn per_device(pg: &Postgres) -> std::collections::BTreeMap<String, (i64, i64)> {
    pg.sql(
        "fleet",
        "SELECT d.name || ' ' || count(*) || ' ' || count(DISTINCT sa.vals ->> 'n')
         FROM samples sa JOIN streams st ON st.id = sa.stream_id
         JOIN devices d ON d.id = st.device_id WHERE st.name = 'imu' GROUP BY d.name",
    )
    .expect("query")
    .into_iter()
    .flatten()
    .map(|row| {
        let parts: Vec<&str> = row.split(' ').collect();
        (
            parts[0].to_owned(),
            (parts[1].parse().expect("n"), parts[2].parse().expect("n")),
        )
    })
    .collect()
}

#[test]
fn three_nodes_ten_publishers_nodes_postgres_and_nats_killed_in_turn() {
    let test = "three_nodes_ten_publishers_nodes_postgres_and_nats_killed_in_turn";
    let Some(pg) = postgres(test, "fleet") else {
        return;
    };
    let Some(mut bus) = nats(test) else {
        return;
    };
    let url = pg.url("fleet");
    let bus_url = bus.url();
    let dir = TempDir::new("cluster");
    // Ten robots, each with its own key (as `socketeer keygen` makes them).
    let keys = dir.0.join("keys");
    let key_lines: String = (0..10)
        .map(|k| crate::support::run(&["keygen", "--device", &format!("robot-{k}")], b"").1)
        .collect();
    std::fs::write(&keys, key_lines).expect("keys");
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let keys = keys.display().to_string();
    let start = |name: &str| {
        node_with(
            &url,
            &["--key-file", &keys, "--bus", &bus_url, "--node", name],
        )
    };
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| start(n)).collect();
    for n in &nodes {
        wait_until("the bus connected", || {
            get_metric(&n.web, "socketeer_hub_bus_connected") == 1
        });
    }
    let ingests: Vec<String> = nodes.iter().map(|n| n.ingest.clone()).collect();
    // Robot k starts at node k % 3 and has the other two to fail over to.
    let mut robots: Vec<Proc> = (0..10)
        .map(|k| {
            let mut args = vec!["publish".to_owned()];
            for i in 0..3 {
                args.push("--hub".into());
                args.push(ingests[(k + i) % 3].clone());
            }
            args.extend(["--key-file".into(), keys.clone()]);
            args.extend(["--device".into(), format!("robot-{k}")]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Proc::spawn(&args)
        })
        .collect();
    let total = |pg: &Postgres| per_device(pg).values().map(|c| c.0).sum::<i64>();
    let mut sent = 0u64;
    let mut phase = |robots: &mut Vec<Proc>| {
        for robot in robots.iter_mut() {
            robot.write_stdin(lines("imu", sent..sent + 300).as_bytes());
        }
        sent += 300;
    };

    // 1: all up.
    phase(&mut robots);
    wait_until("the first phase stored", || total(&pg) == 3000);
    // 2: node n1 SIGKILLed while they publish; its robots move to the others.
    phase(&mut robots);
    nodes[0].proc.signal("KILL");
    wait_until("the second phase stored", || total(&pg) == 6000);
    // 3: PostgreSQL stopped: nodes answer retry, robots keep their records; then back.
    pg.stop();
    phase(&mut robots);
    let until = Instant::now() + DEADLINE;
    while !robots.iter_mut().any(|r| {
        r.stderr.poll();
        r.stderr.text().contains("the hub cannot store now")
    }) {
        assert!(Instant::now() < until, "no robot was told to retry");
        std::thread::sleep(Duration::from_millis(10));
    }
    pg.start_again().expect("PostgreSQL back");
    wait_until("the third phase stored", || {
        pg.sql("fleet", "SELECT 1").is_ok() && total(&pg) == 9000
    });
    // 4: NATS stopped: ingest and storage go on; then back.
    bus.stop();
    phase(&mut robots);
    wait_until("the fourth phase stored", || total(&pg) == 12000);
    bus.start_again().expect("NATS back");
    for robot in &mut robots {
        robot.close_stdin();
    }
    for robot in robots {
        let (status, _, err) = robot.wait();
        assert!(status.success(), "{err}");
    }
    // Every acknowledged record exactly once, every robot's.
    let counts = per_device(&pg);
    assert_eq!(counts.len(), 10, "{counts:?}");
    for (device, (all, distinct)) in &counts {
        assert_eq!((*all, *distinct), (1200, 1200), "{device}");
    }
    // A viewer on any node that is up sees every robot: in the fleet, and live (each
    // stream's newest first, from the bus, whichever node the robot was on).
    for n in &nodes[1..] {
        wait_until("the bus reconnected", || {
            get_metric(&n.web, "socketeer_hub_bus_connected") == 1
        });
        let fleet = get_json(&n.web, "/api/devices");
        assert_eq!(fleet["devices"].as_array().map(Vec::len), Some(10));
        let mut viewer = live_viewer(&n.web, "");
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 10 {
            let event = next_event(&mut viewer);
            seen.insert(event["device"].as_str().expect("device").to_owned());
        }
    }
    // And in a browser, as a person would look: each node's dashboard lists all ten robots.
    browser_sees_every_robot(test, &nodes[1..], 10);
    for n in nodes.drain(1..) {
        n.proc.stop_ok();
    }
}

/// Headless Chromium on each node's dashboard: the fleet table lists `robots` robots, online
/// (SKIPPED without node, Chromium or the test's npm packages).
fn browser_sees_every_robot(test: &str, nodes: &[Node], robots: usize) {
    if !crate::support::have("node", test) {
        return;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    for (what, path) in [
        ("Chromium", std::path::PathBuf::from(&chromium)),
        (
            "playwright-core (npm ci --prefix tests/browser)",
            browser_dir.join("node_modules/playwright-core"),
        ),
    ] {
        if !path.exists() {
            say(&format!(
                "SKIPPED {test} (its browser part): {what} is not installed at {} (CI installs it via .ci/run)",
                path.display()
            ));
            return;
        }
    }
    let output = std::process::Command::new("node")
        .arg(browser_dir.join("fleet.mjs"))
        .args(nodes.iter().map(|n| format!("http://{}/", n.web)))
        .env("CHROMIUM", &chromium)
        .env("DEVICES", robots.to_string())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser saw otherwise:\n{stdout}\n{stderr}"
    );
    for n in nodes {
        assert!(
            stdout.contains(&format!("{}/: {robots} robots", n.web)),
            "{stdout}"
        );
    }
}

#[test]
fn a_node_cut_off_from_postgres_by_a_partition_answers_retry_and_recovers() {
    let test = "a_node_cut_off_from_postgres_by_a_partition_answers_retry_and_recovers";
    for program in ["unshare", "ip", "nft"] {
        if !crate::support::have(program, test) {
            return;
        }
    }
    let Some(initdb) = socketeer_hub::testing::pg_program("initdb") else {
        say(&format!(
            "SKIPPED {test}: PostgreSQL's initdb is not installed (CI installs postgresql via .ci/run)"
        ));
        return;
    };
    let works = std::process::Command::new("unshare")
        .args(["-n", "nft", "list", "tables"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        say(&format!(
            "SKIPPED {test}: cannot make a network namespace with nftables here (needs root)"
        ));
        return;
    }
    // Where initdb really is (a symlink elsewhere is followed): psql and pg_ctl are beside it.
    let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    let pgbin = initdb.parent().expect("bin dir").display().to_string();
    // In a network namespace of its own (only `lo`): PostgreSQL, one hub node and a robot.
    // The partition drops every packet the node (root) sends to PostgreSQL's port — no reset,
    // no error, silence, as when a cable is pulled — while PostgreSQL (user postgres) and the
    // checks (psql as postgres) are untouched.
    let script = r#"
set -euo pipefail
ip link set lo up
D=$(mktemp -d /tmp/socketeer-partition-XXXXXX)
chmod 755 "$D"
AS=""
if [ "$(id -u)" = 0 ]; then chown postgres "$D"; AS="runuser -u postgres --"; fi
cleanup() {
  [ -n "${PUB:-}" ] && kill "$PUB" 2>/dev/null
  [ -n "${HUB:-}" ] && kill -9 "$HUB" 2>/dev/null
  $AS "$PGBIN/pg_ctl" -D "$D/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$D"
}
trap cleanup EXIT
waitfor() { # FILE TEXT: until FILE holds TEXT (30 s at most)
  local n=0
  until grep -q "$2" "$1"; do
    n=$((n + 1))
    if [ $n -ge 600 ]; then echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1; fi
    sleep 0.05
  done
}
count() { $AS "$PGBIN/psql" -h "$D" -U socketeer -d fleet -tAc \
  "SELECT count(*) || ' ' || count(DISTINCT vals ->> 'n') FROM samples"; }
waitcount() { # EXPECTED
  local n=0
  until [ "$(count)" = "$1" ]; do
    n=$((n + 1)); if [ $n -ge 600 ]; then echo "stored: $(count), not $1" >&2; exit 1; fi
    sleep 0.05
  done
}
$AS "$PGBIN/initdb" -D "$D/data" -U socketeer --auth=trust --no-sync --locale=C >/dev/null
$AS "$PGBIN/pg_ctl" -D "$D/data" -l "$D/pg.log" -w \
  -o "-p 5432 -k $D -c listen_addresses=127.0.0.1" start >/dev/null
$AS "$PGBIN/psql" -h "$D" -U socketeer -d postgres -qc 'CREATE DATABASE fleet'
"$SOCKETEER" hub --no-auth --db postgres://socketeer@127.0.0.1:5432/fleet \
  --listen 127.0.0.1:7000 --no-http --no-influx >"$D/hub.out" 2>"$D/hub.err" &
HUB=$!
waitfor "$D/hub.out" "listening on"
mkfifo "$D/in"
"$SOCKETEER" publish 127.0.0.1:7000 <"$D/in" >"$D/pub.out" 2>"$D/pub.err" &
PUB=$!
exec 3>"$D/in"
for n in $(seq 0 99); do echo "{\"stream\":\"p\",\"values\":{\"n\":$n}}" >&3; done
waitcount "100 100"
nft add table inet cut
nft add chain inet cut out '{ type filter hook output priority 0; }'
nft add rule inet cut out tcp dport 5432 meta skuid 0 drop
started=$(date +%s)
for n in $(seq 100 199); do echo "{\"stream\":\"p\",\"values\":{\"n\":$n}}" >&3; done
waitfor "$D/hub.err" "PostgreSQL cannot store now"
waitfor "$D/pub.err" "the hub cannot store now"
echo "retry after $(( $(date +%s) - started )) s"
nft delete table inet cut
exec 3>&-
wait "$PUB"
PUB=
waitfor "$D/hub.err" "PostgreSQL answers again"
waitcount "200 200"
echo "all stored"
"#;
    let output = std::process::Command::new("unshare")
        .args(["-n", "bash", "-c", script])
        .env("SOCKETEER", crate::support::bin())
        .env("PGBIN", &pgbin)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("unshare");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{out}\n{err}");
    assert!(out.contains("all stored"), "{out}");
    // The commit in flight fails within the connection's 10 s TCP user timeout (and the
    // seconds of a first reconnect), not never: 13-16 s alone here; 29 s was seen once in CI
    // with every other test running beside it, so the bound is the script's own wait (600 looks, 30-35 s).
    let after: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("retry after "))
        .and_then(|l| l.trim_end_matches(" s").parse().ok())
        .expect("when retry came");
    assert!(after <= 35, "retry only after {after} s");
}

#[test]
fn the_bus_logs_in_with_the_url_s_user_and_never_shows_its_password() {
    let test = "the_bus_logs_in_with_the_url_s_user_and_never_shows_its_password";
    let Some(pg) = postgres(test, "fleet") else {
        return;
    };
    let bus = match Nats::start_with_user("hub", "n4ts-s3cret") {
        Ok(bus) => bus,
        Err(why) => {
            say(&format!(
                "SKIPPED {test}: {why} (CI installs nats-server via .ci/run)"
            ));
            return;
        }
    };
    let good = format!("nats://hub:n4ts-s3cret@127.0.0.1:{}", bus.port);
    let bad = format!("nats://hub:wr0ng-pass@127.0.0.1:{}", bus.port);
    let mut a = node(&pg.url("fleet"), &["-v", "--bus", &good, "--node", "a"]);
    wait_until("logged in", || {
        get_metric(&a.web, "socketeer_hub_bus_connected") == 1
    });
    let mut b = node(&pg.url("fleet"), &["-v", "--bus", &bad, "--node", "b"]);
    b.proc.stderr.wait_for_text("NATS refused this node");
    assert_eq!(get_metric(&b.web, "socketeer_hub_bus_connected"), 0);
    // B still takes records: its store is PostgreSQL, not the bus.
    let mut robot = crate::hub::Client::connect(&b.ingest);
    robot.send("{\"device\":\"r\"}\n{\"stream\":\"s\",\"seq\":1,\"values\":{\"v\":1}}\n");
    assert_eq!(robot.answer()["ack"], 1);
    for node in [&mut a, &mut b] {
        node.proc.signal("TERM");
    }
    for node in [a, b] {
        let (_, out, err) = node.proc.wait();
        assert!(err.contains("nats://hub:***@127.0.0.1"), "{err}");
        for secret in ["n4ts-s3cret", "wr0ng-pass", &pg.password] {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{secret} shown: {err}"
            );
        }
    }
}

#[test]
fn a_foxglove_client_on_one_node_sees_a_robot_on_another() {
    let test = "a_foxglove_client_on_one_node_sees_a_robot_on_another";
    let Some(pg) = postgres(test, "fleet") else {
        return;
    };
    let Some(bus) = nats(test) else {
        return;
    };
    let url = pg.url("fleet");
    let a = node(&url, &["--bus", &bus.url(), "--node", "node-a"]);
    let b = node(&url, &["--bus", &bus.url(), "--node", "node-b"]);
    for n in [&a, &b] {
        wait_until("the bus connected", || {
            get_metric(&n.web, "socketeer_hub_bus_connected") == 1
        });
    }
    let mut robot = crate::hub::Client::connect(&a.ingest);
    robot
        .send("{\"device\":\"rover-9\"}\n{\"stream\":\"imu\",\"seq\":1,\"values\":{\"ax\":0.5}}\n");
    assert_eq!(robot.answer()["ack"], 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
        let mut request = format!("ws://{}/foxglove", b.web)
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "foxglove.websocket.v1".parse().expect("header"),
        );
        let stream = tokio::net::TcpStream::connect(&b.web)
            .await
            .expect("connect");
        let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("WebSocket");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut next = async || {
            tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("message")
        };
        // The robot's channel, advertised by B from the shared store.
        let channel = loop {
            if let Message::Text(text) = next().await {
                let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                let found = value["channels"].as_array().and_then(|list| {
                    list.iter()
                        .find(|c| c["topic"] == "/rover-9/imu")
                        .map(|c| c["id"].as_u64().expect("id"))
                });
                if let Some(id) = found {
                    break id;
                }
            }
        };
        let subscribe = serde_json::json!({
            "op": "subscribe",
            "subscriptions": [{ "id": 7, "channelId": channel }],
        });
        ws.send(Message::Text(subscribe.to_string().into()))
            .await
            .expect("subscribe");
        // Its values on the subscription: the newest at once (0.5, from A over the bus), then
        // what the robot sends to A next.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let message = tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("message");
            let Message::Binary(data) = message else {
                continue;
            };
            if data[0] != 1 || u32::from_le_bytes(data[1..5].try_into().expect("id")) != 7 {
                continue; // time messages
            }
            let value: serde_json::Value = serde_json::from_slice(&data[13..]).expect("JSON");
            seen.push(value["ax"].as_f64().expect("ax"));
            if seen.len() == 1 {
                robot.send("{\"stream\":\"imu\",\"seq\":2,\"values\":{\"ax\":0.25}}\n");
                assert_eq!(robot.answer()["ack"], 2);
            }
        }
        assert_eq!(seen, [0.5, 0.25]);
    });
}
