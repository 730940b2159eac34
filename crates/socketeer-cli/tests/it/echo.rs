//! `socketeer serve echo`: every mode, every transport, limits, and signals.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};

use crate::support::{Proc, TempDir, addr, read_n, read_to_end, tcp, udp_exchange};

#[test]
fn upper_prefix_on_every_transport_from_one_process() {
    let dir = TempDir::new("echo-all");
    let stream_path = dir.sock("s.sock");
    let dgram_path = dir.sock("d.sock");
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--upper",
        "--prefix",
        "> ",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        &format!("unix://{stream_path}"),
        "--listen",
        &format!("unixgram://{dgram_path}"),
    ]);
    assert_eq!(eps.len(), 4, "{eps:?}");
    assert!(
        eps[0].starts_with("tcp://127.0.0.1:") && !eps[0].ends_with(":0"),
        "{eps:?}"
    );
    assert!(eps[1].starts_with("udp://127.0.0.1:"), "{eps:?}");

    let mut t = tcp(&eps[0]);
    t.write_all("hello 欢迎\n".as_bytes()).expect("send");
    assert_eq!(read_n(&mut t, "> HELLO 欢迎\n".len()), "> HELLO 欢迎\n");

    assert_eq!(udp_exchange(&eps[1], b"dgram"), "> DGRAM");
    let mut buf = [0u8; 64];

    let mut s = UnixStream::connect(&stream_path).expect("unix");
    s.set_read_timeout(Some(crate::support::DEADLINE))
        .expect("timeout");
    s.write_all(b"unix\n").expect("send");
    assert_eq!(read_n(&mut s, 7), "> UNIX\n");

    let client_path = dir.sock("client.sock");
    let d = UnixDatagram::bind(&client_path).expect("bind client");
    d.set_read_timeout(Some(crate::support::DEADLINE))
        .expect("timeout");
    d.send_to(b"gram", &dgram_path).expect("send");
    let n = d.recv(&mut buf).expect("unixgram reply");
    assert_eq!(&buf[..n], b"> GRAM");
}

#[test]
fn lines_mode_answers_each_line_even_when_they_arrive_together() {
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--lines",
        "--upper",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut t = tcp(&eps[0]);
    t.write_all(b"one\r\ntwo\nthr").expect("send");
    assert_eq!(read_n(&mut t, 9), "ONE\r\nTWO\n");
    t.write_all(b"ee\n").expect("send");
    assert_eq!(read_n(&mut t, 6), "THREE\n");
}

#[test]
fn udp_replies_are_never_bigger_than_the_request_plus_prefix() {
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--reply",
        "I am server.",
        "--listen",
        "udp://127.0.0.1:0",
    ]);
    assert_eq!(udp_exchange(&eps[0], b"hi"), "I ");
    // A long prefix cannot amplify either: at most three times what the datagram carried.
    let prefix = "P".repeat(1000);
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--prefix",
        &prefix,
        "--listen",
        "udp://127.0.0.1:0",
    ]);
    assert_eq!(udp_exchange(&eps[0], b"x"), "PPP");
    let big = [b'x'; 600];
    assert_eq!(udp_exchange(&eps[0], &big).len(), 1600);
}

#[test]
fn max_conns_makes_the_next_client_wait_for_a_free_place() {
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--max-conns",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut first = tcp(&eps[0]);
    first.write_all(b"first").expect("send");
    assert_eq!(read_n(&mut first, 5), "first");
    let mut second = tcp(&eps[0]); // completes in the backlog
    second.write_all(b"second").expect("send");
    drop(first);
    assert_eq!(read_n(&mut second, 6), "second");
}

#[test]
fn idle_timeout_closes_silent_clients() {
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--idle-timeout",
        "0.3",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut silent = tcp(&eps[0]);
    assert_eq!(read_to_end(&mut silent), "");
}

