//! The Foxglove WebSocket server at `/foxglove`: the Foxglove app (or Lichtblick) connects to
//! the hub and shows its fleet live (`docs/protocol.md`, "Foxglove WebSocket").
//!
//! One channel per (device, stream) that sends readings (JSON, with a JSON Schema of its
//! fields), and per (device, stream) of camera frames one `foxglove.CompressedImage` channel
//! (frames with a picture) and one `foxglove.ImageAnnotations` channel (their detections, with
//! exactly the frame's timestamp). Channel ids are the hub's, stable while it runs; a client
//! is told of every channel the store holds when it connects, and of each new one as its first
//! record arrives.
//!
//! Each client has its own [`Lane`]: messages queue in order (a client more than
//! [`CLIENT_QUEUE`] behind is dropped), pictures are latest-only per channel, and the `time`
//! message is latest-only too. Nothing a client sends or fails to read slows ingest: clients
//! read the live feed, which the writer never waits for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::live::{Committed, Lane};
use crate::record::Record;

/// The subprotocols spoken, in order of preference: the SDK's name and the older one (the
/// same protocol).
pub(crate) const SUBPROTOCOLS: [&str; 2] = ["foxglove.sdk.v1", "foxglove.websocket.v1"];
/// Messages a client may fall behind before it is dropped (pictures and time not counted:
/// they are latest-only).
pub(crate) const CLIENT_QUEUE: usize = 4096;
/// Most subscriptions one client holds.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 4096;
/// Largest message a client may send (its subscribe requests): a larger one closes it.
pub(crate) const MAX_CLIENT_MESSAGE: usize = 256 * 1024;
/// Clients at once; one more is told 503.
pub(crate) const MAX_CLIENTS: usize = 64;
/// Web pages that may open the WebSocket on a hub without a token: the Foxglove app's.
pub(crate) const APP_ORIGINS: [&str; 2] =
    ["https://app.foxglove.dev", "https://studio.foxglove.dev"];
/// How often the hub's time is sent.
const TIME_EVERY: Duration = Duration::from_millis(100);

/// What a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A stream's readings: numbers and text states, as one JSON object.
    Readings,
    /// Camera pictures, `foxglove.CompressedImage`.
    Image,
    /// Detections on them, `foxglove.ImageAnnotations`.
    Annotations,
}

/// One advertised channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) id: u32,
    /// Its entry in an `advertise` message.
    advert: Value,
}

type ChannelKey = (Arc<str>, Arc<str>, Kind);

/// The hub's channels, shared by every client.
pub(crate) struct Channels {
    registry: Mutex<Registry>,
    /// Filled from the store once, when the first client connects.
    loaded: tokio::sync::OnceCell<()>,
    /// Changes whenever the hub starts: a client seeing a new one forgets what it knew.
    pub(crate) session: String,
    /// Turns for clients.
    pub(crate) clients: Arc<tokio::sync::Semaphore>,
    /// Channels withdrawn (their streams retired): every client unadvertises those it knew.
    withdrawn: tokio::sync::broadcast::Sender<Arc<Vec<u32>>>,
}

#[derive(Default)]
struct Registry {
    next: u32,
    by_key: HashMap<ChannelKey, Arc<Channel>>,
    by_id: HashMap<u32, Arc<Channel>>,
}

