//! The tutorials' own clients and the operators' tools against socketeer: python3, nc, socat.
//! Each test says it skipped (and why) when its program is missing; CI installs them all.

use std::process::{Command, Stdio};

use crate::support::{Proc, TempDir, have, run};

fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn port(ep: &str) -> &str {
    ep.rsplit(':').next().expect("port")
}

#[test]
fn the_tutorials_python_clients() {
    if !have("python3", "the_tutorials_python_clients") {
        return;
    }
    // Fixed reply, then the server closes.
    let (_s, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--reply",
        "I am server.",
        "--one-shot",
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = python(&format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_STREAM)\ns.connect(('127.0.0.1',{}))\n\
         s.send(b'hello')\nprint(s.recv(1024))\nprint(s.recv(1024))\ns.close()",
        port(&eps[0])
    ));
    assert_eq!(out, "b'I am server.'\nb''\n");

    // Upper-case echo keeps the Chinese bytes.
    let (_s, eps) = Proc::serve(&["serve", "echo", "--upper", "--listen", "127.0.0.1:0"]);
    let out = python(&format!(
        "import socket\ns=socket.create_connection(('127.0.0.1',{}))\ns.sendall('hello 欢迎'.encode())\n\
         print(s.recv(1024).decode())",
        port(&eps[0])
    ));
    assert_eq!(out, "HELLO 欢迎\n");

    // The telnet-style threaded server: welcome, then OK... replies.
    let (_s, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--welcome",
        r"Welcome to the server. Type something and hit enter\n",
        "--prefix",
        "OK...",
    ]);
    let out = python(&format!(
        "import socket\ns=socket.create_connection(('127.0.0.1',{}))\nf=s.makefile('rb')\n\
         print(f.readline())\ns.sendall(b'line\\n')\nprint(f.readline())",
        port(&eps[0])
    ));
    assert_eq!(
        out,
        "b'Welcome to the server. Type something and hit enter\\n'\nb'OK...line\\n'\n"
    );

    // UDP, as the tutorials' sendto/recvfrom client.
    let (_s, eps) = Proc::serve(&["serve", "echo", "--upper", "--listen", "udp://127.0.0.1:0"]);
    let out = python(&format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(20)\n\
         s.sendto(b'udp hi',('127.0.0.1',{}))\nprint(s.recvfrom(1024)[0])",
        port(&eps[0])
    ));
    assert_eq!(out, "b'UDP HI'\n");
}

#[test]
fn nc_as_client_and_as_server() {
    if !have("nc", "nc_as_client_and_as_server") {
        return;
    }
    let (_s, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--lines",
        "--upper",
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'from nc\\n' | nc -N 127.0.0.1 {}",
            port(&eps[0])
        ))
        .stderr(Stdio::inherit())
        .output()
        .expect("nc");
    // nc -N half-closes at stdin's end; the echo server then closes, and nc exits.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "FROM NC\n");

    // socketeer connect to an `nc -l` server.
    let nc_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let nc = Command::new("nc")
        .args(["-l", "127.0.0.1", &nc_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nc -l");
    let mut sent = false;
    for _ in 0..200 {
        // nc -l binds in its own time; retry the connect until it listens.
        let (status, _, _) = run(
            &["connect", "--send-only", &format!("127.0.0.1:{nc_port}")],
            b"to nc\n",
        );
        if status.success() {
            sent = true;
            break;
        }
        std::thread::yield_now();
    }
    assert!(sent, "could not reach nc -l");
    let out = nc.wait_with_output().expect("nc output");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to nc\n");
}

#[test]
fn socat_over_unix_and_udp() {
    if !have("socat", "socat_over_unix_and_udp") {
        return;
    }
    let dir = TempDir::new("socat");
    let path = dir.sock("e.sock");
    let (_s, eps) = Proc::serve(&[
        "serve",
        "echo",
        "--upper",
        "--listen",
        &format!("unix://{path}"),
        "--listen",
        "udp://127.0.0.1:0",
    ]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'via socat\\n' | socat -t 5 - UNIX-CONNECT:{path}"
        ))
        .output()
        .expect("socat");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "VIA SOCAT\n");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'dgram' | socat -t 2 - UDP:127.0.0.1:{}",
            port(&eps[1])
        ))
        .output()
        .expect("socat");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "DGRAM");
}
