//! `--key-file`, TLS, `--allow/--deny`, `keygen` and `cert` through the built binary, with the
//! tutorials' Python client, ncat and openssl as peers where installed.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{Proc, TempDir, have, read_to_end, run, tcp};

/// `socketeer keygen` into a 0600 file in `dir`.
pub fn make_key(dir: &TempDir, name: &str, device: Option<&str>) -> String {
    let mut args = vec!["keygen"];
    if let Some(device) = device {
        args.extend(["--device", device]);
    }
    let (status, out, _) = run(&args, b"");
    assert!(status.success());
    let path = dir.0.join(name);
    std::fs::write(&path, &out).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

/// `socketeer cert --out DIR`: returns (dir, fingerprint).
pub fn make_certs(dir: &TempDir) -> (String, String) {
    let out = dir.0.join("certs").display().to_string();
    let (status, text, err) = run(&["cert", "--out", &out], b"");
    assert!(status.success(), "{err}");
    let fingerprint = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256 fingerprint: "))
        .expect("fingerprint line")
        .to_owned();
    (out, fingerprint)
}

fn tls_flags(certs: &str) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        format!("{certs}/server.pem"),
        "--tls-key".into(),
        format!("{certs}/server-key.pem"),
    ]
}

fn serve(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", "echo", "--upper", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (proc, eps) = Proc::serve(&args);
    (proc, eps[0].clone())
}

pub fn python_tutorial_client(
    port: &str,
    key_path: &str,
    tls_ca: Option<&str>,
) -> std::process::Output {
    let wrap = match tls_ca {
        Some(ca) => format!(
            "import ssl\nctx=ssl.create_default_context(cafile='{ca}')\ns=ctx.wrap_socket(s, server_hostname='localhost')\n"
        ),
        None => String::new(),
    };
    let script = format!(
        "import socket, hmac\nkey=open('{key_path}').read().strip().encode()\n\
         s=socket.create_connection(('127.0.0.1',{port}))\n{wrap}\
         c=b''\nwhile len(c)<32:\n    c+=s.recv(32-len(c))\n\
         s.sendall(hmac.new(key,c,'sha256').hexdigest().encode()+b'hello from python\\n')\n\
         print(s.recv(1024))\n"
    );
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3")
}

/// The tutorial client ran and got the upper-cased echo of its line.
pub fn assert_python_was_answered(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "b'HELLO FROM PYTHON\\n'\n"
    );
}

#[test]
fn keygen_prints_keys_and_device_lines() {
    let (status, out, _) = run(&["keygen"], b"");
    assert!(status.success());
    let key = out.trim();
    assert_eq!(key.len(), 64);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let (_, again, _) = run(&["keygen"], b"");
    assert_ne!(again.trim(), key, "fresh every time");
    let (status, out, _) = run(&["keygen", "--device", "robot-7"], b"");
    assert!(status.success());
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!((fields[0], fields[1].len()), ("robot-7", 64));
    let (status, _, err) = run(&["keygen", "--device", "bad/name"], b"");
    assert_eq!(status.code(), Some(2), "{err}");
}

#[test]
fn cert_writes_private_keys_0600_prints_the_fingerprint_and_will_not_overwrite() {
    let dir = TempDir::new("cert");
    let (certs, fingerprint) = make_certs(&dir);
    for (file, mode) in [
        ("ca.pem", 0o644),
        ("ca-key.pem", 0o600),
        ("server.pem", 0o644),
        ("server-key.pem", 0o600),
    ] {
        let meta = std::fs::metadata(format!("{certs}/{file}")).expect(file);
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert_eq!(fingerprint.len(), 64);
    let (status, _, err) = run(&["cert", "--out", &certs], b"");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("exists (use --force"), "{err}");
    let (status, _, _) = run(
        &["cert", "--out", &certs, "--force", "--name", "hub.local"],
        b"",
    );
    assert!(status.success());
}

