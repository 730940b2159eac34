//! The command line, as clap definitions. Values are checked here where clap can; endpoints
//! are parsed by the commands so their errors read `socketeer: bad endpoint "...": ...`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit status:
  0    success (a server stopped by SIGINT/SIGTERM after draining also exits 0)
  1    a runtime failure: cannot bind, cannot connect, the peer broke the protocol
  2    a bad command line: unknown flag, bad value, bad endpoint
  125  exec: the remote output passed the server's --max-output and was cut
  130  a second SIGINT/SIGTERM while draining (immediate exit)

Endpoints: tcp://HOST:PORT, HOST:PORT, :PORT (listen on all interfaces), [::1]:PORT,
udp://HOST:PORT, unix:///path/to.sock, unixgram:///path/to.sock. Port 0 picks a free port.";

/// socketeer: socket servers and clients, done properly.
#[derive(Debug, Parser)]
#[command(name = "socketeer", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Logging options, accepted anywhere on the command line.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// More log detail on stderr (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a built-in service.
    #[command(subcommand)]
    Serve(Service),
    /// Connect to an endpoint, like nc: stdin to the socket, the socket to stdout.
    Connect(ConnectArgs),
    /// Wait for a client, like nc -l: the client joined to stdin and stdout.
    Listen(ListenArgs),
    /// Run a command on a `serve exec` server; its output is printed and its status returned.
    Exec(ExecClientArgs),
    /// Upload a file to a `serve files` server (verified; resumes an interrupted upload).
    Put(PutArgs),
    /// Download a file from a `serve files` server (verified; resumes an interrupted download).
    Get(GetArgs),
    /// List a directory on a `serve files` server.
    Ls(LsArgs),
    /// TCP connect scan: which ports of which hosts accept connections.
    Scan(ScanArgs),
    /// Telemetry hub: robots' readings and detections in, kept in SQLite, acknowledged once
    /// committed.
    Hub(Box<HubArgs>),
    /// Send JSON lines to a hub, numbered; each kept until the hub acknowledges it.
    Publish(PublishArgs),
    /// Simulated robots streaming IMU, battery, temperature and camera detections to a hub.
    Simulate(SimulateArgs),
    /// Write a hub database's records as an MCAP recording (for Foxglove and the mcap tools).
    Export(ExportArgs),
    /// Send an MCAP recording's JSON and Foxglove image/annotation messages to a hub, as a
    /// robot would (acknowledged, idempotent: importing twice stores each record once).
    Import(ImportArgs),
    /// Load-test an echo-like server: round trips/s, latency percentiles, MB/s.
    Bench(BenchArgs),
    /// Join two endpoints, like socat with fork: each client accepted on LISTEN gets its own
    /// connection to TARGET, bytes copied both ways (TLS and keys on either side).
    Relay(Box<RelayArgs>),
    /// Print a new random key (64 hex characters) for --key-file.
    Keygen(KeygenArgs),
    /// Make a private CA and a server certificate for TLS, and print the fingerprint.
    Cert(CertArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Print a `DEVICE KEY` line for a per-device key file.
    #[arg(long, value_name = "NAME")]
    pub(crate) device: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CertArgs {
    /// Directory to write ca.pem, ca-key.pem, server.pem and server-key.pem into.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: std::path::PathBuf,
    /// Host names or IP addresses the server certificate is valid for (repeatable; default
    /// localhost, 127.0.0.1 and ::1).
    #[arg(long = "name", value_name = "NAME")]
    pub(crate) names: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Who may connect, and how they prove it: every server takes these.
#[derive(Debug, Args, Clone)]
pub(crate) struct GuardArgs {
    /// Require clients to authenticate with a key from FILE (one key, or `DEVICE KEY` lines).
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<std::path::PathBuf>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// Only accept clients from this network (repeatable), e.g. 10.0.0.0/8. (`serve exec`
    /// also takes allow rules here, each a command line: `--allow uptime` runs uptime with no
    /// arguments, `--allow 'journalctl -u robot -n *'` exactly those, `*` within one argument
    /// and never an option; a last word `...` allows any further arguments.)
    #[arg(long, value_name = "CIDR", value_parser = parse_allow)]
    pub(crate) allow: Vec<Allowed>,
    /// Refuse clients from this network (repeatable); checked before --allow.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub(crate) deny: Vec<ipnet::IpNet>,
    /// Time from accept to authenticated (TLS and key exchange together).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) handshake_timeout: Duration,
    /// Accept tutorial-mode answers on non-loopback endpoints without TLS (the session after
    /// them travels in the clear).
    #[arg(long)]
    pub(crate) allow_plaintext_auth: bool,
    /// Most connections still in their handshake, from everyone.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_startups: u32,
    /// Most connections still in their handshake from one address (one IPv6 /64).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_startups_per_source: u32,
}

/// How a client reaches a guarded server.
#[derive(Debug, Args, Clone)]
pub(crate) struct ClientGuardArgs {
    /// Authenticate with the key in FILE (one key, or `DEVICE KEY` lines; see --device).
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<std::path::PathBuf>,
    /// The device name to authenticate as (default: this host's name).
    #[arg(long, value_name = "NAME", requires = "key_file")]
    pub(crate) device: Option<String>,
    /// How to answer the server's challenge: socketeer (mutual, default) or tutorial (the Python
    /// tutorials' 64 hex characters, for their servers).
    #[arg(long, value_enum, default_value_t = AuthModeArg::Socketeer, requires = "key_file")]
    pub(crate) auth_mode: AuthModeArg,
    /// Speak TLS; verify the server with --ca, --pin or (not recommended) --insecure.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Trust server certificates signed by the CA in FILE (implies --tls).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "insecure"])]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// Trust only the server certificate with this SHA-256 fingerprint (implies --tls).
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub(crate) pin: Option<String>,
    /// Do not verify the server's certificate (implies --tls). Anyone on the path can read and
    /// change the traffic.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// The name to check the server certificate against (default: the endpoint's host).
    #[arg(long, value_name = "NAME")]
    pub(crate) server_name: Option<String>,
}

/// `--auth-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AuthModeArg {
    /// Device name, nonce, and a proof from the server too.
    Socketeer,
    /// HMAC-SHA256 of the challenge as 64 hex characters.
    Tutorial,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Service {
    /// Send back what is received (the tutorials' echo, upper-case and telnet-style servers).
    Echo(EchoArgs),
    /// A line broker: each client's lines go to all the others as `NICK: line`.
    Chat(ChatArgs),
    /// Run allowed commands for authenticated clients (the tutorials' "simple ssh", made safe).
    Exec(ExecArgs),
    /// Uploads, downloads and listings inside one directory, verified end to end.
    Files(FilesArgs),
}

#[derive(Debug, Args)]
pub(crate) struct FilesArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// The directory to serve; nothing outside it can be read or written.
    #[arg(long, value_name = "DIR")]
    pub(crate) root: std::path::PathBuf,
    /// Refuse uploads.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// The largest upload accepted.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub(crate) max_upload: u64,
    /// The most that unfinished uploads may hold together (one in progress counts at its full
    /// size); past it new uploads are refused until some finish or are removed.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    pub(crate) max_partial: u64,
    /// Remove an unfinished upload this long after its last byte (until then it can be
    /// resumed; 0 keeps them).
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_age)]
    pub(crate) keep_partial: Duration,
}

