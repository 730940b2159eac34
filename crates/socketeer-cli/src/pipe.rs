//! Joining stdin and stdout to a peer, for `connect` and `listen`: stdin goes to the socket
//! (`\n` as `\r\n` with `--crlf`), the socket to stdout (hex-dumped with `--hex`). On a stream,
//! stdin's end half-closes the socket and the peer is read until it closes (or `--quit-after`);
//! the peer closing first ends everything, as with ncat. On datagrams each stdin read is one
//! datagram, and after stdin ends replies are printed for `--quit-after` seconds (default 1).

use std::time::Duration;

use bytes::Bytes;
use socketeer::{Connection, ConnectionReader, ConnectionWriter, DatagramSocket, PeerAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::cli::PipeArgs;
use crate::hexdump::HexDump;

const STDIN_CHUNK: usize = 16 * 1024;
const DATAGRAM_QUIT_AFTER: Duration = Duration::from_secs(1);

/// Rewrites `\n` as `\r\n` (leaving existing `\r\n` alone), across chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct CrLf {
    last: u8,
}

impl CrLf {
    pub(crate) fn convert(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + data.len() / 8);
        for &b in data {
            if b == b'\n' && self.last != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            self.last = b;
        }
        out
    }
}

/// Reads stdin in chunks, applying `--crlf`; `None` at its end.
pub(crate) struct StdinChunks {
    stdin: tokio::io::Stdin,
    buf: Vec<u8>,
    crlf: Option<CrLf>,
}

impl StdinChunks {
    pub(crate) fn new(args: &PipeArgs) -> Self {
        Self {
            stdin: tokio::io::stdin(),
            buf: vec![0; STDIN_CHUNK],
            crlf: args.crlf.then(CrLf::default),
        }
    }

    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        let n = self.stdin.read(&mut self.buf).await?;
        if n == 0 {
            return Ok(None);
        }
        let data = &self.buf[..n];
        Ok(Some(match &mut self.crlf {
            Some(crlf) => Bytes::from(crlf.convert(data)),
            None => Bytes::copy_from_slice(data),
        }))
    }
}

/// Writes received data to stdout, raw or hex-dumped; `--send-only` discards it.
pub(crate) struct Output {
    stdout: tokio::io::Stdout,
    hex: Option<HexDump>,
    discard: bool,
}

impl Output {
    pub(crate) fn new(args: &PipeArgs) -> Self {
        Self {
            stdout: tokio::io::stdout(),
            hex: args.hex.then(HexDump::default),
            discard: args.send_only,
        }
    }

    /// Writes `data`; `Ok(false)` when stdout's reader has gone (`socketeer connect … | head`),
    /// which ends the session quietly, as it would end `nc`.
    pub(crate) async fn write(&mut self, data: &[u8]) -> std::io::Result<bool> {
        if self.discard {
            return Ok(true);
        }
        let written = match &mut self.hex {
            Some(hex) => self.stdout.write_all(hex.dump(data).as_bytes()).await,
            None => self.stdout.write_all(data).await,
        };
        let written = match written {
            Ok(()) => self.stdout.flush().await,
            failed => failed,
        };
        match written {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// Joins stdin/stdout to a stream connection until both directions are done.
pub(crate) async fn stream(conn: Connection, args: &PipeArgs) -> anyhow::Result<()> {
    let (reader, writer) = conn.into_split();
    let to_stdout = socket_to_stdout(reader, Output::new(args));
    tokio::pin!(to_stdout);
    if !args.recv_only {
        tokio::select! {
            result = &mut to_stdout => return result,
            result = stdin_to_socket(writer, args) => result?,
        }
        if args.send_only {
            return Ok(());
        }
    }
    match args.quit_after {
        Some(limit) => tokio::time::timeout(limit, to_stdout)
            .await
            .unwrap_or(Ok(())),
        None => to_stdout.await,
    }
}

async fn socket_to_stdout(mut reader: ConnectionReader, mut out: Output) -> anyhow::Result<()> {
    while let Some(chunk) = reader.read_chunk().await? {
        if !out.write(&chunk).await? {
            break;
        }
    }
    Ok(())
}

/// Sends stdin to the socket, then half-closes it. A peer that has gone away ends this quietly.
async fn stdin_to_socket(mut writer: ConnectionWriter, args: &PipeArgs) -> anyhow::Result<()> {
    let mut stdin = StdinChunks::new(args);
    let result = async {
        while let Some(chunk) = stdin.next().await? {
            writer.send(&chunk).await?;
        }
        writer.shutdown_write().await?;
        anyhow::Ok(())
    }
    .await;
    match result {
        Err(err)
            if err
                .downcast_ref::<socketeer::Error>()
                .is_some_and(socketeer::Error::is_disconnect) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Where datagrams from stdin go.
pub(crate) enum Target {
    /// The socket is connected: `send`.
    Connected,
    /// A listening socket answers whoever sent last.
    LastSender(Mutex<Option<PeerAddr>>),
}

/// Joins stdin/stdout to a datagram socket.
pub(crate) async fn datagrams(
    socket: DatagramSocket,
    target: Target,
    args: &PipeArgs,
) -> anyhow::Result<()> {
    let from_peer = async {
        let mut out = Output::new(args);
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, peer) = match &target {
                Target::Connected => (socket.recv(&mut buf).await?, None),
                Target::LastSender(_) => {
                    let (n, peer) = socket.recv_from(&mut buf).await?;
                    (n, Some(peer))
                }
            };
            if let (Target::LastSender(last), Some(peer)) = (&target, peer) {
                *last.lock().await = Some(peer);
            }
            if !out.write(&buf[..n]).await? {
                return anyhow::Ok(());
            }
        }
    };
    tokio::pin!(from_peer);
    if !args.recv_only {
        let to_peer = async {
            let mut stdin = StdinChunks::new(args);
            while let Some(chunk) = stdin.next().await? {
                match &target {
                    Target::Connected => {
                        socket.send(&chunk).await?;
                    }
                    Target::LastSender(last) => match last.lock().await.clone() {
                        Some(peer) => {
                            socket.send_to(&chunk, &peer).await?;
                        }
                        None => tracing::warn!(
                            "no peer has sent anything yet; dropping {} bytes of stdin",
                            chunk.len()
                        ),
                    },
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            result = &mut from_peer => return result,
            result = to_peer => result?,
        }
    }
    let wait = args
        .quit_after
        .or((!args.recv_only).then_some(DATAGRAM_QUIT_AFTER));
    match wait {
        Some(limit) => tokio::time::timeout(limit, from_peer)
            .await
            .unwrap_or(Ok(())),
        None => from_peer.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_conversion_spans_chunks_and_keeps_existing_crlf() {
        let mut c = CrLf::default();
        assert_eq!(c.convert(b"a\nb\r"), b"a\r\nb\r");
        assert_eq!(c.convert(b"\nc\n"), b"\nc\r\n");
    }
}
