//! Who may connect at all, decided before a byte is read: [`AccessList`] (`--allow`/`--deny`
//! CIDRs) and [`Admission`], which caps connections still in their handshake — in all and per
//! source, like sshd's `MaxStartups` — and makes a source that fails authentication wait a
//! growing penalty before it may try again, like sshd's `PerSourcePenalties`.
//!
//! A source is an IPv4 address, an IPv6 /64 (one host usually holds a whole /64), or "local"
//! for every Unix-socket peer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;

use crate::stream::PeerAddr;

/// Allowed and denied networks. A peer is refused if a `deny` network holds it, or if there are
/// `allow` networks and none holds it. Unix-socket peers have no address and are always
/// allowed (file permissions guard them). IPv4-mapped IPv6 peers are matched as IPv4.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl AccessList {
    /// A list that allows `allow` (everyone when empty) except `deny`.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        Self { allow, deny }
    }

    /// True when the list lets `peer` in.
    pub fn permits(&self, peer: &PeerAddr) -> bool {
        let Some(ip) = peer.ip().map(|ip| ip.to_canonical()) else {
            return true;
        };
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// True when the list lets everyone in.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// The numbers [`Admission`] works with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdmissionLimits {
    /// Connections in their handshake at once, from everyone. Default 256.
    pub max_startups: usize,
    /// Connections in their handshake at once from one source. Default 16.
    pub max_startups_per_source: usize,
    /// The first penalty after a failed authentication. Default 2 s.
    pub penalty: Duration,
    /// Each further failure doubles the penalty, up to this. Default 10 minutes.
    pub max_penalty: Duration,
    /// Sources tracked at once; beyond this, new sources are admitted untracked (the global cap
    /// still holds) and their failures are not remembered. Default 4096.
    pub max_sources: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_startups: 256,
            max_startups_per_source: 16,
            penalty: Duration::from_secs(2),
            max_penalty: Duration::from_secs(600),
            max_sources: 4096,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source failed authentication recently; it may try again after this long.
    Penalized(Duration),
    /// The source already has `max_startups_per_source` handshakes in progress.
    SourceBusy,
    /// `max_startups` handshakes are in progress.
    Busy,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Penalized(left) => write!(
                f,
                "this address failed authentication and is locked out; try again in {} s",
                left.as_secs() + u64::from(left.subsec_nanos() > 0)
            ),
            Self::SourceBusy => f.write_str("too many handshakes in progress from this source"),
            Self::Busy => f.write_str("too many handshakes in progress"),
        }
    }
}

/// A source's key in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
    Local,
}

impl Source {
    fn of(peer: &PeerAddr) -> Self {
        match peer.ip().map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Self::V4(u32::from(v4)),
            Some(IpAddr::V6(v6)) => Self::V6((u128::from(v6) >> 64) as u64),
            None => Self::Local,
        }
    }
}

#[derive(Debug, Default)]
struct SourceState {
    startups: usize,
    strikes: u32,
    penalty_until: Option<Instant>,
    last_failure: Option<Instant>,
}

/// The pre-authentication gate shared by a process's listeners.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    startups: AtomicUsize,
    sources: Mutex<HashMap<Source, SourceState>>,
}

/// A place in the handshake queue; dropping it (when the handshake ends, either way) frees it.
#[derive(Debug)]
pub struct Startup {
    admission: Arc<Admission>,
    source: Option<Source>,
}

impl Admission {
    /// A gate with these limits.
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            startups: AtomicUsize::new(0),
            sources: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Source, SourceState>> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits `peer` into its handshake, or says why not.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn admit(self: &Arc<Self>, peer: &PeerAddr) -> Result<Startup, Refusal> {
        let source = Source::of(peer);
        let now = Instant::now();
        let mut table = self.table();
        if let Some(state) = table.get(&source) {
            if let Some(until) = state.penalty_until.filter(|until| *until > now) {
                return Err(Refusal::Penalized(until - now));
            }
            if state.startups >= self.limits.max_startups_per_source {
                return Err(Refusal::SourceBusy);
            }
        }
        if self.startups.load(Ordering::Relaxed) >= self.limits.max_startups {
            return Err(Refusal::Busy);
        }
        self.startups.fetch_add(1, Ordering::Relaxed);
        let tracked = table.contains_key(&source) || self.make_room(&mut table, now);
        if tracked {
            table.entry(source).or_default().startups += 1;
        }
        Ok(Startup {
            admission: Arc::clone(self),
            source: tracked.then_some(source),
        })
    }