/// What every files client takes.
#[derive(Debug, Args)]
pub(crate) struct FileClientArgs {
    /// The `serve files` server.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
    /// Give up connecting (with TLS and authentication) after SECS.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
    /// Print the result as one JSON object (and no progress bar).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) guard: ClientGuardArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    pub(crate) conn: FileClientArgs,
    /// The file to upload.
    #[arg(value_name = "LOCAL")]
    pub(crate) local: std::path::PathBuf,
    /// Where to store it under the server's root (default: LOCAL's name).
    #[arg(value_name = "REMOTE")]
    pub(crate) remote: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    pub(crate) conn: FileClientArgs,
    /// The file under the server's root.
    #[arg(value_name = "REMOTE")]
    pub(crate) remote: String,
    /// Where to write it: a file, or a directory to put it in (default: REMOTE's name here).
    #[arg(value_name = "LOCAL")]
    pub(crate) local: Option<std::path::PathBuf>,
    /// Refuse a file larger than this.
    #[arg(long, value_name = "SIZE", default_value = "1TiB", value_parser = parse_size)]
    pub(crate) max_size: u64,
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    pub(crate) conn: FileClientArgs,
    /// The directory under the server's root (default: the root).
    #[arg(value_name = "DIR")]
    pub(crate) dir: Option<String>,
}

/// `--protocol` for exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExecProtocol {
    /// socketeer's: stdout, stderr and stdin streamed in frames, then the exit status.
    Native,
    /// The tutorials': the output's size in ASCII, an acknowledgement, then the output.
    SizeHeader,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Let clients run any program on the fixed PATH.
    #[arg(long)]
    pub(crate) allow_any: bool,
    /// Run commands through /bin/sh -c (pipes, redirections, substitutions: the allow list no
    /// longer limits what runs).
    #[arg(long)]
    pub(crate) shell: bool,
    /// Serve without authentication (only on loopback and Unix endpoints).
    #[arg(long)]
    pub(crate) no_auth: bool,
    /// Pass this variable of the server's environment to commands (repeatable); they get
    /// only PATH otherwise.
    #[arg(long = "env", value_name = "NAME")]
    pub(crate) env: Vec<String>,
    /// The directory commands run in (default: the server's current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<std::path::PathBuf>,
    /// Kill a command and its children after SECS.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) cmd_timeout: Duration,
    /// Most output bytes (stdout and stderr together) sent for one command; the rest is cut
    /// with a notice, the command is stopped, and `socketeer exec` exits 125. Output streams
    /// (it is not held in memory), so the cap is only against runaway commands.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub(crate) max_output: u64,
    /// Most commands running at once, in all.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_sessions: u32,
    /// Most commands running at once for one client (its device, else its address).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_sessions_per_client: u32,
    /// The protocol: socketeer's native one, or the tutorials' size-header exchange.
    #[arg(long, value_enum, default_value_t = ExecProtocol::Native)]
    pub(crate) protocol: ExecProtocol,
}

