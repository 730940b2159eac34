//! Checkpoints of the write-ahead log, off the commit path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

use super::StoreConfig;

/// Keeps the write-ahead log short without making commits wait.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold and, with
/// `synchronous=FULL`, syncs the database file: every record in that commit waits for it. A
/// passive checkpoint on another connection waits for nobody, but while the writer keeps
/// appending it never copies the whole log, and the log only starts over once it has all
/// been copied: it would grow without end. So the work is split: a thread copies the bulk
/// (and syncs the database file) in the background; each time it has, the writer — after
/// answering its batch — copies the few pages added meanwhile, and its next transaction
/// starts the log over. That step costs the writer a millisecond or a few, never the full copy.
pub(super) struct Checkpointer {
    /// A commit happened (bounded to one: wake-ups fold together).
    pub(super) wake: std::sync::mpsc::SyncSender<()>,
    /// The background thread finished a pass since the writer last looked.
    pub(super) caught_up: Arc<AtomicBool>,
    pub(super) thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Pause between background passes, letting commits gather.
    const PAUSE: Duration = Duration::from_millis(100);

    pub(super) fn start(config: &StoreConfig) -> anyhow::Result<Checkpointer> {
        let conn = Connection::open(&config.path)
            .with_context(|| format!("cannot open {}", config.path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (wake, commits) = std::sync::mpsc::sync_channel::<()>(1);
        let caught_up = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&caught_up);
        let thread = std::thread::Builder::new()
            .name("hub-checkpoint".into())
            .spawn(move || {
                // Until the writer is gone.
                while commits.recv().is_ok() {
                    match checkpoint(&conn, "PASSIVE") {
                        Ok(()) => done.store(true, Ordering::Release),
                        Err(err) => {
                            tracing::warn!(error = %err, "checkpoint failed; will try again")
                        }
                    }
                    std::thread::sleep(Self::PAUSE);
                }
                // Everything into the database file and the log emptied, as a clean close does.
                if let Err(err) = checkpoint(&conn, "TRUNCATE") {
                    tracing::warn!(error = %err, "final checkpoint failed; the log is kept");
                }
            })
            .context("cannot start the checkpoint thread")?;
        Ok(Checkpointer {
            wake,
            caught_up,
            thread,
        })
    }

    /// Called by the writer after each commit, once its answers are sent.
    pub(super) fn committed(&self, writer: &Connection) {
        let _ = self.wake.try_send(()); // one wake-up pending is enough
        if self.caught_up.swap(false, Ordering::AcqRel) {
            if let Err(err) = checkpoint(writer, "PASSIVE") {
                tracing::warn!(error = %err, "checkpoint failed; will try again");
            }
        }
    }

    /// After the writer's last commit: the final checkpoint, waited for.
    pub(super) fn finish(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    let began = std::time::Instant::now();
    let pages: i64 = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get(2)
    })?;
    let took = began.elapsed();
    if took >= SLOW {
        tracing::debug!(pages, "a checkpoint took {} ms", took.as_millis());
    }
    Ok(())
}

/// A checkpoint at least this long is logged at debug level (with `-vv`): beside slow commits
/// it tells whether the database file's sync held the log's up.
const SLOW: Duration = Duration::from_millis(20);
