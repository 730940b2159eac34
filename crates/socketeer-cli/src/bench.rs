//! `socketeer bench EP`: a closed-loop load generator for echo-like servers. Each connection
//! sends a message, waits for all of it to come back, and records the round trip in a
//! fixed-size latency histogram; after a warm-up it measures for `--duration` and prints round
//! trips/s, p50/p99/max latency and MB/s (payload echoed, each way).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use socketeer::client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::cli::BenchArgs;
use crate::failure::{UsageError, parse_endpoint};
use crate::guard::client_options;

/// Latency histogram with bounded memory and about 1.5% relative error: 64 sub-buckets for
/// each power of two of nanoseconds.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: vec![0; 64 * SUB as usize],
            total: 0,
            max: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < SUB {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // >= SUB_BITS
        let shift = exp - SUB_BITS;
        let mantissa = (ns >> shift) - SUB; // 0..SUB
        ((u64::from(shift) + 1) * SUB + mantissa) as usize
    }

    /// The smallest value that falls in bucket `i`.
    fn lower_bound(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        (SUB + i % SUB) << shift
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The latency at quantile `q` (0..=1), in nanoseconds (bucket midpoint).
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let lo = Self::lower_bound(i);
                let hi = Self::lower_bound(i + 1);
                return (lo + hi) / 2;
            }
        }
        self.max
    }
}

#[derive(Serialize)]
struct Report {
    endpoint: String,
    connections: u32,
    message_bytes: u32,
    seconds: f64,
    round_trips: u64,
    round_trips_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mb_per_sec: f64,
    failed_connections: usize,
    /// Connections that completed no round trip in the measured window (still waiting in a
    /// full server's backlog, or never answered).
    unanswered_connections: usize,
    /// Datagrams sent whose echo did not come back within the wait (datagram endpoints only).
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_datagrams: Option<u64>,
    /// `--threads`: the load ran on this many threads, a runtime each.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_threads: Option<u32>,
}

#[derive(Serialize)]
struct BulkReport {
    endpoint: String,
    mode: &'static str,
    connections: u32,
    chunk_bytes: u32,
    seconds: f64,
    /// Bulk: bytes that came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_echoed: Option<u64>,
    /// Upload: bytes the server took.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_sent: Option<u64>,
    mb_per_sec: f64,
    failed_connections: usize,
}

#[derive(Serialize)]
struct FanoutReport {
    endpoint: String,
    connections: u32,
    senders: u32,
    stalled: u32,
    seconds: f64,
    /// Lines per second offered in all (`--rate`); absent when senders go as fast as they can.
    #[serde(skip_serializing_if = "Option::is_none")]
    lines_offered_per_sec: Option<u64>,
    lines_sent: u64,
    lines_delivered: u64,
    lines_delivered_per_sec: f64,
    failed_connections: usize,
}

/// The line fan-out senders write: long enough to look like chat, easy to count.
const FANOUT_LINE: &[u8] = b"fanout payload line, about the size of a chat message\n";

/// Newlines in `data`, counted 255 bytes at a time in `u8` lanes so the compiler vectorises it
/// (a byte-at-a-time count was half of the load client's CPU, which made the client, not the
/// broker, the limit).
fn count_lines(data: &[u8]) -> u64 {
    data.chunks(255)
        .map(|chunk| {
            u64::from(
                chunk
                    .iter()
                    .fold(0u8, |n, &b| n.wrapping_add(u8::from(b == b'\n'))),
            )
        })
        .sum()
}

