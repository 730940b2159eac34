//! `socketeer serve chat`: the operator console, fan-out exactly once and in order, slow readers
//! dropped without slowing anyone, nicknames, neutralised escapes, abrupt leavers, rate limits,
//! and authenticated device names as nicknames.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};

use crate::support::{DEADLINE, Proc, TempDir, addr, run};

/// A chat client: a line reader and a writer on one connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(ep: &str) -> Self {
        Self::from_stream(TcpStream::connect(addr(ep)).expect("connect"))
    }

    /// Like `connect`, with a tiny receive buffer, so the kernel holds little for a reader
    /// that stops.
    fn connect_small_window(ep: &str) -> Self {
        let target: std::net::SocketAddr = addr(ep).parse().expect("addr");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        socket.connect(&target.into()).expect("connect");
        Self::from_stream(socket.into())
    }

    /// Wraps a connected stream and waits for the broker's welcome.
    fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
        };
        client.until(|l| l.starts_with("*** welcome"));
        client
    }

    fn say(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("say");
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }

    /// Reads lines until one satisfies `want`, which is returned.
    fn until(&mut self, want: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.line().expect("the connection ended first");
            if want(&line) {
                return line;
            }
        }
    }

    fn nick(mut self, nick: &str) -> Self {
        self.say(&format!("/nick {nick}"));
        self.until(|l| l.starts_with("*** you are now"));
        self
    }
}

fn chat(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", "chat", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (proc, eps) = Proc::serve(&args);
    (proc, eps[0].clone())
}

#[test]
fn the_tutorial_exchange_with_the_operator_console() {
    let (mut server, ep) = chat(&["--console"]);
    let mut client = Client::connect(&ep).nick("robot");
    server.write_stdin(b"hello robot\n");
    assert_eq!(
        client.until(|l| l.starts_with("server:")),
        "server: hello robot\n"
    );
    client.say("hello operator");
    server.stdout.wait_for_text("robot: hello operator\n");
    // The console's end leaves the broker running.
    server.close_stdin();
    server.stderr.wait_for_text("console input ended");
    let mut other = Client::connect(&ep).nick("other");
    client.say("still here");
    assert_eq!(
        other.until(|l| l.starts_with("robot:")),
        "robot: still here\n"
    );
}

#[test]
fn fifty_clients_each_get_every_other_line_exactly_once_in_order() {
    const CLIENTS: usize = 50;
    const LINES: usize = 20;
    let (_server, ep) = chat(&["--rate", "0"]);
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (ep, barrier) = (ep.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut client = Client::connect(&ep).nick(&format!("c{i}"));
                barrier.wait(); // everyone is in the room before anyone speaks
                for k in 0..LINES {
                    client.say(&format!("{k}"));
                }
                let mut next = vec![0usize; CLIENTS];
                let mut got = 0;
                while got < (CLIENTS - 1) * LINES {
                    let line = client.line().expect("line");
                    let Some((nick, body)) = line.trim_end().split_once(": ") else {
                        continue;
                    };
                    let Some(sender) = nick.strip_prefix('c').and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    assert_ne!(sender, i, "a client got its own line back");
                    assert_eq!(
                        body,
                        next[sender].to_string(),
                        "c{i} got c{sender}'s lines out of order"
                    );
                    next[sender] += 1;
                    got += 1;
                }
                next
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let next = t.join().expect("client");
        for (sender, n) in next.iter().enumerate() {
            assert_eq!(
                *n,
                if sender == i { 0 } else { LINES },
                "c{i} from c{sender}"
            );
        }
    }
}

#[test]
fn lines_for_a_client_just_written_to_wait_for_the_hold_and_go_out_together() {
    const HOLD: std::time::Duration = std::time::Duration::from_millis(1000);
    let (_server, ep) = chat(&["--rate", "0", "--coalesce", "1000"]);
    let mut a = Client::connect(&ep).nick("a");
    // b joins last and has been written nothing through the room: its first line goes at once.
    let mut b = Client::connect(&ep);
    let said = std::time::Instant::now();
    a.say("one");
    assert_eq!(b.until(|l| l.starts_with("a:")), "a: one\n");
    let first = std::time::Instant::now();
    assert!(
        first - said < HOLD / 2,
        "a quiet room held a line for {:?}",
        first - said
    );
    // b was just written to: what comes next waits out the hold, then goes in one write. (The
    // hold runs from the broker's write of "one", which came after it was said.)
    a.say("two");
    a.say("three");
    assert_eq!(b.until(|l| l.starts_with("a:")), "a: two\n");
    let second = std::time::Instant::now();
    assert!(
        second - said >= HOLD,
        "the next line came {:?} after the first was said",
        second - said
    );
    assert_eq!(
        String::from_utf8_lossy(b.reader.buffer()),
        "a: three\n",
        "the held lines did not arrive together"
    );
}

