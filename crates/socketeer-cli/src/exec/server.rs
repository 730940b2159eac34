//! `socketeer serve exec`: the tutorials' "simple ssh", made safe. Commands are split into
//! argv (no shell), checked against the allow list, run in their own process group with a
//! cleared environment, killed with their children at the deadline or when the client leaves,
//! and their output capped. Two protocols: socketeer's native one (stdout, stderr and stdin
//! streamed in frames, then the exit status) and the tutorial's size-header exchange.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use socketeer::codec::FrameCodec;
use socketeer::{Connection, Handler, Result};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::policy::{Policy, Prepared, Rule};
use super::process::{Ending, Outcome, Output, Running};
use super::sessions::Sessions;
use super::wire::{self, FromClient, Report};
use super::{sessions, size_header};
use crate::cli::{Allowed, ExecArgs, ExecProtocol};
use crate::failure::UsageError;
use crate::serve::{NoDatagrams, Service, serve};

/// The service's settings, shared by every connection.
pub(crate) struct Exec {
    pub(crate) policy: Policy,
    pub(crate) timeout: Duration,
    pub(crate) max_output: u64,
    pub(crate) sessions: Sessions,
}

impl Exec {
    /// Checks a request against the policy and the session caps, logging refusals.
    pub(super) fn admit(
        &self,
        conn: &Connection,
        text: &str,
    ) -> std::result::Result<(Prepared, sessions::Ticket), Report> {
        let prepared = self.policy.prepare(text).map_err(|refusal| {
            tracing::warn!(peer = %conn.peer_addr(), device = conn.device(), command = %text.escape_debug(), "{refusal}");
            Report::refused(refusal.code, refusal.message)
        })?;
        let owner = match (conn.device(), conn.peer_addr().ip()) {
            (Some(device), _) => format!("device {device}"),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => "local".to_owned(),
        };
        let ticket = self.sessions.enter(&owner).map_err(|why| {
            tracing::warn!(peer = %conn.peer_addr(), device = conn.device(), "command refused: {why}");
            let mut report = Report::refused(75, why);
            report.status = "failed".into();
            report
        })?;
        if self.policy.shell {
            tracing::warn!(peer = %conn.peer_addr(), device = conn.device(), command = %text.escape_debug(), "--shell: running through /bin/sh");
        }
        Ok((prepared, ticket))
    }

    pub(super) fn spawn(&self, prepared: &Prepared, with_stdin: bool) -> std::io::Result<Running> {
        Running::spawn(prepared, with_stdin, self.timeout, self.max_output)
    }
}

/// Logs a finished request: peer, device, argv, status, duration.
pub(super) fn log_outcome(conn: &Connection, prepared: &Prepared, outcome: &Outcome) {
    let status = match outcome.ending {
        Ending::Exited(code) => format!("exit {code}"),
        Ending::Signaled(signal) => format!("signal {signal}"),
    };
    tracing::info!(
        peer = %conn.peer_addr(),
        device = conn.device(),
        argv = ?prepared.argv,
        %status,
        timed_out = outcome.timed_out,
        truncated = outcome.truncated,
        output_bytes = outcome.output_bytes,
        duration_ms = outcome.duration.as_millis() as u64,
        "command finished"
    );
}

fn report(outcome: &Outcome) -> Report {
    let (status, code, signal) = match outcome.ending {
        Ending::Exited(code) => ("exited", Some(code), None),
        Ending::Signaled(signal) => ("signaled", None, Some(signal)),
    };
    Report {
        status: status.into(),
        code,
        signal,
        timed_out: outcome.timed_out,
        truncated: outcome.truncated,
        message: None,
    }
}

/// The native protocol, one request per connection.
#[derive(Clone)]
pub(crate) struct NativeHandler(pub(crate) Arc<Exec>);

impl Handler for NativeHandler {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let mut codec = FrameCodec::new(wire::MAX_FRAME);
        let Some(first) = conn.read_with(&mut codec).await? else {
            return Ok(());
        };
        let text = match wire::from_client(&first) {
            Some(FromClient::Command(text)) => text,
            _ => {
                return finish(
                    conn,
                    &Report::refused(126, "protocol error: the first frame must be a command"),
                )
                .await;
            }
        };
        let (prepared, _ticket) = match self.0.admit(conn, &text) {
            Ok(admitted) => admitted,
            Err(report) => return finish(conn, &report).await,
        };
        let mut running = match self.0.spawn(&prepared, true) {
            Ok(running) => running,
            Err(err) => {
                tracing::warn!(peer = %conn.peer_addr(), argv = ?prepared.argv, "cannot start the command: {err}");
                let mut report = Report::refused(126, format!("cannot start the command: {err}"));
                report.status = "failed".into();
                return finish(conn, &report).await;
            }
        };
        let stdin = feed_stdin(running.take_stdin());
        let result = stream(conn, &mut codec, &mut running, stdin).await;
        // On any error (the client left, a bad frame) `running` is dropped here and the whole
        // group is killed.
        result?;
        let outcome = running.finish().await?;
        log_outcome(conn, &prepared, &outcome);
        finish(conn, &report(&outcome)).await
    }
}

