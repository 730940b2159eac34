//! `socketeer import EP FILE.mcap`: a recording's messages into a running hub, through the
//! normal ingest (authenticated, acknowledged, idempotent), as the robots it came from would
//! send them.
//!
//! Taken: JSON channels (their messages are readings: one object of numbers, text and nested
//! objects), `foxglove.CompressedImage` (a frame's picture) and `foxglove.ImageAnnotations` (its
//! boxes; a picture and the annotations with its timestamp become one record, as `export`
//! writes them). Other encodings are listed and skipped. The file is read as a stream, a record
//! at a time; each device gets one publisher whose session is named after the file's contents,
//! so importing the same file again is acknowledged and stores nothing twice.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use anyhow::Context;
use base64::Engine as _;
use serde_json::{Value, json};
use socketeer_hub::publisher::{
    Event, PublishError, Publisher, PublisherConfig, Recovered, Report,
};
use socketeer_hub::record::ImageFormat;

use crate::cli::ImportArgs;
use crate::export::counted;
use crate::failure::{UsageError, parse_endpoint};
use crate::guard::{client_options, default_device};

/// The longest record read from a file (an image of 16 MiB in base64, with room).
const MAX_RECORD: usize = 32 * 1024 * 1024;

/// What a channel carries, for import.
#[derive(Debug, Clone)]
enum Kind {
    Readings,
    Image,
    Annotations,
    /// Not taken: why.
    Skipped(String),
}

struct Channel {
    device: String,
    stream: String,
    kind: Kind,
    topic: String,
}

/// A frame's picture waiting for its annotations (they come right after it, same time).
struct Picture {
    device: String,
    stream: String,
    log_time: u64,
    format: ImageFormat,
    data: Vec<u8>,
}

