//! The room: every client's bounded outgoing queue, their nicknames, and fan-out.
//!
//! What a client says is fanned out as [`Batch`]es: every complete line that arrived together,
//! formatted once into one shared buffer, so the cost per queue operation is spread over many
//! lines. Sending never waits: a client whose queue would pass its bounds (in lines or bytes) is
//! kicked — its own task tells it and leaves — so one slow reader never slows anyone else.
//!
//! When queues grow because the broker itself is behind (their writers are busy, not blocked on
//! their clients), [`Room::pressured`] says so and senders pause reading new lines until the
//! queues drain: a burst is absorbed by TCP backpressure on the senders, not by dropping healthy
//! readers. A writer blocked on a client that does not read is marked stuck and ignored by that
//! check, so its queue fills and it is dropped.
//!
//! The check costs one atomic load: every fan-out already visits every queue, so it notes on the
//! way whether any is past a quarter of its bounds; a paused sender looks again itself
//! ([`Room::rescan`]) when a writer reports relief, or after a short wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Bounds on one client's outgoing queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) lines: usize,
    pub(crate) bytes: usize,
}

/// A client's identity in the room.
pub(crate) type ClientId = u64;

/// Formatted lines going out together.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) text: Bytes,
    pub(crate) lines: usize,
}

impl Batch {
    /// One line (announcements, notices).
    pub(crate) fn line(text: String) -> Self {
        Self {
            text: Bytes::from(text),
            lines: 1,
        }
    }
}

/// How much is waiting in one client's queue, shared by the room and the client's task.
#[derive(Debug, Default)]
struct Backlog {
    lines: AtomicUsize,
    bytes: AtomicUsize,
    /// The client's writer is blocked on a client that is not reading.
    stuck: AtomicBool,
}

impl Backlog {
    fn add(&self, batch: &Batch) -> (usize, usize) {
        let lines = self.lines.fetch_add(batch.lines, Ordering::Relaxed) + batch.lines;
        let bytes = self.bytes.fetch_add(batch.text.len(), Ordering::Relaxed) + batch.text.len();
        (lines, bytes)
    }

    /// Takes a batch's share back; returns what is left.
    fn remove(&self, batch: &Batch) -> (usize, usize) {
        let lines = self.lines.fetch_sub(batch.lines, Ordering::Relaxed) - batch.lines;
        let bytes = self.bytes.fetch_sub(batch.text.len(), Ordering::Relaxed) - batch.text.len();
        (lines, bytes)
    }

