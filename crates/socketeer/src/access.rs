//! Who may connect at all, decided before a byte is read: [`AccessList`] (`--allow`/`--deny`
//! CIDRs) and [`Admission`], which caps connections still in their handshake — in all and per
//! source, like sshd's `MaxStartups` — and makes an identity that fails authentication from a
//! source wait a growing penalty before it may try again, like sshd's `PerSourcePenalties`.
//!
//! A source is an IPv4 address, an IPv6 /64 (one host usually holds a whole /64), or "local"
//! for every Unix-socket peer.
//!
//! **Under a flood the caps evict rather than refuse.** A source at its own cap makes room by
//! ending its own oldest handshake; when all places are taken, a newcomer from a source with
//! fewer handshakes in progress than the busiest source ends that source's oldest. So stalled
//! handshakes from a few sources never lock out another source, which sshd's random early drop
//! only makes less likely: there a newcomer is dropped as often as a flooder.
//!
//! **A penalty belongs to an identity at a source**, not to the whole source: the device a
//! client claims when keys are per device, else the source's unnamed clients. A wrong answer
//! from behind a NAT, on 127.0.0.1 or on a Unix socket makes the device it claimed wait, not
//! every client there. (Each identity still gets one guess per penalty, and with one shared key
//! every claim is one identity, so guessing stays throttled.)

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

/// Why a connection was not admitted, or not let on to its answer being checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This identity failed authentication from this source recently; it may try again after
    /// this long. The device named, if keys are per device.
    Penalized(Duration, Option<String>),
    /// Every place is taken, and this source has as many as the busiest: it is the flood.
    Busy,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Penalized(left, device) => {
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                match device {
                    Some(device) => write!(
                        f,
                        "device \"{device}\" failed authentication from this address and is \
                         locked out; try again in {secs} s"
                    ),
                    None => write!(
                        f,
                        "this address failed authentication and is locked out; try again in \
                         {secs} s"
                    ),
                }
            }
            Self::Busy => f.write_str("too many handshakes in progress from this source"),
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

/// One handshake's place, shared between its [`Startup`] and its source's list (for eviction).
#[derive(Debug, Default)]
struct Place {
    /// Given back (by its end or by eviction): counted no more.
    released: std::sync::atomic::AtomicBool,
    evicted: tokio_util::sync::CancellationToken,
}

#[derive(Debug, Default)]
struct SourceState {
    /// Handshakes in progress, oldest first.
    places: std::collections::VecDeque<Arc<Place>>,
}

/// What an identity at a source owes for failing.
#[derive(Debug, Default)]
struct PenaltyState {
    strikes: u32,
    until: Option<Instant>,
    last_failure: Option<Instant>,
}

/// Whom a penalty is for: an identity at a source.
type Culprit = (Source, Option<Box<str>>);

/// The pre-authentication gate shared by a process's listeners.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    startups: AtomicUsize,
    sources: Mutex<HashMap<Source, SourceState>>,
    penalties: Mutex<HashMap<Culprit, PenaltyState>>,
}

/// A place in the handshake queue; dropping it (when the handshake ends, either way) frees it.
#[derive(Debug)]
pub struct Startup {
    admission: Arc<Admission>,
    source: Option<Source>,
    place: Arc<Place>,
}