/// Relays output to the client and the client's stdin frames to the command, until the command
/// and its output are done.
async fn stream(
    conn: &mut Connection,
    codec: &mut FrameCodec,
    running: &mut Running,
    stdin: mpsc::Sender<Option<Bytes>>,
) -> Result<()> {
    let mut pending: Option<Option<Bytes>> = None;
    loop {
        tokio::select! {
            output = running.next() => match output {
                Output::Stdout(data) => send_frame(conn, wire::STDOUT, &data).await?,
                Output::Stderr(data) => send_frame(conn, wire::STDERR, &data).await?,
                Output::Done => break,
            },
            permit = stdin.reserve(), if pending.is_some() => {
                match permit {
                    Ok(permit) => permit.send(pending.take().flatten()),
                    // The command closed its stdin: drop what the client sends from now on.
                    Err(_) => pending = None,
                }
            }
            frame = conn.read_with(codec), if pending.is_none() => {
                let Some(frame) = frame? else {
                    tracing::info!(peer = %conn.peer_addr(), "client left while its command ran: killing it");
                    return Err(socketeer::Error::new(socketeer::ErrorKind::UnexpectedEof, "client left mid-command"));
                };
                match wire::from_client(&frame) {
                    Some(FromClient::Stdin) => pending = Some(Some(frame.slice(1..))),
                    Some(FromClient::StdinEnd) => pending = Some(None),
                    _ => return Err(socketeer::Error::new(
                        socketeer::ErrorKind::InvalidData,
                        "unexpected frame while a command runs",
                    )),
                }
                if stdin.is_closed() {
                    pending = None;
                }
            }
        }
    }
    if running.truncated() {
        let notice = format!(
            "socketeer: output truncated at {} bytes (server --max-output)\n",
            running.max_output()
        );
        send_frame(conn, wire::STDERR, notice.as_bytes()).await?;
    }
    Ok(())
}

/// A task that writes what the client sends to the command's stdin (`None` closes it). A
/// command that does not read its stdin fills the channel, and the client's frames wait.
fn feed_stdin(stdin: Option<tokio::process::ChildStdin>) -> mpsc::Sender<Option<Bytes>> {
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(8);
    tokio::spawn(async move {
        let Some(mut stdin) = stdin else { return };
        while let Some(Some(data)) = rx.recv().await {
            if stdin.write_all(&data).await.is_err() {
                break;
            }
        }
        // Dropping stdin closes it: the command reads EOF.
    });
    tx
}

/// Sends one frame of the native protocol at once.
async fn send_frame(conn: &mut Connection, tag: u8, payload: &[u8]) -> Result<()> {
    conn.write_frame(&wire::frame(tag, payload)).await?;
    conn.flush().await
}

/// Sends the last frame.
async fn finish(conn: &mut Connection, report: &Report) -> Result<()> {
    let json = serde_json::to_vec(report).unwrap_or_default();
    send_frame(conn, wire::EXIT, &json).await
}

pub(crate) async fn run(mut args: ExecArgs) -> anyhow::Result<i32> {
    // `--allow` names programs here, and networks as everywhere.
    let mut programs = Vec::new();
    args.serve.guard.allow.retain(|entry| match entry {
        Allowed::Program(program) => {
            programs.push(program.clone());
            false
        }
        Allowed::Net(_) => true,
    });
    let rules = programs
        .iter()
        .map(|text| Rule::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError)?;
    if programs.is_empty() && !args.allow_any {
        return Err(UsageError(
            "serve exec: say which programs clients may run: --allow PROGRAM (repeatable) or --allow-any".into(),
        )
        .into());
    }
    let guard = &args.serve.guard;
    if guard.key_file.is_none() {
        if !args.no_auth {
            return Err(UsageError(
                "serve exec: refusing to run commands for anyone who connects: give --key-file FILE (make one with `socketeer keygen`), or --no-auth on a loopback or Unix endpoint".into(),
            )
            .into());
        }
        for written in &args.serve.listen {
            let ep = crate::failure::parse_endpoint(written)?;
            if !ep.is_local() {
                return Err(UsageError(format!(
                    "serve exec: --no-auth is only allowed on loopback and Unix endpoints, not {ep}"
                ))
                .into());
            }
        }
    }
    let cwd = match &args.cwd {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let cwd = std::fs::canonicalize(&cwd)
        .with_context(|| format!("--cwd {}: cannot use it", cwd.display()))?;
    if !cwd.is_dir() {
        return Err(UsageError(format!("--cwd {}: not a directory", cwd.display())).into());
    }
    if args.shell {
        tracing::warn!(
            "--shell: every command goes through /bin/sh -c; clients can use pipes, redirections and \
             substitutions, and the allow list no longer limits what runs"
        );
    }
    if args.allow_any {
        tracing::warn!("--allow-any: clients may run any program on the fixed PATH");
    }
    let unix = args.serve.listen.iter().any(|l| l.starts_with("unix://"));
    if args.no_auth && unix && args.serve.socket_mode & 0o006 != 0 {
        tracing::warn!(
            socket_mode = format!("{:o}", args.serve.socket_mode),
            "--no-auth on a Unix socket others may use: every user of this machine can run the allowed commands"
        );
    }
    let exec = Arc::new(Exec {
        policy: Policy {
            allow: rules,
            allow_any: args.allow_any,
            shell: args.shell,
            env: Policy::environment(&args.env),
            cwd: cwd.clone(),
        },
        timeout: args.cmd_timeout,
        max_output: args.max_output,
        sessions: Sessions::new(
            args.max_sessions as usize,
            args.max_sessions_per_client as usize,
        ),
    });
    tracing::info!(cwd = %cwd.display(), allow = ?programs, timeout = ?args.cmd_timeout, max_output = args.max_output, "exec policy");
    match args.protocol {
        ExecProtocol::Native => serve_exec(&args, NativeHandler(exec)).await,
        ExecProtocol::SizeHeader => serve_exec(&args, size_header::SizeHeaderHandler(exec)).await,
    }
}

async fn serve_exec<H: Handler + Clone + Sync>(args: &ExecArgs, handler: H) -> anyhow::Result<i32> {
    let service = Service {
        name: "exec",
        default_endpoint: "127.0.0.1:9998",
        make_handler: move || handler.clone(),
        datagram: None::<NoDatagrams>,
        auth_failures: None,
    };
    serve(&args.serve, service).await
}