pub(crate) async fn run(args: ImportArgs) -> anyhow::Result<i32> {
    let endpoint = parse_endpoint(&args.endpoint)?;
    if !endpoint.is_stream() {
        return Err(UsageError(format!("{endpoint}: import needs a stream endpoint")).into());
    }
    if let Some(device) = &args.as_device {
        if !socketeer::keys::valid_device_name(device) {
            return Err(UsageError(format!("--as {device:?}: not a device name")).into());
        }
    }
    // The flags, checked before anything is read (a per-device key file's lines are checked
    // as each device comes).
    if args.guard.key_file.is_none() || args.guard.device.is_some() {
        client_options(&args.guard, args.timeout)?;
    }
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("import: cannot read {}", args.file.display()))?;
    let session = session_of(&args.file)?;
    let mut reader = mcap::sans_io::LinearReader::new_with_options(
        mcap::sans_io::LinearReaderOptions::default().with_record_length_limit(MAX_RECORD),
    );
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    let mut schemas: HashMap<u16, (String, String)> = HashMap::new();
    let mut channels: HashMap<u16, Channel> = HashMap::new();
    let mut publishers: BTreeMap<String, Delivering> = BTreeMap::new();
    let mut skipped: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut picture: Option<Picture> = None;
    let mut images = 0u64;
    let what = || format!("import: {}", args.file.display());
    loop {
        let event = match reader.next_event() {
            None => break,
            Some(event) => {
                event.map_err(|e| anyhow::anyhow!("{}: not a whole MCAP file: {e}", what()))?
            }
        };
        let (opcode, data) = match event {
            mcap::sans_io::LinearReadEvent::ReadRequest(want) => {
                let buf = reader.insert(want);
                let read = file.read(buf).with_context(what)?;
                reader.notify_read(read);
                continue;
            }
            mcap::sans_io::LinearReadEvent::Record { opcode, data } => (opcode, data.to_vec()),
        };
        let record = mcap::parse_record(opcode, &data)
            .map_err(|e| anyhow::anyhow!("{}: a damaged record: {e}", what()))?;
        match record {
            mcap::records::Record::Schema { header, .. } => {
                schemas.insert(header.id, (header.name, header.encoding));
            }
            mcap::records::Record::Channel(channel) => {
                let schema = schemas
                    .get(&channel.schema_id)
                    .map(|(n, _)| n.as_str())
                    .unwrap_or("");
                let kind = match (channel.message_encoding.as_str(), schema) {
                    ("json", "foxglove.CompressedImage") => Kind::Image,
                    ("json", "foxglove.ImageAnnotations") => Kind::Annotations,
                    ("json", _) => Kind::Readings,
                    (encoding, schema) => Kind::Skipped(format!(
                        "{} messages{}",
                        if encoding.is_empty() {
                            "unencoded"
                        } else {
                            encoding
                        },
                        if schema.is_empty() {
                            String::new()
                        } else {
                            format!(" ({schema})")
                        }
                    )),
                };
                // `export` names the device and stream exactly in the channel's metadata; else the
                // topic says them.
                let (device, stream) = match (
                    channel.metadata.get("device"),
                    channel.metadata.get("stream"),
                    &args.as_device,
                ) {
                    (Some(device), Some(stream), None) => (device.clone(), stream.clone()),
                    (_, Some(stream), Some(device)) => (device.clone(), stream.clone()),
                    _ => names(&channel.topic, &kind, args.as_device.as_deref()),
                };
                channels.insert(
                    channel.id,
                    Channel {
                        device,
                        stream,
                        kind,
                        topic: channel.topic,
                    },
                );
            }
            mcap::records::Record::Message { header, data } => {
                let Some(channel) = channels.get(&header.channel_id) else {
                    continue;
                };
                if let Kind::Skipped(why) = &channel.kind {
                    skip(&mut skipped, &channel.topic, || why.clone());
                    continue;
                }
                let message: Value = match serde_json::from_slice(&data) {
                    Ok(message) => message,
                    Err(e) => {
                        skip(&mut skipped, &channel.topic, || {
                            format!("a message that is not JSON ({e})")
                        });
                        continue;
                    }
                };
                let ts = seconds(header.log_time);
                // A picture goes with the annotations right after it; anything else first
                // sends a picture waiting alone.
                let pairs = matches!(channel.kind, Kind::Annotations)
                    && picture.as_ref().is_some_and(|p| {
                        p.device == channel.device
                            && p.stream == channel.stream
                            && p.log_time == header.log_time
                    });
                if !pairs {
                    if let Some(alone) = picture.take() {
                        let publisher =
                            delivering(&mut publishers, &alone.device, &args, &session, &endpoint)?;
                        alone.send(publisher).await?;
                        images += 1;
                    }
                }
                let publisher =
                    delivering(&mut publishers, &channel.device, &args, &session, &endpoint)?;
                match &channel.kind {
                    Kind::Readings => {
                        let Value::Object(values) = message else {
                            skip(&mut skipped, &channel.topic, || {
                                "messages that are not JSON objects".into()
                            });
                            continue;
                        };
                        let line = json!({ "stream": channel.stream, "ts": ts, "values": values });
                        publisher.line(&line).await?;
                    }
                    Kind::Image => match image(&message) {
                        Some((format, data)) => {
                            picture = Some(Picture {
                                device: channel.device.clone(),
                                stream: channel.stream.clone(),
                                log_time: header.log_time,
                                format,
                                data,
                            });
                        }
                        None => skip(&mut skipped, &channel.topic, || {
                            "pictures that are not base64 JPEG or PNG".into()
                        }),
                    },
                    Kind::Annotations => {
                        let (size, detections) = annotations(&message);
                        let line = json!({ "stream": channel.stream, "ts": ts,
                            "frame": { "w": size.0, "h": size.1 }, "detections": detections });
                        match picture.take().filter(|_| pairs) {
                            Some(pic) => {
                                publisher.image(&line, pic.format, pic.data).await?;
                                images += 1;
                            }
                            None => publisher.line(&line).await?,
                        }
                    }
                    Kind::Skipped(_) => {}
                }
            }
            _ => {}
        }
    }
    if let Some(alone) = picture.take() {
        let publisher = delivering(&mut publishers, &alone.device, &args, &session, &endpoint)?;
        alone.send(publisher).await?;
        images += 1;
    }
    let mut acknowledged = 0;
    let mut refused = 0;
    let devices = publishers.len();
    for (device, delivering) in publishers {
        delivering.publisher.end()?;
        let report: Report = delivering
            .delivery
            .await
            .with_context(|| format!("import: {device}"))?;
        acknowledged += report.acknowledged;
        refused += report.refused + delivering.refused.get();
    }
    for (topic, (why, count)) in &skipped {
        errln!(
            "socketeer: import: {topic}: {count} {why} skipped (taken: JSON, foxglove.CompressedImage, foxglove.ImageAnnotations)"
        );
    }
    errln!(
        "socketeer: import: {} acknowledged ({images} with pictures) for {}, {refused} refused, {} skipped",
        counted(acknowledged, "record"),
        counted(devices as u64, "device"),
        skipped.values().map(|(_, n)| n).sum::<u64>()
    );
    Ok(if refused > 0 { 1 } else { 0 })
}

