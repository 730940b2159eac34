//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each feeds arbitrary bytes
//! through the decoders the program runs on what a peer sends, as the program runs them, and
//! panics on anything that must not happen. Not an API.

use bytes::Bytes;
use socketeer::codec::{FrameCodec, LineCodec};
use socketeer::fuzzing::{assert_split_invariant, decode_in_pieces};
use tokio_util::codec::Decoder;

use crate::chat::lines::LineBatch;
use crate::exec::wire::{self, FromClient};
use crate::files::path::{MAX_NAME, RelPath};
use crate::files::wire::{MAX_CONTROL, Request, Response, Resume, Trailer};
use socketeer_hub::influx::{self, Precision};
use socketeer_hub::record::{Line, MAX_LINE, announced_bytes, attach_image, parse_raw_line};

/// The hub's JSON lines: framing (split-invariant), then each line's parse — an image header's
/// announced length, and the input's bytes taken as the image that follows it.
pub fn hub_lines(data: &[u8], cuts: &[usize]) {
    for line in lines(data, cuts, MAX_LINE) {
        match parse_raw_line(&line) {
            Some(Err(why)) => {
                assert!(!why.why.is_empty());
                if let Ok(text) = std::str::from_utf8(&line) {
                    if let Some(Ok(len)) = announced_bytes(text) {
                        assert!(len >= 1);
                    }
                }
            }
            Some(Ok(Line::Image {
                mut record, format, ..
            })) => {
                let attached = attach_image(&mut record, format, Bytes::copy_from_slice(data));
                if let (Ok(()), Some(frame)) = (attached, &record.frame) {
                    assert!(frame.width >= 1 && frame.height >= 1);
                }
            }
            _ => {}
        }
    }
}

/// Influx line protocol: over TCP (lines, then each line) and as one datagram.
pub fn influx(data: &[u8], cuts: &[usize]) {
    for line in lines(data, cuts, MAX_LINE) {
        if let Some(points) = influx::parse_text(&line, Precision::Ns) {
            for point in points.flatten().flatten() {
                assert!(point.record.values.iter().all(|(_, v)| v.is_finite()));
                assert!(point.record.ts.is_none_or(f64::is_finite));
            }
        }
    }
    if let Some(points) = influx::parse_text(data, Precision::Ms) {
        points.for_each(drop);
    }
}

/// The exec protocol's frames, read by the server and by the client.
pub fn exec_frames(data: &[u8], cuts: &[usize]) {
    for frame in frames(data, cuts, wire::MAX_FRAME) {
        if let Some(FromClient::Command(text)) = wire::from_client(&frame) {
            assert!(text.len() <= 3 * frame.len());
        }
        let _ = wire::from_server(&frame);
    }
}

/// The files protocol's control messages, read by the server and by the client, and the path
/// check every request passes.
pub fn file_frames(data: &[u8], cuts: &[usize]) {
    for frame in frames(data, cuts, MAX_CONTROL) {
        if let Ok(request) = serde_json::from_slice::<Request>(&frame) {
            let (Request::Ls { path, .. } | Request::Put { path, .. } | Request::Get { path, .. }) =
                request;
            check_path(&path);
        }
        let _ = serde_json::from_slice::<Response>(&frame);
        let _ = serde_json::from_slice::<Resume>(&frame);
        let _ = serde_json::from_slice::<Trailer>(&frame);
    }
}

/// Whatever [`RelPath::parse`] accepts stays inside the root: plain names only.
pub fn check_path(text: &str) {
    if let Ok(path) = RelPath::parse(text) {
        for name in &path.components {
            assert!(!name.is_empty() && name != "." && name != "..", "{text:?}");
            assert!(!name.contains(['/', '\0']), "{text:?}");
            assert!(name.len() <= MAX_NAME, "{text:?}");
        }
    }
}

/// The chat's batches of lines: however the bytes are split, the same bytes come out, and a
/// too-long line fails either way.
pub fn chat_lines(data: &[u8], cuts: &[usize]) {
    let make = || LineBatch {
        max_line: 64,
        max_lines: 4,
    };
    let joined =
        |(items, err): (Vec<Bytes>, Option<socketeer::Error>)| (items.concat(), err.is_some());
    let (whole, whole_failed) = joined(decode_in_pieces(make(), data, &[]));
    let (pieces, pieces_failed) = joined(decode_in_pieces(make(), data, cuts));
    assert_eq!(
        whole_failed, pieces_failed,
        "a failure depends on the split"
    );
    if !whole_failed {
        assert_eq!(whole, data, "bytes lost or changed");
        assert_eq!(pieces, data, "bytes lost or changed in pieces");
    }
}

/// Lines as a connection reads them (checked split-invariant), up to the first error.
fn lines(data: &[u8], cuts: &[usize], max: usize) -> Vec<Bytes> {
    checked(|| LineCodec::new(max), data, cuts)
}

/// Frames as a connection reads them (checked split-invariant), up to the first error.
fn frames(data: &[u8], cuts: &[usize], max: usize) -> Vec<Bytes> {
    checked(|| FrameCodec::new(max), data, cuts)
}

fn checked<D>(make: impl Fn() -> D, data: &[u8], cuts: &[usize]) -> Vec<Bytes>
where
    D: Decoder<Item = Bytes, Error = socketeer::Error>,
{
    assert_split_invariant(&make, data, cuts);
    decode_in_pieces(make(), data, &[]).0
}
