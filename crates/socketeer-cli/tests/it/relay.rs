//! `socketeer relay`: endpoints of every kind joined, half-closes passed through, TLS and keys
//! on either side, a target that is down, many connections at once, and a drain — with nc,
//! socat, openssl, ncat and the tutorials' Python client as peers where installed.

use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::process::Command;

use crate::security::{assert_python_was_answered, make_certs, make_key, python_tutorial_client};
use crate::support::{DEADLINE, Proc, TempDir, addr, have, read_n, read_to_end, run, tcp};

/// Starts `socketeer relay LISTEN TARGET extra...` and returns it with the endpoint it listens on.
fn relay(listen: &str, target: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["relay", listen, target];
    args.extend_from_slice(extra);
    let (proc, eps) = Proc::serve(&args);
    (proc, eps[0].clone())
}

fn echo(listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", "echo", "--listen", listen];
    args.extend_from_slice(extra);
    let (proc, eps) = Proc::serve(&args);
    (proc, eps[0].clone())
}

fn port(ep: &str) -> &str {
    ep.rsplit(':').next().expect("port")
}

/// Runs a program with `input` on stdin and returns its stdout.
fn pipe_through(program: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(program);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect(program);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SIGTERM, then the relay's exit status, stdout (the counters) and stderr (the log).
fn stop(relay: Proc) -> (String, String) {
    relay.signal("TERM");
    let (status, out, err) = relay.wait();
    assert!(status.success(), "{status}: {err}");
    (out, err)
}

#[test]
fn tcp_to_tcp_to_unix_and_unix_to_tcp_with_nc_and_socat() {
    let dir = TempDir::new("relay-kinds");
    let (_tcp_echo, tcp_echo) = echo("127.0.0.1:0", &["--upper"]);
    let unix_echo = format!("unix://{}", dir.sock("echo.sock"));
    let (_unix_echo, _) = echo(&unix_echo, &["--upper"]);

    // TCP -> TCP, a plain client.
    let (to_tcp, front) = relay("127.0.0.1:0", &tcp_echo, &[]);
    let mut client = tcp(&front);
    client.write_all(b"hello relay\n").expect("send");
    assert_eq!(read_n(&mut client, 12), "HELLO RELAY\n");
    drop(client);
    if have(
        "nc",
        "tcp_to_tcp_to_unix_and_unix_to_tcp_with_nc_and_socat (nc part)",
    ) {
        let out = pipe_through("nc", &["-N", "127.0.0.1", port(&front)], b"from nc\n");
        assert_eq!(out, "FROM NC\n");
    }
    // TCP -> Unix.
    let (to_unix, unix_front) = relay("127.0.0.1:0", &unix_echo, &[]);
    let mut client = tcp(&unix_front);
    client.write_all(b"to unix\n").expect("send");
    assert_eq!(read_n(&mut client, 8), "TO UNIX\n");
    drop(client);
    // Unix -> TCP, socat as the client.
    let front_sock = dir.sock("front.sock");
    let (from_unix, _) = relay(&format!("unix://{front_sock}"), &tcp_echo, &[]);
    if have(
        "socat",
        "tcp_to_tcp_to_unix_and_unix_to_tcp_with_nc_and_socat (socat part)",
    ) {
        let out = pipe_through(
            "socat",
            &["-t", "5", "-", &format!("UNIX-CONNECT:{front_sock}")],
            b"from socat\n",
        );
        assert_eq!(out, "FROM SOCAT\n");
    } else {
        let mut client = std::os::unix::net::UnixStream::connect(&front_sock).expect("unix");
        client.write_all(b"from unix\n").expect("send");
        client.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_to_end(&mut client), "FROM UNIX\n");
    }
    // Each connection's line: who, how much each way, why it ended.
    let (counters, log) = stop(to_tcp);
    assert!(
        log.contains("connection ended") && log.contains("to_target=12 to_client=12"),
        "{log}"
    );
    assert!(log.contains("end=\"closed\""), "{log}");
    assert!(
        counters.contains("socketeer_relay_bytes_total{direction=\"to_target\"}"),
        "{counters}"
    );
    let (_, log) = stop(to_unix);
    assert!(log.contains(&format!("target={unix_echo}")), "{log}");
    let (_, log) = stop(from_unix);
    assert!(log.contains("connection ended"), "{log}");
    assert!(
        !std::path::Path::new(&front_sock).exists(),
        "the relay's socket file is removed"
    );
}

