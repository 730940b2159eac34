//! What devices send the hub, checked: one JSON object per line (`docs/protocol.md`).
//!
//! Every size a device controls has a limit here, every number must be finite, every name is
//! checked against a small alphabet, and labels (free text) may not hold control characters —
//! they are stored as text and escaped wherever they are shown.

use serde_json::{Map, Value};

use crate::wire::{Reason, Refusal};

/// The longest JSON line accepted, in bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// Most values in one reading.
pub const MAX_VALUES: usize = 64;
/// Most detections in one frame.
pub const MAX_DETECTIONS: usize = 256;
/// Longest stream or field name, in bytes (a nested field's whole dotted path included).
pub const MAX_NAME: usize = 128;
/// Longest text state (`"mode":"RTK"`), in bytes.
pub const MAX_TEXT: usize = 256;
/// Deepest nesting of objects in `values` (`pose.position.x` is 3).
pub const MAX_DEPTH: usize = 8;
/// Longest unit (`m/s²`, `°C`, `%`), in bytes.
pub const MAX_UNIT: usize = 32;
/// Longest detection label, in bytes.
pub const MAX_LABEL: usize = 128;
/// Longest session id, in bytes.
pub const MAX_SESSION: usize = 64;
/// Largest frame side, in pixels.
pub const MAX_FRAME_SIDE: u64 = 65_536;
/// Timestamps must fall in [2000-01-01, 2100-01-01) in Unix seconds.
const TS_RANGE: std::ops::Range<f64> = 946_684_800.0..4_102_444_800.0;

/// One detected object: a label, a score in [0, 1], a box `[x, y, w, h]` in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// What was detected (free text, shown escaped).
    pub label: String,
    /// How sure the detector is, 0 to 1.
    pub score: f64,
    /// `[x, y, w, h]` in frame pixels.
    pub bbox: [f64; 4],
}

/// A camera frame: its size, what was found on it, and — when the robot sent it — the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// What was found on it.
    pub detections: Vec<Detection>,
    /// The image itself (a JPEG or PNG file's bytes), if sent.
    pub image: Option<Image>,
}

/// A camera image as sent: a JPEG or PNG file's bytes, checked to be what they say.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Its format.
    pub format: ImageFormat,
    /// The file's bytes.
    pub data: bytes::Bytes,
}

/// The image formats the hub takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG (`image/jpeg`).
    Jpeg,
    /// PNG (`image/png`).
    Png,
}

impl ImageFormat {
    /// Its name in a header (`jpeg`, `png`).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
        }
    }

    /// Its media type.
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }

    /// The format named `name` (`jpeg`/`jpg`, `png`; any case), if the hub takes it.
    pub fn from_name(name: &str) -> Option<ImageFormat> {
        match name.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(ImageFormat::Jpeg),
            "png" => Some(ImageFormat::Png),
            _ => None,
        }
    }

    /// The format of a media type (`image/jpeg`, `image/png`; parameters ignored).
    pub fn from_mime(mime: &str) -> Option<ImageFormat> {
        match mime
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
            "image/png" => Some(ImageFormat::Png),
            _ => None,
        }
    }
}

/// The largest image taken by default, in bytes (`HubConfig::max_image`).
pub const DEFAULT_MAX_IMAGE: usize = 4 * 1024 * 1024;

/// One record from a device: readings (`values`), detection results (`frame` and
/// `detections`), or both, for one stream at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The stream (`imu`, `/robot/imu`).
    pub stream: String,
    /// The device's own time (Unix seconds), if it sent one.
    pub ts: Option<f64>,
    /// Numbers by field name (booleans as 1 and 0).
    pub values: Vec<(String, f64)>,
    /// Text states (`"mode":"RTK"`), by field name; never a field of `values` too.
    pub texts: Vec<(String, String)>,
    /// Units of numeric fields of `values` (`"az"` → `"m/s²"`), as sent; a field's unit is
    /// kept until another is sent for it, so once per stream is enough.
    pub units: Vec<(String, String)>,
    /// A camera frame's detection results.
    pub frame: Option<Frame>,
    /// The number the device wants acknowledged; makes the record idempotent.
    pub seq: Option<u64>,
    /// The session the sequence number belongs to (else the connection's).
    pub session: Option<String>,
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A record to store.
    Record(Record),
    /// `{"session":"..."}` alone: the session for the connection's following records.
    Session(String),
    /// `{"time":{"t0":..}}` alone: a time exchange — a request (`t0` only, answered at once
    /// with the hub's `t1` and `t2`), or a completed one (`t0`..`t3`, taken, not answered).
    Time {
        /// The device's send time.
        t0: f64,
        /// The rest, once completed: the hub's receive and send times, the device's receive time.
        rest: Option<(f64, f64, f64)>,
    },
    /// `{"device":"..."}` alone: names the device on a connection whose authentication did not
    /// (no key, or one shared key answered tutorial-style). Refused where it did.
    Device(String),
    /// An image header, `"image":{"format":F,"bytes":N}`: the record (its frame without the
    /// image yet) and the N bytes of the image that follow the line at once.
    Image {
        /// The record the image belongs to.
        record: Record,
        /// The format announced.
        format: ImageFormat,
        /// How many bytes follow.
        len: u64,
    },
}

/// Parses and checks one line (without its line ending).
///
/// # Errors
/// What is wrong with it, for `{"error":...,"line":N}`, and the kind of fault.
pub fn parse_line(text: &str) -> Result<Line, Refusal> {
    if text.len() > MAX_LINE {
        return Err(too_long(format!("line longer than {MAX_LINE} bytes")));
    }
    if let Some(record) = plain_reading(text) {
        return Ok(Line::Record(record));
    }
    parse_value_line(text)
}

