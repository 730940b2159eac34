//! [`Publisher`]: the robot's side of the ingest protocol — every record numbered within a
//! session and kept until the hub has committed it.
//!
//! Records are numbered (`"seq"`) and sent over one connection, at most `max_unacked` waiting
//! for their acknowledgement. When the link drops (or the hub answers *retry*), the publisher
//! reconnects with exponential backoff and jitter and sends every unacknowledged record again;
//! the hub stores each (device, session, seq) once, so a resend never duplicates. A record the
//! hub refuses is reported (an [`Event`]) and forgotten. With a [`Journal`] every record is
//! written down before it is sent and crossed off when settled, so a program that restarts can
//! hand the unsettled ones back ([`Recovered`]).
//!
//! ```no_run
//! # async fn robot() -> anyhow::Result<()> {
//! use socketeer_hub::publisher::{Publisher, PublisherConfig, Recovered};
//!
//! let endpoint = "127.0.0.1:7000".parse()?;
//! let config = PublisherConfig::new(endpoint, "run-42");
//! let (publisher, delivery) =
//!     Publisher::start(config, None, Recovered::<()>::default(), |event| eprintln!("{event}"));
//! publisher.publish(br#"{"stream":"imu","values":{"ax":0.1,"az":9.8}}"#, ()).await?;
//! publisher.end()?;
//! let report = delivery.await?; // once every record is settled
//! assert_eq!(report.acknowledged, 1);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use socketeer::{ClientOptions, ConnectionReader, ConnectionWriter, Endpoint, client};
use tokio::sync::{Notify, Semaphore};

use crate::record::{ImageFormat, MAX_LINE};

/// The largest image a publisher sends (the most a hub can be set to take).
pub const MAX_IMAGE_SENT: usize = 16 * 1024 * 1024;
use crate::wire::Answer;

/// Backoff between connection attempts: from the first to the most, doubling, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MOST: Duration = Duration::from_secs(10);
/// The longest wait between resends to a hub whose storage keeps answering "retry".
const BUSY_MOST: Duration = Duration::from_secs(2);
/// Most acknowledgement latencies kept for the report.
const MAX_SAMPLES: usize = 10_000_000;
/// Records taken from the window per send batch.
const SEND_BATCH: usize = 1024;

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The hub's ingest endpoint.
    pub endpoint: Endpoint,
    /// Other nodes of the same hub (sharing its store): when the current one cannot be reached
    /// or its link is lost, the next is tried at once, and what was not acknowledged is sent
    /// there (the store's (device, session, seq) key makes a resend of a record the first node
    /// committed a duplicate, not a second copy).
    pub fallbacks: Vec<Endpoint>,
    /// TLS and key, and the connect/handshake timeout.
    pub options: ClientOptions,
    /// Sent as `{"device":NAME}` first on each connection, for hubs without authentication
    /// (with a key the hub knows the device already: leave it `None`).
    pub device: Option<String>,
    /// The session the numbers belong to: new numbering needs a new session.
    pub session: String,
    /// Most records sent and not yet settled; [`Publisher::publish`] waits for room.
    pub max_unacked: usize,
    /// Most bytes (lines and their images) sent and not yet settled: camera frames are many
    /// times a reading's size, and a hub that is away must not fill the robot's memory.
    /// [`Publisher::publish`] waits for room; one record larger than this still goes, alone.
    pub max_unacked_bytes: usize,
    /// How often to run a time exchange with the hub (one at each connect, then this often),
    /// so the hub puts this device's times on its clock; `None`: never.
    pub clock_every: Option<Duration>,
    /// Seconds this device's clock is off (added to the real time wherever the publisher reads
    /// the clock): for simulating a robot whose clock is wrong. 0 for a real one.
    pub clock_error: f64,
}

/// The default of [`PublisherConfig::clock_every`]: 30 s.
pub const DEFAULT_CLOCK_EVERY: Duration = Duration::from_secs(30);

/// The default of [`PublisherConfig::max_unacked_bytes`]: 256 MiB.
pub const DEFAULT_MAX_UNACKED_BYTES: usize = 256 * 1024 * 1024;

impl PublisherConfig {
    /// Delivery to `endpoint` in `session`, plain TCP, no key, 10,000 records (256 MiB) in
    /// flight.
    pub fn new(endpoint: Endpoint, session: impl Into<String>) -> PublisherConfig {
        PublisherConfig {
            endpoint,
            fallbacks: Vec::new(),
            options: ClientOptions::default(),
            device: None,
            session: session.into(),
            max_unacked: 10_000,
            max_unacked_bytes: DEFAULT_MAX_UNACKED_BYTES,
            clock_every: Some(DEFAULT_CLOCK_EVERY),
            clock_error: 0.0,
        }
    }
}

