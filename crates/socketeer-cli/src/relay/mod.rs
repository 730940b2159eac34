//! `socketeer relay LISTEN TARGET`: socat's `LISTEN,fork TARGET` with socketeer's guards. Every
//! client accepted on LISTEN (through the server's TLS, keys, access list, caps and timeouts)
//! gets its own connection to TARGET (through the client's TLS and keys), and bytes are copied
//! both ways until both sides are done. Datagram listeners keep one session per client address,
//! each with its own connection to TARGET, ended by the idle timeout.

mod copy;
mod counters;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use socketeer::{
    ClientOptions, Connection, Datagram, DatagramHandler, DatagramSocket, Endpoint, ErrorKind,
    Handler, PeerAddr, Shutdown,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::RelayArgs;
use crate::failure::{UsageError, parse_endpoint};
use crate::serve::{Runner, Service};

use copy::{Activity, Failure, MAX_DATAGRAM, Meter, Side};
use counters::{Counters, End, Unreachable};

/// Datagrams waiting for one session's target before more are dropped.
const SESSION_QUEUE: usize = 256;

/// What every connection of one relay shares.
struct Relay {
    target: Endpoint,
    options: ClientOptions,
    retries: u32,
    retry_delay: Duration,
    idle: Option<Duration>,
    counters: Counters,
    /// With --connect-once: the switch to pull when the one connection ends.
    once: Option<Shutdown>,
    /// Most datagram sessions at once.
    max_sessions: usize,
}

/// A connected target.
enum Target {
    Stream(Box<Connection>),
    Datagram(DatagramSocket),
}

impl Relay {
    /// Connects to the target, trying again after a refusal or timeout as configured.
    async fn connect(&self) -> Result<Target, socketeer::Error> {
        let mut attempt = 0;
        loop {
            let result = if self.target.is_stream() {
                socketeer::client::connect_with(&self.target, &self.options)
                    .await
                    .map(|conn| Target::Stream(Box::new(conn)))
            } else {
                match tokio::time::timeout(
                    self.options.timeout,
                    DatagramSocket::connect(&self.target),
                )
                .await
                {
                    Ok(connected) => connected.map(Target::Datagram),
                    Err(_) => Err(socketeer::Error::new(
                        ErrorKind::Timeout,
                        format!("connecting to {} timed out", self.target),
                    )),
                }
            };
            match result {
                Err(err)
                    if attempt < self.retries
                        && matches!(err.kind(), ErrorKind::Connect | ErrorKind::Timeout) =>
                {
                    attempt += 1;
                    tracing::debug!(target = %self.target, error = %err, attempt, "connect failed; trying again");
                    tokio::time::sleep(self.retry_delay).await;
                }
                done => return done,
            }
        }
    }

    fn unreachable(&self, err: &socketeer::Error) -> (End, String) {
        self.counters.unreachable(Unreachable::of(err));
        let why = match err.io_error() {
            Some(io) if !err.to_string().contains(&io.to_string()) => format!("{err}: {io}"),
            _ => err.to_string(),
        };
        (End::NoTarget, why)
    }
}

/// One relayed connection or session: what its log line says when it ends.
struct Tally {
    relay: Arc<Relay>,
    peer: String,
    began: Instant,
    to_target: AtomicU64,
    to_client: AtomicU64,
    activity: Activity,
    end: Option<(End, String)>,
}

impl Tally {
    fn begin(relay: &Arc<Relay>, peer: &PeerAddr) -> Tally {
        relay.counters.connections.fetch_add(1, Relaxed);
        relay.counters.active.fetch_add(1, Relaxed);
        Tally {
            relay: Arc::clone(relay),
            peer: peer.to_string(),
            began: Instant::now(),
            to_target: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            activity: Activity::new(),
            end: None,
        }
    }

    fn up(&self) -> Meter<'_> {
        Meter {
            mine: &self.to_target,
            all: &self.relay.counters.to_target,
            activity: &self.activity,
        }
    }

