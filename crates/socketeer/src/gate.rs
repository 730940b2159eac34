//! [`Gate`]: what every connection passes before its handler runs — the access list and a place
//! among the pre-authentication handshakes (checked in the accept loop, before a byte is read),
//! then, inside the connection's own task and under one handshake deadline, the TLS handshake
//! and authentication. [`Server`](crate::Server) uses one; an accept loop of your own can too.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::access::{AccessList, Admission, AdmissionLimits, Refusal, Startup};
use crate::auth::{AuthFailure, Authenticator};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::stream::{PeerAddr, Stream};
use crate::tls::TlsAcceptor;

/// What a server checks before serving a connection. Cheap to clone (clones share admission).
///
/// ```no_run
/// # async fn demo(listener: socketeer::Listener, keys: std::sync::Arc<socketeer::KeyStore>) -> socketeer::Result<()> {
/// use socketeer::{Authenticator, Gate, Limits};
/// let gate = Gate::new().authenticate(Authenticator::new(keys));
/// let (stream, peer) = listener.accept().await?;
/// let startup = gate.admit(&peer)?;                    // before reading anything
/// let conn = gate.open(stream, peer, &Limits::default(), None, startup).await?;
/// println!("{:?} is in", conn.identity());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Gate {
    access: AccessList,
    admission: Option<Arc<Admission>>,
    tls: Option<TlsAcceptor>,
    auth: Option<Authenticator>,
    on_auth_failure: Option<AuthFailureHook>,
    /// What a peer the access list refuses is told, if not the default.
    not_allowed: Option<Arc<str>>,
}

/// What a peer the access list refuses is told by default.
const NOT_ALLOWED: &str = "this address is not allowed here";

/// Called with the device name a failed authentication claimed (`None` when the peer did not
/// get as far as naming one, or answered tutorial-style).
#[derive(Clone)]
pub struct AuthFailureHook(Arc<HookFn>);

type HookFn = dyn Fn(Option<&str>) + Send + Sync;

impl AuthFailureHook {
    /// Wraps `hook`.
    pub fn new(hook: impl Fn(Option<&str>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(hook))
    }
}

impl std::fmt::Debug for AuthFailureHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthFailureHook")
    }
}

