//! One remote command as a supervised process: spawned without a shell (unless the operator
//! opted in) with a cleared environment, in a fixed directory and its own process group; its
//! output read as it comes and capped; the whole group killed at the deadline, when the command
//! ends (no orphans), and when the supervisor is dropped (the client went away).
//!
//! The group is killed race-free: the leader's exit is observed through a pidfd *before* it is
//! reaped, so while the group is signalled its id cannot have been reused.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use super::policy::Prepared;

/// How much output is read at once.
const READ_SIZE: usize = 64 * 1024;
/// After the command ends, how long output still held open by an escaped descendant is read.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The process group of a running command. Dropping it kills the group unless the leader has
/// been reaped.
struct Group {
    pgid: Pid,
    /// Set (under the lock) just before the leader is reaped; from then on the group id may be
    /// reused by someone else and must not be signalled.
    reaped: Mutex<bool>,
}

impl Group {
    fn kill(&self) {
        let reaped = self
            .reaped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*reaped {
            // ESRCH (nobody left) is the normal case after the command ended.
            let _ = rustix::process::kill_process_group(self.pgid, Signal::KILL);
        }
    }

    fn mark_reaped(&self) {
        let mut reaped = self
            .reaped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Last chance for descendants that outlived the leader.
        let _ = rustix::process::kill_process_group(self.pgid, Signal::KILL);
        *reaped = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

/// What the supervisor reports while the command runs.
#[derive(Debug)]
pub(crate) enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The command and everything it left writing have finished; call [`Running::finish`].
    Done,
}

/// The summary of a finished command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) ending: Ending,
    pub(crate) timed_out: bool,
    pub(crate) truncated: bool,
    pub(crate) output_bytes: u64,
    pub(crate) duration: Duration,
}

/// A running command.
pub(crate) struct Running {
    child: Child,
    group: Arc<Group>,
    exit: AsyncFd<OwnedFd>,
    exited: bool,
    exited_at: Option<tokio::time::Instant>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    stdin: Option<ChildStdin>,
    max_output: u64,
    output_bytes: u64,
    truncated: bool,
    timed_out: Arc<std::sync::atomic::AtomicBool>,
    killer: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl Running {
    /// Spawns `prepared`; `with_stdin` gives it a pipe for stdin (else /dev/null).
    pub(crate) fn spawn(
        prepared: &Prepared,
        with_stdin: bool,
        timeout: Duration,
        max_output: u64,
    ) -> std::io::Result<Self> {
        let mut command = tokio::process::Command::new(&prepared.program);
        command
            .arg0(&prepared.argv[0])
            .args(&prepared.argv[1..])
            .env_clear()
            .envs(prepared.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&prepared.cwd)
            .process_group(0)
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let raw = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("the command has no process id"))?;
        let group = Arc::new(Group {
            pgid: raw,
            reaped: Mutex::new(false),
        });
        let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::NONBLOCK)?;
        // `AsyncFd::new` is deprecated because an arbitrary `T` may change or close its
        // descriptor behind the reactor's back; an `OwnedFd` that only the `AsyncFd` holds
        // cannot, and the replacement (`register`) is `unsafe`, which this workspace denies.
        #[allow(deprecated)]
        let exit = AsyncFd::new(pidfd)?;
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killer = tokio::spawn({
            let group = Arc::clone(&group);
            let timed_out = Arc::clone(&timed_out);
            async move {
                tokio::time::sleep(timeout).await;
                timed_out.store(true, std::sync::atomic::Ordering::Relaxed);
                group.kill();
            }
        });
        Ok(Self {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            stdin: child.stdin.take(),
            child,
            group,
            exit,
            exited: false,
            exited_at: None,
            max_output,
            output_bytes: 0,
            truncated: false,
            timed_out,
            killer,
            started: Instant::now(),
        })
    }

    /// The command's stdin, to be fed by the caller (None without `with_stdin`, or once taken).
    pub(crate) fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The next piece of output, or `Done`. Cancel-safe: nothing read is lost if the future is
    /// dropped before it completes.
    pub(crate) async fn next(&mut self) -> Output {
        loop {
            if self.exited && self.stdout.is_none() && self.stderr.is_none() {
                return Output::Done;
            }
            let drain_deadline = self
                .exited_at
                .map_or_else(far_future, |at| at + DRAIN_AFTER_EXIT);
            let mut out_buf = BytesMut::with_capacity(READ_SIZE);
            let mut err_buf = BytesMut::with_capacity(READ_SIZE);
            tokio::select! {
                ready = self.exit.readable(), if !self.exited => {
                    if let Ok(mut guard) = ready {
                        guard.retain_ready();
                    }
                    self.exited = true;
                    self.exited_at = Some(tokio::time::Instant::now());
                    // Descendants the command left behind die with it.
                    self.group.kill();
                }
                read = read_some(self.stdout.as_mut(), &mut out_buf) => {
                    match read {
                        Some(data) => if let Some(out) = self.capped(data, Output::Stdout) {
                            return out;
                        },
                        None => self.stdout = None,
                    }
                }
                read = read_some(self.stderr.as_mut(), &mut err_buf) => {
                    match read {
                        Some(data) => if let Some(out) = self.capped(data, Output::Stderr) {
                            return out;
                        },
                        None => self.stderr = None,
                    }
                }
                () = tokio::time::sleep_until(drain_deadline), if self.exited => {
                    // Something escaped the group and holds the pipes: stop reading.
                    self.stdout = None;
                    self.stderr = None;
                }
            }
        }
    }

    /// Counts `data` against the cap; at the cap, keeps what fits and closes the pipes (the
    /// command's next write gets SIGPIPE).
    fn capped(&mut self, mut data: Bytes, wrap: fn(Bytes) -> Output) -> Option<Output> {
        let room = self.max_output - self.output_bytes;
        if data.len() as u64 > room {
            data.truncate(room as usize);
            self.truncated = true;
            self.stdout = None;
            self.stderr = None;
        }
        self.output_bytes += data.len() as u64;
        (!data.is_empty()).then(|| wrap(data))
    }

    /// The output cap.
    pub(crate) fn max_output(&self) -> u64 {
        self.max_output
    }

    /// True once the cap was reached (the caller reports it after the last output).
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// Waits for the command to end (after `next` returned `Done`, this is immediate), reaps
    /// it, and reports how it ended.
    pub(crate) async fn finish(mut self) -> std::io::Result<Outcome> {
        self.stdout = None;
        self.stderr = None;
        self.stdin = None;
        if !self.exited {
            let _ = self.exit.readable().await?;
        }
        self.killer.abort();
        self.group.mark_reaped();
        let status = self.child.wait().await?;
        use std::os::unix::process::ExitStatusExt;
        let ending = match (status.code(), status.signal()) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(signal)) => Ending::Signaled(signal),
            (None, None) => Ending::Exited(-1),
        };
        Ok(Outcome {
            ending,
            timed_out: self.timed_out.load(std::sync::atomic::Ordering::Relaxed),
            truncated: self.truncated,
            output_bytes: self.output_bytes,
            duration: self.started.elapsed(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.killer.abort();
    }
}

/// Reads what is available from `pipe`; `None` at its end (or on an error). Pends forever when
/// there is no pipe, so a closed pipe's branch simply never fires.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<&mut R>,
    buf: &mut BytesMut,
) -> Option<Bytes> {
    let Some(pipe) = pipe else {
        return std::future::pending().await;
    };
    match pipe.read_buf(buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(buf.split().freeze()),
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}
