//! The tutorials' threaded telnet-style server: a welcome on connect, then `OK...` and each
//! line back, for many clients at once. Ctrl-C stops accepting and lets clients finish.
//!
//! ```text
//! cargo run -p socketeer --example telnet_server
//! nc 127.0.0.1 9999          # or: telnet 127.0.0.1 9999 — open several at once
//! ```

use socketeer::{BindOptions, Connection, Handler, Listener, Result, Server};

struct Telnet;

impl Handler for Telnet {
    async fn setup(&mut self, conn: &mut Connection) -> Result<()> {
        println!("{} joined", conn.peer_addr());
        conn.send(b"Welcome to the server. Type something and hit enter\n")
            .await
    }

    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while let Some(line) = conn.read_line().await? {
            conn.write_all(b"OK...").await?;
            conn.send(&line).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, conn: &mut Connection) {
        println!("{} left", conn.peer_addr());
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".into());
    let mut signals = socketeer::Signals::new()?;
    let listener = Listener::bind(&endpoint.parse()?, &BindOptions::default()).await?;
    println!("listening on {}", listener.local_endpoint());
    let server = Server::new(listener, || Telnet);
    let shutdown = server.shutdown_handle();
    tokio::spawn(async move {
        signals.recv().await;
        shutdown.trigger();
    });
    server.serve_forever().await
}