#[test]
fn half_close_passes_through_both_ways() {
    // The target is a plain listener in this test, so each side's end of input can be seen.
    let target = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target_ep = format!("tcp://{}", target.local_addr().expect("addr"));
    let (relay, front) = relay("127.0.0.1:0", &target_ep, &[]);

    // The client finishes first: the target reads to its end, then still answers.
    let mut client = tcp(&front);
    let (mut server, _) = target.accept().expect("accept");
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    client.write_all(b"request").expect("send");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(
        read_to_end(&mut server),
        "request",
        "EOF reached the target"
    );
    server.write_all(b"answer after EOF").expect("answer");
    server.shutdown(Shutdown::Write).expect("close");
    assert_eq!(read_to_end(&mut client), "answer after EOF");

    // The target finishes first: the client sees its end and can still send.
    let mut client = tcp(&front);
    let (mut server, _) = target.accept().expect("accept");
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    server.write_all(b"banner").expect("banner");
    server.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut client), "banner", "EOF reached the client");
    client
        .write_all(b"late words")
        .expect("still open this way");
    client.shutdown(Shutdown::Write).expect("close");
    assert_eq!(read_to_end(&mut server), "late words");
    let (_, log) = stop(relay);
    assert_eq!(log.matches("end=\"closed\"").count(), 2, "{log}");
}

#[test]
fn udp_to_udp_keeps_a_session_per_client_until_idle() {
    let (_echo, target) = echo("udp://127.0.0.1:0", &["--upper"]);
    let (relay, front) = relay("udp://127.0.0.1:0", &target, &["--idle-timeout", "0.5"]);
    // Two clients: each gets its own answers.
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("a");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("b");
    for s in [&a, &b] {
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        s.connect(addr(&front)).expect("connect");
    }
    let mut buf = [0u8; 100];
    for round in 0..3 {
        a.send(format!("a{round}").as_bytes()).expect("a send");
        b.send(format!("b{round}").as_bytes()).expect("b send");
        let n = a.recv(&mut buf).expect("a answer");
        assert_eq!(&buf[..n], format!("A{round}").as_bytes());
        let n = b.recv(&mut buf).expect("b answer");
        assert_eq!(&buf[..n], format!("B{round}").as_bytes());
    }
    let mut sessions = 2;
    if have(
        "socat",
        "udp_to_udp_keeps_a_session_per_client_until_idle (socat part)",
    ) {
        sessions += 1;
        let out = pipe_through(
            "socat",
            &["-t", "5", "-T", "1", "-", &format!("UDP:{}", addr(&front))],
            b"from socat",
        );
        assert_eq!(out, "FROM SOCAT");
    }
    // Quiet for the idle timeout: each session ends with its line.
    let mut relay = relay;
    relay.stderr.wait_for("every session idle", |seen| {
        String::from_utf8_lossy(seen)
            .matches("end=\"idle\"")
            .count()
            >= sessions
    });
    let (counters, log) = stop(relay);
    assert!(log.contains("to_target=6 to_client=6"), "{log}");
    assert!(
        counters.contains("socketeer_relay_ended_total{reason=\"idle\"}"),
        "{counters}"
    );
}

