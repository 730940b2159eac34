//! How failures become exit statuses: a [`UsageError`] (bad flag value, bad endpoint) exits 2,
//! anything else 1.

use socketeer::{Endpoint, ErrorKind, Remedy};

/// Exit status for a runtime failure.
pub(crate) const EXIT_FAILURE: i32 = 1;
/// Exit status for a bad command line.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit status after a second SIGINT/SIGTERM.
pub(crate) const EXIT_INTERRUPTED: i32 = 130;
/// `exec`: the command's output passed the server's `--max-output` and was cut.
pub(crate) const EXIT_OUTPUT_CUT: i32 = 125;

/// The command line asked for something impossible.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// The exit status for a failed command.
pub(crate) fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<UsageError>().is_some() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// What the library says would help, in this program's terms: its flags.
fn hint(remedy: Remedy) -> &'static str {
    match remedy {
        Remedy::UseTls => ": connect with --ca FILE or --pin FINGERPRINT",
        Remedy::MaybeUseTls => " (if the server speaks TLS, connect with --ca or --pin)",
        Remedy::NoTlsUseKey => " (leave out --ca/--pin/--tls; give --key-file)",
        Remedy::UseKey => ": give --key-file FILE (and --device NAME)",
        Remedy::NameDevice => " (use --device)",
        _ => "",
    }
}

/// A failure as the program prints it: the whole chain, then the flags that would help when
/// the library can tell.
pub(crate) fn describe(err: &anyhow::Error) -> String {
    let remedy = err
        .chain()
        .find_map(|e| e.downcast_ref::<socketeer::Error>())
        .and_then(socketeer::Error::remedy);
    format!("{err:#}{}", remedy.map_or("", hint))
}

/// A library error as the program prints it, with the flags that would help.
pub(crate) fn describe_error(err: &socketeer::Error) -> String {
    format!("{err}{}", err.remedy().map_or("", hint))
}

/// Parses an endpoint written on the command line; a bad one is a usage error.
/// The endpoint of `connect`/`listen`, written as socketeer writes it (`HOST:PORT`, `EP`) or as
/// nc does (`HOST PORT`; for `listen` also a bare `PORT`, every address).
pub(crate) fn nc_endpoint(
    first: &str,
    port: Option<&str>,
    listening: bool,
) -> Result<Endpoint, UsageError> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match port {
        Some(port)
            if first.contains("://")
                || (first.contains(':') && first.parse::<std::net::Ipv6Addr>().is_err()) =>
        {
            Err(UsageError(format!(
                "{first} {port}: {first} is already an endpoint; write it alone, or HOST PORT"
            )))
        }
        Some(port) => {
            // An IPv6 address needs brackets before its port.
            let host = if first.parse::<std::net::Ipv6Addr>().is_ok() {
                format!("[{first}]")
            } else {
                first.to_owned()
            };
            parse_endpoint(&format!("{host}:{port}"))
        }
        None if digits(first) && listening => parse_endpoint(&format!(":{first}")),
        None if digits(first) => Err(UsageError(format!(
            "bad endpoint \"{first}\": a port alone; write HOST:PORT or HOST PORT (e.g. 127.0.0.1:{first})"
        ))),
        None => parse_endpoint(first),
    }
}

/// The hub nodes a client is given (`EP`, then every `--hub EP`), each a stream endpoint.
pub(crate) fn hub_endpoints(
    command: &str,
    first: Option<&str>,
    more: &[String],
) -> Result<Vec<Endpoint>, UsageError> {
    let mut endpoints = Vec::new();
    for text in first.into_iter().chain(more.iter().map(String::as_str)) {
        let endpoint = parse_endpoint(text)?;
        if !endpoint.is_stream() {
            return Err(UsageError(format!(
                "{endpoint}: {command} needs a stream endpoint"
            )));
        }
        endpoints.push(endpoint);
    }
    if endpoints.is_empty() {
        return Err(UsageError(format!(
            "{command}: give the hub's endpoint (EP, or --hub EP for each node)"
        )));
    }
    Ok(endpoints)
}

pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, UsageError> {
    text.parse().map_err(|e: socketeer::Error| {
        debug_assert_eq!(e.kind(), ErrorKind::BadEndpoint);
        UsageError(e.to_string())
    })
}
