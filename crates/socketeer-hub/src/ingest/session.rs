//! One ingest link as the protocol sees it, whatever carries it (a TCP connection, an HTTP
//! body): lines numbered from 1, `{"session":..}` and `{"device":..}` lines applied, records
//! batched into jobs for the writer, and every line's answer kept in line order — ready at once
//! for a refused line, after the commit for a record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Here, Ingest};
use crate::record::{ImageFormat, Line, Record, announced_bytes, attach_image, parse_raw_line};
use crate::store::{Item, Outcome, Pending, StoreError, Stored, now_secs};
use crate::wire::{Answer, Reason, Refusal};

/// Most records of one link in one job for the writer.
pub(crate) const BATCH: usize = crate::store::JOB_RECORDS;

/// Who a link's records are from.
pub(crate) enum Who {
    /// The device its authentication named: a `{"device":..}` line is refused.
    Authenticated(Arc<str>),
    /// Named by `{"device":..}` lines (or [`UNNAMED`](super::UNNAMED) until one comes).
    Named(Arc<str>),
    /// Named by the request (`?device=`): a `{"device":..}` line is refused, and so is an
    /// image header (a body of JSON lines cannot carry image bytes).
    Request(Arc<str>),
    /// One image upload, named by the request (`POST /api/ingest/image?device=`).
    Upload(Arc<str>),
}

/// What the reader does after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read the next line.
    Next,
    /// Read exactly this many bytes, the image of the header just taken, and hand them to
    /// [`Session::image`].
    Image(usize),
    /// Read and drop this many bytes: the image of a header that was refused.
    Skip(usize),
    /// The stream cannot be followed (an image of unknown or too large a length): stop reading.
    Stop,
}

/// One link's state.
pub(crate) struct Session {
    ingest: Arc<Ingest>,
    who: Who,
    session: Arc<str>,
    line: u64,
    /// Records read and not yet handed to the writer, with (line, seq) of each.
    batch: Vec<Item>,
    lines: Vec<(u64, Option<u64>)>,
    /// Counted as connected (TCP links only): from the start if authenticated, else from
    /// the first record.
    here: Option<Here>,
    presence: bool,
    /// An image header taken, waiting for its bytes.
    pending: Option<(Record, ImageFormat)>,
    /// What to add to the device's times (its clock's offset), looked up when the device is
    /// named and updated by each time exchange.
    offset: f64,
}

impl Session {
    /// A link whose records are from `who`, in session `session` until a line says otherwise;
    /// counted as a connected device if `presence`.
    pub(crate) fn new(ingest: Arc<Ingest>, who: Who, session: &str, presence: bool) -> Session {
        let here = match (&who, presence) {
            (Who::Authenticated(device), true) => Some(ingest.presence.enter(device)),
            _ => None,
        };
        let offset = match &who {
            Who::Authenticated(d) | Who::Named(d) | Who::Request(d) | Who::Upload(d) => {
                ingest.clocks.offset(d)
            }
        };
        Session {
            ingest,
            who,
            session: session.into(),
            line: 0,
            batch: Vec::new(),
            lines: Vec::new(),
            here,
            presence,
            pending: None,
            offset,
        }
    }

    fn device(&self) -> &Arc<str> {
        match &self.who {
            Who::Authenticated(d) | Who::Named(d) | Who::Request(d) | Who::Upload(d) => d,
        }
    }

    /// Records read and not yet handed to the writer.
    pub(crate) fn batched(&self) -> usize {
        self.batch.len()
    }

    /// The number the next line will have.
    pub(crate) fn lines_read(&self) -> u64 {
        self.line
    }