/// Fan-out mode: all connections count delivered lines; the first `senders` also send.
async fn fanout(
    args: &BenchArgs,
    endpoint: &socketeer::Endpoint,
    streams: Vec<socketeer::Stream>,
    senders: u32,
) -> anyhow::Result<i32> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let sent = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let stop_at = measure_from + args.duration;
    let per_sender = args
        .rate
        .map(|total| total as f64 / f64::from(senders.max(1)));
    let mut tasks = JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (sent, delivered) = (Arc::clone(&sent), Arc::clone(&delivered));
        let sending = (i as u32) < senders;
        tasks.spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let send = async {
                if !sending {
                    return std::future::pending::<std::io::Result<()>>().await;
                }
                // One line per write, as a person's chat client sends them; with a rate, as
                // many as are due each millisecond.
                let began = Instant::now();
                let mut written = 0u64;
                loop {
                    if let Some(per_second) = per_sender {
                        let due = (began.elapsed().as_secs_f64() * per_second) as u64;
                        if written >= due {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                    }
                    writer.write_all(FANOUT_LINE).await?;
                    written += 1;
                    if Instant::now() >= measure_from {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            let receive = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = reader.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                    }
                    if Instant::now() >= measure_from {
                        let lines = count_lines(&buf[..n]);
                        delivered.fetch_add(lines, Ordering::Relaxed);
                    }
                }
            };
            tokio::select! {
                result = send => result,
                result = receive => result,
                () = tokio::time::sleep_until(stop_at.into()) => Ok(()),
            }
        });
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        if done.context("bench task panicked")?.is_err() {
            failed += 1;
        }
    }
    let seconds = args.duration.as_secs_f64();
    let report = FanoutReport {
        endpoint: endpoint.to_string(),
        connections: args.connections,
        senders,
        stalled: args.stalled,
        seconds,
        lines_offered_per_sec: args.rate,
        lines_sent: sent.load(Ordering::Relaxed),
        lines_delivered: delivered.load(Ordering::Relaxed),
        lines_delivered_per_sec: delivered.load(Ordering::Relaxed) as f64 / seconds,
        failed_connections: failed,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        outln!(
            "{}: fan-out, {} connections, {} sending{}, {:.1} s\n  lines delivered/s  {:.0}\n  lines sent         {}\n  failed conns       {}",
            report.endpoint,
            report.connections,
            report.senders,
            report
                .lines_offered_per_sec
                .map_or_else(String::new, |rate| format!(" {rate} lines/s in all")),
            report.seconds,
            report.lines_delivered_per_sec,
            report.lines_sent,
            report.failed_connections
        )?;
    }
    Ok(0)
}

/// Waits for every connection's task: what the ones that finished measured, and how many
/// failed (each logged). An error only when all of them failed.
async fn join_connections<T: 'static>(
    mut tasks: JoinSet<std::io::Result<T>>,
    endpoint: &socketeer::Endpoint,
) -> anyhow::Result<(Vec<T>, usize)> {
    let mut done = Vec::new();
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("bench task panicked")? {
            Ok(measured) => done.push(measured),
            Err(err) => {
                failed += 1;
                tracing::warn!(error = %err, "a connection failed");
            }
        }
    }
    if done.is_empty() && failed > 0 {
        anyhow::bail!("every connection to {endpoint} failed");
    }
    Ok((done, failed))
}