impl Picture {
    /// Sends it as a frame of its own (no annotations came with it).
    async fn send(self, publisher: &Delivering) -> anyhow::Result<()> {
        let line = json!({ "stream": self.stream, "ts": seconds(self.log_time) });
        publisher.image(&line, self.format, self.data).await
    }
}

/// Counts one message of `topic` skipped, for the reason `why` gives (once per topic).
fn skip(skipped: &mut BTreeMap<String, (String, u64)>, topic: &str, why: impl FnOnce() -> String) {
    skipped
        .entry(topic.to_owned())
        .or_insert_with(|| (why(), 0))
        .1 += 1;
}

/// One device's publisher.
struct Delivering {
    device: String,
    /// Records refused before sending.
    refused: std::cell::Cell<u64>,
    publisher: Publisher<()>,
    delivery: socketeer_hub::publisher::Delivery<()>,
}

impl Delivering {
    async fn line(&self, line: &Value) -> anyhow::Result<()> {
        let sent = self
            .publisher
            .publish(line.to_string().as_bytes(), ())
            .await;
        self.outcome(sent.map(|_| ()))
    }

    async fn image(
        &self,
        header: &Value,
        format: ImageFormat,
        data: Vec<u8>,
    ) -> anyhow::Result<()> {
        let sent = self
            .publisher
            .publish_image(header.to_string().as_bytes(), format, data.into(), ())
            .await;
        self.outcome(sent.map(|_| ()))
    }

    /// A record this side refuses (too long, an image too large) is reported and counted, and
    /// the import goes on; delivery having stopped ends it.
    fn outcome(&self, sent: Result<(), PublishError>) -> anyhow::Result<()> {
        match sent {
            Ok(()) => Ok(()),
            Err(PublishError::Invalid(why)) => {
                errln!(
                    "socketeer: import: {}: a record not sent: {why}",
                    self.device
                );
                self.refused.set(self.refused.get() + 1);
                Ok(())
            }
            Err(err) => Err(anyhow::anyhow!("import: {}: {err}", self.device)),
        }
    }
}

/// The publisher of `device`, started on first use.
fn delivering<'a>(
    publishers: &'a mut BTreeMap<String, Delivering>,
    device: &str,
    args: &ImportArgs,
    session: &str,
    endpoint: &socketeer::Endpoint,
) -> anyhow::Result<&'a Delivering> {
    if !publishers.contains_key(device) {
        let mut guard = args.guard.clone();
        if guard.key_file.is_some() {
            guard.device = Some(device.to_owned());
        }
        let mut config = PublisherConfig::new(endpoint.clone(), session);
        config.options = client_options(&guard, args.timeout)?;
        if guard.key_file.is_none() {
            config.device = Some(device.to_owned());
        }
        let name = device.to_owned();
        let (publisher, delivery) = Publisher::start(
            config,
            None,
            Recovered::default(),
            move |event| match event {
                Event::Refused { why, .. } => {
                    errln!("socketeer: import: {name}: refused by the hub: {why}")
                }
                Event::Clock { .. } => {}
                event => errln!("socketeer: import: {name}: {event}"),
            },
        );
        publishers.insert(
            device.to_owned(),
            Delivering {
                device: device.to_owned(),
                refused: std::cell::Cell::new(0),
                publisher,
                delivery,
            },
        );
    }
    Ok(&publishers[device])
}

