//! Ingest over a stream connection: JSON lines in, acknowledgements and errors out.
//!
//! Lines are read while earlier ones are still being committed (up to [`MAX_IN_FLIGHT`] per
//! connection), and answered in the order they came: `{"ack":N}` for a record with `"seq":N`
//! once it is committed (or found committed before), `{"error":...,"line":N}` for a line that
//! is refused. A bad line never ends the connection; a line over the size limit does (the
//! stream cannot be resynchronised without reading it), with a logged reason.

use std::sync::Arc;

use socketeer::{Connection, Handler, Result};

use super::session::{Answers, BATCH, Session, Step, Who};
use super::{Ingest, UNNAMED};
use crate::wire::{Answer, NOT_HTTP, Reason, http_request_line};

/// Most lines of one connection waiting for their commit.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// The handler of robots' ingest connections: one clone per connection.
#[derive(Clone)]
pub struct IngestHandler(pub(crate) Arc<Ingest>);

impl Handler for IngestHandler {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let ingest = &self.0;
        let who = match conn.device() {
            Some(device) => Who::Authenticated(device.into()),
            None => Who::Named(UNNAMED.into()),
        };
        let mut session = Session::new(Arc::clone(ingest), who, "", true);
        let mut answers = Answers::new(Arc::clone(ingest));
        let mut out = Vec::new();
        let mut eof = false;
        loop {
            answers.ready(&mut out);
            if !out.is_empty() {
                conn.write_all(&out).await?;
                out.clear();
            }
            if answers.len() == 0 {
                conn.flush().await?;
                if eof {
                    return Ok(());
                }
            }
            let can_read = !eof && answers.len() < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                () = answers.settle(&mut out), if answers.waiting() => {
                    conn.write_all(&out).await?;
                    out.clear();
                    // More answers may be ready: flush only when nothing else is.
                    if answers.len() == 0 {
                        conn.flush().await?;
                    }
                }
                read = conn.read_line(), if can_read => {
                    let Some(mut raw) = read? else {
                        eof = true;
                        continue;
                    };
                    if session.lines_read() == 0 && http_request_line(&raw) {
                        ingest.stats.reject(Reason::HttpRequest);
                        tracing::debug!(peer = %conn.peer_addr(), "ingest: an HTTP request; closed");
                        Answer::Refused { line: 1, why: NOT_HTTP.into() }.write(&mut out);
                        conn.write_all(&out).await?;
                        conn.flush().await?;
                        return Ok(());
                    }
                    // Every complete line already received goes into one job for the writer
                    // (up to BATCH): one queue operation and one wake-up for all of them.
                    loop {
                        match session.line(Ok(&raw), &mut answers).await {
                            Step::Next => {}
                            Step::Stop => {
                                answers.finish(&mut out).await;
                                conn.write_all(&out).await?;
                                conn.flush().await?;
                                return Ok(());
                            }
                            Step::Skip(len) => {
                                if !skip(conn, len).await? {
                                    eof = true;
                                    break;
                                }
                            }
                            Step::Image(len) => {
                                // One image of a link at a time: the last must be committed
                                // before the next is read.
                                while answers.holds_image() {
                                    answers.ready(&mut out);
                                    answers.settle(&mut out).await;
                                }
                                if !out.is_empty() {
                                    conn.write_all(&out).await?;
                                    conn.flush().await?;
                                    out.clear();
                                }
                                match receive(conn, ingest, len).await? {
                                    Some(data) => session.image(data, &mut answers).await,
                                    None => {
                                        // Cut short: nothing of it is stored or answered.
                                        eof = true;
                                        break;
                                    }
                                }
                            }
                        }
                        let more = session.batched() < BATCH
                            && answers.len() < MAX_IN_FLIGHT
                            && conn.buffered().contains(&b'\n');
                        if !more {
                            break;
                        }
                        match conn.read_line().await? {
                            Some(next) => raw = next,
                            None => {
                                eof = true;
                                break;
                            }
                        }
                    }
                    session.submit(&mut answers).await;
                }
            }
        }
    }
}

/// Reads exactly `len` bytes (an image), in its turn among the links receiving images;
/// `None` if the connection ends first.
async fn receive(
    conn: &mut Connection,
    ingest: &Ingest,
    len: usize,
) -> Result<Option<bytes::Bytes>> {
    let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
    let _room = Arc::clone(&ingest.image_room)
        .acquire_many_owned(kib)
        .await
        .map_err(|_| {
            socketeer::Error::new(socketeer::ErrorKind::Shutdown, "the hub is stopping")
        })?;
    let mut data = bytes::BytesMut::with_capacity(len);
    while data.len() < len {
        match conn.read_up_to(len - data.len()).await? {
            Some(piece) => data.extend_from_slice(&piece),
            None => return Ok(None),
        }
    }
    Ok(Some(data.freeze()))
}

/// Reads and drops `len` bytes; false if the connection ends first.
async fn skip(conn: &mut Connection, mut len: usize) -> Result<bool> {
    while len > 0 {
        match conn.read_up_to(len).await? {
            Some(piece) => len -= piece.len(),
            None => return Ok(false),
        }
    }
    Ok(true)
}