impl Channels {
    pub(crate) fn new() -> anyhow::Result<Channels> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Channels {
            registry: Mutex::new(Registry {
                next: 1,
                ..Registry::default()
            }),
            loaded: tokio::sync::OnceCell::new(),
            session: id.iter().map(|b| format!("{b:02x}")).collect(),
            clients: Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS)),
            withdrawn: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// Withdraws the channels of retired (device, stream) pairs: gone from the registry (a
    /// new client is not told of them) and unadvertised to every client that was.
    pub(crate) fn retire(&self, streams: &[(String, String)]) {
        let mut ids = Vec::new();
        {
            let mut registry = self.registry();
            for (device, stream) in streams {
                for kind in [Kind::Readings, Kind::Image, Kind::Annotations] {
                    let key: ChannelKey = (device.as_str().into(), stream.as_str().into(), kind);
                    if let Some(channel) = registry.by_key.remove(&key) {
                        registry.by_id.remove(&channel.id);
                        ids.push(channel.id);
                    }
                }
            }
        }
        if !ids.is_empty() {
            let _ = self.withdrawn.send(Arc::new(ids));
        }
    }

    /// The (device, stream) a channel carries.
    fn stream_of(&self, id: u32) -> Option<(Arc<str>, Arc<str>)> {
        let registry = self.registry();
        registry
            .by_key
            .iter()
            .find(|(_, channel)| channel.id == id)
            .map(|((device, stream, _), _)| (Arc::clone(device), Arc::clone(stream)))
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The channel of `kind` for `device`'s `stream`, made if new (`fields` give a readings
    /// channel's schema: numeric ones, then text ones).
    fn channel(
        &self,
        device: &Arc<str>,
        stream: &Arc<str>,
        kind: Kind,
        fields: impl FnOnce() -> (Vec<String>, Vec<String>),
    ) -> Arc<Channel> {
        let key = (Arc::clone(device), Arc::clone(stream), kind);
        let mut registry = self.registry();
        if let Some(channel) = registry.by_key.get(&key) {
            return Arc::clone(channel);
        }
        let id = registry.next;
        registry.next += 1;
        let spec = ChannelSpec::new(device, stream, kind, fields);
        let channel = Arc::new(Channel {
            id,
            advert: json!({
                "id": id,
                "topic": spec.topic,
                "encoding": "json",
                "schemaName": spec.schema_name,
                "schema": spec.schema,
                "schemaEncoding": "jsonschema",
            }),
        });
        registry.by_key.insert(key, Arc::clone(&channel));
        registry.by_id.insert(id, Arc::clone(&channel));
        channel
    }

    fn known(&self, id: u32) -> bool {
        self.registry().by_id.contains_key(&id)
    }

    fn all(&self) -> Vec<Arc<Channel>> {
        let mut all: Vec<_> = self.registry().by_id.values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Channels for what the store holds (once per hub run).
    async fn load(&self, store: &crate::store::Store) {
        self.loaded
            .get_or_init(|| async {
                let Ok(devices) = store.devices().await else {
                    return;
                };
                for device in devices {
                    let Ok(Some(streams)) = store.streams(device.name.clone()).await else {
                        continue;
                    };
                    let name: Arc<str> = device.name.as_str().into();
                    let mut texts: HashMap<&str, Vec<String>> = HashMap::new();
                    for text in &streams.texts {
                        texts
                            .entry(text.stream.as_str())
                            .or_default()
                            .push(text.field.clone());
                    }
                    for values in &streams.values {
                        let stream: Arc<str> = values.stream.as_str().into();
                        let text = texts.remove(values.stream.as_str()).unwrap_or_default();
                        self.channel(&name, &stream, Kind::Readings, || {
                            (values.fields.clone(), text)
                        });
                    }
                    for (stream, text) in texts {
                        let stream: Arc<str> = stream.into();
                        self.channel(&name, &stream, Kind::Readings, || (Vec::new(), text));
                    }
                    for frames in &streams.frames {
                        let stream: Arc<str> = frames.stream.as_str().into();
                        self.channel(&name, &stream, Kind::Annotations, Default::default);
                        if frames.images > 0 {
                            self.channel(&name, &stream, Kind::Image, Default::default);
                        }
                    }
                }
            })
            .await;
    }
}

/// A channel as Foxglove and MCAP see it: its topic and its schema (JSON Schema; messages are
/// JSON).
pub(crate) struct ChannelSpec {
    pub(crate) topic: String,
    pub(crate) schema_name: &'static str,
    pub(crate) schema: String,
}

impl ChannelSpec {
    /// The channel of `kind` for `device`'s `stream` (`fields`: a readings channel's numeric
    /// and text fields, for its schema).
    pub(crate) fn new(
        device: &str,
        stream: &str,
        kind: Kind,
        fields: impl FnOnce() -> (Vec<String>, Vec<String>),
    ) -> ChannelSpec {
        match kind {
            Kind::Readings => {
                let (numbers, texts) = fields();
                ChannelSpec {
                    topic: topic(device, stream, ""),
                    schema_name: "socketeer.Reading",
                    schema: readings_schema(&numbers, &texts),
                }
            }
            Kind::Image => ChannelSpec {
                topic: topic(device, stream, "/image"),
                schema_name: "foxglove.CompressedImage",
                schema: COMPRESSED_IMAGE_SCHEMA.to_owned(),
            },
            Kind::Annotations => ChannelSpec {
                topic: topic(device, stream, "/annotations"),
                schema_name: "foxglove.ImageAnnotations",
                schema: IMAGE_ANNOTATIONS_SCHEMA.to_owned(),
            },
        }
    }
}

/// `/DEVICE/STREAM` + `suffix` (a ROS-style stream, `/robot/imu`, is not doubled: `/rover/robot/imu`).
fn topic(device: &str, stream: &str, suffix: &str) -> String {
    let stream = stream.strip_prefix('/').unwrap_or(stream);
    format!("/{device}/{stream}{suffix}")
}

/// A readings channel's JSON Schema: its fields, dotted names as nested objects.
fn readings_schema(numbers: &[String], texts: &[String]) -> String {
    let mut root = serde_json::Map::new();
    let typed = numbers
        .iter()
        .map(|f| (f, "number"))
        .chain(texts.iter().map(|f| (f, "string")));
    for (field, kind) in typed {
        let mut properties = &mut root;
        let mut parts = field.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                properties
                    .entry(part)
                    .or_insert_with(|| json!({ "type": kind }));
                break;
            }
            let inner = properties
                .entry(part)
                .or_insert_with(|| json!({ "type": "object", "properties": {} }));
            let Some(inner) = inner.get_mut("properties").and_then(Value::as_object_mut) else {
                break; // a number and an object of the same name: keep the first
            };
            properties = inner;
        }
    }
    json!({
        "title": "socketeer.Reading",
        "description": "A device's readings on one stream: numbers and text states",
        "type": "object",
        "properties": root,
    })
    .to_string()
}