/// Where records are written down before they are sent, and crossed off once settled, so a
/// restarted program loses none (`socketeer publish --spool` keeps one on disk). Called with
/// the publisher's books locked: a record is in both or in neither.
pub trait Journal<T>: Send + 'static {
    /// `line` (numbered `seq`, with its `\n`) is about to be kept for delivery.
    ///
    /// # Errors
    /// The record could not be written down: it is not published.
    fn kept(&mut self, seq: u64, line: &[u8], tag: &T) -> anyhow::Result<()>;

    /// Record `seq` was settled (acknowledged or refused); `nothing_left` when no record
    /// waits any more.
    ///
    /// # Errors
    /// The journal could not be updated: delivery stops.
    fn settled(&mut self, seq: u64, nothing_left: bool) -> anyhow::Result<()>;

    /// Input that holds no record was taken (a blank line, a line refused before sending):
    /// `tag` says where the input stands.
    fn skipped(&mut self, tag: &T) {
        let _ = tag;
    }

    /// No more records will come, and none is unsettled.
    ///
    /// # Errors
    /// The journal could not be updated.
    fn drained(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Records a previous run left unsettled, to send first, and where its numbering stopped.
#[derive(Debug)]
pub struct Recovered<T> {
    /// The next number to give.
    pub next_seq: u64,
    /// Numbered records (each line with its `\n`), with their tags.
    pub unacked: Vec<(u64, Bytes, T)>,
}

impl<T> Default for Recovered<T> {
    fn default() -> Self {
        Recovered {
            next_seq: 1,
            unacked: Vec::new(),
        }
    }
}

/// Something a program may want to tell its user.
#[derive(Debug)]
pub enum Event<'a, T> {
    /// The hub refused a record for good: it is forgotten.
    Refused {
        /// Its number.
        seq: u64,
        /// Its tag.
        tag: &'a T,
        /// Why.
        why: &'a str,
    },
    /// The hub could not be reached; trying again.
    Unreachable {
        /// Why.
        error: &'a socketeer::Error,
        /// Records waiting.
        unacked: usize,
        /// When the next try is.
        retry_in: Duration,
    },
    /// The link was lost (or the hub asked for a resend); reconnecting.
    Lost {
        /// Why.
        why: String,
        /// Records waiting.
        unacked: usize,
    },
    /// The hub closed the connection; reconnecting.
    Closed,
    /// The hub cannot store now (its database is away): everything unacknowledged is kept and
    /// sent again after a wait that grows while this lasts.
    Busy {
        /// Why, as the hub said.
        why: String,
        /// Records kept.
        unacked: usize,
        /// When they are sent again.
        retry_in: Duration,
    },
    /// Moving to another node of the hub (see [`PublisherConfig::fallbacks`]).
    Failover {
        /// The node tried now.
        to: &'a Endpoint,
        /// Records waiting, to be sent there.
        unacked: usize,
    },
    /// A time exchange completed: the hub now knows this device's clock offset.
    Clock {
        /// Seconds to add to this device's times (its own estimate of one exchange).
        offset: f64,
        /// The exchange's round trip, seconds.
        rtt: f64,
    },
    /// The hub refused a time exchange (a hub that does not have them, or one it could not
    /// use): no more on this connection.
    ClockRefused {
        /// Why.
        why: &'a str,
    },
}

impl<T> fmt::Display for Event<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Refused { seq, why, .. } => write!(f, "record {seq} refused by the hub: {why}"),
            Event::Clock { offset, rtt } => write!(
                f,
                "clock: {offset:+.6} s from the hub's (round trip {:.1} ms)",
                rtt * 1000.0
            ),
            Event::ClockRefused { why } => write!(f, "the hub refused a time exchange: {why}"),
            Event::Unreachable { error, unacked, .. } if retry_in_zero(self) => {
                write!(f, "{error}; {unacked} lines unacknowledged")
            }
            Event::Unreachable {
                error,
                unacked,
                retry_in,
            } => write!(
                f,
                "{error}; {unacked} lines unacknowledged; retrying in {} ms",
                retry_in.as_millis()
            ),
            Event::Lost { why, unacked } => {
                write!(
                    f,
                    "link lost ({why}); {unacked} lines unacknowledged; reconnecting"
                )
            }
            Event::Closed => f.write_str("the hub closed the connection; reconnecting"),
            Event::Busy {
                why,
                unacked,
                retry_in,
            } => write!(
                f,
                "the hub cannot store now ({why}); {unacked} lines kept, sent again in {} ms",
                retry_in.as_millis()
            ),
            Event::Failover { to, unacked } => {
                write!(f, "failing over to {to}; {unacked} lines to send there")
            }
        }
    }
}

/// An unreachable node that is left for the next at once.
fn retry_in_zero<T>(event: &Event<'_, T>) -> bool {
    matches!(event, Event::Unreachable { retry_in, .. } if retry_in.is_zero())
}

/// How delivery went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Records the hub acknowledged.
    pub acknowledged: u64,
    /// Records the hub refused.
    pub refused: u64,
    /// Records sent again after reconnecting.
    pub resent: u64,
    /// Send-to-acknowledgement times, microseconds, sorted (at most ten million).
    pub latencies_us: Vec<u32>,
}

