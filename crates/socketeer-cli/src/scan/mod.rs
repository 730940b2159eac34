//! `socketeer scan`: a TCP connect scan (`docs/scan.md`).
//!
//! [`targets`] and [`ports`] turn the command line into hosts and ports, [`engine`] probes
//! them, [`report`] prints what it found as a table, JSON or nmap's greppable lines.

mod engine;
mod ports;
mod report;
mod targets;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::ScanArgs;
use crate::failure::UsageError;

pub(crate) use engine::{Counters, Plan};

/// Default cap on connects in flight when the open-file limit allows more.
const DEFAULT_CONCURRENCY: usize = 10_000;
/// The shortest a timeout becomes however fast a host answers (nmap's default too).
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// The most probes (hosts × ports) one scan holds results for: 256 MiB of outcomes.
const MAX_PROBES: u64 = 1 << 28;
/// Descriptors kept free for everything that is not a probe.
const FD_RESERVE: u64 = 32;

/// Exit status after an interrupted scan.
const EXIT_INTERRUPTED: i32 = 130;

/// Runs `socketeer scan`.
pub(crate) async fn run(args: ScanArgs) -> anyhow::Result<i32> {
    let (ports, ports_text) = match &args.ports {
        Some(spec) => (ports::parse_ports(spec)?, spec.clone()),
        None => {
            let count = args.top_ports.map_or(ports::TOP_COUNT, usize::from);
            (ports::top_ports(count), format!("top {count}"))
        }
    };
    let hosts = targets::resolve(&args.targets, args.max_hosts).await?;
    if hosts.is_empty() {
        anyhow::bail!("scan: no target could be resolved");
    }
    let probes = hosts.len() as u64 * ports.len() as u64;
    if probes > MAX_PROBES {
        return Err(UsageError(format!(
            "scan: {} hosts × {} ports is {probes} probes, more than one scan holds ({MAX_PROBES}); \
             split the targets",
            hosts.len(),
            ports.len()
        ))
        .into());
    }

    let fd_limit = raise_fd_limit();
    let budget = fd_budget(fd_limit);
    let concurrency = match args.concurrency {
        Some(wanted) if u64::from(wanted) > budget => {
            errln!(
                "socketeer: scan: --concurrency {wanted} is more than the open-file limit \
                 ({fd_limit}) allows; using {budget}"
            );
            budget as usize
        }
        Some(wanted) => wanted as usize,
        None => (budget as usize).min(DEFAULT_CONCURRENCY),
    }
    .max(1);
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4)
        .min(if probes < 2_000 { 1 } else { usize::MAX });

    let mut port_order = ports.clone();
    let mut host_order: Vec<u32> = (0..hosts.len() as u32).collect();
    if !args.sequential {
        let mut rng = SplitMix::from_os()?;
        rng.shuffle(&mut port_order);
        rng.shuffle(&mut host_order);
    }
    let plan = Plan {
        hosts: hosts.iter().map(|host| host.address).collect(),
        ports: port_order,
        host_order,
        max_timeout: args.timeout,
        min_timeout: MIN_TIMEOUT.min(args.timeout),
        retries: args.retries,
        concurrency,
        rate: args.rate,
        threads,
    };

    let counters = Arc::new(Counters::default());
    let cancel = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    let watcher = {
        let cancel = Arc::clone(&cancel);
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                cancel.store(true, Ordering::SeqCst);
                // A second Ctrl-C ends the program at once.
                if tokio::signal::ctrl_c().await.is_ok() {
                    crate::terminal::exit(EXIT_INTERRUPTED);
                }
            }
        })
    };
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| progress_bar(probes));

    let started_at = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    let finding = {
        let plan = plan.clone();
        let counters = Arc::clone(&counters);
        let cancel = Arc::clone(&cancel);
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let done = AtomicBool::new(false);
            std::thread::scope(|scope| {
                if let Some(bar) = &progress {
                    let (counters, done) = (&counters, &done);
                    scope.spawn(move || {
                        let started = Instant::now();
                        while !done.load(Ordering::Relaxed) {
                            let finished = counters.done.load(Ordering::Relaxed);
                            bar.set_position(finished);
                            let rate = finished as f64 / started.elapsed().as_secs_f64().max(1e-3);
                            bar.set_message(format!(
                                "{} open · {rate:.0} probes/s",
                                counters.open.load(Ordering::Relaxed)
                            ));
                            std::thread::park_timeout(Duration::from_millis(100));
                        }
                    });
                }
                let result = engine::run(&plan, &counters, &cancel);
                done.store(true, Ordering::Relaxed);
                result
            })
        })
        .await
        .context("scan: the scan stopped")?
        .context("scan")?
    };
    let elapsed = started.elapsed();
    watcher.abort();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    let report = report::Report {
        hosts: &hosts,
        plan: &plan,
        finding: &finding,
        counters: &counters,
        services: ports::Services::load(),
        show_all: args.all,
        ports_text,
        started_at,
        elapsed,
        fd_limit,
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        report.json(&mut out)
    } else if args.greppable {
        report.greppable(&mut out)
    } else {
        report.table(&mut out)
    }
    .and_then(|()| out.flush());
    match written {
        // A reader that stopped early (`| head`) is not a failure of the scan.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("scan: cannot write the report")?,
    }
    if interrupted.load(Ordering::SeqCst) {
        errln!("socketeer: scan: interrupted; the report covers the ports answered so far");
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(0)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr_with_hz(10),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("scan {wide_bar} {pos}/{len} · {msg} · {eta} left")
    {
        bar.set_style(style);
    }
    bar
}

/// Raises the soft open-file limit to the hard one and returns the limit in force.
pub(crate) fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if limit.current != limit.maximum {
        let mut raised = limit;
        raised.current = limit.maximum;
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    soft
}

/// How many descriptors probes may hold: the limit less those open now and a reserve.
fn fd_budget(limit: u64) -> u64 {
    let open = std::fs::read_dir("/proc/self/fd").map_or(16, |dir| dir.count() as u64);
    limit.saturating_sub(open + FD_RESERVE).max(1)
}

/// A small, fast generator for shuffling probe order (seeded from the OS): SplitMix64.
struct SplitMix(u64);

impl SplitMix {
    fn from_os() -> anyhow::Result<SplitMix> {
        Ok(SplitMix(getrandom::u64().map_err(|e| {
            anyhow::anyhow!("scan: cannot read the OS random source: {e}")
        })?))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = SplitMix(7);
        let mut items: Vec<u32> = (0..1000).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..1000).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn budget_leaves_room() {
        assert!(fd_budget(100_000) > 99_000);
        assert_eq!(fd_budget(10), 1);
    }
}
