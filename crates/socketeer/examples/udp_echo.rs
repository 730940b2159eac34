//! The tutorials' UDP server: each datagram is answered to its sender.
//!
//! ```text
//! cargo run -p socketeer --example udp_echo
//! python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
//!   s.sendto(b'hi', ('127.0.0.1', 9999)); print(s.recvfrom(1024))"
//! ```

use socketeer::{BindOptions, Datagram, DatagramHandler, DatagramServer, DatagramSocket, Result};

struct Echo;

impl DatagramHandler for Echo {
    async fn handle(&self, datagram: Datagram) -> Result<()> {
        println!("{} sent {} bytes", datagram.peer(), datagram.data().len());
        datagram.reply(datagram.data()).await
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "udp://127.0.0.1:9999".into());
    let socket = DatagramSocket::bind(&endpoint.parse()?, &BindOptions::default()).await?;
    println!("listening on {}", socket.local_endpoint());
    DatagramServer::new(socket, Echo).serve_forever().await
}
