//! InfluxDB line protocol, so Telegraf and other agents can feed the hub (TCP and UDP, port
//! 8094 by default, as Telegraf's `socket_listener` / `socket_writer`).
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]` becomes one record:
//! the measurement is the stream (with the values of tags other than `device`/`host` appended
//! as `/value`, in tag-key order, so `cpu,cpu=cpu0` is stream `cpu/cpu0`), the `device` tag (or
//! else Telegraf's `host` tag) the device, numeric and boolean fields the values (strings are
//! skipped), the timestamp in the hub's `--influx-precision`. Like InfluxDB's own socket
//! listener, nothing is answered: bad lines are counted and logged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use socketeer::{Connection, Datagram, DatagramHandler, Handler, Result};

use crate::ingest::Ingest;
use crate::record::{self, Record};
use crate::store::{Item, StoreError, now_secs};
use crate::wire::{Reason, Refusal};

/// Timestamp units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (Telegraf's default).
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    fn seconds(self, stamp: i64) -> f64 {
        let divisor = match self {
            Precision::Ns => 1e9,
            Precision::Us => 1e6,
            Precision::Ms => 1e3,
            Precision::S => 1.0,
        };
        stamp as f64 / divisor
    }
}

fn value_error(why: impl Into<String>) -> Refusal {
    Refusal::new(Reason::Value, why)
}

/// One parsed line: the device and the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The device: the `device` tag, else Telegraf's `host` tag.
    pub device: String,
    /// The record: measurement as stream, fields as values.
    pub record: Record,
}

/// Splits at unescaped `sep` (outside double quotes when `quotes`), keeping escapes.
fn split_unescaped(text: &str, sep: u8, quotes: bool) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut i, mut quoted) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' if quotes => quoted = !quoted,
            b if b == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(next @ (',' | '=' | ' ' | '"' | '\\')) => out.push(next),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A field value: numbers and booleans give a value, strings `None`.
fn field_value(text: &str) -> std::result::Result<Option<f64>, Refusal> {
    if text.starts_with('"') {
        return if text.len() >= 2 && text.ends_with('"') {
            Ok(None)
        } else {
            Err(value_error(format!("unterminated string value {text:.40}")))
        };
    }
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(Some(1.0)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(Some(0.0)),
        _ => {}
    }
    let number = if let Some(int) = text.strip_suffix('i') {
        int.parse::<i64>().map(|n| n as f64).ok()
    } else if let Some(uint) = text.strip_suffix('u') {
        uint.parse::<u64>().map(|n| n as f64).ok()
    } else {
        text.parse::<f64>().ok()
    };
    number
        .filter(|n| n.is_finite())
        .map(Some)
        .ok_or_else(|| value_error(format!("bad field value {text:.40}")))
}

/// Parses one line; `Ok(None)` for blank lines and `#` comments.
///
/// # Errors
/// Why the line is refused, and the kind of fault.
pub fn parse_line(line: &str, precision: Precision) -> std::result::Result<Option<Point>, Refusal> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.len() > record::MAX_LINE {
        return Err(Refusal::new(
            Reason::TooLong,
            format!("line longer than {} bytes", record::MAX_LINE),
        ));
    }
    let sections = split_unescaped(line, b' ', true);
    let sections: Vec<&str> = sections.into_iter().filter(|s| !s.is_empty()).collect();
    let (series, fields, stamp) = match sections.as_slice() {
        [series, fields] => (*series, *fields, None),
        [series, fields, stamp] => (*series, *fields, Some(*stamp)),
        _ => {
            return Err(value_error(
                "expected: measurement[,tags] fields [timestamp]",
            ));
        }
    };
    let mut key_parts = split_unescaped(series, b',', false).into_iter();
    let measurement = unescape(key_parts.next().unwrap_or_default());
    let mut device = None;
    let mut host = None;
    let mut extra_tags = Vec::new();
    for tag in key_parts {
        let [key, value] = split_unescaped(tag, b'=', false)[..] else {
            return Err(value_error(format!("bad tag {tag:.40}")));
        };
        let (key, value) = (unescape(key), unescape(value));
        match key.as_str() {
            "device" => device = Some(value),
            "host" => host = Some(value),
            _ => extra_tags.push((key, value)),
        }
    }
    let device = device
        .or(host)
        .ok_or_else(|| value_error("needs a device tag (or Telegraf's host tag)"))?;
    if !socketeer::keys::valid_device_name(&device) {
        return Err(Refusal::new(
            Reason::Name,
            format!("bad device name {device:.40}"),
        ));
    }
    extra_tags.sort();
    let mut stream = measurement;
    for (_, value) in &extra_tags {
        stream.push('/');
        stream.push_str(value);
    }
    let stream = record::name(&stream, "stream")?;
    let mut values = Vec::new();
    for field in split_unescaped(fields, b',', true) {
        let [key, value] = split_unescaped(field, b'=', true)[..] else {
            return Err(value_error(format!("bad field {field:.40}")));
        };
        if let Some(number) = field_value(value)? {
            let key = record::name(&unescape(key), "field")?;
            // A field given twice keeps its last value, as InfluxDB does.
            match values.iter_mut().find(|(known, _)| *known == key) {
                Some((_, slot)) => *slot = number,
                None => values.push((key, number)),
            }
        }
    }
    if values.is_empty() {
        return Err(value_error("no numeric or boolean field"));
    }
    if values.len() > record::MAX_VALUES {
        return Err(Refusal::new(
            Reason::TooMany,
            format!("more than {} fields", record::MAX_VALUES),
        ));
    }
    let ts = match stamp {
        None => None,
        Some(text) => {
            let stamp: i64 = text
                .parse()
                .map_err(|_| value_error(format!("bad timestamp {text:.40}")))?;
            let secs = precision.seconds(stamp);
            if !(946_684_800.0..4_102_444_800.0).contains(&secs) {
                return Err(value_error(format!(
                    "timestamp {text} is not between 2000 and 2100 in {precision:?} (see --influx-precision)"
                )));
            }
            Some(secs)
        }
    };
    Ok(Some(Point {
        device,
        record: Record {
            stream,
            ts,
            values,
            texts: Vec::new(),
            units: Vec::new(),
            frame: None,
            seq: None,
            session: None,
        },
    }))
}