#[test]
fn tls_in_front_of_a_plain_echo_for_openssl_and_ncat_and_to_a_tls_target() {
    let dir = TempDir::new("relay-tls");
    let (certs, fingerprint) = make_certs(&dir);
    let (_echo, plain) = echo("127.0.0.1:0", &["--upper"]);
    let cert = format!("{certs}/server.pem");
    let key = format!("{certs}/server-key.pem");
    let ca = format!("{certs}/ca.pem");
    let (front, tls_front) = relay(
        "127.0.0.1:0",
        &plain,
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    // socketeer's own TLS client.
    let (status, out, err) = run(&["connect", "--ca", &ca, &tls_front], b"over tls\n");
    assert!(status.success(), "{err}");
    assert_eq!(out, "OVER TLS\n");
    if have(
        "openssl",
        "tls_in_front_of_a_plain_echo_for_openssl_and_ncat (openssl part)",
    ) {
        // s_client -quiet waits for the server to close; it is stopped once it has the answer.
        let mut openssl = Proc::spawn_program(
            "openssl",
            &[
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-CAfile",
                &ca,
                "-connect",
                &addr(&tls_front),
            ],
        );
        openssl.write_stdin(b"from openssl\n");
        openssl.stdout.wait_for_text("FROM OPENSSL\n");
    }
    if have(
        "ncat",
        "tls_in_front_of_a_plain_echo_for_openssl_and_ncat (ncat part)",
    ) {
        // ncat ends a TLS session at its input's end, so its input stays open until the answer.
        let mut ncat = Proc::spawn_program(
            "ncat",
            &[
                "--ssl",
                "--ssl-verify",
                "--ssl-trustfile",
                &ca,
                "localhost",
                port(&tls_front),
            ],
        );
        ncat.write_stdin(b"from ncat\n");
        ncat.stdout.wait_for_text("FROM NCAT\n");
    }
    // The other way round: a local plain socket carried to a TLS server, checked by CA or pin.
    let sock = dir.sock("plain.sock");
    let (to_tls, _) = relay(&format!("unix://{sock}"), &tls_front, &["--target-ca", &ca]);
    let mut client = std::os::unix::net::UnixStream::connect(&sock).expect("unix");
    client.write_all(b"plain to tls\n").expect("send");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut client), "PLAIN TO TLS\n");
    let (pinned, pinned_front) = relay("127.0.0.1:0", &tls_front, &["--target-pin", &fingerprint]);
    let mut client = tcp(&pinned_front);
    client.write_all(b"pinned\n").expect("send");
    assert_eq!(read_n(&mut client, 7), "PINNED\n");
    drop(client);
    // A target whose certificate is not the one pinned: the client is closed, the relay says why.
    let wrong_pin = "00".repeat(32);
    let (wrong, wrong_front) = relay("127.0.0.1:0", &tls_front, &["--target-pin", &wrong_pin]);
    let mut client = tcp(&wrong_front);
    client.write_all(b"hello\n").expect("send");
    assert_eq!(read_to_end(&mut client), "");
    let (counters, log) = stop(wrong);
    assert!(log.contains("cannot reach the target"), "{log}");
    assert!(
        counters.contains("socketeer_relay_target_failures_total{reason=\"tls\"} 1"),
        "{counters}"
    );
    stop(pinned);
    stop(to_tls);
    stop(front);
}

#[test]
fn keys_in_front_of_a_plain_service_and_to_a_keyed_target() {
    let dir = TempDir::new("relay-keys");
    let key = make_key(&dir, "shared.key", None);
    let other = make_key(&dir, "other.key", None);
    let (_echo, plain) = echo("127.0.0.1:0", &["--upper"]);
    let (front, keyed) = relay("127.0.0.1:0", &plain, &["--key-file", &key]);
    let (status, out, err) = run(&["connect", "--key-file", &key, &keyed], b"with the key\n");
    assert!(status.success(), "{err}");
    assert_eq!(out, "WITH THE KEY\n");
    if have("python3", "keys_in_front_of_a_plain_service (python part)") {
        // The tutorials' HMAC client: its first line after the answer reaches the service.
        let out = python_tutorial_client(port(&keyed), &key, None);
        assert_python_was_answered(&out);
    }
    // A wrong key goes last: its refusal locks this address out for a while.
    let (status, out, _) = run(&["connect", "--key-file", &other, &keyed], b"wrong key\n");
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "", "a wrong key never reaches the service");
    // The target side: a plain client through the relay to a server that wants a key.
    let (_keyed_echo, keyed_echo) = echo("127.0.0.1:0", &["--upper", "--key-file", &key]);
    let (to_keyed, plain_front) = relay(
        "127.0.0.1:0",
        &keyed_echo,
        &["--target-key-file", &key, "--target-device", "relay-1"],
    );
    let mut client = tcp(&plain_front);
    client.write_all(b"relay holds the key\n").expect("send");
    assert_eq!(read_n(&mut client, 20), "RELAY HOLDS THE KEY\n");
    drop(client);
    stop(to_keyed);
    stop(front);
}