impl Gate {
    /// A gate that lets everyone straight in.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs a TLS handshake first.
    #[must_use]
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self.with_default_admission()
    }

    /// Authenticates after TLS.
    #[must_use]
    pub fn authenticate(mut self, authenticator: Authenticator) -> Self {
        self.auth = Some(authenticator);
        self.with_default_admission()
    }

    /// What a peer the access list refuses is told (in its refusal line, after
    /// `socketeer: refused: `), instead of "this address is not allowed here": say where the
    /// list is set, in the program's own terms.
    #[must_use]
    pub fn not_allowed_message(mut self, why: impl Into<Arc<str>>) -> Self {
        self.not_allowed = Some(why.into());
        self
    }

    /// Calls `hook` for each failed authentication, with the device name claimed — for
    /// per-device counts of who is knocking with the wrong key.
    #[must_use]
    pub fn on_auth_failure(mut self, hook: AuthFailureHook) -> Self {
        self.on_auth_failure = Some(hook);
        self
    }

    /// Refuses peers the list does not permit.
    #[must_use]
    pub fn access(mut self, access: AccessList) -> Self {
        self.access = access;
        self
    }

    /// Caps and penalties for connections in their handshake (share one `Admission` between
    /// gates to cap a whole process). With TLS or authentication and no admission given,
    /// [`AdmissionLimits::default`] apply.
    #[must_use]
    pub fn admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// True when connections have a handshake phase (TLS or authentication).
    fn has_handshake(&self) -> bool {
        self.tls.is_some() || self.auth.is_some()
    }

    fn with_default_admission(mut self) -> Self {
        if self.admission.is_none() {
            self.admission = Some(Admission::new(AdmissionLimits::default()));
        }
        self
    }

    /// The accept loop's check, before anything is read: `Ok(Some(startup))` holds a place among
    /// the handshakes until dropped; `Err` means drop the connection unread.
    ///
    /// # Errors
    /// [`ErrorKind::Refused`] with the reason.
    pub fn admit(&self, peer: &PeerAddr) -> Result<Option<Startup>> {
        if !self.access.permits(peer) {
            let why = self.not_allowed.as_deref().unwrap_or(NOT_ALLOWED);
            return Err(Error::new(ErrorKind::Refused, why));
        }
        match (&self.admission, self.has_handshake()) {
            (Some(admission), true) => admission
                .admit(peer)
                .map(Some)
                .map_err(|refusal| Error::new(ErrorKind::Refused, refusal.to_string())),
            _ => Ok(None),
        }
    }

    /// TLS, then authentication, within `limits.handshake_timeout`; returns the connection,
    /// with [`Connection::identity`] set when authenticated. `startup` is the place [`admit`](Self::admit)
    /// gave; it is released when the handshake ends, before a refused connection is closed. A failed authentication (a wrong or
    /// malformed answer, not a client that just leaves) earns the source a penalty. `drain` is
    /// the server's shutdown token, if any.
    ///
    /// # Errors
    /// [`ErrorKind::Tls`], [`ErrorKind::Auth`], [`ErrorKind::Timeout`], I/O errors.
    pub async fn open(
        &self,
        stream: Stream,
        peer: PeerAddr,
        limits: &Limits,
        drain: Option<&CancellationToken>,
        startup: Option<Startup>,
    ) -> Result<Connection> {
        let handshake = async {
            let (stream, exporter) = match &self.tls {
                Some(tls) => {
                    let (stream, exporter) =
                        tls.accept(stream).await.map_err(|e| (e.into(), None))?;
                    (stream, Some(exporter))
                }
                None => (stream, None),
            };
            let mut conn = Connection::with_limits(stream, peer.clone(), limits);
            if let Some(drain) = drain {
                conn.set_drain(drain);
            }
            if let Some(exporter) = exporter {
                conn.set_tls_exporter(exporter);
            }
            if let Some(auth) = &self.auth {
                // A penalty is checked once the answer says whom it is for: an identity that
                // failed here lately is refused, others at the same address are not.
                let admitted = |identity: Option<&str>| match &self.admission {
                    Some(admission) => match admission.penalty(&peer, identity) {
                        Some(left) => Err(Error::new(
                            ErrorKind::Refused,
                            Refusal::Penalized(left, identity.map(str::to_owned)).to_string(),
                        )),
                        None => Ok(()),
                    },
                    None => Ok(()),
                };
                match auth.handshake_admitted(&mut conn, admitted).await {
                    Ok(identity) => {
                        tracing::debug!(%peer, device = identity.device.as_deref(), mode = ?identity.mode, "authenticated");
                        conn.set_identity(identity);
                    }
                    // Keep the connection open until the handshake place is given back.
                    Err(err) => return Err((err, Some(Box::new(conn)))),
                }
            }
            Ok(conn)
        };
        tokio::pin!(handshake);
        let deadline = limits.handshake_timeout;
        let evicted = async {
            match &startup {
                Some(startup) => startup.evicted().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = tokio::time::timeout(deadline, &mut handshake) => result.unwrap_or_else(|_| {
                Err((
                    Error::new(
                        ErrorKind::Timeout,
                        format!("handshake not finished within {deadline:?}"),
                    )
                    .into(),
                    None,
                ))
            }),
            () = evicted => Err((
                Error::new(
                    ErrorKind::Refused,
                    "handshake ended to make room: too many in progress from this source, or \
                     from the busiest one",
                )
                .into(),
                None,
            )),
        };
        // Give the place back before the connection closes, so a client that reconnects at once
        // never finds its own finished handshake still counted.
        drop(startup);
        match result {
            Ok(conn) => Ok(conn),
            Err((
                AuthFailure {
                    error: err,
                    claimed,
                },
                conn,
            )) => {
                if err.kind() == ErrorKind::Auth
                    && !drain.is_some_and(CancellationToken::is_cancelled)
                {
                    if let (Some(admission), Some(auth)) = (&self.admission, &self.auth) {
                        admission.penalize(&peer, auth.penalty_identity(claimed.as_deref()));
                    }
                    if let Some(hook) = &self.on_auth_failure {
                        (hook.0)(claimed.as_deref());
                    }
                }
                drop(conn); // only now: the place was given back first
                Err(err)
            }
        }
    }
}