impl Report {
    /// The `p`-quantile (0 to 1) of the acknowledgement latencies, in milliseconds.
    pub fn latency_ms(&self, p: f64) -> f64 {
        let samples = &self.latencies_us;
        if samples.is_empty() {
            return 0.0;
        }
        let at = ((samples.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
        f64::from(samples[at]) / 1000.0
    }
}

/// Why a record was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The line is not a record the publisher can number: not a JSON object, too long, or it
    /// sets `seq`, `session` or `device` itself.
    #[error("{0}")]
    Invalid(String),
    /// The journal could not write it down.
    #[error("the journal: {0:#}")]
    Journal(anyhow::Error),
    /// Delivery has stopped (it failed, or the publisher was ended).
    #[error("delivery has stopped")]
    Stopped,
}

/// A record waiting for its acknowledgement.
struct Entry<T> {
    bytes: Bytes,
    /// Its permits of [`Shared::room_bytes`], given back when it is settled.
    weight: u32,
    tag: T,
    /// When it was first sent (for the latencies).
    sent: Option<Instant>,
}

/// The records waiting for their acknowledgement, in order of their numbers. Records are
/// numbered in turn and the hub answers in line order, so a record is added at the back and
/// nearly always settled from the front: both O(1), where a tree moved its neighbours on every
/// removal from the front (those moves alone were 5% of a publisher's time) and allocated and
/// merged nodes as the window slid.
struct Unacked<T>(VecDeque<(u64, Entry<T>)>);

impl<T> Unacked<T> {
    /// Adds a record numbered above every one here (or anywhere, slowly: recovered ones).
    fn insert(&mut self, seq: u64, entry: Entry<T>) {
        match self.0.back() {
            Some(&(last, _)) if last >= seq => {
                let at = self.0.partition_point(|&(s, _)| s < seq);
                if self.0.get(at).is_some_and(|&(s, _)| s == seq) {
                    self.0[at].1 = entry;
                } else {
                    self.0.insert(at, (seq, entry));
                }
            }
            _ => self.0.push_back((seq, entry)),
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry<T>> {
        if self.0.front().is_some_and(|&(s, _)| s == seq) {
            return self.0.pop_front().map(|(_, entry)| entry);
        }
        let at = self.0.partition_point(|&(s, _)| s < seq);
        match self.0.get(at) {
            Some(&(s, _)) if s == seq => self.0.remove(at).map(|(_, entry)| entry),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The records numbered `from` or above, in order.
    fn numbered_from(&mut self, from: u64) -> impl Iterator<Item = (u64, &mut Entry<T>)> {
        let at = self.0.partition_point(|&(s, _)| s < from);
        self.0.range_mut(at..).map(|(seq, entry)| (*seq, entry))
    }
}

struct Books<T> {
    unacked: Unacked<T>,
    next_seq: u64,
    ended: bool,
    report: Report,
    /// Where numbered records are written: each is a slice of a shared chunk (of
    /// [`ARENA_CHUNK`] bytes, or one record's size if larger), so keeping a record costs no
    /// allocation of its own; a chunk is freed when the last of its records is settled.
    arena: BytesMut,
}

/// The size of the chunks numbered records are written into.
const ARENA_CHUNK: usize = 64 * 1024;

/// Who hears of [`Event`]s.
type Listener<T> = dyn Fn(Event<'_, T>) + Send + Sync;

struct Shared<T> {
    books: Mutex<Books<T>>,
    journal: Option<Mutex<Box<dyn Journal<T>>>>,
    /// New records to send, or everything settled.
    changed: Notify,
    /// The input has ended (the receiver may be waiting for answers that will not come).
    ended: Notify,
    /// Room for more unsettled records.
    room: Semaphore,
    /// Bytes of room among the unsettled (`max_unacked_bytes`).
    room_bytes: Semaphore,
    /// The most one record takes of `room_bytes` (all of it).
    most_bytes: u32,
    events: Box<Listener<T>>,
    /// Delivery has ended (done or failed): nothing more is taken.
    stopped: std::sync::atomic::AtomicBool,
}

impl<T> Shared<T> {
    fn books(&self) -> std::sync::MutexGuard<'_, Books<T>> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn journal(&self) -> Option<std::sync::MutexGuard<'_, Box<dyn Journal<T>>>> {
        self.journal
            .as_ref()
            .map(|j| j.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn finished(&self) -> bool {
        let books = self.books();
        books.ended && books.unacked.is_empty()
    }
}

/// Hands records to delivery; clone it freely. See the [module docs](self).
pub struct Publisher<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        Publisher {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The delivery task, to await: it ends once [`Publisher::end`] was called and every record is
/// settled, with a [`Report`], or fails for good (the hub refused the key, the journal
/// failed). Dropping it stops delivery.
pub struct Delivery<T> {
    shared: Arc<Shared<T>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl<T> std::future::Future for Delivery<T> {
    type Output = anyhow::Result<Report>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let done = std::task::ready!(std::pin::Pin::new(&mut self.task).poll(cx));
        std::task::Poll::Ready(
            done.map_err(|e| anyhow::anyhow!("the delivery task: {e}"))
                .and_then(|result| result)
                .map(|()| report(&self.shared)),
        )
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        self.task.abort();
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.room.close();
        self.shared.room_bytes.close();
    }
}

fn report<T>(shared: &Shared<T>) -> Report {
    let mut report = shared.books().report.clone();
    report.latencies_us.sort_unstable();
    report
}

impl<T: Send + 'static> Publisher<T> {
    /// Starts delivering (connecting in the background), `recovered` records first; `events`
    /// hears of refusals and reconnections. Needs a tokio runtime.
    pub fn start(
        config: PublisherConfig,
        journal: Option<Box<dyn Journal<T>>>,
        recovered: Recovered<T>,
        events: impl Fn(Event<'_, T>) + Send + Sync + 'static,
    ) -> (Publisher<T>, Delivery<T>) {
        let room = Semaphore::new(config.max_unacked.max(1));
        let most_bytes = u32::try_from(config.max_unacked_bytes)
            .unwrap_or(u32::MAX)
            .max(1);
        let room_bytes = Semaphore::new(most_bytes as usize);
        let mut unacked = Unacked(VecDeque::new());
        for (seq, bytes, tag) in recovered.unacked {
            if let Ok(permit) = room.try_acquire() {
                permit.forget();
            }
            // What it takes of the byte room, as far as there is room: what it gives back.
            let weight = weight(bytes.len(), most_bytes);
            let weight = match room_bytes.try_acquire_many(weight) {
                Ok(permit) => {
                    permit.forget();
                    weight
                }
                Err(_) => 0,
            };
            unacked.insert(
                seq,
                Entry {
                    bytes,
                    weight,
                    tag,
                    sent: None,
                },
            );
        }
        let shared = Arc::new(Shared {
            books: Mutex::new(Books {
                unacked,
                next_seq: recovered.next_seq,
                ended: false,
                report: Report::default(),
                arena: BytesMut::with_capacity(ARENA_CHUNK),
            }),
            journal: journal.map(Mutex::new),
            changed: Notify::new(),
            ended: Notify::new(),
            room,
            room_bytes,
            most_bytes,
            events: Box::new(events),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        let mut hello = String::new();
        if let Some(device) = &config.device {
            hello.push_str(&serde_json::json!({ "device": device }).to_string());
            hello.push('\n');
        }
        hello.push_str(&serde_json::json!({ "session": config.session }).to_string());
        hello.push('\n');
        let task = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let clock = Clock {
                    every: config.clock_every,
                    error: config.clock_error,
                };
                let mut endpoints = vec![config.endpoint];
                endpoints.extend(config.fallbacks);
                let result = deliver(
                    endpoints,
                    config.options,
                    Bytes::from(hello),
                    clock,
                    Arc::clone(&shared),
                )
                .await;
                shared
                    .stopped
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                // Whoever waits for room learns delivery has stopped.
                shared.room.close();
                shared.room_bytes.close();
                result
            })
        };
        (
            Publisher {
                shared: Arc::clone(&shared),
            },
            Delivery { shared, task },
        )
    }

    /// Numbers one record (a JSON object, without `seq`, `session` or `device`; blank lines
    /// are skipped: `Ok(None)`), waits for room among the unsettled, writes it down in the
    /// journal, and queues it. Returns its number.
    ///
    /// # Errors
    /// [`PublishError`]: not a record, the journal failed, or delivery has stopped.
    ///
    /// # Cancel safety
    /// Cancel-safe: a record is kept only once this returns its number.
    pub async fn publish(&self, line: &[u8], tag: T) -> Result<Option<u64>, PublishError> {
        let Some(object) = record_object(line)? else {
            return Ok(None);
        };
        if object.image {
            return Err(PublishError::Invalid(
                "an image header needs its bytes: publish it with its image".into(),
            ));
        }
        let size = line.len();
        self.keep(
            |arena, seq| numbered_into(arena, object.object, seq, None),
            size,
            tag,
        )
        .await
        .map(Some)
    }

    /// Numbers one record with an image: `header` is its JSON object (stream, time,
    /// detections...; `"image"` is set here from `format` and the image's length), `image` the
    /// file's bytes. Waits for room, writes it down, queues header and bytes together.
    ///
    /// # Errors
    /// As [`publish`](Publisher::publish); an image over [`MAX_IMAGE_SENT`] bytes or empty.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn publish_image(
        &self,
        header: &[u8],
        format: ImageFormat,
        image: Bytes,
        tag: T,
    ) -> Result<u64, PublishError> {
        let object = record_object(header)?;
        if image.is_empty() || image.len() > MAX_IMAGE_SENT {
            return Err(PublishError::Invalid(format!(
                "an image is 1 byte to {MAX_IMAGE_SENT} bytes; this one is {}",
                image.len()
            )));
        }
        let size = header.len() + image.len();
        // `"image"` is set here from the image: a header that has one (a line read back from
        // input, say) has it taken out (parsed for that, as headers are few).
        let object: std::borrow::Cow<'_, [u8]> = match object {
            None => b"{}"[..].into(),
            Some(o) if !o.image => o.object.into(),
            Some(o) => {
                let mut map: serde_json::Map<String, Value> = serde_json::from_slice(o.object)
                    .map_err(|e| PublishError::Invalid(format!("not a JSON object: {e}")))?;
                map.remove("image");
                Value::Object(map).to_string().into_bytes().into()
            }
        };
        self.keep(
            |arena, seq| numbered_into(arena, &object, seq, Some((format, &image))),
            size,
            tag,
        )
        .await
    }

    /// Waits for room, numbers the record, writes it down, and queues it.
    async fn keep(
        &self,
        number: impl FnOnce(&mut BytesMut, u64) -> Bytes,
        size: usize,
        tag: T,
    ) -> Result<u64, PublishError> {
        if self
            .shared
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(PublishError::Stopped);
        }
        let permit = self
            .shared
            .room
            .acquire()
            .await
            .map_err(|_| PublishError::Stopped)?;
        let weight = weight(size, self.shared.most_bytes);
        let bytes_permit = self
            .shared
            .room_bytes
            .acquire_many(weight)
            .await
            .map_err(|_| PublishError::Stopped)?;
        // Journal and books change together (the journal's lock first, as settling takes
        // them), so emptying the journal when nothing is unsettled never drops a new record.
        let mut journal = self.shared.journal();
        let mut books = self.shared.books();
        if books.ended {
            return Err(PublishError::Stopped);
        }
        let seq = books.next_seq;
        let bytes = number(&mut books.arena, seq);
        if let Some(journal) = journal.as_mut() {
            journal
                .kept(seq, &bytes, &tag)
                .map_err(PublishError::Journal)?;
        }
        permit.forget();
        bytes_permit.forget();
        books.next_seq += 1;
        books.unacked.insert(
            seq,
            Entry {
                bytes,
                weight,
                tag,
                sent: None,
            },
        );
        drop(books);
        drop(journal);
        self.shared.changed.notify_one();
        Ok(seq)
    }

    /// Records waiting for their acknowledgement.
    pub fn unacked(&self) -> usize {
        self.shared.books().unacked.len()
    }

    /// The number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.books().next_seq
    }

    /// Notes input taken that holds no record (in the journal, if there is one).
    pub fn skipped(&self, tag: &T) {
        if let Some(mut journal) = self.shared.journal() {
            journal.skipped(tag);
        }
    }

    /// No more records: the [`Delivery`] ends once those published are settled.
    ///
    /// # Errors
    /// The journal could not be updated.
    pub fn end(&self) -> anyhow::Result<()> {
        let mut journal = self.shared.journal();
        let nothing_left = {
            let mut books = self.shared.books();
            books.ended = true;
            books.unacked.is_empty()
        };
        if let (Some(journal), true) = (journal.as_mut(), nothing_left) {
            journal.drained()?;
        }
        drop(journal);
        self.shared.changed.notify_one();
        self.shared.ended.notify_waiters();
        Ok(())
    }

    /// How delivery has gone so far.
    pub fn report(&self) -> Report {
        report(&self.shared)
    }
}

/// A record line checked to be one JSON object (whitespace and line ending trimmed), and whether
/// it has an `"image"` key. The line is kept as it came: numbering it inserts `"seq"` in front
/// ([`numbered_into`]), so a reading costs one validating pass, not a parse into values and a
/// re-serialisation (which was most of a publisher's CPU).
struct Checked<'a> {
    object: &'a [u8],
    image: bool,
}

/// What [`numbered_into`] may add to a record line at most: `"seq":N,` and an image header.
const NUMBER_ROOM: usize = 96;

/// Which of the keys that matter here a record has at its top level; every other key and value
/// is checked to be JSON and skipped, nothing is built.
#[derive(serde::Deserialize)]
struct TopKeys {
    #[serde(default, deserialize_with = "present")]
    seq: bool,
    #[serde(default, deserialize_with = "present")]
    session: bool,
    #[serde(default, deserialize_with = "present")]
    device: bool,
    #[serde(default, deserialize_with = "present")]
    image: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
    serde::Deserialize::deserialize(value).map(|_: serde::de::IgnoredAny| true)
}

/// The JSON object of a record line; `None` for a blank line.
fn record_object(raw: &[u8]) -> Result<Option<Checked<'_>>, PublishError> {
    let object = raw.trim_ascii();
    if object.is_empty() {
        return Ok(None);
    }
    if object.len() > MAX_LINE - NUMBER_ROOM {
        return Err(PublishError::Invalid(format!(
            "longer than {} bytes (of the hub's {MAX_LINE}, the rest is kept for the number \
             publish adds)",
            MAX_LINE - NUMBER_ROOM
        )));
    }
    let not_an_object =
        |e: &dyn std::fmt::Display| PublishError::Invalid(format!("not a JSON object: {e}"));
    if object.first() != Some(&b'{') {
        return Err(not_an_object(&"it does not start with {"));
    }
    let keys: TopKeys = serde_json::from_slice(object).map_err(|e| not_an_object(&e))?;
    for (key, there) in [
        ("seq", keys.seq),
        ("session", keys.session),
        ("device", keys.device),
    ] {
        if there {
            return Err(PublishError::Invalid(format!(
                "publish sets {key:?} itself; leave it out"
            )));
        }
    }
    Ok(Some(Checked {
        object,
        image: keys.image,
    }))
}

/// What a record of `size` bytes takes of the byte room: its size, but at most all of it (a
/// record larger than the room goes alone) and at least one permit.
fn weight(size: usize, most: u32) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX).clamp(1, most)
}

