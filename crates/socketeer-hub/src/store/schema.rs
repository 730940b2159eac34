//! The database: opened in WAL mode with the durability asked for, and its schema brought up
//! to date by the migrations in `migrations/` (one `.sql` file per version, applied in order;
//! `PRAGMA user_version` counts those applied).

use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

use super::{Durability, StoreConfig};

/// The schema, one migration per version. Never edit one that has shipped: add the next.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_devices_series_frames.sql"),
    include_str!("migrations/0002_samples.sql"),
    include_str!("migrations/0003_text_fields.sql"),
    include_str!("migrations/0004_received_hash.sql"),
    include_str!("migrations/0005_images.sql"),
    include_str!("migrations/0006_units.sql"),
    include_str!("migrations/0007_device_time.sql"),
];

pub(super) fn open_writer(config: &StoreConfig) -> anyhow::Result<Connection> {
    let path = &config.path;
    let what = || format!("{}", path.display());
    let mut conn = Connection::open(path).with_context(|| format!("cannot open {}", what()))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .with_context(|| format!("{}: cannot switch to WAL", what()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!("{}: the journal stays in {mode} mode, not WAL", what());
    }
    let synchronous = match config.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // The checkpoint thread does it, off the commit path.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    migrate(&mut conn).with_context(|| format!("{}: schema migration failed", what()))?;
    Ok(conn)
}

/// Brings the schema up to date, one transaction per migration.
pub(super) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "the database has schema version {version}, newer than this socketeer knows ({}); \
             use a newer socketeer",
            MIGRATIONS.len()
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
