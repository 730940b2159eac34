//! The `socketeer` program: parse the command line, set up logging, run the command, and turn
//! its outcome into an exit status (documented in `socketeer --help`).
//!
//! A library only so that `src/main.rs` and the fuzz targets (`fuzz/`, through the `fuzzing`
//! feature) share one build of the program's code; its API is [`main`] and nothing else is
//! promised. Programs embed the `socketeer` crate instead.

#[macro_use]
mod out;

mod bench;
mod cert;
mod chat;
mod cli;
mod connect;
mod echo;
mod exec;
mod export;
mod failure;
mod files;
mod guard;
mod hexdump;
mod hub;
mod import;
mod listen;
mod pipe;
mod publish;
mod relay;
mod scan;
mod serve;
mod simulate;
mod terminal;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use clap::Parser;
use clap::error::ErrorKind as ClapErrorKind;

use crate::cli::{Cli, Command, LogArgs, LogFormat, Service};
use crate::failure::{EXIT_FAILURE, EXIT_USAGE, exit_code};

/// The most I/O events one poll of the runtime's driver turns into wake-ups (tokio's default
/// is 1024). A worker's own run queue holds 256 tasks; a poll that wakes more than fit spills
/// the rest into the queue all workers share, which each visits only now and then, and there
/// they wait longest. With a thousand busy connections that was the tail: their p99 halved
/// with the cap at 64, their throughput and a few connections' latency unchanged
/// (docs/performance.md, "p99 at 1000 connections").
const IO_EVENTS_PER_TICK: usize = 64;

/// Runs the program with the process's arguments and exits with its status.
pub fn main() -> ! {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => std::process::exit(report_usage(&err)),
    };
    let json = matches!(&cli.command, Command::Relay(args) if args.json);
    init_logging(&cli.log, json);
    // A client with one connection has no work for a second thread; on a small machine its
    // threads would only take turns with the server's.
    let single = matches!(
        cli.command,
        Command::Publish(_)
            | Command::Connect(_)
            | Command::Exec(_)
            | Command::Put(_)
            | Command::Get(_)
            | Command::Ls(_)
    );
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.max_io_events_per_tick(IO_EVENTS_PER_TICK);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            errln!("socketeer: cannot start the async runtime: {err}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            errln!("socketeer: {}", failure::describe(&err));
            exit_code(&err)
        }
    };
    // Exit while the runtime is still alive: dropping it would wait for a blocking read of
    // stdin that cannot be cancelled, hanging an interactive session. A line editor's
    // terminal is given back first, however the command ended.
    terminal::exit(code);
}

async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Serve(Service::Echo(args)) => echo::run(args).await,
        Command::Serve(Service::Chat(args)) => chat::run(args).await,
        Command::Serve(Service::Exec(args)) => exec::server::run(args).await,
        Command::Exec(args) => exec::client::run(args).await,
        Command::Serve(Service::Files(args)) => files::server::run(args).await,
        Command::Put(args) => files::client::put(args).await,
        Command::Get(args) => files::client::get(args).await,
        Command::Ls(args) => files::client::ls(args).await,
        Command::Connect(args) => connect::run(args).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Scan(args) => scan::run(args).await,
        Command::Hub(args) => hub::run(*args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Export(args) => export::run(&args).await,
        Command::Import(args) => import::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Relay(args) => relay::run(args).await,
        Command::Keygen(args) => cert::keygen(&args),
        Command::Cert(args) => cert::cert(&args),
    }
}

/// Prints a clap error as `socketeer: <what>: <why>` (help and version as they are) and
/// returns the exit status.
fn report_usage(err: &clap::Error) -> i32 {
    if matches!(
        err.kind(),
        ClapErrorKind::DisplayHelp | ClapErrorKind::DisplayVersion
    ) {
        // Help piped into `head` is still help: a closed pipe is not a usage error.
        let _ = out!("{err}");
        return 0;
    }
    let text = err.render().to_string();
    if err.kind() == ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        err!("{text}");
        return EXIT_USAGE;
    }
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("bad command line");
    errln!(
        "socketeer: {}",
        first.strip_prefix("error: ").unwrap_or(first)
    );
    for line in lines.filter(|l| !l.trim().is_empty()) {
        errln!("  {}", line.trim());
    }
    EXIT_USAGE
}

fn init_logging(args: &LogArgs, json: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if args.quiet {
        "warn"
    } else {
        match args.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter =
        EnvFilter::try_from_env("SOCKETEER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_writer(|| out::LossyStderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text if !json => builder.init(),
        LogFormat::Text => builder.json().init(),
        LogFormat::Json => builder.json().init(),
    }
}
