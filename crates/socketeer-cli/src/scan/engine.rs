//! The probing engine: non-blocking TCP connects, a few threads each driving its own
//! epoll/kqueue loop (mio), sharing one queue of probes.
//!
//! Why it is fast:
//! - no task or future per probe: a probe is a socket in a slot of a fixed table, and
//!   completion is one readiness event;
//! - on loopback (and other near hosts) the kernel has finished the handshake, or refused it,
//!   before `connect` returns, so the answer is read at once and the socket is never
//!   registered — a fast path each thread turns off for a host where it stops paying;
//! - open ports are closed with a reset (SO_LINGER 0), so a scan leaves no TIME_WAIT behind;
//! - timeouts follow the round trips measured on each host (RFC 6298's estimator), starting at
//!   `--timeout` and settling a few deviations above the measured time, never below the floor.
//!
//! Running out of descriptors (EMFILE/ENFILE) or of local ports (EADDRNOTAVAIL) is pressure,
//! not failure: the probe is put back, the thread lowers its own concurrency to what it holds,
//! waits for one of them to finish (or briefly, if it holds none), and grows back as probes
//! complete.

use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// What a probe found, as stored per (host, port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// Not probed yet (never reported after a finished scan).
    Pending = 0,
    /// The handshake completed.
    Open = 1,
    /// Refused with a reset.
    Refused = 2,
    /// Reset after the handshake began.
    Reset = 3,
    /// No answer within the timeout, on every try.
    NoResponse = 4,
    /// ICMP host unreachable (or the local stack's equivalent).
    HostUnreach = 5,
    /// ICMP network unreachable, or no route.
    NetUnreach = 6,
    /// Refused by a firewall (ICMP administratively prohibited, or a local rule).
    AdminProhibited = 7,
    /// Any other error from connect.
    Error = 8,
}

/// The three states nmap reports for a connect scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum State {
    /// Something accepts connections.
    Open,
    /// The host answered that nothing listens.
    Closed,
    /// No answer, or an answer from something in between.
    Filtered,
}

impl State {
    /// The name nmap uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::Filtered => "filtered",
        }
    }
}

impl Outcome {
    fn from_u8(value: u8) -> Outcome {
        match value {
            1 => Outcome::Open,
            2 => Outcome::Refused,
            3 => Outcome::Reset,
            4 => Outcome::NoResponse,
            5 => Outcome::HostUnreach,
            6 => Outcome::NetUnreach,
            7 => Outcome::AdminProhibited,
            8 => Outcome::Error,
            _ => Outcome::Pending,
        }
    }

    /// The port state this outcome means.
    pub(crate) fn state(self) -> State {
        match self {
            Outcome::Open => State::Open,
            Outcome::Refused | Outcome::Reset => State::Closed,
            _ => State::Filtered,
        }
    }

    /// The reason, named as nmap names it.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Outcome::Pending => "not-scanned",
            Outcome::Open => "syn-ack",
            Outcome::Refused => "conn-refused",
            Outcome::Reset => "reset",
            Outcome::NoResponse => "no-response",
            Outcome::HostUnreach => "host-unreach",
            Outcome::NetUnreach => "net-unreach",
            Outcome::AdminProhibited => "admin-prohibited",
            Outcome::Error => "error",
        }
    }

    /// Classifies a connect error; `None` for errors that say nothing about the port (out of
    /// descriptors or local ports), which put the probe back instead.
    fn from_error(err: &io::Error) -> Option<Outcome> {
        Some(match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Outcome::Refused,
            Some(libc::ECONNRESET) => Outcome::Reset,
            Some(libc::ETIMEDOUT) => Outcome::NoResponse,
            Some(libc::EHOSTUNREACH | libc::EHOSTDOWN) => Outcome::HostUnreach,
            Some(libc::ENETUNREACH | libc::ENETDOWN) => Outcome::NetUnreach,
            Some(libc::EACCES | libc::EPERM) => Outcome::AdminProhibited,
            Some(
                libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EADDRNOTAVAIL
                | libc::EAGAIN,
            ) => return None,
            _ => Outcome::Error,
        })
    }
}