/// The JSON Schema of `foxglove.CompressedImage` (the Foxglove schema's field names).
const COMPRESSED_IMAGE_SCHEMA: &str = r#"{"title":"foxglove.CompressedImage","description":"A compressed image","type":"object","properties":{"timestamp":{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}},"description":"Timestamp of image"},"frame_id":{"type":"string","description":"Frame of reference for the image"},"data":{"type":"string","contentEncoding":"base64","description":"Compressed image data"},"format":{"type":"string","description":"Image format: jpeg or png"}},"required":["timestamp","frame_id","data","format"]}"#;

/// The JSON Schema of `foxglove.ImageAnnotations` (the Foxglove schema's field names).
const IMAGE_ANNOTATIONS_SCHEMA: &str = r##"{"title":"foxglove.ImageAnnotations","description":"Array of annotations for a 2D image","type":"object","$defs":{"time":{"type":"object","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}}},"point2":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}}},"color":{"type":"object","properties":{"r":{"type":"number"},"g":{"type":"number"},"b":{"type":"number"},"a":{"type":"number"}}},"pair":{"type":"object","properties":{"key":{"type":"string"},"value":{"type":"string"}}}},"properties":{"circles":{"type":"array","items":{"type":"object","properties":{"timestamp":{"$ref":"#/$defs/time"},"position":{"$ref":"#/$defs/point2"},"diameter":{"type":"number"},"thickness":{"type":"number"},"fill_color":{"$ref":"#/$defs/color"},"outline_color":{"$ref":"#/$defs/color"}}}},"points":{"type":"array","items":{"type":"object","properties":{"timestamp":{"$ref":"#/$defs/time"},"type":{"type":"integer","description":"0 UNKNOWN, 1 POINTS, 2 LINE_LOOP, 3 LINE_STRIP, 4 LINE_LIST"},"points":{"type":"array","items":{"$ref":"#/$defs/point2"}},"outline_color":{"$ref":"#/$defs/color"},"outline_colors":{"type":"array","items":{"$ref":"#/$defs/color"}},"fill_color":{"$ref":"#/$defs/color"},"thickness":{"type":"number"},"metadata":{"type":"array","items":{"$ref":"#/$defs/pair"}}}}},"texts":{"type":"array","items":{"type":"object","properties":{"timestamp":{"$ref":"#/$defs/time"},"position":{"$ref":"#/$defs/point2"},"text":{"type":"string"},"font_size":{"type":"number"},"text_color":{"$ref":"#/$defs/color"},"background_color":{"$ref":"#/$defs/color"}}}},"metadata":{"type":"array","items":{"$ref":"#/$defs/pair"}}},"required":["circles","points","texts"]}"##;

