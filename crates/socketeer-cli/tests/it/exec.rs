//! `serve exec` and the `exec` client through real sockets: the native protocol, the tutorials'
//! size-header exchange both ways (with the tutorial's Python programs), an injection corpus
//! that must spawn nothing unintended, timeouts, output caps, and clients that leave.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Proc, TempDir, addr, have, run, wait_until};

/// `serve exec --no-auth` on loopback with `extra` flags, in `cwd`.
fn serve_exec(cwd: &Path, extra: &[&str]) -> (Proc, String) {
    let cwd = cwd.display().to_string();
    let mut args = vec![
        "serve",
        "exec",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--cwd",
        &cwd,
    ];
    args.extend_from_slice(extra);
    let (proc, eps) = Proc::serve(&args);
    (proc, eps[0].clone())
}

/// Pids of live (non-zombie) `sleep TOKEN` processes.
fn sleeps(token: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{token}\0");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        // A zombie's command line is empty: it is dead, only not yet reaped by its parent.
        if cmdline == wanted.as_bytes() {
            found.push(pid);
        }
    }
    found
}

/// A number of seconds to sleep that no other process on the machine has in its command line.
fn token() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}.{}",
        100_000 + N.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

#[test]
fn a_command_streams_its_output_and_exit_status_and_takes_stdin() {
    let dir = TempDir::new("exec-basic");
    let (_server, ep) = serve_exec(&dir.0, &["--allow", "sort", "--allow", "sh ..."]);
    let (status, out, _) = run(&["exec", &ep, "--", "sort"], b"pear\napple\nfig\n");
    assert_eq!(out, "apple\nfig\npear\n");
    assert_eq!(status.code(), Some(0));

    let (status, out, err) = run(
        &[
            "exec",
            &ep,
            "-n",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        b"",
    );
    assert_eq!((out.as_str(), status.code()), ("out\n", Some(7)));
    assert!(err.contains("err\n"), "{err}");

    let (status, _, err) = run(&["exec", &ep, "-n", "--", "sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(status.code(), Some(128 + 15), "{err}");
    assert!(err.contains("signal 15"), "{err}");

    // Commands run in --cwd with only PATH in their environment.
    let (_, out, _) = run(
        &["exec", &ep, "-n", "--", "sh", "-c", "pwd; env | sort"],
        b"",
    );
    let canonical = std::fs::canonicalize(&dir.0).expect("canonical");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(canonical.to_str().expect("utf-8")));
    let env: Vec<&str> = lines
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .collect();
    assert_eq!(env.len(), 1, "{env:?}");
    assert!(env[0].starts_with("PATH=/usr/local/sbin:"), "{env:?}");
}

#[test]
fn the_injection_corpus_runs_nothing_unintended() {
    let dir = TempDir::new("exec-inject");
    let marker = dir.0.join("PWNED");
    let m = marker.display().to_string();
    let (server, ep) = serve_exec(&dir.0, &["--allow", "echo ..."]);
    let corpus: Vec<String> = vec![
        format!("echo a; touch {m}"),
        format!("echo a | touch {m}"),
        format!("echo a && touch {m}"),
        format!("echo a || touch {m}"),
        format!("echo $(touch {m})"),
        format!("echo `touch {m}`"),
        format!("echo a\ntouch {m}"),
        format!("echo a > {m}"),
        format!("echo a >> {m}"),
        format!("echo a & touch {m}"),
        "echo *".into(),
        "echo ~ ~root".into(),
        format!("-rf {m}"),
        format!("LD_PRELOAD=/nonexistent.so touch {m}"),
        format!("env touch {m}"),
        format!("/usr/bin/touch {m}"),
        format!("./touch {m}"),
        format!("../../usr/bin/touch {m}"),
        format!("'to uch' {m}"),
        format!("touch\\ {m}"),
        format!("echo {}", "B".repeat(100_000)),
    ];
    for command in &corpus {
        let (status, out, err) = run(&["exec", &ep, "-n", "--", command], b"");
        let literal_echo = command.starts_with("echo ")
            && !command.contains('\n')
            && !command.contains('\0')
            && command.len() < 65_536;
        if literal_echo {
            // echo may run, but only as echo, with the metacharacters as plain words.
            assert_eq!(status.code(), Some(0), "{command:?}: {err}");
            let words = shell_words(command);
            assert_eq!(out.trim_end(), words[1..].join(" "), "{command:?}");
        } else {
            assert_ne!(status.code(), Some(0), "{command:?} must be refused: {out}");
            assert!(
                err.contains("refused") || err.contains("not found") || err.contains("longer than"),
                "{command:?}: {err}"
            );
        }
        assert!(!marker.exists(), "{command:?} created the marker");
    }
    // Several words are passed as exactly those words, whatever they contain.
    let (status, out, _) = run(
        &["exec", &ep, "-n", "--", "echo", "a;b", "$(x)", "'q'", ""],
        b"",
    );
    assert_eq!((status.code(), out.as_str()), (Some(0), "a;b $(x) 'q' \n"));
    assert!(!marker.exists());
    // The server is still serving after all that.
    let (status, out, _) = run(&["exec", &ep, "-n", "--", "echo", "alive"], b"");
    assert_eq!((status.code(), out.as_str()), (Some(0), "alive\n"));
    drop(server);
}

/// The tests' own shell-word splitting of simple corpus lines (quotes only where the corpus has
/// none): whitespace-separated words.
fn shell_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Sends `frames` (tag + payload each) over the native protocol by hand and returns every
/// frame the server sends back until it closes.
fn raw_native(ep: &str, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut stream = crate::support::tcp(ep);
    for frame in frames {
        let len = u32::try_from(frame.len()).expect("len").to_be_bytes();
        // The server may close before taking it all (an oversized frame): that is the point.
        if stream
            .write_all(&len)
            .and_then(|()| stream.write_all(frame))
            .is_err()
        {
            break;
        }
    }
    let mut replies = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if std::io::Read::read_exact(&mut stream, &mut len).is_err() {
            return replies;
        }
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        if std::io::Read::read_exact(&mut stream, &mut frame).is_err() {
            return replies;
        }
        replies.push(frame);
    }
}

#[test]
fn hostile_frames_are_refused_and_the_server_carries_on() {
    let dir = TempDir::new("exec-raw");
    let marker = dir.0.join("PWNED");
    let (_server, ep) = serve_exec(&dir.0, &["--allow", "echo ..."]);
    let nul = format!("Cecho a\0touch {}", marker.display());
    let replies = raw_native(&ep, &[nul.as_bytes()]);
    let last = String::from_utf8_lossy(replies.last().expect("a report"));
    assert!(
        last.starts_with("X{") && last.contains("NUL byte"),
        "{last}"
    );
    // A 1 MB argument (too long for a command line, so only a hostile peer sends it).
    let mut long = b"Cecho ".to_vec();
    long.resize((1 << 20) - 16, b'A');
    let replies = raw_native(&ep, &[&long]);
    let last = String::from_utf8_lossy(replies.last().expect("a report"));
    assert!(last.contains("longer than 65536 bytes"), "{last}");
    // Not a command first: refused with a report.
    let replies = raw_native(&ep, &[b"Iecho"]);
    assert!(String::from_utf8_lossy(&replies[0]).contains("first frame must be a command"));
    // A frame over the limit: the connection is closed, nothing runs.
    let mut big = b"Cecho ".to_vec();
    big.resize(2 << 20, b'x');
    let replies = raw_native(&ep, &[&big]);
    assert!(replies.is_empty());
    assert!(!marker.exists());
    let (status, out, _) = run(&["exec", &ep, "-n", "--", "echo", "ok"], b"");
    assert_eq!((status.code(), out.as_str()), (Some(0), "ok\n"));
}

#[test]
fn a_command_past_its_deadline_is_killed_with_its_children() {
    let dir = TempDir::new("exec-timeout");
    let (_server, ep) = serve_exec(&dir.0, &["--allow", "sh ...", "--cmd-timeout", "1"]);
    let t = token();
    let script = format!("sleep {t} & sleep {t} & sleep {t}; echo never");
    let (status, out, err) = run(&["exec", &ep, "-n", "--", "sh", "-c", &script], b"");
    assert_eq!(status.code(), Some(128 + 9), "{err}");
    assert!(err.contains("time limit"), "{err}");
    assert!(!out.contains("never"));
    wait_until("the command's children to be gone", || {
        sleeps(&t).is_empty()
    });
}

#[test]
fn output_past_the_cap_is_cut_with_a_notice() {
    let dir = TempDir::new("exec-cap");
    let (_server, ep) = serve_exec(&dir.0, &["--allow", "head ...", "--max-output", "1MiB"]);
    let mut client = Proc::spawn(&[
        "exec",
        &ep,
        "-n",
        "--",
        "head",
        "-c",
        "1073741824",
        "/dev/zero",
    ]);
    client.close_stdin();
    let (status, out, err) = client.wait();
    assert_eq!(out.len(), 1 << 20);
    assert!(err.contains("output truncated at 1048576 bytes"), "{err}");
    // head died of SIGPIPE writing past the cap, but the client's status says the output was
    // cut (125), not 141, which reads as the local pipe breaking.
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(
        err.contains("passed the server's --max-output and was cut"),
        "{err}"
    );
}

#[test]
fn a_client_that_leaves_mid_command_has_its_command_killed() {
    let dir = TempDir::new("exec-leave");
    let (_server, ep) = serve_exec(&dir.0, &["--allow", "sh ...", "--protocol", "native"]);
    let t = token();
    let script = format!("sleep {t} & sleep {t}");
    let client = Proc::spawn(&["exec", &ep, "-n", "--", "sh", "-c", &script]);
    wait_until("both sleeps to run", || sleeps(&t).len() == 2);
    drop(client); // killed: its socket closes
    wait_until("the command group to be killed", || sleeps(&t).is_empty());
}

/// Runs the exec client with its stdout a pipe whose reader has already gone.
fn exec_into_a_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(crate::support::bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(crate::support::closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run socketeer");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_and_stops_the_command() {
    let dir = TempDir::new("exec-epipe");
    let (_server, ep) = serve_exec(&dir.0, &["--allow", "sh ..."]);
    let t = token();
    // The output comes only once the background sleep has exec'd, so the check below that it
    // was stopped cannot pass because it never ran.
    let script = format!(
        "sleep {t} & until grep -q {t} /proc/$!/cmdline 2>/dev/null; do :; done; echo first; wait"
    );
    let (status, err) = exec_into_a_closed_pipe(&["exec", &ep, "-n", "--", "sh", "-c", &script]);
    // As `cmd | head -1` reports a writer killed by SIGPIPE, without a message.
    assert_eq!(status.code(), Some(128 + 13), "{err}");
    assert!(err.is_empty(), "{err}");
    wait_until("the command to be stopped", || sleeps(&t).is_empty());

    let (_server, ep) = serve_exec(
        &dir.0,
        &["--allow", "echo ...", "--protocol", "size-header"],
    );
    let (status, err) = exec_into_a_closed_pipe(&[
        "exec",
        &ep,
        "--protocol",
        "size-header",
        "--",
        "echo",
        "hello",
    ]);
    assert_eq!(status.code(), Some(128 + 13), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_size_header_client_that_leaves_has_its_command_killed() {
    let dir = TempDir::new("exec-leave-sh");
    let (_server, ep) = serve_exec(
        &dir.0,
        &["--allow", "sleep ...", "--protocol", "size-header"],
    );
    let t = token();
    let mut stream = std::net::TcpStream::connect(addr(&ep)).expect("connect");
    stream
        .write_all(format!("sleep {t}").as_bytes())
        .expect("send");
    wait_until("the sleep to run", || sleeps(&t).len() == 1);
    drop(stream);
    wait_until("the sleep to be killed", || sleeps(&t).is_empty());
}

#[test]
fn the_size_header_protocol_works_with_the_tutorials_python_client() {
    if !have(
        "python3",
        "the_size_header_protocol_works_with_the_tutorials_python_client",
    ) {
        return;
    }
    let dir = TempDir::new("exec-py-client");
    let (_server, ep) = serve_exec(
        &dir.0,
        &[
            "--allow",
            "echo ...",
            "--allow",
            "true",
            "--protocol",
            "size-header",
        ],
    );
    let port = addr(&ep).rsplit(':').next().expect("port").to_owned();
    // The tutorial's client, as it is taught (minus input(): the commands are given).
    let script = format!(
        r#"
import socket, sys
client = socket.socket()
client.connect(('127.0.0.1', {port}))
for cmd in ['echo hello world', 'true', 'rm -rf /']:
    client.send(cmd.encode('utf-8'))
    cmd_res_size = client.recv(1024)
    client.send('准备好接收了，可以发了'.encode('utf-8'))
    received_size = 0
    received_data = b''
    while received_size < int(cmd_res_size.decode()):
        data = client.recv(1024)
        received_size += len(data)
        received_data += data
    sys.stdout.write(received_data.decode() + '|')
client.close()
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello world\n|cmd has no output...|socketeer: command refused: rm is not an allowed program\n|"
    );
}

#[test]
fn the_size_header_client_works_with_the_tutorials_python_server() {
    if !have(
        "python3",
        "the_size_header_client_works_with_the_tutorials_python_server",
    ) {
        return;
    }
    // The tutorial's server, as it is taught (one connection, one command).
    let script = r#"
import socket, os, sys
server = socket.socket()
server.bind(('127.0.0.1', 0))
server.listen()
print(server.getsockname()[1], flush=True)
conn, addr = server.accept()
data = conn.recv(1024)
cmd_res = os.popen(data.decode()).read()
if len(cmd_res) == 0:
    cmd_res = "cmd has no output..."
conn.send(str(len(cmd_res.encode())).encode("utf-8"))
client_ack = conn.recv(1024)
conn.send(cmd_res.encode("utf-8"))
conn.close()
"#;
    for (command, expected) in [
        ("echo 你好 socketeer", "你好 socketeer\n"),
        ("true", "cmd has no output..."),
    ] {
        let mut server = Command::new("python3")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut port = String::new();
        BufReader::new(server.stdout.as_mut().expect("stdout"))
            .read_line(&mut port)
            .expect("port");
        let ep = format!("127.0.0.1:{}", port.trim());
        let (status, out, err) = run(
            &["exec", &ep, "--protocol", "size-header", "--", command],
            b"",
        );
        assert!(status.success(), "{err}");
        assert_eq!(out, expected);
        let _ = server.wait();
    }
}

#[test]
fn exec_refuses_to_start_open_to_anyone() {
    let (status, _, err) = run(
        &["serve", "exec", "--allow", "ls", "--listen", "127.0.0.1:0"],
        b"",
    );
    assert_eq!(status.code(), Some(2));
    assert!(
        err.starts_with("socketeer: serve exec: refusing") && err.contains("--key-file"),
        "{err}"
    );
    let (status, _, err) = run(
        &[
            "serve",
            "exec",
            "--allow",
            "ls",
            "--no-auth",
            "--listen",
            "0.0.0.0:0",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("--no-auth is only allowed on loopback"),
        "{err}"
    );
    let (status, _, err) = run(
        &["serve", "exec", "--no-auth", "--listen", "127.0.0.1:0"],
        b"",
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--allow PROGRAM"), "{err}");
    let (status, _, err) = run(
        &[
            "serve",
            "exec",
            "--no-auth",
            "--allow",
            "bin/ls",
            "--listen",
            "127.0.0.1:0",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("absolute path"), "{err}");
}

#[test]
fn exec_with_a_key_runs_only_for_clients_that_prove_it() {
    let dir = TempDir::new("exec-key");
    let key = crate::security::make_key(&dir, "key", Some("robot-1"));
    let cwd = dir.0.display().to_string();
    let (server, eps) = Proc::serve(&[
        "serve",
        "exec",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        &key,
        "--allow",
        "echo ...",
        "--cwd",
        &cwd,
    ]);
    let ep = &eps[0];
    let (status, out, err) = run(
        &[
            "exec",
            ep,
            "--key-file",
            &key,
            "--device",
            "robot-1",
            "-n",
            "--",
            "echo",
            "hi",
        ],
        b"",
    );
    assert_eq!((status.code(), out.as_str()), (Some(0), "hi\n"), "{err}");
    let (status, out, _) = run(&["exec", ep, "-n", "--", "echo", "hi"], b"");
    assert_ne!(status.code(), Some(0));
    assert_eq!(out, "");
    drop(server);
}

#[test]
fn one_client_cannot_take_every_session() {
    let dir = TempDir::new("exec-cap-sessions");
    let (_server, ep) = serve_exec(
        &dir.0,
        &[
            "--allow",
            "sh ...",
            "--allow",
            "echo ...",
            "--max-sessions-per-client",
            "1",
        ],
    );
    let t = token();
    let script = format!("sleep {t}");
    let first = Proc::spawn(&["exec", &ep, "-n", "--", "sh", "-c", &script]);
    wait_until("the first command to run", || sleeps(&t).len() == 1);
    let (status, _, err) = run(&["exec", &ep, "-n", "--", "echo", "second"], b"");
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(err.contains("busy"), "{err}");
    drop(first);
    wait_until("the first command to end", || sleeps(&t).is_empty());
    // Places come back: poll until the server has noticed the client left.
    wait_until("a free session", || {
        run(&["exec", &ep, "-n", "--", "echo", "third"], b"")
            .0
            .code()
            == Some(0)
    });
}

#[test]
fn an_allowed_program_runs_only_with_the_arguments_its_rules_allow() {
    // The README's allow list: uptime and sort, as written, with no arguments at all.
    let dir = TempDir::new("exec-arg-rules");
    let written = dir.0.join("written");
    let target = written.display().to_string();
    let (_server, ep) = serve_exec(
        &dir.0,
        &[
            "--allow",
            "uptime",
            "--allow",
            "sort",
            "--allow",
            "cat logs/*.txt",
        ],
    );
    let (status, out, err) = run(&["exec", &ep, "--", "sort"], b"b\na\n");
    assert_eq!((status.code(), out.as_str()), (Some(0), "a\nb\n"), "{err}");
    for hostile in [
        vec!["sort", "--compress-program=sh"],
        vec!["sort", "-o", &target],
        vec!["sort", "/etc/shadow"],
        vec!["cat", "logs/../../etc/passwd.txt"],
        vec!["cat", "--show-all", "logs/a.txt"],
    ] {
        let mut args = vec!["exec", &ep, "-n", "--"];
        args.extend(&hostile);
        let (status, out, err) = run(&args, b"");
        assert_eq!(status.code(), Some(126), "{hostile:?}: {out}{err}");
        assert!(err.contains("may run only as"), "{hostile:?}: {err}");
    }
    assert!(!written.exists(), "sort -o wrote a file");
    std::fs::create_dir(dir.0.join("logs")).expect("logs");
    std::fs::write(dir.0.join("logs/a.txt"), "from the log\n").expect("log");
    let (status, out, err) = run(&["exec", &ep, "-n", "--", "cat", "logs/a.txt"], b"");
    assert_eq!(
        (status.code(), out.as_str()),
        (Some(0), "from the log\n"),
        "{err}"
    );
}

#[test]
fn no_auth_on_a_unix_socket_others_may_use_is_warned_about() {
    let dir = TempDir::new("exec-unix-mode");
    let path = dir.sock("exec.sock");
    let ep = format!("unix://{path}");
    let (mut server, _) = Proc::serve(&[
        "serve",
        "exec",
        "--no-auth",
        "--allow",
        "true",
        "--listen",
        &ep,
        "--socket-mode",
        "666",
    ]);
    server
        .stderr
        .wait_for_text("every user of this machine can run the allowed commands");
}