#[test]
fn a_key_file_server_admits_socketeer_clients_and_refuses_wrong_keys() {
    let dir = TempDir::new("auth");
    let key = make_key(&dir, "fleet.key", Some("robot-1"));
    let other = make_key(&dir, "other.key", Some("robot-1"));
    let (_server, ep) = serve(&["--key-file", &key]);
    let (status, out, err) = run(
        &["connect", "--key-file", &key, "--device", "robot-1", &ep],
        b"authenticated\n",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "AUTHENTICATED\n");
    let (status, out, err) = run(
        &["connect", "--key-file", &other, "--device", "robot-1", &ep],
        b"let me in\n",
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert!(err.contains("refused"), "{err}");
    // Without a key: the challenge arrives, the plain text is not an answer, the connection ends
    // without the service ever answering.
    let mut plain = tcp(&ep);
    plain.write_all(b"hello\n").expect("send");
    let got = read_to_end(&mut plain);
    assert!(!got.contains("HELLO"), "the service never saw it");
}

#[test]
fn the_tutorials_python_hmac_client_authenticates() {
    if !have("python3", "the_tutorials_python_hmac_client_authenticates") {
        return;
    }
    let dir = TempDir::new("pyauth");
    let key = make_key(&dir, "shared.key", None);
    let (_server, ep) = serve(&["--key-file", &key]);
    let port = ep.rsplit(':').next().expect("port");
    let out = python_tutorial_client(port, &key, None);
    assert_python_was_answered(&out);
}

#[test]
fn tutorial_answers_are_refused_on_plaintext_non_loopback_listeners_unless_allowed() {
    if !have(
        "python3",
        "tutorial_answers_are_refused_on_plaintext_non_loopback_listeners_unless_allowed",
    ) {
        return;
    }
    let dir = TempDir::new("plain");
    let key = make_key(&dir, "shared.key", None);
    // Bound to all interfaces (the test still talks over 127.0.0.1).
    let (server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--upper",
        "--listen",
        "0.0.0.0:0",
        "--key-file",
        &key,
    ]);
    let port = eps[0].rsplit(':').next().expect("port").to_owned();
    // socketeer mode works there...
    let (status, out, _) = run(
        &["connect", "--key-file", &key, &format!("127.0.0.1:{port}")],
        b"mutual\n",
    );
    assert_eq!((status.code(), out.as_str()), (Some(0), "MUTUAL\n"));
    // ...a tutorial answer does not (its refusal penalizes this source, so it goes last).
    let out = python_tutorial_client(&port, &key, None);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("HELLO"),
        "tutorial answer refused"
    );
    drop(server);
    let (_server, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--upper",
        "--listen",
        "0.0.0.0:0",
        "--key-file",
        &key,
        "--allow-plaintext-auth",
    ]);
    let port = eps[0].rsplit(':').next().expect("port");
    let out = python_tutorial_client(port, &key, None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "b'HELLO FROM PYTHON\\n'\n"
    );
}

#[test]
fn loose_key_files_stop_the_server_with_a_fix() {
    let dir = TempDir::new("loose");
    let key = make_key(&dir, "loose.key", None);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let (status, _, err) = run(
        &[
            "serve",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            &key,
        ],
        b"",
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.starts_with("socketeer: key file") && err.contains("chmod 600"),
        "{err}"
    );
    let short = dir.0.join("short.key");
    std::fs::write(&short, "0123abcd\n").expect("write");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (status, _, err) = run(
        &["serve", "echo", "--key-file", &short.display().to_string()],
        b"",
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("at least 64") && err.contains("socketeer keygen"),
        "{err}"
    );
}

#[test]
fn tls_with_ca_pin_and_insecure_and_the_refusals() {
    let dir = TempDir::new("tls");
    let (certs, fingerprint) = make_certs(&dir);
    let key = make_key(&dir, "fleet.key", Some("robot-1"));
    let mut flags = tls_flags(&certs);
    flags.extend(["--key-file".into(), key.clone()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_server, ep) = serve(&flags);
    let ca = format!("{certs}/ca.pem");
    let with_key = ["--key-file", key.as_str(), "--device", "robot-1"];
    let connect = |extra: &[&str]| {
        let mut args = vec!["connect"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&with_key);
        args.push(&ep);
        run(&args, b"secret\n")
    };
    let (status, out, err) = connect(&["--ca", &ca]);
    assert_eq!(
        (status.code(), out.as_str()),
        (Some(0), "SECRET\n"),
        "{err}"
    );
    let (status, out, _) = connect(&["--pin", &fingerprint]);
    assert_eq!((status.code(), out.as_str()), (Some(0), "SECRET\n"));
    let (status, out, err) = connect(&["--insecure"]);
    assert_eq!((status.code(), out.as_str()), (Some(0), "SECRET\n"));
    assert!(err.contains("--insecure"), "warned: {err}");

    let wrong_pin = "ab".repeat(32);
    let (status, _, err) = connect(&["--pin", &wrong_pin]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("not the pinned one"), "{err}");
    let other = TempDir::new("tls-other");
    let (other_certs, _) = make_certs(&other);
    let (status, _, err) = connect(&["--ca", &format!("{other_certs}/ca.pem")]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("TLS handshake failed"), "{err}");
    let (status, _, err) = connect(&["--tls"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--tls needs --ca"), "{err}");
    // Plain TCP to a TLS server gets nowhere.
    let (status, out, _) = run(&["connect", &ep], b"plain\n");
    assert!(!out.contains("PLAIN"), "{status}");
}

#[test]
fn ncat_ssl_and_openssl_s_client_work_against_a_tls_server() {
    let dir = TempDir::new("ncat");
    let (certs, _) = make_certs(&dir);
    let flags = tls_flags(&certs);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_server, ep) = serve(&flags);
    let port = ep.rsplit(':').next().expect("port");
    let mut ran = false;
    if have(
        "ncat",
        "ncat_ssl_and_openssl_s_client_work_against_a_tls_server (ncat part)",
    ) {
        // ncat matches DNS names only when verifying, so use localhost.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf 'via ncat\\n' | ncat --ssl --ssl-verify --ssl-trustfile {certs}/ca.pem localhost {port}"))
            .output()
            .expect("ncat");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "VIA NCAT\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran = true;
    }
    if have(
        "openssl",
        "ncat_ssl_and_openssl_s_client_work_against_a_tls_server (openssl part)",
    ) {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-no_ign_eof", // -quiet implies -ign_eof; leave when stdin ends
                "-verify_return_error",
                "-CAfile",
                &format!("{certs}/ca.pem"),
            ])
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"via openssl\n").expect("send");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut got = [0u8; 12];
        stdout.read_exact(&mut got).expect("reply");
        assert_eq!(&got, b"VIA OPENSSL\n");
        drop(stdin);
        let _ = child.kill(); // ours, by its own handle
        let _ = child.wait();
        ran = true;
    }
    // Where neither program is installed, `have` has already said the test skipped.
    let _ = ran;
}

