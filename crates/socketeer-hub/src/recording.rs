//! MCAP recordings of what the hub stored (`GET /api/export.mcap`, `socketeer export`): the
//! same channels, schemas and messages as the Foxglove WebSocket, chunked and compressed, with
//! the summary and indexes a viewer seeks with. Written by the `mcap` crate as records are
//! read, a page per stream at a time, so memory stays flat whatever the range.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use mcap::records::MessageHeader;
use serde_json::Value;

use crate::foxglove::{
    ChannelSpec, Kind, annotations_payload, image_payload, nanos, readings_payload,
};
use crate::store::{Reader, Recorded, RecordingQuery, RecordingStream};

/// How chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd (the default, as the `mcap` tools write).
    #[default]
    Zstd,
    /// lz4: faster, larger.
    Lz4,
    /// None.
    None,
}

impl Compression {
    /// `zstd`, `lz4` or `none`.
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "zstd" => Some(Compression::Zstd),
            "lz4" => Some(Compression::Lz4),
            "none" => Some(Compression::None),
            _ => None,
        }
    }

    fn mcap(self) -> Option<mcap::Compression> {
        match self {
            Compression::Zstd => Some(mcap::Compression::Zstd),
            Compression::Lz4 => Some(mcap::Compression::Lz4),
            Compression::None => None,
        }
    }
}

/// What to record.
#[derive(Debug, Clone)]
pub struct McapExport {
    /// One device's records, or every device's.
    pub device: Option<String>,
    /// From this time (Unix seconds, inclusive).
    pub from: f64,
    /// To this time (Unix seconds, inclusive).
    pub to: f64,
    /// How chunks are compressed.
    pub compression: Compression,
}

impl Default for McapExport {
    /// Everything, zstd.
    fn default() -> McapExport {
        McapExport {
            device: None,
            from: 0.0,
            to: f64::MAX,
            compression: Compression::Zstd,
        }
    }
}

/// What a recording holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McapSummary {
    /// Messages written.
    pub messages: u64,
    /// Channels written.
    pub channels: u64,
}

/// Target size of a chunk before compression.
const CHUNK: u64 = 1024 * 1024;

/// Records the database at `db` (a hub's, which may be running) to `out`.
///
/// # Errors
/// The database cannot be read, or `out` cannot be written.
pub fn export_mcap(
    db: &crate::config::Database,
    what: &McapExport,
    out: impl Write,
) -> anyhow::Result<McapSummary> {
    match db {
        crate::config::Database::Sqlite(path) => {
            if !path.is_file() {
                anyhow::bail!("{}: no such database", path.display());
            }
            write(&Reader::new(path.clone()), what, out)
        }
        crate::config::Database::Postgres(url) => {
            write(&crate::store::Reader::postgres(url)?, what, out)
        }
    }
}

/// Records what `reader` holds to `out`.
pub(crate) fn write(
    reader: &Reader,
    what: &McapExport,
    out: impl Write,
) -> anyhow::Result<McapSummary> {
    let options = mcap::WriteOptions::new()
        .compression(what.compression.mcap())
        .chunk_size(Some(CHUNK))
        .library(concat!("socketeer-hub ", env!("CARGO_PKG_VERSION")))
        .profile("")
        .disable_seeking(true);
    let mut writer = mcap::Writer::with_options(mcap::write::NoSeek::new(out), options)?;
    let query = RecordingQuery {
        device: what.device.clone(),
        from: what.from,
        to: what.to,
    };
    // Channels are added as their first message comes: (device, stream, kind) -> (id, sequence).
    let mut channels: HashMap<(String, String, Kind), (u16, u32)> = HashMap::new();
    let mut summary = McapSummary::default();
    let mut failed: Option<anyhow::Error> = None;
    let mut send = |writer: &mut mcap::Writer<_>,
                    stream: &RecordingStream,
                    kind: Kind,
                    ts: f64,
                    data: &[u8]|
     -> anyhow::Result<()> {
        let key = (stream.device.clone(), stream.stream.clone(), kind);
        let (id, sequence) = match channels.get_mut(&key) {
            Some(known) => known,
            None => {
                let spec = ChannelSpec::new(&stream.device, &stream.stream, kind, || {
                    (stream.numbers.clone(), stream.texts.clone())
                });
                let schema =
                    writer.add_schema(spec.schema_name, "jsonschema", spec.schema.as_bytes())?;
                // The topic is for people; the device and stream exactly, for `import`.
                let metadata = BTreeMap::from([
                    ("device".to_owned(), stream.device.clone()),
                    ("stream".to_owned(), stream.stream.clone()),
                ]);
                let id = writer.add_channel(schema, &spec.topic, "json", &metadata)?;
                summary.channels += 1;
                channels.entry(key).or_insert((id, 0))
            }
        };
        *sequence = sequence.wrapping_add(1);
        let time = nanos(ts);
        writer.write_to_known_channel(
            &MessageHeader {
                channel_id: *id,
                sequence: *sequence,
                log_time: time,
                publish_time: time,
            },
            data,
        )?;
        summary.messages += 1;
        Ok(())
    };
    reader
        .recording(
            &query,
            |_| {},
            |record| {
                let result = match record {
                    // Stored as one flat JSON object: that is the message as it is, unless a
                    // field name is dotted (then nested, as the WebSocket sends it).
                    Recorded::Sample { stream, ts, vals } if !stream.dotted => {
                        send(&mut writer, stream, Kind::Readings, ts, vals.as_bytes())
                    }
                    Recorded::Sample { stream, ts, vals } => {
                        match serde_json::from_str::<serde_json::Map<String, Value>>(vals) {
                            Ok(fields) => {
                                let payload = readings_payload(
                                    fields.iter().map(|(f, v)| (f.as_str(), v.clone())),
                                );
                                send(&mut writer, stream, Kind::Readings, ts, &payload)
                            }
                            // Not written by this hub: left out.
                            Err(_) => Ok(()),
                        }
                    }
                    Recorded::Frame {
                        stream,
                        ts,
                        size,
                        detections,
                        image,
                    } => {
                        let pictured = match image {
                            Some((format, data)) => {
                                let payload = image_payload(&stream.stream, ts, format, data);
                                send(&mut writer, stream, Kind::Image, ts, &payload)
                            }
                            None => Ok(()),
                        };
                        pictured.and_then(|()| {
                            let payload = annotations_payload(ts, size, detections);
                            send(&mut writer, stream, Kind::Annotations, ts, &payload)
                        })
                    }
                };
                match result {
                    Ok(()) => true,
                    Err(err) => {
                        failed = Some(err);
                        false
                    }
                }
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(err) = failed {
        return Err(err);
    }
    writer.finish()?;
    Ok(summary)
}