/// The line most devices send most of the time — `stream`, numeric `values`, and at most `ts`
/// (a number) and `seq` — read straight into a record without building JSON values first.
/// `None` for anything else or anything wrong, which [`parse_value_line`] then reads (and
/// refuses with its reason): for every line this accepts, the result is the same as that's
/// (a test compares the two).
fn plain_reading(text: &str) -> Option<Record> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain<'a> {
        #[serde(borrow)]
        stream: std::borrow::Cow<'a, str>,
        #[serde(default)]
        ts: Option<f64>,
        #[serde(default)]
        seq: Option<u64>,
        // Sorted, and the last of a repeated field wins: as in a parsed JSON object.
        #[serde(borrow)]
        values: Fields<'a>,
    }
    let plain: Plain<'_> = serde_json::from_str(text).ok()?;
    if plain.values.0.is_empty()
        || plain.values.0.len() > MAX_VALUES
        || plain.seq.is_some_and(|seq| seq > i64::MAX as u64)
    {
        return None;
    }
    let ts = match plain.ts {
        Some(number) => Some(unix_seconds(number)?),
        None => None,
    };
    let mut values = Vec::with_capacity(plain.values.0.len());
    for (field, number) in plain.values.0 {
        if !number.is_finite() {
            return None;
        }
        values.push((name(&field, "field").ok()?, number));
    }
    Some(Record {
        stream: name(&plain.stream, "stream").ok()?,
        ts,
        values,
        texts: Vec::new(),
        units: Vec::new(),
        frame: None,
        seq: plain.seq,
        session: None,
    })
}

/// A plain reading's numbers by field name, sorted by name, the last of a repeated name
/// winning: what a map gives, in one vector (a reading has a few fields; a tree allocated per
/// line cost more than sorting them).
struct Fields<'a>(Vec<(std::borrow::Cow<'a, str>, f64)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Fields<'a>, M::Error> {
                #[derive(serde::Deserialize)]
                struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
                let mut fields: Vec<(std::borrow::Cow<'a, str>, f64)> = Vec::with_capacity(8);
                while let Some((Key(key), number)) = map.next_entry::<Key<'a>, f64>()? {
                    fields.push((key, number));
                }
                // Stable: of a repeated name, the one sent last stays last, and wins.
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                fields.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        kept.1 = later.1;
                    }
                    same
                });
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Parses and checks one line through JSON values: every kind of line, every refusal.
fn parse_value_line(text: &str) -> Result<Line, Refusal> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            Reason::Json,
            if text.contains("NaN") || text.contains("Infinity") {
                format!("not valid JSON (NaN and Infinity are not numbers in JSON): {e}")
            } else {
                format!("not valid JSON: {e}")
            },
        )
    })?;
    let Value::Object(object) = value else {
        return Err(Refusal::new(Reason::Json, "a line must be one JSON object"));
    };
    if let Some(exchange) = object.get("time") {
        if object.len() > 1 {
            return Err(value_error("\"time\" goes on a line of its own"));
        }
        return time_exchange(exchange);
    }
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "stream"
                | "ts"
                | "values"
                | "units"
                | "frame"
                | "detections"
                | "seq"
                | "session"
                | "device"
                | "image"
        ) {
            return Err(Refusal::new(
                Reason::UnknownKey,
                format!(
                    "unknown key {:?} (known: stream, ts, values, units, frame, detections, image, \
                     seq, session)",
                    clip(key)
                ),
            ));
        }
    }
    let session = match object.get("session") {
        None => None,
        Some(Value::String(s)) => Some(session_id(s)?),
        Some(_) => return Err(value_error("\"session\" must be a string")),
    };
    if let Some(device) = object.get("device") {
        if object.len() > 1 {
            return Err(value_error(
                "\"device\" goes on a line of its own, before the records",
            ));
        }
        return match device {
            Value::String(s) => device_name(s).map(Line::Device),
            _ => Err(value_error("\"device\" must be a string")),
        };
    }
    if object.len() == 1 {
        if let Some(session) = session {
            return Ok(Line::Session(session));
        }
    }
    let stream = match object.get("stream") {
        Some(Value::String(s)) => name(s, "stream")?,
        Some(_) => return Err(value_error("\"stream\" must be a string")),
        None => return Err(value_error("missing \"stream\"")),
    };
    let ts = match object.get("ts") {
        None | Some(Value::Null) => None,
        Some(v) => Some(timestamp(v)?),
    };
    let seq = match object.get("seq") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| value_error("\"seq\" must be a whole number from 0 to 2^63-1"))?,
        ),
    };
    let (values, texts) = match object.get("values") {
        None => (Vec::new(), Vec::new()),
        Some(Value::Object(map)) => values(map)?,
        Some(_) => return Err(value_error("\"values\" must be an object of numbers")),
    };
    let units = match object.get("units") {
        None => Vec::new(),
        Some(Value::Object(map)) => units(map, &values)?,
        Some(_) => return Err(value_error(UNITS_SHAPE)),
    };
    let image = object.get("image").map(image_spec).transpose()?;
    let frame = match (object.get("frame"), object.get("detections")) {
        (None, None) if image.is_some() => Some(Frame::sized_by_image(Vec::new())),
        (None, None) => None,
        (Some(frame), detections) => Some(parse_frame(frame, detections)?),
        // With an image its size comes from the image.
        (None, Some(list)) if image.is_some() => Some(Frame::sized_by_image(detection_list(list)?)),
        (None, Some(_)) => {
            return Err(value_error(
                "\"detections\" need \"frame\":{\"w\":W,\"h\":H}",
            ));
        }
    };
    if image.is_none() && values.is_empty() && texts.is_empty() && frame.is_none() {
        return Err(value_error(
            "a record needs \"values\" or \"frame\" with \"detections\"",
        ));
    }
    let record = Record {
        stream,
        ts,
        values,
        texts,
        units,
        frame,
        seq,
        session,
    };
    Ok(match image {
        Some((format, len)) => Line::Image {
            record,
            format,
            len,
        },
        None => Line::Record(record),
    })
}

const UNITS_SHAPE: &str =
    "\"units\" must be an object of numeric fields and their units, e.g. {\"az\":\"m/s²\"}";

