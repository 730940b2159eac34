//! The live feed: what the writer committed, told to every viewer without ever waiting for one.
//!
//! The writer sends each committed record once, as a [`Committed`], on a broadcast channel.
//! Each viewer moves what it wants from there into its own [`Lane`]: records queue (bounded —
//! a viewer that falls further behind is dropped), pictures do not — a lane holds at most one
//! pending picture per (device, stream), and a newer picture replaces it where it waits. So a
//! slow viewer sees fewer pictures, never older ones, and one that stops reading costs at most
//! its queue of small events and one picture per stream.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One committed record as the live feed carries it.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) device: Arc<str>,
    pub(crate) stream: Arc<str>,
    /// Its time: the device's, or the hub's receive time if it sent none (Unix seconds).
    pub(crate) ts: f64,
    /// Whether it carries a picture: such events go in a viewer's latest-only lane.
    pub(crate) picture: bool,
    /// The event as the SSE feed and the dashboard see it (one JSON object).
    pub(crate) json: Arc<str>,
    /// The record itself (its image's bytes shared, not copied).
    pub(crate) record: crate::record::Record,
    /// Its Foxglove messages, made by the first client that needs them, shared by the rest.
    pub(crate) foxglove: std::sync::OnceLock<crate::foxglove::Payloads>,
    /// The hub node that committed it, when it was another (it came over the bus).
    pub(crate) origin: Option<Arc<str>>,
}

impl Committed {
    /// As it crosses the bus between hub nodes: its event's JSON, then — for a picture — a
    /// newline and the image's bytes.
    pub(crate) fn to_wire(&self) -> bytes::Bytes {
        let image = self.record.frame.as_ref().and_then(|f| f.image.as_ref());
        let mut out =
            bytes::BytesMut::with_capacity(self.json.len() + 1 + image.map_or(0, |i| i.data.len()));
        out.extend_from_slice(self.json.as_bytes());
        if let Some(image) = image {
            out.extend_from_slice(b"\n");
            out.extend_from_slice(&image.data);
        }
        out.freeze()
    }

