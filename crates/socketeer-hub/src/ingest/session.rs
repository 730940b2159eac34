//! One ingest link as the protocol sees it, whatever carries it (a TCP connection, an HTTP
//! body): lines numbered from 1, `{"session":..}` and `{"device":..}` lines applied, records
//! batched into jobs for the writer, and every line's answer kept in line order — ready at once
//! for a refused line, after the commit for a record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Here, Ingest};
use crate::record::{Line, parse_raw_line};
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
    /// Named by the request (`?device=`): a `{"device":..}` line is refused.
    Request(Arc<str>),
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
}

impl Session {
    /// A link whose records are from `who`, in session `session` until a line says otherwise;
    /// counted as a connected device if `presence`.
    pub(crate) fn new(ingest: Arc<Ingest>, who: Who, session: &str, presence: bool) -> Session {
        let here = match (&who, presence) {
            (Who::Authenticated(device), true) => Some(ingest.presence.enter(device)),
            _ => None,
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
        }
    }

    fn device(&self) -> &Arc<str> {
        match &self.who {
            Who::Authenticated(d) | Who::Named(d) | Who::Request(d) => d,
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
    /// read whole. A record joins the batch; a refused line is answered (after what came
    /// before it, so the batch is handed over first).
    pub(crate) async fn line(&mut self, raw: Result<&[u8], Refusal>, answers: &mut Answers) {
        self.line += 1;
        let refusal = match raw.map(parse_raw_line) {
            Ok(None) => return,
            Err(refusal) | Ok(Some(Err(refusal))) => refusal,
            Ok(Some(Ok(Line::Session(name)))) => {
                self.session = name.into();
                return;
            }
            Ok(Some(Ok(Line::Device(name)))) => match &self.who {
                Who::Authenticated(fixed) => Refusal::new(
                    Reason::Device,
                    format!("this connection authenticated as {fixed:?}; its device cannot change"),
                ),
                Who::Request(_) => Refusal::new(
                    Reason::Device,
                    "the device is named in the URL (?device=NAME)",
                ),
                Who::Named(_) => {
                    self.who = Who::Named(name.into());
                    self.here = None;
                    return;
                }
            },
            Ok(Some(Ok(Line::Record(record)))) => {
                if self.presence && self.here.is_none() {
                    self.here = Some(self.ingest.presence.enter(self.device()));
                }
                self.lines.push((self.line, record.seq));
                let item = Item::new(self.device(), &self.session, record, now_secs());
                self.batch.push(item);
                return;
            }
        };
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
        let items = std::mem::take(&mut self.batch);
        let lines = std::mem::take(&mut self.lines);
        let pending = self.ingest.store.submit(self.device(), items).await;
        answers.queue.push_back(Queued::Later(pending, lines));
    }
}

/// A link's answers in line order: those ready, and those waiting for the writer.
pub(crate) struct Answers {
    ingest: Arc<Ingest>,
    queue: VecDeque<Queued>,
}

enum Queued {
    Now(Answer),
    /// A job's outcomes to come, with (line, seq) of each record.
    Later(Pending, Vec<(u64, Option<u64>)>),
}

impl Answers {
    pub(crate) fn new(ingest: Arc<Ingest>) -> Answers {
        Answers {
            ingest,
            queue: VecDeque::new(),
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
            Some(Queued::Later(pending, _)) => pending.await,
            _ => return,
        };
        if let Some(Queued::Later(_, lines)) = self.queue.pop_front() {
            self.write_outcomes(&lines, outcomes, out);
        }
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
