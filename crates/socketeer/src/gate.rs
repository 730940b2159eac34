//! The gate every connection passes before its handler runs: the access list (in the accept
//! loop, before a byte is read), then — inside the connection's own task, under one handshake
//! deadline counted from accept — a place among the pre-authentication handshakes, the TLS
//! handshake, and authentication.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::access::{AccessList, Admission, AdmissionLimits, Startup};
use crate::auth::Authenticator;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::stream::{PeerAddr, Stream};
use crate::tls::TlsAcceptor;

/// What a server checks before serving a connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gate {
    pub(crate) access: AccessList,
    pub(crate) admission: Option<Arc<Admission>>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) auth: Option<Authenticator>,
}

impl Gate {
    /// True when connections have a handshake phase (TLS or authentication).
    fn has_handshake(&self) -> bool {
        self.tls.is_some() || self.auth.is_some()
    }

    /// Fills in the default admission limits when there is a handshake and none were given.
    pub(crate) fn ready(mut self) -> Self {
        if self.has_handshake() && self.admission.is_none() {
            self.admission = Some(Admission::new(AdmissionLimits::default()));
        }
        self
    }

    /// The accept loop's check: `Err` to drop the connection without reading from it.
    pub(crate) fn admit(&self, peer: &PeerAddr) -> Result<Option<Startup>> {
        if !self.access.permits(peer) {
            return Err(Error::new(ErrorKind::Refused, "not in the access list"));
        }
        match (&self.admission, self.has_handshake()) {
            (Some(admission), true) => admission
                .admit(peer)
                .map(Some)
                .map_err(|refusal| Error::new(ErrorKind::Refused, refusal.to_string())),
            _ => Ok(None),
        }
    }

    /// TLS, then authentication, within the handshake deadline; a failed authentication (a wrong
    /// or malformed answer, not a silent client) earns the source a penalty.
    pub(crate) async fn open(
        &self,
        stream: Stream,
        peer: PeerAddr,
        limits: &Limits,
        drain: &CancellationToken,
    ) -> Result<Connection> {
        let handshake = async {
            let (stream, exporter) = match &self.tls {
                Some(tls) => {
                    let (stream, exporter) = tls.accept(stream).await?;
                    (stream, Some(exporter))
                }
                None => (stream, None),
            };
            let mut conn = Connection::with_limits(stream, peer.clone(), limits);
            conn.set_drain(drain);
            if let Some(exporter) = exporter {
                conn.set_tls_exporter(exporter);
            }
            if let Some(auth) = &self.auth {
                let identity = auth.handshake(&mut conn).await?;
                tracing::debug!(%peer, device = identity.device.as_deref(), mode = ?identity.mode, "authenticated");
                conn.set_identity(identity);
            }
            Ok(conn)
        };
        let deadline = limits.handshake_timeout;
        let result = tokio::time::timeout(deadline, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("handshake not finished within {deadline:?}"),
                ))
            });
        if let Err(err) = &result {
            if err.kind() == ErrorKind::Auth && !drain.is_cancelled() {
                if let Some(admission) = &self.admission {
                    admission.penalize(&peer);
                }
            }
        }
        result
    }
}