#[test]
fn a_target_that_is_down_closes_that_client_only_and_is_counted() {
    // A port with nothing listening on it: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = format!("tcp://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let (relay, front) = relay(
        "127.0.0.1:0",
        &target,
        &["--connect-retries", "1", "--retry-delay", "0.05"],
    );
    for _ in 0..3 {
        let mut client = tcp(&front);
        let _ = client.write_all(b"anyone?\n");
        assert_eq!(read_to_end(&mut client), "", "closed, nothing relayed");
    }
    // The relay is still there, and relays once the target is up.
    let listener = TcpListener::bind(addr(&target));
    if let Ok(listener) = listener {
        let mut client = tcp(&front);
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"now").expect("send");
        client.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_to_end(&mut server), "now");
        drop(server);
        assert_eq!(read_to_end(&mut client), "");
    }
    let (counters, log) = stop(relay);
    assert_eq!(log.matches("cannot reach the target").count(), 3, "{log}");
    assert!(log.contains("refused"), "{log}");
    assert!(
        counters.contains("socketeer_relay_target_failures_total{reason=\"refused\"} 3"),
        "{counters}"
    );
    assert!(
        counters.contains("socketeer_relay_ended_total{reason=\"target_unreachable\"} 3"),
        "{counters}"
    );
}

#[test]
fn a_thousand_connections_at_once() {
    let (_echo, target) = echo("127.0.0.1:0", &["--max-conns", "2000"]);
    let (relay, front) = relay("127.0.0.1:0", &target, &["--max-conns", "2000"]);
    let (status, out, err) = run(
        &[
            "bench", &front, "-c", "1000", "-s", "64", "-d", "1", "--warmup", "0.5", "--json",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["failed_connections"], 0, "{report}");
    assert!(report["round_trips"].as_u64() > Some(1000), "{report}");
    let (counters, _) = stop(relay);
    assert!(
        counters.contains("socketeer_relay_connections_total 1000\n"),
        "{counters}"
    );
    assert!(
        counters.contains("socketeer_relay_ended_total{reason=\"closed\"} 1000\n"),
        "{counters}"
    );
}

#[test]
fn sigterm_drains_live_connections_and_refuses_new_ones() {
    let (_echo, target) = echo("127.0.0.1:0", &[]);
    let (mut relay, front) = relay("127.0.0.1:0", &target, &["--grace", "30"]);
    let mut live = tcp(&front);
    live.write_all(b"before\n").expect("send");
    assert_eq!(read_n(&mut live, 7), "before\n");
    relay.signal("TERM");
    relay.stderr.wait_for_text("draining");
    // New clients are turned away; the live one goes on.
    let refused = std::net::TcpStream::connect(addr(&front));
    assert!(refused.is_err(), "accepted after SIGTERM");
    live.write_all(b"during the drain\n").expect("send");
    assert_eq!(read_n(&mut live, 17), "during the drain\n");
    drop(live);
    let (status, counters, log) = relay.wait();
    assert!(status.success(), "{log}");
    assert!(log.contains("end=\"closed\""), "{log}");
    assert!(
        counters.contains("socketeer_relay_connections_active 0\n"),
        "{counters}"
    );
}

#[test]
fn connect_once_serves_one_client_then_exits() {
    let (_echo, target) = echo("127.0.0.1:0", &[]);
    let (relay, front) = relay("127.0.0.1:0", &target, &["--connect-once", "--json"]);
    let mut client = tcp(&front);
    client.write_all(b"only me\n").expect("send");
    assert_eq!(read_n(&mut client, 8), "only me\n");
    drop(client);
    let (status, counters, log) = relay.wait();
    assert!(status.success(), "{log}");
    // --json: the connection's line and the counters are JSON.
    let ended = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "connection ended")
        .unwrap_or_else(|| panic!("no JSON connection line: {log}"));
    assert_eq!(ended["fields"]["to_target"], 8, "{ended}");
    assert_eq!(ended["fields"]["end"], "closed", "{ended}");
    let last = counters.lines().last().unwrap_or_default();
    let counters: serde_json::Value = serde_json::from_str(last).expect("JSON counters");
    assert_eq!(counters["counters"]["connections_total"], 1, "{counters}");
}

#[test]
fn bad_relay_command_lines_say_what_and_why() {
    for (args, why) in [
        (vec!["relay", "127.0.0.1:0", "tcp//nope"], "bad endpoint"),
        (
            vec!["relay", "127.0.0.1:0", "127.0.0.1:1", "--target-tls"],
            "--target-tls needs --target-ca",
        ),
        (
            vec![
                "relay",
                "127.0.0.1:0",
                "udp://127.0.0.1:1",
                "--target-insecure",
            ],
            "need a stream target",
        ),
        (
            vec!["relay", "127.0.0.1:0", "127.0.0.1:1", "--target-pin", "abc"],
            "--target-pin",
        ),
        (vec!["relay", "127.0.0.1:0"], "TARGET"),
    ] {
        let (status, _, err) = run(&args, b"");
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(err.starts_with("socketeer: "), "{args:?}: {err}");
    }
}

