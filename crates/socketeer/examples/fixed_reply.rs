//! The tutorials' first server: answer every client "I am server." once, then close.
//!
//! ```text
//! cargo run -p socketeer --example fixed_reply            # listens on 127.0.0.1:9999
//! printf hello | nc -N 127.0.0.1 9999                     # prints: I am server.
//! python3 -c "import socket; s=socket.create_connection(('127.0.0.1',9999)); s.send(b'hi'); print(s.recv(1024))"
//! ```

use socketeer::{BindOptions, Connection, Handler, Listener, Result, Server};

struct FixedReply;

impl Handler for FixedReply {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        if let Some(request) = conn.read_chunk().await? {
            println!(
                "{} says {:?}",
                conn.peer_addr(),
                String::from_utf8_lossy(&request)
            );
            conn.send(b"I am server.").await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".into());
    let listener = Listener::bind(&endpoint.parse()?, &BindOptions::default()).await?;
    println!("listening on {}", listener.local_endpoint());
    Server::new(listener, || FixedReply).serve_forever().await
}