/// What to probe and how hard.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The hosts; results are indexed by position here.
    pub(crate) hosts: Vec<IpAddr>,
    /// The ports, in probe order.
    pub(crate) ports: Vec<u16>,
    /// Host positions in probe order (every port is tried on every host before the next port,
    /// spreading the load across hosts).
    pub(crate) host_order: Vec<u32>,
    /// The first timeout on a host, and the most it ever grows to.
    pub(crate) max_timeout: Duration,
    /// The least a timeout shrinks to however fast the host answers.
    pub(crate) min_timeout: Duration,
    /// Further tries after a probe times out (only timeouts are retried).
    pub(crate) retries: u8,
    /// Most probes in flight at once, across all threads.
    pub(crate) concurrency: usize,
    /// Most new connects per second, across all threads.
    pub(crate) rate: Option<u32>,
    /// Engine threads.
    pub(crate) threads: usize,
}

/// The round-trip estimator of one host (RFC 6298, in microseconds).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rtt {
    /// Smoothed round trip.
    pub(crate) srtt_us: f64,
    /// Round-trip variation.
    pub(crate) rttvar_us: f64,
    /// Answers measured.
    pub(crate) samples: u64,
}

impl Rtt {
    fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64() * 1e6;
        if self.samples == 0 {
            self.srtt_us = r;
            self.rttvar_us = r / 2.0;
        } else {
            self.rttvar_us = 0.75 * self.rttvar_us + 0.25 * (self.srtt_us - r).abs();
            self.srtt_us = 0.875 * self.srtt_us + 0.125 * r;
        }
        self.samples += 1;
    }

    /// The timeout for the next probe: `max` until something was measured, then the smoothed
    /// round trip plus four deviations, kept within `[min, max]`.
    pub(crate) fn timeout(&self, min: Duration, max: Duration) -> Duration {
        if self.samples == 0 {
            return max;
        }
        let us = self.srtt_us + 4.0 * self.rttvar_us.max(1000.0);
        Duration::from_secs_f64(us / 1e6).clamp(min, max)
    }
}

/// Counters the progress line and the report read while and after the scan runs.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Probes with a final answer.
    pub(crate) done: AtomicU64,
    /// Open ports found.
    pub(crate) open: AtomicU64,
    /// Connects started, retries included.
    pub(crate) connects: AtomicU64,
    /// Probes that timed out and were tried again.
    pub(crate) retried: AtomicU64,
    /// Times a probe was put back for want of a descriptor or local port.
    pub(crate) pressure: AtomicU64,
    /// The lowest concurrency (summed over threads) the pressure forced.
    pub(crate) min_concurrency: AtomicU64,
    /// Connects to ourselves (a port in the ephemeral range on loopback), tried again.
    pub(crate) self_connects: AtomicU64,
}

/// The finished scan.
#[derive(Debug)]
pub(crate) struct Finding {
    /// Outcome per (host position, port position): `host * ports.len() + port`.
    pub(crate) outcomes: Vec<u8>,
    /// Round trip of each open port's handshake, by the same (host, port) index, sorted.
    pub(crate) open_rtts: Vec<(u64, Duration)>,
    /// Each host's final estimator.
    pub(crate) rtts: Vec<Rtt>,
}

impl Finding {
    /// The outcome at a (host, port) position.
    pub(crate) fn outcome(&self, index: u64) -> Outcome {
        Outcome::from_u8(self.outcomes[index as usize])
    }
}

struct Shared<'a> {
    plan: &'a Plan,
    total: u64,
    next: AtomicU64,
    outcomes: Vec<AtomicU8>,
    rtts: Vec<Mutex<Rtt>>,
    counters: &'a Counters,
    /// Set when the caller wants the scan to stop early.
    cancel: &'a AtomicBool,
}

