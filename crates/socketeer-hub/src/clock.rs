//! One clock for the fleet: each device's clock offset from the hub's, from NTP-style time
//! exchanges on its ingest link (`docs/protocol.md`, "The time exchange").
//!
//! A device sends `{"time":{"t0":T0}}` (its clock); the hub answers
//! `{"time":{"t0":T0,"t1":T1,"t2":T2}}` (T1 when the line was read, T2 when the answer was
//! written, the hub's clock); the device notes T3 (its clock) and sends the whole exchange
//! back, `{"time":{"t0","t1","t2","t3"}}`. Then
//!
//! - offset = ((T1 − T0) + (T2 − T3)) / 2: what to add to the device's times;
//! - round trip = (T3 − T0) − (T2 − T1).
//!
//! The estimate is the offset of the exchange with the shortest round trip among the device's
//! recent ones (NTP's clock filter): a slow round trip carries the most error — its delay may
//! be all on one way — and is simply not chosen, so it cannot skew the estimate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::wire::{Reason, Refusal};

/// Exchanges kept per device.
const SAMPLES: usize = 8;
/// Exchanges older than this are not used (a clock drifts).
const FRESH_SECS: f64 = 900.0;
/// The longest round trip taken (a longer one says little).
const MAX_RTT: f64 = 60.0;
/// How far back the hub's own T1 may be (the answer was written, sent and come back).
const MAX_AGE: f64 = 300.0;

/// Four times of one exchange, Unix seconds: T0 and T3 on the device's clock, T1 and T2 on
/// the hub's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exchange {
    /// The device sent its request.
    pub t0: f64,
    /// The hub read it.
    pub t1: f64,
    /// The hub wrote its answer.
    pub t2: f64,
    /// The device read the answer.
    pub t3: f64,
}

/// A device's request line, `{"time":{"t0":T0}}` (with its ending), sent at `t0` on its clock.
pub fn request(t0: f64) -> String {
    format!("{{\"time\":{{\"t0\":{t0:.6}}}}}\n")
}

impl Exchange {
    /// The device's half of a hub's answer `Answer::Time { t0, t1, t2 }`, read at `t3` on
    /// its clock.
    pub fn completed(t0: f64, t1: f64, t2: f64, t3: f64) -> Exchange {
        Exchange { t0, t1, t2, t3 }
    }

    /// The completed exchange as the device sends it back (with its ending); not answered.
    pub fn line(&self) -> String {
        let Exchange { t0, t1, t2, t3 } = self;
        format!("{{\"time\":{{\"t0\":{t0},\"t1\":{t1},\"t2\":{t2},\"t3\":{t3:.6}}}}}\n")
    }

    /// What to add to the device's times to put them on the hub's clock.
    pub fn offset(&self) -> f64 {
        ((self.t1 - self.t0) + (self.t2 - self.t3)) / 2.0
    }

    /// The time on the wire, both ways.
    pub fn round_trip(&self) -> f64 {
        (self.t3 - self.t0) - (self.t2 - self.t1)
    }
}

/// A device's clock as the hub sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Estimate {
    /// Seconds to add to the device's times.
    pub(crate) offset: f64,
    /// The round trip of the exchange it comes from, seconds.
    pub(crate) rtt: f64,
    /// When that exchange was (hub time).
    pub(crate) at: f64,
    /// Exchanges it was chosen from.
    pub(crate) exchanges: usize,
}

/// A device's recent exchanges, each with when the hub took it.
type Recent = VecDeque<(Exchange, f64)>;

impl Estimate {
    /// What to add to the device's times: the offset, or nothing when it is within the
    /// exchange's error bound (half its round trip) — a clock that is right within what can be
    /// measured keeps its times exactly as sent.
    pub(crate) fn correction(&self) -> f64 {
        if self.offset.abs() <= self.rtt / 2.0 {
            0.0
        } else {
            self.offset
        }
    }
}

/// Every device's clock.
#[derive(Debug, Default)]
pub(crate) struct Clocks {
    devices: Mutex<HashMap<Arc<str>, Recent>>,
}

