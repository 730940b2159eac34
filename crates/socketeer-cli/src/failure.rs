//! How failures become exit statuses: a [`UsageError`] (bad flag value, bad endpoint) exits 2,
//! anything else 1.

use socketeer::{Endpoint, ErrorKind};

/// Exit status for a runtime failure.
pub(crate) const EXIT_FAILURE: i32 = 1;
/// Exit status for a bad command line.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit status after a second SIGINT/SIGTERM.
pub(crate) const EXIT_INTERRUPTED: i32 = 130;

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

/// Parses an endpoint written on the command line; a bad one is a usage error.
pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, UsageError> {
    text.parse().map_err(|e: socketeer::Error| {
        debug_assert_eq!(e.kind(), ErrorKind::BadEndpoint);
        UsageError(e.to_string())
    })
}