/// The units of `map`, each for a numeric field of `values` (by its dotted name when nested).
fn units(
    map: &Map<String, Value>,
    values: &[(String, f64)],
) -> Result<Vec<(String, String)>, Refusal> {
    let mut out = Vec::with_capacity(map.len());
    for (field, unit) in map {
        if !values.iter().any(|(name, _)| name == field) {
            return Err(value_error(format!(
                "\"units\" names {:?}, which is not a number in this record's \"values\"",
                clip(field)
            )));
        }
        let Value::String(unit) = unit else {
            return Err(value_error(UNITS_SHAPE));
        };
        if unit.is_empty() || unit.len() > MAX_UNIT || unit.chars().any(unshowable) {
            return Err(value_error(format!(
                "unit of {field:?}: 1 to {MAX_UNIT} bytes, without control, invisible or \
                 direction-changing characters"
            )));
        }
        out.push((field.clone(), unit.clone()));
    }
    Ok(out)
}

/// `{"t0":..}` or `{"t0","t1","t2","t3"}`: Unix seconds, finite, 2000 to 2100.
fn time_exchange(exchange: &Value) -> Result<Line, Refusal> {
    const SHAPE: &str = "\"time\" is {\"t0\":T} (a request) or {\"t0\",\"t1\",\"t2\",\"t3\"} (a completed exchange), in Unix seconds";
    let Value::Object(times) = exchange else {
        return Err(value_error(SHAPE));
    };
    let get = |key: &str| -> Result<Option<f64>, Refusal> {
        match times.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| TS_RANGE.contains(t))
                .map(Some)
                .ok_or_else(|| {
                    value_error(format!("time: {key} must be Unix seconds, 2000 to 2100"))
                }),
        }
    };
    if times
        .keys()
        .any(|k| !matches!(k.as_str(), "t0" | "t1" | "t2" | "t3"))
    {
        return Err(value_error(SHAPE));
    }
    let t0 = get("t0")?.ok_or_else(|| value_error(SHAPE))?;
    match (get("t1")?, get("t2")?, get("t3")?) {
        (None, None, None) => Ok(Line::Time { t0, rest: None }),
        (Some(t1), Some(t2), Some(t3)) => Ok(Line::Time {
            t0,
            rest: Some((t1, t2, t3)),
        }),
        _ => Err(value_error(SHAPE)),
    }
}

/// Numbers and text states, by field name.
type Readings = (Vec<(String, f64)>, Vec<(String, String)>);

/// The readings of `values`: numbers as they are, booleans as 1 and 0 (as the Influx path
/// stores them), short text as a text state, nested objects flattened to dotted names
/// (`{"pose":{"x":1}}` is `pose.x`).
fn values(map: &Map<String, Value>) -> Result<Readings, Refusal> {
    if map.is_empty() {
        return Err(value_error("\"values\" is empty"));
    }
    let mut out = (Vec::new(), Vec::new());
    flatten(map, "", 1, &mut out)?;
    Ok(out)
}

fn flatten(
    map: &Map<String, Value>,
    prefix: &str,
    depth: usize,
    out: &mut Readings,
) -> Result<(), Refusal> {
    for (key, value) in map {
        let field = if prefix.is_empty() {
            name(key, "field")?
        } else {
            // Each part is a name of its own; the whole path is checked too (its length).
            name(key, "field")?;
            name(&format!("{prefix}.{key}"), "field")?
        };
        let number = match value {
            Value::Object(inner) if depth >= MAX_DEPTH => {
                return Err(value_error(format!(
                    "value {field:?} nests objects deeper than {MAX_DEPTH} levels"
                )));
            }
            Value::Object(inner) if inner.is_empty() => {
                return Err(value_error(format!("value {field:?} is an empty object")));
            }
            Value::Object(inner) => {
                flatten(inner, &field, depth + 1, out)?;
                continue;
            }
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => n
                .as_f64()
                .filter(|n| n.is_finite())
                .ok_or_else(|| value_error(format!("value {field:?} must be a finite number")))?,
            Value::Array(_) => {
                return Err(value_error(format!(
                    "value {field:?} is a list; send each element as a field of its own \
                     ({{\"{field}\":{{\"0\":..,\"1\":..}}}})"
                )));
            }
            Value::String(text) => {
                if text.len() > MAX_TEXT || text.chars().any(unshowable) {
                    return Err(value_error(format!(
                        "value {field:?}: text states are at most {MAX_TEXT} bytes, without \
                         control, invisible or direction-changing characters"
                    )));
                }
                if out.0.len() + out.1.len() == MAX_VALUES {
                    return Err(too_many_values());
                }
                out.1.push((field, text.clone()));
                continue;
            }
            Value::Null => {
                return Err(value_error(format!(
                    "value {field:?} must be a number, true or false, text, or an object of them"
                )));
            }
        };
        if out.0.len() + out.1.len() == MAX_VALUES {
            return Err(too_many_values());
        }
        out.0.push((field, number));
    }
    Ok(())
}

fn parse_frame(frame: &Value, detections: Option<&Value>) -> Result<Frame, Refusal> {
    let side = |key: &str| -> Result<u32, Refusal> {
        frame
            .get(key)
            .and_then(Value::as_u64)
            .filter(|&n| (1..=MAX_FRAME_SIDE).contains(&n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                value_error(format!(
                    "\"frame\".{key} must be a whole number from 1 to {MAX_FRAME_SIDE}"
                ))
            })
    };
    if !frame.is_object() {
        return Err(value_error("\"frame\" must be {\"w\":W,\"h\":H}"));
    }
    let (width, height) = (side("w")?, side("h")?);
    let detections = match detections {
        None => Vec::new(),
        Some(list) => detection_list(list)?,
    };
    Ok(Frame {
        width,
        height,
        detections,
        image: None,
    })
}

