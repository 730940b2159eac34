//! `socketeer put`, `get` and `ls`: the clients of `serve files`. Transfers are verified by
//! digest, resume after an interruption (the first bytes checked by digest, not trusted), and
//! `get` writes only to its target — the server names nothing on this side. Progress bars on a
//! terminal, nothing extra in pipes, `--json` for scripts.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustix::fs::FlockOperation;
use serde::Serialize;
use socketeer::codec::FrameCodec;
use socketeer::{Connection, client};

use super::path::{PART_MARK, RelPath, printable};
use super::transfer::{self, ReceiveError};
use super::wire::{self, Request, Response, Resume, Trailer};
use crate::cli::{FileClientArgs, GetArgs, LsArgs, PutArgs};
use crate::failure::{UsageError, parse_endpoint};
use crate::guard::client_options;

/// What a transfer did, for `--json` and the summary line.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    op: &'a str,
    remote: &'a str,
    local: String,
    size: u64,
    /// Bytes that crossed the network this time (less than `size` after a resume).
    transferred: u64,
    resumed_from: u64,
    blake3: String,
    seconds: f64,
    bytes_per_second: f64,
}

impl Summary<'_> {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            outln!("{}", serde_json::to_string(self)?)?;
        } else if std::io::stderr().is_terminal() {
            let resumed = if self.resumed_from > 0 {
                format!(", resumed at {}", self.resumed_from)
            } else {
                String::new()
            };
            errln!(
                "{} {} bytes in {:.2} s ({:.1} MB/s{resumed}), blake3 {}",
                self.op,
                self.size,
                self.seconds,
                self.bytes_per_second / 1e6,
                self.blake3
            );
        }
        Ok(())
    }
}

struct Session {
    conn: Connection,
    codec: FrameCodec,
    /// No answer read yet: the first is looked at for another protocol.
    first: bool,
}

impl Session {
    async fn open(args: &FileClientArgs) -> anyhow::Result<Self> {
        let endpoint = parse_endpoint(&args.endpoint)?;
        if !endpoint.is_stream() {
            return Err(UsageError(format!("{endpoint}: files need a stream endpoint")).into());
        }
        let options = client_options(&args.guard, args.timeout)?;
        let conn = client::connect_with(&endpoint, &options).await?;
        Ok(Self {
            conn,
            codec: FrameCodec::new(wire::MAX_CONTROL),
            first: true,
        })
    }

    async fn send<T: Serialize>(&mut self, message: &T) -> anyhow::Result<()> {
        self.conn.write_frame(&serde_json::to_vec(message)?).await?;
        self.conn.flush().await?;
        Ok(())
    }

    /// The server's next response; an error response becomes an error naming `what`.
    async fn response(&mut self, what: &str) -> anyhow::Result<Response> {
        if std::mem::take(&mut self.first)
            && self.conn.read_with(&mut crate::guard::FirstLook).await? == Some(false)
        {
            if let Some(mismatch) = client::recognize(self.conn.buffered()) {
                return Err(mismatch.into_error(false).into());
            }
        }
        let frame = self
            .conn
            .read_with(&mut self.codec)
            .await?
            .context("the server closed the connection without answering")?;
        let response: Response =
            serde_json::from_slice(&frame).context("the server's answer is malformed")?;
        if !response.ok {
            let why = response.error.as_deref().unwrap_or("refused");
            bail!("{}: {}", printable(what), printable(why));
        }
        Ok(response)
    }
}

