//! The benchmark's reference: a minimal echo server written with tokio alone (no socketeer),
//! the way tokio's own examples write one. `scripts/bench-echo.sh` loads it and
//! `socketeer serve echo` with the same client in the same run; `bench/sockets.sh` does the
//! same over Unix stream sockets, UDP and Unix datagram sockets.
//!
//! ```text
//! cargo run --release -p socketeer --example baseline_tokio_echo -- 127.0.0.1:0
//! cargo run --release -p socketeer --example baseline_tokio_echo -- unix:///tmp/echo.sock
//! cargo run --release -p socketeer --example baseline_tokio_echo -- udp://127.0.0.1:0
//! cargo run --release -p socketeer --example baseline_tokio_echo -- unixgram:///tmp/echo.dgram
//! ```

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9997".into());
    if let Some(path) = addr.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        println!("listening on unix://{path}");
        loop {
            let (socket, _) = listener.accept().await?;
            tokio::spawn(echo(socket));
        }
    }
    if let Some(at) = addr.strip_prefix("udp://") {
        let socket = tokio::net::UdpSocket::bind(at).await?;
        println!("listening on udp://{}", socket.local_addr()?);
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await?;
            socket.send_to(&buf[..n], from).await?;
        }
    }
    if let Some(path) = addr.strip_prefix("unixgram://") {
        let _ = std::fs::remove_file(path);
        let socket = tokio::net::UnixDatagram::bind(path)?;
        println!("listening on unixgram://{path}");
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await?;
            if let Some(to) = from.as_pathname() {
                socket.send_to(&buf[..n], to).await?;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(addr.trim_start_matches("tcp://")).await?;
    println!("listening on tcp://{}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(echo(socket));
    }
}

/// Echoes what a stream connection sends until it closes.
async fn echo(mut socket: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = vec![0u8; 8192];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if socket.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