/// [`numbered_into`] a buffer of its own.
#[cfg(test)]
fn numbered(object: &[u8], seq: u64, image: Option<(ImageFormat, &[u8])>) -> Bytes {
    numbered_into(&mut BytesMut::new(), object, seq, image)
}

/// The record line numbered `seq` (`"seq"` first, then `image`'s header if given, then the
/// record's own keys as they came), with its `\n`, and the image's bytes after it: written at
/// the end of `arena` and split off.
fn numbered_into(
    arena: &mut BytesMut,
    object: &[u8],
    seq: u64,
    image: Option<(ImageFormat, &[u8])>,
) -> Bytes {
    use std::fmt::Write as _;
    let rest = object.strip_prefix(b"{").unwrap_or(b"}");
    let picture = image.map_or(0, |(_, bytes)| bytes.len());
    arena.reserve(object.len() + NUMBER_ROOM + picture);
    arena.put_slice(b"{\"seq\":");
    let _ = write!(arena, "{seq}");
    if let Some((format, bytes)) = image {
        let _ = write!(
            arena,
            ",\"image\":{{\"format\":\"{}\",\"bytes\":{}}}",
            format.name(),
            bytes.len()
        );
    }
    if !rest.trim_ascii_start().starts_with(b"}") {
        arena.put_u8(b',');
    }
    arena.put_slice(rest);
    arena.put_u8(b'\n');
    if let Some((_, bytes)) = image {
        arena.put_slice(bytes);
    }
    arena.split().freeze()
}