    /// Lines and bytes waiting now.
    fn now(&self) -> (usize, usize) {
        (
            self.lines.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Past a quarter of its bounds while its writer is not blocked on its client.
    fn behind(&self, (lines, bytes): (usize, usize), limits: QueueLimits) -> bool {
        (lines > limits.lines / 4 || bytes > limits.bytes / 4)
            && !self.stuck.load(Ordering::Relaxed)
    }
}

/// What senders and writers share about the room's load.
#[derive(Debug, Default)]
struct Load {
    /// Some queue was behind when last looked at (see [`Backlog::behind`]).
    pressured: AtomicBool,
    /// Signalled when a queue drains below a quarter while the room is pressured.
    relief: Notify,
}

/// What the room keeps per client.
struct Member {
    nick: String,
    queue: mpsc::UnboundedSender<Batch>,
    backlog: Arc<Backlog>,
    kicked: CancellationToken,
}

/// A client's end of its queue. The room holds the only sender: the queue ends (after what was
/// already in it) when the room drops the client.
pub(crate) struct Inbox {
    pub(crate) id: ClientId,
    pub(crate) queue: mpsc::UnboundedReceiver<Batch>,
    backlog: Arc<Backlog>,
    load: Arc<Load>,
    limits: QueueLimits,
    /// Cancelled when the room drops this client, for a writer blocked on it.
    pub(crate) kicked: CancellationToken,
}

impl Inbox {
    /// Accounts for a batch taken from the queue; tells paused senders when this queue is no
    /// longer behind.
    pub(crate) fn taken(&self, batch: &Batch) {
        let left = self.backlog.remove(batch);
        if self.load.pressured.load(Ordering::Relaxed) && !self.backlog.behind(left, self.limits) {
            self.load.relief.notify_waiters();
        }
    }

    /// Marks whether this client's writer is blocked on a client that is not reading.
    pub(crate) fn set_stuck(&self, stuck: bool) {
        self.backlog.stuck.store(stuck, Ordering::Relaxed);
        if stuck && self.load.pressured.load(Ordering::Relaxed) {
            // This queue no longer counts: paused senders may go on.
            self.load.relief.notify_waiters();
        }
    }

    /// The room dropped this client.
    pub(crate) fn is_kicked(&self) -> bool {
        self.kicked.is_cancelled()
    }
}

/// Everyone connected, and where the operator's console output goes.
pub(crate) struct Room {
    members: RwLock<HashMap<ClientId, Member>>,
    load: Arc<Load>,
    next_id: AtomicU64,
    limits: QueueLimits,
    console: Option<mpsc::Sender<Bytes>>,
    console_dropped: AtomicU64,
}

impl Room {
    pub(crate) fn new(limits: QueueLimits, console: Option<mpsc::Sender<Bytes>>) -> Arc<Self> {
        Arc::new(Self {
            members: RwLock::new(HashMap::new()),
            load: Arc::new(Load::default()),
            next_id: AtomicU64::new(1),
            limits,
            console,
            console_dropped: AtomicU64::new(0),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ClientId, Member>> {
        self.members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ClientId, Member>> {
        self.members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a client under `wanted` (or `wanted-2`, `wanted-3`... if taken); returns its inbox
    /// and the nickname it got.
    pub(crate) fn join(&self, wanted: &str) -> (Inbox, String) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Unbounded as a channel, bounded by the room: every queued batch holds at least one
        // line, and a client past its line bound is dropped.
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let kicked = CancellationToken::new();
        let mut members = self.write();
        let mut nick = wanted.to_owned();
        let mut n = 2;
        while members.values().any(|m| m.nick.eq_ignore_ascii_case(&nick)) {
            nick = format!("{wanted}-{n}");
            n += 1;
        }
        let member = Member {
            nick: nick.clone(),
            queue: tx,
            backlog: Arc::clone(&backlog),
            kicked: kicked.clone(),
        };
        members.insert(id, member);
        (
            Inbox {
                id,
                queue: rx,
                backlog,
                load: Arc::clone(&self.load),
                limits: self.limits,
                kicked,
            },
            nick,
        )
    }

    /// Removes a client; returns its nickname if it was still in the room.
    pub(crate) fn leave(&self, id: ClientId) -> Option<String> {
        self.write().remove(&id).map(|m| m.nick)
    }

    /// Renames a client; `Err` with the reason if the name is taken.
    pub(crate) fn rename(&self, id: ClientId, new: &str) -> Result<String, String> {
        let mut members = self.write();
        if members
            .iter()
            .any(|(other, m)| *other != id && m.nick.eq_ignore_ascii_case(new))
        {
            return Err(format!("\"{new}\" is taken"));
        }
        let member = members.get_mut(&id).ok_or("you are not in the room")?;
        Ok(std::mem::replace(&mut member.nick, new.to_owned()))
    }

    /// True when, at the last look, some client's queue was a quarter full while its writer was
    /// not blocked on its client: the broker is behind, and senders should pause reading. One
    /// atomic load; a paused sender calls [`rescan`](Self::rescan) to look again.
    pub(crate) fn pressured(&self) -> bool {
        self.load.pressured.load(Ordering::Relaxed)
    }

    /// Looks at every queue again; returns (and remembers) whether the room is pressured.
    pub(crate) fn rescan(&self) -> bool {
        let limits = self.limits;
        let behind = self
            .read()
            .values()
            .any(|m| m.backlog.behind(m.backlog.now(), limits));
        self.load.pressured.store(behind, Ordering::Relaxed);
        behind
    }

    /// Waits until a writer reports relief (or `recheck` passes), then looks again.
    pub(crate) async fn relief(&self, recheck: std::time::Duration) {
        tokio::select! {
            () = self.load.relief.notified() => {}
            () = tokio::time::sleep(recheck) => {}
        }
        self.rescan();
    }

    /// Everyone's nicknames, sorted.
    pub(crate) fn nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self.read().values().map(|m| m.nick.clone()).collect();
        nicks.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        nicks
    }

    /// Sends `batch` to everyone but `from`, then to the console: what the operator sees has
    /// already been queued for everyone in the room at that moment (so nobody who joins after the
    /// operator saw a line receives it).
    pub(crate) fn broadcast(&self, from: Option<ClientId>, batch: &Batch) {
        self.fan_out(from, batch);
        self.to_console(&batch.text);
    }

    /// Sends the operator's line to every client (the console already shows what it typed).
    pub(crate) fn broadcast_from_console(&self, batch: &Batch) {
        self.fan_out(None, batch);
    }

    fn fan_out(&self, from: Option<ClientId>, batch: &Batch) {
        let mut overflowed = Vec::new();
        // Every queue is visited anyway: note on the way whether any is behind.
        let mut behind = false;
        for (id, member) in self.read().iter() {
            let backlog = &member.backlog;
            if Some(*id) == from {
                behind |= backlog.behind(backlog.now(), self.limits);
                continue;
            }
            // Count before the batch can be taken, so the reader's subtraction never comes
            // first; take the count back if the batch does not go.
            let (lines, bytes) = backlog.add(batch);
            if lines > self.limits.lines || bytes > self.limits.bytes {
                backlog.remove(batch);
                overflowed.push(*id);
                continue;
            }
            if member.queue.send(batch.clone()).is_err() {
                // The client's task has ended and is about to leave.
                backlog.remove(batch);
                continue;
            }
            behind |= backlog.behind((lines, bytes), self.limits);
        }
        self.load.pressured.store(behind, Ordering::Relaxed);
        for id in overflowed {
            self.kick(id, "too slow: the messages for it piled up");
        }
    }

    /// Drops a client from the room and announces it.
    fn kick(&self, id: ClientId, why: &str) {
        let Some(member) = self.write().remove(&id) else {
            return;
        };
        member.kicked.cancel();
        tracing::info!(nick = %member.nick, why, "dropping chat client");
        self.broadcast(
            None,
            &Batch::line(format!("*** {} was dropped ({why})\n", member.nick)),
        );
    }

    /// Prints on the operator's console, if there is one; never waits for it.
    fn to_console(&self, text: &Bytes) {
        let Some(console) = &self.console else { return };
        if console.try_send(text.clone()).is_err() {
            self.console_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Console writes dropped (stdout too slow) since the last call.
    pub(crate) fn console_dropped(&self) -> u64 {
        self.console_dropped.swap(0, Ordering::Relaxed)
    }
}
