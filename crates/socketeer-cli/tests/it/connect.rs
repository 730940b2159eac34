//! `socketeer connect`: half-close after stdin's end, a peer that closes first, --crlf,
//! --send-only, --recv-only, --quit-after, --hex, UDP and Unix.

use std::io::{Read, Write};
use std::net::TcpListener;

use crate::support::{Proc, TempDir, assert_terminal_restored, at_terminal, bin, read_to_end, run};

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (l, addr)
}

#[test]
fn after_stdin_ends_it_half_closes_and_still_prints_the_reply() {
    let (l, addr) = listener();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let request = read_to_end(&mut s); // only ends because the client half-closed
        s.write_all(format!("got {} bytes", request.len()).as_bytes())
            .expect("reply");
    });
    let (status, out, err) = run(&["connect", &addr], b"twelve bytes");
    peer.join().expect("peer");
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "got 12 bytes");
}

#[test]
fn a_peer_that_closes_first_ends_the_client_while_stdin_is_still_open() {
    let (l, addr) = listener();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"bye\n").expect("write");
    });
    let mut client = Proc::spawn(&["connect", &addr]);
    peer.join().expect("peer");
    // stdin stays open: the client must end because the peer closed.
    let out = client.stdout.until_closed();
    assert_eq!(out, "bye\n");
    let (status, _, _) = client.wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn crlf_turns_newlines_into_crlf() {
    let (l, addr) = listener();
    let peer = std::thread::spawn(move || read_to_end(&mut l.accept().expect("accept").0));
    let (status, _, _) = run(&["connect", "--crlf", &addr], b"a\nb\r\nc\n");
    assert_eq!(status.code(), Some(0));
    assert_eq!(peer.join().expect("peer"), "a\r\nb\r\nc\r\n");
}

#[test]
fn send_only_and_recv_only() {
    let (l, addr) = listener();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"ignored by the client").expect("write");
        read_to_end(&mut s)
    });
    let (status, out, _) = run(&["connect", "--send-only", &addr], b"payload");
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "");
    assert_eq!(peer.join().expect("peer"), "payload");

    let (l, addr) = listener();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"news").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("fin");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("read");
        rest
    });
    let mut client = Proc::spawn(&["connect", "--recv-only", &addr]);
    client.write_stdin(b"never sent\n");
    let (status, out, _) = client.wait();
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "news");
    assert!(
        peer.join().expect("peer").is_empty(),
        "recv-only sent nothing"
    );
}

#[test]
fn quit_after_gives_up_on_a_peer_that_never_closes() {
    let (l, addr) = listener();
    let _peer = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        // Hold the connection open until the test process ends.
        std::thread::park();
        drop(s);
    });
    let (status, _, err) = run(&["connect", "--quit-after", "0.2", &addr], b"hello");
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn hex_dumps_what_it_receives() {
    let (l, addr) = listener();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"AB\x00\xff").expect("write");
    });
    let (status, out, _) = run(&["connect", "--hex", "--recv-only", &addr], b"");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        out,
        "00000000  41 42 00 ff                                       |AB..|\n"
    );
}

#[test]
fn udp_and_unix_clients_talk_to_the_echo_service() {
    let dir = TempDir::new("connect");
    let path = dir.sock("e.sock");
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--upper",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        &format!("unix://{path}"),
    ]);
    // A datagram client prints replies for a second after stdin ends, then exits.
    let (status, out, err) = run(&["connect", &eps[0]], b"over udp");
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "OVER UDP");
    let (status, out, _) = run(&["connect", &eps[1]], b"over unix\n");
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "OVER UNIX\n");
}

#[test]
fn udp_to_a_closed_port_reports_the_refusal() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let (status, _, err) = run(&["connect", &format!("udp://{addr}")], b"anyone?");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
}

/// `socketeer connect HOST:PORT | head -1`: once stdout's reader has gone, the session ends
/// quietly with status 0 (as `nc` ends), not with "Broken pipe".
#[test]
fn a_closed_stdout_ends_the_session_quietly() {
    let (l, addr) = listener();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"hello\n").expect("greet");
        read_to_end(&mut s) // until the client goes
    });
    let out = std::process::Command::new(crate::support::bin())
        .args(["connect", &addr])
        .stdin(std::process::Stdio::null())
        .stdout(crate::support::closed_pipe())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run socketeer");
    peer.join().expect("peer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn at_a_terminal_the_last_bytes_before_the_peer_closes_show_and_the_terminal_is_restored() {
    // Data that arrives with the peer's close used to be lost about half the time, and the
    // terminal was left raw (no echo, Ctrl-C dead): several rounds, each must be exact.
    for round in 0..5 {
        let (l, addr) = listener();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            s.write_all(b"goodbye\nlast words").expect("write");
        });
        let script = format!("{} connect {addr}; echo \"EXIT=$?\"; stty -a", bin());
        let Some(screen) = at_terminal("connect at a terminal", &script, "", "") else {
            return;
        };
        peer.join().expect("peer");
        assert!(screen.contains("goodbye"), "round {round}: {screen}");
        assert!(screen.contains("last words"), "round {round}: {screen}");
        assert!(screen.contains("EXIT=0"), "round {round}: {screen}");
        assert_terminal_restored(&screen);
    }
}

#[test]
fn at_a_terminal_chat_quit_shows_the_goodbye_and_restores_the_terminal() {
    let (server, eps) = Proc::serve(&["serve", "chat", "--listen", "127.0.0.1:0"]);
    let script = format!("{} connect {}; echo \"EXIT=$?\"; stty -a", bin(), eps[0]);
    let Some(screen) = at_terminal("chat at a terminal", &script, "*** welcome", "/quit\r") else {
        return;
    };
    assert!(screen.contains("*** bye"), "{screen}");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_terminal_restored(&screen);
    drop(server);
}

#[test]
fn at_a_terminal_ctrl_c_leaves_with_130_and_restores_the_terminal() {
    let (l, addr) = listener();
    let _peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"ready\n").expect("write");
        let _ = read_to_end(&mut s);
    });
    let script = format!("{} connect {addr}; echo \"EXIT=$?\"; stty -a", bin());
    let Some(screen) = at_terminal("connect at a terminal", &script, "ready", "\u{3}") else {
        return;
    };
    assert!(screen.contains("EXIT=130"), "{screen}");
    assert_terminal_restored(&screen);
}

#[test]
fn nc_style_host_and_port_as_two_arguments() {
    let (l, addr) = listener();
    let port = addr.rsplit_once(':').expect("port").1.to_owned();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"hi\n").expect("write");
    });
    let (status, out, err) = run(&["connect", "127.0.0.1", &port], b"");
    peer.join().expect("peer");
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "hi\n");
    // A port alone is no place to connect to: the error says what to type.
    let (status, _, err) = run(&["connect", &port], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "write HOST:PORT or HOST PORT (e.g. 127.0.0.1:{port})"
        )),
        "{err}"
    );
    // An endpoint and a port: which was meant is unclear, so neither is guessed.
    let (status, _, err) = run(&["connect", &addr, "80"], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("is already an endpoint"), "{err}");
}
