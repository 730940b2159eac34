//! The program's security settings: `--key-file`, `--tls-*`, `--allow/--deny` and the pre-auth
//! caps become a library [`Gate`] for each listener; the client flags become [`ClientOptions`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socketeer::{
    AccessList, Admission, AdmissionLimits, AuthMode, Authenticator, ClientKey, ClientOptions,
    Endpoint, Gate, KeyStore, ServerVerification, TlsAcceptor, TlsConnector,
};

use crate::cli::{Allowed, AuthModeArg, ClientGuardArgs, GuardArgs};
use crate::failure::UsageError;

/// A server's security, loaded once and shared by all its listeners.
pub(crate) struct ServerGuard {
    tls: Option<TlsAcceptor>,
    keys: Option<Arc<KeyStore>>,
    pub(crate) access: AccessList,
    admission: Arc<Admission>,
    allow_plaintext_auth: bool,
    pub(crate) handshake_timeout: Duration,
}

/// The `--allow`/`--deny` networks as an access list.
pub(crate) fn access_list(args: &GuardArgs) -> anyhow::Result<AccessList> {
    let mut allow = Vec::new();
    for entry in &args.allow {
        match entry {
            Allowed::Net(net) => allow.push(*net),
            Allowed::Program(text) => {
                return Err(UsageError(format!(
                    "--allow \"{text}\": not an address or network such as 10.0.0.0/8"
                ))
                .into());
            }
        }
    }
    Ok(AccessList::new(allow, args.deny.clone()))
}

impl ServerGuard {
    /// Loads the key file and certificate now, so a bad one stops the start.
    pub(crate) fn from_args(args: &GuardArgs) -> anyhow::Result<Self> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from_pem_files(cert, key)?),
            _ => None,
        };
        let keys = args
            .key_file
            .as_ref()
            .map(KeyStore::from_file)
            .transpose()?
            .map(Arc::new);
        let mut limits = AdmissionLimits::default();
        limits.max_startups = args.max_startups as usize;
        limits.max_startups_per_source = args.max_startups_per_source as usize;
        Ok(Self {
            tls,
            keys,
            access: access_list(args)?,
            admission: Admission::new(limits),
            allow_plaintext_auth: args.allow_plaintext_auth,
            handshake_timeout: args.handshake_timeout,
        })
    }

    /// True when TLS or authentication is on (they need stream endpoints).
    pub(crate) fn needs_stream(&self) -> bool {
        self.tls.is_some() || self.keys.is_some()
    }

    /// The gate for one listener. Tutorial-mode answers are accepted on TLS, loopback and Unix
    /// endpoints, elsewhere only with --allow-plaintext-auth.
    pub(crate) fn gate_for(&self, endpoint: &Endpoint) -> Gate {
        let mut gate = Gate::new()
            .not_allowed_message("this address is not allowed here (--allow/--deny)")
            .access(self.access.clone())
            .admission(Arc::clone(&self.admission));
        if let Some(tls) = &self.tls {
            gate = gate.tls(tls.clone());
        }
        if let Some(keys) = &self.keys {
            let private = self.tls.is_some() || endpoint.is_local();
            if !private && !self.allow_plaintext_auth {
                tracing::warn!(
                    %endpoint,
                    "tutorial-mode clients are refused here (plaintext, not loopback); socketeer-mode clients work. \
                     Add --tls-cert/--tls-key, or --allow-plaintext-auth"
                );
            }
            if !private && self.allow_plaintext_auth {
                tracing::warn!(%endpoint, "--allow-plaintext-auth: clients authenticate, then talk in the clear");
            }
            let auth = Authenticator::new(Arc::clone(keys))
                .allow_tutorial(private || self.allow_plaintext_auth);
            gate = gate.authenticate(auth);
        }
        gate
    }
}

/// The device name used when `--device` is not given: this host's name, made valid.
pub(crate) fn default_device() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(socketeer::keys::MAX_DEVICE_LEN)
        .collect();
    if name.is_empty() {
        "device".to_owned()
    } else {
        name
    }
}

/// Client options for the flags, with `timeout` for connecting, TLS and authentication together.
pub(crate) fn client_options(
    args: &ClientGuardArgs,
    timeout: Duration,
) -> anyhow::Result<ClientOptions> {
    let mut options = ClientOptions::default();
    options.timeout = timeout;
    options.server_name.clone_from(&args.server_name);
    let verification = if let Some(ca) = &args.ca {
        Some(ServerVerification::ca_file(ca)?)
    } else if let Some(pin) = &args.pin {
        Some(ServerVerification::Pin(
            socketeer::tls::parse_pin(pin).map_err(|e| UsageError(format!("--pin: {e}")))?,
        ))
    } else if args.insecure {
        tracing::warn!(
            "--insecure: the server's certificate is not checked; anyone on the path can read and change this connection"
        );
        Some(ServerVerification::Insecure)
    } else if args.tls {
        return Err(UsageError("--tls needs --ca FILE, --pin SHA256, or --insecure".into()).into());
    } else {
        None
    };
    options.tls = verification.map(TlsConnector::new).transpose()?;
    if let Some(path) = &args.key_file {
        let device = args.device.clone().unwrap_or_else(default_device);
        options.key = Some(ClientKey::from_file(path, &device).context("cannot use the key")?);
        options.auth_mode = match args.auth_mode {
            AuthModeArg::Socketeer => AuthMode::Socketeer,
            AuthModeArg::Tutorial => AuthMode::Tutorial,
        };
    }
    Ok(options)
}

/// True when the client flags ask for TLS or authentication (which need a stream endpoint).
pub(crate) fn client_needs_stream(args: &ClientGuardArgs) -> bool {
    args.key_file.is_some() || args.tls || args.ca.is_some() || args.pin.is_some() || args.insecure
}

/// Looks at a server's first bytes without taking them, for clients of socketeer's framed
/// protocols (exec, files): `true` when they can start a frame (a length whose high byte is 0:
/// every frame is under 16 MiB), `false` when they cannot — then they are something else
/// ([`socketeer::client::recognize`] may say what), which may be a few bytes and a wait.
pub(crate) struct FirstLook;

impl tokio_util::codec::Decoder for FirstLook {
    type Item = bool;
    type Error = socketeer::Error;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<bool>, socketeer::Error> {
        Ok(match buf.first() {
            None => None,
            Some(&high) if high != 0 => Some(false),
            Some(_) => (buf.len() >= 4).then_some(true),
        })
    }

    fn decode_eof(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<bool>, socketeer::Error> {
        Ok(self.decode(buf)?.or((!buf.is_empty()).then_some(false)))
    }
}