#[derive(Debug, Args)]
pub(crate) struct ExecClientArgs {
    /// The `serve exec` server.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
    /// The command and its arguments (after `--`). One argument is sent as it is, as command
    /// text; several are quoted so the server sees exactly these words.
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
    /// Give up connecting (with TLS and authentication) after SECS.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
    /// Do not send stdin to the command (it reads EOF), like ssh -n.
    #[arg(long, short = 'n')]
    pub(crate) no_stdin: bool,
    /// The protocol: socketeer's native one, or the tutorials' size-header exchange.
    #[arg(long, value_enum, default_value_t = ExecProtocol::Native)]
    pub(crate) protocol: ExecProtocol,
    #[command(flatten)]
    pub(crate) guard: ClientGuardArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// The operator's console: stdin lines go to everyone as `server: line`, and the room's
    /// traffic is printed on stdout.
    #[arg(long)]
    pub(crate) console: bool,
    /// Most lines per second one client may send (bursts of twice that); 0 for no limit.
    #[arg(long, value_name = "LINES", default_value_t = 50.0, value_parser = parse_rate)]
    pub(crate) rate: f64,
    /// Most lines waiting for one client before it is dropped as too slow.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) queue_lines: u32,
    /// Most bytes waiting for one client before it is dropped as too slow.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..))]
    pub(crate) queue_bytes: u32,
    /// Lines for a client written to less than MS milliseconds ago wait and go out together
    /// when that has passed: in a busy room a line may wait this long (at most a millisecond
    /// more), for far less CPU per line; in a quiet room nothing waits. 0 writes at once.
    #[arg(long, value_name = "MS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub(crate) coalesce: u16,
}

/// Options every server takes.
#[derive(Debug, Args, Clone)]
pub(crate) struct ServeArgs {
    /// Endpoint to listen on; repeat for several.
    #[arg(long = "listen", short = 'l', value_name = "EP")]
    pub(crate) listen: Vec<String>,
    /// Most connections served at once (more wait in the backlog).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_conns: u32,
    /// Close a connection after this long without traffic (0: never).
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_secs)]
    pub(crate) idle_timeout: Duration,
    /// On SIGINT/SIGTERM, how long live connections get to finish.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub(crate) grace: Duration,
    /// Longest line accepted, in bytes, where the service reads lines.
    #[arg(long, value_name = "BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_line: u32,
    /// Permission bits for Unix socket files, in octal.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_mode)]
    pub(crate) socket_mode: u32,
    /// Serve each stream endpoint on N threads of its own, each with its own accept loop and
    /// connections (thread-per-core); without it, connections share the runtime's threads.
    /// Lower tail latency with thousands of busy connections, higher with a few dozen on a
    /// machine whose cores the clients share (docs/performance.md).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: Option<u32>,
    #[command(flatten)]
    pub(crate) guard: GuardArgs,
}

impl ServeArgs {
    /// `--threads`, or 0: serve on the shared runtime.
    pub(crate) fn threads(&self) -> usize {
        self.threads.map_or(0, |n| n as usize)
    }
}

#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Work line by line instead of on received chunks.
    #[arg(long)]
    pub(crate) lines: bool,
    /// Upper-case ASCII letters (other bytes unchanged).
    #[arg(long, conflicts_with = "reply")]
    pub(crate) upper: bool,
    /// Prepended to each reply (`\n`, `\r`, `\t`, `\\` are understood).
    #[arg(long, value_name = "TEXT", value_parser = parse_text)]
    pub(crate) prefix: Option<Text>,
    /// Always answer TEXT instead of echoing.
    #[arg(long, value_name = "TEXT", value_parser = parse_text)]
    pub(crate) reply: Option<Text>,
    /// Sent to each client when it connects.
    #[arg(long, value_name = "TEXT", value_parser = parse_text)]
    pub(crate) welcome: Option<Text>,
    /// Answer one message, then close the connection.
    #[arg(long)]
    pub(crate) one_shot: bool,
}

