//! The room: every client's bounded outgoing queue, their nicknames, and fan-out.
//!
//! What a client says is fanned out as [`Batch`]es: every complete line that arrived together,
//! formatted once into one shared buffer, so the cost per queue operation is spread over many
//! lines. Sending never waits: a client whose queue would pass its bounds (in lines or bytes) is
//! kicked — its own task tells it and leaves — so one slow reader never slows anyone else.
//!
//! When queues grow because the broker itself is behind (their writers are busy, not blocked on
//! their clients), [`Room::pressure`] says so and senders pause reading new lines until the
//! queues drain: a burst is absorbed by TCP backpressure on the senders, not by dropping healthy
//! readers. A writer blocked on a client that does not read is marked stuck and ignored by that
//! check, so its queue fills and it is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
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

    fn remove(&self, batch: &Batch) {
        self.lines.fetch_sub(batch.lines, Ordering::Relaxed);
        self.bytes.fetch_sub(batch.text.len(), Ordering::Relaxed);
    }
}

/// What the room keeps per client.
struct Member {
    nick: String,
    queue: mpsc::Sender<Batch>,
    backlog: Arc<Backlog>,
    kicked: CancellationToken,
}

/// A client's end of its queue.
pub(crate) struct Inbox {
    pub(crate) id: ClientId,
    pub(crate) queue: mpsc::Receiver<Batch>,
    backlog: Arc<Backlog>,
    pub(crate) kicked: CancellationToken,
}

impl Inbox {
    /// Accounts for a batch taken from the queue.
    pub(crate) fn taken(&self, batch: &Batch) {
        self.backlog.remove(batch);
    }

    /// Marks whether this client's writer is blocked on a client that is not reading.
    pub(crate) fn set_stuck(&self, stuck: bool) {
        self.backlog.stuck.store(stuck, Ordering::Relaxed);
    }
}

/// Everyone connected, and where the operator's console output goes.
pub(crate) struct Room {
    members: RwLock<HashMap<ClientId, Member>>,
    /// Signalled when queues drain, for senders waiting on pressure.
    pub(crate) relief: Notify,
    next_id: AtomicU64,
    limits: QueueLimits,
    console: Option<mpsc::Sender<Bytes>>,
    console_dropped: AtomicU64,
}

impl Room {
    pub(crate) fn new(limits: QueueLimits, console: Option<mpsc::Sender<Bytes>>) -> Arc<Self> {
        Arc::new(Self {
            members: RwLock::new(HashMap::new()),
            relief: Notify::new(),
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
        // Every queued batch holds at least one line, so the line bound also bounds entries.
        let (tx, rx) = mpsc::channel(self.limits.lines.max(1));
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

    /// True when another client's queue is a quarter full while its writer is not blocked on
    /// its client: the broker is behind, and senders should pause reading.
    pub(crate) fn pressure(&self, me: ClientId) -> bool {
        let (lines, bytes) = (self.limits.lines / 4, self.limits.bytes / 4);
        self.read().iter().any(|(id, m)| {
            let b = &m.backlog;
            *id != me
                && !b.stuck.load(Ordering::Relaxed)
                && !m.kicked.is_cancelled()
                && (b.bytes.load(Ordering::Relaxed) > bytes
                    || b.lines.load(Ordering::Relaxed) > lines)
        })
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
        for (id, member) in self.read().iter() {
            if Some(*id) == from || member.kicked.is_cancelled() {
                continue;
            }
            // Count before the batch can be taken, so the reader's subtraction never comes
            // first; take the count back if the batch does not go.
            let (lines, bytes) = member.backlog.add(batch);
            if lines > self.limits.lines || bytes > self.limits.bytes {
                member.backlog.remove(batch);
                overflowed.push(*id);
                continue;
            }
            match member.queue.try_send(batch.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    member.backlog.remove(batch);
                    overflowed.push(*id);
                }
                Err(TrySendError::Closed(_)) => member.backlog.remove(batch),
            }
        }
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
