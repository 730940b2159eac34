//! `socketeer serve chat`: a line broker. Each client line goes to every other client as
//! `NICK: line`; joins, leaves and renames are announced; `/nick`, `/who`, `/quit`, `/help`.
//! With `--console` the operator's stdin lines go to everyone as `server: line` and the room's
//! traffic is printed on stdout. Built on the library's `Handler` and `Connection` only.

pub(crate) mod lines;
mod room;
mod text;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use socketeer::{Connection, Handler, PeerAddr, Result};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::lines::LineBatch;
use self::room::{Batch, Inbox, QueueLimits, Room};
use self::text::{neutralise, nick_problem};
use crate::cli::ChatArgs;
use crate::pipe::StdinChunks;
use crate::serve::{NoDatagrams, Service, serve};
use crate::terminal::{Editor, Screen, Typed};

/// Queued batches written to a client before one flush.
const BATCH: usize = 1024;
/// Bytes gathered into one batch, read side and write side (below the connection's own
/// flush threshold).
const BATCH_BYTES: usize = 48 * 1024;
/// A writer whose flush takes longer than this is blocked on its client.
const STUCK_AFTER: Duration = Duration::from_millis(20);
/// How often a paused sender re-checks the room's pressure if no relief is signalled.
const PRESSURE_RECHECK: Duration = Duration::from_millis(10);
/// How long a kicked client gets to read its notice.
const KICK_NOTICE: Duration = Duration::from_secs(1);
/// Console lines waiting for stdout before the room stops waiting for it.
const CONSOLE_BACKLOG: usize = 4096;

/// How fast one client may send lines: a token bucket; `None` is unlimited.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

struct Bucket {
    rate: Option<Rate>,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: Option<Rate>) -> Self {
        Self {
            rate,
            tokens: rate.map_or(0.0, |r| r.burst),
            at: Instant::now(),
        }
    }

    /// How long until a line may be read; `None` means now.
    fn wait(&mut self) -> Option<Duration> {
        let rate = self.rate?;
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate.per_second)
            .min(rate.burst);
        self.at = now;
        (self.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second))
    }

    /// How many lines may be taken right now (after `wait` said none is needed).
    fn available(&self) -> usize {
        match self.rate {
            Some(_) => self.tokens.max(1.0) as usize,
            None => usize::MAX,
        }
    }

    fn take(&mut self) {
        if self.rate.is_some() {
            self.tokens -= 1.0;
        }
    }
}

/// One chat client.
#[derive(Clone)]
struct ChatHandler {
    room: Arc<Room>,
    rate: Option<Rate>,
    max_line: usize,
    /// A client written to less than this ago gets what comes next in one write when this has
    /// passed (`--coalesce`).
    hold: Duration,
}

enum Next {
    Stay,
    Quit,
}

/// The nickname a client starts with: its authenticated device name, else its address.
fn default_nick(conn: &Connection) -> String {
    if let Some(device) = conn.device().filter(|d| nick_problem(d).is_none()) {
        return device.to_owned();
    }
    match conn.peer_addr() {
        PeerAddr::Inet(addr) => addr.to_string(),
        _ => "local".to_owned(),
    }
}

/// One client's state in its own task.
struct Session {
    inbox: Inbox,
    nick: String,
    bucket: Bucket,
}

impl Handler for ChatHandler {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let (inbox, nick) = self.room.join(&default_nick(conn));
        tracing::info!(peer = %conn.peer_addr(), %nick, "joined");
        let here = self.room.nicks().len();
        let welcome =
            format!("*** welcome, {nick} ({here} here). /nick NAME, /who, /quit, /help\n");
        self.room
            .broadcast(Some(inbox.id), &Batch::line(format!("*** {nick} joined\n")));
        let mut session = Session {
            inbox,
            nick,
            bucket: Bucket::new(self.rate),
        };
        let result = match conn.send(welcome.as_bytes()).await {
            Ok(()) => self.serve(conn, &mut session).await,
            Err(err) => Err(err),
        };
        if let Some(nick) = self.room.leave(session.inbox.id) {
            tracing::info!(peer = %conn.peer_addr(), %nick, "left");
            self.room
                .broadcast(None, &Batch::line(format!("*** {nick} left\n")));
        }
        result
    }
}

