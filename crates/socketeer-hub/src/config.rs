//! How a hub is configured: plain values, checked by [`HubConfig::validate`] and
//! [`HttpConfig::validate`] before anything is opened. The program maps its flags onto these;
//! a Rust program embedding the hub fills them in directly.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::influx::Precision;
pub use crate::store::{Cardinality, Durability, PostgresUrl, QueueLimits};

/// Where a hub stores: a SQLite file (the default), or a PostgreSQL database shared by many
/// hub nodes.
///
/// ```
/// use socketeer_hub::config::Database;
/// assert!(matches!(Database::parse("fleet.db"), Ok(Database::Sqlite(_))));
/// assert!(matches!(Database::parse("sqlite://fleet.db"), Ok(Database::Sqlite(_))));
/// let pg = Database::parse("postgres://hub:secret@db.example/fleet").unwrap();
/// assert_eq!(pg.to_string(), "postgres://hub:***@db.example/fleet");
/// ```
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database (13 or later; its schema is created and migrated).
    Postgres(PostgresUrl),
}

impl Database {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else a SQLite file (with or
    /// without `sqlite://`).
    ///
    /// # Errors
    /// A PostgreSQL URL that does not parse (the message never repeats it).
    pub fn parse(text: &str) -> Result<Database, String> {
        if PostgresUrl::is_postgres(text) {
            return PostgresUrl::parse(text).map(Database::Postgres);
        }
        let path = text.strip_prefix("sqlite://").unwrap_or(text);
        Ok(Database::Sqlite(path.into()))
    }

    /// The SQLite file, if that is what it is.
    pub fn sqlite(&self) -> Option<&std::path::Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl From<&str> for Database {
    fn from(path: &str) -> Database {
        Database::Sqlite(path.into())
    }
}

impl From<String> for Database {
    fn from(path: String) -> Database {
        Database::Sqlite(path.into())
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Database {
        Database::Sqlite(path)
    }
}

impl From<&std::path::Path> for Database {
    fn from(path: &std::path::Path) -> Database {
        Database::Sqlite(path.into())
    }
}

impl From<PostgresUrl> for Database {
    fn from(url: PostgresUrl) -> Database {
        Database::Postgres(url)
    }
}

/// The most bytes of camera images kept by default (1 GiB).
pub const DEFAULT_IMAGE_BUDGET: u64 = 1 << 30;

/// The shortest HTTP token accepted.
pub const MIN_TOKEN: usize = 16;

/// What a hub stores and how (everything but its network endpoints, which the caller binds).
///
/// ```
/// let mut config = socketeer_hub::HubConfig::new("fleet.db");
/// config.retention = Some(std::time::Duration::from_secs(7 * 86_400));
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where records are stored: a SQLite file, or PostgreSQL.
    pub db: Database,
    /// How hard a commit waits for the disk.
    pub durability: Durability,
    /// Data received longer ago than this is deleted; `None` keeps everything.
    pub retention: Option<Duration>,
    /// Most records committed in one transaction (1 to 1,000,000).
    pub max_batch: usize,
    /// How many devices, and streams and fields per device, are kept.
    pub cardinality: Cardinality,
    /// How much may wait for the writer at once.
    pub queue: QueueLimits,
    /// The unit of InfluxDB line protocol timestamps.
    pub influx_precision: Precision,
    /// The largest camera image taken, in bytes (at most a quarter of `queue.bytes`).
    pub max_image: usize,
    /// Images received longer ago than this are deleted (their frames' detections stay, as
    /// readings do); `None` keeps them as long as other data.
    pub image_retention: Option<Duration>,
    /// The most bytes of images kept: past it the oldest images go first. `None`: no budget.
    pub image_budget: Option<u64>,
    /// How often the retention pass runs (1 minute). A stream it leaves without any data is
    /// retired: no longer listed, its Foxglove channels withdrawn.
    pub retention_every: Duration,
    /// The bus to other hub nodes sharing the store (NATS); `None`: this node works alone.
    #[cfg(feature = "nats")]
    pub bus: Option<crate::bus::BusConfig>,
}

/// A configuration value that cannot work, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct ConfigError {
    /// The setting.
    pub what: &'static str,
    /// Why it is refused.
    pub why: String,
}

fn refuse(what: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError {
        what,
        why: why.into(),
    }
}

impl HubConfig {
    /// The defaults (full durability, 30 days' retention, the default limits) for a database
    /// at `db`.
    pub fn new(db: impl Into<Database>) -> HubConfig {
        HubConfig {
            db: db.into(),
            durability: Durability::Full,
            retention: Some(Duration::from_secs(30 * 86_400)),
            max_batch: 8192,
            cardinality: Cardinality::default(),
            queue: QueueLimits::default(),
            influx_precision: Precision::Ns,
            max_image: crate::record::DEFAULT_MAX_IMAGE,
            image_retention: Some(Duration::from_secs(7 * 86_400)),
            image_budget: Some(DEFAULT_IMAGE_BUDGET),
            retention_every: Duration::from_secs(60),
            #[cfg(feature = "nats")]
            bus: None,
        }
    }