/// The server process's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_reader_that_stops_is_dropped_and_nobody_else_notices() {
    const SENDERS: usize = 20;
    const LINES: usize = 10_000;
    // Generous queues (4 MiB) so readers that merely hiccup on a busy CI machine keep up; the
    // reader that stops still overflows, since it is sent ~20 MB.
    let (server, ep) = chat(&[
        "--rate",
        "1000",
        "--queue-lines",
        "65536",
        "--queue-bytes",
        "4194304",
    ]);
    let mut slow = Client::connect_small_window(&ep).nick("slow"); // never reads from here on
    let mut watcher = Client::connect(&ep).nick("watcher");
    let barrier = Arc::new(Barrier::new(SENDERS));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (ep, barrier) = (ep.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let client = Client::connect(&ep).nick(&format!("s{i}"));
                let Client {
                    mut reader,
                    mut writer,
                } = client;
                barrier.wait();
                let writing = std::thread::spawn(move || {
                    let mut batch = String::new();
                    for k in 0..LINES {
                        batch.push_str(&format!("line {k} from s{i}, {:-<80}\n", ""));
                        if batch.len() > 16 * 1024 {
                            writer.write_all(batch.as_bytes()).expect("send");
                            batch.clear();
                        }
                    }
                    writer.write_all(batch.as_bytes()).expect("send");
                    writer
                });
                let mut got = 0;
                let mut line = String::new();
                while got < (SENDERS - 1) * LINES {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(n) if n > 0 => {}
                        other => {
                            return Err(format!(
                                "s{i} cut off after {got} lines ({other:?}); last: {line:?}"
                            ));
                        }
                    }
                    if line.starts_with('s') {
                        got += 1;
                    }
                }
                writing.join().expect("writer");
                Ok(got)
            })
        })
        .collect();
    let dropped = watcher.until(|l| l.contains("slow was dropped"));
    assert!(dropped.starts_with("*** slow was dropped"), "{dropped}");
    let rss_during = rss_kib(server.pid());
    let results: Vec<_> = senders
        .into_iter()
        .map(|s| s.join().expect("sender"))
        .collect();
    let mut server = server;
    for result in results {
        match result {
            Ok(got) => assert_eq!(got, (SENDERS - 1) * LINES, "every other line arrived"),
            Err(why) => {
                server.signal("KILL");
                panic!("{why}\nbroker log:\n{}", server.stderr.until_closed());
            }
        }
    }
    // The dropped client's connection really ends: draining it reaches end of stream (or a
    // reset), not the read deadline.
    let mut rest = Vec::new();
    let ended = std::io::Read::read_to_end(slow.reader.get_mut(), &mut rest);
    assert!(
        ended.is_ok()
            || ended
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the dropped client was not closed: {ended:?}"
    );
    assert!(rss_during < 200 * 1024, "broker memory {rss_during} KiB");
}

#[test]
fn nicknames_are_unique_validated_and_capped() {
    let (_server, ep) = chat(&[]);
    let mut a = Client::connect(&ep).nick("alice");
    let mut b = Client::connect(&ep);
    // Until it picks one, a client's nickname is its address.
    let b_default = b.writer.local_addr().expect("addr").to_string();
    for (wanted, why) in [
        ("ALICE", "taken"),
        ("has space", "may use"),
        (&"x".repeat(33)[..], "at most 32"),
        ("server", "reserved"),
        ("", "empty"),
    ] {
        b.say(&format!("/nick {wanted}"));
        let reply = b.until(|l| l.starts_with("*** cannot"));
        assert!(reply.contains(why), "{wanted}: {reply}");
    }
    b.say("/nick bob");
    assert_eq!(
        a.until(|l| l.contains("is now")),
        format!("*** {b_default} is now bob\n")
    );
    b.say("/who");
    assert_eq!(b.until(|l| l.contains("here:")), "*** 2 here: alice, bob\n");
    b.say("/dance");
    assert!(
        b.until(|l| l.starts_with("***"))
            .contains("unknown command /dance")
    );
    b.say("//nick is not a command");
    assert_eq!(
        a.until(|l| l.starts_with("bob:")),
        "bob: /nick is not a command\n"
    );
    b.say("/quit");
    assert_eq!(b.until(|l| l.starts_with("***")), "*** bye\n");
    assert_eq!(a.until(|l| l.contains("left")), "*** bob left\n");
}