/// A record's Foxglove messages (payloads; each client adds its own subscription id).
#[derive(Debug, Default)]
pub(crate) struct Payloads {
    readings: Option<(Arc<Channel>, Bytes)>,
    image: Option<(Arc<Channel>, Bytes)>,
    annotations: Option<(Arc<Channel>, Bytes)>,
    /// Its time in nanoseconds.
    time_ns: u64,
}

/// Unix seconds as nanoseconds, to the microsecond: a time near 2027 held in an f64 is only
/// good to about a quarter of a microsecond, so `…01.05` is `…01.050000000`, not the binary
/// neighbour's `…01.049999952`.
pub(crate) fn nanos(ts: f64) -> u64 {
    // Timestamps are checked to lie in 2000..2100: positive, and far from u64's end.
    let ts = ts.max(0.0);
    let secs = ts.floor();
    let micros = ((ts - secs) * 1e6).round() as u64;
    secs as u64 * 1_000_000_000 + micros * 1000
}

/// The messages of a committed record, and the channels they go on (made as they appear).
pub(crate) fn payloads(channels: &Channels, event: &Committed) -> Payloads {
    let record: &Record = &event.record;
    let mut out = Payloads {
        time_ns: nanos(event.ts),
        ..Payloads::default()
    };
    if !record.values.is_empty() || !record.texts.is_empty() {
        let channel = channels.channel(&event.device, &event.stream, Kind::Readings, || {
            (
                record.values.iter().map(|(f, _)| f.clone()).collect(),
                record.texts.iter().map(|(f, _)| f.clone()).collect(),
            )
        });
        let typed = record
            .values
            .iter()
            .map(|(f, v)| (f.as_str(), Value::from(*v)))
            .chain(
                record
                    .texts
                    .iter()
                    .map(|(f, t)| (f.as_str(), Value::from(t.as_str()))),
            );
        out.readings = Some((channel, readings_payload(typed)));
    }
    if let Some(frame) = &record.frame {
        if let Some(image) = &frame.image {
            let channel =
                channels.channel(&event.device, &event.stream, Kind::Image, Default::default);
            let message = image_payload(&event.stream, event.ts, image.format.name(), &image.data);
            out.image = Some((channel, message));
        }
        let channel = channels.channel(
            &event.device,
            &event.stream,
            Kind::Annotations,
            Default::default,
        );
        let size = (frame.width, frame.height);
        out.annotations = Some((
            channel,
            annotations_payload(event.ts, size, &frame.detections),
        ));
    }
    out
}

/// A readings message: the fields as one object, dotted names nested.
pub(crate) fn readings_payload<'a>(fields: impl Iterator<Item = (&'a str, Value)>) -> Bytes {
    let mut object = serde_json::Map::new();
    for (field, value) in fields {
        nest(&mut object, field, value);
    }
    Bytes::from(Value::Object(object).to_string())
}

/// `{"sec":S,"nsec":N}` of Unix seconds `ts` (JSON time, as Foxglove's schemas have it).
fn stamp(ts: f64) -> String {
    let ns = nanos(ts);
    format!(
        r#"{{"sec":{},"nsec":{}}}"#,
        ns / 1_000_000_000,
        ns % 1_000_000_000
    )
}

