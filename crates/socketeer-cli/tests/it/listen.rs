//! `socketeer listen`: one client joined to stdin/stdout; --keep-open with stdin broadcast;
//! UDP answers the last sender; Unix socket files are removed on exit.

use std::io::Write;

use crate::support::{DEADLINE, Proc, TempDir, listening, read_n, tcp};

/// Starts `socketeer listen ...` and returns it with the endpoint it printed on stderr.
fn listen(args: &[&str]) -> (Proc, String) {
    let mut proc = Proc::spawn(args);
    proc.stderr
        .wait_for("the listening line", |seen| !listening(seen).is_empty());
    let endpoint = listening(&proc.stderr.seen).remove(0);
    (proc, endpoint)
}

#[test]
fn one_client_joined_to_stdin_and_stdout() {
    let (mut proc, ep) = listen(&["listen", "127.0.0.1:0"]);
    let mut client = tcp(&ep);
    client.write_all(b"from client\n").expect("send");
    proc.stdout.wait_for_text("from client\n");
    proc.write_stdin(b"from stdin\n");
    assert_eq!(read_n(&mut client, 11), "from stdin\n");
    drop(client);
    let (status, out, _) = proc.wait();
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "from client\n");
}

#[test]
fn keep_open_serves_many_and_broadcasts_stdin() {
    let (mut proc, ep) = listen(&["listen", "--keep-open", "127.0.0.1:0"]);
    let mut a = tcp(&ep);
    let mut b = tcp(&ep);
    a.write_all(b"from a\n").expect("send");
    b.write_all(b"from b\n").expect("send");
    proc.stdout.wait_for_text("from a\n");
    proc.stdout.wait_for_text("from b\n");
    proc.write_stdin(b"to all\n");
    assert_eq!(read_n(&mut a, 7), "to all\n");
    assert_eq!(read_n(&mut b, 7), "to all\n");
    proc.signal("TERM");
    let (status, _, _) = proc.wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn udp_listen_prints_datagrams_and_answers_the_sender() {
    let (mut proc, ep) = listen(&["listen", "udp://127.0.0.1:0"]);
    let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    u.set_read_timeout(Some(DEADLINE)).expect("timeout");
    u.send_to(b"ping\n", ep.trim_start_matches("udp://"))
        .expect("send");
    proc.stdout.wait_for_text("ping\n");
    proc.write_stdin(b"pong\n");
    let mut buf = [0u8; 16];
    let n = u.recv(&mut buf).expect("answer");
    assert_eq!(&buf[..n], b"pong\n");
}

#[test]
fn unix_listen_removes_its_socket_file_when_stopped() {
    let dir = TempDir::new("listen");
    for (mode, signal) in [
        (None, "INT"),
        (Some("--keep-open"), "INT"),
        (Some("--keep-open"), "TERM"),
    ] {
        let path = dir.sock("l.sock");
        let ep = format!("unix://{path}");
        let mut args = vec!["listen"];
        args.extend(mode);
        args.push(&ep);
        let (proc, bound) = listen(&args);
        assert_eq!(bound, ep);
        assert!(std::path::Path::new(&path).exists());
        proc.signal(signal);
        let (status, _, _) = proc.wait();
        assert_eq!(status.code(), Some(0));
        assert!(
            !std::path::Path::new(&path).exists(),
            "{mode:?} left its socket file on SIG{signal}"
        );
    }
}

#[test]
fn nc_style_bare_port_and_host_port() {
    // `listen PORT` listens on every address, as `nc -l PORT` does.
    let (proc, ep) = listen(&["listen", "0"]);
    assert!(
        ep.starts_with("tcp://[::]:") || ep.starts_with("tcp://0.0.0.0:"),
        "{ep}"
    );
    drop(proc);
    let (mut proc, ep) = listen(&["listen", "127.0.0.1", "0"]);
    assert!(ep.starts_with("tcp://127.0.0.1:"), "{ep}");
    let mut client = tcp(&ep);
    client.write_all(b"two args\n").expect("send");
    proc.stdout.wait_for_text("two args\n");
}