/// Bulk mode: every connection writes chunks while reading the echo back; the bytes echoed
/// within the measured window, per second. Upload mode: every connection only writes (to a
/// server that reads and discards); the bytes written within the window, per second — once
/// the socket buffers are full, what the server takes.
async fn bulk(
    args: &BenchArgs,
    endpoint: &socketeer::Endpoint,
    streams: Vec<socketeer::Stream>,
) -> anyhow::Result<i32> {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let stop_at = measure_from + args.duration;
    let size = args.size as usize;
    let upload = args.upload;
    let mut tasks = JoinSet::new();
    for stream in streams {
        tasks.spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(stream);
            tokio::time::sleep_until(start.into()).await;
            let sending = tokio::spawn(async move {
                let chunk = vec![b'x'; size];
                let mut sent = 0u64;
                while Instant::now() < stop_at {
                    // A write still waiting for the server when the window ends is not counted.
                    match tokio::time::timeout_at(stop_at.into(), writer.write_all(&chunk)).await {
                        Ok(written) => written?,
                        Err(_) => break,
                    }
                    if Instant::now() >= measure_from {
                        sent += size as u64;
                    }
                }
                std::io::Result::Ok(sent)
            });
            if upload {
                return sending.await.map_err(std::io::Error::other)?;
            }
            let mut buf = vec![0u8; 256 * 1024];
            let mut counted = 0u64;
            loop {
                let read = tokio::time::timeout_at(stop_at.into(), reader.read(&mut buf)).await;
                match read {
                    Err(_) => break, // the window is over
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => {
                        if Instant::now() >= measure_from {
                            counted += n as u64;
                        }
                    }
                    Ok(Err(err)) => return Err(err),
                }
            }
            // The sender may be blocked on a server that stopped reading: it is done either way.
            sending.abort();
            std::io::Result::Ok(counted)
        });
    }
    let (counts, failed) = join_connections(tasks, endpoint).await?;
    let bytes: u64 = counts.into_iter().sum();
    let seconds = args.duration.as_secs_f64();
    let report = BulkReport {
        endpoint: endpoint.to_string(),
        mode: if upload { "upload" } else { "bulk" },
        connections: args.connections,
        chunk_bytes: args.size,
        seconds,
        bytes_echoed: (!upload).then_some(bytes),
        bytes_sent: upload.then_some(bytes),
        mb_per_sec: bytes as f64 / seconds / 1e6,
        failed_connections: failed,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        outln!(
            "{}: {}, {} connections, {}-byte writes, {:.1} s\n  {}         {:.1} MB/s ({} bytes)\n  failed conns   {}",
            report.endpoint,
            report.mode,
            report.connections,
            report.chunk_bytes,
            report.seconds,
            if upload { "sent  " } else { "echoed" },
            report.mb_per_sec,
            bytes,
            report.failed_connections
        )?;
    }
    Ok(0)
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let endpoint = parse_endpoint(&args.endpoint)?;
    // A socket per connection: up to 10,000 of them.
    crate::scan::raise_fd_limit();
    if !endpoint.is_stream() && (args.fanout.is_some() || args.bulk || args.upload) {
        return Err(UsageError(format!(
            "{endpoint}: --fanout, --bulk and --upload need a stream endpoint (tcp:// or unix://)"
        ))
        .into());
    }
    if !endpoint.is_local() && !args.allow_remote {
        return Err(UsageError(format!(
            "{endpoint}: bench loads loopback and Unix servers only; add --allow-remote for a \
             server you are allowed to load"
        ))
        .into());
    }
    if let Some(threads) = args.threads {
        let options = client_options(&args.guard, Duration::from_secs(10))?;
        // The threads are joined from a blocking task, not from this runtime's thread.
        return tokio::task::spawn_blocking(move || {
            round_trips_on_threads(&args, &endpoint, &options, threads)
        })
        .await
        .context("bench threads panicked")?;
    }
    if !endpoint.is_stream() {
        return datagrams(&args, &endpoint).await;
    }
    let options = client_options(&args.guard, Duration::from_secs(10))?;
    let mut streams = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        streams.push(open_stream(&endpoint, &options).await?);
    }
    if let Some(senders) = args.fanout {
        // Connections that never read: they stay open, untouched, until the run ends.
        let mut stalled = Vec::with_capacity(args.stalled as usize);
        for _ in 0..args.stalled {
            stalled.push(client::connect_with(&endpoint, &options).await?);
        }
        let result = fanout(&args, &endpoint, streams, senders.min(args.connections)).await;
        drop(stalled);
        return result;
    }
    if args.bulk || args.upload {
        return bulk(&args, &endpoint, streams).await;
    }
    let tasks = stream_round_trips(
        streams,
        args.size as usize,
        Window::starting_soon(args.warmup, args.duration),
    );
    let (histograms, failed) = join_connections(tasks, &endpoint).await?;
    report_round_trips(&args, &endpoint, &histograms, failed, None, None)
}

/// A connection for the load, with nothing sent by the server before the first message.
async fn open_stream(
    endpoint: &socketeer::Endpoint,
    options: &client::ClientOptions,
) -> anyhow::Result<socketeer::Stream> {
    let conn = client::connect_with(endpoint, options).await?;
    let (stream, leftover) = conn.into_parts();
    anyhow::ensure!(
        leftover.is_empty(),
        "{endpoint} sent data before the first message"
    );
    Ok(stream)
}

/// When a run starts (every connection open), when it starts measuring and when it stops.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
}

impl Window {
    /// Starting in 50 ms (every task is spawned and waiting by then).
    fn starting_soon(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = start + warmup;
        Self {
            start,
            measure_from,
            stop_at: measure_from + duration,
        }
    }
}

/// Round trips over stream connections: each sends a message and reads its echo whole,
/// one at a time, recording each round trip in a histogram of its own.
fn stream_round_trips(
    streams: Vec<socketeer::Stream>,
    size: usize,
    window: Window,
) -> JoinSet<std::io::Result<Histogram>> {
    let mut tasks = JoinSet::new();
    for mut stream in streams {
        tasks.spawn(async move {
            let message = vec![b'x'; size];
            let mut reply = vec![0u8; size];
            let mut histogram = Histogram::new();
            tokio::time::sleep_until(window.start.into()).await;
            loop {
                let sent = Instant::now();
                if sent >= window.stop_at {
                    break;
                }
                stream.write_all(&message).await?;
                stream.read_exact(&mut reply).await?;
                if sent >= window.measure_from {
                    histogram.record(sent.elapsed());
                }
            }
            std::io::Result::Ok(histogram)
        });
    }
    tasks
}