#[test]
fn escape_sequences_arrive_as_harmless_text() {
    let (_server, ep) = chat(&[]);
    let mut a = Client::connect(&ep).nick("a");
    let mut b = Client::connect(&ep).nick("b");
    b.writer
        .write_all(b"\x1b]0;pwned\x07\x1b[2J\x1b[1;31mred\xc2\x9b\r\n")
        .expect("send");
    assert_eq!(
        a.until(|l| l.starts_with("b:")),
        "b: ^[]0;pwned^G^[[2J^[[1;31mred?\n"
    );
}

#[test]
fn clients_resetting_mid_broadcast_do_not_disturb_the_rest() {
    let (_server, ep) = chat(&["--rate", "0"]);
    let mut talker = Client::connect(&ep).nick("talker");
    let mut listener = Client::connect(&ep).nick("listener");
    let quitters: Vec<Client> = (0..10)
        .map(|i| Client::connect(&ep).nick(&format!("q{i}")))
        .collect();
    for k in 0..500 {
        talker.say(&format!("{k}"));
    }
    for q in quitters {
        let stream = q.writer;
        socket_reset(stream);
    }
    for k in 500..1000 {
        talker.say(&format!("{k}"));
    }
    for k in 0..1000 {
        assert_eq!(
            listener.until(|l| l.starts_with("talker:")),
            format!("talker: {k}\n")
        );
    }
    // Each reset is noticed in its own time: wait for the ten departures, then ask.
    let mut left = std::collections::BTreeSet::new();
    while left.len() < 10 {
        let line = talker.until(|l| l.ends_with(" left\n"));
        left.insert(line);
    }
    talker.say("/who");
    assert_eq!(
        talker.until(|l| l.contains("here:")),
        "*** 2 here: listener, talker\n"
    );
}

/// Closes with a reset (SO_LINGER 0), as a crashed client would.
fn socket_reset(stream: TcpStream) {
    let socket = socket2::Socket::from(stream);
    socket
        .set_linger(Some(std::time::Duration::ZERO))
        .expect("linger");
    drop(socket);
}

#[test]
fn a_flooder_is_slowed_to_its_rate_while_others_get_through() {
    let (_server, ep) = chat(&["--rate", "5"]); // bursts of 10, then 5 lines a second
    let mut flooder = Client::connect(&ep).nick("flood");
    let mut other = Client::connect(&ep).nick("other");
    let mut reader = Client::connect(&ep).nick("reader");
    let flood: String = (0..30).map(|k| format!("{k}\n")).collect();
    flooder.writer.write_all(flood.as_bytes()).expect("flood");
    // The burst gets through at once...
    assert_eq!(reader.until(|l| l.starts_with("flood:")), "flood: 0\n");
    other.say("marker");
    // ...and the marker overtakes the rest of the flood, which trickles in at the rate.
    let mut seen = Vec::new();
    loop {
        let line = reader.line().expect("line");
        if line.starts_with("other:") {
            break;
        }
        seen.push(line);
    }
    assert!(
        seen.len() < 20,
        "the marker waited behind {} flood lines",
        seen.len()
    );
}

