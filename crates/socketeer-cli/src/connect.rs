//! `socketeer connect EP`: like nc. Stream endpoints join stdin/stdout to the connection;
//! datagram endpoints send each stdin read as a datagram and print the replies.

use socketeer::{Connection, DatagramSocket, Limits, client};

use crate::cli::ConnectArgs;
use crate::failure::parse_endpoint;
use crate::pipe::{self, Target};

/// Limits for an interactive client: no idle timeout (a person may think for a while).
pub(crate) fn interactive_limits() -> Limits {
    let mut limits = Limits::default();
    limits.idle_timeout = None;
    limits
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<i32> {
    let endpoint = parse_endpoint(&args.endpoint)?;
    if endpoint.is_stream() {
        let (stream, peer) = client::connect_stream(&endpoint, args.timeout).await?;
        tracing::debug!(%peer, "connected");
        pipe::stream(
            Connection::with_limits(stream, peer, &interactive_limits()),
            &args.pipe,
        )
        .await?;
    } else {
        let socket = DatagramSocket::connect(&endpoint).await?;
        pipe::datagrams(socket, Target::Connected, &args.pipe)
            .await
            .map_err(|e| e.context(endpoint.to_string()))?;
    }
    Ok(0)
}