#[test]
fn counters_on_sigusr1() {
    let (_echo, target) = echo("127.0.0.1:0", &[]);
    let (mut relay, front) = relay("127.0.0.1:0", &target, &[]);
    let mut client = tcp(&front);
    client.write_all(b"count me\n").expect("send");
    assert_eq!(read_n(&mut client, 9), "count me\n");
    // The relay counts bytes once its write has returned, which can be after the client has
    // read them: ask again until a dump shows them (each dump waited for, to its last line).
    let last_line = "socketeer_relay_datagrams_dropped_total ";
    let until = std::time::Instant::now() + DEADLINE;
    for dumps in 1.. {
        relay.signal("USR1");
        let text = relay.stdout.wait_for(last_line, |seen| {
            String::from_utf8_lossy(seen).matches(last_line).count() >= dumps
        });
        let dump = &text[text
            .rfind("# HELP socketeer_relay_connections_total")
            .expect("dump")..];
        assert!(
            dump.contains("socketeer_relay_connections_active 1\n"),
            "{dump}"
        );
        if dump.contains("socketeer_relay_bytes_total{direction=\"to_target\"} 9\n")
            && dump.contains("socketeer_relay_bytes_total{direction=\"to_client\"} 9\n")
        {
            break;
        }
        assert!(std::time::Instant::now() < until, "never counted: {dump}");
    }
    drop(client);
    stop(relay);
}

#[test]
fn mixed_kinds_streams_to_datagrams_and_datagrams_to_streams() {
    let dir = TempDir::new("relay-mixed");
    let (_udp_echo, udp_echo) = echo("udp://127.0.0.1:0", &["--upper"]);
    let (_tcp_echo, tcp_echo) = echo("127.0.0.1:0", &["--upper"]);
    // A TCP client to a UDP service: each write a datagram, each answer written back.
    // (After the client's end of input only the idle timeout ends it: answers may still come.)
    let (to_udp, front) = relay("127.0.0.1:0", &udp_echo, &["--idle-timeout", "1"]);
    let mut client = tcp(&front);
    client.write_all(b"datagram one").expect("send");
    assert_eq!(read_n(&mut client, 12), "DATAGRAM ONE");
    drop(client);
    // Unix datagram clients to a TCP service: each client its own connection.
    let front_sock = dir.sock("front.dgram");
    let (mut from_unixgram, _) = relay(
        &format!("unixgram://{front_sock}"),
        &tcp_echo,
        &["--idle-timeout", "5", "-v"],
    );
    let me = dir.sock("me.dgram");
    let socket = std::os::unix::net::UnixDatagram::bind(&me).expect("bind");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    socket.send_to(b"over unixgram", &front_sock).expect("send");
    let mut buf = [0u8; 100];
    let n = socket.recv(&mut buf).expect("answer");
    assert_eq!(&buf[..n], b"OVER UNIXGRAM");
    // A client whose socket has no name cannot be answered: dropped and counted.
    let unnamed = std::os::unix::net::UnixDatagram::unbound().expect("unbound");
    unnamed.send_to(b"who am I", &front_sock).expect("send");
    from_unixgram
        .stderr
        .wait_for_text("datagram dropped: its sender's socket is unnamed");
    let (counters, _) = stop(from_unixgram);
    assert!(
        counters.contains("socketeer_relay_datagrams_dropped_total 1\n"),
        "{counters}"
    );
    let (_, log) = stop(to_udp);
    assert!(log.contains("to_target=12 to_client=12"), "{log}");
}

#[test]
fn bulk_both_ways_arrives_whole_and_in_order() {
    // Enough to fill the splice pipes many times over (they grow once filled), both directions
    // at once: every byte echoed back through the relay in order.
    let (_echo, target) = echo("127.0.0.1:0", &[]);
    let (relay, front) = relay("127.0.0.1:0", &target, &[]);
    let sent: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut client = tcp(&front);
    let mut writer = client.try_clone().expect("clone");
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || {
        writer.write_all(&to_send).expect("send");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut back = Vec::with_capacity(sent.len());
    std::io::Read::read_to_end(&mut client, &mut back).expect("read the echo");
    writing.join().expect("writer");
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the bytes came back changed or out of order");
    drop(client);
    let (_, log) = stop(relay);
    let whole = format!("to_target={} to_client={}", sent.len(), sent.len());
    assert!(log.contains(&whole), "{log}");
}
