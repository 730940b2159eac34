//! Authentication through real sockets: the tutorial client, socketeer mode, every malformed
//! answer, replay, reflection, stalls, pre-auth caps, penalties, allow/deny, key files.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socketeer::{
    AccessList, Admission, AdmissionLimits, AuthMode, Authenticator, ClientKey, ClientOptions,
    Connection, ErrorKind, Handler, KeyStore, Keys, Limits, Result, client,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    KEY_A, KEY_B, Running, TempDir, challenge, connect_from, key_file, read_to_end, start_with,
    tutorial_answer,
};

/// Answers each line with "<device or -> <line>", and counts connections it served.
#[derive(Clone)]
pub struct WhoAmI {
    pub served: Arc<AtomicUsize>,
}

impl Handler for WhoAmI {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        self.served.fetch_add(1, Ordering::SeqCst);
        let who = conn.device().unwrap_or("-").to_owned();
        while let Some(line) = conn.read_line().await? {
            conn.send(format!("{who} {}", String::from_utf8_lossy(&line)).as_bytes())
                .await?;
        }
        Ok(())
    }
}

struct Guarded {
    server: Running,
    served: Arc<AtomicUsize>,
}

fn keys(text: &str) -> Arc<KeyStore> {
    Arc::new(KeyStore::from_keys(
        socketeer::keys::parse_keys(text).expect("keys"),
    ))
}

/// A server requiring authentication with `keys`; no penalties unless `admission` says.
async fn guarded(
    keys: Arc<KeyStore>,
    limits: Limits,
    admission: Option<AdmissionLimits>,
) -> Guarded {
    let served = Arc::new(AtomicUsize::new(0));
    let handler = WhoAmI {
        served: Arc::clone(&served),
    };
    let admission = admission.unwrap_or_else(|| {
        let mut no_penalty = AdmissionLimits::default();
        no_penalty.penalty = Duration::ZERO;
        no_penalty
    });
    let server = start_with(
        move || handler.clone(),
        limits,
        move |server| {
            server
                .authenticate(Authenticator::new(keys))
                .admission(Admission::new(admission))
        },
    )
    .await;
    Guarded { server, served }
}