#[test]
fn authenticated_devices_chat_under_their_names_over_tls() {
    let dir = TempDir::new("chat-auth");
    let key = dir.0.join("fleet.key");
    let (_, line_a, _) = run(&["keygen", "--device", "robot-1"], b"");
    std::fs::write(&key, line_a).expect("key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let certs = dir.0.join("certs");
    let (status, _, _) = run(&["cert", "--out", &certs.display().to_string()], b"");
    assert!(status.success());
    let key = key.display().to_string();
    let (_server, ep) = chat(&[
        "--key-file",
        &key,
        "--tls-cert",
        &format!("{}/server.pem", certs.display()),
        "--tls-key",
        &format!("{}/server-key.pem", certs.display()),
    ]);
    let ca = format!("{}/ca.pem", certs.display());
    let as_robot = || {
        Proc::spawn(&[
            "connect",
            "--ca",
            &ca,
            "--key-file",
            &key,
            "--device",
            "robot-1",
            &ep,
        ])
    };
    let mut first = as_robot();
    first.stdout.wait_for_text("*** welcome, robot-1 ");
    let mut second = as_robot();
    second.stdout.wait_for_text("*** welcome, robot-1-2 ");
    second.write_stdin(b"hello from the second\n");
    first
        .stdout
        .wait_for_text("robot-1-2: hello from the second\n");
}

#[test]
fn chat_over_a_unix_socket() {
    let dir = TempDir::new("chat-unix");
    let path = dir.sock("chat.sock");
    let (_server, _) = Proc::serve(&["serve", "chat", "--listen", &format!("unix://{path}")]);
    let mut a = Proc::spawn(&["connect", &format!("unix://{path}")]);
    a.stdout.wait_for_text("*** welcome");
    let mut b = Proc::spawn(&["connect", &format!("unix://{path}")]);
    b.stdout.wait_for_text("*** welcome");
    b.write_stdin(b"over unix\n");
    a.stdout.wait_for_text("local-2: over unix\n");
}

#[test]
fn the_console_at_a_terminal_edits_lines_and_ctrl_c_stops_the_server_cleanly() {
    // The operator types "abc", moves left twice, types "X" and Enter: everyone gets "aXbc", the
    // edited line, not the arrow keys' escape bytes; then Ctrl-C stops the server (SIGINT's
    // drain) and the terminal is a shell's again.
    let dir = TempDir::new("chat-console-tty");
    let path = dir.sock("chat.sock");
    let client = {
        let path = path.clone();
        std::thread::spawn(move || {
            // The file exists from bind(), before listen(): the first connects may be refused.
            let connected = std::cell::RefCell::new(None);
            crate::support::wait_until("the chat socket", || {
                *connected.borrow_mut() = std::os::unix::net::UnixStream::connect(&path).ok();
                connected.borrow().is_some()
            });
            let stream = connected.into_inner().expect("connected");
            stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
            let mut lines = BufReader::new(stream);
            let mut seen = Vec::new();
            loop {
                let mut line = String::new();
                if lines.read_line(&mut line).expect("read") == 0 {
                    break;
                }
                let done = line.starts_with("server:");
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        })
    };
    let script = format!(
        "{} serve chat --console --listen unix://{path}; echo \"EXIT=$?\"; stty -a",
        crate::support::bin()
    );
    let typed = "abc\u{1b}[D\u{1b}[DX\r\u{3}";
    let Some(screen) = crate::support::at_terminal("chat console", &script, "joined", typed) else {
        return;
    };
    let seen = client.join().expect("client");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("server: aXbc\n"),
        "{seen:?}"
    );
    assert!(screen.contains("EXIT=0"), "{screen}");
    crate::support::assert_terminal_restored(&screen);
}

#[test]
fn bench_fanout_counts_what_the_broker_delivers_and_can_offer_a_fixed_rate() {
    let (_server, ep) = chat(&["--rate", "0"]);
    // As fast as the broker takes them: every line sent reaches the three other connections.
    let (status, out, err) = crate::support::run(
        &[
            "bench", &ep, "-c", "4", "--fanout", "2", "-d", "0.5", "--warmup", "0.2", "--json",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let sent = report["lines_sent"].as_u64().expect("sent");
    let delivered = report["lines_delivered"].as_u64().expect("delivered");
    assert!(sent > 1000, "{report}");
    // (Flat out, megabytes of lines sent in the warm-up are still in buffers: only roughly.)
    assert!(delivered > sent, "{report}");
    assert!(report.get("lines_offered_per_sec").is_none(), "{report}");
    // At a fixed rate the senders offer that many lines a second in all, not more.
    let (status, out, err) = crate::support::run(
        &[
            "bench", &ep, "-c", "4", "--fanout", "2", "--rate", "2000", "-d", "1", "--warmup",
            "0.2", "--json",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["lines_offered_per_sec"], 2000, "{report}");
    let sent = report["lines_sent"].as_u64().expect("sent");
    assert!(
        (1500..=2500).contains(&sent),
        "about 2000 lines in one second: {report}"
    );
    let delivered = report["lines_delivered"].as_u64().expect("delivered");
    assert!(delivered >= sent * 3 - 300, "{report}");
}