    fn down(&self) -> Meter<'_> {
        Meter {
            mine: &self.to_client,
            all: &self.relay.counters.to_client,
            activity: &self.activity,
        }
    }

    /// The outcome of the copies (or of the idle timeout).
    fn ended(&mut self, outcome: Option<Result<(), Failure>>) {
        self.end = Some(match outcome {
            None => (End::Idle, String::new()),
            Some(Ok(())) => (End::Closed, String::new()),
            Some(Err(failure)) => (failure.end(), failure.error.to_string()),
        });
    }

    /// Logs the connection's line and counts how it ended.
    fn finish(&mut self) {
        let (end, detail) = self.end.take().unwrap_or((End::Shutdown, String::new()));
        let counters = &self.relay.counters;
        counters.active.fetch_sub(1, Relaxed);
        counters.ended(end);
        let target = &self.relay.target;
        let (up, down) = (self.to_target.load(Relaxed), self.to_client.load(Relaxed));
        let secs = (self.began.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        if end == End::NoTarget {
            tracing::warn!(peer = %self.peer, %target, end = end.name(), error = %detail, "cannot reach the target; client closed");
        } else if detail.is_empty() {
            tracing::info!(peer = %self.peer, %target, to_target = up, to_client = down, secs, end = end.name(), "connection ended");
        } else {
            tracing::info!(peer = %self.peer, %target, to_target = up, to_client = down, secs, end = end.name(), error = %detail, "connection ended");
        }
        if let Some(once) = &self.relay.once {
            once.trigger();
        }
    }
}

/// The stream side: one handler per accepted connection.
struct RelayHandler {
    relay: Arc<Relay>,
    tally: Option<Tally>,
}

impl Handler for RelayHandler {
    async fn handle(&mut self, conn: &mut Connection) -> socketeer::Result<()> {
        let tally = self
            .tally
            .insert(Tally::begin(&self.relay, conn.peer_addr()));
        let relay = Arc::clone(&self.relay);
        let target = match relay.connect().await {
            Ok(target) => target,
            Err(err) => {
                tally.end = Some(relay.unreachable(&err));
                return Ok(());
            }
        };
        // Bytes the handshake read ahead of the data are the data's start.
        let ahead = Bytes::copy_from_slice(conn.buffered());
        let client = conn.stream_mut();
        let counted = &*tally;
        let copies: std::pin::Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + '_>> =
            match target {
                Target::Stream(target) => Box::pin(async move {
                    let (mut target, target_ahead) = target.into_parts();
                    if !ahead.is_empty() {
                        target
                            .write_all(&ahead)
                            .await
                            .map_err(Failure::on(Side::Target))?;
                        counted.up().add(ahead.len());
                    }
                    if !target_ahead.is_empty() {
                        client
                            .write_all(&target_ahead)
                            .await
                            .map_err(Failure::on(Side::Client))?;
                        counted.down().add(target_ahead.len());
                    }
                    copy::streams(client, &mut target, counted.up(), counted.down()).await
                }),
                Target::Datagram(target) => Box::pin(async move {
                    if !ahead.is_empty() {
                        target
                            .send(&ahead)
                            .await
                            .map_err(Failure::on(Side::Target))?;
                        counted.up().add(ahead.len());
                    }
                    copy::stream_and_datagrams(client, &target, counted.up(), counted.down()).await
                }),
            };
        let outcome = tokio::select! {
            done = copies => Some(done),
            () = counted.activity.idle_for(relay.idle) => None,
        };
        tally.ended(outcome);
        Ok(())
    }

    async fn finish(&mut self, _conn: &mut Connection) {
        if let Some(mut tally) = self.tally.take() {
            tally.finish();
        }
    }
}

impl Drop for RelayHandler {
    fn drop(&mut self) {
        // A connection cancelled past the grace period, whose finish did not run.
        if let Some(mut tally) = self.tally.take() {
            tally.finish();
        }
    }
}

