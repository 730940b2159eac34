//! What the fleet view shows besides stored data: records committed per device since the hub
//! started and over the last ten seconds, and failed authentications claiming each name.

use std::collections::HashMap;
use std::sync::Arc;

/// Records committed by each device since the hub started, and over the last ten seconds (for
/// the fleet view's rates); and failed authentications claiming each device's name.
#[derive(Debug, Default)]
pub(crate) struct Activity(std::sync::Mutex<HashMap<Arc<str>, Counts>>);

/// One device's counts.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Counts {
    pub(crate) records: u64,
    pub(crate) auth_failures: u64,
    /// The Unix second `window` ends at.
    second: u64,
    /// The Unix second of the first record counted (a rate is over at most that long).
    since: u64,
    /// Records per second, indexed by second modulo the window.
    window: [u32; Activity::WINDOW as usize],
}

impl Counts {
    /// Records per second over the window ending at `now` (Unix seconds).
    pub(crate) fn rate(&self, now: u64) -> f64 {
        let w = Activity::WINDOW;
        let mut sum = 0u64;
        for (i, &n) in self.window.iter().enumerate() {
            // Bucket i holds the second s ≡ i (mod w) in (self.second - w, self.second].
            let s = self.second as i64 - ((self.second + w - i as u64 % w) % w) as i64;
            if s + w as i64 > now as i64 {
                sum += u64::from(n);
            }
        }
        // A device that started sending three seconds ago sends sum/3 per second, not sum/10.
        let span = if self.since == 0 {
            w
        } else {
            (now.saturating_sub(self.since) + 1).min(w)
        };
        sum as f64 / span as f64
    }

    fn advance(&mut self, now: u64) {
        if now <= self.second {
            return;
        }
        let gap = (now - self.second).min(Activity::WINDOW);
        for k in 1..=gap {
            self.window[((self.second + k) % Activity::WINDOW) as usize] = 0;
        }
        self.second = now;
    }
}

impl Activity {
    const WINDOW: u64 = 10;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Counts>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` records from `device` committed at `now` (Unix seconds).
    pub(crate) fn committed(&self, device: &Arc<str>, n: u64, now: u64) {
        let mut map = self.lock();
        let counts = map.entry(Arc::clone(device)).or_default();
        if counts.since == 0 {
            counts.since = now;
        }
        counts.advance(now);
        counts.records += n;
        let slot = &mut counts.window[(now % Self::WINDOW) as usize];
        *slot = slot.saturating_add(n.min(u64::from(u32::MAX)) as u32);
    }

    /// A failed authentication that claimed `device`.
    pub(crate) fn auth_failed(&self, device: &str) {
        let mut map = self.lock();
        match map.get_mut(device) {
            Some(counts) => counts.auth_failures += 1,
            None => {
                // Bounded: a stranger inventing names must not grow the map without end.
                if map.len() < 100_000 {
                    map.entry(Arc::from(device)).or_default().auth_failures += 1;
                }
            }
        }
    }

    /// Every device's counts.
    pub(crate) fn snapshot(&self) -> HashMap<Arc<str>, Counts> {
        self.lock().clone()
    }
}
