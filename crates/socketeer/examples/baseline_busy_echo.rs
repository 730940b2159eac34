//! A benchmark calibration, not a server to use: the reference tokio echo
//! (`baseline_tokio_echo`) made to spend `SPIN_NS` nanoseconds of CPU on every message before
//! echoing it. `bench/rotate.sh` runs it beside the plain reference to show how far the tail
//! latency at a thousand busy connections moves for a given extra cost per message (see
//! docs/performance.md, "p99 at 1000 connections with the default runtime").
//!
//! ```text
//! cargo build --release -p socketeer --example baseline_busy_echo
//! SPIN_NS=200 target/release/examples/baseline_busy_echo 127.0.0.1:0
//! ```

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9997".into());
    let spin = match std::env::var("SPIN_NS") {
        Err(_) => Duration::ZERO,
        Ok(ns) => match ns.parse() {
            Ok(ns) => Duration::from_nanos(ns),
            Err(err) => {
                eprintln!("baseline_busy_echo: SPIN_NS={ns}: {err}");
                std::process::exit(2);
            }
        },
    };
    let listener = tokio::net::TcpListener::bind(addr.trim_start_matches("tcp://")).await?;
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
                        if !spin.is_zero() {
                            let started = Instant::now();
                            while started.elapsed() < spin {
                                std::hint::spin_loop();
                            }
                        }
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