/// The time exchange's settings.
#[derive(Debug, Clone, Copy)]
struct Clock {
    every: Option<Duration>,
    error: f64,
}

impl Clock {
    /// This device's clock: the real time, off by `error`.
    fn now(self) -> f64 {
        crate::store::now_secs() + self.error
    }
}

/// One connection's time exchanges: the lines of those sent (so their refusals are told
/// apart from records'), and completed exchanges waiting to be sent back.
#[derive(Default)]
struct Exchanges {
    lines: Mutex<std::collections::HashSet<u64>>,
    completed: Mutex<VecDeque<String>>,
    /// No more exchanges on this connection (the hub refused one).
    off: std::sync::atomic::AtomicBool,
    /// The first exchange's answer came (or its refusal).
    answered: tokio::sync::Notify,
}

/// How long records wait for the first time exchange of a connection, so that even the first
/// of them is put on the hub's clock.
const FIRST_EXCHANGE_WAIT: Duration = Duration::from_secs(2);

/// Connects, sends, reads acknowledgements; reconnects until everything is settled. With
/// several endpoints (nodes of one hub), a node that cannot be reached or whose link is lost
/// is left for the next at once; the backoff grows only once every node has failed in turn.
async fn deliver<T>(
    endpoints: Vec<Endpoint>,
    options: ClientOptions,
    hello: Bytes,
    clock: Clock,
    shared: Arc<Shared<T>>,
) -> anyhow::Result<()>
where
    T: Send + 'static,
{
    let mut backoff = BACKOFF_FIRST;
    let mut first = true;
    let mut at = 0;
    // Nodes that failed since one last worked.
    let mut failed = 0;
    let next = |at: &mut usize| {
        *at = (*at + 1) % endpoints.len();
        let to = &endpoints[*at];
        (shared.events)(Event::Failover {
            to,
            unacked: shared.books().unacked.len(),
        });
    };
    while !shared.finished() {
        let endpoint = &endpoints[at];
        let conn = match client::connect_with(endpoint, &options).await {
            Ok(conn) => conn,
            Err(err) => {
                if err.kind() == socketeer::ErrorKind::Auth {
                    return Err(anyhow::Error::new(err).context(endpoint.to_string()));
                }
                failed += 1;
                if failed < endpoints.len() {
                    (shared.events)(Event::Unreachable {
                        error: &err,
                        unacked: shared.books().unacked.len(),
                        retry_in: Duration::ZERO,
                    });
                    next(&mut at);
                    continue;
                }
                let wait = jitter(backoff);
                (shared.events)(Event::Unreachable {
                    error: &err,
                    unacked: shared.books().unacked.len(),
                    retry_in: wait,
                });
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MOST);
                failed = 0;
                if endpoints.len() > 1 {
                    next(&mut at);
                }
                continue;
            }
        };
        failed = 0;
        let (reader, writer) = conn.into_split();
        let sent = Arc::new(Mutex::new(VecDeque::new()));
        let exchanges = Arc::new(Exchanges::default());
        let resend = !first;
        first = false;
        let sending = tokio::spawn(send(
            writer,
            hello.clone(),
            Arc::clone(&shared),
            Arc::clone(&sent),
            resend,
            (clock, Arc::clone(&exchanges)),
        ));
        let outcome = receive(reader, &shared, &sent, (clock, &exchanges)).await;
        sending.abort();
        match outcome {
            Ok(()) if shared.finished() => return Ok(()),
            Ok(()) => (shared.events)(Event::Closed),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Link(why)) => (shared.events)(Event::Lost {
                why,
                unacked: shared.books().unacked.len(),
            }),
            Err(Failure::Busy(why)) => {
                // Its storage is away: wait longer each time it says so, then the same node.
                let wait = jitter(backoff);
                (shared.events)(Event::Busy {
                    why,
                    unacked: shared.books().unacked.len(),
                    retry_in: wait,
                });
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BUSY_MOST);
                continue;
            }
        }
        // A connection that got somewhere resets the backoff; a flapping one keeps growing it.
        backoff = BACKOFF_FIRST;
        if endpoints.len() > 1 {
            // The node's link went: another node at once (this one may be gone for good).
            next(&mut at);
        } else {
            tokio::time::sleep(jitter(backoff)).await;
        }
    }
    Ok(())
}