fn detection_list(list: &Value) -> Result<Vec<Detection>, Refusal> {
    let Value::Array(list) = list else {
        return Err(value_error("\"detections\" must be a list"));
    };
    if list.len() > MAX_DETECTIONS {
        return Err(Refusal::new(
            Reason::TooMany,
            format!("more than {MAX_DETECTIONS} detections in one frame"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, d)| detection(d).map_err(|why| why.within(format_args!("detection {i}"))))
        .collect()
}

impl Frame {
    /// A frame whose size its image will give.
    fn sized_by_image(detections: Vec<Detection>) -> Frame {
        Frame {
            width: 0,
            height: 0,
            detections,
            image: None,
        }
    }
}

/// `"image":{"format":"jpeg","bytes":N}`: the format and how many bytes follow.
fn image_spec(value: &Value) -> Result<(ImageFormat, u64), Refusal> {
    const WHY: &str = "\"image\" must be {\"format\":\"jpeg\" or \"png\",\"bytes\":N}";
    let Value::Object(spec) = value else {
        return Err(value_error(WHY));
    };
    if let Some(key) = spec
        .keys()
        .find(|k| !matches!(k.as_str(), "format" | "bytes"))
    {
        return Err(Refusal::new(
            Reason::UnknownKey,
            format!(
                "unknown key {:?} in \"image\" (known: format, bytes)",
                clip(key)
            ),
        ));
    }
    let format = spec
        .get("format")
        .and_then(Value::as_str)
        .and_then(ImageFormat::from_name)
        .ok_or_else(|| value_error(WHY))?;
    Ok((format, announced(spec)?))
}

/// The `"bytes"` of an image header: a whole number from 1 (the cap is the hub's to check).
fn announced(spec: &Map<String, Value>) -> Result<u64, Refusal> {
    spec.get("bytes")
        .and_then(Value::as_u64)
        .filter(|&n| n >= 1)
        .ok_or_else(|| value_error("\"image\".bytes must be a whole number of bytes, at least 1"))
}

/// For a line that was refused: whether it announced image bytes that follow it — `Some(Ok(N))`
/// (skip N bytes to stay in step), `Some(Err(..))` (it announced some, but not how many a
/// reader can skip: the stream cannot be followed), or `None` (nothing follows).
pub fn announced_bytes(text: &str) -> Option<Result<u64, Refusal>> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    match object.get("image")? {
        Value::Object(spec) => Some(announced(spec)),
        _ => Some(Err(value_error(
            "\"image\" must be {\"format\":\"jpeg\" or \"png\",\"bytes\":N}",
        ))),
    }
}

/// Gives a frame header's record its image: `data` must be the format announced; the frame's
/// size comes from the image when the header did not say it.
///
/// # Errors
/// The bytes are not an image of that format, or its size cannot be read or is out of range.
pub fn attach_image(
    record: &mut Record,
    format: ImageFormat,
    data: bytes::Bytes,
) -> Result<(), Refusal> {
    let kind = match imagesize::image_type(&data) {
        Ok(imagesize::ImageType::Jpeg) => Some(ImageFormat::Jpeg),
        Ok(imagesize::ImageType::Png) => Some(ImageFormat::Png),
        _ => None,
    };
    if kind != Some(format) {
        return Err(value_error(format!(
            "the bytes after the header are not a {} image ({})",
            format.name(),
            match kind {
                Some(other) => format!("they are {}", other.name()),
                None => "neither JPEG nor PNG".to_owned(),
            }
        )));
    }
    let size = imagesize::blob_size(&data).map_err(|e| {
        value_error(format!(
            "the {} image's size cannot be read: {e}",
            format.name()
        ))
    })?;
    let side = |n: usize| {
        u32::try_from(n)
            .ok()
            .filter(|&n| n >= 1 && u64::from(n) <= MAX_FRAME_SIDE)
    };
    let (Some(width), Some(height)) = (side(size.width), side(size.height)) else {
        return Err(value_error(format!(
            "the image is {}x{}: each side must be 1 to {MAX_FRAME_SIDE}",
            size.width, size.height
        )));
    };
    let frame = record
        .frame
        .get_or_insert_with(|| Frame::sized_by_image(Vec::new()));
    if frame.width == 0 || frame.height == 0 {
        frame.width = width;
        frame.height = height;
    }
    frame.image = Some(Image { format, data });
    Ok(())
}

fn detection(value: &Value) -> Result<Detection, Refusal> {
    let Value::Object(object) = value else {
        return Err(value_error(
            "must be {\"label\":..,\"score\":..,\"box\":[x,y,w,h]}",
        ));
    };
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "label" | "score" | "box"))
    {
        return Err(Refusal::new(
            Reason::UnknownKey,
            format!("unknown key {:?}", clip(key)),
        ));
    }
    let label = match object.get("label") {
        Some(Value::String(s)) => label(s)?,
        _ => return Err(value_error("\"label\" must be a string")),
    };
    let score = object
        .get("score")
        .and_then(Value::as_f64)
        .filter(|s| (0.0..=1.0).contains(s))
        .ok_or_else(|| value_error("\"score\" must be a number from 0 to 1"))?;
    let numbers = object
        .get("box")
        .and_then(Value::as_array)
        .filter(|b| b.len() == 4)
        .ok_or_else(|| value_error("\"box\" must be [x, y, w, h]"))?;
    let mut bbox = [0.0; 4];
    for (slot, number) in bbox.iter_mut().zip(numbers) {
        *slot = number
            .as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| value_error("\"box\" must hold four finite numbers"))?;
    }
    if bbox[2] < 0.0 || bbox[3] < 0.0 {
        return Err(value_error("a box's width and height cannot be negative"));
    }
    Ok(Detection { label, score, bbox })
}

/// A timestamp as Unix seconds. Numbers may be seconds, milliseconds, microseconds or
/// nanoseconds since 1970: between 2000 and 2100 the four ranges do not overlap, so the unit
/// is known from the size. Text is RFC 3339 (`2026-12-04T15:00:00.250Z`).
///
/// # Errors
/// A value that is none of these, or out of range.
pub fn timestamp(value: &Value) -> Result<f64, Refusal> {
    const WHY: &str = "\"ts\" must be a time between 2000 and 2100: Unix seconds, \
                       milliseconds, microseconds or nanoseconds, or RFC 3339 text \
                       (or left out: the hub stamps receive time)";
    let seconds = match value {
        Value::String(text) => rfc3339(text).ok_or_else(|| value_error(WHY))?,
        other => other
            .as_f64()
            .and_then(unix_seconds)
            .ok_or_else(|| value_error(WHY))?,
    };
    Ok(seconds)
}