async fn line(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).await.is_ok() {
        out.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_tutorial_client_authenticates_and_its_data_right_behind_the_answer_is_served() {
    let g = guarded(keys(KEY_A), Limits::default(), None).await;
    let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
    let c = challenge(&mut s).await;
    // One write: the answer and the first request together, as the tutorial's client does.
    s.write_all(format!("{}hello\n", tutorial_answer(KEY_A, &c)).as_bytes())
        .await
        .expect("send");
    assert_eq!(line(&mut s).await, "- hello\n");
    assert_eq!(g.served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_correct_answer_sent_one_byte_at_a_time_is_accepted() {
    let g = guarded(keys(KEY_A), Limits::default(), None).await;
    let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
    let c = challenge(&mut s).await;
    s.set_nodelay(true).expect("nodelay");
    for b in tutorial_answer(KEY_A, &c).bytes() {
        s.write_all(&[b]).await.expect("byte");
    }
    s.write_all(b"slow\n").await.expect("send");
    assert_eq!(line(&mut s).await, "- slow\n");
}

#[tokio::test]
async fn every_malformed_answer_is_refused_and_the_service_never_sees_it() {
    let mut limits = Limits::default();
    limits.handshake_timeout = Duration::from_millis(500);
    let g = guarded(keys(KEY_A), limits, None).await;
    type Answer = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let cases: Vec<(&str, Answer)> = vec![
        (
            "wrong key",
            Box::new(|c| tutorial_answer(KEY_B, c).into_bytes()),
        ),
        (
            "uppercase",
            Box::new(|c| tutorial_answer(KEY_A, c).to_uppercase().into_bytes()),
        ),
        (
            "non-hex",
            Box::new(|c| {
                tutorial_answer(KEY_A, c)
                    .replacen(|_| true, "g", 1)
                    .into_bytes()
            }),
        ),
        (
            "too short, then close",
            Box::new(|c| tutorial_answer(KEY_A, c).as_bytes()[..63].to_vec()),
        ),
        (
            "raw digest, not hex",
            Box::new(|c| {
                use hmac::Mac;
                let mut m =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY_A.as_bytes()).expect("key");
                m.update(c);
                m.finalize().into_bytes().to_vec()
            }),
        ),
        ("oversize garbage", Box::new(|_| vec![b'7'; 10_000])),
        ("empty, then close", Box::new(|_| Vec::new())),
        (
            "socketeer magic, then nonsense",
            Box::new(|_| b"SKT1\xff\xff\xff".to_vec()),
        ),
    ];
    for (what, answer) in &cases {
        let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
        let c = challenge(&mut s).await;
        s.write_all(&answer(&c)).await.expect("send");
        let _ = s.shutdown().await;
        assert!(
            read_to_end(&mut s).await.is_empty(),
            "{what}: refused with no reply"
        );
    }
    // A byte-by-byte dribble slower than the deadline, and silence, are cut at the deadline.
    for what in ["dribble", "silence"] {
        let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
        let c = challenge(&mut s).await;
        let started = Instant::now();
        if what == "dribble" {
            let answer = tutorial_answer(KEY_A, &c);
            for b in answer.bytes().take(10) {
                if s.write_all(&[b]).await.is_err() {
                    break; // cut off already
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), s.read_u8()).await;
            }
        }
        assert!(read_to_end(&mut s).await.is_empty(), "{what}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(5),
            "{what}: cut after {took:?}"
        );
    }
    assert_eq!(
        g.served.load(Ordering::SeqCst),
        0,
        "the service never saw a refused connection"
    );
}

#[tokio::test]
async fn socketeer_mode_names_the_device_and_proves_the_server() {
    let g = guarded(
        keys(&format!("robot-1 {KEY_A}\nrobot-2 {KEY_B}\n")),
        Limits::default(),
        None,
    )
    .await;
    let mut options = ClientOptions::default();
    options.key = Some(ClientKey::new("robot-2", KEY_B).expect("key"));
    let mut conn = client::connect_with(&g.server.endpoint, &options)
        .await
        .expect("authenticated");
    conn.send(b"hi\n").await.expect("send");
    assert_eq!(
        conn.read_line().await.expect("reply").as_deref(),
        Some(&b"robot-2 hi\n"[..])
    );

    // Claiming another device's name with one's own key fails.
    options.key = Some(ClientKey::new("robot-1", KEY_B).expect("key"));
    let err = client::connect_with(&g.server.endpoint, &options)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");

    // A tutorial client under per-device keys is known by the key it used.
    let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
    let c = challenge(&mut s).await;
    s.write_all(format!("{}who\n", tutorial_answer(KEY_A, &c)).as_bytes())
        .await
        .expect("send");
    assert_eq!(line(&mut s).await, "robot-1 who\n");
}

#[tokio::test]
async fn a_server_without_the_key_is_detected_by_the_client() {
    // The "server" holds a different key: it cannot produce the server proof.
    let fake = guarded(keys(&format!("robot-1 {KEY_B}\n")), Limits::default(), None).await;
    let mut options = ClientOptions::default();
    options.key = Some(ClientKey::new("robot-1", KEY_A).expect("key"));
    let err = client::connect_with(&fake.server.endpoint, &options)
        .await
        .expect_err("fake");
    assert_eq!(err.kind(), ErrorKind::Auth);

    // A server that just sends a challenge and answers anything with a made-up proof.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(&[7u8; 32]).await.expect("challenge");
        let mut answer = [0u8; 135];
        let _ = s.read(&mut answer).await;
        let mut reply = b"SKT1\x00\x20".to_vec();
        reply.extend_from_slice(&[0u8; 32]);
        s.write_all(&reply).await.expect("reply");
        let _ = s.read(&mut answer).await;
    });
    let err = client::connect_with(&socketeer::Endpoint::tcp(addr), &options)
        .await
        .expect_err("impostor");
    assert!(
        err.to_string().contains("may not be the real server"),
        "{err}"
    );

    // A server that closes before sending a challenge (one being restarted does): not a
    // refusal of our key, so a reconnecting client may try again.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        drop(s);
    });
    let err = client::connect_with(&socketeer::Endpoint::tcp(addr), &options)
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert!(
        err.to_string().contains("before sending its challenge"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_replays_of_a_recorded_answer_are_all_refused() {
    let g = guarded(keys(KEY_A), Limits::default(), None).await;
    // Record a real exchange.
    let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
    let c = challenge(&mut s).await;
    let recorded = tutorial_answer(KEY_A, &c);
    s.write_all(format!("{recorded}x\n").as_bytes())
        .await
        .expect("send");
    assert_eq!(line(&mut s).await, "- x\n");
    drop(s);
    let addr = g.server.addr;
    // Ten at a time: under the per-source cap of 16, so every replay reaches the answer check.
    let attackers = (0..10).map(|_| {
        let recorded = recorded.clone();
        tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..1000 {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                let _ = challenge(&mut s).await;
                s.write_all(format!("{recorded}x\n").as_bytes())
                    .await
                    .expect("replay");
                if !read_to_end(&mut s).await.is_empty() {
                    admitted += 1;
                }
            }
            admitted
        })
    });
    let mut admitted = 0;
    for a in attackers {
        admitted += a.await.expect("attacker");
    }
    assert_eq!(admitted, 0);
    assert_eq!(
        g.served.load(Ordering::SeqCst),
        1,
        "only the recorded, genuine session was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_challenges_are_all_distinct() {
    let g = guarded(keys(KEY_A), Limits::default(), None).await;
    let addr = g.server.addr;
    let collectors = (0..50).map(|i| {
        tokio::spawn(async move {
            // Several source addresses, and resets instead of TIME_WAIT, so ports never run out.
            let source = format!("127.0.1.{}", i % 50 + 1);
            let mut seen = Vec::with_capacity(2000);
            for _ in 0..2000 {
                let mut s = connect_from(&source, addr).await;
                seen.push(challenge(&mut s).await);
                #[allow(deprecated)] // linger 0: close with a reset, leaving no TIME_WAIT behind
                s.set_linger(Some(Duration::ZERO)).expect("linger");
            }
            seen
        })
    });
    let mut all = std::collections::HashSet::with_capacity(100_000);
    for c in collectors {
        for challenge in c.await.expect("collector") {
            assert!(all.insert(challenge), "a challenge repeated");
        }
    }
    assert_eq!(all.len(), 100_000);
}

/// Reads a whole socketeer-mode server reply: MAGIC, status, length, proof.
async fn server_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut reply = vec![0u8; 4 + 1 + 1 + 32];
    s.read_exact(&mut reply).await.expect("server reply");
    reply
}

