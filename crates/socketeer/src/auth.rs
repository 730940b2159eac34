//! HMAC challenge-response authentication, both sides (the bytes are in `docs/protocol.md`).
//!
//! The server speaks first: 32 random bytes. A **tutorial** client answers with
//! HMAC-SHA256(key, challenge) as 64 lowercase hex characters. A **socketeer** client answers
//! `SKT1`, its device name, its own nonce and a proof; the server answers with a proof of its
//! own. Both proofs are MACs over a transcript with a role label, the device name, both nonces
//! and (under TLS) the TLS exporter, each field length-prefixed, so a recorded answer cannot be
//! replayed (fresh challenge), reflected (role labels) or relayed into another TLS session
//! (exporter). MACs are compared with `Mac::verify_slice`, in constant time.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::codec::Decoder;

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Remedy, Result};
pub use crate::greeting::NONCE_LEN;
pub use crate::identity::{AuthMode, Identity};
use crate::keys::{ClientKey, KeyStore, Keys, MAX_DEVICE_LEN, to_hex, valid_device_name};
pub use crate::tls::EXPORTER_LABEL;

/// First bytes of a socketeer-mode message (`S` is not a hex digit, so it cannot start a
/// tutorial answer).
pub const MAGIC: &[u8; 4] = b"SKT1";
/// No authentication message is longer than this.
pub const MAX_AUTH_MESSAGE: usize = 256;

const CLIENT_LABEL: &[u8] = b"socketeer/1 client";
const SERVER_LABEL: &[u8] = b"socketeer/1 server";
const MAC_LEN: usize = 32;
const TUTORIAL_LEN: usize = 2 * MAC_LEN;
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

type HmacSha256 = Hmac<Sha256>;

/// A handshake that failed: why, and the device the peer claimed if it got that far (whom a
/// penalty or a failure count is for).
#[derive(Debug)]
pub struct AuthFailure {
    /// Why it failed.
    pub error: Error,
    /// The device name the peer's answer claimed, if it got that far.
    pub claimed: Option<String>,
}

impl From<Error> for AuthFailure {
    fn from(error: Error) -> Self {
        Self {
            error,
            claimed: None,
        }
    }
}

impl From<AuthFailure> for Error {
    fn from(failure: AuthFailure) -> Self {
        failure.error
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AuthFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The server side of the handshake: the keys, and whether tutorial answers are accepted.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<KeyStore>,
    allow_tutorial: bool,
}

fn refused(why: impl Into<String>) -> Error {
    Error::new(ErrorKind::Auth, why)
}

impl Authenticator {
    /// Authenticates against `keys`, accepting both modes.
    pub fn new(keys: Arc<KeyStore>) -> Self {
        Self {
            keys,
            allow_tutorial: true,
        }
    }

    /// Accepts or refuses tutorial-mode answers (which authenticate once and leave the session
    /// in the clear without TLS, and do not prove the server to the client).
    #[must_use]
    pub fn allow_tutorial(mut self, allow: bool) -> Self {
        self.allow_tutorial = allow;
        self
    }

    /// Runs the server side on a fresh connection. Bytes the client sent after its answer stay
    /// buffered for the service.
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] when the client is refused (with the device it claimed, if any);
    /// I/O errors.
    pub async fn handshake(&self, conn: &mut Connection) -> Result<Identity, AuthFailure> {
        self.handshake_admitted(conn, |_| Ok(())).await
    }