#[test]
fn the_python_tutorial_client_over_tls() {
    if !have("python3", "the_python_tutorial_client_over_tls") {
        return;
    }
    let dir = TempDir::new("pytls");
    let (certs, _) = make_certs(&dir);
    let key = make_key(&dir, "shared.key", None);
    let mut flags = tls_flags(&certs);
    flags.extend(["--key-file".into(), key.clone()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_server, ep) = serve(&flags);
    let port = ep.rsplit(':').next().expect("port");
    let out = python_tutorial_client(port, &key, Some(&format!("{certs}/ca.pem")));
    assert_python_was_answered(&out);
}

#[test]
fn deny_refuses_before_reading_with_the_reason_and_allow_admits() {
    let (mut server, ep) = serve(&["--deny", "127.0.0.0/8"]);
    // nc's view: one line says why, and the service never sees what was sent.
    let mut denied = tcp(&ep);
    let _ = denied.write_all(b"hello\n");
    assert_eq!(
        read_to_end(&mut denied),
        "socketeer: refused: this address is not allowed here (--allow/--deny)\n"
    );
    // socketeer's clients say they were refused, and fail.
    let (status, out, err) = run(&["exec", &ep, "-n", "--", "true"], b"");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        err.contains("the server refused the connection: this address is not allowed"),
        "{err}"
    );
    // The server says so at the default log level.
    server.stderr.wait_for_text("connection refused");
    let (_server, ep) = serve(&["--allow", "127.0.0.1", "--deny", "10.0.0.0/8"]);
    let (status, out, _) = run(&["connect", &ep], b"allowed\n");
    assert_eq!((status.code(), out.as_str()), (Some(0), "ALLOWED\n"));
    let (status, _, err) = run(&["serve", "echo", "--allow", "10.0.0.0/33"], b"");
    assert_eq!(status.code(), Some(2), "{err}");
}

#[test]
fn a_stalled_client_is_cut_at_the_handshake_deadline() {
    let dir = TempDir::new("stall");
    let key = make_key(&dir, "k.key", None);
    let (_server, ep) = serve(&["--key-file", &key, "--handshake-timeout", "0.3"]);
    let mut stalled = tcp(&ep);
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert_eq!(got.len(), 32, "only the challenge");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
}

#[test]
fn listen_and_connect_authenticate_over_tls() {
    let dir = TempDir::new("listen-tls");
    let (certs, fingerprint) = make_certs(&dir);
    let key = make_key(&dir, "k.key", None);
    let mut args = vec![
        "listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--key-file".to_owned(),
        key.clone(),
    ];
    args.extend(tls_flags(&certs));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut listener = Proc::spawn(&args);
    listener.stderr.wait_for("listening line", |seen| {
        !crate::support::listening(seen).is_empty()
    });
    let ep = crate::support::listening(&listener.stderr.seen).remove(0);
    let (status, _, err) = run(
        &[
            "connect",
            "--pin",
            &fingerprint,
            "--key-file",
            &key,
            "--send-only",
            &ep,
        ],
        b"over tls\n",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    let (status, out, _) = listener.wait();
    assert_eq!((status.code(), out.as_str()), (Some(0), "over tls\n"));
}

#[test]
fn security_flags_on_datagram_endpoints_are_usage_errors() {
    let dir = TempDir::new("dgram-sec");
    let key = make_key(&dir, "k.key", None);
    let (status, _, err) = run(
        &[
            "serve",
            "echo",
            "--listen",
            "udp://127.0.0.1:0",
            "--key-file",
            &key,
        ],
        b"",
    );
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, _, err) = run(&["connect", "--insecure", "udp://127.0.0.1:9"], b"");
    assert_eq!(status.code(), Some(2), "{err}");
}