fn socketeer_message(device: &str, nonce: &[u8; 32], proof: &[u8]) -> Vec<u8> {
    let mut m = b"SKT1".to_vec();
    m.push(device.len() as u8);
    m.extend_from_slice(device.as_bytes());
    m.push(32);
    m.extend_from_slice(nonce);
    m.push(proof.len() as u8);
    m.extend_from_slice(proof);
    m
}

fn proof(key: &str, label: &[u8], device: &str, challenge: &[u8], nonce: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    for part in [label, device.as_bytes(), challenge, nonce, b""] {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn replayed_and_reflected_socketeer_messages_fail() {
    let g = guarded(keys(KEY_A), Limits::default(), None).await;
    // A genuine exchange, computed by hand from the documented format.
    let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
    let c1 = challenge(&mut s).await;
    let nonce = [5u8; 32];
    let genuine = socketeer_message(
        "r1",
        &nonce,
        &proof(KEY_A, b"socketeer/1 client", "r1", &c1, &nonce),
    );
    s.write_all(&genuine).await.expect("send");
    let reply = server_reply(&mut s).await;
    assert_eq!(&reply[..6], b"SKT1\x00\x20", "accepted");
    assert_eq!(
        reply[6..],
        proof(KEY_A, b"socketeer/1 server", "r1", &c1, &nonce)[..],
        "server proof as documented"
    );
    drop(s);

    // Replay the client message on a new connection: the challenge differs.
    let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
    let _ = challenge(&mut s).await;
    s.write_all(&genuine).await.expect("replay");
    assert_eq!(
        read_to_end(&mut s).await.as_slice(),
        b"SKT1\x01",
        "replay refused"
    );

    // Reflect the server's proof back as a client proof, over a fresh challenge and over the old one.
    for target_nonce in [nonce, [6u8; 32]] {
        let mut s = TcpStream::connect(g.server.addr).await.expect("connect");
        let _ = challenge(&mut s).await;
        s.write_all(&socketeer_message("r1", &target_nonce, &reply[6..]))
            .await
            .expect("reflect");
        assert_eq!(
            read_to_end(&mut s).await.as_slice(),
            b"SKT1\x01",
            "reflection refused"
        );
    }

    // Reflect a challenge: open two connections and answer one with a proof over the other's
    // challenge (as a relay of the first's challenge to a second victim would need).
    let mut a = TcpStream::connect(g.server.addr).await.expect("a");
    let mut b = TcpStream::connect(g.server.addr).await.expect("b");
    let ca = challenge(&mut a).await;
    let _cb = challenge(&mut b).await;
    let cross = socketeer_message(
        "r1",
        &nonce,
        &proof(KEY_A, b"socketeer/1 server", "r1", &ca, &nonce),
    );
    b.write_all(&cross).await.expect("cross");
    assert_eq!(read_to_end(&mut b).await.as_slice(), b"SKT1\x01");
    assert_eq!(g.served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stalled_clients_do_not_lock_out_another_source_nor_their_own() {
    let mut limits = AdmissionLimits::default();
    limits.max_startups_per_source = 16;
    let g = guarded(keys(KEY_A), Limits::default(), Some(limits)).await;
    let mut stalled = Vec::with_capacity(1000);
    for _ in 0..1000 {
        stalled.push(connect_from("127.0.0.1", g.server.addr).await);
    }
    // A source at its cap makes room by ending its own oldest handshake: the first 984 end
    // (with their challenge sent, or before it), the last 16 wait for their answer.
    for s in stalled.iter_mut().take(984) {
        let got = read_to_end(s).await;
        assert!(got.is_empty() || got.len() == 32, "{got:?}");
    }
    // So a real client from that same source still gets in...
    let mut s = connect_from("127.0.0.1", g.server.addr).await;
    let c = challenge(&mut s).await;
    s.write_all(format!("{}same source\n", tutorial_answer(KEY_A, &c)).as_bytes())
        .await
        .expect("send");
    assert_eq!(line(&mut s).await, "- same source\n");
    // ...and one from another source too.
    let mut s = connect_from("127.0.0.2", g.server.addr).await;
    let c = challenge(&mut s).await;
    s.write_all(format!("{}still served\n", tutorial_answer(KEY_A, &c)).as_bytes())
        .await
        .expect("send");
    assert_eq!(line(&mut s).await, "- still served\n");
}

#[tokio::test]
async fn a_flood_from_many_sources_filling_every_place_does_not_lock_out_a_newcomer() {
    let mut limits = AdmissionLimits::default();
    limits.max_startups = 256;
    limits.max_startups_per_source = 16;
    let g = guarded(keys(KEY_A), Limits::default(), Some(limits)).await;
    // 16 addresses x 16 stalled handshakes: every place taken, each with its challenge.
    let mut stalled = Vec::with_capacity(256);
    for source in 10..26 {
        for _ in 0..16 {
            let mut s = connect_from(&format!("127.0.0.{source}"), g.server.addr).await;
            challenge(&mut s).await;
            stalled.push(s);
        }
    }
    // A newcomer takes the oldest place of a busiest source and is served.
    let mut s = connect_from("127.0.0.50", g.server.addr).await;
    let c = challenge(&mut s).await;
    s.write_all(format!("{}got in\n", tutorial_answer(KEY_A, &c)).as_bytes())
        .await
        .expect("send");
    assert_eq!(line(&mut s).await, "- got in\n");
    assert_eq!(
        read_to_end(&mut stalled[0]).await,
        b"",
        "the oldest place was given up"
    );
}

#[tokio::test]
async fn a_failed_attempt_penalizes_its_identity_at_its_source_only() {
    let mut admission = AdmissionLimits::default();
    admission.penalty = Duration::from_secs(60);
    let g = guarded(
        keys(&format!("robot-1 {KEY_A}\nrobot-2 {KEY_B}\n")),
        Limits::default(),
        Some(admission),
    )
    .await;
    let answer = |device: &str, key: &str, c: &[u8; 32]| {
        let nonce = [7u8; 32];
        socketeer_message(
            device,
            &nonce,
            &proof(key, b"socketeer/1 client", device, c, &nonce),
        )
    };
    // robot-1 with a wrong key, from 127.0.0.3.
    let mut s = connect_from("127.0.0.3", g.server.addr).await;
    let c = challenge(&mut s).await;
    s.write_all(&answer("robot-1", KEY_B, &c))
        .await
        .expect("wrong");
    assert_eq!(read_to_end(&mut s).await, b"SKT1\x01");
    // robot-1 again from there is refused once its answer names it, and told for how long,
    // even with the right key: one guess per penalty.
    let mut again = connect_from("127.0.0.3", g.server.addr).await;
    let c = challenge(&mut again).await;
    again
        .write_all(&answer("robot-1", KEY_A, &c))
        .await
        .expect("send");
    let refusal = String::from_utf8(read_to_end(&mut again).await).expect("text");
    assert!(
        refusal.starts_with(
            "socketeer: refused: device \"robot-1\" failed authentication from this address and is locked out; try again in"
        ),
        "{refusal}"
    );
    // robot-2 behind the same address is not held back; nor are unnamed (tutorial) clients,
    // nor robot-1 from elsewhere.
    let mut other = connect_from("127.0.0.3", g.server.addr).await;
    let c = challenge(&mut other).await;
    other
        .write_all(&answer("robot-2", KEY_B, &c))
        .await
        .expect("send");
    let mut reply = [0u8; 5];
    other.read_exact(&mut reply).await.expect("reply");
    assert_eq!(&reply, b"SKT1\x00");
    let mut tutorial = connect_from("127.0.0.3", g.server.addr).await;
    let c = challenge(&mut tutorial).await;
    tutorial
        .write_all(format!("{}ok\n", tutorial_answer(KEY_B, &c)).as_bytes())
        .await
        .expect("send");
    assert_eq!(line(&mut tutorial).await, "robot-2 ok\n");
    let mut elsewhere = connect_from("127.0.0.4", g.server.addr).await;
    let c = challenge(&mut elsewhere).await;
    elsewhere
        .write_all(&answer("robot-1", KEY_A, &c))
        .await
        .expect("send");
    let mut reply = [0u8; 5];
    elsewhere.read_exact(&mut reply).await.expect("reply");
    assert_eq!(&reply, b"SKT1\x00");

    // With one shared key every claim is one identity: a wrong answer under any name holds
    // back the source's next guess under another name.
    let g = guarded(
        keys(KEY_A),
        Limits::default(),
        Some({
            let mut a = AdmissionLimits::default();
            a.penalty = Duration::from_secs(60);
            a
        }),
    )
    .await;
    let mut s = connect_from("127.0.0.3", g.server.addr).await;
    let c = challenge(&mut s).await;
    s.write_all(&answer("name-1", KEY_B, &c))
        .await
        .expect("wrong");
    assert_eq!(read_to_end(&mut s).await, b"SKT1\x01");
    let mut s = connect_from("127.0.0.3", g.server.addr).await;
    let c = challenge(&mut s).await;
    s.write_all(&answer("name-2", KEY_B, &c))
        .await
        .expect("guess");
    let refusal = String::from_utf8(read_to_end(&mut s).await).expect("text");
    assert!(
        refusal.contains("this address failed authentication"),
        "{refusal}"
    );
}

#[tokio::test]
async fn allow_and_deny_are_checked_before_anything_is_read() {
    let served = Arc::new(AtomicUsize::new(0));
    let handler = WhoAmI {
        served: Arc::clone(&served),
    };
    let access = AccessList::new(
        vec!["127.0.0.0/8".parse().expect("net")],
        vec!["127.0.0.66/32".parse().expect("net")],
    );
    let server = start_with(
        move || handler.clone(),
        Limits::default(),
        |s| s.access(access),
    )
    .await;
    let mut denied = connect_from("127.0.0.66", server.addr).await;
    let _ = denied.write_all(b"let me in\n").await;
    // The library names no flag of any program; the socketeer program adds its own
    // (`Gate::not_allowed_message`, checked in the program's tests).
    assert_eq!(
        read_to_end(&mut denied).await,
        b"socketeer: refused: this address is not allowed here\n"
    );
    let mut allowed = connect_from("127.0.0.65", server.addr).await;
    allowed.write_all(b"hi\n").await.expect("send");
    assert_eq!(line(&mut allowed).await, "- hi\n");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tutorial_answers_can_be_refused_where_they_would_travel_in_the_clear() {
    let served = Arc::new(AtomicUsize::new(0));
    let handler = WhoAmI {
        served: Arc::clone(&served),
    };
    let auth = Authenticator::new(keys(KEY_A)).allow_tutorial(false);
    let mut no_penalty = AdmissionLimits::default();
    no_penalty.penalty = Duration::ZERO;
    let server = start_with(
        move || handler.clone(),
        Limits::default(),
        |s| s.authenticate(auth).admission(Admission::new(no_penalty)),
    )
    .await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let c = challenge(&mut s).await;
    s.write_all(tutorial_answer(KEY_A, &c).as_bytes())
        .await
        .expect("send");
    assert!(read_to_end(&mut s).await.is_empty());
    // socketeer mode still works there.
    let mut options = ClientOptions::default();
    options.key = Some(ClientKey::new("r9", KEY_A).expect("key"));
    assert!(
        client::connect_with(&server.endpoint, &options)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn key_files_refuse_loose_permissions_and_removing_a_line_revokes_a_device() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keys");
    let loose = key_file(&dir, "loose.key", KEY_A);
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = KeyStore::from_file(&loose).expect_err("loose");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    let short = key_file(&dir, "short.key", "abcdef");
    assert!(
        KeyStore::from_file(&short)
            .expect_err("short")
            .to_string()
            .contains("socketeer keygen")
    );

    let path = key_file(
        &dir,
        "fleet.key",
        &format!("robot-1 {KEY_A}\nrobot-2 {KEY_B}\n"),
    );
    let store = Arc::new(KeyStore::from_file(&path).expect("fleet"));
    assert!(matches!(store.current(), Ok(Keys::PerDevice(ref m)) if m.len() == 2));
    let g = guarded(store, Limits::default(), None).await;
    let as_device = |device: &str, key: &str| {
        let mut options = ClientOptions::default();
        options.key = Some(ClientKey::new(device, key).expect("key"));
        options
    };
    assert!(
        client::connect_with(&g.server.endpoint, &as_device("robot-1", KEY_A))
            .await
            .is_ok()
    );
    // Revoke robot-1 by removing its line (rewritten in place, as an editor would).
    std::fs::write(&path, format!("robot-2 {KEY_B}\n")).expect("rewrite");
    let err = client::connect_with(&g.server.endpoint, &as_device("robot-1", KEY_A))
        .await
        .expect_err("revoked");
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(
        client::connect_with(&g.server.endpoint, &as_device("robot-2", KEY_B))
            .await
            .is_ok()
    );
    // A client in tutorial mode with a revoked key is refused too.
    let mut options = as_device("robot-1", KEY_A);
    options.auth_mode = AuthMode::Tutorial;
    let mut conn = client::connect_with(&g.server.endpoint, &options)
        .await
        .expect("sent");
    conn.send(b"x\n").await.expect("send");
    assert_eq!(conn.read_line().await.ok().flatten(), None, "closed");
}