impl Startup {
    /// Completes when a newcomer has taken this place (the handshake should end at once).
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn evicted(&self) {
        self.place.evicted.cancelled().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Admission {
    /// A gate with these limits.
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            startups: AtomicUsize::new(0),
            sources: Mutex::new(HashMap::new()),
            penalties: Mutex::new(HashMap::new()),
        })
    }

    /// Gives a place back, once.
    fn release(&self, place: &Place) -> bool {
        let first = !place.released.swap(true, Ordering::AcqRel);
        if first {
            self.startups.fetch_sub(1, Ordering::Relaxed);
        }
        first
    }

    /// Ends a source's oldest handshake to make room.
    fn evict_oldest(&self, state: &mut SourceState) {
        if let Some(place) = state.places.pop_front() {
            self.release(&place);
            place.evicted.cancel();
        }
    }

    /// Admits `peer` into its handshake, making room by eviction when it must (see the module
    /// documentation), or says why not.
    ///
    /// # Errors
    /// [`Refusal::Busy`] when every place is taken and `peer`'s source is among the busiest.
    pub fn admit(self: &Arc<Self>, peer: &PeerAddr) -> Result<Startup, Refusal> {
        let source = Source::of(peer);
        let mut table = lock(&self.sources);
        let mine = table.get(&source).map_or(0, |s| s.places.len());
        if mine >= self.limits.max_startups_per_source.max(1) {
            if let Some(state) = table.get_mut(&source) {
                self.evict_oldest(state);
            }
        } else if self.startups.load(Ordering::Relaxed) >= self.limits.max_startups {
            // The busiest source gives up its oldest, if it is busier than this one would be.
            let busiest = table
                .iter_mut()
                .max_by_key(|(_, state)| state.places.len())
                .filter(|(_, state)| state.places.len() > mine + 1);
            match busiest {
                Some((_, state)) => self.evict_oldest(state),
                None => return Err(Refusal::Busy),
            }
        }
        self.startups.fetch_add(1, Ordering::Relaxed);
        let place = Arc::new(Place::default());
        let tracked = table.contains_key(&source) || table.len() < self.limits.max_sources;
        if tracked {
            table
                .entry(source)
                .or_default()
                .places
                .push_back(Arc::clone(&place));
        }
        Ok(Startup {
            admission: Arc::clone(self),
            source: tracked.then_some(source),
            place,
        })
    }

    /// How long `identity` (a device name, or `None` for a source's unnamed clients) must still
    /// wait at `peer`'s source after failing, if it must.
    pub fn penalty(&self, peer: &PeerAddr, identity: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let key = (Source::of(peer), identity.map(Box::from));
        let table = lock(&self.penalties);
        let until = table.get(&key)?.until?;
        (until > now).then(|| until - now)
    }

    /// Records a failed authentication of `identity` from `peer`: its penalty starts, or
    /// doubles.
    pub fn penalize(&self, peer: &PeerAddr, identity: Option<&str>) {
        let now = Instant::now();
        let key = (Source::of(peer), identity.map(Box::from));
        let mut table = lock(&self.penalties);
        if !table.contains_key(&key) && table.len() >= self.limits.max_sources {
            // Forget identities whose strikes have decayed.
            let keep_for = self.limits.max_penalty;
            table.retain(|_, p| {
                p.last_failure
                    .is_some_and(|last| now.duration_since(last) <= keep_for)
            });
            if table.len() >= self.limits.max_sources {
                tracing::warn!(peer = %peer, "penalty table full; not recording this failure");
                return;
            }
        }
        let state = table.entry(key).or_default();
        // An identity quiet for longer than the longest penalty starts over.
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
        state.until = Some(now + penalty);
        state.last_failure = Some(now);
        tracing::info!(peer = %peer, device = identity, strikes = state.strikes, ?penalty, "authentication failed; penalized");
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> usize {
        self.startups.load(Ordering::Relaxed)
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        if !self.admission.release(&self.place) {
            return; // evicted: already taken off its source's list
        }
        if let Some(source) = self.source {
            let mut table = lock(&self.admission.sources);
            if let Some(state) = table.get_mut(&source) {
                state.places.retain(|p| !Arc::ptr_eq(p, &self.place));
                if state.places.is_empty() {
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
    fn a_source_at_its_cap_makes_room_by_ending_its_own_oldest() {
        let gate = Admission::new(AdmissionLimits {
            max_startups_per_source: 2,
            ..AdmissionLimits::default()
        });
        let a1 = gate.admit(&peer("127.0.0.1")).expect("a1");
        let a2 = gate.admit(&peer("127.0.0.1")).expect("a2");
        let a3 = gate.admit(&peer("127.0.0.1")).expect("a3 evicts a1");
        assert!(a1.place.evicted.is_cancelled());
        assert!(!a2.place.evicted.is_cancelled());
        assert_eq!(gate.in_progress(), 2);
        drop(a1); // counted once
        assert_eq!(gate.in_progress(), 2);
        drop((a2, a3));
        assert_eq!(gate.in_progress(), 0);
        assert!(lock(&gate.sources).is_empty());
        // IPv6 sources are /64s.
        let v6 = |s: &str| PeerAddr::Inet(format!("[{s}]:1").parse().expect("v6"));
        let gate = Admission::new(AdmissionLimits {
            max_startups_per_source: 1,
            ..AdmissionLimits::default()
        });
        let x = gate.admit(&v6("2001:db8::1")).expect("first");
        let _y = gate.admit(&v6("2001:db8::2")).expect("same /64: evicts");
        assert!(x.place.evicted.is_cancelled());
        let z = gate.admit(&v6("2001:db8:0:1::1")).expect("another /64");
        assert!(!z.place.evicted.is_cancelled());
    }

    #[test]
    fn when_all_places_are_taken_the_busiest_source_gives_way() {
        let gate = Admission::new(AdmissionLimits {
            max_startups: 4,
            max_startups_per_source: 4,
            ..AdmissionLimits::default()
        });
        let flood: Vec<Startup> = (0..4)
            .map(|_| gate.admit(&peer("10.0.0.1")).expect("flood"))
            .collect();
        // Full: a newcomer from another source ends the flood's oldest...
        let good = gate.admit(&peer("10.0.0.2")).expect("newcomer admitted");
        assert!(flood[0].place.evicted.is_cancelled());
        assert_eq!(gate.in_progress(), 4);
        // ...but the flood, now the busiest, cannot evict the newcomer by pressing on.
        assert_eq!(
            gate.admit(&peer("10.0.0.1")).expect_err("busiest"),
            Refusal::Busy
        );
        assert!(!good.place.evicted.is_cancelled());
        // Two sources of two each: a third source takes from one of them; an equal one is refused.
        let gate = Admission::new(AdmissionLimits {
            max_startups: 2,
            max_startups_per_source: 4,
            ..AdmissionLimits::default()
        });
        let _a = gate.admit(&peer("10.0.0.1")).expect("a");
        let _b = gate.admit(&peer("10.0.0.2")).expect("b");
        assert_eq!(
            gate.admit(&peer("10.0.0.3")).expect_err("even"),
            Refusal::Busy
        );
    }

    #[tokio::test(start_paused = true)]
    async fn penalties_belong_to_an_identity_at_a_source_and_grow_cap_and_expire() {
        let limits = AdmissionLimits {
            penalty: Duration::from_secs(1),
            max_penalty: Duration::from_secs(4),
            ..AdmissionLimits::default()
        };
        let gate = Admission::new(limits);
        let src = peer("127.0.0.1");
        let mut waits = Vec::new();
        for _ in 0..4 {
            gate.penalize(&src, Some("r1"));
            let left = gate.penalty(&src, Some("r1")).expect("penalized");
            waits.push(left.as_secs());
            assert_eq!(
                gate.penalty(&src, Some("r2")),
                None,
                "another device there is not"
            );
            assert_eq!(gate.penalty(&src, None), None, "nor are unnamed clients");
            assert_eq!(gate.penalty(&peer("127.0.0.2"), Some("r1")), None);
            tokio::time::advance(left).await;
            assert_eq!(gate.penalty(&src, Some("r1")), None, "expired");
        }
        assert_eq!(waits, vec![1, 2, 4, 4], "doubling, capped");
        // A long quiet spell resets the strikes.
        tokio::time::advance(Duration::from_secs(10)).await;
        gate.penalize(&src, Some("r1"));
        assert_eq!(gate.penalty(&src, Some("r1")), Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_tables_are_bounded() {
        let gate = Admission::new(AdmissionLimits {
            max_sources: 4,
            ..AdmissionLimits::default()
        });
        for i in 0..100 {
            gate.penalize(&peer(&format!("10.0.0.{i}")), None);
        }
        assert!(lock(&gate.penalties).len() <= 4);
        let held: Vec<Startup> = (0..10)
            .map(|i| gate.admit(&peer(&format!("10.1.1.{i}"))).expect("admitted"))
            .collect();
        assert!(lock(&gate.sources).len() <= 4);
        // An untracked source is still admitted under the global cap.
        assert!(held[9].source.is_none());
    }
}