#[test]
fn oversize_line_closes_only_that_connection() {
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--lines",
        "--max-line",
        "16",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut ok = tcp(&eps[0]);
    let mut big = tcp(&eps[0]);
    big.write_all(&[b'x'; 40]).expect("send");
    assert_eq!(read_to_end(&mut big), "");
    ok.write_all(b"fine\n").expect("send");
    assert_eq!(read_n(&mut ok, 5), "fine\n");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let (mut server, eps) = Proc::serve(&["serve", "echo", "--lines", "--listen", "127.0.0.1:0"]);
    let mut idle = tcp(&eps[0]);
    idle.write_all(b"hi\n").expect("send");
    assert_eq!(read_n(&mut idle, 3), "hi\n");
    server.signal("TERM");
    assert_eq!(
        read_to_end(&mut idle),
        "",
        "idle client closed by the drain"
    );
    server.stderr.wait_for_text("all connections finished");
    assert!(
        std::net::TcpStream::connect(addr(&eps[0])).is_err(),
        "no new connections"
    );
    let (status, _, _) = server.wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn threads_serve_every_client_from_the_servers_own_threads_and_still_drain() {
    let dir = TempDir::new("echo-threads");
    let path = dir.sock("t.sock");
    let (mut server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--lines",
        "--threads",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &format!("unix://{path}"),
    ]);
    let mut clients: Vec<_> = (0..16).map(|_| tcp(&eps[0])).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let line = format!("client {i}\n");
        c.write_all(line.as_bytes()).expect("send");
        assert_eq!(read_n(c, line.len()), line);
    }
    let mut unix = UnixStream::connect(&path).expect("unix");
    unix.set_read_timeout(Some(crate::support::DEADLINE))
        .expect("timeout");
    unix.write_all(b"unix\n").expect("send");
    assert_eq!(read_n(&mut unix, 5), "unix\n");
    // Two threads of its own for each stream endpoint. A thread names itself once it runs, so
    // one not yet scheduled still shows its parent's name: wait for all four names.
    let pid = server.pid();
    let named = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("the server's threads")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim_end().to_owned())
            .filter(|n| n.starts_with("socketeer-"))
            .collect()
    };
    crate::support::wait_until("four named serving threads", || named().len() >= 4);
    assert_eq!(named().len(), 4, "{:?}", named());
    server.signal("TERM");
    for c in &mut clients {
        assert_eq!(read_to_end(c), "", "idle client closed by the drain");
    }
    server.stderr.wait_for_text("all connections finished");
    let (status, _, _) = server.wait();
    assert_eq!(status.code(), Some(0));
    assert!(!std::path::Path::new(&path).exists(), "socket file removed");
}

/// A lines-mode echo server with `--grace GRACE`, and a client it is stuck on: half a line sent.
fn stuck_mid_line(grace: &str) -> (Proc, std::net::TcpStream) {
    let (server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--lines",
        "--grace",
        grace,
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut stuck = tcp(&eps[0]);
    stuck.write_all(b"hi\n").expect("send");
    assert_eq!(read_n(&mut stuck, 3), "hi\n");
    stuck.write_all(b"never finished").expect("send");
    (server, stuck)
}

#[test]
fn grace_is_honoured_and_a_second_signal_exits_at_once() {
    let (mut server, _stuck) = stuck_mid_line("0.3");
    server.signal("TERM");
    server.stderr.wait_for_text("grace period over");
    let (status, _, _) = server.wait();
    assert_eq!(status.code(), Some(0));

    let (mut server, _stuck) = stuck_mid_line("60");
    server.signal("INT");
    server.stderr.wait_for_text("shutting down");
    server.signal("INT");
    let (status, _, err) = server.wait();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("SIGINT again: exiting at once"), "{err}");
}