fn progress(size: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

pub(crate) async fn put(args: PutArgs) -> anyhow::Result<i32> {
    let local = args.local.clone();
    let file = File::open(&local).with_context(|| format!("{}", local.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(UsageError(format!("{}: not a regular file", local.display())).into());
    }
    let size = meta.len();
    let remote = match &args.remote {
        Some(remote) => remote.clone(),
        None => local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("give a REMOTE name")?,
    };
    RelPath::parse(&remote).map_err(|why| UsageError(format!("{remote}: {why}")))?;
    let started = Instant::now();
    let mut session = Session::open(&args.conn).await?;
    session
        .send(&Request::Put {
            path: remote.clone(),
            size,
        })
        .await?;
    let offer = session.response(&remote).await?;
    let held = offer.offset.unwrap_or(0);
    let prefix = offer.prefix.unwrap_or_default();
    // Resume only if the server's bytes are the first bytes of our file.
    let (file, hasher, start) = blocking(move || {
        let mut file = file;
        if held > 0 && held <= size {
            let hasher = transfer::hash_prefix(&mut file, held)?;
            if wire::hex(&hasher.finalize()) == prefix {
                return Ok((file, hasher, held));
            }
        }
        std::io::Seek::rewind(&mut file)?;
        Ok((file, blake3::Hasher::new(), 0))
    })
    .await?;
    session.send(&Resume { offset: start }).await?;
    let bar = progress(size, args.conn.json);
    bar.set_position(start);
    let sent = transfer::send_file(&mut session.conn, file, size - start, hasher, &bar).await;
    let digest = match sent {
        Ok(digest) => wire::hex(&digest),
        Err(e) => {
            bar.finish_and_clear();
            // The server may have stopped us with a reason (a full disk): prefer it.
            return match session.response(&remote).await {
                Err(why) => Err(why),
                Ok(_) => Err(e),
            };
        }
    };
    session
        .send(&Trailer {
            digest: digest.clone(),
        })
        .await?;
    let done = session.response(&remote).await?;
    bar.finish_and_clear();
    if done.digest.as_deref() != Some(digest.as_str()) {
        bail!("{remote}: the server reports a different digest than the one sent");
    }
    summary("put", &remote, &local, size, start, digest, started).print(args.conn.json)?;
    Ok(0)
}

fn summary<'a>(
    op: &'a str,
    remote: &'a str,
    local: &Path,
    size: u64,
    start: u64,
    digest: String,
    started: Instant,
) -> Summary<'a> {
    let seconds = started.elapsed().as_secs_f64();
    Summary {
        op,
        remote,
        local: local.display().to_string(),
        size,
        transferred: size - start,
        resumed_from: start,
        blake3: digest,
        seconds,
        bytes_per_second: (size - start) as f64 / seconds.max(1e-9),
    }
}

/// Where `get` writes: LOCAL, LOCAL/NAME when LOCAL is a directory, or ./NAME — NAME being the
/// last component of REMOTE as the user typed it. Nothing the server says changes it.
fn target(remote: &str, local: Option<&Path>) -> anyhow::Result<PathBuf> {
    let rel = RelPath::parse(remote).map_err(|why| UsageError(format!("{remote}: {why}")))?;
    let name = rel
        .name()
        .ok_or_else(|| UsageError(format!("{remote}: give a file to get")))?;
    Ok(match local {
        None => PathBuf::from(name),
        Some(dir) if dir.is_dir() => dir.join(name),
        Some(path) => path.to_owned(),
    })
}