/// The datagram side: datagrams from each client address go to that address's session.
#[derive(Clone)]
struct RelayDatagrams {
    relay: Arc<Relay>,
    sessions: Arc<Mutex<HashMap<PeerAddr, mpsc::Sender<Bytes>>>>,
    shutdown: Shutdown,
}

impl DatagramHandler for RelayDatagrams {
    async fn handle(&self, datagram: Datagram) -> socketeer::Result<()> {
        let counters = &self.relay.counters;
        let data = datagram.data().clone();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = sessions.get(datagram.peer()) {
            match queue.try_send(data) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    counters.dropped_datagrams.fetch_add(1, Relaxed);
                    return Ok(());
                }
                // The session is ending: a new one starts.
                Err(mpsc::error::TrySendError::Closed(data)) => {
                    sessions.remove(datagram.peer());
                    return self.start(&mut sessions, datagram, data);
                }
            }
        }
        self.start(&mut sessions, datagram, data)
    }
}

impl RelayDatagrams {
    fn start(
        &self,
        sessions: &mut HashMap<PeerAddr, mpsc::Sender<Bytes>>,
        datagram: Datagram,
        data: Bytes,
    ) -> socketeer::Result<()> {
        let counters = &self.relay.counters;
        if sessions.len() >= self.relay.max_sessions || self.shutdown.is_triggered() {
            counters.dropped_datagrams.fetch_add(1, Relaxed);
            tracing::debug!(peer = %datagram.peer(), "datagram dropped: too many sessions");
            return Ok(());
        }
        if datagram.peer() == &PeerAddr::Unix(None) {
            counters.dropped_datagrams.fetch_add(1, Relaxed);
            tracing::debug!(
                "datagram dropped: its sender's socket is unnamed and cannot be answered"
            );
            return Ok(());
        }
        let (queue, rx) = mpsc::channel(SESSION_QUEUE);
        let _ = queue.try_send(data);
        sessions.insert(datagram.peer().clone(), queue.clone());
        let this = self.clone();
        self.shutdown.spawn(async move {
            let mut tally = Tally::begin(&this.relay, datagram.peer());
            let outcome = tokio::select! {
                outcome = session(&this.relay, &datagram, rx, &tally) => outcome,
                () = this.shutdown.triggered() => (End::Shutdown, String::new()),
            };
            tally.end = Some(outcome);
            let mut sessions = this.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if sessions
                .get(datagram.peer())
                .is_some_and(|q| q.same_channel(&queue))
            {
                sessions.remove(datagram.peer());
            }
            drop(sessions);
            tally.finish();
        });
        Ok(())
    }
}

/// One datagram client's session: its datagrams to the target, the target's answers back.
async fn session(
    relay: &Relay,
    client: &Datagram,
    mut rx: mpsc::Receiver<Bytes>,
    tally: &Tally,
) -> (End, String) {
    let target = match relay.connect().await {
        Ok(target) => target,
        Err(err) => return relay.unreachable(&err),
    };
    let (up, down) = (tally.up(), tally.down());
    let counters = &relay.counters;
    // An answer to the client; one it cannot take is dropped and counted.
    let answer = |data: &[u8]| {
        let client = client.clone();
        let data = Bytes::copy_from_slice(data);
        let down = &down;
        async move {
            if client.reply(&data).await.is_err() {
                counters.dropped_datagrams.fetch_add(1, Relaxed);
            } else {
                down.add(data.len());
            }
        }
    };
    let copies = async {
        match target {
            Target::Datagram(target) => {
                let to_target = async {
                    while let Some(data) = rx.recv().await {
                        target
                            .send(&data)
                            .await
                            .map_err(Failure::on(Side::Target))?;
                        up.add(data.len());
                    }
                    Ok::<_, Failure>(())
                };
                let to_client = async {
                    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
                    loop {
                        let n = target
                            .recv(&mut buf)
                            .await
                            .map_err(Failure::on(Side::Target))?;
                        answer(&buf[..n]).await;
                    }
                };
                tokio::select! {
                    done = to_target => done,
                    done = to_client => done,
                }
            }
            Target::Stream(conn) => {
                let (stream, ahead) = conn.into_parts();
                let (mut input, mut output) = tokio::io::split(stream);
                let to_target = async {
                    while let Some(data) = rx.recv().await {
                        output
                            .write_all(&data)
                            .await
                            .map_err(Failure::on(Side::Target))?;
                        output.flush().await.map_err(Failure::on(Side::Target))?;
                        up.add(data.len());
                    }
                    Ok::<_, Failure>(())
                };
                let to_client = async {
                    if !ahead.is_empty() {
                        answer(&ahead).await;
                    }
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    loop {
                        let n = input
                            .read(&mut buf)
                            .await
                            .map_err(Failure::on(Side::Target))?;
                        if n == 0 {
                            // The target closed: the session is over.
                            return Ok(());
                        }
                        answer(&buf[..n]).await;
                    }
                };
                tokio::select! {
                    done = to_target => done,
                    done = to_client => done,
                }
            }
        }
    };
    let outcome = tokio::select! {
        done = copies => Some(done),
        () = tally.activity.idle_for(relay.idle) => None,
    };
    match outcome {
        None => (End::Idle, String::new()),
        Some(Ok(())) => (End::Closed, String::new()),
        Some(Err(failure)) => (failure.end(), failure.error.to_string()),
    }
}

