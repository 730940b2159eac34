//! Moving file contents fast and verified: a blocking thread reads (or writes) the file and
//! hashes it while the connection's task sends (or receives) — disk, digest and socket work
//! overlap, in 1 MiB pieces.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The size of one piece.
pub(crate) const PIECE: usize = 1 << 20;
/// Pieces in flight between the file thread and the connection.
const DEPTH: usize = 4;

/// Hashes the first `len` bytes of `file` (the part already transferred) and leaves the file
/// positioned after them. Fails if the file is shorter.
pub(crate) fn hash_prefix(file: &mut File, len: u64) -> io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    file.seek(SeekFrom::Start(0))?;
    let copied = io::copy(&mut Read::by_ref(file).take(len), &mut hasher)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shorter than expected",
        ));
    }
    Ok(hasher)
}

/// Reads `len` bytes of `file` from its current position on a blocking thread, hashing them
/// into `hasher`; the pieces arrive on the receiver. The handle yields the hasher after the
/// last piece (or the read error; a file that shrank is an error).
pub(crate) fn source(
    mut file: File,
    len: u64,
    mut hasher: blake3::Hasher,
) -> (
    mpsc::Receiver<Bytes>,
    JoinHandle<io::Result<blake3::Hasher>>,
) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let want = PIECE.min(usize::try_from(left).unwrap_or(PIECE));
            let mut piece = BytesMut::zeroed(want);
            let n = read_full(&mut file, &mut piece)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being sent",
                ));
            }
            piece.truncate(n);
            hasher.update(&piece);
            left -= n as u64;
            if tx.blocking_send(piece.freeze()).is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "transfer abandoned",
                ));
            }
        }
        Ok(hasher)
    });
    (rx, task)
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes the pieces sent to the returned sender to `file` (from its current position) on a
/// blocking thread, hashing them into `hasher`. Drop the sender to finish; the handle yields
/// the file and the hasher (or the write error, such as a full disk).
pub(crate) fn sink(
    mut file: File,
    mut hasher: blake3::Hasher,
) -> (
    mpsc::Sender<Bytes>,
    JoinHandle<io::Result<(File, blake3::Hasher)>>,
) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        // Writeback starts while receiving, so the sync before success finds little left: a
        // thread of its own syncs the data every WRITEBACK_EVERY bytes (the writes go on
        // meanwhile; a sync already running absorbs the next nudge).
        let flusher = Writeback::start(&file);
        let mut since = 0;
        while let Some(piece) = rx.blocking_recv() {
            file.write_all(&piece)?;
            hasher.update(&piece);
            since += piece.len();
            if since >= WRITEBACK_EVERY {
                since = 0;
                if let Some(flusher) = &flusher {
                    flusher.nudge();
                }
            }
        }
        drop(flusher);
        Ok((file, hasher))
    });
    (tx, task)
}

/// Bytes written between two background syncs.
const WRITEBACK_EVERY: usize = 8 << 20;

/// A thread that syncs a file's data when nudged, until dropped (then it is joined).
struct Writeback {
    nudges: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    /// `None` when the file cannot be shared with a thread (then only the final sync runs).
    fn start(file: &File) -> Option<Writeback> {
        let file = file.try_clone().ok()?;
        let (nudges, wake) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                while wake.recv().is_ok() {
                    // An error here is met again by the sync before success, which reports it.
                    let _ = file.sync_data();
                }
            })
            .ok()?;
        Some(Writeback {
            nudges: Some(nudges),
            thread: Some(thread),
        })
    }

    fn nudge(&self) {
        if let Some(nudges) = &self.nudges {
            let _ = nudges.try_send(());
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.nudges = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `len` bytes of `file` (from its current position) as raw data and returns the digest
/// of everything `hasher` has seen plus those bytes.
pub(crate) async fn send_file(
    conn: &mut socketeer::Connection,
    file: File,
    len: u64,
    hasher: blake3::Hasher,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<blake3::Hash> {
    let (mut pieces, task) = source(file, len, hasher);
    while let Some(piece) = pieces.recv().await {
        conn.write_all(&piece).await?;
        progress.inc(piece.len() as u64);
    }
    conn.flush().await?;
    let hasher = task.await??;
    Ok(hasher.finalize())
}

/// Why receiving a file stopped.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    /// The connection failed or ended early: what arrived is kept for a resume.
    Connection(anyhow::Error),
    /// Writing the file failed (a full disk, say).
    File(io::Error),
}

/// Receives `len` raw bytes into `file` (from its current position); returns the file and the
/// digest of everything `hasher` has seen plus those bytes.
pub(crate) async fn receive_file(
    conn: &mut socketeer::Connection,
    file: File,
    len: u64,
    hasher: blake3::Hasher,
    progress: &indicatif::ProgressBar,
) -> Result<(File, blake3::Hash), ReceiveError> {
    let (pieces, task) = sink(file, hasher);
    let mut left = len;
    let mut failure = None;
    let mut writing = true;
    while left > 0 {
        let want = PIECE.min(usize::try_from(left).unwrap_or(PIECE));
        match conn.read_up_to(want).await {
            Ok(Some(piece)) => {
                left -= piece.len() as u64;
                progress.inc(piece.len() as u64);
                // After the writer failed (its error is below), the rest is read and dropped,
                // so the sender finishes and hears why instead of being reset mid-write.
                if writing && pieces.send(piece).await.is_err() {
                    writing = false;
                }
            }
            Ok(None) => {
                failure = Some(anyhow::anyhow!(
                    "the connection ended {left} bytes before the end of the file"
                ));
                break;
            }
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
    }
    drop(pieces);
    let written = task
        .await
        .map_err(|e| ReceiveError::File(io::Error::other(e)))?
        .map_err(ReceiveError::File)?;
    if let Some(failure) = failure {
        return Err(ReceiveError::Connection(failure));
    }
    let (file, hasher) = written;
    Ok((file, hasher.finalize()))
}