    /// Whom a failed answer claiming `device` penalizes: that device when keys are per device
    /// (its key is what was guessed), else nobody in particular (`None`: the one shared key).
    pub fn penalty_identity<'a>(&self, device: Option<&'a str>) -> Option<&'a str> {
        match self.keys.current() {
            Ok(Keys::PerDevice(_)) => device,
            _ => None,
        }
    }

    /// [`handshake`](Self::handshake), asking `admitted` — with the answer's
    /// [`penalty_identity`](Self::penalty_identity) — whether it may be checked at all; an
    /// `Err` is sent to the client as a refusal line (`socketeer: refused: WHY`) and returned.
    ///
    /// # Errors
    /// As [`handshake`](Self::handshake), and `admitted`'s.
    pub async fn handshake_admitted(
        &self,
        conn: &mut Connection,
        admitted: impl FnOnce(Option<&str>) -> Result<()>,
    ) -> Result<Identity, AuthFailure> {
        let mut challenge = [0u8; NONCE_LEN];
        random(&mut challenge)?;
        conn.send(&challenge).await?;
        let answer = conn
            .read_with(&mut AnswerDecoder)
            .await?
            // Not a failed attempt (no penalty): a scanner or an impatient client just left.
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnexpectedEof,
                    "closed the connection instead of answering the challenge",
                )
            })?;
        let keys = self.keys.current()?;
        let claimed = match &answer {
            Answer::Socketeer { device, .. } if matches!(keys, Keys::PerDevice(_)) => {
                Some(device.as_str())
            }
            _ => None,
        };
        if let Err(err) = admitted(claimed) {
            let line = format!("{}{err}\n", crate::greeting::REFUSAL_PREFIX);
            let _ = conn.send(line.as_bytes()).await;
            return Err(err.into());
        }
        match answer {
            Answer::Tutorial(mac) => {
                if !self.allow_tutorial {
                    return Err(refused(
                        "tutorial-mode answer refused on a plaintext non-loopback endpoint \
                         (serve it over TLS, or allow plaintext answers there)",
                    )
                    .into());
                }
                let device = verify_tutorial(&keys, &challenge, &mac)?;
                Ok(Identity {
                    device,
                    mode: AuthMode::Tutorial,
                })
            }
            Answer::Socketeer {
                device,
                nonce,
                proof,
            } => {
                let exporter = conn.tls_exporter().map(<[u8]>::to_vec).unwrap_or_default();
                let transcript = Transcript {
                    device: &device,
                    challenge: &challenge,
                    nonce: &nonce,
                    exporter: &exporter,
                };
                let key = match &keys {
                    Keys::Single(key) => Some(key.as_slice()),
                    Keys::PerDevice(map) => map.get(&device).map(Vec::as_slice),
                };
                // An unknown device is checked against a throwaway key, so it costs the same.
                let verified = transcript
                    .mac(key.unwrap_or(&[0; 64]), CLIENT_LABEL)?
                    .verify_slice(&proof)
                    .is_ok();
                let Some(key) = key.filter(|_| verified) else {
                    let _ = conn.send(&[&MAGIC[..], &[STATUS_REFUSED]].concat()).await;
                    return Err(AuthFailure {
                        error: refused(format!("device \"{device}\" failed to prove its key")),
                        claimed: Some(device),
                    });
                };
                let server_proof = transcript.mac(key, SERVER_LABEL)?.finalize().into_bytes();
                let mut reply = Vec::with_capacity(MAGIC.len() + 2 + MAC_LEN);
                reply.extend_from_slice(MAGIC);
                reply.extend_from_slice(&[STATUS_OK, MAC_LEN as u8]);
                reply.extend_from_slice(&server_proof);
                conn.send(&reply).await?;
                Ok(Identity {
                    device: Some(device),
                    mode: AuthMode::Socketeer,
                })
            }
        }
    }
}

fn verify_tutorial(keys: &Keys, challenge: &[u8], mac: &[u8; MAC_LEN]) -> Result<Option<String>> {
    let check = |key: &[u8]| -> Result<bool> {
        let mut hmac = HmacSha256::new_from_slice(key).map_err(|e| refused(e.to_string()))?;
        hmac.update(challenge);
        Ok(hmac.verify_slice(mac).is_ok())
    };
    match keys {
        Keys::Single(key) if check(key)? => Ok(None),
        Keys::Single(_) => Err(refused("tutorial answer did not match the key")),
        Keys::PerDevice(map) => {
            // Check every key (no early exit) so timing does not tell how far the match was.
            let mut found = None;
            for (device, key) in map {
                if check(key)? {
                    found = Some(device.clone());
                }
            }
            found
                .map(Some)
                .ok_or_else(|| refused("tutorial answer matched no device's key"))
        }
    }
}

