//! `socketeer exec EP -- CMD ARGS...`: runs a command on a `serve exec` server. With the native
//! protocol stdin is streamed to the command, its stdout and stderr come back to ours as they
//! are produced, and we exit with its status. With `--protocol size-header` it speaks the
//! tutorials' exchange (and works against the tutorials' Python server).

use std::io::Write;

use anyhow::{Context, bail};
use socketeer::codec::FrameCodec;
use socketeer::{Connection, ConnectionReader, ConnectionWriter, client};
use tokio::io::AsyncReadExt;

use super::policy::MAX_COMMAND;
use super::wire::{self, FromServer, Report};
use crate::cli::{ExecClientArgs, ExecProtocol};
use crate::failure::{EXIT_OUTPUT_CUT, UsageError, parse_endpoint};
use crate::guard::FirstLook;
use crate::guard::client_options;

/// The acknowledgement we send in the size-header exchange (the tutorial's client sends a
/// sentence; any message will do).
const ACK: &[u8] = b"ok, send it";
/// The largest output size a size-header server may announce (the digits are peer-controlled).
const MAX_ANNOUNCED: u64 = 1 << 40;

/// The command text for the server: one argument as written (so `exec EP 'ls -l'` works like
/// ssh), several quoted so the server's word splitting gives back exactly these words.
pub(crate) fn command_text(words: &[String]) -> String {
    match words {
        [one] => one.clone(),
        many => shell_words::join(many),
    }
}

pub(crate) async fn run(args: ExecClientArgs) -> anyhow::Result<i32> {
    let endpoint = parse_endpoint(&args.endpoint)?;
    if !endpoint.is_stream() {
        return Err(UsageError(format!("{endpoint}: exec needs a stream endpoint")).into());
    }
    let text = command_text(&args.command);
    if text.len() > MAX_COMMAND {
        return Err(UsageError(format!(
            "the command is {} bytes, longer than servers accept ({MAX_COMMAND})",
            text.len()
        ))
        .into());
    }
    let options = client_options(&args.guard, args.timeout)?;
    let conn = client::connect_with(&endpoint, &options).await?;
    match args.protocol {
        ExecProtocol::Native => native(conn, &text, !args.no_stdin).await,
        ExecProtocol::SizeHeader => size_header(conn, &text).await,
    }
}

async fn native(conn: Connection, text: &str, with_stdin: bool) -> anyhow::Result<i32> {
    let (reader, mut writer) = conn.into_split();
    writer
        .write_frame(&wire::frame(wire::COMMAND, text.as_bytes()))
        .await?;
    writer.flush().await?;
    let sender = tokio::spawn(send_stdin(writer, with_stdin));
    let report = receive(reader).await;
    sender.abort();
    let Some(report) = report? else {
        // Our stdout's reader left (`socketeer exec EP -- cmd | head -1`): end quietly, as a
        // program killed by SIGPIPE does; closing the connection stops the remote command.
        return Ok(STDOUT_GONE);
    };
    if let Some(message) = &report.message {
        errln!("socketeer: remote: {message}");
    }
    if report.timed_out {
        errln!("socketeer: remote: the command was killed at the server's time limit");
    }
    if report.truncated {
        // The server's notice is already on stderr; the command's own status (often SIGPIPE,
        // 141, from writing into the pipe the server closed) would read as our pipe breaking.
        errln!(
            "socketeer: remote: the output passed the server's --max-output and was cut; \
             exit status {EXIT_OUTPUT_CUT}"
        );
        return Ok(EXIT_OUTPUT_CUT);
    }
    if let (Some(signal), false) = (report.signal, report.timed_out) {
        errln!("socketeer: remote: the command was killed by signal {signal}");
    }
    Ok(report.exit_status())
}

/// Sends our stdin as STDIN frames, then STDIN_END (at once without `with_stdin`).
async fn send_stdin(mut writer: ConnectionWriter, with_stdin: bool) -> anyhow::Result<()> {
    if with_stdin {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin.read(&mut buf[1..]).await.context("reading stdin")?;
            if n == 0 {
                break;
            }
            buf[0] = wire::STDIN;
            writer.write_frame(&buf[..=n]).await?;
            writer.flush().await?;
        }
    }
    writer.write_frame(&[wire::STDIN_END]).await?;
    writer.flush().await?;
    // Keep the connection open: closing it would tell the server we left.
    std::future::pending::<()>().await;
    Ok(())
}