    /// Checks every value.
    ///
    /// # Errors
    /// The first value that cannot work, and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.db.sqlite().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(refuse("db", "give a file name"));
        }
        #[cfg(feature = "nats")]
        if let Some(bus) = &self.bus {
            bus.validate().map_err(|why| refuse("bus", why))?;
        }
        if !(1..=1_000_000).contains(&self.max_batch) {
            return Err(refuse("max_batch", "must be 1 to 1000000"));
        }
        if self.retention_every.is_zero() {
            return Err(refuse("retention_every", "must be more than zero"));
        }
        if self.retention.is_some_and(|r| r.is_zero()) {
            return Err(refuse(
                "retention",
                "zero would delete everything; use None",
            ));
        }
        let c = &self.cardinality;
        if c.devices == 0 || c.streams == 0 || c.fields == 0 {
            return Err(refuse("cardinality", "every limit must be at least 1"));
        }
        if self.queue.records == 0 || self.queue.bytes == 0 {
            return Err(refuse("queue", "must hold at least one record"));
        }
        if self.max_image == 0 || self.max_image > self.queue.bytes / 4 {
            return Err(refuse(
                "max_image",
                format!(
                    "must be 1 byte to a quarter of the writer's queue ({} bytes)",
                    self.queue.bytes / 4
                ),
            ));
        }
        if self.image_retention.is_some_and(|r| r.is_zero()) {
            return Err(refuse(
                "image_retention",
                "zero would delete every image; use None",
            ));
        }
        if self.image_budget == Some(0) {
            return Err(refuse("image_budget", "zero would keep no image; use None"));
        }
        Ok(())
    }
}

/// How the HTTP API and dashboard are served.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The token clients must give (`Authorization: Bearer TOKEN` or `?token=TOKEN`). Required
    /// on a listener beyond loopback.
    pub token: Option<String>,
    /// Host names the API answers to besides IP addresses and `localhost` (checked while no
    /// token is required, against DNS rebinding).
    pub hosts: Vec<String>,
    /// Let `POST /api/ingest` write without a token.
    pub ingest_no_auth: bool,
    /// Who may connect.
    pub access: socketeer::AccessList,
    /// Most connections at once; `None`: 256, or a quarter of the descriptors the process may
    /// open, whichever is less.
    pub max_conns: Option<usize>,
    /// How long a client has to send a request's head (a body gets three times this; a
    /// connection that moves no byte for six times this is closed).
    pub timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            token: None,
            hosts: Vec::new(),
            ingest_no_auth: false,
            access: socketeer::AccessList::default(),
            max_conns: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl HttpConfig {
    /// Checks every value.
    ///
    /// # Errors
    /// The first value that cannot work, and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            check_token(token).map_err(|why| refuse("token", why))?;
        }
        if self.timeout.is_zero() {
            return Err(refuse("timeout", "must be above zero"));
        }
        if self.max_conns == Some(0) {
            return Err(refuse("max_conns", "must be at least 1"));
        }
        Ok(())
    }
}

/// Checks an HTTP token: at least [`MIN_TOKEN`] of `A-Z a-z 0-9 . _ ~ -` (it goes in URLs).
///
/// # Errors
/// Why the token is refused.
pub fn check_token(text: &str) -> Result<(), String> {
    let url_safe = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
    if text.len() < MIN_TOKEN || !url_safe {
        return Err(format!(
            "an HTTP token is at least {MIN_TOKEN} of A-Z a-z 0-9 . _ ~ - (this one is {} \
             characters{}); make one with `socketeer keygen`",
            text.len(),
            if url_safe { "" } else { ", some not allowed" }
        ));
    }
    Ok(())
}