/// The client side: answers the server's challenge with `key` in `mode`; in socketeer mode it
/// also checks the server's proof, so a server that does not hold the key is detected.
///
/// # Errors
/// [`ErrorKind::Auth`] when the server refuses us or fails to prove itself;
/// [`ErrorKind::UnexpectedEof`] when it closes before sending its challenge (a restart, say:
/// worth retrying); I/O errors.
pub async fn client_handshake(
    conn: &mut Connection,
    key: &ClientKey,
    mode: AuthMode,
) -> Result<()> {
    let challenge = conn
        .read_with(&mut Exact(NONCE_LEN))
        .await?
        // Not a refusal of our key (none was sent yet): a server restarting or going away
        // ends connections this way, and a client that reconnects should try again.
        .ok_or_else(|| {
            Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection before sending its challenge (restarting? \
                 or it speaks TLS)",
            )
            .with_remedy(Remedy::MaybeUseTls)
        })?;
    // Not a challenge but a refusal: its line, read to its end.
    if let Some(crate::greeting::Mismatch::Refused(_)) = crate::greeting::recognize(&challenge) {
        return Err(refusal_line(conn, challenge.to_vec()).await);
    }
    // (A TLS server sends nothing first: it waits for us, and the deadline ends it.)
    match mode {
        AuthMode::Tutorial => {
            let mut hmac =
                HmacSha256::new_from_slice(&key.key).map_err(|e| refused(e.to_string()))?;
            hmac.update(&challenge);
            conn.send(to_hex(&hmac.finalize().into_bytes()).as_bytes())
                .await
        }
        AuthMode::Socketeer => {
            let mut nonce = [0u8; NONCE_LEN];
            random(&mut nonce)?;
            let exporter = conn.tls_exporter().map(<[u8]>::to_vec).unwrap_or_default();
            let transcript = Transcript {
                device: &key.device,
                challenge: &challenge,
                nonce: &nonce,
                exporter: &exporter,
            };
            let proof = transcript
                .mac(&key.key, CLIENT_LABEL)?
                .finalize()
                .into_bytes();
            let mut message = Vec::with_capacity(MAX_AUTH_MESSAGE);
            message.extend_from_slice(MAGIC);
            for field in [key.device.as_bytes(), &nonce, &proof] {
                message.push(field.len() as u8);
                message.extend_from_slice(field);
            }
            conn.send(&message).await?;
            // A socketeer server always answers the proof (a status, or a refusal line); one
            // that closes instead went away mid-handshake (killed, restarting, overloaded):
            // not a verdict on the key, so a client may try again.
            let reply = conn
                .read_with(&mut Exact(MAGIC.len() + 1))
                .await?
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::UnexpectedEof,
                        "the server closed the connection during authentication, before answering",
                    )
                })?;
            if reply.starts_with(&crate::greeting::REFUSAL_PREFIX.as_bytes()[..MAGIC.len() + 1]) {
                return Err(refusal_line(conn, reply.to_vec()).await);
            }
            if &reply[..MAGIC.len()] != MAGIC {
                return Err(refused(
                    "the server does not speak socketeer authentication",
                ));
            }
            if reply[MAGIC.len()] != STATUS_OK {
                return Err(refused(format!(
                    "the server refused device \"{}\": wrong key or unknown device",
                    key.device
                )));
            }
            let server_proof = conn
                .read_with(&mut Exact(1 + MAC_LEN))
                .await?
                .ok_or_else(|| refused("the server closed the connection during authentication"))?;
            let genuine = server_proof[0] as usize == MAC_LEN
                && transcript
                    .mac(&key.key, SERVER_LABEL)?
                    .verify_slice(&server_proof[1..])
                    .is_ok();
            if genuine {
                Ok(())
            } else {
                Err(refused(
                    "the server could not prove it holds the key: it may not be the real server",
                ))
            }
        }
    }
}

/// The error for a refusal line the server sent, `start` being its first bytes: the rest is
/// read to its end (at most 512 bytes).
async fn refusal_line(conn: &mut Connection, start: Vec<u8>) -> Error {
    let mut line = start;
    while !line.contains(&b'\n') && line.len() < 512 {
        match conn.read_with(&mut Exact(1)).await {
            Ok(Some(byte)) => line.extend_from_slice(&byte),
            _ => break,
        }
    }
    match crate::greeting::recognize(&line) {
        Some(mismatch) => mismatch.into_error(false),
        None => refused("the server refused the connection"),
    }
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("the system random source failed: {e}"),
        )
    })
}

/// What both proofs are computed over.
struct Transcript<'a> {
    device: &'a str,
    challenge: &'a [u8],
    nonce: &'a [u8],
    exporter: &'a [u8],
}