/// A `foxglove.CompressedImage` message (written out directly: the picture's base64 is most
/// of it).
pub(crate) fn image_payload(stream: &str, ts: f64, format: &str, data: &[u8]) -> Bytes {
    let frame_id = Value::from(stream);
    let format = Value::from(format);
    let mut out = String::with_capacity(128 + data.len() * 4 / 3);
    out.push_str(r#"{"timestamp":"#);
    out.push_str(&stamp(ts));
    out.push_str(r#","frame_id":"#);
    out.push_str(&frame_id.to_string());
    out.push_str(r#","data":""#);
    base64::engine::general_purpose::STANDARD.encode_string(data, &mut out);
    out.push_str(r#"","format":"#);
    out.push_str(&format.to_string());
    out.push('}');
    Bytes::from(out)
}

/// A `foxglove.ImageAnnotations` message: a box and a label per detection, at the frame's time.
/// The schema's `metadata` (key-value pairs, 2026) keeps what the drawing cannot: the frame's
/// size, each box's exact label and score — so a recording can be imported back whole.
/// Written out directly (not built as a JSON tree): recordings make one per stored frame.
pub(crate) fn annotations_payload(
    ts: f64,
    (width, height): (u32, u32),
    detections: &[crate::record::Detection],
) -> Bytes {
    use std::fmt::Write as _;
    const BOX: &str = r#"{"r":0.25,"g":0.85,"b":0.35,"a":1}"#;
    const CLEAR: &str = r#"{"r":0,"g":0,"b":0,"a":0}"#;
    const INK: &str = r#"{"r":0,"g":0,"b":0,"a":1}"#;
    let stamp = stamp(ts);
    // Coordinates and scores are finite (checked on the way in): Rust's shortest form of a
    // finite f64 is a JSON number.
    let mut out = String::with_capacity(48 + detections.len() * 480);
    out.push_str(r#"{"circles":[],"points":["#);
    for (i, d) in detections.iter().enumerate() {
        let [x, y, w, h] = d.bbox;
        let (right, bottom) = (x + w, y + h);
        let label = Value::from(d.label.as_str());
        let score = Value::from(d.score.to_string());
        let _ = write!(
            out,
            r#"{}{{"timestamp":{stamp},"type":2,"points":[{{"x":{x},"y":{y}}},{{"x":{right},"y":{y}}},{{"x":{right},"y":{bottom}}},{{"x":{x},"y":{bottom}}}],"outline_color":{BOX},"outline_colors":[],"fill_color":{CLEAR},"thickness":2,"metadata":[{{"key":"label","value":{label}}},{{"key":"score","value":{score}}}]}}"#,
            if i > 0 { "," } else { "" }
        );
    }
    out.push_str(r#"],"texts":["#);
    for (i, d) in detections.iter().enumerate() {
        let text = Value::from(format!("{} {:.2}", d.label, d.score));
        let _ = write!(
            out,
            r#"{}{{"timestamp":{stamp},"position":{{"x":{},"y":{}}},"text":{text},"font_size":14,"text_color":{INK},"background_color":{BOX}}}"#,
            if i > 0 { "," } else { "" },
            d.bbox[0],
            d.bbox[1]
        );
    }
    let _ = write!(
        out,
        r#"],"metadata":[{{"key":"width","value":"{width}"}},{{"key":"height","value":"{height}"}}]}}"#
    );
    Bytes::from(out)
}

/// Puts `value` at the dotted path `field` (a clash with a value already there keeps the
/// dotted name as it is).
fn nest(object: &mut serde_json::Map<String, Value>, field: &str, value: Value) {
    let Some((head, rest)) = field.split_once('.') else {
        object.insert(field.to_owned(), value);
        return;
    };
    match object
        .entry(head)
        .or_insert_with(|| Value::Object(serde_json::Map::new()))
    {
        Value::Object(inner) => nest(inner, rest, value),
        _ => {
            object.insert(field.to_owned(), value);
        }
    }
}

/// What a client's lane holds latest-only, by: a channel's pictures, and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Latest {
    Picture(u32),
    Time,
}

/// `GET /foxglove`: the WebSocket, if the client offers a Foxglove subprotocol.
pub(crate) async fn upgrade(
    axum::extract::State(api): axum::extract::State<Arc<crate::http::Api>>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = ws
        .protocols(SUBPROTOCOLS)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "Missing expected sec-websocket-protocol header: offer foxglove.sdk.v1 or \
             foxglove.websocket.v1\n",
        )
            .into_response();
    }
    let Ok(turn) = Arc::clone(&api.foxglove.clients).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_CLIENTS} Foxglove clients are connected already\n"),
        )
            .into_response();
    };
    ws.on_upgrade(move |socket| async move {
        serve(socket, api).await;
        drop(turn);
    })
}

/// A status message for the client (`level` 0 info, 1 warning, 2 error).
fn status(level: u8, message: impl Into<String>) -> Message {
    let message: String = message.into();
    Message::Text(
        json!({ "op": "status", "level": level, "message": message })
            .to_string()
            .into(),
    )
}

