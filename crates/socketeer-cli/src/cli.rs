//! The command line, as clap definitions. Values are checked here where clap can; endpoints
//! are parsed by the commands so their errors read `socketeer: bad endpoint "...": ...`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit status:
  0    success (a server stopped by SIGINT/SIGTERM after draining also exits 0)
  1    a runtime failure: cannot bind, cannot connect, the peer broke the protocol
  2    a bad command line: unknown flag, bad value, bad endpoint
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
    /// Load-test an echo-like server: round trips/s, latency percentiles, MB/s.
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum Service {
    /// Send back what is received (the tutorials' echo, upper-case and telnet-style servers).
    Echo(EchoArgs),
}

/// Options every server takes.
#[derive(Debug, Args)]
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
#[derive(Debug, Args, Clone)]
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
    /// Where to connect.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
    /// Give up connecting after SECS.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) pipe: PipeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Where to listen; the bound address is printed on stderr.
    #[arg(value_name = "EP")]
    pub(crate) endpoint: String,
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
    pub(crate) pipe: PipeArgs,
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
        assert!(parse_mode("999").is_err());
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
