//! The tutorials' upper-case echo server: every chunk comes back upper-cased (ASCII letters
//! only, so `hello 欢迎` comes back as `HELLO 欢迎`).
//!
//! ```text
//! cargo run -p socketeer --example upper_echo
//! printf 'hello 欢迎\n' | nc -N 127.0.0.1 9999             # prints: HELLO 欢迎
//! ```

use socketeer::{BindOptions, Connection, Handler, Listener, Result, Server};

struct Upper;

impl Handler for Upper {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while let Some(chunk) = conn.read_chunk().await? {
            conn.send(&chunk.to_ascii_uppercase()).await?;
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
    Server::new(listener, || Upper).serve_forever().await
}
