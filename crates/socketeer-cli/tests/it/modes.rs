//! Every echo mode on every transport it applies to: the full matrix, table-driven.
//! Stream transports: TCP and Unix stream. Datagram transports: UDP and Unix datagram.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};

use crate::support::{DEADLINE, Proc, TempDir, addr, read_to_end, udp_exchange};

/// (extra flags, what the client sends, what it must receive before the server closes or
/// the expected length is reached, whether the server closes after answering)
type Case = (&'static [&'static str], &'static [u8], &'static str, bool);

const STREAM_CASES: &[Case] = &[
    (&[], b"chunk", "chunk", false),
    (&["--lines"], b"a line\n", "a line\n", false),
    (&["--upper"], "up 欢迎".as_bytes(), "UP 欢迎", false),
    (&["--prefix", "OK..."], b"pre", "OK...pre", false),
    (
        &["--reply", "I am server."],
        b"anything",
        "I am server.",
        false,
    ),
    (&["--welcome", r"hi\n"], b"x", "hi\nx", false),
    (&["--one-shot"], b"once", "once", true),
    (
        &["--lines", "--upper", "--prefix", "> ", "--one-shot"],
        b"ab\ncd\n",
        "> AB\n",
        true,
    ),
];

const DATAGRAM_CASES: &[(&[&str], &[u8], &str)] = &[
    (&[], b"chunk", "chunk"),
    (&["--upper"], "up 欢迎".as_bytes(), "UP 欢迎"),
    (&["--prefix", "OK..."], b"pre", "OK...pre"),
    (
        &["--reply", "I am server."],
        b"longer than twelve",
        "I am server.",
    ),
];

fn serve(endpoint: &str, flags: &[&str]) -> Proc {
    let mut args = vec!["serve", "echo", "--listen", endpoint];
    args.extend_from_slice(flags);
    Proc::serve(&args).0
}

fn check_stream(mut stream: impl Read + Write, case: &Case, label: &str) {
    let (flags, send, expect, closes) = case;
    stream.write_all(send).expect("send");
    let got = if *closes {
        read_to_end(&mut stream)
    } else {
        let mut buf = vec![0u8; expect.len()];
        stream.read_exact(&mut buf).expect("reply");
        String::from_utf8_lossy(&buf).into_owned()
    };
    assert_eq!(got, *expect, "{label} {flags:?}");
}

#[test]
fn every_mode_on_tcp_and_unix_streams() {
    let dir = TempDir::new("modes");
    for (i, case) in STREAM_CASES.iter().enumerate() {
        let server = serve("127.0.0.1:0", case.0);
        let ep = crate::support::listening(&server.stdout.seen).remove(0);
        let tcp = std::net::TcpStream::connect(addr(&ep)).expect("tcp");
        tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
        check_stream(tcp, case, "tcp");

        let path = dir.sock(&format!("s{i}.sock"));
        let _server = serve(&format!("unix://{path}"), case.0);
        let unix = UnixStream::connect(&path).expect("unix");
        unix.set_read_timeout(Some(DEADLINE)).expect("timeout");
        check_stream(unix, case, "unix");
    }
}

#[test]
fn every_mode_on_udp_and_unix_datagrams() {
    let dir = TempDir::new("dmodes");
    let mut buf = [0u8; 256];
    for (i, (flags, send, expect)) in DATAGRAM_CASES.iter().enumerate() {
        let server = serve("udp://127.0.0.1:0", flags);
        let ep = crate::support::listening(&server.stdout.seen).remove(0);
        assert_eq!(udp_exchange(&ep, send), *expect, "udp {flags:?}");

        let path = dir.sock(&format!("d{i}.sock"));
        let _server = serve(&format!("unixgram://{path}"), flags);
        let client = UnixDatagram::bind(dir.sock(&format!("c{i}.sock"))).expect("bind");
        client.set_read_timeout(Some(DEADLINE)).expect("timeout");
        client.send_to(send, &path).expect("send");
        let n = client.recv(&mut buf).expect("unixgram reply");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            *expect,
            "unixgram {flags:?}"
        );
    }
}

#[test]
fn json_logs_and_quiet() {
    let (server, _) = Proc::serve(&[
        "--log-format",
        "json",
        "serve",
        "echo",
        "--listen",
        "127.0.0.1:0",
    ]);
    server.signal("TERM");
    let (status, _, err) = server.wait();
    assert_eq!(status.code(), Some(0));
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }

    let (server, _) = Proc::serve(&["-q", "serve", "echo", "--listen", "127.0.0.1:0"]);
    server.signal("TERM");
    let (status, _, err) = server.wait();
    assert_eq!(status.code(), Some(0));
    assert_eq!(err, "", "-q keeps info lines off stderr");
}