/// One client: its subscriptions, what it has been told, its lane.
struct Client {
    lane: Arc<Lane<Latest, Message>>,
    /// Channels it has been told of.
    advertised: HashSet<u32>,
    /// Subscription id → channel id, and each channel's subscriptions.
    subscriptions: HashMap<u32, u32>,
    by_channel: HashMap<u32, Vec<u32>>,
}

/// The client fell further behind than its queue.
struct TooSlow;

impl Client {
    fn send(&self, message: Message) -> Result<(), TooSlow> {
        self.lane.push(message).map_err(|_| TooSlow)
    }

    /// Advertises `channels` it has not been told of yet.
    fn advertise<'a>(
        &mut self,
        channels: impl IntoIterator<Item = &'a Arc<Channel>>,
    ) -> Result<(), TooSlow> {
        let fresh: Vec<&Value> = channels
            .into_iter()
            .filter(|c| self.advertised.insert(c.id))
            .map(|c| &c.advert)
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let message = json!({ "op": "advertise", "channels": fresh }).to_string();
        self.send(Message::Text(message.into()))
    }

    /// Unadvertises the channels of `ids` it was told of, and drops its subscriptions to them.
    fn unadvertise(&mut self, ids: &[u32]) -> Result<(), TooSlow> {
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| self.advertised.remove(id))
            .collect();
        if known.is_empty() {
            return Ok(());
        }
        for id in &known {
            for subscription in self.by_channel.remove(id).unwrap_or_default() {
                self.subscriptions.remove(&subscription);
            }
        }
        let message = json!({ "op": "unadvertise", "channelIds": known }).to_string();
        self.send(Message::Text(message.into()))
    }

    /// The record's messages for the subscriptions it has.
    fn deliver(&mut self, payloads: &Payloads) -> Result<(), TooSlow> {
        let parts = [&payloads.readings, &payloads.annotations, &payloads.image];
        self.advertise(parts.iter().filter_map(|p| p.as_ref().map(|(c, _)| c)))?;
        for (i, part) in parts.into_iter().enumerate() {
            let Some((channel, payload)) = part else {
                continue;
            };
            let Some(subscriptions) = self.by_channel.get(&channel.id) else {
                continue;
            };
            for &subscription in subscriptions {
                self.put(i == 2, subscription, payloads.time_ns, payload)?;
            }
        }
        Ok(())
    }

    /// One message for one subscription: a picture latest-only, anything else queued.
    fn put(
        &self,
        picture: bool,
        subscription: u32,
        time_ns: u64,
        payload: &[u8],
    ) -> Result<(), TooSlow> {
        let message = message_data(subscription, time_ns, payload);
        if picture {
            self.lane
                .push_latest(Latest::Picture(subscription), message);
            Ok(())
        } else {
            self.send(message)
        }
    }

    /// A new subscription's first message: its stream's newest record (from this node or,
    /// with a bus, any), so a client sees every channel at once, not at its next record.
    fn first(
        &mut self,
        channels: &Channels,
        newest: &crate::live::Newest,
        channel: u32,
        subscription: u32,
    ) -> Result<(), TooSlow> {
        let Some((device, stream)) = channels.stream_of(channel) else {
            return Ok(());
        };
        let Some(event) = newest.get(&device, &stream) else {
            return Ok(());
        };
        let payloads = event.foxglove.get_or_init(|| payloads(channels, &event));
        let parts = [&payloads.readings, &payloads.annotations, &payloads.image];
        for (i, part) in parts.into_iter().enumerate() {
            let Some((c, payload)) = part else { continue };
            if c.id != channel {
                continue;
            }
            self.put(i == 2, subscription, payloads.time_ns, payload)?;
        }
        Ok(())
    }

    /// A message from the client: subscribe and unsubscribe; anything else is answered with a
    /// status message.
    fn request(
        &mut self,
        channels: &Channels,
        newest: &crate::live::Newest,
        text: &str,
    ) -> Result<(), TooSlow> {
        let request: Value = match serde_json::from_str(text) {
            Ok(Value::Object(request)) => Value::Object(request),
            Ok(_) => return self.send(status(2, "a message must be a JSON object with \"op\"")),
            Err(e) => return self.send(status(2, format!("not valid JSON: {e}"))),
        };
        match request.get("op").and_then(Value::as_str) {
            Some("subscribe") => {
                let Some(list) = request.get("subscriptions").and_then(Value::as_array) else {
                    return self.send(status(
                        2,
                        "subscribe needs \"subscriptions\": [{id, channelId}]",
                    ));
                };
                for entry in list {
                    let id = entry
                        .get("id")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok());
                    let channel = entry
                        .get("channelId")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok());
                    let (Some(id), Some(channel)) = (id, channel) else {
                        self.send(status(
                            2,
                            "a subscription is {\"id\": u32, \"channelId\": u32}",
                        ))?;
                        continue;
                    };
                    if self.subscriptions.contains_key(&id) {
                        self.send(status(2, format!("subscription id {id} is in use")))?;
                    } else if !channels.known(channel) {
                        self.send(status(2, format!("no channel {channel}")))?;
                    } else if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                        self.send(status(
                            2,
                            format!("at most {MAX_SUBSCRIPTIONS} subscriptions; {id} refused"),
                        ))?;
                    } else {
                        self.subscriptions.insert(id, channel);
                        let on_channel = self.by_channel.entry(channel).or_default();
                        on_channel.push(id);
                        // Its first subscription to the channel only: thousands of them to
                        // one channel cannot make the hub queue thousands of copies at once.
                        if on_channel.len() == 1 {
                            self.first(channels, newest, channel, id)?;
                        }
                    }
                }
                Ok(())
            }
            Some("unsubscribe") => {
                let Some(list) = request.get("subscriptionIds").and_then(Value::as_array) else {
                    return self.send(status(2, "unsubscribe needs \"subscriptionIds\": [..]"));
                };
                for id in list {
                    let Some(id) = id.as_u64().and_then(|n| u32::try_from(n).ok()) else {
                        continue;
                    };
                    if let Some(channel) = self.subscriptions.remove(&id) {
                        if let Some(ids) = self.by_channel.get_mut(&channel) {
                            ids.retain(|&s| s != id);
                            if ids.is_empty() {
                                self.by_channel.remove(&channel);
                            }
                        }
                    }
                }
                Ok(())
            }
            Some(op) => {
                let op: String = op.chars().take(64).collect();
                self.send(status(
                    1,
                    format!("op {op:?} is not supported by this server"),
                ))
            }
            None => self.send(status(2, "a message needs \"op\"")),
        }
    }
}

