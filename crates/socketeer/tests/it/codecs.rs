//! Properties of the codecs: decoding is the same however the bytes are split (a peer — or the
//! network — decides where reads end), and what is encoded decodes back to itself.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use socketeer::ErrorKind;
use socketeer::codec::{FrameCodec, LineCodec};
use tokio_util::codec::{Decoder, Encoder};

/// Everything `codec` yields from `input` delivered in pieces ending at `cuts`, then the end of
/// the stream: the items, and the kind of the error that stopped it, if one did.
fn decode_in_pieces<D>(codec: D, input: &[u8], cuts: &[usize]) -> (Vec<Bytes>, Option<ErrorKind>)
where
    D: Decoder<Item = Bytes, Error = socketeer::Error>,
{
    let (items, err) = socketeer::fuzzing::decode_in_pieces(codec, input, cuts);
    (items, err.map(|e| e.kind()))
}

/// Lines as a reader expects them: each with its `\n`, a last unterminated one as it is, and a
/// line over `max` (not counting the `\n`) ends it with TooLarge.
fn lines_model(input: &[u8], max: usize) -> (Vec<Bytes>, Option<ErrorKind>) {
    let mut items = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (line, len) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..=i], i),
            None => (rest, rest.len()),
        };
        if len > max {
            return (items, Some(ErrorKind::TooLarge));
        }
        items.push(Bytes::copy_from_slice(line));
        rest = &rest[line.len()..];
    }
    (items, None)
}

/// Bytes with plenty of newlines, so lines of every length occur.
fn text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>(), b'a'..=b'z'],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn lines_decode_the_same_however_split(
        input in text(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max in 0usize..40,
    ) {
        let whole = decode_in_pieces(LineCodec::new(max), &input, &[]);
        let pieces = decode_in_pieces(LineCodec::new(max), &input, &cuts);
        let bytewise: Vec<usize> = (0..input.len()).collect();
        let one_by_one = decode_in_pieces(LineCodec::new(max), &input, &bytewise);
        prop_assert_eq!(&whole, &lines_model(&input, max));
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(&one_by_one, &whole);
    }

    #[test]
    fn encoded_lines_decode_back(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..50), 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut codec = LineCodec::new(64);
        let mut wire = BytesMut::new();
        for line in &lines {
            codec.encode(&line[..], &mut wire).expect("encode");
        }
        let (items, err) = decode_in_pieces(LineCodec::new(64), &wire, &cuts);
        prop_assert_eq!(err, None);
        let expected: Vec<Bytes> = lines.iter().map(|l| { let mut v = l.clone(); v.push(b'\n'); Bytes::from(v) }).collect();
        prop_assert_eq!(items, expected);
    }

    #[test]
    fn frames_decode_the_same_however_split(
        input in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max in 0usize..64,
    ) {
        let whole = decode_in_pieces(FrameCodec::new(max), &input, &[]);
        let pieces = decode_in_pieces(FrameCodec::new(max), &input, &cuts);
        let bytewise: Vec<usize> = (0..input.len()).collect();
        let one_by_one = decode_in_pieces(FrameCodec::new(max), &input, &bytewise);
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(&one_by_one, &whole);
    }

    #[test]
    fn encoded_frames_decode_back(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut codec = FrameCodec::new(100);
        let mut wire = BytesMut::new();
        for frame in &frames {
            codec.encode(&frame[..], &mut wire).expect("encode");
        }
        let (items, err) = decode_in_pieces(FrameCodec::new(100), &wire, &cuts);
        prop_assert_eq!(err, None);
        let expected: Vec<Bytes> = frames.iter().cloned().map(Bytes::from).collect();
        prop_assert_eq!(items, expected);
        // Cut short anywhere inside, the stream is an error, never a short frame.
        if let Some(last) = frames.last() {
            let cut = wire.len() - 1;
            let (short, err) = decode_in_pieces(FrameCodec::new(100), &wire[..cut], &[]);
            prop_assert_eq!(short.len(), frames.len() - 1);
            prop_assert_eq!(err, Some(ErrorKind::UnexpectedEof), "last frame of {} bytes", last.len());
        }
    }
}
