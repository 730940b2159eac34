//! The hub under hostile or careless peers (issue 20): floods that must not take memory without
//! bound or hold acknowledged ingest back, and the limits that refuse them.

use rusqlite::Connection;

use crate::hub::{Client, get_metric, stored};
use crate::support::{Proc, TempDir, addr, wait_until};

/// A hub with ingest, Influx over UDP and HTTP, each on a free port: the process, the three
/// addresses and the database path.
fn start_hub_udp(dir: &TempDir, extra: &[&str]) -> (Proc, [String; 3], String) {
    let db = dir.0.join("hub.db").display().to_string();
    let mut args = vec![
        "hub",
        "--no-auth",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--influx",
        "udp://127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut hub = Proc::spawn(&args);
    hub.stdout.wait_for("three endpoints", |seen| {
        crate::support::listening(seen).len() >= 3
    });
    let eps = crate::support::listening(&hub.stdout.seen);
    let web = addr(&eps[2]).trim_end_matches('/').to_owned();
    (hub, [addr(&eps[0]), addr(&eps[1]), web], db)
}

/// Holds the database's write lock, so the hub's writer waits (up to its 5 s busy timeout per
/// commit), until dropped.
struct WriteLock(Connection);

impl WriteLock {
    fn take(db: &str) -> WriteLock {
        let conn = Connection::open(db).expect("open");
        conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
        WriteLock(conn)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

#[test]
fn an_influx_udp_flood_is_dropped_when_the_writer_is_behind_and_robots_still_get_acks() {
    let dir = TempDir::new("hub-udp-flood");
    let (hub, [ingest, udp, web], db) = start_hub_udp(&dir, &[]);
    let lock = WriteLock::take(&db);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    // Datagrams of 1,000 readings each, from invented devices, until the hub says it drops
    // them (bounded: at most 5,000 datagrams).
    let mut datagram = String::new();
    for k in 0..1000 {
        datagram.push_str(&format!("flood,device=f{} v={k}\n", k % 10));
    }
    let mut sent = 0;
    while get_metric(&web, "socketeer_hub_influx_dropped_total") == 0 {
        assert!(sent < 5000, "5,000 datagrams and none dropped");
        for _ in 0..20 {
            socket.send_to(datagram.as_bytes(), &udp).expect("send");
        }
        sent += 20;
    }
    // A robot's record is queued at once (the flood may take only half of the queue) and
    // acknowledged once the writer can write.
    let mut robot = Client::connect(&ingest);
    robot.send("{\"stream\":\"imu\",\"seq\":1,\"values\":{\"ax\":1}}\n");
    drop(lock);
    assert_eq!(robot.answer(), serde_json::json!({"ack": 1}));
    // What was taken is stored; what was dropped was counted, nothing in between.
    let taken = get_metric(&web, "socketeer_hub_influx_lines_total");
    assert!(taken > 0);
    wait_until("the taken lines stored", || stored(&db) as u64 == taken + 1);
    let dropped = get_metric(&web, "socketeer_hub_influx_dropped_total");
    assert_eq!(dropped % 1000, 0, "whole datagrams are dropped: {dropped}");
    hub.stop_ok();
}