/// Between half and all of `base`, so many robots do not reconnect in step.
fn jitter(base: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    base / 2 + base.mul_f64(f64::from(random) / f64::from(u32::MAX) / 2.0)
}

/// Sends the hello lines, every unsettled record in order, then new ones as they come; and the
/// time exchanges, one at once and then every `clock.every`.
async fn send<T: 'static>(
    mut writer: ConnectionWriter,
    hello: Bytes,
    shared: Arc<Shared<T>>,
    sent: Arc<Mutex<VecDeque<(u64, u64)>>>,
    resend: bool,
    (clock, exchanges): (Clock, Arc<Exchanges>),
) -> anyhow::Result<()> {
    let hello_lines = hello.iter().filter(|&&b| b == b'\n').count() as u64;
    writer.write_all(&hello).await?;
    let mut line_no = hello_lines;
    let mut next = 0u64; // the lowest seq not yet sent on this connection
    let mut next_exchange = clock.every.map(|_| tokio::time::Instant::now());
    loop {
        let notified = shared.changed.notified();
        // Time lines first: a completed exchange goes back at once, a request when due.
        let mut times: Vec<String> = exchanges
            .completed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        if exchanges.off.load(std::sync::atomic::Ordering::Relaxed) {
            next_exchange = None;
        }
        if let (Some(at), Some(every)) = (next_exchange, clock.every) {
            let now = tokio::time::Instant::now();
            if at <= now {
                times.push(crate::clock::request(clock.now()));
                next_exchange = Some(now + every);
            }
        }
        let first = line_no == hello_lines && !times.is_empty();
        for line in times {
            line_no += 1;
            exchanges
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(line_no);
            writer.write_all(line.as_bytes()).await?;
            writer.flush().await?;
        }
        if first {
            // Records wait (briefly) for the hub to know this clock: the first one counts too.
            let answered = exchanges.answered.notified();
            let _ = tokio::time::timeout(FIRST_EXCHANGE_WAIT, answered).await;
            continue;
        }
        let batch: Vec<(u64, Bytes)> = {
            let mut books = shared.books();
            let now = Instant::now();
            if resend && next == 0 {
                books.report.resent += books.unacked.len() as u64;
            }
            books
                .unacked
                .numbered_from(next)
                .take(SEND_BATCH)
                .map(|(seq, entry)| {
                    entry.sent.get_or_insert(now);
                    (seq, entry.bytes.clone())
                })
                .collect()
        };
        if batch.is_empty() {
            writer.flush().await?;
            if shared.finished() {
                return Ok(());
            }
            let exchange_due = async {
                match next_exchange {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notified => {}
                () = exchange_due => {}
            }
            continue;
        }
        for (seq, bytes) in batch {
            line_no += 1;
            sent.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back((line_no, seq));
            writer.write_all(&bytes).await?;
            next = seq + 1;
        }
    }
}

/// Why a connection's delivery ended.
enum Failure {
    /// Reconnect and resend.
    Link(String),
    /// The hub could not store now ("retry"): resend after a growing wait, to the same node
    /// (its store is every node's store).
    Busy(String),
    /// Stop delivering.
    Fatal(anyhow::Error),
}

/// Reads the hub's answers until everything is settled or the connection ends; completes the
/// time exchanges the hub answers. Acks already received are settled together, before
/// waiting for more and before any other answer, and whatever way this ends.
async fn receive<T: 'static>(
    reader: ConnectionReader,
    shared: &Shared<T>,
    sent: &Mutex<VecDeque<(u64, u64)>>,
    clock: (Clock, &Exchanges),
) -> Result<(), Failure> {
    let mut acks = Vec::new();
    let outcome = answers(reader, shared, sent, clock, &mut acks).await;
    settle(shared, &acks, None).map_err(Failure::Fatal)?;
    outcome
}

