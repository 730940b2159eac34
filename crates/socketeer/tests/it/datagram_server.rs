//! The datagram server over UDP: replies go to each sender; low source ports get none.

use socketeer::{
    BindOptions, Datagram, DatagramHandler, DatagramServer, DatagramSocket, Endpoint, ErrorKind,
    Result,
};
use std::io::Write;

use tokio::net::UdpSocket;

struct Upper;

impl DatagramHandler for Upper {
    async fn handle(&self, datagram: Datagram) -> Result<()> {
        datagram.reply(&datagram.data().to_ascii_uppercase()).await
    }
}

async fn bind_udp() -> DatagramSocket {
    DatagramSocket::bind(
        &"udp://127.0.0.1:0".parse().expect("ep"),
        &BindOptions::default(),
    )
    .await
    .expect("bind")
}

#[tokio::test]
async fn each_datagram_is_answered_to_its_own_sender() {
    let server = DatagramServer::new(bind_udp().await, Upper);
    let Endpoint::Udp(hp) = server.local_endpoint().clone() else {
        panic!("udp")
    };
    let addr = format!("127.0.0.1:{}", hp.port());
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.serve_forever());

    let a = UdpSocket::bind("127.0.0.1:0").await.expect("a");
    let b = UdpSocket::bind("127.0.0.1:0").await.expect("b");
    a.send_to("hello 欢迎".as_bytes(), &addr)
        .await
        .expect("send a");
    b.send_to(b"from b", &addr).await.expect("send b");
    let mut buf = [0u8; 64];
    let n = a.recv(&mut buf).await.expect("reply a");
    assert_eq!(&buf[..n], "HELLO 欢迎".as_bytes());
    let n = b.recv(&mut buf).await.expect("reply b");
    assert_eq!(&buf[..n], b"FROM B");

    shutdown.trigger();
    task.await.expect("join").expect("serve");
}

#[tokio::test]
async fn replies_to_privileged_source_ports_are_refused() {
    let server = DatagramServer::new(bind_udp().await, Upper);
    let Endpoint::Udp(hp) = server.local_endpoint().clone() else {
        panic!("udp")
    };
    // Binding a port below 1024 needs privilege; where the test lacks it, say so and skip.
    let low = match UdpSocket::bind("127.0.0.1:999").await {
        Ok(s) => s,
        Err(e) => {
            // Straight to stderr, past libtest's capture, so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED replies_to_privileged_source_ports_are_refused: cannot bind a port below 1024 ({e})"
            );
            return;
        }
    };
    low.send_to(b"reflect me", ("127.0.0.1", hp.port()))
        .await
        .expect("send");
    let err = server.handle_request().await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains("source port below 1024"), "{err}");
}

#[tokio::test]
async fn a_connected_client_socket_talks_to_the_server() {
    let server = DatagramServer::new(bind_udp().await, Upper);
    let endpoint = server.local_endpoint().clone();
    let client = DatagramSocket::connect(&endpoint).await.expect("connect");
    client.send(b"ping").await.expect("send");
    server.handle_request().await.expect("handled");
    let mut buf = [0u8; 16];
    let n = client.recv(&mut buf).await.expect("reply");
    assert_eq!(&buf[..n], b"PING");
}