impl Shared<'_> {
    /// Probe `index` → (host position, port position, address).
    fn target(&self, index: u64) -> (usize, SocketAddr) {
        let hosts = self.plan.hosts.len() as u64;
        let port_pos = (index / hosts) as usize;
        let host = self.plan.host_order[(index % hosts) as usize] as usize;
        let addr = SocketAddr::new(self.plan.hosts[host], self.plan.ports[port_pos]);
        (host, addr)
    }

    fn slot(&self, index: u64) -> usize {
        let hosts = self.plan.hosts.len() as u64;
        let port_pos = (index / hosts) as usize;
        let host = self.plan.host_order[(index % hosts) as usize] as usize;
        host * self.plan.ports.len() + port_pos
    }
}

/// Runs the plan to the end (or until `cancel` is set) and returns what it found.
pub(crate) fn run(plan: &Plan, counters: &Counters, cancel: &AtomicBool) -> io::Result<Finding> {
    let total = plan.hosts.len() as u64 * plan.ports.len() as u64;
    let shared = Shared {
        plan,
        total,
        next: AtomicU64::new(0),
        outcomes: (0..total).map(|_| AtomicU8::new(0)).collect(),
        rtts: plan
            .hosts
            .iter()
            .map(|_| Mutex::new(Rtt::default()))
            .collect(),
        counters,
        cancel,
    };
    counters
        .min_concurrency
        .store(plan.concurrency as u64, Ordering::Relaxed);
    let threads = plan.threads.clamp(1, plan.concurrency.max(1));
    let per_thread = |i: usize| {
        let share = plan.concurrency / threads + usize::from(i < plan.concurrency % threads);
        share.max(1)
    };
    let results: Vec<io::Result<Vec<(u64, Duration)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let shared = &shared;
                let limit = per_thread(i);
                std::thread::Builder::new()
                    .name(format!("scan-{i}"))
                    .spawn_scoped(scope, move || Worker::new(shared, limit, threads)?.run())
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a scan thread panicked"))),
                Err(err) => Err(err),
            })
            .collect()
    });
    let mut open_rtts = Vec::new();
    for result in results {
        open_rtts.extend(result?);
    }
    open_rtts.sort_unstable_by_key(|&(index, _)| index);
    Ok(Finding {
        outcomes: shared
            .outcomes
            .into_iter()
            .map(AtomicU8::into_inner)
            .collect(),
        open_rtts,
        rtts: shared
            .rtts
            .into_iter()
            .map(|rtt| rtt.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect(),
    })
}

/// A connect in flight.
struct Probe {
    socket: Socket,
    index: u64,
    host: usize,
    tries: u8,
    started: Instant,
    generation: u32,
}

/// How often the fast path answered, per host, in one thread.
#[derive(Clone, Copy, Default)]
struct FastPath {
    tries: u32,
    hits: u32,
}

impl FastPath {
    /// Keep trying while it answers at least one probe in eight (judged after 64 tries).
    fn worth_it(self) -> bool {
        self.tries < 64 || self.hits * 8 >= self.tries
    }
}

struct Worker<'s, 'a> {
    shared: &'s Shared<'a>,
    poll: Poll,
    slots: Vec<Option<Probe>>,
    free: Vec<usize>,
    generations: Vec<u32>,
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, usize, u32)>>,
    retry: VecDeque<(u64, u8)>,
    in_flight: usize,
    limit: usize,
    configured_limit: usize,
    fast: Vec<FastPath>,
    interval: Option<Duration>,
    next_send: Instant,
    open: Vec<(u64, Duration)>,
    backoff: Duration,
    threads: usize,
    spare_v4: Vec<Socket>,
    spare_v6: Vec<Socket>,
}

/// Refused sockets kept for reuse, per address family and thread.
const SPARES: usize = 64;

enum Start {
    Started,
    Finished,
    Pressure,
}

impl<'s, 'a> Worker<'s, 'a> {
    fn new(shared: &'s Shared<'a>, limit: usize, threads: usize) -> io::Result<Self> {
        let interval = shared
            .plan
            .rate
            .map(|rate| Duration::from_secs_f64(threads as f64 / f64::from(rate.max(1))));
        Ok(Worker {
            shared,
            poll: Poll::new()?,
            slots: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            deadlines: BinaryHeap::new(),
            retry: VecDeque::new(),
            in_flight: 0,
            limit,
            configured_limit: limit,
            fast: vec![FastPath::default(); shared.plan.hosts.len()],
            interval,
            next_send: Instant::now(),
            open: Vec::new(),
            backoff: Duration::from_millis(1),
            threads,
            spare_v4: Vec::new(),
            spare_v6: Vec::new(),
        })
    }