impl ChatHandler {
    async fn serve(&self, conn: &mut Connection, session: &mut Session) -> Result<()> {
        let kicked = session.inbox.kicked.clone();
        // Lines for a client written to less than `hold` ago wait (its own lines are still read
        // meanwhile) and go out with whatever follows them, in one write, when the hold ends: in
        // a busy room each client gets one larger write every few milliseconds instead of many
        // small ones; in a quiet room nothing waits. `held` is the first of them; the rest stay
        // in the queue, where the room's bounds still count them.
        let mut held: Option<Batch> = None;
        let mut last_write: Option<Instant> = None;
        loop {
            let wait = session.bucket.wait();
            // Read new lines only when the rate allows and the room keeps up.
            let paused = wait.is_none() && self.room.pressured();
            let reading = wait.is_none() && !paused;
            let mut decoder = LineBatch {
                max_line: self.max_line,
                max_lines: session.bucket.available(),
            };
            // (The branches' futures are built on every turn, enabled or not: the timers are
            // in async blocks so a disabled one costs nothing.)
            tokio::select! {
                biased;
                () = async { tokio::time::sleep_until(last_write.unwrap_or_else(Instant::now) + self.hold).await }, if held.is_some() => {
                    let Some(first) = held.take() else { continue };
                    if session.inbox.is_kicked() {
                        // The queue ends after what is in it: the next turn says why.
                        continue;
                    }
                    if !deliver(conn, &mut session.inbox, first, &kicked).await? {
                        return Ok(());
                    }
                    last_write = Some(Instant::now());
                }
                queued = session.inbox.queue.recv(), if held.is_none() => match queued {
                    Some(first) if !session.inbox.is_kicked() => {
                        if last_write.is_some_and(|at| at.elapsed() < self.hold) {
                            held = Some(first);
                            continue;
                        }
                        if !deliver(conn, &mut session.inbox, first, &kicked).await? {
                            // Dropped while its client took nothing: no notice would get there.
                            return Ok(());
                        }
                        last_write = Some(Instant::now());
                    }
                    // Dropped by the room (it let go of the queue, too).
                    _ => {
                        let notice = b"*** you were dropped: too slow to read the room\n";
                        let _ = tokio::time::timeout(KICK_NOTICE, conn.send(notice)).await;
                        return Ok(());
                    }
                },
                () = async { tokio::time::sleep(wait.unwrap_or_default()).await }, if wait.is_some() => {}
                () = self.room.relief(PRESSURE_RECHECK), if paused => {}
                lines = conn.read_with(&mut decoder), if reading => {
                    let Some(lines) = lines? else { return Ok(()) };
                    if let Next::Quit = self.on_lines(conn, session, &lines).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Handles complete lines received together: messages are formatted into one batch for the
    /// room; a command first sends what came before it.
    async fn on_lines(
        &self,
        conn: &mut Connection,
        session: &mut Session,
        received: &[u8],
    ) -> Result<Next> {
        let mut batch = BytesMut::with_capacity(received.len() + received.len() / 2);
        let mut lines = 0;
        for line in received.split_inclusive(|&b| b == b'\n') {
            session.bucket.take();
            let text = neutralise(line);
            match text.strip_prefix('/') {
                _ if text.is_empty() => {}
                Some(command) if !command.starts_with('/') => {
                    self.send_batch(session, &mut batch, &mut lines);
                    if let Next::Quit = self.command(conn, session, command).await? {
                        return Ok(Next::Quit);
                    }
                }
                // "//x" says "/x".
                escaped => {
                    let message = escaped.unwrap_or(&text);
                    batch.extend_from_slice(session.nick.as_bytes());
                    batch.extend_from_slice(b": ");
                    batch.extend_from_slice(message.as_bytes());
                    batch.extend_from_slice(b"\n");
                    lines += 1;
                }
            }
        }
        self.send_batch(session, &mut batch, &mut lines);
        Ok(Next::Stay)
    }

    fn send_batch(&self, session: &Session, batch: &mut BytesMut, lines: &mut usize) {
        if *lines > 0 {
            let out = Batch {
                text: batch.split().freeze(),
                lines: std::mem::take(lines),
            };
            self.room.broadcast(Some(session.inbox.id), &out);
        }
    }

    async fn command(
        &self,
        conn: &mut Connection,
        session: &mut Session,
        command: &str,
    ) -> Result<Next> {
        let (name, arg) = command
            .split_once(' ')
            .map_or((command, ""), |(n, a)| (n, a.trim()));
        let reply = match name.to_ascii_lowercase().as_str() {
            "nick" => match nick_problem(arg) {
                Some(why) => format!("*** cannot use that nickname: {why}\n"),
                None => match self.room.rename(session.inbox.id, arg) {
                    Ok(old) => {
                        session.nick = arg.to_owned();
                        self.room.broadcast(Some(session.inbox.id), &Batch::line(format!("*** {old} is now {arg}\n")));
                        format!("*** you are now {arg}\n")
                    }
                    Err(why) => format!("*** cannot use that nickname: {why}\n"),
                },
            },
            "who" => {
                let nicks = self.room.nicks();
                format!("*** {} here: {}\n", nicks.len(), nicks.join(", "))
            }
            "quit" => {
                conn.send(b"*** bye\n").await?;
                return Ok(Next::Quit);
            }
            "help" => "*** /nick NAME renames you; /who lists who is here; /quit leaves; //text sends /text\n".to_owned(),
            other => format!("*** unknown command /{other}; try /help\n"),
        };
        conn.send(reply.as_bytes()).await?;
        Ok(Next::Stay)
    }
}

/// Writes `first` and whatever else is queued (up to a batch) in vectored writes, uncopied. A
/// write that takes long means the client is not reading: the writer is marked stuck meanwhile,
/// so the room does not wait for it, and gives up (`Ok(false)`) if the room drops the client.
async fn deliver(
    conn: &mut Connection,
    inbox: &mut Inbox,
    first: Batch,
    kicked: &tokio_util::sync::CancellationToken,
) -> Result<bool> {
    inbox.taken(&first);
    let mut batched = first.text.len();
    let mut parts = vec![first.text];
    let mut yielded = false;
    while parts.len() < BATCH && batched < BATCH_BYTES {
        let Ok(more) = inbox.queue.try_recv() else {
            // Let the other tasks run once, so what they are about to send goes out in this
            // write rather than the next (fewer, larger writes in a busy room; microseconds in
            // a quiet one).
            if yielded {
                break;
            }
            yielded = true;
            tokio::task::yield_now().await;
            continue;
        };
        inbox.taken(&more);
        batched += more.text.len();
        parts.push(more.text);
    }
    let send = conn.send_parts(&parts);
    tokio::pin!(send);
    // Most writes complete at once: no timer for those.
    let first_try = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first_try {
        return result.map(|()| true);
    }
    tokio::select! {
        biased;
        result = &mut send => result.map(|()| true),
        () = tokio::time::sleep(STUCK_AFTER) => {
            inbox.set_stuck(true);
            let result = tokio::select! {
                result = &mut send => result.map(|()| true),
                () = kicked.cancelled() => Ok(false),
            };
            inbox.set_stuck(false);
            result
        }
    }
}

/// The operator's console: stdin lines to everyone as `server: line`; the room's traffic to
/// stdout. Ends with stdin; the broker keeps running. At a terminal the operator types in a
/// line editor (history, arrow keys) with the room's traffic printed above the line.
async fn console(
    room: Arc<Room>,
    mut printed: mpsc::Receiver<Bytes>,
    pipe: crate::cli::PipeArgs,
    editor: Option<(Editor, Screen)>,
) {
    let mut stdin_done = false;
    if let Some(editor) = editor {
        match console_at_terminal(&room, &mut printed, editor).await {
            Ok(()) => stdin_done = true,
            Err(err) => {
                tracing::warn!(error = %err, "console: the line editor failed; reading stdin plainly");
            }
        }
    }
    let printer = async {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = printed.recv().await {
            let dropped = room.console_dropped();
            if dropped > 0 {
                let note = format!("*** console: {dropped} lines not shown (stdout too slow)\n");
                let _ = stdout.write_all(note.as_bytes()).await;
            }
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        if stdin_done {
            std::future::pending::<()>().await;
        }
        let mut stdin = StdinChunks::new(&pipe);
        let mut pending = Vec::new();
        while let Ok(Some(chunk)) = stdin.next().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = neutralise(&line);
                if !text.is_empty() {
                    room.broadcast_from_console(&Batch::line(format!("server: {text}\n")));
                }
            }
        }
        tracing::info!("console input ended; the broker keeps running");
        std::future::pending::<()>().await;
    };
    tokio::join!(printer, reader);
}

/// The console in a line editor, until Ctrl-D (then the plain console prints on) or until the
/// room is gone. Ctrl-C is SIGINT, as at any server: the room drains, a second one exits.
async fn console_at_terminal(
    room: &Room,
    printed: &mut mpsc::Receiver<Bytes>,
    (mut editor, mut screen): (Editor, Screen),
) -> anyhow::Result<()> {
    let outcome = async {
        let showing = async {
            while let Some(line) = printed.recv().await {
                let dropped = room.console_dropped();
                if dropped > 0 {
                    let note =
                        format!("*** console: {dropped} lines not shown (terminal too slow)\n");
                    screen.show(note.as_bytes()).await?;
                }
                screen.show(&line).await?;
            }
            anyhow::Ok(())
        };
        tokio::pin!(showing);
        loop {
            tokio::select! {
                result = &mut showing => return result,
                typed = editor.next() => match typed? {
                    Typed::Line(line) => {
                        let text = neutralise(line.as_bytes());
                        if !text.is_empty() {
                            room.broadcast_from_console(&Batch::line(format!("server: {text}\n")));
                        }
                    }
                    Typed::End => {
                        tracing::info!("console input ended; the broker keeps running");
                        return Ok(());
                    }
                    Typed::Interrupted => {
                        // The terminal is raw, so Ctrl-C is a key here: make it the signal.
                        let me = rustix::process::getpid();
                        rustix::process::kill_process(me, rustix::process::Signal::INT)?;
                    }
                },
            }
        }
    }
    .await;
    let finished = editor.finish();
    outcome?;
    finished
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<i32> {
    let limits = QueueLimits {
        lines: args.queue_lines as usize,
        bytes: args.queue_bytes as usize,
    };
    let (console_tx, console_rx) = if args.console {
        let (tx, rx) = mpsc::channel(CONSOLE_BACKLOG);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let room = Room::new(limits, console_tx);
    if let Some(rx) = console_rx {
        let pipe = crate::cli::PipeArgs::default();
        // The editor takes the terminal before anything is served, so no keystroke arrives
        // while it is still a plain (cooked) terminal.
        let editor = if crate::terminal::at_terminal() {
            Editor::start()
                .inspect_err(|err| tracing::warn!(error = %err, "console: no line editor; reading stdin plainly"))
                .ok()
        } else {
            None
        };
        tokio::spawn(console(Arc::clone(&room), rx, pipe, editor));
    }
    let rate = (args.rate > 0.0).then_some(Rate {
        per_second: args.rate,
        burst: (args.rate * 2.0).max(1.0),
    });
    let handler = ChatHandler {
        room,
        rate,
        max_line: args.serve.max_line as usize,
        hold: Duration::from_millis(args.coalesce.into()),
    };
    let service = Service {
        name: "chat",
        default_endpoint: "127.0.0.1:8520",
        make_handler: move || handler.clone(),
        datagram: None::<NoDatagrams>,
        auth_failures: None,
    };
    serve(&args.serve, service).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = Bucket::new(Some(Rate {
            per_second: 5.0,
            burst: 10.0,
        }));
        for _ in 0..10 {
            assert_eq!(bucket.wait(), None);
            bucket.take();
        }
        let wait = bucket.wait().expect("empty after the burst");
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..5 {
            assert_eq!(bucket.wait(), None);
            bucket.take();
        }
        assert!(bucket.wait().is_some());
        let mut unlimited = Bucket::new(None);
        for _ in 0..1000 {
            assert_eq!(unlimited.wait(), None);
            unlimited.take();
        }
    }
}
