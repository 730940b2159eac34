//! Bad command lines: `socketeer: <what>: <why>`, exit status 2; runtime failures exit 1.

use crate::support::run;

fn fails_with(args: &[&str], code: i32, message: &str) {
    let (status, _out, err) = run(args, b"");
    assert_eq!(status.code(), Some(code), "{args:?}: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("socketeer: "), "{args:?}: {err}");
    assert!(err.contains(message), "{args:?}: want {message:?} in {err}");
}

#[test]
fn bad_endpoints_and_flags_exit_2_with_one_clear_line() {
    fails_with(
        &["serve", "echo", "--listen", "tcp//x"],
        2,
        r#"socketeer: bad endpoint "tcp//x": expected tcp://HOST:PORT"#,
    );
    fails_with(
        &["connect", "udp://h:70000"],
        2,
        "must be a number from 0 to 65535",
    );
    fails_with(&["listen", "sctp://x:1"], 2, "unknown scheme");
    // The fleet's flags: a store and a bus, said plainly, never showing a password.
    fails_with(
        &["hub", "--no-auth", "--bus", "nats://127.0.0.1:1"],
        2,
        "socketeer: hub: --bus joins nodes that share one store: give --db postgres://",
    );
    fails_with(
        &[
            "hub",
            "--no-auth",
            "--db",
            "postgres://u:pw@h/x",
            "--bus",
            "http://u:s3cret@x",
        ],
        2,
        "socketeer: hub: --bus: http://u:***@x: a NATS address starts with nats://",
    );
    fails_with(
        &["hub", "--no-auth", "--db", "postgres://u:s3cret@[bad/x"],
        2,
        "socketeer: hub: --db: not a PostgreSQL URL",
    );
    fails_with(
        &["publish", "--hub", "udp://127.0.0.1:9"],
        2,
        "publish needs a stream endpoint",
    );
    fails_with(&["hub", "migrate", "--from", "x.db"], 2, "--to");
    for args in [
        &[
            "hub",
            "--no-auth",
            "--db",
            "postgres://u:pw@h/x",
            "--bus",
            "http://u:s3cret@x",
        ][..],
        &["hub", "--no-auth", "--db", "postgres://u:s3cret@[bad/x"],
    ] {
        let (_, _, err) = run(args, b"");
        assert!(!err.contains("s3cret"), "{args:?}: {err}");
    }
    fails_with(&["serve", "echo", "--max-conns", "0"], 2, "--max-conns");
    fails_with(&["serve", "echo", "--threads", "0"], 2, "--threads");
    fails_with(&["serve", "chat", "--threads", "many"], 2, "--threads");
    fails_with(
        &["serve", "echo", "--idle-timeout", "soon"],
        2,
        "is not a number of seconds",
    );
    fails_with(&["serve", "echo", "--prefix", r"\q"], 2, "unknown escape");
    fails_with(
        &["serve", "echo", "--upper", "--reply", "x"],
        2,
        "cannot be used with",
    );
    fails_with(
        &["serve", "echo", "--no-such-flag"],
        2,
        "unexpected argument",
    );
    fails_with(
        &["bench", "udp://127.0.0.1:9", "--bulk"],
        2,
        "--fanout, --bulk and --upload need a stream endpoint",
    );
    fails_with(
        &["bench", "192.0.2.1:9"],
        2,
        "bench loads loopback and Unix servers only; add --allow-remote",
    );
}

#[test]
fn runtime_failures_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    fails_with(
        &["serve", "echo", "--listen", &format!("127.0.0.1:{port}")],
        1,
        "cannot bind tcp://127.0.0.1:",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    fails_with(
        &["connect", &format!("127.0.0.1:{port}")],
        1,
        "Connection refused",
    );
}

#[test]
fn help_lists_the_exit_codes() {
    let (status, out, _) = run(&["--help"], b"");
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("Exit status:") && out.contains("130"), "{out}");
}

/// `socketeer --help | head -1` and the like: the reader closes the pipe before the program
/// writes; the program must end as it would have (no panic, same exit status).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    for args in [&["bench", "--help"][..], &["keygen"], &["--version"]] {
        let out = std::process::Command::new(crate::support::bin())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(crate::support::closed_pipe())
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run socketeer");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
