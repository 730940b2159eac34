//! The tutorials' Unix socket server: line echo on a socket file (mode 0600; a stale file from
//! a crashed run is replaced; the file is removed when the server stops).
//!
//! ```text
//! cargo run -p socketeer --example unix_echo               # unix:///tmp/socketeer-echo.sock
//! printf 'hi\n' | nc -N -U /tmp/socketeer-echo.sock
//! python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.connect('/tmp/socketeer-echo.sock'); \
//!   s.sendall(b'hi\n'); print(s.recv(1024))"
//! ```

use socketeer::{BindOptions, Connection, Handler, Listener, Result, Server};

struct Echo;

impl Handler for Echo {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        while let Some(line) = conn.read_line().await? {
            conn.send(&line).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "unix:///tmp/socketeer-echo.sock".into());
    let mut signals = socketeer::Signals::new()?;
    let listener = Listener::bind(&endpoint.parse()?, &BindOptions::default()).await?;
    println!("listening on {}", listener.local_endpoint());
    let server = Server::new(listener, || Echo);
    let shutdown = server.shutdown_handle();
    tokio::spawn(async move {
        signals.recv().await;
        shutdown.trigger();
    });
    // Stopping through the shutdown switch drops the listener, which removes the socket file.
    server.serve_forever().await
}