/// Unix seconds from a number in seconds, ms, µs or ns (told apart by size), if in range.
pub fn unix_seconds(number: f64) -> Option<f64> {
    [1.0, 1e3, 1e6, 1e9]
        .into_iter()
        .map(|per_second| number / per_second)
        .find(|seconds| TS_RANGE.contains(seconds))
}

/// Unix seconds from RFC 3339 text, if in range.
pub fn rfc3339(text: &str) -> Option<f64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let seconds = at.unix_timestamp_nanos() as f64 / 1e9;
    TS_RANGE.contains(&seconds).then_some(seconds)
}

/// A stream or field name: 1-128 bytes of letters, digits and `_ . : / -`, starting with a
/// letter, digit, `_`, or — as ROS topic names do (`/robot/imu`) — one `/`.
///
/// # Errors
/// Why the text is not a name.
pub fn name(text: &str, what: &str) -> Result<String, Refusal> {
    let body = text.strip_prefix('/').unwrap_or(text);
    let ok = !body.is_empty()
        && text.len() <= MAX_NAME
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Refusal::new(
            Reason::Name,
            format!(
                "bad {what} name {:?}: 1-{MAX_NAME} letters, digits, '_', '.', ':', '/', '-', \
                 starting with a letter, digit, '_' or '/' (ROS topics: /robot/imu)",
                clip(text)
            ),
        ))
    }
}

fn label(text: &str) -> Result<String, Refusal> {
    if text.is_empty() || text.len() > MAX_LABEL {
        return Err(value_error(format!(
            "\"label\" must be 1-{MAX_LABEL} bytes"
        )));
    }
    if text.chars().any(unshowable) {
        return Err(value_error(
            "\"label\" cannot hold control, invisible or direction-changing characters",
        ));
    }
    Ok(text.to_owned())
}

/// Characters that do not show as themselves: controls, and the invisible and direction-
/// changing ones that make text read other than it is (bidi embeddings, overrides and isolates,
/// zero-width characters and marks, line and paragraph separators, the byte-order mark).
pub fn unshowable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// A device name, by the rules of key files (`socketeer keygen --device`).
fn device_name(text: &str) -> Result<String, Refusal> {
    if socketeer::keys::valid_device_name(text) {
        Ok(text.to_owned())
    } else {
        Err(Refusal::new(
            Reason::Name,
            format!("bad device name {:?}", clip(text)),
        ))
    }
}

/// A session id: 1-64 of `A-Z a-z 0-9 _ . -`.
///
/// # Errors
/// Why the text is not one.
pub fn session_id(text: &str) -> Result<String, Refusal> {
    let ok = !text.is_empty()
        && text.len() <= MAX_SESSION
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Refusal::new(
            Reason::Name,
            format!(
                "bad session {:?}: 1-{MAX_SESSION} letters, digits, '_', '.', '-'",
                clip(text)
            ),
        ))
    }
}

fn value_error(why: impl Into<String>) -> Refusal {
    Refusal::new(Reason::Value, why)
}

fn too_long(why: String) -> Refusal {
    Refusal::new(Reason::TooLong, why)
}

fn too_many_values() -> Refusal {
    Refusal::new(
        Reason::TooMany,
        format!("more than {MAX_VALUES} values in one record"),
    )
}

/// A peer's text, shortened for an error message.
fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

