//! [`Shutdown`]: decide, broadcast, wait with a deadline.
//!
//! One `Shutdown` can be shared by many servers. [`Shutdown::trigger`] makes every server stop
//! accepting at once and tells live connections to finish: a connection waiting for its next
//! message sees a clean end of input, one in the middle of a message gets to finish it. After the
//! grace period the connections still running are cancelled (their handler's `finish` still
//! runs, briefly) and dropped.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a handler's `finish` may take once its connection has been cancelled.
pub(crate) const FINISH_TIMEOUT: Duration = Duration::from_secs(1);

/// A shutdown switch shared by servers and their connections. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    hard: CancellationToken,
    tracker: TaskTracker,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Graceful,
    /// The grace period ran out; this many connections were cancelled.
    Forced(usize),
}

impl Shutdown {
    /// A switch that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins shutdown: servers stop accepting and connections are asked to finish.
    pub fn trigger(&self) {
        self.stop.cancel();
    }

    /// True once [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes when shutdown is triggered.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn triggered(&self) {
        self.stop.cancelled().await;
    }

    /// The token cancelled when shutdown begins, for tasks of your own.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Connections (and tasks spawned with [`spawn`](Self::spawn)) still running.
    pub fn live(&self) -> usize {
        self.tracker.len()
    }

    /// Spawns a task the drain waits for, like the servers' connection tasks.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    pub(crate) fn hard_token(&self) -> &CancellationToken {
        &self.hard
    }

    /// Waits for live connections to finish, at most `grace`; then cancels the rest and waits
    /// briefly for their `finish` to run. Call after [`trigger`](Self::trigger).
    pub async fn drain(&self, grace: Duration) -> Drained {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return Drained::Graceful;
        }
        let left = self.tracker.len();
        self.hard.cancel();
        let _ = tokio::time::timeout(FINISH_TIMEOUT, self.tracker.wait()).await;
        Drained::Forced(left)
    }
}

/// Waits for SIGINT or SIGTERM and returns its name.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = int.recv() => Ok("SIGINT"),
        _ = term.recv() => Ok("SIGTERM"),
    }
}