/// Most acks settled at once.
const ACKS_AT_ONCE: usize = 256;

/// [`receive`]'s loop: acks are gathered in `acks` (at most [`ACKS_AT_ONCE`]).
async fn answers<T: 'static>(
    mut reader: ConnectionReader,
    shared: &Shared<T>,
    sent: &Mutex<VecDeque<(u64, u64)>>,
    (clock, exchanges): (Clock, &Exchanges),
    acks: &mut Vec<u64>,
) -> Result<(), Failure> {
    let flush = |acks: &mut Vec<u64>| {
        let done = settle(shared, acks, None).map_err(Failure::Fatal);
        acks.clear();
        done
    };
    loop {
        // Acks are settled once no further answer is already here (or enough have gathered).
        if !acks.is_empty() && (acks.len() >= ACKS_AT_ONCE || !reader.buffered().contains(&b'\n')) {
            flush(acks)?;
        }
        // If the last record was settled before the input ended, no answer is coming: the end
        // of the input is what finishes.
        let ended = shared.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if shared.finished() {
            return Ok(());
        }
        let line = tokio::select! {
            line = reader.read_line() => line.map_err(|e| Failure::Link(e.to_string()))?,
            () = &mut ended => continue,
        };
        let Some(line) = line else {
            return Ok(());
        };
        let answer = match Answer::parse(&line) {
            Ok(answer) => answer,
            Err(err) => {
                if let Some(mismatch) = client::recognize(&line) {
                    return Err(Failure::Link(mismatch.into_error(false).to_string()));
                }
                return Err(Failure::Link(format!(
                    "the hub sent {:?}: {err}",
                    String::from_utf8_lossy(&line)
                )));
            }
        };
        if !matches!(answer, Answer::Ack(_)) {
            flush(acks)?;
        }
        let (line_no, why, retry) = match answer {
            Answer::Time { t0, t1, t2 } => {
                let exchange =
                    crate::clock::Exchange::completed(t0, t1, t2.unwrap_or(t1), clock.now());
                (shared.events)(Event::Clock {
                    offset: exchange.offset(),
                    rtt: exchange.round_trip(),
                });
                exchanges
                    .completed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(exchange.line());
                exchanges.answered.notify_one();
                shared.changed.notify_one();
                continue;
            }
            Answer::Refused { line, why }
                if exchanges
                    .lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&line) =>
            {
                exchanges
                    .off
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                (shared.events)(Event::ClockRefused { why: &why });
                exchanges.answered.notify_one();
                continue;
            }
            Answer::Ack(seq) => {
                let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                while sent.front().is_some_and(|&(_, s)| s <= seq) {
                    sent.pop_front();
                }
                drop(sent);
                acks.push(seq);
                continue;
            }
            Answer::Refused { line, why } => (line, why, false),
            Answer::Retry { line, why } => (line, why, true),
            Answer::Ended { why } => {
                return Err(Failure::Link(format!(
                    "the hub sent an answer a publisher does not know: {{\"error\":{why:?}}}"
                )));
            }
        };
        let seq = {
            let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            while sent.front().is_some_and(|&(l, _)| l < line_no) {
                sent.pop_front();
            }
            sent.front()
                .filter(|&&(l, _)| l == line_no)
                .map(|&(_, s)| s)
        };
        let Some(seq) = seq else {
            return Err(Failure::Link(format!(
                "the hub refused a line we did not send ({line_no}): {why}"
            )));
        };
        if retry {
            // The hub could not commit: not the record's fault. Reconnect and send it again.
            return Err(Failure::Busy(format!("line {seq}: {why}")));
        }
        settle(shared, &[seq], Some(&why)).map_err(Failure::Fatal)?;
    }
}

