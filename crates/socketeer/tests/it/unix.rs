//! Unix sockets: stream and datagram echo, mode 0600, stale files replaced, live sockets and
//! non-sockets refused, files removed when the server stops.

use std::os::unix::fs::PermissionsExt;

use socketeer::{
    BindOptions, Connection, DatagramServer, DatagramSocket, Endpoint, ErrorKind, Listener, Server,
    client,
};

use crate::support::{TempDir, UpperLines};

fn unix(path: &std::path::Path) -> Endpoint {
    Endpoint::Unix(path.to_path_buf())
}

async fn line_exchange(conn: &mut Connection, msg: &[u8], expect: &[u8]) {
    conn.send(msg).await.expect("send");
    assert_eq!(
        conn.read_line().await.expect("reply").as_deref(),
        Some(expect)
    );
}

#[tokio::test]
async fn unix_stream_server_echoes_with_mode_0600_and_cleans_up() {
    let dir = TempDir::new("stream");
    let path = dir.path("echo.sock");
    let listener = Listener::bind(&unix(&path), &BindOptions::default())
        .await
        .expect("bind");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let server = Server::new(listener, || UpperLines);
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.serve_forever());

    let mut conn = client::connect(&unix(&path)).await.expect("connect");
    line_exchange(&mut conn, b"hi\n", b"HI\n").await;
    drop(conn);
    shutdown.trigger();
    task.await.expect("join").expect("serve");
    assert!(!path.exists(), "socket file removed on stop");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_but_a_live_one_or_a_plain_file_is_refused() {
    let dir = TempDir::new("stale");
    let path = dir.path("s.sock");
    // A stale socket: bound by a std listener that is then dropped without removing the file.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("std bind"));
    assert!(path.exists());
    let live = Listener::bind(&unix(&path), &BindOptions::default())
        .await
        .expect("stale replaced");

    let err = Listener::bind(&unix(&path), &BindOptions::default())
        .await
        .expect_err("live");
    assert_eq!(err.kind(), ErrorKind::Bind);
    assert!(err.to_string().contains("live server"), "{err}");
    drop(live);

    let plain = dir.path("plain");
    std::fs::write(&plain, b"data").expect("write");
    let err = Listener::bind(&unix(&plain), &BindOptions::default())
        .await
        .expect_err("plain file");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&plain).expect("untouched"), b"data");
}

#[tokio::test]
async fn unix_datagram_server_answers_a_connected_client() {
    let dir = TempDir::new("dgram");
    let path = dir.path("d.sock");
    let ep = Endpoint::UnixDatagram(path.clone());
    let socket = DatagramSocket::bind(&ep, &BindOptions::default())
        .await
        .expect("bind");
    struct Echo;
    impl socketeer::DatagramHandler for Echo {
        async fn handle(&self, d: socketeer::Datagram) -> socketeer::Result<()> {
            d.reply(d.data()).await
        }
    }
    let server = DatagramServer::new(socket, Echo);
    let client = DatagramSocket::connect(&ep).await.expect("connect");
    client.send(b"over unixgram").await.expect("send");
    server.handle_request().await.expect("handled");
    let mut buf = [0u8; 32];
    let n = client.recv(&mut buf).await.expect("reply");
    assert_eq!(&buf[..n], b"over unixgram");
}
