//! The connection's own tests: buffers, cancel-safety, deadlines, vectored sends.
use super::*;
use std::task::Poll;

use tokio::io::AsyncReadExt;

fn pair(limits: &Limits) -> (Connection, tokio::io::DuplexStream) {
    let (a, b) = tokio::io::duplex(1 << 16);
    (
        Connection::with_limits(Stream::other(a), PeerAddr::Unknown, limits),
        b,
    )
}

#[tokio::test]
async fn a_connection_waiting_between_messages_holds_no_read_buffer() {
    let (mut conn, mut peer) = pair(&Limits::default());
    peer.write_all(b"one\n").await.expect("write");
    assert_eq!(
        conn.read_line().await.expect("line").as_deref(),
        Some(&b"one\n"[..])
    );
    assert!(
        conn.inbound.buf.capacity() > 0,
        "the buffer stays while bytes flow"
    );
    {
        let mut read = std::pin::pin!(conn.read_line());
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "nothing to read yet");
    }
    assert_eq!(conn.inbound.buf.capacity(), 0, "let go while waiting");
    // Half a line: the wait for the rest keeps what arrived.
    peer.write_all(b"tw").await.expect("write");
    {
        let mut read = std::pin::pin!(conn.read_line());
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the line is not complete");
    }
    assert_eq!(&conn.inbound.buf[..], b"tw");
    peer.write_all(b"o\n").await.expect("write");
    assert_eq!(
        conn.read_line().await.expect("line").as_deref(),
        Some(&b"two\n"[..])
    );
}

#[tokio::test]
async fn bulk_reads_never_take_more_than_asked() {
    let (mut conn, mut peer) = pair(&Limits::default());
    // A frame, 10 raw bytes, and another frame, all in one write.
    peer.write_all(b"\0\0\0\x02hi0123456789\0\0\0\x03end")
        .await
        .expect("write");
    drop(peer);
    assert_eq!(
        conn.read_frame().await.expect("frame").as_deref(),
        Some(&b"hi"[..])
    );
    let mut raw = Vec::new();
    while raw.len() < 10 {
        let piece = conn
            .read_up_to(10 - raw.len())
            .await
            .expect("raw")
            .expect("data");
        assert!(!piece.is_empty() && piece.len() <= 10);
        raw.extend_from_slice(&piece);
    }
    assert_eq!(raw, b"0123456789");
    assert_eq!(
        conn.read_frame().await.expect("frame").as_deref(),
        Some(&b"end"[..])
    );
    assert_eq!(conn.read_up_to(5).await.expect("eof"), None);
}

#[tokio::test]
async fn reads_lines_frames_and_chunks_from_one_buffer() {
    let (mut conn, mut peer) = pair(&Limits::default());
    peer.write_all(b"one\n\0\0\0\x03abcrest")
        .await
        .expect("write");
    drop(peer);
    assert_eq!(
        conn.read_line().await.expect("line").as_deref(),
        Some(&b"one\n"[..])
    );
    assert_eq!(
        conn.read_frame().await.expect("frame").as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(
        conn.read_chunk().await.expect("chunk").as_deref(),
        Some(&b"rest"[..])
    );
    assert_eq!(conn.read_chunk().await.expect("eof"), None);
}

#[tokio::test]
async fn a_read_cancelled_mid_line_loses_nothing() {
    let (mut conn, mut peer) = pair(&Limits::default());
    peer.write_all(b"hel").await.expect("write");
    let cancelled = tokio::time::timeout(Duration::from_millis(20), conn.read_line()).await;
    assert!(cancelled.is_err(), "no full line yet");
    peer.write_all(b"lo\n").await.expect("write");
    assert_eq!(
        conn.read_line().await.expect("line").as_deref(),
        Some(&b"hello\n"[..])
    );
}

#[tokio::test(start_paused = true)]
async fn idle_peers_time_out() {
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(5)),
        ..Limits::default()
    };
    let (mut conn, _peer) = pair(&limits);
    let err = conn.read_line().await.expect_err("idle");
    assert_eq!(err.kind(), ErrorKind::IdleTimeout);
}

#[tokio::test]
async fn drain_ends_input_only_at_a_message_boundary() {
    let (mut conn, mut peer) = pair(&Limits::default());
    let token = CancellationToken::new();
    conn.set_drain(&token);
    peer.write_all(b"par").await.expect("write");
    token.cancel();
    let finish = async {
        peer.write_all(b"tial\n").await.expect("write");
        peer
    };
    let (line, _peer) = tokio::join!(conn.read_line(), finish);
    assert_eq!(line.expect("line").as_deref(), Some(&b"partial\n"[..]));
    assert_eq!(conn.read_line().await.expect("drained"), None);
}

#[tokio::test]
async fn send_parts_writes_every_part_in_order_after_queued_output() {
    let (mut conn, mut peer) = pair(&Limits::default());
    conn.write_all(b"queued ").await.expect("queue");
    let parts: Vec<Bytes> = (0..2000).map(|i| Bytes::from(format!("{i} "))).collect();
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        got
    });
    conn.send_parts(&parts).await.expect("send");
    drop(conn);
    let got = reading.await.expect("reader");
    let want: String = std::iter::once("queued ".to_owned())
        .chain((0..2000).map(|i| format!("{i} ")))
        .collect();
    assert_eq!(String::from_utf8(got).expect("utf8"), want);
}

/// A connection over a pipe that holds only `room` bytes: every large write is partial.
fn narrow_pair(limits: &Limits, room: usize) -> (Connection, tokio::io::DuplexStream) {
    let (a, b) = tokio::io::duplex(room);
    (
        Connection::with_limits(Stream::other(a), PeerAddr::Unknown, limits),
        b,
    )
}

#[tokio::test]
async fn send_through_partial_writes_delivers_queued_output_then_the_data_in_order() {
    let (mut conn, mut peer) = narrow_pair(&Limits::default(), 61);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        got
    });
    // Straight from the caller's slice ...
    conn.send(&data).await.expect("send");
    // ... and joined to queued output.
    conn.write_line(b"queued").await.expect("queue");
    conn.send(&data[..5000]).await.expect("send after queue");
    conn.send(b"").await.expect("empty send");
    drop(conn);
    let got = reading.await.expect("reader");
    let mut want = data.clone();
    want.extend_from_slice(b"queued\n");
    want.extend_from_slice(&data[..5000]);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "bytes out of order");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_takes_nothing_times_out_a_send() {
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(5)),
        ..Limits::default()
    };
    let (mut conn, _peer) = narrow_pair(&limits, 16);
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), conn.send(&[1u8; 64]))
        .await
        .expect("the idle timeout ends the send")
        .expect_err("stalled");
    assert_eq!(err.kind(), ErrorKind::IdleTimeout);
    assert!(err.to_string().contains("took nothing"), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn split_halves_keep_buffers() {
    let (mut conn, mut peer) = pair(&Limits::default());
    peer.write_all(b"a\nb\n").await.expect("write");
    assert_eq!(
        conn.read_line().await.expect("a").as_deref(),
        Some(&b"a\n"[..])
    );
    conn.write_line(b"queued").await.expect("queue");
    let (mut reader, mut writer) = conn.into_split();
    assert_eq!(
        reader.read_line().await.expect("b").as_deref(),
        Some(&b"b\n"[..])
    );
    writer.flush().await.expect("flush");
    let mut got = [0u8; 7];
    peer.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"queued\n");
}