/// A `messageData` frame: opcode 1, the subscription, the time, the payload.
fn message_data(subscription: u32, time_ns: u64, payload: &[u8]) -> Message {
    let mut frame = BytesMut::with_capacity(13 + payload.len());
    frame.put_u8(0x01);
    frame.put_u32_le(subscription);
    frame.put_u64_le(time_ns);
    frame.put_slice(payload);
    Message::Binary(frame.freeze())
}

async fn serve(socket: WebSocket, api: Arc<crate::http::Api>) {
    let channels = &api.foxglove;
    let mut events = api.live.subscribe();
    let mut withdrawn = channels.withdrawn.subscribe();
    channels.load(&api.ingest.store).await;
    let lane: Arc<Lane<Latest, Message>> = Arc::new(Lane::new(CLIENT_QUEUE));
    let (mut sink, mut incoming) = socket.split();
    let deadline = api.body_deadline;
    let writer = tokio::spawn({
        let lane = Arc::clone(&lane);
        async move {
            while let Some(message) = lane.next().await {
                match tokio::time::timeout(deadline, sink.send(message)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            let _ = tokio::time::timeout(deadline, sink.close()).await;
        }
    });
    let mut client = Client {
        lane: Arc::clone(&lane),
        advertised: HashSet::new(),
        subscriptions: HashMap::new(),
        by_channel: HashMap::new(),
    };
    let info = json!({
        "op": "serverInfo",
        "name": "socketeer hub",
        "capabilities": ["time"],
        "supportedEncodings": [],
        "metadata": {},
        "sessionId": channels.session,
    });
    let mut ok = client.send(Message::Text(info.to_string().into())).is_ok()
        && client.advertise(&channels.all()).is_ok();
    let mut clock = tokio::time::interval(TIME_EVERY);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let shutdown = api.shutdown.clone();
    api.ingest
        .stats
        .foxglove_clients
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    while ok {
        tokio::select! {
            () = shutdown.triggered() => break,
            _ = clock.tick() => {
                let mut frame = BytesMut::with_capacity(9);
                frame.put_u8(0x02);
                frame.put_u64_le(nanos(crate::store::now_secs()));
                lane.push_latest(Latest::Time, Message::Binary(frame.freeze()));
            }
            event = events.recv() => match event {
                Ok(event) => {
                    let payloads = event.foxglove.get_or_init(|| payloads(channels, &event));
                    ok = client.deliver(payloads).is_ok();
                }
                Err(broadcast::error::RecvError::Lagged(_)) => ok = false,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            gone = withdrawn.recv() => match gone {
                Ok(ids) => ok = client.unadvertise(&ids).is_ok(),
                // Missed some: this client cannot tell which of its channels went.
                Err(broadcast::error::RecvError::Lagged(_)) => ok = false,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    ok = client.request(channels, &api.newest, &text).is_ok();
                }
                Some(Ok(Message::Binary(_))) => {
                    ok = client
                        .send(status(2, "this server takes no client messages (no clientPublish)"))
                        .is_ok();
                }
                Some(Err(e)) => {
                    // Over the size limit (or not WebSocket at all): said, then closed.
                    let (code, why) = if e.to_string().contains("too long") {
                        (1009, format!("a message is at most {MAX_CLIENT_MESSAGE} bytes"))
                    } else {
                        (1002, "not a WebSocket message".to_owned())
                    };
                    let close = axum::extract::ws::CloseFrame { code, reason: why.into() };
                    let _ = client.send(Message::Close(Some(close)));
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {} // ping and pong: answered by the WebSocket layer
            },
        }
    }
    if !ok {
        api.ingest
            .stats
            .foxglove_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        writer.abort();
    } else {
        lane.close();
        let _ = writer.await;
    }
    api.ingest
        .stats
        .foxglove_clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_json_with_a_box_and_a_label_per_detection() {
        let detections = [
            crate::record::Detection {
                label: "a \"quoted\" <label>".into(),
                score: 0.905,
                bbox: [1.5, 2.0, 10.0, 1e-3],
            },
            crate::record::Detection {
                label: "cart".into(),
                score: 0.5,
                bbox: [0.0, 0.0, 3.0, 4.0],
            },
        ];
        let text = annotations_payload(1_800_000_001.25, (640, 480), &detections);
        let v: Value = serde_json::from_slice(&text).expect("JSON");
        assert_eq!(v["circles"], json!([]));
        assert_eq!(v["points"].as_array().map(Vec::len), Some(2));
        let first = &v["points"][0];
        assert_eq!(first["type"], 2);
        assert_eq!(
            first["timestamp"],
            json!({"sec": 1_800_000_001u64, "nsec": 250_000_000})
        );
        let corners: Vec<(f64, f64)> = first["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| (p["x"].as_f64().expect("x"), p["y"].as_f64().expect("y")))
            .collect();
        assert_eq!(
            corners,
            [(1.5, 2.0), (11.5, 2.0), (11.5, 2.001), (1.5, 2.001)]
        );
        assert_eq!(v["texts"][0]["text"], "a \"quoted\" <label> 0.91");
        assert_eq!(v["texts"][1]["position"]["x"].as_f64(), Some(0.0));
        assert_eq!(nanos(1_800_000_001.05), 1_800_000_001_050_000_000);
        assert_eq!(nanos(1_800_000_001.999_999_9), 1_800_000_002_000_000_000);
        assert_eq!(
            first["metadata"],
            json!([{"key": "label", "value": "a \"quoted\" <label>"}, {"key": "score", "value": "0.905"}])
        );
        assert_eq!(
            v["metadata"],
            json!([{"key": "width", "value": "640"}, {"key": "height", "value": "480"}])
        );
        let none = annotations_payload(1_800_000_000.0, (2, 3), &[]);
        let v: Value = serde_json::from_slice(&none).expect("JSON");
        assert_eq!(v["points"], json!([]));
        assert_eq!(v["texts"], json!([]));
    }
}