    /// Back from the bus: `None` for anything that is not one (logged by the caller).
    pub(crate) fn from_wire(payload: &bytes::Bytes, origin: Arc<str>) -> Option<Committed> {
        use serde_json::Value;
        let end = payload
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(payload.len());
        let json = std::str::from_utf8(&payload[..end]).ok()?;
        let event: serde_json::Map<String, Value> = serde_json::from_str(json).ok()?;
        let text = |key: &str| event.get(key).and_then(Value::as_str);
        // Held to the same rules as a record a robot sends: names checked, counts bounded (the
        // bus is the hub nodes' own, but what crosses it is parsed as if it were not).
        let name = |text: &str| crate::record::name(text, "name").ok();
        let device: Arc<str> = name(text("device")?)?.into();
        let stream = name(text("stream")?)?;
        let ts = event.get("ts").and_then(Value::as_f64)?;
        let pairs = |key: &str| -> Option<Vec<(String, Value)>> {
            let Some(map) = event.get(key).and_then(Value::as_object) else {
                return Some(Vec::new());
            };
            if map.len() > crate::record::MAX_VALUES * 4 {
                return None;
            }
            map.iter()
                .map(|(k, v)| Some((name(k)?, v.clone())))
                .collect()
        };
        let values = pairs("values")?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64()?)))
            .collect();
        let texts = pairs("texts")?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
            .collect();
        let units = pairs("units")?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
            .collect();
        let frame = match event.get("frame") {
            Some(size) => {
                let side = |k: &str| {
                    size.get(k)
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                };
                let detections = event
                    .get("detections")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .take(crate::record::MAX_DETECTIONS)
                            .filter_map(|d| {
                                let b = d.get("box")?.as_array()?;
                                let v = |i: usize| b.get(i).and_then(Value::as_f64);
                                let label = d.get("label")?.as_str()?;
                                Some(crate::record::Detection {
                                    label: label.chars().take(crate::record::MAX_LABEL).collect(),
                                    score: d.get("score")?.as_f64()?,
                                    bbox: [v(0)?, v(1)?, v(2)?, v(3)?],
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let image = match event.get("image") {
                    Some(image) if end < payload.len() => Some(crate::record::Image {
                        format: crate::record::ImageFormat::from_name(
                            image.get("format").and_then(Value::as_str)?,
                        )?,
                        data: payload.slice(end + 1..),
                    }),
                    _ => None,
                };
                Some(crate::record::Frame {
                    width: side("w")?,
                    height: side("h")?,
                    detections,
                    image,
                })
            }
            None => None,
        };
        let picture = frame.as_ref().is_some_and(|f| f.image.is_some());
        Some(Committed {
            device,
            stream: stream.as_str().into(),
            ts,
            picture,
            json: json.into(),
            record: crate::record::Record {
                stream,
                ts: Some(ts),
                values,
                texts,
                units,
                frame,
                seq: None,
                session: None,
            },
            foxglove: std::sync::OnceLock::new(),
            origin: Some(origin),
        })
    }
}

/// Most streams [`Newest`] keeps (a stream past it is shown from its next record on).
const NEWEST_MOST: usize = 100_000;

/// The newest committed record of each (device, stream), on this node and — with a bus —
/// every node: what a viewer that arrives now is shown first, without waiting for the next.
#[derive(Default)]
pub(crate) struct Newest {
    by_stream: Mutex<HashMap<StreamKey, Arc<Committed>>>,
}

impl Newest {
    /// Keeps `event` if it is the newest of its stream (by time).
    pub(crate) fn offer(&self, event: &Arc<Committed>) {
        let key = (Arc::clone(&event.device), Arc::clone(&event.stream));
        let mut by_stream = self.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        match by_stream.get(&key) {
            Some(kept) if kept.ts > event.ts => {}
            None if by_stream.len() >= NEWEST_MOST => {}
            _ => {
                by_stream.insert(key, Arc::clone(event));
            }
        }
    }

    /// Every stream's newest, oldest first (of `device` only, if given).
    pub(crate) fn all(&self, device: Option<&str>) -> Vec<Arc<Committed>> {
        let by_stream = self.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Arc<Committed>> = by_stream
            .values()
            .filter(|e| device.is_none_or(|d| *e.device == *d))
            .cloned()
            .collect();
        all.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        all
    }

    /// The newest of one stream.
    pub(crate) fn get(&self, device: &Arc<str>, stream: &Arc<str>) -> Option<Arc<Committed>> {
        let by_stream = self.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        by_stream
            .get(&(Arc::clone(device), Arc::clone(stream)))
            .cloned()
    }

    /// Forgets retired streams.
    pub(crate) fn retire(&self, streams: &[(String, String)]) {
        let mut by_stream = self.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        by_stream.retain(|(d, s), _| !streams.iter().any(|(rd, rs)| **d == **rd && **s == **rs));
    }
}

/// (device, stream): what a latest-only item is the newest of.
pub(crate) type StreamKey = (Arc<str>, Arc<str>);

/// A viewer fell further behind than its queue: drop it (it reconnects and starts afresh).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

/// One viewer's pending events: a bounded queue in arrival order, in which a latest-only item
/// holds a place for its key and only the newest item of that key is delivered from it.
pub(crate) struct Lane<K, T> {
    state: Mutex<State<K, T>>,
    ready: Notify,
}

struct State<K, T> {
    queue: VecDeque<Slot<K, T>>,
    /// Queued items that are not latest-only (the bounded part).
    queued: usize,
    /// The newest pending latest-only item of each key that has a place in `queue`.
    latest: HashMap<K, T>,
    limit: usize,
    closed: bool,
}

enum Slot<K, T> {
    Item(T),
    Latest(K),
}

impl<K: Hash + Eq + Clone, T> Lane<K, T> {
    /// A lane that holds at most `limit` ordinary items (plus one latest-only item per key).
    pub(crate) fn new(limit: usize) -> Lane<K, T> {
        Lane {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: 0,
                latest: HashMap::new(),
                limit,
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K, T>> {
        // Nothing here panics while holding the lock; if something did, the data is still a
        // consistent queue.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item`, or says the viewer is too far behind.
    pub(crate) fn push(&self, item: T) -> Result<(), Overflow> {
        let mut state = self.state();
        if state.queued >= state.limit {
            return Err(Overflow);
        }
        state.queued += 1;
        state.queue.push_back(Slot::Item(item));
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues `item` as the newest of `key`: it replaces a pending item of the same key (in
    /// that one's place), or takes a place of its own. Never overflows.
    pub(crate) fn push_latest(&self, key: K, item: T) {
        let mut state = self.state();
        if state.latest.insert(key.clone(), item).is_none() {
            state.queue.push_back(Slot::Latest(key));
        }
        drop(state);
        self.ready.notify_one();
    }

    /// No more items: [`next`](Lane::next) returns what is pending, then `None`.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Option<T>> {
        let mut state = self.state();
        loop {
            match state.queue.pop_front() {
                Some(Slot::Item(item)) => {
                    state.queued -= 1;
                    return Some(Some(item));
                }
                Some(Slot::Latest(key)) => {
                    if let Some(item) = state.latest.remove(&key) {
                        return Some(Some(item));
                    }
                }
                None if state.closed => return Some(None),
                None => return None,
            }
        }
    }

    /// The next pending item, waiting for one; `None` once closed and empty.
    pub(crate) async fn next(&self) -> Option<T> {
        loop {
            let ready = self.ready.notified();
            if let Some(item) = self.take() {
                return item;
            }
            ready.await;
        }
    }

    /// Items pending (ordinary and latest-only).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.state().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_crosses_the_bus_whole_and_a_bad_one_is_dropped() {
        let Ok(crate::record::Line::Record(mut record)) = crate::record::parse_line(
            r#"{"stream":"/cam/front","ts":1800000000.5,"values":{"ax":1.5},"units":{"ax":"m/s²"},"frame":{"w":8,"h":6},"detections":[{"label":"cone","score":0.75,"box":[1,2,3,4]}]}"#,
        ) else {
            panic!("a record");
        };
        record.frame.as_mut().expect("frame").image = Some(crate::record::Image {
            format: crate::record::ImageFormat::Jpeg,
            data: bytes::Bytes::from_static(b"\xff\xd8 not really \n a jpeg"),
        });
        let item =
            crate::store::Item::new(&"rover-1".into(), &"s".into(), record.clone(), 1800000001.0);
        let sent = crate::store::committed(&item);
        let back = Committed::from_wire(&sent.to_wire(), "other".into()).expect("parsed");
        assert_eq!(
            (&*back.device, &*back.stream, back.ts),
            ("rover-1", "/cam/front", 1800000000.5)
        );
        assert!(back.picture);
        assert_eq!(back.record.values, record.values);
        assert_eq!(back.record.units, record.units);
        assert_eq!(
            back.record.frame, record.frame,
            "size, detections and the image's bytes"
        );
        assert_eq!(back.origin.as_deref(), Some("other"));
        for bad in [
            &br#"{"device":"bad name","stream":"s","ts":1}"#[..],
            br#"{"device":"d","stream":"s"}"#,
            br#"{"device":"d","stream":"s","ts":1,"values":{"bad key":1}}"#,
            br#"not json"#,
        ] {
            assert!(Committed::from_wire(&bytes::Bytes::from_static(bad), "x".into()).is_none());
        }
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_the_queue_is_bounded() {
        let lane: Lane<&str, u32> = Lane::new(2);
        assert_eq!(lane.push(1), Ok(()));
        assert_eq!(lane.push(2), Ok(()));
        assert_eq!(lane.push(3), Err(Overflow));
        assert_eq!(lane.next().await, Some(1));
        assert_eq!(lane.push(3), Ok(()));
        lane.close();
        assert_eq!(lane.next().await, Some(2));
        assert_eq!(lane.next().await, Some(3));
        assert_eq!(lane.next().await, None);
    }

    #[tokio::test]
    async fn a_newer_latest_item_replaces_the_pending_one_in_its_place() {
        let lane: Lane<&str, u32> = Lane::new(100);
        lane.push_latest("cam-a", 10);
        lane.push(1).expect("room");
        lane.push_latest("cam-b", 20);
        for picture in 11..1000 {
            lane.push_latest("cam-a", picture);
        }
        lane.push_latest("cam-b", 21);
        assert_eq!(lane.pending(), 3, "one place per key however many arrive");
        assert_eq!(
            lane.next().await,
            Some(999),
            "the newest, where the first one waited"
        );
        assert_eq!(lane.next().await, Some(1));
        assert_eq!(lane.next().await, Some(21));
        // Taken: the next picture of that key takes a new place at the back.
        lane.push(2).expect("room");
        lane.push_latest("cam-a", 1000);
        assert_eq!(lane.next().await, Some(2));
        assert_eq!(lane.next().await, Some(1000));
    }

    #[tokio::test]
    async fn latest_items_never_overflow_a_full_queue() {
        let lane: Lane<u32, u32> = Lane::new(1);
        lane.push(0).expect("room");
        for key in 0..10 {
            lane.push_latest(key, key);
        }
        assert_eq!(lane.push(1), Err(Overflow));
        assert_eq!(lane.pending(), 11);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_an_item() {
        let lane: Arc<Lane<&str, u32>> = Arc::new(Lane::new(4));
        let reader = tokio::spawn({
            let lane = Arc::clone(&lane);
            async move { lane.next().await }
        });
        tokio::task::yield_now().await;
        lane.push_latest("cam", 7);
        assert_eq!(reader.await.expect("reader"), Some(7));
    }
}
