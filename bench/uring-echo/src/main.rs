//! A minimal echo server on io_uring (monoio), written the way the tokio baseline is: read into
//! an 8 KiB buffer, write what was read, until the peer closes. One runtime per thread, one
//! thread per core (`THREADS`, default all), each accepting on its own `SO_REUSEPORT` listener
//! on the same port, as `socketeer serve echo --threads` does with tokio.
//!
//! ```text
//! uring-echo 127.0.0.1:0          # prints "listening on tcp://127.0.0.1:PORT"
//! THREADS=1 uring-echo 127.0.0.1:0
//! RING=plain uring-echo 127.0.0.1:0   # no setup flags (monoio's default ring)
//! ```
//!
//! By default the ring is set up with `COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN`
//! (completions run when the thread enters the ring, not by interrupting it): the setup the
//! io_uring authors recommend for a thread-per-core server.

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use std::io::Write as _;

fn main() -> std::io::Result<()> {
    let at: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9997".into())
        .trim_start_matches("tcp://")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let threads = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
    // The first thread's listener picks the port (":0"); the others join it.
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    let mut at = at;
    for i in 0..threads {
        let port_tx = port_tx.clone();
        handles.push(std::thread::spawn(move || {
            let mut ring = io_uring::IoUring::builder();
            if std::env::var("RING").as_deref() != Ok("plain") {
                ring.setup_coop_taskrun()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
            }
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(4096)
                .uring_builder(ring)
                .build()
                .expect("an io_uring runtime (is io_uring allowed here?)");
            rt.block_on(async move {
                let listener = TcpListener::bind_with_config(at, &opts).expect("listener");
                let _ = port_tx.send(listener.local_addr().expect("address"));
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(echo(stream));
                }
            });
        }));
        let bound = port_rx
            .recv()
            .map_err(|_| std::io::Error::other("a thread failed"))?;
        if i == 0 {
            at = bound;
            println!("listening on tcp://{at}");
            std::io::stdout().flush()?;
        }
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Echoes what the peer sends until it closes.
async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 8192];
    loop {
        let (read, b) = stream.read(buf).await;
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (written, b) = stream.write_all(monoio::buf::SliceMut::new(b, 0, n)).await;
        if written.is_err() {
            return;
        }
        buf = b.into_inner();
    }
}