impl Transcript<'_> {
    /// HMAC-SHA256(key, lp(label) || lp(device) || lp(challenge) || lp(nonce) || lp(exporter)),
    /// where lp(x) is x's length as a 4-byte big-endian number, then x.
    fn mac(&self, key: &[u8], label: &[u8]) -> Result<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(key).map_err(|e| refused(e.to_string()))?;
        for part in [
            label,
            self.device.as_bytes(),
            self.challenge,
            self.nonce,
            self.exporter,
        ] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        Ok(mac)
    }
}

/// A client's answer to the challenge.
#[derive(Debug, PartialEq)]
enum Answer {
    Tutorial([u8; MAC_LEN]),
    Socketeer {
        device: String,
        nonce: [u8; NONCE_LEN],
        proof: [u8; MAC_LEN],
    },
}

/// Decodes exactly one answer and nothing after it. Fails as soon as the bytes cannot be a
/// valid answer (a non-hex or uppercase character, a bad length field), without waiting for more.
struct AnswerDecoder;

fn malformed(why: &str) -> Error {
    refused(format!("malformed authentication answer: {why}"))
}

fn lower_hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl Decoder for AnswerDecoder {
    type Item = Answer;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Answer>> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != MAGIC[0] {
            let seen = &buf[..buf.len().min(TUTORIAL_LEN)];
            if seen.iter().any(|&b| lower_hex_value(b).is_none()) {
                return Err(malformed(
                    "a tutorial answer is 64 lowercase hex characters",
                ));
            }
            if seen.len() < TUTORIAL_LEN {
                return Ok(None);
            }
            let mut mac = [0u8; MAC_LEN];
            for (i, pair) in seen.chunks_exact(2).enumerate() {
                mac[i] = (lower_hex_value(pair[0]).unwrap_or(0) << 4)
                    | lower_hex_value(pair[1]).unwrap_or(0);
            }
            buf.advance(TUTORIAL_LEN);
            return Ok(Some(Answer::Tutorial(mac)));
        }
        let head = &buf[..buf.len().min(MAGIC.len())];
        if head != &MAGIC[..head.len()] {
            return Err(malformed("unknown message"));
        }
        // MAGIC, then three length-prefixed fields: device, nonce, proof.
        let mut pos = MAGIC.len();
        let mut fields: [&[u8]; 3] = [&[]; 3];
        let limits = [
            (1, MAX_DEVICE_LEN),
            (NONCE_LEN, NONCE_LEN),
            (MAC_LEN, MAC_LEN),
        ];
        for (field, (min, max)) in fields.iter_mut().zip(limits) {
            let Some(&len) = buf.get(pos) else {
                return Ok(None);
            };
            let len = usize::from(len);
            if len < min || len > max {
                return Err(malformed("a field has the wrong length"));
            }
            let Some(bytes) = buf.get(pos + 1..pos + 1 + len) else {
                return Ok(None);
            };
            *field = bytes;
            pos += 1 + len;
        }
        let device = std::str::from_utf8(fields[0])
            .ok()
            .filter(|d| valid_device_name(d));
        let Some(device) = device.map(str::to_owned) else {
            return Err(malformed("bad device name"));
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(fields[1]);
        let mut proof = [0u8; MAC_LEN];
        proof.copy_from_slice(fields[2]);
        debug_assert!(pos <= MAX_AUTH_MESSAGE);
        buf.advance(pos);
        Ok(Some(Answer::Socketeer {
            device,
            nonce,
            proof,
        }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Answer>> {
        match self.decode(buf)? {
            Some(answer) => Ok(Some(answer)),
            None if buf.is_empty() => Ok(None),
            None => Err(malformed("the connection closed inside the answer")),
        }
    }
}

/// The answer decoder for the fuzz targets, its answers shown as text.
#[cfg(feature = "fuzzing")]
pub(crate) fn answer_decoder() -> impl Decoder<Item = String, Error = Error> {
    struct Shown(AnswerDecoder);
    impl Decoder for Shown {
        type Item = String;
        type Error = Error;
        fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>> {
            Ok(self.0.decode(buf)?.map(|answer| format!("{answer:?}")))
        }
        fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<String>> {
            Ok(self.0.decode_eof(buf)?.map(|answer| format!("{answer:?}")))
        }
    }
    Shown(AnswerDecoder)
}

/// Exactly `n` bytes.
struct Exact(usize);

impl Decoder for Exact {
    type Item = BytesMut;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>> {
        Ok((buf.len() >= self.0).then(|| buf.split_to(self.0)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>> {
        match self.decode(buf)? {
            Some(bytes) => Ok(Some(bytes)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the connection closed mid-message",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<Answer>> {
        AnswerDecoder.decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn tutorial_answers_must_be_64_lowercase_hex() {
        let ok = "0f".repeat(32);
        assert!(
            matches!(decode(ok.as_bytes()), Ok(Some(Answer::Tutorial(mac))) if mac == [0x0f; 32])
        );
        assert!(decode(&ok.as_bytes()[..63]).expect("partial").is_none());
        assert!(
            decode(ok.to_uppercase().replace("0F", "0A").as_bytes()).is_err(),
            "uppercase"
        );
        assert!(decode(b"0g").is_err(), "non-hex fails at once");
        assert!(decode(b"hello").is_err());
    }

    #[test]
    fn data_after_the_answer_stays_buffered() {
        let mut buf = BytesMut::from(format!("{}data for the service", "ab".repeat(32)).as_bytes());
        assert!(matches!(
            AnswerDecoder.decode(&mut buf),
            Ok(Some(Answer::Tutorial(_)))
        ));
        assert_eq!(&buf[..], b"data for the service");
    }

    #[test]
    fn socketeer_messages_are_bounded_and_checked() {
        let mut msg = MAGIC.to_vec();
        msg.extend_from_slice(&[2, b'r', b'1', 32]);
        msg.extend_from_slice(&[7; 32]);
        msg.push(32);
        msg.extend_from_slice(&[9; 32]);
        for cut in 1..msg.len() {
            assert!(
                decode(&msg[..cut]).expect("partial is fine").is_none(),
                "cut at {cut}"
            );
        }
        assert!(
            matches!(decode(&msg), Ok(Some(Answer::Socketeer { device, .. })) if device == "r1")
        );
        let mut long_name = MAGIC.to_vec();
        long_name.push(65);
        assert!(decode(&long_name).is_err());
        let mut short_nonce = MAGIC.to_vec();
        short_nonce.extend_from_slice(&[1, b'x', 31]);
        assert!(decode(&short_nonce).is_err());
        assert!(decode(b"SKX").is_err());
        let mut bad_name = MAGIC.to_vec();
        bad_name.extend_from_slice(&[1, b'/', 32]);
        bad_name.extend_from_slice(&[0; 32]);
        bad_name.push(32);
        bad_name.extend_from_slice(&[0; 32]);
        assert!(decode(&bad_name).is_err());
    }

    /// The first answer in `input` delivered in pieces ending at `cuts`, then the end: the
    /// answer (and how many bytes were left after it) or the kind of error.
    fn first_answer(
        input: &[u8],
        cuts: &[usize],
    ) -> std::result::Result<Option<(Answer, usize)>, ErrorKind> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut buf = BytesMut::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&input[from..to]);
            from = to;
            match AnswerDecoder.decode(&mut buf) {
                Ok(Some(answer)) => return Ok(Some((answer, input.len() - to + buf.len()))),
                Ok(None) => {}
                Err(err) => return Err(err.kind()),
            }
        }
        match AnswerDecoder.decode_eof(&mut buf) {
            Ok(found) => Ok(found.map(|answer| (answer, buf.len()))),
            Err(err) => Err(err.kind()),
        }
    }

    /// Bytes that are often nearly an answer: the magic and sensible lengths, hex digits.
    fn near_answers() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let socketeer =
            (1u8..=70, proptest::collection::vec(any::<u8>(), 0..120)).prop_map(|(len, rest)| {
                let mut v = MAGIC.to_vec();
                v.push(len);
                v.extend(std::iter::repeat_n(b'r', usize::from(len).min(64)));
                v.push(NONCE_LEN as u8);
                v.extend(rest);
                v
            });
        let hex =
            proptest::collection::vec(prop_oneof![b'0'..=b'9', b'a'..=b'f', any::<u8>()], 0..80);
        prop_oneof![
            socketeer,
            hex,
            proptest::collection::vec(any::<u8>(), 0..80)
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn answers_decode_the_same_however_split(
            input in near_answers(),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..12),
        ) {
            let whole = first_answer(&input, &[]);
            let bytewise: Vec<usize> = (0..input.len()).collect();
            proptest::prop_assert_eq!(&first_answer(&input, &cuts), &whole);
            proptest::prop_assert_eq!(&first_answer(&input, &bytewise), &whole);
        }
    }
}