/// How stdin and the socket are joined, for connect and listen.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct PipeArgs {
    /// Send `\r\n` for each `\n` read from stdin.
    #[arg(long)]
    pub(crate) crlf: bool,
    /// Only send stdin; ignore what the peer sends.
    #[arg(long, conflicts_with = "recv_only")]
    pub(crate) send_only: bool,
    /// Only print what the peer sends; do not read stdin.
    #[arg(long)]
    pub(crate) recv_only: bool,
    /// Print received bytes as a hex dump.
    #[arg(long)]
    pub(crate) hex: bool,
    /// After stdin ends, wait at most SECS for the peer, then quit (like nc -q). Datagram
    /// endpoints default to 1.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) quit_after: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Where to connect: an endpoint (HOST:PORT, tcp://, udp://, unix://, unixgram://), or a
    /// host followed by PORT as with nc.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
    /// With a host as EP: its port (`socketeer connect example.org 80`, as with nc).
    #[arg(value_name = "PORT")]
    pub(crate) port: Option<String>,
    /// Give up connecting (with TLS and authentication) after SECS.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) guard: ClientGuardArgs,
    #[command(flatten)]
    pub(crate) pipe: PipeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Where to listen; the bound address is printed on stderr. A bare port (`listen 7777`,
    /// as with nc -l) listens on every address; a host followed by PORT on that host.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
    /// With a host as EP: its port.
    #[arg(value_name = "PORT")]
    pub(crate) port: Option<String>,
    /// Serve many clients at once; stdin goes to all of them.
    #[arg(long, short = 'k')]
    pub(crate) keep_open: bool,
    /// With --keep-open, most clients at once.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_conns: u32,
    /// Permission bits for a Unix socket file, in octal.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_mode)]
    pub(crate) socket_mode: u32,
    #[command(flatten)]
    pub(crate) guard: GuardArgs,
    #[command(flatten)]
    pub(crate) pipe: PipeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The hub's ingest endpoint.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
    /// The MCAP file.
    #[arg(value_name = "FILE")]
    pub(crate) file: std::path::PathBuf,
    /// Give up one connection attempt (with TLS and authentication) after SECS.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
    /// Every record as this device's (default: a topic `/DEVICE/STREAM` names its device, as
    /// `socketeer export` writes them; other topics are this host's).
    #[arg(long = "as", value_name = "NAME")]
    pub(crate) as_device: Option<String>,
    #[command(flatten)]
    pub(crate) guard: ClientGuardArgs,
}

/// What `socketeer hub` does besides serving.
#[derive(Debug, Subcommand)]
pub(crate) enum HubAction {
    /// Copy a single-machine hub's SQLite history into PostgreSQL: resumable (an interrupted
    /// copy goes on where it stopped), idempotent (a second run copies nothing twice), counts
    /// checked at the end.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The SQLite database (`FILE` or `sqlite://FILE`; it may be running).
    #[arg(long, value_name = "FILE")]
    pub(crate) from: String,
    /// The PostgreSQL database (`postgres://user@host/db`; its schema is created if missing).
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The hub's database (it may be running): a SQLite file or a postgres:// URL.
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) db: String,
    /// Only this device's records (default: every device's).
    #[arg(long, value_name = "NAME")]
    pub(crate) device: Option<String>,
    /// From this time, Unix seconds (default: the first record).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub(crate) from: Option<f64>,
    /// To this time, Unix seconds (default: the last record).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub(crate) to: Option<f64>,
    /// How chunks are compressed.
    #[arg(long, value_enum, default_value = "zstd")]
    pub(crate) compression: CompressionArg,
    /// Write the recording to FILE (`-`: stdout, when it is not a terminal).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: std::path::PathBuf,
}

