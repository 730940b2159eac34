//! `socketeer connect EP`: like nc. Stream endpoints join stdin/stdout to the connection (over
//! TLS and authenticated when asked); datagram endpoints send each stdin read as a datagram and
//! print the replies.

use socketeer::{DatagramSocket, Limits, client};

use crate::cli::ConnectArgs;
use crate::failure::{UsageError, nc_endpoint};
use crate::guard::{client_needs_stream, client_options};
use crate::pipe::{self, Target};

/// Limits for an interactive connection: no idle timeout (a person may think for a while).
pub(crate) fn interactive_limits() -> Limits {
    let mut limits = Limits::default();
    limits.idle_timeout = None;
    limits
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<i32> {
    let endpoint = nc_endpoint(&args.endpoint, args.port.as_deref(), false)?;
    if endpoint.is_stream() {
        let options = client_options(&args.guard, args.timeout)?;
        let conn = client::connect_with(&endpoint, &options).await?;
        tracing::debug!(peer = %conn.peer_addr(), tls = conn.is_tls(), "connected");
        if crate::terminal::wanted(&args.pipe) {
            return crate::terminal::converse(conn, &args.pipe).await;
        } else {
            pipe::stream(conn, &args.pipe).await?;
        }
    } else if client_needs_stream(&args.guard) {
        return Err(UsageError(format!(
            "{endpoint}: TLS and --key-file need a stream endpoint"
        ))
        .into());
    } else {
        let socket = DatagramSocket::connect(&endpoint).await?;
        pipe::datagrams(socket, Target::Connected, &args.pipe)
            .await
            .map_err(|e| e.context(endpoint.to_string()))?;
    }
    Ok(0)
}
