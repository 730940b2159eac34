//! Caps on commands running at once: in all, and per client (its device name when it
//! authenticated, else its address).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Commands running now, in all and per client.
pub(crate) struct Sessions {
    max_total: usize,
    max_per_client: usize,
    running: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<String, usize>,
}

/// A running command's place; dropping it frees the place.
pub(crate) struct Ticket {
    owner: String,
    running: Arc<Mutex<Counts>>,
}

impl Sessions {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            max_total,
            max_per_client,
            running: Arc::default(),
        }
    }

    /// A place for one more command of `owner`, or why there is none.
    pub(crate) fn enter(&self, owner: &str) -> Result<Ticket, String> {
        let mut counts = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(format!(
                "busy: {} commands are running (server --max-sessions)",
                counts.total
            ));
        }
        let mine = counts.per_client.get(owner).copied().unwrap_or(0);
        if mine >= self.max_per_client {
            return Err(format!(
                "busy: {owner} already runs {mine} commands (server --max-sessions-per-client)"
            ));
        }
        counts.total += 1;
        *counts.per_client.entry(owner.to_owned()).or_default() += 1;
        Ok(Ticket {
            owner: owner.to_owned(),
            running: Arc::clone(&self.running),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(n) = counts.per_client.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_places_come_back() {
        let sessions = Sessions::new(3, 2);
        let a1 = sessions.enter("a").expect("first");
        let _a2 = sessions.enter("a").expect("second");
        assert!(sessions.enter("a").is_err(), "per-client cap");
        let _b1 = sessions.enter("b").expect("b");
        assert!(sessions.enter("c").is_err(), "total cap");
        drop(a1);
        assert!(sessions.enter("a").is_ok());
    }
}