    /// Takes the next line as received (with its line ending, if any), or why it could not be
    /// read whole, and says what to read next. A record joins the batch; a refused line is
    /// answered (after what came before it, so the batch is handed over first).
    pub(crate) async fn line(
        &mut self,
        raw: Result<&[u8], Refusal>,
        answers: &mut Answers,
    ) -> Step {
        self.line += 1;
        let text = raw.as_ref().ok().and_then(|r| std::str::from_utf8(r).ok());
        let parsed = raw.clone().map(parse_raw_line);
        let refusal = match parsed {
            Ok(None) => return Step::Next,
            Err(refusal) | Ok(Some(Err(refusal))) => refusal,
            Ok(Some(Ok(Line::Session(name)))) => {
                self.session = name.into();
                return Step::Next;
            }
            Ok(Some(Ok(Line::Time { t0, rest: None }))) => {
                // Answered in line order, stamped with when it is written.
                self.submit(answers).await;
                answers.now(Answer::Time {
                    t0,
                    t1: now_secs(),
                    t2: None,
                });
                return Step::Next;
            }
            Ok(Some(Ok(Line::Time {
                t0,
                rest: Some((t1, t2, t3)),
            }))) => {
                let exchange = crate::clock::Exchange { t0, t1, t2, t3 };
                let device = Arc::clone(self.device());
                match self.ingest.clocks.exchange(&device, exchange, now_secs()) {
                    Ok(estimate) => {
                        self.offset = estimate.correction();
                        return Step::Next;
                    }
                    Err(refusal) => refusal,
                }
            }
            Ok(Some(Ok(Line::Image {
                record,
                format,
                len,
            }))) => {
                let max = self.ingest.max_image;
                match (&self.who, usize::try_from(len)) {
                    (Who::Request(_), _) => {
                        let refusal = Refusal::new(
                            Reason::Value,
                            "images are sent to POST /api/ingest/image, one per request",
                        );
                        self.refuse(refusal, answers).await;
                        return Step::Stop;
                    }
                    (_, Ok(len)) if len <= max => {
                        // What came before is answered first, even if the image never comes.
                        self.submit(answers).await;
                        self.pending = Some((record, format));
                        return Step::Image(len);
                    }
                    _ => {
                        let refusal = Refusal::new(
                            Reason::TooLong,
                            format!(
                                "an image of {len} bytes: the most is {max} (the hub's \
                                 --max-image); closing, as the bytes that follow cannot be skipped"
                            ),
                        );
                        self.refuse(refusal, answers).await;
                        return Step::Stop;
                    }
                }
            }
            Ok(Some(Ok(Line::Device(name)))) => match &self.who {
                Who::Authenticated(fixed) => Refusal::new(
                    Reason::Device,
                    format!("this connection authenticated as {fixed:?}; its device cannot change"),
                ),
                Who::Request(_) | Who::Upload(_) => Refusal::new(
                    Reason::Device,
                    "the device is named in the URL (?device=NAME)",
                ),
                Who::Named(_) => {
                    self.offset = self.ingest.clocks.offset(&name);
                    self.who = Who::Named(name.into());
                    self.here = None;
                    return Step::Next;
                }
            },
            Ok(Some(Ok(Line::Record(record)))) => {
                self.take(record);
                return Step::Next;
            }
        };
        let step = self.after_refusal(text);
        self.refuse(refusal, answers).await;
        step
    }

    /// What follows a refused line: the bytes of an image it announced are skipped (if they
    /// can be: a length within the cap), else nothing more of the stream can be followed.
    fn after_refusal(&self, text: Option<&str>) -> Step {
        match text.and_then(announced_bytes) {
            None => Step::Next,
            Some(Ok(len)) => match usize::try_from(len) {
                Ok(len) if len <= self.ingest.max_image => Step::Skip(len),
                _ => Step::Stop,
            },
            Some(Err(_)) => Step::Stop,
        }
    }

    /// The bytes of the image whose header came last: checked against the format announced,
    /// then the record is handed to the writer at once (an image is not held back for more).
    pub(crate) async fn image(&mut self, data: bytes::Bytes, answers: &mut Answers) {
        let Some((mut record, format)) = self.pending.take() else {
            return;
        };
        match attach_image(&mut record, format, data) {
            Ok(()) => {
                self.take(record);
                self.submit(answers).await;
            }
            Err(refusal) => self.refuse(refusal, answers).await,
        }
    }

    /// A record into the batch.
    fn take(&mut self, record: Record) {
        if self.presence && self.here.is_none() {
            self.here = Some(self.ingest.presence.enter(self.device()));
        }
        self.lines.push((self.line, record.seq));
        let mut item = Item::new(self.device(), &self.session, record, now_secs());
        item.offset = self.offset;
        self.batch.push(item);
    }

    /// Answers the current line with a refusal, after what came before it.
    async fn refuse(&mut self, refusal: Refusal, answers: &mut Answers) {
        self.submit(answers).await;
        self.ingest.stats.reject(refusal.reason);
        answers.now(Answer::Refused {
            line: self.line,
            why: refusal.why,
        });
    }