/// The exit status when our stdout's reader has gone: what a shell reports for a program
/// killed by SIGPIPE (128 + 13).
const STDOUT_GONE: i32 = 128 + 13;

/// Writes a piece of the command's output to our stdout: `Ok(false)` once its reader has gone.
fn to_stdout(stdout: &mut std::io::Stdout, data: &[u8]) -> std::io::Result<bool> {
    match stdout.write_all(data).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err),
    }
}

/// Prints STDOUT and STDERR frames until the EXIT frame, and returns its report (`None` if our
/// stdout's reader went away first).
async fn receive(mut reader: ConnectionReader) -> anyhow::Result<Option<Report>> {
    let mut codec = FrameCodec::new(wire::MAX_FRAME);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    // The first bytes, before any frame is decoded: a server speaking something else may send
    // a few and wait (a size header waits for its acknowledgement), never a whole frame.
    if reader.read_with(&mut FirstLook).await? == Some(false) {
        if let Some(mismatch) = other_protocol(reader.buffered()) {
            return Err(mismatch);
        }
    }
    let mut first = true;
    loop {
        let read = reader.read_with(&mut codec).await;
        if first && !matches!(read, Ok(Some(_))) {
            // Whatever came instead of an answer may say what this server is.
            if let Some(mismatch) = other_protocol(reader.buffered()) {
                return Err(mismatch);
            }
        }
        first = false;
        let Some(frame) = read? else {
            bail!("the server closed the connection before the command's exit status");
        };
        match wire::from_server(&frame).map_err(anyhow::Error::msg)? {
            FromServer::Stdout(data) => {
                if !to_stdout(&mut stdout, data)? {
                    return Ok(None);
                }
            }
            FromServer::Stderr(data) => stderr.write_all(data)?,
            FromServer::Exit(report) => return Ok(Some(report)),
        }
    }
}

/// What a server that answered an exec request in something other than exec frames speaks:
/// a refusal, a key challenge, TLS, or the tutorials' size-header protocol.
fn other_protocol(first: &[u8]) -> Option<anyhow::Error> {
    if let Some(mismatch) = client::recognize(first) {
        return Some(mismatch.into_error(false).into());
    }
    // A size header is decimal digits; an exec frame starts with its length's high byte,
    // which is 0 for every frame a server may send (under 16 MiB), never a digit.
    let head = &first[..first.len().min(16)];
    let digits = first.first().is_some_and(u8::is_ascii_digit)
        && head
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    digits.then(|| {
        anyhow::anyhow!(
            "this server uses the tutorials' protocol: add --protocol size-header (it answered {:?})",
            String::from_utf8_lossy(&first[..first.len().min(20)])
        )
    })
}

/// The tutorials' exchange: command, size, acknowledgement, output. No exit status exists in
/// it, so success is 0.
async fn size_header(mut conn: Connection, text: &str) -> anyhow::Result<i32> {
    conn.send(text.as_bytes()).await?;
    let Some(header) = conn.read_chunk().await? else {
        bail!(
            "the server closed the connection without answering (a socketeer exec server speaks \
             its own protocol: leave out --protocol size-header; or it asks for a key \
             (--key-file) or speaks TLS (--ca))"
        );
    };
    if let Some(mismatch) = client::recognize(&header) {
        return Err(mismatch.into_error(false).into());
    }
    let digits = std::str::from_utf8(&header).unwrap_or("").trim();
    let size: u64 = digits
        .parse()
        .ok()
        .filter(|n| *n <= MAX_ANNOUNCED)
        .with_context(|| {
            format!(
                "the server's answer is not a size header: {:?}",
                String::from_utf8_lossy(&header[..header.len().min(40)])
            )
        })?;
    conn.send(ACK).await?;
    let mut received = 0u64;
    let mut stdout = std::io::stdout();
    while received < size {
        let Some(data) = conn.read_chunk().await? else {
            bail!("the server closed the connection after {received} of {size} bytes");
        };
        let take = data.len().min((size - received) as usize);
        if !to_stdout(&mut stdout, &data[..take])? {
            return Ok(STDOUT_GONE);
        }
        received += take as u64;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_words_survive_the_servers_splitting() {
        let words: Vec<String> = ["printf", "%s|", "a b", "$(id)", "it's", ""]
            .map(String::from)
            .to_vec();
        let text = command_text(&words);
        assert_eq!(shell_words::split(&text).expect("splits"), words);
        assert_eq!(command_text(&["ls -l /tmp".into()]), "ls -l /tmp");
    }
}
