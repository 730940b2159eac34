//! Running the built `socketeer` binary: capture its output as it comes, wait for what it
//! prints (with a deadline, so a broken build fails instead of hanging), signal it, and kill
//! it on drop.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Every wait in these tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_socketeer")
}

/// One captured output stream.
pub struct Captured {
    chunks: Receiver<Vec<u8>>,
    pub seen: Vec<u8>,
    closed: bool,
}

impl Captured {
    fn spawn(mut source: impl Read + Send + 'static) -> Self {
        let (tx, chunks) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = source.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            chunks,
            seen: Vec::new(),
            closed: false,
        }
    }

    /// Takes in whatever has arrived, without waiting.
    pub fn poll(&mut self) {
        while let Ok(chunk) = self.chunks.try_recv() {
            self.seen.extend_from_slice(&chunk);
        }
    }

    /// Waits until `done(everything seen so far)` holds; panics at the deadline.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) -> String {
        let until = Instant::now() + DEADLINE;
        while !done(&self.seen) {
            let left = until.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) if !self.closed => {
                    self.closed = true;
                    if !done(&self.seen) {
                        panic!("stream closed waiting for {what}; saw: {}", self.text());
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; saw: {}", self.text()),
            }
        }
        self.text()
    }

    /// Waits until `needle` has appeared.
    pub fn wait_for_text(&mut self, needle: &str) -> String {
        self.wait_for(needle, |seen| {
            String::from_utf8_lossy(seen).contains(needle)
        })
    }

    /// Reads until the stream closes (the process exited or closed it).
    pub fn until_closed(&mut self) -> String {
        let until = Instant::now() + DEADLINE;
        while !self.closed {
            match self
                .chunks
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("output never closed; saw: {}", self.text())
                }
            }
        }
        self.text()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

/// A running `socketeer` process.
pub struct Proc {
    child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_program(bin(), args)
    }

    /// Runs another program (for example `prlimit` wrapping socketeer) with captured output.
    pub fn spawn_program(program: &str, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn socketeer");
        let stdout = Captured::spawn(child.stdout.take().expect("stdout"));
        let stderr = Captured::spawn(child.stderr.take().expect("stderr"));
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Runs `socketeer args...` with stderr going to `stderr` (not captured).
    pub fn spawn_with_stderr(args: &[&str], stderr: Stdio) -> Self {
        let mut child = Command::new(bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn socketeer");
        let stdout = Captured::spawn(child.stdout.take().expect("stdout"));
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr: Captured::spawn(std::io::empty()),
        }
    }

    /// Starts `socketeer serve ...` and returns it with the endpoints it printed.
    pub fn serve(args: &[&str]) -> (Self, Vec<String>) {
        let expected = args.iter().filter(|a| **a == "--listen").count().max(1);
        let mut proc = Self::spawn(args);
        proc.stdout
            .wait_for("listening lines", |seen| listening(seen).len() >= expected);
        let endpoints = listening(&proc.stdout.seen);
        (proc, endpoints)
    }

    pub fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(data).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.expect("kill").success());
    }

    /// SIGTERM, then the exit, which must be a success (stderr shown if not).
    pub fn stop_ok(self) {
        self.signal("TERM");
        let (status, _, err) = self.wait();
        assert!(status.success(), "{status}: {err}");
    }

    /// Waits for the process to exit (its output closing first) and returns its status.
    pub fn wait(mut self) -> (ExitStatus, String, String) {
        let out = self.stdout.until_closed();
        let err = self.stderr.until_closed();
        let status = self.child.wait().expect("wait");
        (status, out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only the process this test started, by its own handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The endpoints of the complete `listening on EP` lines in `output`.
pub fn listening(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("listening on "))
        .map(str::to_owned)
        .collect()
}

/// Runs `socketeer args...` to completion with `stdin` and returns (status, stdout, stderr).
pub fn run(args: &[&str], stdin: &[u8]) -> (ExitStatus, String, String) {
    let mut proc = Proc::spawn(args);
    // A program may end without reading its input (a client the server refused at once):
    // what it exits with is the answer, not the pipe it left.
    let stdin_pipe = proc.stdin.as_mut().expect("stdin open");
    match stdin_pipe
        .write_all(stdin)
        .and_then(|()| stdin_pipe.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("write stdin"),
    }
    proc.close_stdin();
    proc.wait()
}

/// "tcp://127.0.0.1:41873" -> "127.0.0.1:41873".
pub fn addr(endpoint: &str) -> String {
    endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .to_owned()
}

/// A blocking TCP client with a read deadline.
pub fn tcp(endpoint: &str) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr(endpoint)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
}

/// Sends one UDP datagram to `endpoint` from a fresh socket and returns the one reply.
pub fn udp_exchange(endpoint: &str, data: &[u8]) -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
    socket.send_to(data, addr(endpoint)).expect("send");
    let mut buf = [0u8; 65_536];
    let n = socket.recv(&mut buf).expect("udp reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut impl Read, n: usize) -> String {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("read reply");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads until EOF (a reset also ends it).
pub fn read_to_end(stream: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// True when `program` is on PATH; otherwise prints why the calling test skips.
pub fn have(program: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        // Straight to stderr, past libtest's capture, so a plain `cargo test` shows the skip.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: `{program}` is not installed (CI installs it via .ci/run)"
        );
    }
    found
}

/// A fresh temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("socketeer-cli-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }

    pub fn sock(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `done` until it holds, failing at the deadline.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The write end of a pipe whose reader has already gone (`| head -1` after head left), for a
/// child's stdout or stderr: the stdin pipe of a `true` that has exited. (`std::io::pipe` is newer than
/// the crate's minimum Rust version.)
pub fn closed_pipe() -> Stdio {
    let mut reader = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("run true");
    let writer = reader.stdin.take().expect("stdin pipe");
    reader.wait().expect("true exits");
    Stdio::from(writer)
}

/// Runs `sh -c script` on a pseudo-terminal (python3's `pty`), as a person at a terminal
/// would: once `marker` has appeared on the screen, types `typed`. Returns everything the
/// terminal showed, up to the script's end. `None` (after printing SKIPPED) without python3.
pub fn at_terminal(test: &str, script: &str, marker: &str, typed: &str) -> Option<String> {
    if !have("python3", test) {
        return None;
    }
    const DRIVER: &str = r#"
import os, pty, select, sys, time
script, marker, typed = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", script])
import fcntl, struct, termios
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
out, sent = b"", not typed
deadline = time.time() + 20
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 1.0)
    if not ready:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    if not sent and marker in out:
        os.write(fd, typed)
        sent = True
else:
    os.kill(pid, 9)  # never hang a test: the screen so far is the evidence
    out += b"\n[the terminal session did not end within 20 s]"
os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
"#;
    let out = Command::new("python3")
        .args(["-c", DRIVER, script, marker, typed])
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The terminal settings `stty -a` printed at the end of `screen` are a shell's usual ones:
/// echo, canonical input and signal keys on (a raw terminal left behind has them off).
pub fn assert_terminal_restored(screen: &str) {
    let settings = &screen[screen.rfind("speed ").expect("stty -a output")..];
    for flag in ["echo", "icanon", "isig"] {
        assert!(
            settings.split_whitespace().any(|w| w == flag),
            "terminal left with -{flag}: {screen}"
        );
    }
}