    fn run(mut self) -> io::Result<Vec<(u64, Duration)>> {
        let mut events = Events::with_capacity(1024);
        loop {
            let wait_for_rate = self.fill()?;
            if self.in_flight == 0 && self.retry.is_empty() && wait_for_rate.is_none() {
                let exhausted = self.shared.next.load(Ordering::Relaxed) >= self.shared.total;
                if exhausted || self.shared.cancel.load(Ordering::Relaxed) {
                    break;
                }
            }
            let now = Instant::now();
            let mut timeout = self
                .deadlines
                .peek()
                .map(|std::cmp::Reverse((deadline, _, _))| deadline.saturating_duration_since(now));
            if let Some(until) = wait_for_rate {
                let wait = until.saturating_duration_since(now);
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
            if self.in_flight == 0 && timeout.is_none() {
                // Out of descriptors with nothing of ours to wait for: someone else holds them.
                timeout = Some(self.backoff);
                self.backoff = (self.backoff * 2).min(Duration::from_millis(100));
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            for event in events.iter() {
                self.complete(event.token().0);
            }
            self.expire();
        }
        Ok(self.open)
    }

    /// Starts probes up to the limit; returns when the rate allows the next one, if that is
    /// what stopped it.
    fn fill(&mut self) -> io::Result<Option<Instant>> {
        while self.in_flight < self.limit && !self.shared.cancel.load(Ordering::Relaxed) {
            if let Some(interval) = self.interval {
                let now = Instant::now();
                if self.next_send > now {
                    return Ok(Some(self.next_send));
                }
                // Catch up after a late wake-up (timers tick in milliseconds), but never by
                // more than a few milliseconds' worth, so the rate holds on average without
                // bursts after idle time.
                let catch_up = (interval * 4).max(Duration::from_millis(5));
                self.next_send =
                    self.next_send.max(now.checked_sub(catch_up).unwrap_or(now)) + interval;
            }
            let (index, tries) = match self.retry.pop_front() {
                Some(probe) => probe,
                None => {
                    let index = self.shared.next.fetch_add(1, Ordering::Relaxed);
                    if index >= self.shared.total {
                        // Keep the counter from wrapping however often it is asked.
                        self.shared.next.store(self.shared.total, Ordering::Relaxed);
                        return Ok(None);
                    }
                    (index, 0)
                }
            };
            match self.start(index, tries)? {
                Start::Started | Start::Finished => {}
                Start::Pressure => {
                    self.retry.push_front((index, tries));
                    self.under_pressure();
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    fn under_pressure(&mut self) {
        let counters = self.shared.counters;
        counters.pressure.fetch_add(1, Ordering::Relaxed);
        self.limit = self.in_flight.max(1);
        let total_now = (self.limit * self.threads) as u64;
        counters
            .min_concurrency
            .fetch_min(total_now, Ordering::Relaxed);
    }

    fn start(&mut self, index: u64, tries: u8) -> io::Result<Start> {
        let (host, addr) = self.shared.target(index);
        self.shared
            .counters
            .connects
            .fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let spare = if addr.is_ipv4() {
            self.spare_v4.pop()
        } else {
            self.spare_v6.pop()
        };
        let socket = match spare.map_or_else(|| new_socket(addr), Ok) {
            Ok(socket) => socket,
            Err(err) => {
                // Out of descriptors is pressure; anything else (no IPv6 here, say) is this
                // probe's answer.
                return Ok(match Outcome::from_error(&err) {
                    None => Start::Pressure,
                    Some(outcome) => {
                        self.record(index, outcome);
                        Start::Finished
                    }
                });
            }
        };
        match socket.connect(&addr.into()) {
            Ok(()) => {
                self.answered(socket, index, host, tries, started);
                return Ok(Start::Finished);
            }
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) => {
                return Ok(match Outcome::from_error(&err) {
                    Some(outcome) => {
                        self.record(index, outcome);
                        Start::Finished
                    }
                    None => Start::Pressure,
                });
            }
        }
        if self.fast[host].worth_it() {
            self.fast[host].tries += 1;
            if let Some(answer) = check(&socket, addr) {
                self.fast[host].hits += 1;
                match answer {
                    Ok(()) => self.answered(socket, index, host, tries, started),
                    Err(outcome) => {
                        self.sample(host, started);
                        self.record(index, outcome);
                        self.keep_spare(socket, addr, outcome);
                    }
                }
                return Ok(Start::Finished);
            }
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.generations.push(0);
            self.slots.len() - 1
        });
        self.poll.registry().register(
            &mut SourceFd(&socket.as_raw_fd()),
            Token(slot),
            Interest::WRITABLE,
        )?;
        let generation = self.generations[slot].wrapping_add(1);
        self.generations[slot] = generation;
        let timeout = self.timeout(host);
        self.deadlines
            .push(std::cmp::Reverse((started + timeout, slot, generation)));
        self.slots[slot] = Some(Probe {
            socket,
            index,
            host,
            tries,
            started,
            generation,
        });
        self.in_flight += 1;
        Ok(Start::Started)
    }

    /// Keeps a refused socket for the next probe: a refused connect leaves it unconnected
    /// and reusable, which saves creating and closing one per closed port. Only sockets that
    /// were never registered with the poller (answered at once) are kept.
    fn keep_spare(&mut self, socket: Socket, addr: SocketAddr, outcome: Outcome) {
        // Spares hold descriptors too: together with the probes they stay within the limit.
        let held = self.in_flight + self.spare_v4.len() + self.spare_v6.len();
        if outcome != Outcome::Refused || held + 1 >= self.limit {
            return;
        }
        let spares = if addr.is_ipv4() {
            &mut self.spare_v4
        } else {
            &mut self.spare_v6
        };
        if spares.len() < SPARES {
            spares.push(socket);
        }
    }

    fn timeout(&self, host: usize) -> Duration {
        let rtt = *self.shared.rtts[host]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        rtt.timeout(self.shared.plan.min_timeout, self.shared.plan.max_timeout)
    }

    fn sample(&self, host: usize, started: Instant) {
        self.shared.rtts[host]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(started.elapsed());
    }

    /// A readiness event for a slot.
    fn complete(&mut self, slot: usize) {
        let Some(probe) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let addr = self.shared.target(probe.index).1;
        let Some(answer) = check(&probe.socket, addr) else {
            return; // spurious wake-up: the handshake is still going
        };
        let Some(probe) = self.release(slot) else {
            return;
        };
        match answer {
            Ok(()) => self.answered(
                probe.socket,
                probe.index,
                probe.host,
                probe.tries,
                probe.started,
            ),
            Err(outcome) => {
                self.sample(probe.host, probe.started);
                self.record(probe.index, outcome);
            }
        }
    }

    fn release(&mut self, slot: usize) -> Option<Probe> {
        let probe = self.slots[slot].take()?;
        self.free.push(slot);
        self.in_flight -= 1;
        if self.limit < self.configured_limit {
            self.limit += 1; // pressure eases as probes finish
        }
        self.backoff = Duration::from_millis(1);
        Some(probe)
    }

    /// A connect succeeded: open, unless it reached our own socket.
    fn answered(&mut self, socket: Socket, index: u64, host: usize, tries: u8, started: Instant) {
        let rtt = started.elapsed();
        let own = matches!(
            (socket.local_addr(), socket.peer_addr()),
            (Ok(local), Ok(peer)) if local.as_socket() == peer.as_socket()
        );
        // Close with a reset: no TIME_WAIT left behind, nothing sent to the service.
        let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
        drop(socket);
        if own {
            // The kernel picked the probed port as our local port and the SYN met itself
            // (TCP simultaneous open): nothing listens there. Probe again from another port.
            self.shared
                .counters
                .self_connects
                .fetch_add(1, Ordering::Relaxed);
            self.retry.push_back((index, tries));
            return;
        }
        self.shared.rtts[host]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(rtt);
        self.open.push((self.shared.slot(index) as u64, rtt));
        self.shared.counters.open.fetch_add(1, Ordering::Relaxed);
        self.record(index, Outcome::Open);
    }

    fn record(&self, index: u64, outcome: Outcome) {
        self.shared.outcomes[self.shared.slot(index)].store(outcome as u8, Ordering::Relaxed);
        self.shared.counters.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives up on probes whose deadline passed: try again, or call it no-response.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&std::cmp::Reverse((deadline, slot, generation))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let current =
                matches!(&self.slots[slot], Some(probe) if probe.generation == generation);
            if !current {
                continue;
            }
            let Some(probe) = self.release(slot) else {
                continue;
            };
            drop(probe.socket);
            if probe.tries < self.shared.plan.retries {
                self.shared.counters.retried.fetch_add(1, Ordering::Relaxed);
                self.retry.push_back((probe.index, probe.tries + 1));
            } else {
                self.record(probe.index, Outcome::NoResponse);
            }
        }
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
}

/// Whether a non-blocking connect has finished: `Some(Ok)` connected, `Some(Err(outcome))`
/// failed, `None` still in progress.
///
/// Asks by connecting again, as POSIX allows: one call that answers `EALREADY` while the
/// handshake runs, success (or `EISCONN`) once connected, and the connect's error once it
/// failed — which also returns a failed socket to the unconnected state, ready for reuse.
fn check(socket: &Socket, addr: SocketAddr) -> Option<Result<(), Outcome>> {
    match socket.connect(&addr.into()) {
        Ok(()) => Some(Ok(())),
        Err(err) => match err.raw_os_error() {
            Some(libc::EISCONN) => Some(Ok(())),
            Some(libc::EALREADY | libc::EINPROGRESS) => None,
            _ => Some(Err(Outcome::from_error(&err).unwrap_or(Outcome::Error))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_starts_high_and_converges_low() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let mut rtt = Rtt::default();
        assert_eq!(rtt.timeout(min, max), max);
        rtt.sample(Duration::from_millis(300));
        // One answer: the round trip plus four deviations of half of it (RFC 6298).
        assert_eq!(rtt.timeout(min, max), Duration::from_millis(900));
        for _ in 0..50 {
            rtt.sample(Duration::from_millis(20));
        }
        let settled = rtt.timeout(min, max);
        assert_eq!(settled, min, "fast answers settle at the floor");
        let mut slow = Rtt::default();
        for _ in 0..50 {
            slow.sample(Duration::from_millis(150));
        }
        let t = slow.timeout(min, max);
        assert!(
            t > Duration::from_millis(150) && t < Duration::from_millis(300),
            "{t:?}"
        );
    }

    #[test]
    fn outcomes_map_to_nmap_states_and_reasons() {
        let err = |code| io::Error::from_raw_os_error(code);
        let outcome = |code| Outcome::from_error(&err(code));
        assert_eq!(outcome(libc::ECONNREFUSED), Some(Outcome::Refused));
        assert_eq!(outcome(libc::EHOSTUNREACH), Some(Outcome::HostUnreach));
        assert_eq!(outcome(libc::ENETUNREACH), Some(Outcome::NetUnreach));
        assert_eq!(outcome(libc::EACCES), Some(Outcome::AdminProhibited));
        assert_eq!(outcome(libc::EMFILE), None);
        assert_eq!(outcome(libc::EADDRNOTAVAIL), None);
        assert_eq!(Outcome::Refused.state(), State::Closed);
        assert_eq!(Outcome::Refused.reason(), "conn-refused");
        assert_eq!(Outcome::NoResponse.state(), State::Filtered);
        assert_eq!(Outcome::Open.reason(), "syn-ack");
        for value in 0..=8u8 {
            assert_eq!(Outcome::from_u8(value) as u8, value);
        }
    }
}
