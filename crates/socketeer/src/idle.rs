//! [`IdleTimer`]: a deadline on each wait for a peer, armed once per connection and re-armed
//! lazily, so a busy connection does not register a timer for every read and write.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Fails a wait that makes no progress for `limit`.
///
/// Each wait notes when it started waiting; the one timer fires at most once per `limit` period
/// and, if the current wait began later, is moved to that wait's deadline instead of failing it.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The waker the sleep was last polled with: while it is the same, the timer needs no
    /// polling (it will wake that task) until it has fired.
    registered: Option<std::task::Waker>,
}

impl IdleTimer {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            registered: None,
        }
    }

    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Runs `op`; `Err(())` if it is still pending `limit` after it first had to wait. An
    /// operation that is ready at once never reads the clock or touches the timer.
    pub(crate) async fn run<F: Future>(&mut self, op: F) -> Result<F::Output, ()> {
        let mut op = std::pin::pin!(op);
        let mut waiting_since = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = op.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            self.poll_expired(cx, &mut waiting_since).map(Err)
        })
        .await
    }

    /// For a wait that has just found its operation pending: `Ready` once it has been waiting
    /// `limit` since `waiting_since` (set here on its first pending poll; the caller clears it
    /// when the operation makes progress). Otherwise this task is woken when that may be so.
    pub(crate) fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        waiting_since: &mut Option<Instant>,
    ) -> Poll<()> {
        let deadline = *waiting_since.get_or_insert_with(Instant::now) + self.limit;
        if !self.sleep.is_elapsed()
            && self
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        self.registered = Some(cx.waker().clone());
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // The timer was armed for an earlier wait; move it to this one's deadline.
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_wait_gets_the_whole_limit_even_after_the_timer_was_armed_long_ago() {
        let mut timer = IdleTimer::new(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(9)).await;
        // This wait starts 9 s after the timer was armed; it must still get 10 s.
        let done = timer.run(tokio::time::sleep(Duration::from_secs(5))).await;
        assert!(done.is_ok());
        let started = Instant::now();
        assert!(timer.run(std::future::pending::<()>()).await.is_err());
        assert_eq!(Instant::now() - started, Duration::from_secs(10));
    }
}