    /// Hands the batch to the writer, in the device's turn (waiting while its share of the
    /// queue is full), and queues its answers to come.
    pub(crate) async fn submit(&mut self, answers: &mut Answers) {
        if self.batch.is_empty() {
            return;
        }
        // The next batch is likely the size of this one: room for it now, not grown by doubling
        // (each growth moves every record read so far).
        let size = self.batch.len();
        let items = std::mem::replace(&mut self.batch, Vec::with_capacity(size));
        let lines = std::mem::replace(&mut self.lines, Vec::with_capacity(size));
        let images = items.iter().filter(|i| i.has_image()).count();
        let pending = self.ingest.store.submit(self.device(), items).await;
        answers.images += images;
        answers
            .queue
            .push_back(Queued::Later(pending, lines, images));
    }
}

/// A link's answers in line order: those ready, and those waiting for the writer.
pub(crate) struct Answers {
    ingest: Arc<Ingest>,
    queue: VecDeque<Queued>,
    /// Images in the jobs waiting.
    images: usize,
}

enum Queued {
    Now(Answer),
    /// A job's outcomes to come, with (line, seq) of each record, and how many images it holds.
    Later(Pending, Vec<(u64, Option<u64>)>, usize),
}

impl Answers {
    pub(crate) fn new(ingest: Arc<Ingest>) -> Answers {
        Answers {
            ingest,
            queue: VecDeque::new(),
            images: 0,
        }
    }

    /// Queues an answer that needs no commit.
    pub(crate) fn now(&mut self, answer: Answer) {
        self.queue.push_back(Queued::Now(answer));
    }

    /// Answers queued (ready or waiting).
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Jobs waiting for the writer.
    pub(crate) fn jobs_waiting(&self) -> usize {
        self.queue
            .iter()
            .filter(|q| matches!(q, Queued::Later(..)))
            .count()
    }

    /// Writes every answer that is ready in line order, up to the first that waits.
    pub(crate) fn ready(&mut self, out: &mut Vec<u8>) {
        while let Some(Queued::Now(_)) = self.queue.front() {
            if let Some(Queued::Now(answer)) = self.queue.pop_front() {
                answer.write(out);
            }
        }
    }

    /// True while an image of this link waits for the writer.
    pub(crate) fn holds_image(&self) -> bool {
        self.images > 0
    }

    /// True when the first answer waits for the writer.
    pub(crate) fn waiting(&self) -> bool {
        matches!(self.queue.front(), Some(Queued::Later(..)))
    }

    /// Waits for the first job's outcomes (when [`waiting`](Answers::waiting)) and writes
    /// their answers.
    ///
    /// # Cancel safety
    /// Cancel-safe: the outcomes stay queued until they have arrived.
    pub(crate) async fn settle(&mut self, out: &mut Vec<u8>) {
        let outcomes = match self.queue.front_mut() {
            Some(Queued::Later(pending, _, _)) => pending.await,
            _ => return,
        };
        if let Some(Queued::Later(_, lines, images)) = self.queue.pop_front() {
            self.images -= images;
            self.write_outcomes(&lines, outcomes, out);
        }
    }

    /// Writes every answer, waiting for the writer as needed, and returns the last.
    pub(crate) async fn finish_one(&mut self, out: &mut Vec<u8>) -> Option<Answer> {
        let start = out.len();
        self.finish(out).await;
        let written = out.get(start..).unwrap_or_default();
        let last = written
            .strip_suffix(b"\n")?
            .rsplit(|&b| b == b'\n')
            .next()?;
        Answer::parse(last).ok()
    }

    /// Writes every answer, waiting for the writer as needed.
    pub(crate) async fn finish(&mut self, out: &mut Vec<u8>) {
        while !self.queue.is_empty() {
            self.ready(out);
            self.settle(out).await;
        }
    }

    fn write_outcomes(
        &self,
        lines: &[(u64, Option<u64>)],
        outcomes: Vec<Outcome>,
        out: &mut Vec<u8>,
    ) {
        let stats = &self.ingest.stats;
        for (&(line, seq), outcome) in lines.iter().zip(outcomes) {
            let answer = match outcome {
                Ok(stored) => {
                    let counter = match stored {
                        Stored::New => &stats.records,
                        Stored::Duplicate => &stats.duplicates,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let Some(seq) = seq else { continue };
                    stats.acks.fetch_add(1, Ordering::Relaxed);
                    Answer::Ack(seq)
                }
                Err(StoreError::Rejected(refusal)) => {
                    stats.reject(refusal.reason);
                    Answer::Refused {
                        line,
                        why: refusal.why,
                    }
                }
                Err(err @ StoreError::Unavailable(_)) => {
                    stats.reject(Reason::Storage);
                    Answer::Retry {
                        line,
                        why: err.to_string(),
                    }
                }
            };
            answer.write(out);
        }
    }
}