/// (device, stream) of a topic: `/DEVICE/STREAM[/image|/annotations]` as `export` writes them,
/// or every topic as the device `as_device`'s (or this host's, for a topic of one part).
fn names(topic: &str, kind: &Kind, as_device: Option<&str>) -> (String, String) {
    let suffix = match kind {
        Kind::Image => "/image",
        Kind::Annotations => "/annotations",
        _ => "",
    };
    let topic = topic.strip_suffix(suffix).unwrap_or(topic);
    if let Some(device) = as_device {
        let stream = topic.strip_prefix('/').unwrap_or(topic);
        return (device.to_owned(), stream.to_owned());
    }
    let rest = topic.strip_prefix('/').unwrap_or(topic);
    match rest.split_once('/') {
        Some((device, stream))
            if socketeer::keys::valid_device_name(device) && !stream.is_empty() =>
        {
            (device.to_owned(), stream.to_owned())
        }
        _ => (default_device(), rest.to_owned()),
    }
}

/// Nanoseconds since 1970 as Unix seconds (to the nanosecond as far as an f64 holds it).
fn seconds(ns: u64) -> f64 {
    (ns / 1_000_000_000) as f64 + (ns % 1_000_000_000) as f64 / 1e9
}

/// A `foxglove.CompressedImage`'s picture: its format and bytes.
fn image(message: &Value) -> Option<(ImageFormat, Vec<u8>)> {
    let format = ImageFormat::from_name(message.get("format")?.as_str()?)?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(message.get("data")?.as_str()?)
        .ok()?;
    Some((format, data))
}

/// A `foxglove.ImageAnnotations`' frame size and detections: each `LINE_LOOP` of four points is
/// a box; its label and score from its metadata (as `export` writes them) or else from the
/// text at its corner (`LABEL SCORE`). The size from the metadata, or else what the boxes span.
fn annotations(message: &Value) -> ((u64, u64), Vec<Value>) {
    let meta = |v: &Value, key: &str| -> Option<String> {
        v.get("metadata")?
            .as_array()?
            .iter()
            .find(|p| p.get("key").and_then(Value::as_str) == Some(key))?
            .get("value")?
            .as_str()
            .map(str::to_owned)
    };
    let texts: Vec<&Value> = message
        .get("texts")
        .and_then(Value::as_array)
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    let mut detections = Vec::new();
    let (mut right, mut bottom) = (1.0f64, 1.0f64);
    for (i, loop_) in message
        .get("points")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let corners: Vec<(f64, f64)> = loop_
            .get("points")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get("x")?.as_f64()?, p.get("y")?.as_f64()?)))
            .collect();
        if loop_.get("type").and_then(Value::as_u64) != Some(2) || corners.len() != 4 {
            continue;
        }
        let (x0, y0) = corners
            .iter()
            .fold((f64::MAX, f64::MAX), |(a, b), &(x, y)| (a.min(x), b.min(y)));
        let (x1, y1) = corners
            .iter()
            .fold((f64::MIN, f64::MIN), |(a, b), &(x, y)| (a.max(x), b.max(y)));
        right = right.max(x1);
        bottom = bottom.max(y1);
        let text = texts
            .get(i)
            .and_then(|t| t.get("text"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let (text_label, text_score) = match text.rsplit_once(' ') {
            Some((label, score)) => (label.to_owned(), score.parse::<f64>().ok()),
            None => (text.to_owned(), None),
        };
        let label = meta(loop_, "label").unwrap_or(text_label);
        let score = meta(loop_, "score")
            .and_then(|s| s.parse::<f64>().ok())
            .or(text_score)
            .unwrap_or(1.0);
        detections
            .push(json!({ "label": label, "score": score, "box": [x0, y0, x1 - x0, y1 - y0] }));
    }
    let size = |key: &str, spanned: f64| {
        meta(message, key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(spanned.ceil() as u64)
            .max(1)
    };
    ((size("width", right), size("height", bottom)), detections)
}

/// The session a file's records go in: named after the file's contents (its size and the
/// hash of its first and last MiB), so the same recording imported again is the same session
/// and the hub stores nothing twice.
fn session_of(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("import: cannot read {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    hasher.update(&len.to_le_bytes());
    let mut buf = vec![0; 1 << 20];
    let n = file.read(&mut buf)?;
    hasher.update(&buf[..n]);
    if len > buf.len() as u64 {
        file.seek(SeekFrom::End(-(buf.len() as i64)))?;
        file.read_exact(&mut buf)?;
        hasher.update(&buf);
    }
    let hash = hasher.finalize();
    Ok(format!("mcap-{}", &hash.to_hex()[..16]))
}