/// Forgets settled records (all acknowledged, or refused saying `refused`), counts them,
/// crosses them off the journal, and makes room for as many more: one lock and one wake-up
/// for the lot.
fn settle<T: 'static>(
    shared: &Shared<T>,
    seqs: &[u64],
    refused: Option<&str>,
) -> anyhow::Result<()> {
    let mut journal = shared.journal();
    let now = Instant::now();
    let mut gone = Vec::with_capacity(seqs.len());
    let mut bytes = 0usize;
    let mut tags = Vec::new();
    let empty = {
        let mut books = shared.books();
        for &seq in seqs {
            let Some(entry) = books.unacked.remove(seq) else {
                continue; // settled before (a resend answered twice)
            };
            match refused {
                None => {
                    books.report.acknowledged += 1;
                    if let Some(sent) = entry.sent {
                        if books.report.latencies_us.len() < MAX_SAMPLES {
                            let micros = now.saturating_duration_since(sent).as_micros();
                            let micros = micros.min(u128::from(u32::MAX)) as u32;
                            books.report.latencies_us.push(micros);
                        }
                    }
                }
                Some(_) => {
                    books.report.refused += 1;
                    tags.push((seq, entry.tag));
                }
            }
            bytes += entry.weight as usize;
            gone.push(seq);
        }
        books.unacked.is_empty()
    };
    if gone.is_empty() {
        return Ok(());
    }
    if let Some(journal) = journal.as_mut() {
        for (i, &seq) in gone.iter().enumerate() {
            journal.settled(seq, empty && i + 1 == gone.len())?;
        }
    }
    drop(journal);
    if let Some(why) = refused {
        for (seq, tag) in &tags {
            (shared.events)(Event::Refused {
                seq: *seq,
                tag,
                why,
            });
        }
    }
    shared.room.add_permits(gone.len());
    shared.room_bytes.add_permits(bytes);
    shared.changed.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Value {
        let line = bytes.strip_suffix(b"\n").expect("ends the line");
        serde_json::from_slice(line).expect("valid JSON")
    }

    #[test]
    fn unacked_records_stay_in_order_however_they_come_and_go() {
        let entry = |tag: u64| Entry {
            bytes: Bytes::new(),
            weight: 1,
            tag,
            sent: None,
        };
        let mut unacked = Unacked(VecDeque::new());
        // Recovered out of order, with gaps; then new ones in turn.
        for seq in [7, 3, 5, 9, 10, 11] {
            unacked.insert(seq, entry(seq));
        }
        unacked.insert(5, entry(50)); // the same number again: replaced, not doubled
        let seqs = |u: &mut Unacked<u64>| {
            u.numbered_from(0)
                .map(|(s, e)| (s, e.tag))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(&mut unacked),
            [(3, 3), (5, 50), (7, 7), (9, 9), (10, 10), (11, 11)]
        );
        assert_eq!(unacked.remove(3).map(|e| e.tag), Some(3)); // the front
        assert_eq!(unacked.remove(9).map(|e| e.tag), Some(9)); // the middle
        assert!(unacked.remove(9).is_none(), "settled before");
        assert!(unacked.remove(4).is_none(), "never here");
        assert!(unacked.remove(12).is_none(), "not yet numbered");
        assert_eq!(
            unacked.numbered_from(8).map(|(s, _)| s).collect::<Vec<_>>(),
            [10, 11]
        );
        assert_eq!(unacked.len(), 4);
        for seq in [5, 7, 10, 11] {
            assert!(unacked.remove(seq).is_some());
        }
        assert!(unacked.is_empty());
    }

    #[test]
    fn records_numbered_into_shared_chunks_read_as_if_each_had_its_own() {
        let mut arena = BytesMut::with_capacity(ARENA_CHUNK);
        let object = br#"{"stream":"imu","values":{"ax":0.25}}"#;
        let image = vec![7u8; 3 * ARENA_CHUNK];
        let mut kept = Vec::new();
        for seq in 0..5000u64 {
            let image = (seq % 1000 == 999).then_some((ImageFormat::Png, &image[..]));
            kept.push((
                seq,
                image.is_some(),
                numbered_into(&mut arena, object, seq, image),
            ));
            // Settled out of order now and then: what is kept stays as it was.
            if seq % 7 == 3 {
                kept.swap_remove(kept.len() / 2);
            }
        }
        for (seq, has_image, bytes) in kept {
            let image = has_image.then_some((ImageFormat::Png, &image[..]));
            assert_eq!(bytes, numbered(object, seq, image), "record {seq}");
        }
    }

    #[test]
    fn a_line_is_numbered_without_being_rewritten() {
        let raw = b"  {\"stream\":\"imu\",\"values\":{\"ax\":0.1,\"ay\":-1.5e300}}\r\n";
        let checked = record_object(raw).expect("valid").expect("not blank");
        assert!(!checked.image);
        let line = numbered(checked.object, 7, None);
        assert_eq!(
            &line[..],
            b"{\"seq\":7,\"stream\":\"imu\",\"values\":{\"ax\":0.1,\"ay\":-1.5e300}}\n"
        );
        assert_eq!(
            parsed(&line),
            serde_json::json!({"seq": 7, "stream": "imu", "values": {"ax": 0.1, "ay": -1.5e300}})
        );
        for empty in [&b"{}"[..], b"{ }", b"{\n}"] {
            let checked = record_object(empty).expect("valid").expect("not blank");
            assert_eq!(
                parsed(&numbered(checked.object, 1, None)),
                serde_json::json!({"seq": 1})
            );
        }
        assert!(record_object(b" \r\n").expect("blank is fine").is_none());
    }

    #[test]
    fn what_is_not_one_json_object_or_sets_our_keys_is_refused() {
        for bad in [
            &b"[1,2,3,4]"[..],
            b"\"text\"",
            b"42",
            b"{\"a\":1} trailing",
            b"{\"a\":}",
            b"{\"a\":1",
            b"{\"a\":1}{\"b\":2}",
            b"{\"seq\":null}",
            b"{\"seq\":1}",
            b"{\"session\":\"s\"}",
            b"{\"device\":\"d\"}",
            b"{\"\\u0073eq\":1}",
            b"{\"a\":1,\"a\":2,\"seq\":3}",
        ] {
            assert!(
                matches!(record_object(bad), Err(PublishError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // The longest line taken still fits the hub's line limit once numbered, image and all.
        let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_LINE - NUMBER_ROOM - 8));
        let checked = record_object(fits.as_bytes())
            .expect("fits")
            .expect("not blank");
        let biggest = numbered(
            checked.object,
            u64::MAX,
            Some((ImageFormat::Jpeg, &[0; 1 << 20][..])),
        );
        let end = biggest.iter().position(|&b| b == b'\n').expect("a line");
        assert!(end <= MAX_LINE, "{end}");
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_LINE - NUMBER_ROOM - 7));
        assert!(record_object(long.as_bytes()).is_err());
        // Keys deeper down are the record's own.
        let nested = record_object(b"{\"values\":{\"seq\":1,\"image\":2}}").expect("valid");
        assert!(!nested.expect("not blank").image);
    }

    #[test]
    fn an_image_header_is_numbered_with_the_image_it_describes() {
        let checked = record_object(b"{\"stream\":\"cam\"}")
            .expect("valid")
            .expect("not blank");
        let line = numbered(checked.object, 3, Some((ImageFormat::Jpeg, b"JPEGDATA")));
        let end = line.iter().position(|&b| b == b'\n').expect("a line");
        assert_eq!(&line[end + 1..], b"JPEGDATA");
        assert_eq!(
            parsed(&line[..=end]),
            serde_json::json!({"seq": 3, "image": {"format": "jpeg", "bytes": 8}, "stream": "cam"})
        );
        assert!(
            record_object(b"{\"image\":{}}")
                .expect("valid")
                .expect("not blank")
                .image
        );
    }
}