    /// Records a failed authentication from `peer`: its penalty starts, or doubles.
    pub fn penalize(&self, peer: &PeerAddr) {
        let source = Source::of(peer);
        let now = Instant::now();
        let mut table = self.table();
        if !table.contains_key(&source) && !self.make_room(&mut table, now) {
            tracing::warn!(peer = %peer, "penalty table full; not recording this failure");
            return;
        }
        let state = table.entry(source).or_default();
        // A source quiet for longer than the longest penalty starts over.
        if state
            .last_failure
            .is_some_and(|last| now.duration_since(last) > self.limits.max_penalty)
        {
            state.strikes = 0;
        }
        state.strikes = state.strikes.saturating_add(1);
        let factor = 1u32.checked_shl(state.strikes - 1).unwrap_or(u32::MAX);
        let penalty = self
            .limits
            .penalty
            .saturating_mul(factor)
            .min(self.limits.max_penalty);
        state.penalty_until = Some(now + penalty);
        state.last_failure = Some(now);
        tracing::info!(peer = %peer, strikes = state.strikes, ?penalty, "authentication failed; source penalized");
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> usize {
        self.startups.load(Ordering::Relaxed)
    }

    /// True if there is room for one more tracked source, after forgetting sources with nothing
    /// in progress whose penalty has expired and whose strikes have decayed.
    fn make_room(&self, table: &mut HashMap<Source, SourceState>, now: Instant) -> bool {
        if table.len() < self.limits.max_sources {
            return true;
        }
        let keep_for = self.limits.max_penalty;
        table.retain(|_, s| {
            s.startups > 0
                || s.last_failure
                    .is_some_and(|last| now.duration_since(last) <= keep_for)
        });
        table.len() < self.limits.max_sources
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        self.admission.startups.fetch_sub(1, Ordering::Relaxed);
        if let Some(source) = self.source {
            let mut table = self.admission.table();
            if let Some(state) = table.get_mut(&source) {
                state.startups = state.startups.saturating_sub(1);
                if state.startups == 0 && state.last_failure.is_none() {
                    table.remove(&source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> PeerAddr {
        PeerAddr::Inet(format!("{ip}:5000").parse().expect("addr"))
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn allow_and_deny() {
        let list = AccessList::new(
            vec![net("10.0.0.0/8"), net("::1/128")],
            vec![net("10.9.0.0/16")],
        );
        assert!(list.permits(&peer("10.1.2.3")));
        assert!(!list.permits(&peer("10.9.2.3")));
        assert!(!list.permits(&peer("192.168.1.1")));
        assert!(list.permits(&PeerAddr::Inet("[::1]:1".parse().expect("v6"))));
        assert!(list.permits(&PeerAddr::Inet(
            "[::ffff:10.1.1.1]:1".parse().expect("mapped")
        )));
        assert!(list.permits(&PeerAddr::Unix(None)));
        assert!(AccessList::default().permits(&peer("1.2.3.4")));
    }

    #[test]
    fn per_source_and_global_caps() {
        let limits = AdmissionLimits {
            max_startups: 3,
            max_startups_per_source: 2,
            ..AdmissionLimits::default()
        };
        let gate = Admission::new(limits);
        let a1 = gate.admit(&peer("127.0.0.1")).expect("a1");
        let _a2 = gate.admit(&peer("127.0.0.1")).expect("a2");
        assert_eq!(
            gate.admit(&peer("127.0.0.1")).expect_err("refused"),
            Refusal::SourceBusy
        );
        let _b1 = gate.admit(&peer("127.0.0.2")).expect("b1");
        assert_eq!(
            gate.admit(&peer("127.0.0.3")).expect_err("refused"),
            Refusal::Busy
        );
        drop(a1);
        assert!(gate.admit(&peer("127.0.0.3")).is_ok());
        // IPv6 sources are /64s.
        let v6 = |s: &str| PeerAddr::Inet(format!("[{s}]:1").parse().expect("v6"));
        let gate = Admission::new(AdmissionLimits {
            max_startups_per_source: 1,
            ..AdmissionLimits::default()
        });
        let _x = gate.admit(&v6("2001:db8::1")).expect("first");
        assert_eq!(
            gate.admit(&v6("2001:db8::2")).expect_err("refused"),
            Refusal::SourceBusy
        );
        assert!(gate.admit(&v6("2001:db8:0:1::1")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn penalties_grow_cap_and_expire() {
        let limits = AdmissionLimits {
            penalty: Duration::from_secs(1),
            max_penalty: Duration::from_secs(4),
            ..AdmissionLimits::default()
        };
        let gate = Admission::new(limits);
        let src = peer("127.0.0.1");
        let mut waits = Vec::new();
        for _ in 0..4 {
            gate.penalize(&src);
            let Err(Refusal::Penalized(left)) = gate.admit(&src) else {
                panic!("penalized")
            };
            waits.push(left.as_secs());
            tokio::time::advance(left).await;
            assert!(gate.admit(&src).is_ok(), "expired");
        }
        assert_eq!(waits, vec![1, 2, 4, 4], "doubling, capped");
        assert!(
            gate.admit(&peer("127.0.0.2")).is_ok(),
            "other sources unaffected"
        );
        // A long quiet spell resets the strikes.
        tokio::time::advance(Duration::from_secs(10)).await;
        gate.penalize(&src);
        assert_eq!(
            gate.admit(&src).expect_err("refused"),
            Refusal::Penalized(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_source_table_is_bounded() {
        let gate = Admission::new(AdmissionLimits {
            max_sources: 4,
            ..AdmissionLimits::default()
        });
        for i in 0..100 {
            gate.penalize(&peer(&format!("10.0.0.{i}")));
        }
        assert!(gate.table().len() <= 4);
        // An untracked source is still admitted under the global cap.
        let held = gate.admit(&peer("10.1.1.1")).expect("admitted untracked");
        assert!(held.source.is_none());
    }
}