/// `export --compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompressionArg {
    /// zstd.
    Zstd,
    /// lz4 (faster, larger).
    Lz4,
    /// None.
    None,
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// The hub's ingest endpoint.
    #[arg(value_name = "EP", required_unless_present = "hubs")]
    pub(crate) endpoint: Option<String>,
    /// A node of the hub (repeatable, instead of EP or after it): when one dies or cannot be
    /// reached, the next takes over, and what it had not acknowledged is sent there.
    #[arg(long = "hub", value_name = "EP")]
    pub(crate) hubs: Vec<String>,
    /// How many robots.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) devices: u32,
    /// IMU readings per second per robot (battery and temperature come once a second).
    #[arg(long, value_name = "HZ", default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// Camera frames (640x480 JPEGs with their detections) per second per robot, at most one
    /// per IMU reading.
    #[arg(long, value_name = "FPS", default_value_t = 5.0, value_parser = parse_fps)]
    pub(crate) camera_fps: f64,
    /// Robot names are PREFIX-1, PREFIX-2, ...
    #[arg(long, value_name = "PREFIX", default_value = "robot")]
    pub(crate) prefix: String,
    /// Make the robots' clocks wrong by SECS (3600: an hour ahead; -0.5: half a second
    /// behind): their records carry those times, and the time exchange tells the hub so.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = parse_clock_offset)]
    pub(crate) clock_offset: f64,
    /// Stop after SECS (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) duration: Option<Duration>,
    /// Give up one connection attempt after SECS (robots then retry).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) guard: ClientGuardArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The hub's ingest endpoint.
    #[arg(value_name = "EP", required_unless_present = "hubs")]
    pub(crate) endpoint: Option<String>,
    /// A node of the hub (repeatable, instead of EP or after it): when one dies or cannot be
    /// reached, the next takes over, and what it had not acknowledged is sent there.
    #[arg(long = "hub", value_name = "EP")]
    pub(crate) hubs: Vec<String>,
    /// Read the lines from FILE instead of stdin (with --spool, a restart on the same file
    /// goes on after the lines already taken; a piped stdin is always read whole).
    #[arg(long, value_name = "FILE")]
    pub(crate) file: Option<std::path::PathBuf>,
    /// Keep unacknowledged lines (and their images) in DIR too, so a restart of publish sends
    /// them.
    #[arg(long, value_name = "DIR")]
    pub(crate) spool: Option<std::path::PathBuf>,
    /// Send one camera image (a JPEG or PNG file) as a record of --stream, dated now, instead
    /// of reading lines. (Lines on stdin may carry images too: a header line with
    /// "image":{"format":"jpeg","bytes":N}, then the N bytes.)
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    pub(crate) image: Option<std::path::PathBuf>,
    /// The stream of an --image.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "camera",
        requires = "image"
    )]
    pub(crate) stream: String,
    /// At the end, print one JSON line: lines acknowledged, rate, and send-to-ack latency
    /// percentiles.
    #[arg(long)]
    pub(crate) stats: bool,
    /// Most lines waiting for acknowledgement; reading the input pauses there.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_unacked: u32,
    /// Most bytes (lines and images) waiting for acknowledgement (K, M, G, KiB, MiB, GiB);
    /// reading the input pauses there. One record larger than this still goes, alone.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_room)]
    pub(crate) max_unacked_bytes: u64,
    /// Run a time exchange with the hub at connect and then every SECS, so the hub puts this
    /// device's times on its clock (0: never).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub(crate) clock_every: Duration,
    /// Give up one connection attempt (with TLS and authentication) after SECS; publish then
    /// waits and tries again.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) guard: ClientGuardArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct HubArgs {
    /// Something else than serving.
    #[command(subcommand)]
    pub(crate) action: Option<HubAction>,
    /// Ingest endpoint (default 127.0.0.1:7000), the common server flags, and --key-file.
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Accept robots without authentication (loopback and Unix endpoints only).
    #[arg(long)]
    pub(crate) no_auth: bool,
    /// InfluxDB line protocol endpoint (repeatable; default tcp:// and udp://127.0.0.1:8094,
    /// Telegraf's socket_listener port). Unauthenticated: beyond loopback it needs --allow.
    #[arg(long = "influx", value_name = "EP", conflicts_with = "no_influx")]
    pub(crate) influx: Vec<String>,
    /// No InfluxDB line protocol listener.
    #[arg(long)]
    pub(crate) no_influx: bool,
    /// The HTTP API and dashboard endpoint. Beyond loopback it needs a token (--http-token,
    /// or one is made and printed).
    #[arg(
        long,
        value_name = "EP",
        default_value = "127.0.0.1:8080",
        conflicts_with = "no_http"
    )]
    pub(crate) http: String,
    /// No HTTP API or dashboard.
    #[arg(long)]
    pub(crate) no_http: bool,
    /// Most HTTP connections at once; one more is answered 503 (default: 256, or a quarter of
    /// the descriptors the process may open, whichever is less).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) http_max_conns: Option<u32>,
    /// How long an HTTP client has to send a request's head; a connection that moves no byte
    /// for six times this is closed too.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_secs)]
    pub(crate) http_timeout: Duration,
    /// The token HTTP clients must give (`Authorization: Bearer TOKEN` or `?token=TOKEN`): at
    /// least 16 of A-Z a-z 0-9 . _ ~ - (`socketeer keygen` makes one).
    #[arg(long, value_name = "TOKEN", env = "SOCKETEER_HTTP_TOKEN", value_parser = parse_token)]
    pub(crate) http_token: Option<String>,
    /// Let `POST /api/ingest` write without a token (on loopback, where none is required): any
    /// local program may then write as any device. Off by default.
    #[arg(long)]
    pub(crate) http_ingest_no_auth: bool,
    /// A host name the API answers to (the `Host` header), besides IP addresses and
    /// `localhost`; repeat for several. Checked while no token is required, against DNS
    /// rebinding.
    #[arg(long = "http-host", value_name = "NAME")]
    pub(crate) http_hosts: Vec<String>,
    /// The unit of Influx timestamps.
    #[arg(long, value_name = "UNIT", value_enum, default_value = "ns")]
    pub(crate) influx_precision: PrecisionArg,
    /// Where to store: a SQLite file (created if missing; default socketeer.db, or with
    /// --demo a temporary one removed at exit), or `postgres://user@host/db` (PostgreSQL 13+,
    /// shared by every hub node; a password may come from PGPASSWORD or ~/.pgpass and is never
    /// shown).
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) db: Option<String>,
    /// Join other hub nodes sharing the same --db postgres:// over NATS (`nats://host:4222`):
    /// every node's dashboard and Foxglove socket then show every robot live, new viewers get
    /// the latest values at once, and presence tells which node each robot is on.
    #[arg(long, value_name = "URL")]
    pub(crate) bus: Option<String>,
    /// A NATS credentials file (.creds) for --bus.
    #[arg(long, value_name = "FILE", requires = "bus")]
    pub(crate) bus_creds: Option<std::path::PathBuf>,
    /// This node's name on the bus (default: HOST-PID).
    #[arg(long, value_name = "NAME", requires = "bus")]
    pub(crate) node: Option<String>,
    /// Simulated robots in the same process, without keys, on loopback: see the dashboard
    /// with live data from one command.
    #[arg(long)]
    pub(crate) demo: bool,
    /// How many robots --demo runs.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "demo", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) demo_robots: u32,
    /// Their IMU rate, per second.
    #[arg(long, value_name = "HZ", default_value_t = 20.0, requires = "demo")]
    pub(crate) demo_rate: f64,
    /// Their cameras' frames per second.
    #[arg(long, value_name = "FPS", default_value_t = 5.0, requires = "demo", value_parser = parse_fps)]
    pub(crate) demo_camera_fps: f64,
    /// full: a record is on disk before it is acknowledged; normal: survives the hub crashing,
    /// not the machine losing power.
    #[arg(long, value_name = "MODE", value_enum, default_value = "full")]
    pub(crate) sync: SyncArg,
    /// Delete data received longer ago than this (30d, 12h, 90m; 0 keeps everything). By
    /// receive time: a device's wrong clock neither deletes fresh data nor keeps old data.
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = parse_age)]
    pub(crate) retention: Duration,
    /// Most devices kept; records of one more are refused (and counted).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_devices: u32,
    /// Most streams per device; records of one more are refused.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_streams: u32,
    /// Most fields per device (numbers and text states, over all its streams); records with
    /// one more are refused.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_fields: u32,
    /// Most records committed in one transaction.
    #[arg(long, value_name = "N", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) max_batch: u32,
    /// The largest camera image taken (JPEG or PNG); a header announcing more is refused and
    /// its connection closed.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_image_size)]
    pub(crate) max_image: u64,
    /// Delete images received longer ago than this (their detections stay; 0 keeps them as
    /// long as --retention).
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_age)]
    pub(crate) image_retention: Duration,
    /// The most bytes of images kept: past it the oldest images go first (readings and
    /// detections untouched); 0 for no budget.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub(crate) image_budget: u64,
}

