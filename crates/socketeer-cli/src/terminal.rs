//! Line editing at a terminal, for `connect` and `serve chat --console`: rustyline-async's
//! editor (history with Up/Down, Left/Right, Home/End, Ctrl-A/E/U/W/L), with what arrives
//! printed above the line being typed. Used only when both stdin and stdout are terminals and
//! no byte-level option (`--hex`, `--send-only`, `--recv-only`) is given, so in pipes
//! `connect` stays byte-exact.
//!
//! The editor runs in the caller's task (no thread blocked in a read), so it can always be
//! finished: [`Editor::finish`] prints everything written to its [`Screen`] first, then gives
//! the terminal back. And whatever way the program ends — the peer closing, an error, a
//! signal to a server with a console — [`restore`] on the way out gives the terminal back as
//! it was (echo and Ctrl-C included).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::AsyncWriteExt;
use rustyline_async::{Readline, ReadlineEvent, SharedWriter};
use socketeer::Connection;

use crate::cli::PipeArgs;

/// True when `connect` should offer line editing.
pub(crate) fn wanted(args: &PipeArgs) -> bool {
    at_terminal() && !args.hex && !args.send_only && !args.recv_only
}

/// Both stdin and stdout are terminals.
pub(crate) fn at_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// An editor was started: the terminal may be in raw mode.
static STARTED: AtomicBool = AtomicBool::new(false);

/// While an editor runs with stderr on the terminal too, messages and logs go above the line
/// being typed (in raw mode a bare `\n` would not return the carriage).
static MESSAGES: Mutex<Option<SharedWriter>> = Mutex::new(None);

/// Gives the terminal back as it was before any editor started. Every way out of the
/// program calls it; it does nothing if no editor ever ran.
pub(crate) fn restore() {
    if STARTED.load(Ordering::SeqCst) {
        messages_to(None);
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// [`restore`], then exit with `code`.
pub(crate) fn exit(code: i32) -> ! {
    restore();
    std::process::exit(code)
}

fn messages_to(screen: Option<SharedWriter>) {
    *MESSAGES.lock().unwrap_or_else(|e| e.into_inner()) = screen;
}

/// Writes a message or log line to stderr, or above the line being edited while an editor
/// runs. Failures lose the message, nothing else.
pub(crate) fn write_stderr(bytes: &[u8]) {
    // Most runs never start an editor: no lock for them.
    if STARTED.load(Ordering::Relaxed) {
        let mut messages = MESSAGES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(screen) = messages.as_mut() {
            // A full queue (500 lines not yet drawn) drops the message rather than wait.
            let _ = Write::write_all(screen, bytes);
            return;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes).and_then(|()| err.flush());
}

/// What the person did.
pub(crate) enum Typed {
    Line(String),
    /// Ctrl-D on an empty line.
    End,
    /// Ctrl-C.
    Interrupted,
}

/// A line editor on the terminal (raw mode until it is finished or dropped).
pub(crate) struct Editor {
    readline: Readline,
}

/// Where output goes while the editor runs: above the line being typed.
pub(crate) struct Screen(SharedWriter);

impl Screen {
    /// Shows `bytes`; a partial line (a prompt) is shown at once, not at its end.
    pub(crate) async fn show(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        AsyncWriteExt::write_all(&mut self.0, bytes).await?;
        if !bytes.ends_with(b"\n") {
            AsyncWriteExt::flush(&mut self.0).await?;
        }
        Ok(())
    }
}

impl Editor {
    /// Takes the terminal (raw mode) and returns the editor and its screen.
    pub(crate) fn start() -> anyhow::Result<(Editor, Screen)> {
        STARTED.store(true, Ordering::SeqCst);
        let (mut readline, screen) = Readline::new(String::new())?;
        readline.should_print_line_on(true, false);
        if std::io::stderr().is_terminal() {
            messages_to(Some(screen.clone()));
        }
        Ok((Editor { readline }, Screen(screen)))
    }

    /// The next thing typed. Draws what was written to the screen meanwhile, so output shows
    /// only while this is being awaited (or at [`finish`](Editor::finish)). Cancel-safe.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Typed> {
        Ok(match self.readline.readline().await? {
            ReadlineEvent::Line(line) => {
                if !line.trim().is_empty() {
                    self.readline.add_history_entry(line.clone());
                }
                Typed::Line(line)
            }
            ReadlineEvent::Eof => Typed::End,
            ReadlineEvent::Interrupted => Typed::Interrupted,
        })
    }

    /// Prints everything written to the screen so far, then gives the terminal back.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        messages_to(None);
        let flushed = self.readline.flush();
        drop(self); // raw mode off
        Ok(flushed?)
    }
}

impl Drop for Editor {
    fn drop(&mut self) {
        messages_to(None);
    }
}

/// Joins a person at a terminal to the connection until both directions are done. Returns the
/// exit status: 0, or 130 when Ctrl-C left (at once, as with nc).
pub(crate) async fn converse(conn: Connection, args: &PipeArgs) -> anyhow::Result<i32> {
    let (mut editor, mut screen) = Editor::start()?;
    let (mut reader, mut writer) = conn.into_split();
    let ending = if args.crlf { "\r\n" } else { "\n" };
    let outcome = async {
        let showing = async {
            let mut first = true;
            while let Some(chunk) = reader.read_chunk().await? {
                // A person at a terminal is told what the server is, not shown its handshake's
                // bytes (pipes stay byte-exact).
                if std::mem::take(&mut first) {
                    if let Some(mismatch) = socketeer::client::recognize(&chunk) {
                        return Err(mismatch.into_error(false).into());
                    }
                }
                screen.show(&chunk).await?;
            }
            anyhow::Ok(())
        };
        tokio::pin!(showing);
        let mut typing = true;
        let mut quit_at = None;
        loop {
            tokio::select! {
                // Everything the peer sent, to its close, is on the screen's queue: finish
                // draws it.
                result = &mut showing => return result.map(|()| 0),
                typed = editor.next() => match typed? {
                    Typed::Line(line) if typing => {
                        writer.send(format!("{line}{ending}").as_bytes()).await?;
                    }
                    Typed::End if typing => {
                        // Ctrl-D: nothing more to send; what the peer sends still shows.
                        typing = false;
                        writer.shutdown_write().await?;
                        quit_at = args.quit_after.map(|after| tokio::time::Instant::now() + after);
                    }
                    Typed::Line(_) | Typed::End => {}
                    Typed::Interrupted => return Ok(130),
                },
                () = async { tokio::time::sleep_until(quit_at.unwrap_or_else(tokio::time::Instant::now)).await },
                    if quit_at.is_some() => return Ok(0),
            }
        }
    }
    .await;
    // On every way out: what arrived is shown, then the terminal is given back.
    let finished = editor.finish();
    let code = outcome?;
    finished?;
    Ok(code)
}