/// The lines of a batch, parsed; `None` if the batch is not UTF-8.
pub fn parse_text(
    text: &[u8],
    precision: Precision,
) -> Option<impl Iterator<Item = std::result::Result<Option<Point>, Refusal>>> {
    let text = std::str::from_utf8(text).ok()?;
    Some(
        text.split('\n')
            .map(move |line| parse_line(line, precision)),
    )
}

/// How a batch of Influx lines reaches the writer.
#[derive(Clone, Copy)]
enum Delivery {
    /// Over a stream: wait for room in the writer's queue (the sender is held back).
    Wait,
    /// A datagram: queued only if there is room now, else dropped and counted (UDP promises
    /// nothing, and a flood must not hold acknowledged ingest back).
    OrDrop,
}

/// The writer lane of an Influx sender: one per source address, so a flood from one source
/// takes one turn among the robots, whatever device names its lines invent.
fn lane_of(peer: &socketeer::PeerAddr) -> Arc<str> {
    match peer.ip() {
        Some(ip) => format!("influx {ip}").into(),
        None => "influx".into(),
    }
}

/// Parses a batch of lines and hands the good ones to the store; bad ones are counted and
/// logged (the first of a batch).
async fn take(
    ingest: &Ingest,
    text: &[u8],
    precision: Precision,
    peer: &socketeer::PeerAddr,
    delivery: Delivery,
) {
    let lane = lane_of(peer);
    if let Delivery::OrDrop = delivery {
        // A datagram with no room for its lines is dropped unparsed: a flood costs its
        // sender more than it costs the hub.
        let lines = text.iter().filter(|&&b| b == b'\n').count().max(1);
        if !ingest.store.has_room(&lane, lines) {
            ingest
                .stats
                .influx_dropped
                .fetch_add(lines as u64, Ordering::Relaxed);
            return;
        }
    }
    let Some(lines) = parse_text(text, precision) else {
        ingest.stats.reject(Reason::Utf8);
        tracing::debug!(%peer, "influx: not UTF-8");
        return;
    };
    let recv_ts = now_secs();
    let mut items = Vec::new();
    for (n, parsed) in lines.enumerate() {
        match parsed {
            // Telegraf's hosts keep their clocks by NTP: their times are taken as they are
            // (offset 0).
            Ok(Some(point)) => items.push(Item::new(
                &point.device.into(),
                &"".into(),
                point.record,
                recv_ts,
            )),
            Ok(None) => {}
            Err(refusal) => {
                ingest.stats.reject(refusal.reason);
                tracing::debug!(%peer, line = n + 1, why = refusal.why, "influx: line refused");
            }
        }
    }
    if items.is_empty() {
        return;
    }
    let count = items.len() as u64;
    // Nothing is acknowledged in this protocol, so nothing waits for the commit.
    let pending = match delivery {
        Delivery::Wait => ingest.store.submit(&lane, items).await,
        Delivery::OrDrop => match ingest.store.try_submit(&lane, items) {
            Some(pending) => pending,
            None => {
                ingest
                    .stats
                    .influx_dropped
                    .fetch_add(count, Ordering::Relaxed);
                tracing::debug!(%peer, lines = count, "influx: writer queue full; datagram dropped");
                return;
            }
        },
    };
    // Lines past a limit are counted (and the first of each batch logged) when the writer
    // answers, without holding the sender back.
    let (stats, peer) = (Arc::clone(&ingest.stats), peer.clone());
    tokio::spawn(async move {
        let mut logged = false;
        for outcome in pending.await {
            let Err(err) = outcome else { continue };
            let reason = match &err {
                StoreError::Rejected(refusal) => refusal.reason,
                StoreError::Unavailable(_) => Reason::Storage,
            };
            let why = err.to_string();
            stats.reject(reason);
            if !std::mem::replace(&mut logged, true) {
                tracing::debug!(%peer, why, "influx: line not stored");
            }
        }
    });
    ingest
        .stats
        .influx_lines
        .fetch_add(count, Ordering::Relaxed);
}

