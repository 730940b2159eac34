//! Servers whose stderr reader has gone (`socketeer serve echo 2>&1 | head -1`): they keep
//! serving (their logs are lost, not the service) and SIGTERM still stops them, with status 0.
//! Before, the first log line after the reader left panicked: in the main task it ended the
//! server, in the signal task it left one that no SIGTERM could stop.

use std::io::{BufRead, BufReader, Write};

use crate::support::{DEADLINE, Proc, TempDir, addr, closed_pipe, listening, run, tcp};

/// Starts `socketeer args...` (verbose, so every connection is a log line) with its stderr
/// already closed at the reading end, and returns it with the endpoints it printed.
fn serve_without_stderr(args: &[&str]) -> (Proc, Vec<String>) {
    let mut args = args.to_vec();
    args.push("-vv");
    let mut proc = Proc::spawn_with_stderr(&args, closed_pipe());
    let expected = args.iter().filter(|a| **a == "--listen").count().max(1);
    proc.stdout
        .wait_for("listening lines", |seen| listening(seen).len() >= expected);
    let endpoints = listening(&proc.stdout.seen);
    (proc, endpoints)
}

/// A signal still stops it, as it would with its logs read.
fn stops_on_sigterm(proc: Proc) {
    proc.signal("TERM");
    let (status, _, _) = proc.wait();
    assert_eq!(status.code(), Some(0), "{status}");
}

fn line_exchange(ep: &str, send: &str) -> String {
    let mut stream = tcp(ep);
    stream.write_all(send.as_bytes()).expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("answer");
    line
}

#[test]
fn echo_keeps_serving_and_stops_on_sigterm() {
    let (proc, eps) = serve_without_stderr(&["serve", "echo", "--listen", "127.0.0.1:0"]);
    for _ in 0..3 {
        assert_eq!(line_exchange(&eps[0], "hello\n"), "hello\n");
    }
    stops_on_sigterm(proc);
}

#[test]
fn chat_keeps_serving_and_stops_on_sigterm() {
    let (proc, eps) = serve_without_stderr(&["serve", "chat", "--listen", "127.0.0.1:0"]);
    for _ in 0..3 {
        assert!(line_exchange(&eps[0], "/who\n").starts_with("***"));
    }
    stops_on_sigterm(proc);
}

#[test]
fn exec_keeps_serving_and_stops_on_sigterm() {
    let (proc, eps) = serve_without_stderr(&[
        "serve",
        "exec",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--allow",
        "echo ...",
    ]);
    for _ in 0..3 {
        let (status, out, err) = run(&["exec", &eps[0], "-n", "--", "echo", "hi"], b"");
        assert!(status.success(), "{err}");
        assert_eq!(out, "hi\n");
    }
    stops_on_sigterm(proc);
}

#[test]
fn files_keeps_serving_and_stops_on_sigterm() {
    let dir = TempDir::new("stderr-gone-files");
    std::fs::write(dir.0.join("a.txt"), "a").expect("file");
    let root = dir.0.display().to_string();
    let (proc, eps) =
        serve_without_stderr(&["serve", "files", "--listen", "127.0.0.1:0", "--root", &root]);
    for _ in 0..3 {
        let (status, out, err) = run(&["ls", &eps[0]], b"");
        assert!(status.success(), "{err}");
        assert!(out.contains("a.txt"), "{out}");
    }
    stops_on_sigterm(proc);
}

#[test]
fn hub_keeps_serving_and_stops_on_sigterm() {
    let dir = TempDir::new("stderr-gone-hub");
    let db = dir.0.join("hub.db").display().to_string();
    let (proc, eps) = serve_without_stderr(&[
        "hub",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--no-auth",
        "--no-influx",
        "--no-http",
    ]);
    for k in 0..3 {
        let line = format!("{{\"stream\":\"s\",\"values\":{{\"v\":{k}}}}}\n");
        let (status, _, err) = run(&["publish", &addr(&eps[0])], line.as_bytes());
        assert!(status.success(), "{err}");
    }
    stops_on_sigterm(proc);
}

#[test]
fn listen_keeps_serving_and_stops_on_sigterm() {
    // listen prints its endpoint on stderr, which is gone: it listens on a known path.
    let dir = TempDir::new("stderr-gone-listen");
    let path = dir.sock("l.sock");
    let ep = format!("unix://{path}");
    let mut proc = Proc::spawn_with_stderr(&["listen", "--keep-open", "-vv", &ep], closed_pipe());
    crate::support::wait_until("the socket file", || std::path::Path::new(&path).exists());
    for k in 0..3 {
        let mut client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        client.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let text = format!("line {k}\n");
        client.write_all(text.as_bytes()).expect("send");
        proc.stdout.wait_for_text(&text);
    }
    stops_on_sigterm(proc);
    assert!(
        !std::path::Path::new(&path).exists(),
        "socket file left behind"
    );
}