#[test]
fn a_locked_out_device_is_told_for_how_long_and_others_at_its_address_are_not() {
    let dir = TempDir::new("auth-penalty");
    let one = make_key(&dir, "one.key", Some("robot-1"));
    let two = make_key(&dir, "two.key", Some("robot-2"));
    let key = dir.0.join("fleet.key");
    let fleet =
        std::fs::read_to_string(&one).expect("one") + &std::fs::read_to_string(&two).expect("two");
    std::fs::write(&key, fleet).expect("fleet");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let key = key.display().to_string();
    let other = make_key(&dir, "other.key", Some("robot-1"));
    let (_server, ep) = serve(&["--key-file", &key]);
    let (status, _, _) = run(
        &["connect", "--key-file", &other, "--device", "robot-1", &ep],
        b"",
    );
    assert_eq!(status.code(), Some(1));
    // Now even the right key is turned away for that device from that address (one guess per
    // penalty), with the reason and the time left...
    let (status, _, err) = run(
        &["connect", "--key-file", &key, "--device", "robot-1", &ep],
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused the connection: device \"robot-1\" failed authentication from this address and is locked out; try again in"),
        "{err}"
    );
    // ...but another robot on the same address is not held back.
    let (status, out, err) = run(
        &["connect", "--key-file", &key, "--device", "robot-2", &ep],
        b"hello\n",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.contains("HELLO"), "{out}");
}

#[test]
fn clients_say_what_a_mismatched_server_speaks() {
    let dir = TempDir::new("mismatch");
    let key = make_key(&dir, "fleet.key", Some("robot-1"));
    let (certs, _) = make_certs(&dir);
    let ca = format!("{certs}/ca.pem");
    let exec_server = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "exec",
            "--listen",
            "127.0.0.1:0",
            "--allow",
            "echo ...",
        ];
        args.extend_from_slice(extra);
        let (server, eps) = Proc::serve(&args);
        (server, eps[0].clone())
    };
    // A keyed exec server, asked without a key.
    let (_keyed, ep) = exec_server(&["--key-file", &key]);
    let (status, _, err) = run(&["exec", &ep, "-n", "--", "echo", "hi"], b"");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("this server asks for a key"), "{err}");
    // A keyed file server too.
    let root = dir.0.join("root");
    std::fs::create_dir(&root).expect("root");
    let root = root.display().to_string();
    let (_files, eps) = Proc::serve(&[
        "serve",
        "files",
        "--listen",
        "127.0.0.1:0",
        "--root",
        &root,
        "--key-file",
        &key,
    ]);
    let (status, _, err) = run(&["ls", &eps[0]], b"");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("this server asks for a key"), "{err}");
    // ... and with TLS it does not speak (another server: the first attempt's bytes were a
    // failed answer there, and its address now waits out a penalty).
    let (_keyed, ep) = exec_server(&["--key-file", &key]);
    let (status, _, err) = run(&["connect", &ep, "--ca", &ca], b"");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("this server does not speak TLS"), "{err}");
    // The tutorials' size-header server, asked in socketeer's protocol.
    let (_tutorial, ep) = exec_server(&["--no-auth", "--protocol", "size-header"]);
    let (status, _, err) = run(&["exec", &ep, "-n", "--", "echo", "hi"], b"");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("add --protocol size-header"), "{err}");
    // A TLS server, asked in plain text with a key: it waits for TLS; the deadline says so.
    let mut args = vec![
        "serve",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        &key,
    ];
    let tls = tls_flags(&certs);
    args.extend(tls.iter().map(String::as_str));
    let (_tls, eps) = Proc::serve(&args);
    let (status, _, err) = run(
        &[
            "connect",
            &eps[0],
            "--key-file",
            &key,
            "--device",
            "robot-1",
            "--timeout",
            "1",
        ],
        b"",
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("if the server speaks TLS, connect with --ca or --pin"),
        "{err}"
    );
}

#[test]
fn connect_at_a_terminal_without_a_key_says_so_instead_of_printing_the_challenge() {
    let dir = TempDir::new("tty-keyed");
    let key = make_key(&dir, "fleet.key", Some("robot-1"));
    let (_server, ep) = serve(&["--key-file", &key]);
    let script = format!(
        "{} connect {ep}; echo \"EXIT=$?\"; stty -a",
        crate::support::bin()
    );
    let Some(screen) = crate::support::at_terminal("connect to a keyed server", &script, "", "")
    else {
        return;
    };
    assert!(screen.contains("this server asks for a key"), "{screen}");
    assert!(screen.contains("EXIT=1"), "{screen}");
    crate::support::assert_terminal_restored(&screen);
}
