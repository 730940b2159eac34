//! `socketeer serve echo`: the tutorials' echo family. Chunks (default) or lines, upper-cased,
//! prefixed, or answered with a fixed reply; a welcome on connect; one-shot. Over UDP and Unix
//! datagrams each datagram is answered to its sender, never with more bytes than it carried
//! plus the prefix.

use std::borrow::Cow;
use std::sync::Arc;

use socketeer::{Connection, Datagram, DatagramHandler, Handler, Result};

use crate::cli::EchoArgs;
use crate::serve::{Service, serve};

/// What an echo server answers.
#[derive(Debug, Default)]
pub(crate) struct Echo {
    pub(crate) lines: bool,
    pub(crate) upper: bool,
    pub(crate) prefix: Vec<u8>,
    pub(crate) reply: Option<Vec<u8>>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) one_shot: bool,
}

impl Echo {
    /// The answer to one message (a chunk, a line, or a datagram); the message itself, not a
    /// copy, when nothing changes it.
    fn answer<'m>(&self, message: &'m [u8]) -> Cow<'m, [u8]> {
        if self.prefix.is_empty() && self.reply.is_none() && !self.upper {
            return Cow::Borrowed(message);
        }
        let mut out = Vec::with_capacity(self.prefix.len() + message.len() + 1);
        out.extend_from_slice(&self.prefix);
        match &self.reply {
            Some(reply) => {
                out.extend_from_slice(reply);
                if self.lines && !reply.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            None if self.upper => out.extend(message.iter().map(u8::to_ascii_uppercase)),
            None => out.extend_from_slice(message),
        }
        Cow::Owned(out)
    }
}

/// One connection's handler: shares the configuration.
#[derive(Clone)]
pub(crate) struct EchoHandler(pub(crate) Arc<Echo>);

impl Handler for EchoHandler {
    async fn setup(&mut self, conn: &mut Connection) -> Result<()> {
        match &self.0.welcome {
            Some(welcome) => conn.send(welcome).await,
            None => Ok(()),
        }
    }

    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        loop {
            let message = if self.0.lines {
                conn.read_line().await?
            } else {
                conn.read_chunk().await?
            };
            let Some(message) = message else { break };
            conn.send(&self.0.answer(&message)).await?;
            if self.0.one_shot {
                break;
            }
        }
        Ok(())
    }
}

/// The most an answer to a datagram may be, in multiples of the datagram.
const MAX_AMPLIFICATION: usize = 3;

impl DatagramHandler for EchoHandler {
    async fn handle(&self, datagram: Datagram) -> Result<()> {
        let answer = self.0.answer(datagram.data());
        // Bounded amplification: never more than the datagram carried plus the prefix, and
        // never more than three times what it carried (QUIC's anti-amplification factor), so
        // a long --prefix cannot turn forged 1-byte datagrams into a flood at another host.
        let sent = datagram.data().len();
        let most = (sent + self.0.prefix.len()).min(MAX_AMPLIFICATION * sent);
        datagram.reply(&answer[..answer.len().min(most)]).await
    }
}

pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<i32> {
    let echo = Arc::new(Echo {
        lines: args.lines,
        upper: args.upper,
        prefix: args.prefix.map(|t| t.0).unwrap_or_default(),
        reply: args.reply.map(|t| t.0),
        welcome: args.welcome.map(|t| t.0),
        one_shot: args.one_shot,
    });
    let datagram_notes = [
        (echo.welcome.is_some(), "--welcome"),
        (echo.one_shot, "--one-shot"),
        (echo.lines, "--lines"),
    ];
    let has_datagram = args
        .serve
        .listen
        .iter()
        .any(|l| l.starts_with("udp://") || l.starts_with("unixgram://"));
    for (set, flag) in datagram_notes {
        if set && has_datagram {
            tracing::warn!(
                "{flag} has no effect on datagram endpoints: each datagram gets one answer"
            );
        }
    }
    let handler = EchoHandler(echo);
    let service = Service {
        name: "echo",
        default_endpoint: "127.0.0.1:9999",
        make_handler: {
            let handler = handler.clone();
            move || handler.clone()
        },
        datagram: Some(handler),
        auth_failures: None,
    };
    serve(&args.serve, service).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_the_modes() {
        let upper = Echo {
            upper: true,
            prefix: b"OK...".to_vec(),
            ..Echo::default()
        };
        assert_eq!(
            upper.answer("hi 欢迎\n".as_bytes()),
            "OK...HI 欢迎\n".as_bytes()
        );
        let reply = Echo {
            reply: Some(b"I am server.".to_vec()),
            lines: true,
            ..Echo::default()
        };
        assert_eq!(&*reply.answer(b"x\n"), b"I am server.\n");
        assert!(matches!(
            Echo::default().answer(b"as is"),
            Cow::Borrowed(b"as is")
        ));
    }
}
