//! The PostgreSQL store (`--db postgres://…`): the same records, reads and retention as the
//! SQLite store, for many hub nodes sharing one database.
//!
//! The writer thread keeps one connection of its own; each group commit sends the batch's
//! idempotency keys and samples with binary `COPY`, resolves resends on the unique
//! (session, seq) key, and commits with `synchronous_commit = on` before anyone is answered.
//! Reads take pooled connections (r2d2). Migrations run under an advisory lock, so nodes
//! starting together apply each one once.

mod url;
pub use url::PostgresUrl;

#[cfg(feature = "postgres")]
pub(crate) mod moving;
#[cfg(feature = "postgres")]
mod reads;
#[cfg(feature = "postgres")]
mod writer;
#[cfg(feature = "postgres")]
pub(crate) use reads::PgReader;
#[cfg(feature = "postgres")]
pub(crate) use writer::PgWriter;

#[cfg(feature = "postgres")]
pub(crate) use schema::{connect, migrate};

/// Opening: connections and the schema.
#[cfg(feature = "postgres")]
mod schema {
    use super::PostgresUrl;

    /// The schema, one migration per version. Never edit one that has shipped: add the next.
    const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_schema.sql")];

    /// The advisory lock migrations run under ("sock" in ASCII).
    const MIGRATION_LOCK: i64 = 0x736f_636b;

    /// A connection to `url` (blocking), made ready for the hub's statements.
    pub(crate) fn connect(url: &PostgresUrl) -> Result<postgres::Client, String> {
        let config = url.config()?;
        let mut client = config
            .connect(postgres::NoTls)
            .map_err(|err| format!("cannot connect to {url}: {}", describe(&err)))?;
        // An acknowledgement means on disk, whatever the server's default says.
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(|err| format!("{url}: {}", describe(&err)))?;
        Ok(client)
    }

    /// Brings the schema up to date, one transaction per migration, under an advisory lock:
    /// a node that starts while another migrates waits, then finds the work done.
    pub(crate) fn migrate(client: &mut postgres::Client) -> Result<(), postgres::Error> {
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let result = (|| {
            client.batch_execute(
                "CREATE TABLE IF NOT EXISTS socketeer_schema (version integer NOT NULL);
                 INSERT INTO socketeer_schema (version)
                     SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM socketeer_schema);",
            )?;
            let version: i32 = client
                .query_one("SELECT version FROM socketeer_schema", &[])?
                .get(0);
            let version = usize::try_from(version).unwrap_or(usize::MAX);
            if version > MIGRATIONS.len() {
                tracing::error!(
                    version,
                    known = MIGRATIONS.len(),
                    "the database's schema is newer than this socketeer knows; use a newer socketeer"
                );
            }
            for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
                let mut tx = client.transaction()?;
                tx.batch_execute(migration)?;
                tx.execute(
                    "UPDATE socketeer_schema SET version = $1",
                    &[&((index + 1) as i32)],
                )?;
                tx.commit()?;
                tracing::info!(version = index + 1, "PostgreSQL schema migrated");
            }
            Ok(())
        })();
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        result.and(unlocked.map(|_| ()))
    }

    /// The schema version the database is at, and the one this build knows.
    pub(crate) fn versions(
        client: &mut postgres::Client,
    ) -> Result<(usize, usize), postgres::Error> {
        let version: i32 = client
            .query_one("SELECT version FROM socketeer_schema", &[])?
            .get(0);
        Ok((usize::try_from(version).unwrap_or(0), MIGRATIONS.len()))
    }

    /// An error as a person reads it: the server's own message when it sent one.
    pub(crate) fn describe(err: &postgres::Error) -> String {
        match err.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => {
                let mut text = err.to_string();
                let mut source = std::error::Error::source(err);
                while let Some(inner) = source {
                    text = format!("{text}: {inner}");
                    source = inner.source();
                }
                text
            }
        }
    }
}

#[cfg(feature = "postgres")]
pub(crate) use schema::{describe, versions};
