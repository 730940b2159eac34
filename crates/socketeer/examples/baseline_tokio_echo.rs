//! The benchmark's reference: a minimal echo server written with tokio alone (no socketeer),
//! the way tokio's own examples write one. `scripts/bench-echo.sh` loads it and
//! `socketeer serve echo` with the same client in the same run.
//!
//! ```text
//! cargo run --release -p socketeer --example baseline_tokio_echo -- 127.0.0.1:0
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9997".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on tcp://{}", listener.local_addr()?);
    loop {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(async move {
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
        });
    }
}
