//! Throwaway servers for tests: a PostgreSQL cluster (`initdb` + `pg_ctl`) and a NATS server
//! with JetStream (`nats-server -js`), each in a temporary directory on a free loopback port,
//! started from the installed binaries so a test can stop, kill and restart them to inject
//! faults. Never a server the test did not start.
//!
//! Each is watched by a guard process holding a pipe from this one: when this process ends,
//! however it ends, the pipe closes and the guard stops the server. [`start`](Postgres::start)
//! returns `Err(why)` when the binaries are missing, for the test to print `SKIPPED: why`.

#![allow(missing_docs, clippy::missing_panics_doc)]

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts TCP connections on `port` (or `limit` passes).
fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A process that runs `stop` (a shell command) once this process's pipe to it closes.
struct Guard {
    child: Child,
}

impl Guard {
    fn start(stop: &str) -> std::io::Result<Guard> {
        let child = Command::new("sh")
            .args(["-c", &format!("read _ignored; {stop}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Guard { child })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Closing its stdin fires it; then wait for the stop to finish.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Where a PostgreSQL program is: on the PATH, or in Debian's versioned directory.
pub fn pg_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
            .filter(|p| p.is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A throwaway PostgreSQL cluster.
pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
    pub user: String,
    pub password: String,
    pg_ctl: PathBuf,
    /// Run as the `postgres` user (PostgreSQL refuses to run as root).
    as_postgres: bool,
    _guard: Option<Guard>,
}

impl Postgres {
    /// Creates a cluster (user `socketeer` with a random password, password authentication
    /// over TCP) and starts it.
    ///
    /// # Errors
    /// Why there is none: the binaries are missing, or it would not start.
    pub fn start() -> Result<Postgres, String> {
        let initdb = pg_program("initdb").ok_or("PostgreSQL's initdb is not installed")?;
        let pg_ctl = pg_program("pg_ctl").ok_or("PostgreSQL's pg_ctl is not installed")?;
        let as_postgres = is_root();
        if as_postgres
            && !Command::new("id")
                .arg("postgres")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            return Err(
                "running as root and there is no postgres user to run PostgreSQL as".into(),
            );
        }
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!(
            "socketeer-pg-{}-{}",
            std::process::id(),
            &password[..8]
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, &password).map_err(|e| e.to_string())?;
        if as_postgres {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status();
        }
        let mut cluster = Postgres {
            dir,
            port: free_port(),
            user: "socketeer".into(),
            password,
            pg_ctl,
            as_postgres,
            _guard: None,
        };
        let out = cluster
            .command(&initdb)
            .arg("-D")
            .arg(cluster.data())
            .args([
                "-U",
                "socketeer",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["--no-sync", "--locale=C", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stop = format!(
            "{} {} -D {} stop -m immediate; rm -rf {}",
            if as_postgres {
                "runuser -u postgres --"
            } else {
                ""
            },
            cluster.pg_ctl.display(),
            cluster.data().display(),
            cluster.dir.display()
        );
        cluster._guard = Some(Guard::start(&stop).map_err(|e| e.to_string())?);
        cluster.start_again()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null());
        command
    }

    /// Starts it (again, after [`stop`](Self::stop) or [`kill`](Self::kill)), waiting until
    /// it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let out = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            return Err(format!("PostgreSQL would not start: {log}"));
        }
        Ok(())
    }

    /// Stops it (fast shutdown: connections are cut, nothing committed is lost).
    pub fn stop(&self) {
        let _ = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Kills it as a crash would (immediate shutdown: recovery at the next start).
    pub fn kill(&self) {
        let _ = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The URL of database `db` (with the password in it).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{db}",
            self.user, self.password, self.port
        )
    }

    /// Creates database `name` (empty).
    pub fn create_db(&self, name: &str) -> Result<(), String> {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(drop)
    }

    /// Runs `sql` in database `db` and returns the first column of every row, as text (on a
    /// thread of its own: callable from async code).
    pub fn sql(&self, db: &str, sql: &str) -> Result<Vec<Option<String>>, String> {
        let url = self.url(db);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut client = postgres_config(&url)?
                        .connect(postgres::NoTls)
                        .map_err(|e| format!("connect: {e}"))?;
                    let rows = client
                        .simple_query(sql)
                        .map_err(|e| format!("{sql}: {e}"))?;
                    Ok(rows
                        .iter()
                        .filter_map(|m| match m {
                            postgres::SimpleQueryMessage::Row(row) => {
                                Some(row.get(0).map(str::to_owned))
                            }
                            _ => None,
                        })
                        .collect())
                })
                .join()
                .unwrap_or_else(|_| Err("the query's thread panicked".into()))
        })
    }
}

fn postgres_config(url: &str) -> Result<postgres::Config, String> {
    use std::str::FromStr;
    postgres::Config::from_str(url).map_err(|e| e.to_string())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
        self._guard = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway NATS server with JetStream.
pub struct Nats {
    dir: PathBuf,
    pub port: u16,
    program: PathBuf,
    /// A configuration file (a user and password required), if any.
    config: Option<PathBuf>,
    child: Option<Child>,
    _guard: Option<Guard>,
}

impl Nats {
    /// Starts `nats-server -js` on a free port.
    ///
    /// # Errors
    /// Why there is none: nats-server is missing, or it would not start.
    pub fn start() -> Result<Nats, String> {
        let program = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .iter()
            .map(PathBuf::from)
            .chain(std::env::var_os("PATH").into_iter().flat_map(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("nats-server"))
                    .collect::<Vec<_>>()
            }))
            .find(|p| p.is_file())
            .ok_or("nats-server is not installed")?;
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        let tag: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("socketeer-nats-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pid = dir.join("pid");
        let guard = Guard::start(&format!(
            "kill -9 $(cat {}) 2>/dev/null; rm -rf {}",
            pid.display(),
            dir.display()
        ))
        .map_err(|e| e.to_string())?;
        let mut nats = Nats {
            dir,
            port: free_port(),
            program,
            config: None,
            child: None,
            _guard: Some(guard),
        };
        nats.start_again()?;
        Ok(nats)
    }

    /// As [`start`](Self::start), with clients required to log in as `user` with `password`.
    ///
    /// # Errors
    /// As `start`.
    pub fn start_with_user(user: &str, password: &str) -> Result<Nats, String> {
        let mut nats = Nats::start()?;
        nats.stop();
        let config = nats.dir.join("nats.conf");
        std::fs::write(
            &config,
            format!("authorization {{ user: \"{user}\", password: \"{password}\" }}\n"),
        )
        .map_err(|e| e.to_string())?;
        nats.config = Some(config);
        nats.start_again()?;
        Ok(nats)
    }

    /// Starts it (again), waiting until it accepts connections; JetStream's data survives.
    pub fn start_again(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.program);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.join("js"))
            .arg("-P")
            .arg(self.dir.join("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("nats-server: {e}"))?;
        self.child = Some(child);
        if !wait_for_port(self.port, Duration::from_secs(10)) {
            return Err("nats-server did not start listening within 10 s".into());
        }
        Ok(())
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        self._guard = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `line` to stderr at once (so a SKIPPED reason shows under `cargo test`).
pub fn say(line: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{line}");
}