impl Clocks {
    fn devices(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Recent>> {
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a completed exchange of `device` (checked: the hub's times must be recent and in
    /// order, the round trip short and not negative) and returns the new estimate.
    pub(crate) fn exchange(
        &self,
        device: &Arc<str>,
        exchange: Exchange,
        now: f64,
    ) -> Result<Estimate, Refusal> {
        let bad = |why: &str| Refusal::new(Reason::Value, format!("time: {why}"));
        let Exchange { t0, t1, t2, t3 } = exchange;
        if !(now - MAX_AGE..=now + 1.0).contains(&t1) || !(t1..=now + 1.0).contains(&t2) {
            return Err(bad(
                "t1 and t2 must be the hub's own times from its answer, in order",
            ));
        }
        if t3 < t0 {
            return Err(bad("t3 (answer read) is before t0 (request sent)"));
        }
        // A few microseconds below zero is rounding on the wire.
        let rtt = exchange.round_trip().max(0.0);
        if exchange.round_trip() < -1e-3 || rtt > MAX_RTT {
            return Err(bad(&format!(
                "a round trip of {:.3} s (0 to {MAX_RTT} s)",
                exchange.round_trip()
            )));
        }
        let mut devices = self.devices();
        let samples = devices.entry(Arc::clone(device)).or_default();
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back((exchange, now));
        Ok(best(samples, now).unwrap_or(Estimate {
            offset: exchange.offset(),
            rtt,
            at: now,
            exchanges: 1,
        }))
    }

    /// The device's estimate, if it has made exchanges lately.
    pub(crate) fn estimate(&self, device: &str) -> Option<Estimate> {
        let now = crate::store::now_secs();
        self.devices().get(device).and_then(|s| best(s, now))
    }

    /// What to add to the device's times (0 for a device that has made no exchange, or
    /// whose clock is right within what can be measured).
    pub(crate) fn offset(&self, device: &str) -> f64 {
        self.estimate(device).map_or(0.0, |e| e.correction())
    }
}

/// The freshest exchanges' shortest round trip.
fn best(samples: &Recent, now: f64) -> Option<Estimate> {
    let fresh: Vec<&(Exchange, f64)> = samples
        .iter()
        .filter(|(_, at)| now - at <= FRESH_SECS)
        .collect();
    let (exchange, at) = fresh
        .iter()
        .min_by(|a, b| a.0.round_trip().total_cmp(&b.0.round_trip()))?;
    Some(Estimate {
        offset: exchange.offset(),
        rtt: exchange.round_trip().max(0.0),
        at: *at,
        exchanges: fresh.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exchange with a device `ahead` seconds ahead of the hub, `out` and `back` seconds
    /// on the wire, and `hub` seconds spent by the hub, sent at hub time `at`.
    fn exchange(at: f64, ahead: f64, out: f64, back: f64, hub: f64) -> Exchange {
        let t1 = at + out;
        let t2 = t1 + hub;
        Exchange {
            t0: at + ahead,
            t1,
            t2,
            t3: t2 + back + ahead,
        }
    }

    #[test]
    fn the_lines_a_device_sends_are_the_ones_the_hub_reads() {
        use crate::record::{Line, parse_line};
        let line = request(1_800_000_000.25);
        assert_eq!(
            parse_line(line.trim_end()),
            Ok(Line::Time {
                t0: 1_800_000_000.25,
                rest: None
            })
        );
        let e = Exchange::completed(
            1_800_000_000.25,
            1_800_003_600.5,
            1_800_003_600.500_25,
            1_800_000_000.75,
        );
        let Ok(Line::Time {
            t0,
            rest: Some((t1, t2, t3)),
        }) = parse_line(e.line().trim_end())
        else {
            panic!("{}", e.line());
        };
        assert_eq!(Exchange { t0, t1, t2, t3 }, e);
    }

    #[test]
    fn a_symmetric_exchange_gives_the_offset_exactly() {
        let e = exchange(1_800_000_000.0, 3600.0, 0.005, 0.005, 0.001);
        assert!((e.offset() + 3600.0).abs() < 1e-6, "{}", e.offset());
        assert!((e.round_trip() - 0.010).abs() < 1e-6);
    }

    #[test]
    fn a_slow_round_trip_does_not_skew_the_estimate() {
        let clocks = Clocks::default();
        let device: Arc<str> = "rover".into();
        let now = 1_800_000_100.0;
        // Fast, symmetric exchanges, then one whose answer took 2 s to come back.
        for k in 0..4 {
            let e = exchange(now - 50.0 + f64::from(k), 3600.0, 0.002, 0.002, 0.0005);
            clocks.exchange(&device, e, now).expect("taken");
        }
        let slow = exchange(now - 10.0, 3600.0, 0.002, 2.0, 0.0005);
        assert!(
            (slow.offset() + 3600.0).abs() > 0.9,
            "a slow one alone is 1 s off"
        );
        let estimate = clocks.exchange(&device, slow, now).expect("taken");
        assert!((estimate.offset + 3600.0).abs() < 1e-3, "{estimate:?}");
        assert!(estimate.rtt < 0.01);
        assert_eq!(estimate.exchanges, 5);
        assert_eq!(estimate.correction(), estimate.offset);
    }

    #[test]
    fn a_clock_right_within_the_round_trip_is_left_as_it_is() {
        let clocks = Clocks::default();
        let device: Arc<str> = "rover".into();
        let now = 1_800_000_100.0;
        // 0.1 ms off, measured over a 2 ms round trip: within what can be told.
        let e = exchange(now - 1.0, 0.0001, 0.001, 0.001, 0.0);
        let estimate = clocks.exchange(&device, e, now).expect("taken");
        assert!((estimate.offset + 0.0001).abs() < 1e-6, "{estimate:?}");
        assert_eq!(estimate.correction(), 0.0);
        assert_eq!(clocks.offset("rover"), 0.0);
    }

    #[test]
    fn exchanges_that_cannot_be_are_refused() {
        let clocks = Clocks::default();
        let device: Arc<str> = "rover".into();
        let now = 1_800_000_100.0;
        let good = exchange(now - 1.0, 0.0, 0.01, 0.01, 0.0);
        for (e, why) in [
            (
                Exchange {
                    t1: now - 1000.0,
                    t2: now - 999.0,
                    ..good
                },
                "hub's own times",
            ),
            (
                Exchange {
                    t2: good.t1 - 1.0,
                    ..good
                },
                "hub's own times",
            ),
            (
                Exchange {
                    t3: good.t0 - 1.0,
                    ..good
                },
                "before t0",
            ),
            (
                Exchange {
                    t3: good.t0 + 100.0,
                    ..good
                },
                "round trip",
            ),
        ] {
            let refused = clocks.exchange(&device, e, now).expect_err(why);
            assert!(refused.why.contains(why), "{}", refused.why);
        }
        assert_eq!(clocks.offset("rover"), 0.0, "nothing taken");
    }
}