/// One line as received (with its line ending, if any): `None` if blank, else the line or why
/// it is refused.
pub fn parse_raw_line(raw: &[u8]) -> Option<Result<Line, Refusal>> {
    let text = raw.strip_suffix(b"\n").unwrap_or(raw);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        std::str::from_utf8(text)
            .map_err(|_| Refusal::new(Reason::Utf8, "not UTF-8"))
            .and_then(parse_line),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn record(text: &str) -> Record {
        match parse_line(text) {
            Ok(Line::Record(record)) => record,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn error(text: &str) -> String {
        parse_line(text).expect_err(text).why
    }

    #[test]
    fn units_name_numeric_fields_of_the_record() {
        let r = record(
            r#"{"stream":"imu","values":{"az":9.8,"pose":{"x":1}},"units":{"az":"m/s²","pose.x":"m"}}"#,
        );
        assert_eq!(
            r.units,
            [
                ("az".to_owned(), "m/s²".to_owned()),
                ("pose.x".to_owned(), "m".to_owned())
            ]
        );
        for (line, why) in [
            (
                r#"{"stream":"s","values":{"a":1},"units":{"b":"m"}}"#,
                "not a number in this record",
            ),
            (
                r#"{"stream":"s","values":{"a":"on"},"units":{"a":"m"}}"#,
                "not a number in this record",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"units":{"a":5}}"#,
                "must be an object of numeric fields",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"units":["m"]}"#,
                "must be an object of numeric fields",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"units":{"a":""}}"#,
                "1 to 32 bytes",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"units":{"a":"m\u0007"}}"#,
                "control",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"units":{"a":"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"}}"#,
                "1 to 32 bytes",
            ),
            (
                r#"{"stream":"s","units":{"a":"m"}}"#,
                "not a number in this record",
            ),
        ] {
            let e = error(line);
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn readings_and_detections_as_in_the_spec() {
        let r = record(r#"{"stream":"imu","ts":1732233600.123,"values":{"ax":0.01,"ay":-0.2}}"#);
        assert_eq!(r.stream, "imu");
        assert_eq!(r.ts, Some(1_732_233_600.123));
        assert_eq!(r.values, [("ax".to_owned(), 0.01), ("ay".to_owned(), -0.2)]);
        assert_eq!((r.seq, r.frame), (None, None));
        let r = record(
            r#"{"stream":"camera","seq":7,"frame":{"w":1280,"h":720},
                "detections":[{"label":"person","score":0.93,"box":[10,20,100,200]}]}"#,
        );
        let frame = r.frame.expect("frame");
        assert_eq!((frame.width, frame.height), (1280, 720));
        assert_eq!(
            frame.detections,
            [Detection {
                label: "person".into(),
                score: 0.93,
                bbox: [10.0, 20.0, 100.0, 200.0]
            }]
        );
        assert_eq!((r.ts, r.seq), (None, Some(7)));
        // An empty detection list is a frame where nothing was seen.
        let r = record(r#"{"stream":"camera","frame":{"w":2,"h":2},"detections":[]}"#);
        assert_eq!(r.frame.expect("frame").detections.len(), 0);
        assert_eq!(
            parse_line(r#"{"session":"run-42"}"#),
            Ok(Line::Session("run-42".into()))
        );
        assert_eq!(
            parse_line(r#"{"device":"robot-1"}"#),
            Ok(Line::Device("robot-1".into()))
        );
        // Markup in a label is text: accepted and stored as written, escaped when shown.
        let r = record(
            r#"{"stream":"c","frame":{"w":9,"h":9},"detections":[{"label":"<script>alert(1)</script>","score":1,"box":[0,0,1,1]}]}"#,
        );
        assert_eq!(
            r.frame.expect("frame").detections[0].label,
            "<script>alert(1)</script>"
        );
    }

    #[test]
    fn what_robots_send_ros_names_booleans_nested_values_and_time_units() {
        let r = record(
            r#"{"stream":"/robot/imu","values":{"ok":true,"lost":false,"pose":{"position":{"x":1.5,"y":-2},"yaw":0.25}}}"#,
        );
        assert_eq!(r.stream, "/robot/imu");
        assert_eq!(
            r.values,
            [
                ("lost".to_owned(), 0.0),
                ("ok".to_owned(), 1.0),
                ("pose.position.x".to_owned(), 1.5),
                ("pose.position.y".to_owned(), -2.0),
                ("pose.yaw".to_owned(), 0.25),
            ]
        );
        // Short text is a state, kept as text beside the numbers.
        let r =
            record(r#"{"stream":"gps","values":{"fix":"RTK","sats":14,"rx":{"mode":"float"}}}"#);
        assert_eq!(r.values, [("sats".to_owned(), 14.0)]);
        assert_eq!(
            r.texts,
            [
                ("fix".to_owned(), "RTK".to_owned()),
                ("rx.mode".to_owned(), "float".to_owned())
            ]
        );
        assert!(
            error(&format!(
                r#"{{"stream":"s","values":{{"a":"{}"}}}}"#,
                "x".repeat(MAX_TEXT + 1)
            ))
            .contains("text states")
        );
        assert!(error(r#"{"stream":"s","values":{"a":"x\u0007"}}"#).contains("control, invisible"));
        for sneaky in ["\\u202e", "\\u200b", "\\u2066", "\\ufeff", "\\u2028"] {
            let state = format!(r#"{{"stream":"s","values":{{"a":"ok{sneaky}"}}}}"#);
            assert!(error(&state).contains("direction-changing"), "{state}");
            let label = format!(
                r#"{{"stream":"c","frame":{{"w":9,"h":9}},"detections":[{{"label":"cat{sneaky}","score":1,"box":[0,0,1,1]}}]}}"#
            );
            assert!(error(&label).contains("direction-changing"), "{label}");
        }
        // One instant in every unit: seconds, ms, µs, ns, RFC 3339.
        for ts in [
            "1800000000.25",
            "1800000000250",
            "1800000000250000",
            "1800000000250000000",
            "\"2027-01-15T08:00:00.25Z\"",
        ] {
            let r = record(&format!(r#"{{"stream":"s","ts":{ts},"values":{{"a":1}}}}"#));
            let seconds = r.ts.expect("ts");
            assert!((seconds - 1_800_000_000.25).abs() < 1e-3, "{ts}: {seconds}");
        }
        for (line, why) in [
            (r#"{"stream":"/","values":{"a":1}}"#, "bad stream name"),
            (r#"{"stream":"//x","values":{"a":1}}"#, "bad stream name"),
            (r#"{"stream":"s","values":{"a":{}}}"#, "empty object"),
            (r#"{"stream":"s","values":{"a":[1,2]}}"#, "is a list"),
            (
                r#"{"stream":"s","values":{"a":{"b c":1}}}"#,
                "bad field name",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"ts":"yesterday"}"#,
                "RFC 3339",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"ts":"1990-01-01T00:00:00Z"}"#,
                "between 2000 and 2100",
            ),
            // Between the ranges: neither seconds nor milliseconds of 2000-2100.
            (
                r#"{"stream":"s","values":{"a":1},"ts":50000000000}"#,
                "between 2000 and 2100",
            ),
        ] {
            let error = error(line);
            assert!(error.contains(why), "{line}: {error}");
        }
        let deep = format!(
            r#"{{"stream":"s","values":{}1{}}}"#,
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(error(&deep).contains("deeper than"), "{deep}");
        let wide: Vec<String> = (0..=MAX_VALUES).map(|i| format!(r#""f{i}":1"#)).collect();
        let nested_too_many = format!(
            r#"{{"stream":"s","values":{{"n":{{{}}}}}}}"#,
            wide.join(",")
        );
        assert!(error(&nested_too_many).contains("more than"));
    }

    #[test]
    fn every_kind_of_bad_line_says_why() {
        let long = format!(
            r#"{{"stream":"s","values":{{"a":1}},"x":"{}"}}"#,
            "y".repeat(MAX_LINE)
        );
        let too_many: String = (0..=MAX_VALUES)
            .map(|i| format!(r#""f{i}":1"#))
            .collect::<Vec<_>>()
            .join(",");
        let many_values = format!(r#"{{"stream":"s","values":{{{too_many}}}}}"#);
        let box_ = r#"{"label":"a","score":0.5,"box":[0,0,1,1]}"#;
        let many_boxes = format!(
            r#"{{"stream":"s","frame":{{"w":1,"h":1}},"detections":[{}]}}"#,
            vec![box_; MAX_DETECTIONS + 1].join(",")
        );
        let long_label = format!(
            r#"{{"stream":"s","frame":{{"w":1,"h":1}},"detections":[{{"label":"{}","score":1,"box":[0,0,1,1]}}]}}"#,
            "L".repeat(MAX_LABEL + 1)
        );
        let long_stream = format!(
            r#"{{"stream":"{}","values":{{"a":1}}}}"#,
            "s".repeat(MAX_NAME + 1)
        );
        for (line, why) in [
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            ("[1,2]", "one JSON object"),
            (
                r#"{"stream":"s","values":{"a":NaN}}"#,
                "NaN and Infinity are not numbers",
            ),
            (r#"{"stream":"s","values":{"a":1e999}}"#, "not valid JSON"),
            (r#"{"stream":"s","values":{"a":null}}"#, "must be a number"),
            (r#"{"stream":"s","values":{}}"#, "empty"),
            (r#"{"stream":"s","values":[1]}"#, "object of numbers"),
            (r#"{"values":{"a":1}}"#, "missing \"stream\""),
            (
                r#"{"stream":5,"values":{"a":1}}"#,
                "\"stream\" must be a string",
            ),
            (r#"{"stream":"a b","values":{"a":1}}"#, "bad stream name"),
            (r#"{"stream":"-x","values":{"a":1}}"#, "bad stream name"),
            (r#"{"stream":"s","values":{"<b>":1}}"#, "bad field name"),
            (
                r#"{"stream":"s","values":{"a":1},"ts":12.5}"#,
                "Unix seconds",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"ts":"now"}"#,
                "Unix seconds",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"seq":-1}"#,
                "whole number",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"seq":1.5}"#,
                "whole number",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"session":"a b"}"#,
                "bad session",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"session":7}"#,
                "must be a string",
            ),
            (
                r#"{"stream":"s","values":{"a":1},"DROP TABLE":1}"#,
                "unknown key",
            ),
            (r#"{"stream":"s"}"#, "needs \"values\" or \"frame\""),
            (r#"{"stream":"s","detections":[]}"#, "need \"frame\""),
            (r#"{"stream":"s","frame":{"w":0,"h":1}}"#, "frame\".w"),
            (
                r#"{"stream":"s","frame":{"w":1,"h":99999999}}"#,
                "frame\".h",
            ),
            (r#"{"stream":"s","frame":[1,2]}"#, "\"frame\" must be"),
            (
                r#"{"stream":"s","frame":{"w":1,"h":1},"detections":{}}"#,
                "must be a list",
            ),
            (
                r#"{"stream":"s","frame":{"w":1,"h":1},"detections":[{"label":"a","score":2,"box":[0,0,1,1]}]}"#,
                "score",
            ),
            (
                r#"{"stream":"s","frame":{"w":1,"h":1},"detections":[{"label":"a","score":1,"box":[0,0,1]}]}"#,
                "[x, y, w, h]",
            ),
            (
                r#"{"stream":"s","frame":{"w":1,"h":1},"detections":[{"label":"a","score":1,"box":[0,0,-1,1]}]}"#,
                "negative",
            ),
            (
                r#"{"stream":"s","frame":{"w":1,"h":1},"detections":[{"label":"a\u0000","score":1,"box":[0,0,1,1]}]}"#,
                "control, invisible",
            ),
            (
                r#"{"stream":"s","frame":{"w":1,"h":1},"detections":[{"label":"","score":1,"box":[0,0,1,1]}]}"#,
                "label",
            ),
            (
                r#"{"stream":"s","frame":{"w":1,"h":1},"detections":[{"label":"a","score":1,"box":[0,0,1,1],"id":3}]}"#,
                "detection 0: unknown key",
            ),
            (r#"{"device":"a b"}"#, "bad device name"),
            (
                r#"{"device":"r1","stream":"s","values":{"a":1}}"#,
                "line of its own",
            ),
            (&long, "longer than"),
            (&many_values, "more than 64 values"),
            (&many_boxes, "more than 256 detections"),
            (&long_label, "label"),
            (&long_stream, "bad stream name"),
        ] {
            let err = error(line);
            assert!(err.contains(why), "{line:.80}: {err}");
            assert!(err.len() < 300, "errors stay short: {err}");
        }
    }

    /// A name of the checked alphabet.
    pub(crate) fn name_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let first = prop_oneof![b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9', Just(b'_')];
        let rest = prop_oneof![
            b'a'..=b'z',
            b'0'..=b'9',
            Just(b'_'),
            Just(b'.'),
            Just(b':'),
            Just(b'/'),
            Just(b'-')
        ];
        (first, proptest::collection::vec(rest, 0..20)).prop_map(|(f, r)| {
            let mut name = vec![f];
            name.extend(r);
            String::from_utf8(name).expect("ASCII")
        })
    }

    #[test]
    fn plain_readings_take_the_fast_path_and_the_rest_do_not() {
        for line in [
            r#"{"stream":"imu","values":{"ax":0.25,"ay":-1.5,"az":9.81}}"#,
            r#"{"seq":7,"stream":"/robot/imu","values":{"b":2,"a":1,"a":3},"ts":1800000000.5}"#,
            r#"{"stream":"imu","values":{"x":1},"ts":null}"#,
        ] {
            let fast = plain_reading(line).expect(line);
            assert_eq!(Ok(Line::Record(fast)), parse_value_line(line), "{line}");
        }
        let sorted =
            plain_reading(r#"{"stream":"s","values":{"b":2,"a":1,"a":3}}"#).expect("plain");
        assert_eq!(
            sorted.values,
            [("a".to_owned(), 3.0), ("b".to_owned(), 2.0)]
        );
        let many: Vec<String> = (0..=MAX_VALUES).map(|i| format!("\"f{i}\":{i}")).collect();
        let too_many = format!("{{\"stream\":\"s\",\"values\":{{{}}}}}", many.join(","));
        for line in [
            r#"{"stream":"imu","values":{"ok":true}}"#,
            r#"{"stream":"imu","values":{"mode":"RTK"}}"#,
            r#"{"stream":"imu","values":{"a":{"b":1}}}"#,
            r#"{"stream":"imu","values":{"a":1},"units":{"a":"m"}}"#,
            r#"{"stream":"imu","values":{"a":1},"ts":"2027-01-01T00:00:00Z"}"#,
            r#"{"stream":"imu","values":{"a":1},"ts":12}"#,
            r#"{"stream":"imu","values":{}}"#,
            r#"{"stream":"bad name","values":{"a":1}}"#,
            r#"{"stream":"imu","values":{"a":1},"seq":9223372036854775808}"#,
            r#"{"stream":"imu","stream":"imu","values":{"a":1}}"#,
            too_many.as_str(),
        ] {
            assert!(plain_reading(line).is_none(), "{line}");
        }
        assert_eq!(
            error(&too_many),
            parse_value_line(&too_many).expect_err("too many").why
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Whatever a device sends, the parser answers — an error or a record within the limits.
        #[test]
        fn any_line_is_answered_within_the_limits(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(Line::Record(record)) = parse_line(&text) {
                proptest::prop_assert!(record.values.len() <= MAX_VALUES);
                proptest::prop_assert!(record.values.iter().all(|(_, v)| v.is_finite()));
            }
        }

        /// The fast path for plain readings reads every line it takes exactly as the full
        /// parser does, and leaves every other to it.
        #[test]
        fn plain_readings_read_as_the_full_parser_reads_them(
            stream in proptest::prop_oneof![name_strategy(), proptest::strategy::Just("bad name".to_owned()), proptest::strategy::Just(String::new())],
            fields in proptest::collection::vec(
                (proptest::prop_oneof![name_strategy(), proptest::strategy::Just("a".to_owned()), proptest::strategy::Just("x y".to_owned()), proptest::strategy::Just("\\u0061".to_owned())],
                 proptest::prop_oneof![
                    proptest::strategy::Just("1".to_owned()), proptest::strategy::Just("-0.5".to_owned()), proptest::strategy::Just("1e308".to_owned()), proptest::strategy::Just("1e400".to_owned()),
                    proptest::strategy::Just("9007199254740993".to_owned()), proptest::strategy::Just("true".to_owned()), proptest::strategy::Just("\"RTK\"".to_owned()),
                    proptest::strategy::Just("null".to_owned()), proptest::strategy::Just("{\"x\":1}".to_owned()), proptest::strategy::Just("[1]".to_owned()),
                    proptest::strategy::Strategy::prop_map(-1e12f64..1e12, |v| format!("{v}")),
                 ]),
                0..6),
            seq in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just("0".to_owned()), proptest::strategy::Just("9223372036854775807".to_owned()), proptest::strategy::Just("9223372036854775808".to_owned()),
                proptest::strategy::Just("-1".to_owned()), proptest::strategy::Just("5.0".to_owned()), proptest::strategy::Just("\"7\"".to_owned()), proptest::strategy::Strategy::prop_map(0u64..1000, |n| n.to_string())]),
            ts in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just("null".to_owned()), proptest::strategy::Just("1800000000".to_owned()), proptest::strategy::Just("1800000000123".to_owned()),
                proptest::strategy::Just("12".to_owned()), proptest::strategy::Just("\"2027-01-01T00:00:00Z\"".to_owned()), proptest::strategy::Just("1e400".to_owned())]),
            extra in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just(",\"units\":{\"a\":\"m\"}".to_owned()), proptest::strategy::Just(",\"session\":\"s1\"".to_owned()),
                proptest::strategy::Just(",\"stream\":\"again\"".to_owned()), proptest::strategy::Just(",\"other\":1".to_owned()), proptest::strategy::Just(" x".to_owned())]),
        ) {
            let body: Vec<String> = fields.iter().map(|(f, v)| format!("\"{f}\":{v}")).collect();
            let mut line = format!("{{\"stream\":{},\"values\":{{{}}}", serde_json::Value::from(stream.as_str()), body.join(","));
            if let Some(seq) = &seq { line.push_str(&format!(",\"seq\":{seq}")); }
            if let Some(ts) = &ts { line.push_str(&format!(",\"ts\":{ts}")); }
            if let Some(extra) = &extra { line.push_str(extra.as_str()); }
            line.push('}');
            let full = parse_value_line(&line);
            if let Some(fast) = plain_reading(&line) {
                proptest::prop_assert_eq!(Ok(Line::Record(fast)), full.clone(), "{}", line);
            }
            // And parse_line as a whole answers as the full parser does.
            let answered = parse_line(&line);
            proptest::prop_assert_eq!(answered.as_ref().ok(), full.as_ref().ok(), "{}", line);
            proptest::prop_assert_eq!(answered.err().map(|e| e.why), full.err().map(|e| e.why), "{}", line);
        }

        /// Near-valid JSON: records with one thing wrong are refused with a reason, never a panic.
        #[test]
        fn json_records_round_trip(
            stream in name_strategy(),
            values in proptest::collection::btree_map(name_strategy(), -1e12f64..1e12, 1..10),
            seq in proptest::option::of(0u64..u64::MAX / 2),
            ts in proptest::option::of(946_684_800.0f64..4_102_444_000.0),
        ) {
            let mut line = serde_json::json!({ "stream": stream, "values": values });
            if let Some(seq) = seq { line["seq"] = seq.into(); }
            if let Some(ts) = ts { line["ts"] = ts.into(); }
            let parsed = parse_line(&line.to_string());
            let Ok(Line::Record(record)) = parsed else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("{parsed:?} for {line}")));
            };
            proptest::prop_assert_eq!(&record.stream, &stream);
            proptest::prop_assert_eq!(record.seq, seq);
            proptest::prop_assert_eq!(record.ts, ts);
            let got: std::collections::BTreeMap<String, f64> = record.values.into_iter().collect();
            proptest::prop_assert_eq!(got, values);
        }
    }
}
