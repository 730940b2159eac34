//! TLS with rustls (the `ring` provider): a [`TlsAcceptor`] for servers, a [`TlsConnector`]
//! for clients that verify the server by a CA file, by a pinned certificate fingerprint, or not
//! at all (`Insecure`, for tests and first contact), and the TLS exporter value that binds
//! authentication to one TLS session.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::stream::Stream;

/// The TLS exporter label that binds authentication to the TLS session.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-socketeer-auth-v1";

/// Length of the exporter value bound into socketeer-mode authentication.
pub const EXPORTER_LEN: usize = 32;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Tls, what)
}

/// The SHA-256 fingerprint of a DER certificate, as 64 lowercase hex characters (what `--pin`
/// takes).
pub fn fingerprint(cert_der: &[u8]) -> String {
    crate::keys::to_hex(&Sha256::digest(cert_der))
}

/// Parses a pinned fingerprint: 64 hex characters, colons allowed (`AB:CD:...`), any case.
///
/// # Errors
/// [`ErrorKind::Tls`] when it is not a SHA-256 fingerprint.
pub fn parse_pin(text: &str) -> Result<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || {
        tls_error(format!(
            "\"{text}\" is not a SHA-256 fingerprint (64 hex characters)"
        ))
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut pin = [0u8; 32];
    for (i, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(pin)
}

/// The handshake is done: wraps the session as a [`Stream`] and takes its exporter value.
fn established(tls: tokio_rustls::TlsStream<Stream>) -> Result<(Stream, [u8; EXPORTER_LEN])> {
    let out = [0u8; EXPORTER_LEN];
    let exported = match &tls {
        tokio_rustls::TlsStream::Client(s) => {
            s.get_ref()
                .1
                .export_keying_material(out, EXPORTER_LABEL, None)
        }
        tokio_rustls::TlsStream::Server(s) => {
            s.get_ref()
                .1
                .export_keying_material(out, EXPORTER_LABEL, None)
        }
    };
    let exporter = exported.map_err(|e| tls_error(format!("TLS exporter unavailable: {e}")))?;
    Ok((Stream::Tls(Box::new(tls)), exporter))
}

/// Accepts TLS on the server side.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

impl TlsAcceptor {
    /// Loads a PEM certificate chain and its PEM private key.
    ///
    /// # Errors
    /// [`ErrorKind::Tls`] naming the file that could not be read or used.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(Iterator::collect)
            .map_err(|e| {
                tls_error(format!(
                    "cannot read certificates from {}: {e}",
                    cert.display()
                ))
            })?;
        if chain.is_empty() {
            return Err(tls_error(format!(
                "{} holds no certificate",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            tls_error(format!(
                "cannot read a private key from {}: {e}",
                key.display()
            ))
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls_error(format!("the certificate and key do not work together: {e}")))?;
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Uses a rustls configuration built elsewhere.
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            inner: tokio_rustls::TlsAcceptor::from(config),
        }
    }

    /// Runs the server side of the TLS handshake; returns the TLS stream and its exporter value.
    ///
    /// # Errors
    /// [`ErrorKind::Tls`] when the handshake fails.
    pub async fn accept(&self, stream: Stream) -> Result<(Stream, [u8; EXPORTER_LEN])> {
        let tls = self
            .inner
            .accept(stream)
            .await
            .map_err(|e| tls_error("TLS handshake failed").with_source(e))?;
        established(tls.into())
    }
}

/// How a client decides that a server's certificate is the right one.
#[derive(Clone)]
pub enum ServerVerification {
    /// Certificates signed by these CA certificates (e.g. from `socketeer cert`'s `ca.pem`).
    Ca(Vec<CertificateDer<'static>>),
    /// Exactly the certificate with this SHA-256 fingerprint.
    Pin([u8; 32]),
    /// Any certificate. The connection is encrypted but an on-path attacker can read it.
    Insecure,
}

impl fmt::Debug for ServerVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ca(certs) => write!(f, "Ca({} certificates)", certs.len()),
            Self::Pin(pin) => write!(f, "Pin({})", crate::keys::to_hex(pin)),
            Self::Insecure => f.write_str("Insecure"),
        }
    }
}

impl ServerVerification {
    /// Trusts the CA certificates in a PEM file.
    ///
    /// # Errors
    /// [`ErrorKind::Tls`] when the file holds no readable certificate.
    pub fn ca_file(path: &Path) -> Result<Self> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(|e| {
                tls_error(format!(
                    "cannot read CA certificates from {}: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(tls_error(format!(
                "{} holds no certificate",
                path.display()
            )));
        }
        Ok(Self::Ca(certs))
    }
}

/// Starts TLS on the client side.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConnector")
    }
}

impl TlsConnector {
    /// A connector that verifies servers as `verification` says.
    ///
    /// # Errors
    /// [`ErrorKind::Tls`] when the CA certificates cannot be used.
    pub fn new(verification: ServerVerification) -> Result<Self> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?;
        let config = match verification {
            ServerVerification::Ca(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| tls_error(format!("unusable CA certificate: {e}")))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            other => {
                let verifier = Arc::new(PinOrAny {
                    pin: match other {
                        ServerVerification::Pin(pin) => Some(pin),
                        _ => None,
                    },
                    algorithms: provider.signature_verification_algorithms,
                });
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
        };
        Ok(Self {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the client side of the handshake with `server_name` (a host name or IP address)
    /// and returns the TLS stream and its exporter value.
    ///
    /// # Errors
    /// [`ErrorKind::Tls`] when the handshake fails or the server is not the one expected.
    pub async fn connect(
        &self,
        stream: Stream,
        server_name: &str,
    ) -> Result<(Stream, [u8; EXPORTER_LEN])> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| tls_error(format!("\"{server_name}\" is not a valid TLS server name")))?;
        let tls = self
            .inner
            .connect(name, stream)
            .await
            .map_err(|e| tls_error("TLS handshake failed").with_source(e))?;
        established(tls.into())
    }
}

/// Accepts the server's certificate if its fingerprint is the pinned one (or always, without a
/// pin); handshake signatures are still verified, so the server must hold the certificate's key.
#[derive(Debug)]
struct PinOrAny {
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinOrAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            Some(pin) if Sha256::digest(end_entity.as_ref()).as_slice() != pin => {
                Err(rustls::Error::General(format!(
                    "the server's certificate fingerprint {} is not the pinned one",
                    fingerprint(end_entity.as_ref())
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_pin(&hex).expect("plain"), [0xab; 32]);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_pin(&colons).expect("colons"), [0xab; 32]);
        assert!(parse_pin("abcd").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