/// Influx over TCP: lines, no answers.
#[derive(Clone)]
pub struct InfluxHandler {
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) precision: Precision,
}

impl Handler for InfluxHandler {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let peer = conn.peer_addr().clone();
        let mut first = true;
        while let Some(line) = conn.read_line().await? {
            if std::mem::take(&mut first) && crate::wire::http_request_line(&line) {
                self.ingest.stats.reject(Reason::HttpRequest);
                tracing::debug!(%peer, "influx: an HTTP request; closed");
                return Ok(());
            }
            take(&self.ingest, &line, self.precision, &peer, Delivery::Wait).await;
        }
        Ok(())
    }
}

impl DatagramHandler for InfluxHandler {
    async fn handle(&self, datagram: Datagram) -> Result<()> {
        let peer = datagram.peer().clone();
        take(
            &self.ingest,
            datagram.data(),
            self.precision,
            &peer,
            Delivery::OrDrop,
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(line: &str) -> Point {
        parse_line(line, Precision::Ns)
            .expect("valid")
            .expect("not blank")
    }

    #[test]
    fn telegraf_lines() {
        let p =
            point("cpu,cpu=cpu0,host=rover-7 usage_idle=97.5,usage_user=1.25 1800000000000000000");
        assert_eq!(p.device, "rover-7");
        assert_eq!(p.record.stream, "cpu/cpu0");
        assert_eq!(
            p.record.values,
            [
                ("usage_idle".to_owned(), 97.5),
                ("usage_user".to_owned(), 1.25)
            ]
        );
        assert_eq!(p.record.ts, Some(1_800_000_000.0));
        let p = point(r#"battery,device=r1,host=gw volts=12i,ok=true,state="charging",amps=3u"#);
        assert_eq!(p.device, "r1", "the device tag wins over host");
        assert_eq!(
            p.record.values,
            [
                ("volts".to_owned(), 12.0),
                ("ok".to_owned(), 1.0),
                ("amps".to_owned(), 3.0)
            ],
            "strings skipped"
        );
        assert_eq!(p.record.ts, None);
        let p = point("battery,device=r1 volts=12,volts=11.5,amps=2");
        assert_eq!(
            p.record.values,
            [("volts".to_owned(), 11.5), ("amps".to_owned(), 2.0)],
            "a field given twice keeps its last value"
        );
        // Escapes are understood; the names must still be names.
        let p = point(r#"rover.temp,device=r1,site=lab-2 motor=40.5"#);
        assert_eq!(p.record.stream, "rover.temp/lab-2");
        let err = parse_line(r#"motor\=1,device=r1 v=1"#, Precision::Ns).expect_err("=");
        assert!(err.why.contains("bad stream name \"motor=1\""), "{err}");
    }

    #[test]
    fn precisions() {
        for (precision, stamp) in [
            (Precision::Ns, "1800000000000000000"),
            (Precision::Us, "1800000000000000"),
            (Precision::Ms, "1800000000000"),
            (Precision::S, "1800000000"),
        ] {
            let p = parse_line(&format!("m,device=r v=1 {stamp}"), precision)
                .expect("valid")
                .expect("point");
            assert_eq!(p.record.ts, Some(1_800_000_000.0), "{precision:?}");
        }
        let err = parse_line("m,device=r v=1 1800000000", Precision::Ns).expect_err("1970");
        assert!(err.why.contains("--influx-precision"), "{err}");
    }

    #[test]
    fn bad_lines_say_why() {
        assert_eq!(parse_line("", Precision::Ns), Ok(None));
        assert_eq!(parse_line("# comment", Precision::Ns), Ok(None));
        for (line, why) in [
            ("m v=1", "needs a device tag"),
            ("m,device=r", "expected: measurement"),
            ("m,device=r v=1 2 3", "expected: measurement"),
            ("m,device=r v=abc", "bad field value"),
            ("m,device=r v=NaN", "bad field value"),
            ("m,device=r v=inf", "bad field value"),
            ("m,device=r s=\"only text\"", "no numeric"),
            ("m,device=r v=\"open", "unterminated"),
            ("m,device=r v=1 noon", "bad timestamp"),
            ("m,device=a\\ b v=1", "bad device name"),
            ("<script>,device=r v=1", "bad stream name"),
            ("m,device=r <b>=1", "bad field name"),
            ("m,devicer v=1", "bad tag"),
            ("m,device=r v", "bad field"),
        ] {
            let err = parse_line(line, Precision::Ns).expect_err(line);
            assert!(err.why.contains(why), "{line}: {err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn any_line_is_answered(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_line(&String::from_utf8_lossy(&bytes), Precision::Ns);
        }

        #[test]
        fn telegraf_style_lines_round_trip(
            measurement in crate::record::tests::name_strategy(),
            device in proptest::strategy::Strategy::prop_map(crate::record::tests::name_strategy(), |n| n.replace([':', '/'], "-")),
            fields in proptest::collection::btree_map(crate::record::tests::name_strategy(), -1e9f64..1e9, 1..10),
            stamp in proptest::option::of(946_684_800_000_000_000i64..4_000_000_000_000_000_000),
        ) {
            let fields_text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let mut line = format!("{measurement},device={device} {}", fields_text.join(","));
            if let Some(stamp) = stamp { line.push_str(&format!(" {stamp}")); }
            let point = parse_line(&line, Precision::Ns).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {line}")))?
                .expect("not blank");
            proptest::prop_assert_eq!(&point.device, &device);
            proptest::prop_assert_eq!(&point.record.stream, &measurement);
            let got: std::collections::BTreeMap<String, f64> = point.record.values.into_iter().collect();
            proptest::prop_assert_eq!(got, fields);
            proptest::prop_assert_eq!(point.record.ts.is_some(), stamp.is_some());
        }
    }
}