/// Camera frames per second: above 0, at most 60.
fn parse_fps(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|f| *f > 0.0 && *f <= 60.0)
        .ok_or_else(|| format!("\"{text}\": frames per second above 0, at most 60"))
}

/// `--max-image`: 1 byte to 16 MiB (a quarter of the writer's queue).
/// `--clock-offset`: finite, within a day.
fn parse_clock_offset(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && s.abs() <= 86_400.0)
        .ok_or_else(|| format!("\"{text}\" is not a number of seconds from -86400 to 86400"))
}

/// A room in bytes: at least one.
fn parse_room(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err(format!("\"{text}\": the room must hold at least 1 byte")),
        size => Ok(size),
    }
}

fn parse_image_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if !(1..=16 << 20).contains(&size) {
        return Err(format!("\"{text}\": an image cap is 1 byte to 16MiB"));
    }
    Ok(size)
}

/// `--sync`: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SyncArg {
    /// A commit is on disk before it is acknowledged (default).
    Full,
    /// Survives a crash of the hub, may lose the last commits if the machine loses power.
    Normal,
}

/// `--influx-precision`: the unit of Influx timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PrecisionArg {
    /// Nanoseconds (Telegraf's default).
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

/// An age such as `30d`, `12h`, `90m`, `45s`; `0` (zero) for none.
fn parse_age(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let secs_per = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => {
            return Err(format!(
                "\"{text}\": write a number and d, h, m or s (30d), or 0"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .ok()
        .filter(|&n| n > 0 && n <= 100 * 365)
        .ok_or_else(|| format!("\"{text}\": the number must be 1 to 36500"))?;
    Ok(Duration::from_secs(n * secs_per))
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  socketeer scan 127.0.0.1\n  socketeer scan -p- localhost\n  \
socketeer scan -p 22,80,8000-9000 --all 192.168.1.0/24\n  socketeer scan --json ::1 example.net"
)]
pub(crate) struct ScanArgs {
    /// Hosts to scan: IPv4 or IPv6 addresses, host names, CIDR networks (10.0.0.0/24).
    #[arg(value_name = "TARGET", required = true)]
    pub(crate) targets: Vec<String>,
    /// Ports: a list with ranges (22,80,8000-9000), `-p-` for all 65535. Default: the 1000
    /// ports most often found open.
    #[arg(short = 'p', long, value_name = "PORTS", allow_hyphen_values = true)]
    pub(crate) ports: Option<String>,
    /// Scan the N ports most often found open (1-1000).
    #[arg(long, value_name = "N", conflicts_with = "ports", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub(crate) top_ports: Option<u16>,
    /// Show every port with its state and reason, not only the open ones.
    #[arg(long)]
    pub(crate) all: bool,
    /// Print one JSON document: targets, ports, states, reasons and timing.
    #[arg(long, conflicts_with = "greppable")]
    pub(crate) json: bool,
    /// Print one line per host, in nmap's greppable (-oG) layout.
    #[arg(long)]
    pub(crate) greppable: bool,
    /// Probe ports and hosts in order instead of a random order.
    #[arg(short = 'r', long)]
    pub(crate) sequential: bool,
    /// Most connects in flight at once. Default: as many as the open-file limit allows (after
    /// raising it to its hard limit), at most 10000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: Option<u32>,
    /// Most new connects per second.
    #[arg(long, value_name = "PER_SEC", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate: Option<u32>,
    /// First timeout for a probe, and the most it grows to; it settles lower as round trips
    /// are measured (never below 0.1 s).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_scan_timeout)]
    pub(crate) timeout: Duration,
    /// Tries after a probe times out (only timeouts are retried).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=10))]
    pub(crate) retries: u8,
    /// Most hosts the targets may expand to.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_hosts: u64,
}

fn parse_scan_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_secs(text)?;
    if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(300) {
        return Err(format!("\"{text}\" must be between 0.001 and 300 seconds"));
    }
    Ok(timeout)
}

#[derive(Debug, Args)]
#[command(mut_arg("max_line", |arg| arg.hide(true)))]
#[command(after_help = "Examples:
  socketeer relay :8080 127.0.0.1:80                       # a port forward
  socketeer relay :9000 unix:///run/robot.sock             # a Unix service on the network
  socketeer relay :8443 127.0.0.1:8080 --tls-cert s.pem --tls-key s-key.pem
  socketeer relay :7001 127.0.0.1:7000 --key-file devices.keys   # keys in front
  socketeer relay unix:///tmp/hub.sock hub.lab:7443 --target-ca ca.pem
  socketeer relay udp://:5353 udp://10.0.0.2:53 --idle-timeout 30

Counters (Prometheus text, or JSON with --json) are printed on stdout on SIGUSR1 and at exit.")]
pub(crate) struct RelayArgs {
    /// Where clients connect: any endpoint (tcp://, HOST:PORT, :PORT, unix://, udp://,
    /// unixgram://). More with --listen.
    #[arg(value_name = "LISTEN")]
    pub(crate) listen_at: String,
    /// Where each client's bytes go: any endpoint.
    #[arg(value_name = "TARGET")]
    pub(crate) target: String,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    #[command(flatten)]
    pub(crate) to: TargetArgs,
    /// Serve one client, then exit (socat without fork). More clients wait until it is done
    /// and are then turned away.
    #[arg(long)]
    pub(crate) connect_once: bool,
    /// Log lines (one per connection as it ends) and counters as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How the relay reaches its target.
#[derive(Debug, Args, Clone)]
pub(crate) struct TargetArgs {
    /// Speak TLS to the target; verify it with --target-ca, --target-pin or --target-insecure.
    #[arg(long)]
    pub(crate) target_tls: bool,
    /// Trust target certificates signed by the CA in FILE (implies --target-tls).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["target_pin", "target_insecure"])]
    pub(crate) target_ca: Option<std::path::PathBuf>,
    /// Trust only the target certificate with this SHA-256 fingerprint (implies --target-tls).
    #[arg(long, value_name = "SHA256", conflicts_with = "target_insecure")]
    pub(crate) target_pin: Option<String>,
    /// Do not verify the target's certificate (implies --target-tls).
    #[arg(long)]
    pub(crate) target_insecure: bool,
    /// The name to check the target's certificate against (default: the target's host).
    #[arg(long, value_name = "NAME")]
    pub(crate) target_server_name: Option<String>,
    /// Authenticate to the target with the key in FILE (one key, or `DEVICE KEY` lines).
    #[arg(long, value_name = "FILE")]
    pub(crate) target_key_file: Option<std::path::PathBuf>,
    /// The device name to authenticate to the target as (default: this host's name).
    #[arg(long, value_name = "NAME", requires = "target_key_file")]
    pub(crate) target_device: Option<String>,
    /// How to answer the target's challenge: socketeer (mutual, default) or tutorial.
    #[arg(long, value_enum, default_value_t = AuthModeArg::Socketeer, requires = "target_key_file")]
    pub(crate) target_auth_mode: AuthModeArg,
    /// Give up connecting to the target (with TLS and authentication) after SECS.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_secs)]
    pub(crate) connect_timeout: Duration,
    /// Connect attempts after the first fails (refused or timed out).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub(crate) connect_retries: u32,
    /// Wait between connect attempts.
    #[arg(long, value_name = "SECS", default_value = "0.5", value_parser = parse_secs)]
    pub(crate) retry_delay: Duration,
}

impl TargetArgs {
    /// The same choices as a client's flags, checked with the relay's flag names.
    pub(crate) fn client_guard(&self) -> Result<ClientGuardArgs, String> {
        let verified =
            self.target_ca.is_some() || self.target_pin.is_some() || self.target_insecure;
        if self.target_tls && !verified {
            return Err(
                "--target-tls needs --target-ca FILE, --target-pin SHA256, or --target-insecure"
                    .into(),
            );
        }
        if let Some(pin) = &self.target_pin {
            socketeer::tls::parse_pin(pin).map_err(|e| format!("--target-pin: {e}"))?;
        }
        Ok(ClientGuardArgs {
            key_file: self.target_key_file.clone(),
            device: self.target_device.clone(),
            auth_mode: self.target_auth_mode,
            tls: self.target_tls,
            ca: self.target_ca.clone(),
            pin: self.target_pin.clone(),
            insecure: self.target_insecure,
            server_name: self.target_server_name.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The echo-like server to load.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
    /// Concurrent connections.
    #[arg(long, short = 'c', value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) connections: u32,
    /// Message size in bytes.
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub(crate) size: u32,
    /// How long to measure.
    #[arg(long, short = 'd', value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub(crate) duration: Duration,
    /// Unmeasured warm-up before measuring.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub(crate) warmup: Duration,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// Measure a broker's fan-out instead of echo: every connection reads and counts the lines
    /// it is delivered; the first N connections also send lines, one per write, as fast as the
    /// server takes them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) fanout: Option<u32>,
    /// With --fanout: this many more connections that never read (a client on a dead link).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "fanout")]
    pub(crate) stalled: u32,
    /// With --fanout: offer this many lines per second in all (shared by the senders) instead
    /// of as many as the server takes, so brokers can be compared by their CPU at equal load.
    #[arg(long, value_name = "LINES", requires = "fanout", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub(crate) rate: Option<u64>,
    /// Bulk transfer instead of request/response: each connection writes --size-byte chunks
    /// as fast as the server takes them while reading the echo; reports MB/s echoed.
    #[arg(long, conflicts_with = "fanout")]
    pub(crate) bulk: bool,
    /// One-way bulk: each connection only writes --size-byte chunks, to a server that reads
    /// and discards them (a sink, or a relay in front of one); reports MB/s the server took.
    #[arg(long, conflicts_with_all = ["fanout", "bulk"])]
    pub(crate) upload: bool,
    /// Round trips: spread the connections over N threads, each with a runtime of its own
    /// (as wrk does), instead of one work-stealing runtime. Past a few hundred connections
    /// per core a shared runtime's own queueing adds to the latencies it measures; with a
    /// few dozen, a thread the kernel sets aside holds its connections for a time slice
    /// (docs/performance.md).
    #[arg(long, value_name = "N", conflicts_with_all = ["fanout", "bulk", "upload"], value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: Option<u32>,
    /// Allow a server that is not on loopback or a Unix socket (a load test of someone
    /// else's machine is an attack unless it is yours).
    #[arg(long)]
    pub(crate) allow_remote: bool,
    #[command(flatten)]
    pub(crate) guard: ClientGuardArgs,
}

/// Seconds as a non-negative decimal number (`0.5`, `300`).
pub(crate) fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("\"{text}\" must be between 0 and 1e9 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Seconds above zero: a deadline that must leave a peer some time.
pub(crate) fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    let secs = parse_secs(text)?;
    if secs < Duration::from_millis(1) {
        return Err(format!("\"{text}\" must be above 0 seconds"));
    }
    Ok(secs)
}

/// An `--allow` value: a network, or (for `serve exec`) a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// An address or network clients may connect from.
    Net(ipnet::IpNet),
    /// A program `serve exec` clients may run.
    Program(String),
}

fn parse_allow(text: &str) -> Result<Allowed, String> {
    parse_cidr(text)
        .map(Allowed::Net)
        .or_else(|_| Ok(Allowed::Program(text.to_owned())))
}

/// An HTTP token: long enough not to be guessed, and safe in a URL as written. An empty one
/// (an unset variable in a script) would open the API to anyone who sends `?token=`.
fn parse_token(text: &str) -> Result<String, String> {
    socketeer_hub::config::check_token(text)?;
    Ok(text.to_owned())
}

fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("\"{text}\" is not an address or network such as 10.0.0.0/8"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a number of lines per second"))?;
    if !(0.0..=1e9).contains(&rate) {
        return Err(format!("\"{text}\" must be between 0 and 1e9"));
    }
    Ok(rate)
}

/// A size in bytes: `1048576`, `64KiB`, `1MiB`, `2GiB` (also `k`, `M`, `G` as powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("\"{text}\": unknown unit (use KiB, MiB, GiB)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("\"{text}\" is not a size such as 1048576 or 1MiB"))
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("\"{text}\" is not an octal mode such as 600"))
}

/// Bytes given on the command line as TEXT with escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub(crate) Vec<u8>);

/// TEXT with backslash escapes: `\n`, `\r`, `\t`, `\\`, `\0`, `\xHH`.
pub(crate) fn parse_text(text: &str) -> Result<Text, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let value = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(
                    value.ok_or_else(|| format!("bad \\x escape in \"{text}\" (want \\xHH)"))?,
                );
            }
            Some(other) => return Err(format!("unknown escape \\{} in \"{text}\"", other as char)),
            None => return Err(format!("\"{text}\" ends with a lone backslash")),
        }
    }
    Ok(Text(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes() {
        assert_eq!(parse_text(r"Welcome\n"), Ok(Text(b"Welcome\n".to_vec())));
        assert_eq!(parse_text(r"a\tb\\c\x41"), Ok(Text(b"a\tb\\cA".to_vec())));
        assert!(parse_text(r"bad\q").is_err());
        assert!(parse_text("end\\").is_err());
    }

    #[test]
    fn seconds_and_modes() {
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        assert!(
            parse_secs("-1").is_err() && parse_secs("soon").is_err() && parse_secs("NaN").is_err()
        );
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("1XB").is_err() && parse_size("-1").is_err() && parse_size("").is_err());
        assert!(parse_mode("999").is_err());
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