/// Runs the relay until SIGINT/SIGTERM (or, with --connect-once, its one connection's end).
pub(crate) async fn run(args: Box<RelayArgs>) -> anyhow::Result<i32> {
    let RelayArgs {
        listen_at,
        target,
        mut serve,
        to,
        connect_once,
        json,
    } = *args;
    let target = parse_endpoint(&target)?;
    serve.listen.insert(0, listen_at);
    let guard = to.client_guard().map_err(UsageError)?;
    let needs_stream = crate::guard::client_needs_stream(&guard);
    if needs_stream && !target.is_stream() {
        return Err(UsageError(format!(
            "{target}: --target-tls and --target-key-file need a stream target (tcp:// or unix://)"
        ))
        .into());
    }
    let options = crate::guard::client_options(&guard, to.connect_timeout)?;
    if connect_once {
        serve.max_conns = 1;
    }
    // Each relayed connection holds two sockets and, spliced, two pipes.
    crate::scan::raise_fd_limit();
    let mut runner = Runner::new()?;
    let relay = Arc::new(Relay {
        target,
        options,
        retries: to.connect_retries,
        retry_delay: to.retry_delay,
        idle: (!serve.idle_timeout.is_zero()).then_some(serve.idle_timeout),
        counters: Counters::default(),
        once: connect_once.then(|| runner.shutdown().clone()),
        max_sessions: serve.max_conns as usize,
    });
    let datagrams = RelayDatagrams {
        relay: Arc::clone(&relay),
        sessions: Arc::default(),
        shutdown: runner.shutdown().clone(),
    };
    let for_handlers = Arc::clone(&relay);
    let service = Service {
        name: "relay",
        default_endpoint: "127.0.0.1:0",
        make_handler: move || RelayHandler {
            relay: Arc::clone(&for_handlers),
            tally: None,
        },
        datagram: Some(datagrams),
        auth_failures: None,
    };
    // The relay's idle timeout is its own (either side's silence); the connection's own
    // deadline would cut a long one-way transfer whose other way is quiet.
    let mut serve_args = serve.clone();
    serve_args.idle_timeout = Duration::ZERO;
    runner.add(&serve_args, service).await?;
    tracing::info!(target = %relay.target, "relaying");
    let print = move |relay: &Relay| -> std::io::Result<()> {
        if json {
            outln!("{}", relay.counters.json())
        } else {
            out!("{}", relay.counters.prometheus())
        }
    };
    let on_usr1 = Arc::clone(&relay);
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let printer = tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let _ = print(&on_usr1);
        }
    });
    let code = runner.run(serve.grace).await?;
    printer.abort();
    print(&relay)?;
    Ok(code)
}
