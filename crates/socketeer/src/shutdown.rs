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

    /// Completes when a drain's grace period has run out: tasks of your own (spawned with
    /// [`spawn`](Self::spawn)) should stop at once, as the servers' connections do.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn forced(&self) {
        self.hard.cancelled().await;
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

/// SIGINT and SIGTERM, caught from the moment this is made: make it before you announce that
/// you are listening, so a signal that follows the announcement at once is not fatal.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let mut signals = socketeer::Signals::new()?;
/// // ... bind, print "listening on ...", start serving ...
/// let name = signals.recv().await;
/// println!("got {name}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (replacing the default action, which would end the process).
    ///
    /// # Errors
    /// When the handlers cannot be installed.
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM and returns its name.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// A wait for a token's cancellation that, once registered with a task's waker, is not polled
/// again until the token is cancelled or the task's waker changes. (Each poll of tokio-util's
/// wait, and each `is_cancelled`, takes the token's lock; a connection's task is woken for
/// every message.) Between those events a poll costs one atomic load.
pub(crate) struct CancelWait {
    token: CancellationToken,
    wait: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// The waker `wait` holds: it notes that it fired, then wakes the task it was made for.
    registered: Option<std::sync::Arc<Fired>>,
    cancelled: bool,
}

/// The waker given to the inner wait.
struct Fired {
    fired: std::sync::atomic::AtomicBool,
    task: std::task::Waker,
}

impl std::task::Wake for Fired {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.fired.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl CancelWait {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self {
            wait: Box::pin(token.clone().cancelled_owned()),
            token,
            registered: None,
            cancelled: false,
        }
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// `Ready` once the token is cancelled; otherwise makes sure this task is woken then.
    #[inline]
    pub(crate) fn poll_cancelled(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.cancelled {
            return std::task::Poll::Ready(());
        }
        if let Some(registered) = &self.registered
            && !registered.fired.load(std::sync::atomic::Ordering::Acquire)
            && registered.task.will_wake(cx.waker())
        {
            return std::task::Poll::Pending;
        }
        self.poll_wait(cx)
    }

    /// First poll, a new waker, or the wait fired: asks the wait itself.
    #[cold]
    #[inline(never)]
    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let registered = std::sync::Arc::new(Fired {
            fired: std::sync::atomic::AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = std::task::Waker::from(registered.clone());
        if self
            .wait
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_ready()
        {
            self.cancelled = true;
            self.registered = None;
            return std::task::Poll::Ready(());
        }
        self.registered = Some(registered);
        std::task::Poll::Pending
    }

    /// Waits for the cancellation.
    pub(crate) async fn cancelled(&mut self) {
        std::future::poll_fn(|cx| self.poll_cancelled(cx)).await;
    }
}

impl std::fmt::Debug for CancelWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelWait")
            .field("cancelled", &self.token.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_polled_again_by_the_same_task_is_still_woken_by_the_cancel() {
        let token = CancellationToken::new();
        let mut wait = CancelWait::new(token.clone());
        let (waiting, is_waiting) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            // The second poll, with the same waker, skips the inner wait.
            for _ in 0..2 {
                let polled =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(wait.poll_cancelled(cx)));
                assert!(polled.await.is_pending());
            }
            let _ = waiting.send(());
            wait.cancelled().await;
        });
        is_waiting.await.expect("the waiter polled");
        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the cancel wakes the waiting task")
            .expect("the waiter ran");
    }
}
