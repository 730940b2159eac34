//! `socketeer listen EP`: like nc -l. One client joined to stdin/stdout; with `--keep-open`,
//! many at once, stdin broadcast to all and everything they send printed. The bound address
//! goes to stderr, because stdout carries the data.

use std::sync::Arc;

use bytes::Bytes;
use socketeer::{
    BindOptions, Connection, DatagramSocket, Gate, Handler, Limits, Listener, Result, Server,
    Signals,
};
use tokio::sync::{Mutex, broadcast, mpsc};

use crate::cli::{ListenArgs, PipeArgs};
use crate::connect::interactive_limits;
use crate::failure::{UsageError, nc_endpoint};
use crate::guard::ServerGuard;
use crate::pipe::{self, Output, StdinChunks, Target};

/// How long a `--keep-open` client may take nothing we send before it is closed.
const STALLED_WRITE: std::time::Duration = std::time::Duration::from_secs(60);

/// Broadcast backlog per client; a client that falls this far behind is dropped.
const BROADCAST_BACKLOG: usize = 256;

pub(crate) async fn run(args: ListenArgs) -> anyhow::Result<i32> {
    let endpoint = nc_endpoint(&args.endpoint, args.port.as_deref(), true)?;
    let mut options = BindOptions::default();
    options.unix_mode = args.socket_mode;
    let mut signals = Signals::new()?;
    let guard = ServerGuard::from_args(&args.guard)?;
    if guard.needs_stream() && !endpoint.is_stream() {
        return Err(UsageError(format!(
            "{endpoint}: --key-file and --tls-cert need a stream endpoint"
        ))
        .into());
    }
    let work = async {
        if !endpoint.is_stream() {
            let socket = DatagramSocket::bind(&endpoint, &options).await?;
            errln!("listening on {}", socket.local_endpoint());
            return pipe::datagrams(socket, Target::LastSender(Mutex::new(None)), &args.pipe).await;
        }
        let listener = Listener::bind(&endpoint, &options).await?;
        errln!("listening on {}", listener.local_endpoint());
        let gate = guard.gate_for(listener.local_endpoint());
        let mut limits = interactive_limits();
        limits.handshake_timeout = guard.handshake_timeout;
        if args.keep_open {
            return keep_open(listener, gate, limits, &args).await;
        }
        let conn = first_client(&listener, &gate, &limits).await?;
        drop(listener);
        tracing::info!(peer = %conn.peer_addr(), device = conn.device(), "connection");
        pipe::stream(conn, &args.pipe).await
    };
    // A signal ends the listener cleanly, so a Unix socket file is removed.
    tokio::select! {
        result = work => result?,
        signal = signals.recv() => tracing::info!(signal, "stopping"),
    }
    Ok(0)
}

/// The first client that gets through the gate (access, TLS, authentication).
async fn first_client(
    listener: &Listener,
    gate: &Gate,
    limits: &Limits,
) -> anyhow::Result<Connection> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let startup = match gate.admit(&peer) {
            Ok(startup) => startup,
            Err(why) => {
                socketeer::server::refuse(stream, &peer, &why);
                continue;
            }
        };
        match gate.open(stream, peer.clone(), limits, None, startup).await {
            Ok(conn) => return Ok(conn),
            Err(err) => tracing::warn!(%peer, error = %err, "refused"),
        }
    }
}

/// Serves clients until a signal: stdin to all, all of them to stdout.
async fn keep_open(
    listener: Listener,
    gate: Gate,
    mut limits: Limits,
    args: &ListenArgs,
) -> anyhow::Result<()> {
    let (to_all, template) = broadcast::channel::<Bytes>(BROADCAST_BACKLOG);
    let (to_stdout, mut printed) = mpsc::channel::<Bytes>(64);
    let relay = Relay {
        stdin: Arc::new(Mutex::new(template)),
        stdout: to_stdout,
        pipe: args.pipe.clone(),
    };
    limits.max_connections = args.max_conns as usize;
    let server = Server::new(listener, move || relay.clone())
        .limits(limits)
        .gate(gate);
    let shutdown = server.shutdown_handle();
    // Served here, not spawned: when a signal drops this future, the server (and with it the
    // listener, whose Unix socket file goes) is dropped too.
    let serving = server.serve_forever();
    tokio::pin!(serving);

    let mut output = Output::new(&args.pipe);
    let printer = async {
        while let Some(chunk) = printed.recv().await {
            if !output.write(&chunk).await? {
                break;
            }
        }
        anyhow::Ok(())
    };
    let reader = async {
        if !args.pipe.recv_only {
            let mut stdin = StdinChunks::new(&args.pipe);
            while let Some(chunk) = stdin.next().await? {
                // No receivers yet is fine: nobody to tell.
                let _ = to_all.send(chunk);
            }
        }
        drop(to_all);
        std::future::pending::<anyhow::Result<()>>().await
    };
    let result = tokio::select! {
        result = printer => result,
        result = reader => result,
        result = &mut serving => return Ok(result?),
    };
    shutdown.trigger();
    let _ = serving.await;
    result
}

/// One client of `listen --keep-open`.
#[derive(Clone)]
struct Relay {
    stdin: Arc<Mutex<broadcast::Receiver<Bytes>>>,
    stdout: mpsc::Sender<Bytes>,
    pipe: PipeArgs,
}

impl Handler for Relay {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        tracing::info!(peer = %conn.peer_addr(), device = conn.device(), "connection");
        // A person may stay silent for ever; a client that takes nothing we send for a minute
        // is gone, and is closed rather than holding its task.
        conn.set_idle_timeout(Some(STALLED_WRITE));
        conn.set_read_idle_timeout(None);
        let mut from_stdin = self.stdin.lock().await.resubscribe();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                chunk = conn.read_chunk() => match chunk? {
                    Some(chunk) if !self.pipe.send_only => {
                        if self.stdout.send(chunk).await.is_err() {
                            break;
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                message = from_stdin.recv(), if stdin_open => match message {
                    Ok(data) => conn.send(&data).await?,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(peer = %conn.peer_addr(), missed = n, "client too slow for stdin; dropping it");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => stdin_open = false,
                },
            }
        }
        tracing::info!(peer = %conn.peer_addr(), "disconnected");
        Ok(())
    }
}
