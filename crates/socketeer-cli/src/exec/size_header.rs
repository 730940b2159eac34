//! The tutorial's "simple ssh" protocol, exactly: the client sends the command text; the server
//! answers the output's length in ASCII digits, waits for any acknowledgement, then sends the
//! output (`cmd has no output...` when there is none). Many commands per connection.
//!
//! The output is stdout and stderr together, in the order they arrived; a refused command's
//! output is the reason. There is no exit status in this protocol.

use std::sync::Arc;

use bytes::Bytes;
use socketeer::{Connection, Handler, Result};

use super::process::Output;
use super::server::{Exec, log_outcome};

/// What the tutorial's server sends for empty output.
pub(crate) const NO_OUTPUT: &[u8] = b"cmd has no output...";

#[derive(Clone)]
pub(crate) struct SizeHeaderHandler(pub(crate) Arc<Exec>);

impl Handler for SizeHeaderHandler {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let mut early: Option<Bytes> = None;
        loop {
            let command = match early.take() {
                Some(command) => command,
                None => match conn.read_chunk().await? {
                    Some(command) => command,
                    None => break,
                },
            };
            let text = String::from_utf8_lossy(&command).into_owned();
            let output = self.run(conn, &text, &mut early).await?;
            let output: &[u8] = if output.is_empty() {
                NO_OUTPUT
            } else {
                &output
            };
            conn.send(output.len().to_string().as_bytes()).await?;
            // The tutorial's client acknowledges with a message of its own; any will do.
            if conn.read_chunk().await?.is_none() {
                break;
            }
            conn.send(output).await?;
        }
        Ok(())
    }
}

impl SizeHeaderHandler {
    /// Runs one command and returns its output (or the reason it was not run). Watches the
    /// connection meanwhile: if the client leaves, the command is killed; anything it sends
    /// early is kept in `early` for later.
    async fn run(
        &self,
        conn: &mut Connection,
        text: &str,
        early: &mut Option<Bytes>,
    ) -> Result<Vec<u8>> {
        let (prepared, _ticket) = match self.0.admit(conn, text) {
            Ok(admitted) => admitted,
            Err(report) => {
                let why = report.message.unwrap_or_else(|| "refused".into());
                return Ok(format!("socketeer: {why}\n").into_bytes());
            }
        };
        let mut running = match self.0.spawn(&prepared, false) {
            Ok(running) => running,
            Err(err) => {
                tracing::warn!(peer = %conn.peer_addr(), argv = ?prepared.argv, "cannot start the command: {err}");
                return Ok(format!("socketeer: cannot start the command: {err}\n").into_bytes());
            }
        };
        let mut output = Vec::new();
        loop {
            tokio::select! {
                next = running.next() => match next {
                    Output::Stdout(data) | Output::Stderr(data) => output.extend_from_slice(&data),
                    Output::Done => break,
                },
                read = conn.read_chunk(), if early.is_none() => match read {
                    Ok(Some(data)) => *early = Some(data),
                    Ok(None) | Err(_) => {
                        tracing::info!(peer = %conn.peer_addr(), argv = ?prepared.argv, "client left while its command ran: killing it");
                        return Err(socketeer::Error::new(
                            socketeer::ErrorKind::UnexpectedEof,
                            "client left mid-command",
                        ));
                    }
                },
            }
        }
        let outcome = running.finish().await?;
        log_outcome(conn, &prepared, &outcome);
        if outcome.truncated {
            output.extend_from_slice(
                format!(
                    "\nsocketeer: output truncated at {} bytes (server --max-output)\n",
                    self.0.max_output
                )
                .as_bytes(),
            );
        }
        if outcome.timed_out {
            output.extend_from_slice(
                format!(
                    "\nsocketeer: killed after {} s (server --cmd-timeout)\n",
                    self.0.timeout.as_secs_f64()
                )
                .as_bytes(),
            );
        }
        Ok(output)
    }
}
