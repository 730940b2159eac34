//! A PostgreSQL address as a user writes it (`postgres://user:password@host:port/db`), kept so
//! that its password is never shown: what is logged or printed is [`PostgresUrl`]'s `Display`,
//! with the password as `***`.
//!
//! What the URL leaves out is taken as libpq takes it: `PGHOST`, `PGPORT`, `PGUSER` (else the
//! login name), `PGDATABASE` (else the user), and the password from `PGPASSWORD` or the
//! password file (`PGPASSFILE`, else `~/.pgpass`; lines `host:port:database:user:password`,
//! `*` matching anything, ignored unless only its owner can read it).

use std::fmt;

/// A PostgreSQL database to store in: `postgres://` or `postgresql://`, with the usual parts.
#[derive(Clone)]
pub struct PostgresUrl {
    /// As given: may hold the password, so never shown.
    text: String,
    /// As shown: the password replaced.
    shown: String,
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

impl PostgresUrl {
    /// True when `text` names a PostgreSQL database rather than a file.
    pub fn is_postgres(text: &str) -> bool {
        text.starts_with("postgres://") || text.starts_with("postgresql://")
    }

    /// Parses a `postgres://` URL.
    ///
    /// # Errors
    /// Why it is not one (the message never repeats the URL: it may hold a password).
    pub fn parse(text: &str) -> Result<PostgresUrl, String> {
        if !PostgresUrl::is_postgres(text) {
            return Err("a PostgreSQL address starts with postgres:// or postgresql://".into());
        }
        let url = PostgresUrl {
            text: text.to_owned(),
            shown: redact(text),
        };
        #[cfg(feature = "postgres")]
        {
            use std::str::FromStr;
            // The parser's message quotes no part of the input.
            postgres::Config::from_str(text)
                .map_err(|err| format!("not a PostgreSQL URL: {err}"))?;
        }
        #[cfg(not(feature = "postgres"))]
        return Err(
            "this build of socketeer-hub has no PostgreSQL support (feature \"postgres\")".into(),
        );
        #[cfg(feature = "postgres")]
        Ok(url)
    }

    /// The client configuration, with what the URL leaves out taken from the environment and
    /// the password file, and this hub's timeouts: a server that does not answer (stopped, or
    /// cut off by the network) fails a connection or a commit within seconds instead of
    /// holding it.
    #[cfg(feature = "postgres")]
    pub(crate) fn config(&self) -> Result<postgres::Config, String> {
        use std::str::FromStr;
        let mut config = postgres::Config::from_str(&self.text).map_err(|err| {
            // The parser's message quotes no part of the input.
            format!("not a PostgreSQL URL: {err}")
        })?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if config.get_hosts().is_empty() {
            config.host(&env("PGHOST").unwrap_or_else(|| "localhost".into()));
        }
        if config.get_ports().is_empty() {
            if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
                config.port(port);
            }
        }
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .or_else(|| env("LOGNAME"))
                .ok_or("no user in the URL, and neither PGUSER nor USER is set")?;
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let db = env("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or("").into());
            config.dbname(&db);
        }
        if config.get_password().is_none() {
            let password = env("PGPASSWORD").or_else(|| {
                let host = match config.get_hosts().first() {
                    Some(postgres::config::Host::Tcp(host)) => host.clone(),
                    _ => "localhost".into(),
                };
                let port = config.get_ports().first().copied().unwrap_or(5432);
                from_password_file(
                    &host,
                    port,
                    config.get_dbname().unwrap_or(""),
                    config.get_user().unwrap_or(""),
                )
            });
            if let Some(password) = password {
                config.password(password);
            }
        }
        // The server's notices ("already exists, skipping") are not the user's business.
        config.notice_callback(|_| {});
        if config.get_application_name().is_none() {
            config.application_name("socketeer-hub");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.keepalives_idle(std::time::Duration::from_secs(5));
        config.keepalives_interval(std::time::Duration::from_secs(2));
        config.keepalives_retries(3);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(std::time::Duration::from_secs(10));
        }
        Ok(config)
    }
}

/// `text` with any password replaced by `***` (in the authority and as a `password=`
/// parameter).
fn redact(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    let head = match head.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{hosts}"),
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    let mut shown = format!("{scheme}://{head}");
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

/// The password the password file holds for this server, database and user, if any: the first
/// line that matches. A file others may read is ignored (as libpq does), with a warning.
fn from_password_file(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "password file ignored: others may read it (chmod 0600)");
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    password_for(&text, host, &port.to_string(), db, user)
}

/// The password of the first line of a password file's `text` that matches.
pub(crate) fn password_for(
    text: &str,
    host: &str,
    port: &str,
    db: &str,
    user: &str,
) -> Option<String> {
    let wanted = [host, port, db, user];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let fields = split_escaped(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4].iter().zip(wanted).all(|(field, want)| {
                field == "*" || field == want || (want == "localhost" && field == "127.0.0.1")
            });
            matches.then(|| fields[4].clone())
        })
}

/// A password file's line split at `:`, with `\:` and `\\` standing for themselves.
fn split_escaped(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        for (given, shown) in [
            (
                "postgres://hub:s3cret@db.example:5433/fleet",
                "postgres://hub:***@db.example:5433/fleet",
            ),
            (
                "postgresql://hub@localhost/fleet?password=s3cret&sslmode=disable",
                "postgresql://hub@localhost/fleet?password=***&sslmode=disable",
            ),
            ("postgres://localhost/fleet", "postgres://localhost/fleet"),
        ] {
            let url = PostgresUrl::parse(given).expect("parses");
            assert_eq!(url.to_string(), shown);
            assert!(!format!("{url:?}").contains("s3cret"));
        }
        let err = PostgresUrl::parse("postgres://hub:s3cret@[bad/fleet").err();
        assert!(err.is_none_or(|e| !e.contains("s3cret")));
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let file = "# comment\n\
                    other:5432:*:*:no\n\
                    localhost:5432:fleet:hub:first\n\
                    *:*:*:hub:any\\:thing\n";
        assert_eq!(
            password_for(file, "localhost", "5432", "fleet", "hub").as_deref(),
            Some("first")
        );
        assert_eq!(
            password_for(file, "db", "6000", "x", "hub").as_deref(),
            Some("any:thing")
        );
        assert_eq!(password_for(file, "db", "6000", "x", "someone"), None);
    }
}