pub(crate) async fn get(args: GetArgs) -> anyhow::Result<i32> {
    let target = target(&args.remote, args.local.as_deref())?;
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| UsageError(format!("{}: not a file name", target.display())))?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let part_path = dir.join(format!(".{file_name}{PART_MARK}"));
    // Never through a link planted under the partial file's name.
    let mut part = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&part_path)
        .with_context(|| format!("{}", part_path.display()))?;
    if rustix::fs::flock(&part, FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!("{}: another get into it is running", target.display());
    }
    let held = part.metadata()?.len();
    let (part_file, held_hasher) = blocking(move || {
        let hasher = transfer::hash_prefix(&mut part, held)?;
        Ok((part, hasher))
    })
    .await?;
    let started = Instant::now();
    let mut session = Session::open(&args.conn).await?;
    session
        .send(&Request::Get {
            path: args.remote.clone(),
            offset: held,
            prefix: Some(wire::hex(&held_hasher.finalize())),
        })
        .await?;
    let offer = match session.response(&args.remote).await {
        Ok(offer) => offer,
        Err(e) => {
            if held == 0 {
                let _ = std::fs::remove_file(&part_path);
            }
            return Err(e);
        }
    };
    let (Some(size), Some(start)) = (offer.size, offer.offset) else {
        bail!("the server's answer is malformed: no size or offset");
    };
    if (start != held && start != 0) || start > size {
        bail!("the server's answer is malformed: it offers to resume at {start}, not {held} or 0");
    }
    if size > args.max_size {
        bail!(
            "{}: the file is {size} bytes, more than --max-size {}",
            args.remote,
            args.max_size
        );
    }
    let (file, hasher) = if start == held {
        (part_file, held_hasher)
    } else {
        let file = blocking(move || {
            part_file.set_len(0)?;
            let mut file = part_file;
            std::io::Seek::rewind(&mut file)?;
            Ok(file)
        })
        .await?;
        (file, blake3::Hasher::new())
    };
    let bar = progress(size, args.conn.json);
    bar.set_position(start);
    let received =
        transfer::receive_file(&mut session.conn, file, size - start, hasher, &bar).await;
    bar.finish_and_clear();
    let (file, digest) = match received {
        Ok(done) => done,
        Err(ReceiveError::Connection(e)) => {
            return Err(e.context(format!(
                "{}: interrupted; run the same get again to resume",
                args.remote
            )));
        }
        Err(ReceiveError::File(e)) => {
            let _ = std::fs::remove_file(&part_path);
            return Err(anyhow::Error::from(e).context(format!("{}", target.display())));
        }
    };
    let digest = wire::hex(&digest);
    let done = session.response(&args.remote).await?;
    if done.digest.as_deref() != Some(digest.as_str()) {
        let _ = std::fs::remove_file(&part_path);
        bail!(
            "{}: digest mismatch (received data hashes to {digest}); nothing was kept",
            args.remote
        );
    }
    let final_path = target.clone();
    blocking(move || {
        file.sync_all()?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&part_path, &final_path)?;
        File::open(&dir)?.sync_all()
    })
    .await
    .with_context(|| format!("{}", target.display()))?;
    summary("get", &args.remote, &target, size, start, digest, started).print(args.conn.json)?;
    Ok(0)
}

/// Most pages one `ls` asks for (10,000 entries each at most): past that it says it stopped.
const MAX_PAGES: usize = 10_000;

pub(crate) async fn ls(args: LsArgs) -> anyhow::Result<i32> {
    let path = args.dir.clone().unwrap_or_default();
    RelPath::parse(&path).map_err(|why| UsageError(format!("{path}: {why}")))?;
    let shown = if path.is_empty() { "." } else { &path };
    // Page by page, each printed as it comes (a directory of any size lists in bounded memory).
    let mut after: Option<String> = None;
    let mut first = true;
    if args.conn.json {
        out!("{{\"path\":{},\"entries\":[", serde_json::json!(path))?;
    }
    for _ in 0..MAX_PAGES {
        let mut session = Session::open(&args.conn).await?;
        session
            .send(&Request::Ls {
                path: path.clone(),
                after: after.clone(),
            })
            .await?;
        let listing = session.response(shown).await?;
        let mut out = String::new();
        for entry in listing.entries.unwrap_or_default() {
            if args.conn.json {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&entry)?);
                continue;
            }
            let mark = if entry.kind == "dir" { "/" } else { "" };
            out.push_str(&format!(
                "{:<7} {:>14}  {}{mark}\n",
                printable(&entry.kind),
                entry.size,
                printable(&entry.name)
            ));
        }
        out!("{out}")?;
        // An older server sends no `next`: its one page is all there is to have.
        match listing.next {
            Some(next) if Some(&next) != after.as_ref() => after = Some(next),
            _ => {
                if listing.truncated {
                    if args.conn.json {
                        outln!("],\"truncated\":true}}")?;
                    }
                    errln!("socketeer: the server cut the listing short");
                    return Ok(0);
                }
                if args.conn.json {
                    outln!("],\"truncated\":false}}")?;
                }
                return Ok(0);
            }
        }
    }
    if args.conn.json {
        outln!("],\"truncated\":true}}")?;
    }
    errln!("socketeer: the listing was cut after {MAX_PAGES} pages");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_targets_come_from_the_command_line_only() {
        assert_eq!(
            target("a/b/c.txt", None).expect("ok"),
            PathBuf::from("c.txt")
        );
        assert_eq!(
            target("c.txt", Some(Path::new("/tmp/out.bin"))).expect("ok"),
            PathBuf::from("/tmp/out.bin")
        );
        assert!(target("../etc/passwd", None).is_err());
        assert!(target(".", None).is_err());
    }
}
