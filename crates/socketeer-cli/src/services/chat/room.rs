//! The room: every client's bounded outgoing queue, their nicknames, and fan-out. Sending never
//! waits: a client whose queue is full (in lines or bytes) is kicked — its own task tells it and
//! leaves — so one slow reader never slows anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// Bounds on one client's outgoing queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) lines: usize,
    pub(crate) bytes: usize,
}

/// A client's identity in the room.
pub(crate) type ClientId = u64;

/// What the room keeps per client.
struct Member {
    nick: String,
    queue: mpsc::Sender<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    kicked: CancellationToken,
}

/// A client's end of its queue.
pub(crate) struct Inbox {
    pub(crate) id: ClientId,
    pub(crate) queue: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    pub(crate) kicked: CancellationToken,
}

impl Inbox {
    /// Accounts for a line taken from the queue.
    pub(crate) fn taken(&self, line: &Bytes) {
        self.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
    }
}

/// Everyone connected, and where the operator's console output goes.
pub(crate) struct Room {
    members: RwLock<HashMap<ClientId, Member>>,
    next_id: AtomicU64,
    limits: QueueLimits,
    console: Option<mpsc::Sender<Bytes>>,
    console_dropped: AtomicU64,
}

impl Room {
    pub(crate) fn new(limits: QueueLimits, console: Option<mpsc::Sender<Bytes>>) -> Arc<Self> {
        Arc::new(Self {
            members: RwLock::new(HashMap::new()),
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
        let (tx, rx) = mpsc::channel(self.limits.lines);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let kicked = CancellationToken::new();
        let mut members = self.write();
        let mut nick = wanted.to_owned();
        let mut n = 2;
        while members.values().any(|m| m.nick.eq_ignore_ascii_case(&nick)) {
            nick = format!("{wanted}-{n}");
            n += 1;
        }
        members.insert(
            id,
            Member {
                nick: nick.clone(),
                queue: tx,
                queued_bytes: Arc::clone(&queued_bytes),
                kicked: kicked.clone(),
            },
        );
        (
            Inbox {
                id,
                queue: rx,
                queued_bytes,
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

    /// A client's current nickname.
    pub(crate) fn nick(&self, id: ClientId) -> Option<String> {
        self.read().get(&id).map(|m| m.nick.clone())
    }

    /// Everyone's nicknames, sorted.
    pub(crate) fn nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self.read().values().map(|m| m.nick.clone()).collect();
        nicks.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        nicks
    }

    /// Sends `line` to everyone but `from` (and to the console). Clients whose queue overflows
    /// are kicked; their departure is announced.
    pub(crate) fn broadcast(&self, from: Option<ClientId>, line: &Bytes) {
        self.to_console(line);
        self.fan_out(from, line);
    }

    /// Sends the operator's line to every client (the console already shows what it typed).
    pub(crate) fn broadcast_from_console(&self, line: &Bytes) {
        self.fan_out(None, line);
    }

    fn fan_out(&self, from: Option<ClientId>, line: &Bytes) {
        let mut overflowed = Vec::new();
        for (id, member) in self.read().iter() {
            if Some(*id) == from || member.kicked.is_cancelled() {
                continue;
            }
            // Count the bytes before the line can be taken, so the reader's subtraction never
            // comes first; take them back if the line does not go.
            let queued = member.queued_bytes.fetch_add(line.len(), Ordering::Relaxed) + line.len();
            if queued > self.limits.bytes {
                member.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
                overflowed.push(*id);
                continue;
            }
            match member.queue.try_send(line.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    member.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
                    overflowed.push(*id);
                }
                Err(TrySendError::Closed(_)) => {
                    member.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
                }
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
        let notice = Bytes::from(format!("*** {} was dropped ({why})\n", member.nick));
        self.broadcast(None, &notice);
    }

    /// Prints a line on the operator's console, if there is one; never waits for it.
    pub(crate) fn to_console(&self, line: &Bytes) {
        let Some(console) = &self.console else { return };
        if console.try_send(line.clone()).is_err() {
            self.console_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines the console was too slow to take since the last call.
    pub(crate) fn console_dropped(&self) -> u64 {
        self.console_dropped.swap(0, Ordering::Relaxed)
    }
}
