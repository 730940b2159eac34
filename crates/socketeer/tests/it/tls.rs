//! TLS through real sockets: CA, pin and insecure verification; wrong CA and wrong pin refused;
//! authentication bound to the TLS session so a relay between two sessions fails.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use socketeer::{
    Authenticator, ClientKey, ClientOptions, Endpoint, ErrorKind, KeyStore, Limits,
    ServerVerification, TlsAcceptor, TlsConnector, client,
};

use crate::auth::WhoAmI;
use crate::support::{KEY_A, Running, TempDir, certificates, start_with};

async fn tls_server(dir: &TempDir) -> (Running, std::path::PathBuf, Vec<u8>) {
    let (ca, cert, key, der) = certificates(dir, "server");
    let acceptor = TlsAcceptor::from_pem_files(&cert, &key).expect("acceptor");
    let keys = Arc::new(KeyStore::from_keys(
        socketeer::keys::parse_keys(KEY_A).expect("keys"),
    ));
    let handler = WhoAmI {
        served: Arc::new(AtomicUsize::new(0)),
    };
    let server = start_with(
        move || handler.clone(),
        Limits::default(),
        move |s| s.tls(acceptor).authenticate(Authenticator::new(keys)),
    )
    .await;
    (server, ca, der)
}

fn options(verification: ServerVerification) -> ClientOptions {
    let mut options = ClientOptions::default();
    options.tls = Some(TlsConnector::new(verification).expect("connector"));
    options.key = Some(ClientKey::new("robot-1", KEY_A).expect("key"));
    options
}

async fn round_trip(endpoint: &Endpoint, options: &ClientOptions) -> socketeer::Result<String> {
    let mut conn = client::connect_with(endpoint, options).await?;
    assert!(conn.is_tls() && conn.tls_exporter().is_some());
    conn.send(b"over tls\n").await?;
    let line = conn.read_line().await?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[tokio::test]
async fn ca_pin_and_insecure_verification() {
    let dir = TempDir::new("tls");
    let (server, ca, der) = tls_server(&dir).await;
    let ep = &server.endpoint;
    let by_ca = options(ServerVerification::ca_file(&ca).expect("ca"));
    assert_eq!(
        round_trip(ep, &by_ca).await.expect("ca"),
        "robot-1 over tls\n"
    );
    let pin = socketeer::tls::parse_pin(&socketeer::tls::fingerprint(&der)).expect("pin");
    assert_eq!(
        round_trip(ep, &options(ServerVerification::Pin(pin)))
            .await
            .expect("pin"),
        "robot-1 over tls\n"
    );
    assert_eq!(
        round_trip(ep, &options(ServerVerification::Insecure))
            .await
            .expect("insecure"),
        "robot-1 over tls\n"
    );

    let err = round_trip(ep, &options(ServerVerification::Pin([0; 32])))
        .await
        .expect_err("wrong pin");
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let (other_ca, ..) = certificates(&dir, "other");
    let wrong_ca = options(ServerVerification::ca_file(&other_ca).expect("other ca"));
    let err = round_trip(ep, &wrong_ca).await.expect_err("wrong ca");
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    // The certificate names localhost and 127.0.0.1, not other names.
    let mut wrong_name = options(ServerVerification::ca_file(&ca).expect("ca"));
    wrong_name.server_name = Some("hub.example".into());
    assert_eq!(
        round_trip(ep, &wrong_name)
            .await
            .expect_err("wrong name")
            .kind(),
        ErrorKind::Tls
    );
}

#[tokio::test]
async fn a_relay_between_two_tls_sessions_cannot_pass_authentication() {
    let dir = TempDir::new("relay");
    let (server, ca, _) = tls_server(&dir).await;
    // The relay terminates the client's TLS with its own certificate and opens its own TLS
    // session to the server, passing bytes both ways.
    let (_, relay_cert, relay_key, _) = certificates(&dir, "relay");
    let relay_acceptor =
        TlsAcceptor::from_pem_files(&relay_cert, &relay_key).expect("relay acceptor");
    let upstream =
        TlsConnector::new(ServerVerification::ca_file(&ca).expect("ca")).expect("connector");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let relay_addr = listener.local_addr().expect("addr");
    let server_ep = server.endpoint.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let (mut downstream, _) = relay_acceptor
            .accept(socketeer::Stream::Tcp(tcp))
            .await
            .expect("tls in");
        let (stream, _) = client::connect_stream(&server_ep, std::time::Duration::from_secs(5))
            .await
            .expect("up");
        let (mut up, _) = upstream
            .connect(stream, "localhost")
            .await
            .expect("tls out");
        let _ = tokio::io::copy_bidirectional(&mut downstream, &mut up).await;
    });
    let err = round_trip(
        &Endpoint::tcp(relay_addr),
        &options(ServerVerification::Insecure),
    )
    .await
    .expect_err("relayed authentication must fail");
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
}