/// `--threads N`: the round trips of `bench` on N threads, each a runtime of its own with
/// its share of the connections (opened there, so each socket stays with the thread that
/// polls it). All open their connections first; the run starts when the last one is ready.
fn round_trips_on_threads(
    args: &BenchArgs,
    endpoint: &socketeer::Endpoint,
    options: &client::ClientOptions,
    threads: u32,
) -> anyhow::Result<i32> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier, OnceLock};
    let threads = threads.min(args.connections);
    let barrier = Arc::new(Barrier::new(threads as usize));
    // Set by the first thread past the barrier, so that all measure the same window.
    let window: Arc<OnceLock<Window>> = Arc::default();
    let failed_to_open = Arc::new(AtomicBool::new(false));
    let mut running = Vec::with_capacity(threads as usize);
    for t in 0..threads {
        // Thread t takes connections t, t + threads, t + 2 threads, ...
        let share: Vec<u32> = (t..args.connections).step_by(threads as usize).collect();
        let (endpoint, options) = (endpoint.clone(), options.clone());
        let (barrier, window) = (Arc::clone(&barrier), Arc::clone(&window));
        let failed_to_open = Arc::clone(&failed_to_open);
        let size = args.size as usize;
        let (warmup, duration) = (args.warmup, args.duration);
        let thread = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || -> anyhow::Result<(Vec<(Histogram, u64)>, usize)> {
                let opened = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| {
                        let opened = runtime.block_on(open_share(&endpoint, &options, &share))?;
                        Ok((runtime, opened))
                    });
                // Every thread reaches the barrier, even one that failed, so that the others
                // are not left waiting; if one failed, none runs (as without --threads).
                if opened.is_err() {
                    failed_to_open.store(true, Ordering::Relaxed);
                }
                barrier.wait();
                let (runtime, opened) = opened?;
                if failed_to_open.load(Ordering::Relaxed) {
                    return Ok((Vec::new(), 0));
                }
                let window = *window.get_or_init(|| Window::starting_soon(warmup, duration));
                runtime.block_on(async {
                    match opened {
                        Opened::Streams(streams) => {
                            let tasks = stream_round_trips(streams, size, window);
                            let (histograms, failed) = join_connections(tasks, &endpoint).await?;
                            Ok((histograms.into_iter().map(|h| (h, 0)).collect(), failed))
                        }
                        Opened::Datagrams(sockets) => {
                            let tasks = datagram_round_trips(sockets, size, window);
                            join_connections(tasks, &endpoint).await
                        }
                    }
                })
            })?;
        running.push(thread);
    }
    let ran = u32::try_from(running.len()).ok();
    let mut measured = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for thread in running {
        match thread.join() {
            Ok(Ok((done, gone))) => {
                measured.extend(done);
                failed += gone;
            }
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(_) => anyhow::bail!("a bench thread panicked"),
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    let lost = (!endpoint.is_stream()).then(|| measured.iter().map(|(_, lost)| lost).sum());
    let histograms: Vec<Histogram> = measured.into_iter().map(|(h, _)| h).collect();
    report_round_trips(args, endpoint, &histograms, failed, lost, ran)
}

/// One thread's connections, opened in its runtime.
enum Opened {
    Streams(Vec<socketeer::Stream>),
    Datagrams(Vec<Dgram>),
}

async fn open_share(
    endpoint: &socketeer::Endpoint,
    options: &client::ClientOptions,
    share: &[u32],
) -> anyhow::Result<Opened> {
    if endpoint.is_stream() {
        let mut streams = Vec::with_capacity(share.len());
        for _ in share {
            streams.push(open_stream(endpoint, options).await?);
        }
        return Ok(Opened::Streams(streams));
    }
    let mut sockets = Vec::with_capacity(share.len());
    for &n in share {
        sockets.push(
            Dgram::open(endpoint, n)
                .await
                .with_context(|| format!("{endpoint}"))?,
        );
    }
    Ok(Opened::Datagrams(sockets))
}

/// Prints the round trips of every connection (one histogram each) as text or JSON;
/// `client_threads`: how many threads ran the load (`--threads`).
fn report_round_trips(
    args: &BenchArgs,
    endpoint: &socketeer::Endpoint,
    histograms: &[Histogram],
    failed: usize,
    lost: Option<u64>,
    client_threads: Option<u32>,
) -> anyhow::Result<i32> {
    let mut total = Histogram::new();
    for histogram in histograms {
        total.merge(histogram);
    }
    let seconds = args.duration.as_secs_f64();
    let report = Report {
        endpoint: endpoint.to_string(),
        connections: args.connections,
        message_bytes: args.size,
        seconds,
        round_trips: total.total,
        round_trips_per_sec: total.total as f64 / seconds,
        p50_us: total.quantile(0.50) as f64 / 1e3,
        p99_us: total.quantile(0.99) as f64 / 1e3,
        p999_us: total.quantile(0.999) as f64 / 1e3,
        max_us: total.max as f64 / 1e3,
        mb_per_sec: (total.total * u64::from(args.size)) as f64 / seconds / 1e6,
        failed_connections: failed,
        unanswered_connections: histograms.iter().filter(|h| h.total == 0).count(),
        lost_datagrams: lost,
        client_threads,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        outln!(
            "{}: {} {}, {}-byte messages, {:.1} s{}\n  round trips/s  {:.0}\n  latency p50    {:.1} µs\n  latency p99    {:.1} µs\n  latency p99.9  {:.1} µs\n  latency max    {:.1} µs\n  throughput     {:.2} MB/s each way\n  failed conns   {}",
            report.endpoint,
            report.connections,
            if lost.is_some() {
                "sockets"
            } else {
                "connections"
            },
            report.message_bytes,
            report.seconds,
            report
                .client_threads
                .map_or(String::new(), |n| format!(", client on {n} threads")),
            report.round_trips_per_sec,
            report.p50_us,
            report.p99_us,
            report.p999_us,
            report.max_us,
            report.mb_per_sec,
            report.failed_connections
        )?;
        if report.unanswered_connections > 0 {
            outln!(
                "  unanswered     {} connections (no round trip in the measured window)",
                report.unanswered_connections
            )?;
        }
        if let Some(lost) = lost {
            outln!(
                "  lost           {lost} datagrams (not echoed within {} ms)",
                LOST_AFTER.as_millis()
            )?;
        }
    }
    Ok(0)
}

/// A datagram whose echo has not come within this long is counted lost and sent anew.
const LOST_AFTER: Duration = Duration::from_millis(200);

/// One client socket of a datagram endpoint, connected to the server.
enum Dgram {
    Udp(tokio::net::UdpSocket),
    /// With the path it is bound to (a Unix datagram client needs an address for the echo).
    Unix(tokio::net::UnixDatagram, std::path::PathBuf),
}

impl Dgram {
    async fn open(endpoint: &socketeer::Endpoint, n: u32) -> std::io::Result<Dgram> {
        match endpoint {
            socketeer::Endpoint::Udp(hp) => {
                let to = *hp
                    .resolve()
                    .await
                    .map_err(std::io::Error::other)?
                    .first()
                    .ok_or_else(|| std::io::Error::other("no address"))?;
                let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let socket = tokio::net::UdpSocket::bind(local).await?;
                socket.connect(to).await?;
                Ok(Dgram::Udp(socket))
            }
            socketeer::Endpoint::UnixDatagram(path) => {
                let me = std::env::temp_dir()
                    .join(format!("socketeer-bench-{}-{n}.sock", std::process::id()));
                let _ = std::fs::remove_file(&me);
                let socket = tokio::net::UnixDatagram::bind(&me)?;
                socket.connect(path)?;
                Ok(Dgram::Unix(socket, me))
            }
            other => Err(std::io::Error::other(format!(
                "{other} is not a datagram endpoint"
            ))),
        }
    }

    async fn send(&self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Dgram::Udp(s) => s.send(data).await,
            Dgram::Unix(s, _) => s.send(data).await,
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Dgram::Udp(s) => s.recv(buf).await,
            Dgram::Unix(s, _) => s.recv(buf).await,
        }
    }
}