#[test]
fn bench_measures_datagram_round_trips_over_udp_and_unix_datagrams() {
    let dir = crate::support::TempDir::new("bench-dgram");
    let unixgram = format!("unixgram://{}", dir.sock("echo.dgram"));
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        &unixgram,
    ]);
    for ep in &eps {
        let (status, out, err) = crate::support::run(
            &[
                "bench", ep, "-c", "3", "-s", "200", "-d", "0.5", "--warmup", "0", "--json",
            ],
            b"",
        );
        assert!(status.success(), "{ep}: {err}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let round_trips = report["round_trips"].as_u64().expect("round trips");
        assert!(round_trips > 50, "{report}");
        // Loopback loses nothing, but a test machine under load can stall a reply past the
        // 200 ms after which it is counted lost (its late echo is then skipped, not counted).
        let lost = report["lost_datagrams"].as_u64().expect("lost");
        assert!(lost * 10 <= round_trips, "{report}");
        assert_eq!(report["failed_connections"], 0);
    }
    // A datagram server that echoes something else is told, not counted.
    let (_upper, upper) =
        Proc::serve(&["serve", "echo", "--upper", "--listen", "udp://127.0.0.1:0"]);
    let (status, out, _) = crate::support::run(
        &[
            "bench", &upper[0], "-c", "1", "-s", "10", "-d", "0.2", "--warmup", "0", "--json",
        ],
        b"",
    );
    assert!(!status.success(), "{out}");
}

#[test]
fn bench_measures_round_trips_and_bulk_against_a_real_echo() {
    let (_server, eps) = Proc::serve(&["serve", "echo", "--listen", "127.0.0.1:0"]);
    let ep = &eps[0];
    let (status, out, err) = crate::support::run(
        &[
            "bench", ep, "-c", "4", "-s", "100", "-d", "0.3", "--warmup", "0", "--json",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(report["round_trips"].as_u64() > Some(0), "{report}");
    let (p50, p99, p999) = (
        report["p50_us"].as_f64().expect("p50"),
        report["p99_us"].as_f64().expect("p99"),
        report["p999_us"].as_f64().expect("p99.9"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{report}");
    assert_eq!(report["failed_connections"], 0);
    assert_eq!(report["unanswered_connections"], 0);
    let (status, out, err) = crate::support::run(
        &[
            "bench", ep, "--bulk", "-c", "2", "-s", "65536", "-d", "0.3", "--warmup", "0", "--json",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["mode"], "bulk");
    assert!(
        report["bytes_echoed"].as_u64() > Some(1_000_000),
        "{report}"
    );
    assert_eq!(report["failed_connections"], 0);
}

#[test]
fn bench_spreads_its_connections_over_threads_of_its_own() {
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
    ]);
    for (ep, connections, threads, want_threads) in [(&eps[0], "5", "2", 2), (&eps[1], "3", "4", 3)]
    {
        let (status, out, err) = crate::support::run(
            &[
                "bench",
                ep,
                "-c",
                connections,
                "--threads",
                threads,
                "-d",
                "0.3",
                "--warmup",
                "0",
                "--json",
            ],
            b"",
        );
        assert!(status.success(), "{ep}: {err}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert!(report["round_trips"].as_u64() > Some(10), "{report}");
        assert_eq!(report["client_threads"], want_threads, "{report}");
        assert_eq!(report["failed_connections"], 0, "{report}");
    }
    // Refused connections end the run with an error, on every thread (none waits for the rest).
    let (_shut, shut) = Proc::serve(&[
        "serve",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--allow",
        "10.0.0.0/8",
    ]);
    let (status, _, err) = crate::support::run(
        &[
            "bench",
            &shut[0],
            "-c",
            "6",
            "--threads",
            "3",
            "-d",
            "0.3",
            "--warmup",
            "0",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("socketeer: every connection to"), "{err}");
    // --threads is for round trips; the other modes say so.
    let (status, _, err) =
        crate::support::run(&["bench", &eps[0], "--threads", "2", "--bulk"], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("'--threads <N>' cannot be used with '--bulk'"),
        "{err}"
    );
}

#[test]
fn bench_counts_the_connections_a_full_server_left_in_its_backlog() {
    // Two places; the other two connections wait in the backlog until the first two leave at
    // the end of the run, after the measured window: they are counted, not silently dropped.
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--max-conns",
        "2",
    ]);
    let (status, out, err) = crate::support::run(
        &[
            "bench", &eps[0], "-c", "4", "-d", "0.3", "--warmup", "0.2", "--json",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["unanswered_connections"], 2, "{report}");
    assert!(report["round_trips"].as_u64() > Some(10), "{report}");
    let (status, out, err) = crate::support::run(
        &["bench", &eps[0], "-c", "4", "-d", "0.3", "--warmup", "0.2"],
        b"",
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("unanswered     2 connections"), "{out}");
}
