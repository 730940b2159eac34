//! `connect` at a terminal: a line editor (history, arrow keys, Ctrl-A/E, ...) from rustyline,
//! with what the peer sends printed above the prompt. Used only when both stdin and stdout are
//! terminals and no byte-level option (`--hex`, `--send-only`, `--recv-only`) is given, so in
//! pipes `connect` stays byte-exact.

use std::io::IsTerminal;

use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use socketeer::Connection;
use tokio::sync::mpsc;

use crate::cli::PipeArgs;

/// True when `connect` should offer line editing.
pub(crate) fn wanted(args: &PipeArgs) -> bool {
    std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && !args.hex
        && !args.send_only
        && !args.recv_only
}

/// How long the line editor gets to take over the terminal before output is printed.
const EDITOR_START: std::time::Duration = std::time::Duration::from_millis(50);

/// What the editor thread hands over.
enum Typed {
    Line(String),
    End,
}

/// Joins a person at a terminal to the connection until both directions are done.
pub(crate) async fn converse(conn: Connection, args: &PipeArgs) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let mut printer = editor.create_external_printer()?;
    let (typed_tx, mut typed) = mpsc::channel(16);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = started_tx.send(());
        loop {
            let next = match editor.readline("") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Typed::Line(line)
                }
                // Ctrl-C leaves at once, as it does with nc.
                Err(ReadlineError::Interrupted) => std::process::exit(130),
                Err(_) => Typed::End,
            };
            let end = matches!(next, Typed::End);
            if typed_tx.blocking_send(next).is_err() || end {
                break;
            }
        }
    });

    let (mut reader, mut writer) = conn.into_split();
    let ending = if args.crlf { "\r\n" } else { "\n" };
    // Text printed before the editor owns the terminal is wiped by its first redraw: hold the
    // peer's output (it waits in the socket) until the editor has had a moment to start.
    let _ = started.await;
    tokio::time::sleep(EDITOR_START).await;
    let to_screen = async {
        let mut pending = Vec::new();
        while let Some(chunk) = reader.read_chunk().await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                printer.print(
                    String::from_utf8_lossy(socketeer::codec::trim_line_end(&line)).into_owned(),
                )?;
            }
            if !pending.is_empty() {
                // A prompt or a partial line: show it now rather than wait for its end.
                printer
                    .print(String::from_utf8_lossy(&std::mem::take(&mut pending)).into_owned())?;
            }
        }
        anyhow::Ok(())
    };
    tokio::pin!(to_screen);
    let to_peer = async {
        while let Some(Typed::Line(line)) = typed.recv().await {
            writer.send(format!("{line}{ending}").as_bytes()).await?;
        }
        writer.shutdown_write().await?;
        anyhow::Ok(())
    };
    tokio::select! {
        result = &mut to_screen => return result,
        result = to_peer => result?,
    }
    match args.quit_after {
        Some(limit) => tokio::time::timeout(limit, to_screen)
            .await
            .unwrap_or(Ok(())),
        None => to_screen.await,
    }
}