impl Drop for Dgram {
    fn drop(&mut self) {
        if let Dgram::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `seq` into the first (up to eight) bytes of a datagram, so an echo can be matched
/// to the datagram it answers.
fn stamp(message: &mut [u8], seq: u64) {
    let n = message.len().min(8);
    message[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// Whether `reply` is the echo of a datagram sent before `seq` (same filler, an earlier
/// number within the last 2^16): a late echo, not a wrong one.
fn is_earlier(reply: &[u8], message: &[u8], seq: u64) -> bool {
    let n = message.len().min(8);
    if reply.len() != message.len() || reply[n..] != message[n..] || n < 2 {
        return false;
    }
    let mut bytes = [0u8; 8];
    bytes[..n].copy_from_slice(&reply[..n]);
    let theirs = u64::from_le_bytes(bytes);
    let mask = if n == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    };
    let behind = (seq & mask).wrapping_sub(theirs) & mask;
    (1..=1 << 16).contains(&behind)
}

/// Datagram endpoints (udp://, unixgram://): each socket sends a datagram and waits for its
/// echo (a datagram not echoed within [`LOST_AFTER`] is counted lost and the next one sent).
async fn datagrams(args: &BenchArgs, endpoint: &socketeer::Endpoint) -> anyhow::Result<i32> {
    let mut sockets = Vec::with_capacity(args.connections as usize);
    for n in 0..args.connections {
        sockets.push(
            Dgram::open(endpoint, n)
                .await
                .with_context(|| format!("{endpoint}"))?,
        );
    }
    let tasks = datagram_round_trips(
        sockets,
        args.size as usize,
        Window::starting_soon(args.warmup, args.duration),
    );
    let (measured, failed) = join_connections(tasks, endpoint).await?;
    let lost = measured.iter().map(|(_, lost)| lost).sum();
    let histograms: Vec<Histogram> = measured.into_iter().map(|(h, _)| h).collect();
    report_round_trips(args, endpoint, &histograms, failed, Some(lost), None)
}

/// Round trips over datagram sockets: each sends a datagram and waits for its echo, counting
/// it lost after [`LOST_AFTER`]; a histogram and a count of lost datagrams each.
fn datagram_round_trips(
    sockets: Vec<Dgram>,
    size: usize,
    window: Window,
) -> JoinSet<std::io::Result<(Histogram, u64)>> {
    let mut tasks = JoinSet::new();
    for socket in sockets {
        tasks.spawn(async move {
            let mut message = vec![b'x'; size];
            let mut reply = vec![0u8; size + 1];
            let mut histogram = Histogram::new();
            let mut lost = 0u64;
            tokio::time::sleep_until(window.start.into()).await;
            for seq in 0u64.. {
                let sent = Instant::now();
                if sent >= window.stop_at {
                    break;
                }
                stamp(&mut message, seq);
                socket.send(&message).await?;
                let deadline = tokio::time::Instant::from_std(sent + LOST_AFTER);
                loop {
                    match tokio::time::timeout_at(deadline, socket.recv(&mut reply)).await {
                        Ok(Ok(n)) if reply[..n] == message[..] => {
                            if sent >= window.measure_from {
                                histogram.record(sent.elapsed());
                            }
                            break;
                        }
                        // The echo of one already counted lost, come late: not this one's.
                        Ok(Ok(n)) if is_earlier(&reply[..n], &message, seq) => continue,
                        Ok(Ok(_)) => {
                            return Err(std::io::Error::other(
                                "the echo was not the datagram sent",
                            ));
                        }
                        Ok(Err(err)) => return Err(err),
                        Err(_) => {
                            if sent >= window.measure_from {
                                lost += 1;
                            }
                            break;
                        }
                    }
                }
            }
            drop(socket);
            std::io::Result::Ok((histogram, lost))
        });
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_echo_is_told_from_a_wrong_one() {
        for size in [10usize, 64, 1400] {
            let mut old = vec![b'x'; size];
            stamp(&mut old, 41);
            let mut now = vec![b'x'; size];
            stamp(&mut now, 42);
            assert!(is_earlier(&old, &now, 42), "{size}");
            assert!(!is_earlier(&now, &now, 42), "{size}: the current one");
            let mut ahead = vec![b'x'; size];
            stamp(&mut ahead, 43);
            assert!(!is_earlier(&ahead, &now, 42), "{size}: one not yet sent");
            let upper = old.to_ascii_uppercase();
            assert!(!is_earlier(&upper, &now, 42), "{size}: changed filler");
            assert!(!is_earlier(&old[..size - 1], &now, 42), "{size}: shorter");
        }
    }

    #[test]
    fn counts_newlines_across_chunk_edges() {
        for len in [0, 1, 254, 255, 256, 1000, 65_536] {
            let data: Vec<u8> = (0..len)
                .map(|i| if i % 7 == 3 { b'\n' } else { b'x' })
                .collect();
            let expected = data.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(count_lines(&data), expected, "{len} bytes");
        }
        assert_eq!(count_lines(&[b'\n'; 600]), 600);
    }

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.max, 1_000_000);
        for ns in [0u64, 1, 63, 64, 65, 1000, 123_456_789] {
            let i = Histogram::index(ns);
            assert!(
                Histogram::lower_bound(i) <= ns && ns < Histogram::lower_bound(i + 1),
                "{ns}"
            );
        }
    }
}
