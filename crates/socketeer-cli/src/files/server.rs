//! `socketeer serve files --root DIR`: uploads, downloads and listings inside the root. Every
//! transfer is checked end to end with a BLAKE3 digest; an upload goes to a locked temporary
//! file next to its target, is synced, and is renamed into place only when complete and
//! verified, so an interrupted upload never shows under the final name — and a repeated one
//! resumes where it stopped, once the client has checked the digest of what the server holds.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{FileType, FlockOperation, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use socketeer::codec::FrameCodec;
use socketeer::{Connection, Handler, Result};

use super::path::{PART_MARK, RelPath};
use super::root::{PartKey, Root, describe, scan_parts};
use super::transfer::{self, ReceiveError};
use super::wire::{self, Request, Response, Resume, Trailer};
use crate::cli::FilesArgs;
use crate::serve::{NoDatagrams, Service, serve};

/// How often (at most) unfinished uploads past `--keep-partial` are looked for.
const CLEAN_EVERY: Duration = Duration::from_secs(300);
/// Most unfinished uploads kept at once, whatever their size.
const MAX_PARTS: usize = 10_000;
/// Entries one cleaning pass walks at most.
const CLEAN_BUDGET: usize = 1_000_000;

/// The service's settings.
pub(crate) struct Files {
    root: Root,
    read_only: bool,
    max_upload: u64,
    parts: Parts,
}

/// The unfinished uploads under the root and the bytes each holds — or, while one is being
/// written, the size it is to have — so together they stay within `--max-partial`.
struct Parts {
    most: u64,
    state: std::sync::Mutex<PartsState>,
}

#[derive(Default)]
struct PartsState {
    held: std::collections::HashMap<PartKey, u64>,
    /// Being written now (not touched by a cleaning pass).
    active: std::collections::HashSet<PartKey>,
}

impl Parts {
    fn lock(&self) -> std::sync::MutexGuard<'_, PartsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `size` bytes for the upload writing `key`, or says why not.
    fn reserve(&self, key: &PartKey, size: u64) -> Result<(), String> {
        let mut state = self.lock();
        if state.active.contains(key) {
            return Err("busy: another upload of this file is in progress".into());
        }
        let mine = state.held.get(key).copied().unwrap_or(0);
        let others: u64 = state.held.values().sum::<u64>() - mine;
        if others + size > self.most {
            return Err(format!(
                "unfinished uploads hold {others} bytes; with this one's {size} that is past \
                 the {} this server keeps (--max-partial): finish or resume those first",
                self.most
            ));
        }
        if !state.held.contains_key(key) && state.held.len() >= MAX_PARTS {
            return Err(format!(
                "this server already keeps {MAX_PARTS} unfinished uploads; finish or resume those first"
            ));
        }
        state.held.insert(key.clone(), size);
        state.active.insert(key.clone());
        Ok(())
    }

    /// The upload writing `key` ended: what its part holds now (`None`: none is left).
    fn ended(&self, key: &PartKey, holds: Option<u64>) {
        let mut state = self.lock();
        state.active.remove(key);
        match holds {
            Some(bytes) => state.held.insert(key.clone(), bytes),
            None => state.held.remove(key),
        };
    }

    /// After a cleaning pass: the parts on disk (those being written keep their reservation).
    fn found(&self, parts: Vec<(PartKey, u64)>) {
        let mut state = self.lock();
        let active = std::mem::take(&mut state.active);
        state.held.retain(|key, _| active.contains(key));
        for (key, bytes) in parts {
            if !active.contains(&key) {
                state.held.insert(key, bytes);
            }
        }
        state.active = active;
    }
}

/// Gives an upload's reservation back when it ends, whichever way, noting what its part holds.
struct Reserved {
    files: Arc<Files>,
    key: PartKey,
    dir: OwnedFd,
    name: String,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let holds = rustix::fs::statat(
            &self.dir,
            self.name.as_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .ok()
        .filter(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile)
        .map(|stat| u64::try_from(stat.st_size).unwrap_or(0));
        self.files.parts.ended(&self.key, holds);
    }
}

#[derive(Clone)]
pub(crate) struct FilesHandler(Arc<Files>);

impl Handler for FilesHandler {
    async fn handle(&mut self, conn: &mut Connection) -> Result<()> {
        let mut codec = FrameCodec::new(wire::MAX_CONTROL);
        let Some(frame) = conn.read_with(&mut codec).await? else {
            return Ok(());
        };
        let request: Request = match serde_json::from_slice(&frame) {
            Ok(request) => request,
            Err(e) => return reply(conn, &Response::error(format!("bad request: {e}"))).await,
        };
        let started = Instant::now();
        let answer = match &request {
            Request::Ls { path, after } => self.ls(path, after.as_deref()).await,
            Request::Get {
                path,
                offset,
                prefix,
            } => self.get(conn, path, *offset, prefix.as_deref()).await,
            Request::Put { path, size } => self.put(conn, &mut codec, path, *size).await,
        };
        match answer {
            Ok(response) => {
                tracing::info!(
                    peer = %conn.peer_addr(),
                    device = conn.device(),
                    request = ?request,
                    ok = response.ok,
                    error = response.error.as_deref(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "files request"
                );
                reply(conn, &response).await
            }
            Err(e) => {
                tracing::info!(peer = %conn.peer_addr(), request = ?request, "files request ended: {e:#}");
                Err(socketeer::Error::new(
                    socketeer::ErrorKind::Io,
                    format!("{e:#}"),
                ))
            }
        }
    }
}

async fn reply(conn: &mut Connection, response: &Response) -> Result<()> {
    let json = serde_json::to_vec(response).unwrap_or_default();
    conn.write_frame(&json).await?;
    conn.flush().await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// A partial upload, locked by this connection.
struct Part {
    dir: OwnedFd,
    name: String,
    final_name: String,
    file: File,
    /// Bytes it already holds, and their digest.
    held: u64,
    hasher: blake3::Hasher,
}

impl FilesHandler {
    async fn ls(&self, path: &str, after: Option<&str>) -> anyhow::Result<Response> {
        let rel = match RelPath::parse(path) {
            Ok(rel) => rel,
            Err(why) => return Ok(Response::error(why)),
        };
        let files = Arc::clone(&self.0);
        let after = after.map(str::to_owned);
        Ok(
            match blocking(move || files.root.list(&rel, after.as_deref())).await {
                Ok((entries, next)) => Response {
                    ok: true,
                    entries: Some(entries),
                    truncated: next.is_some(),
                    next,
                    ..Response::default()
                },
                Err(e) => Response::error(describe(&e)),
            },
        )
    }

    /// Answers with the size and where the data starts, sends the data, and returns the final
    /// response (with the digest).
    async fn get(
        &self,
        conn: &mut Connection,
        path: &str,
        offset: u64,
        prefix: Option<&str>,
    ) -> anyhow::Result<Response> {
        let rel = match RelPath::parse(path) {
            Ok(rel) => rel,
            Err(why) => return Ok(Response::error(why)),
        };
        let files = Arc::clone(&self.0);
        let prefix = prefix.map(str::to_owned);
        let opened = blocking(move || {
            let (mut file, size) = files.root.open_read(&rel)?;
            // Resume only if the client's first bytes are ours (checked by digest).
            if offset > 0 && offset <= size {
                if let Some(prefix) = prefix {
                    let hasher = transfer::hash_prefix(&mut file, offset)?;
                    if wire::hex(&hasher.finalize()) == prefix {
                        return Ok((file, size, offset, hasher));
                    }
                }
            }
            std::io::Seek::rewind(&mut file)?;
            Ok((file, size, 0, blake3::Hasher::new()))
        })
        .await;
        let (file, size, start, hasher) = match opened {
            Ok(opened) => opened,
            Err(e) => return Ok(Response::error(describe(&e))),
        };
        reply(
            conn,
            &Response {
                ok: true,
                size: Some(size),
                offset: Some(start),
                ..Response::default()
            },
        )
        .await?;
        let hidden = indicatif::ProgressBar::hidden();
        let digest = transfer::send_file(conn, file, size - start, hasher, &hidden).await?;
        // The final response (sent by the caller) carries the digest of what was sent.
        Ok(Response {
            ok: true,
            digest: Some(wire::hex(&digest)),
            ..Response::default()
        })
    }

    async fn put(
        &self,
        conn: &mut Connection,
        codec: &mut FrameCodec,
        path: &str,
        size: u64,
    ) -> anyhow::Result<Response> {
        if self.0.read_only {
            return Ok(Response::error("this server is read-only"));
        }
        if size > self.0.max_upload {
            return Ok(Response::error(format!(
                "the file is {size} bytes; this server takes at most {} (--max-upload)",
                self.0.max_upload
            )));
        }
        let rel = match RelPath::parse(path) {
            Ok(rel) if rel.name().is_some() => rel,
            Ok(_) => return Ok(Response::error("give a file name to upload to")),
            Err(why) => return Ok(Response::error(why)),
        };
        let files = Arc::clone(&self.0);
        let part = match blocking(move || files.open_part(&rel, size)).await {
            Ok(part) => part,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Response::error(
                    "busy: another upload of this file is in progress",
                ));
            }
            Err(e) => return Ok(Response::error(describe(&e))),
        };
        // Counted among the unfinished uploads from now until it ends, at its full size.
        let dir_stat = rustix::fs::fstat(&part.dir)?;
        let key: PartKey = (
            dir_stat.st_dev as u64,
            dir_stat.st_ino as u64,
            part.name.clone(),
        );
        if let Err(why) = self.0.parts.reserve(&key, size) {
            return Ok(Response::error(why));
        }
        let _reserved = Reserved {
            files: Arc::clone(&self.0),
            key,
            dir: part.dir.try_clone()?,
            name: part.name.clone(),
        };
        reply(
            conn,
            &Response {
                ok: true,
                offset: Some(part.held),
                prefix: Some(wire::hex(&part.hasher.finalize())),
                ..Response::default()
            },
        )
        .await?;
        let resume: Resume = read_control(conn, codec).await?;
        let Part {
            dir,
            name,
            final_name,
            mut file,
            held,
            mut hasher,
        } = part;
        let start = match resume.offset {
            o if o == held => o,
            0 => {
                file = blocking(move || {
                    file.set_len(0)?;
                    std::io::Seek::rewind(&mut file)?;
                    Ok(file)
                })
                .await?;
                hasher = blake3::Hasher::new();
                0
            }
            other => anyhow::bail!("client asked to resume at {other}, not at {held} or 0"),
        };
        let hidden = indicatif::ProgressBar::hidden();
        let (file, digest) =
            match transfer::receive_file(conn, file, size - start, hasher, &hidden).await {
                Ok(done) => done,
                Err(ReceiveError::Connection(e)) => return Err(e),
                Err(ReceiveError::File(e)) => {
                    tracing::warn!(path, "upload failed: {e}");
                    // The client's digest comes next; take it so the answer is read, not reset.
                    let _ = read_control::<Trailer>(conn, codec).await;
                    let _ = rustix::fs::unlinkat(&dir, name.as_str(), rustix::fs::AtFlags::empty());
                    return Ok(Response::error(format!(
                        "cannot store the file: {}",
                        describe(&e)
                    )));
                }
            };
        let trailer: Trailer = read_control(conn, codec).await?;
        let digest = wire::hex(&digest);
        if trailer.digest != digest {
            let _ = rustix::fs::unlinkat(&dir, name.as_str(), rustix::fs::AtFlags::empty());
            return Ok(Response::error(format!(
                "digest mismatch: received {digest}, client has {}; nothing was stored",
                trailer.digest
            )));
        }
        if let Err(e) = blocking(move || commit(&dir, &name, &final_name, &file)).await {
            return Ok(Response::error(format!(
                "cannot store the file: {}",
                describe(&e)
            )));
        }
        Ok(Response {
            ok: true,
            digest: Some(digest),
            offset: Some(start),
            ..Response::default()
        })
    }
}

/// The next control message, parsed.
async fn read_control<T: serde::de::DeserializeOwned>(
    conn: &mut Connection,
    codec: &mut FrameCodec,
) -> anyhow::Result<T> {
    let frame = conn
        .read_with(codec)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the client left mid-transfer"))?;
    Ok(serde_json::from_slice(&frame)?)
}

/// Syncs the finished upload, renames it over its final name, and syncs the directory.
fn commit(dir: &OwnedFd, part: &str, final_name: &str, file: &File) -> std::io::Result<()> {
    file.sync_all()?;
    rustix::fs::fchmod(file.as_fd(), Mode::from_raw_mode(0o644))?;
    rustix::fs::renameat(dir, part, dir, final_name)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}

impl Files {
    /// Opens (or creates) and locks the partial upload for `rel` of `size` bytes, creating
    /// missing directories.
    fn open_part(&self, rel: &RelPath, size: u64) -> std::io::Result<Part> {
        let final_name = rel.name().unwrap_or_default().to_owned();
        let dir = self.root.parent_dir(rel, true)?;
        match rustix::fs::statat(
            &dir,
            final_name.as_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(Errno::ISDIR.into());
            }
            _ => {}
        }
        let key = blake3::hash(format!("{final_name}\0{size}").as_bytes());
        let name = format!(".{final_name}{PART_MARK}-{}", &wire::hex(&key)[..16]);
        let confined =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat2(
            &dir,
            name.as_str(),
            flags,
            Mode::from_raw_mode(0o600),
            confined,
        )?;
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)?;
        // The name may have been renamed into place by the upload that held the lock before:
        // then this descriptor is the finished file, not a part, and must not be touched.
        let ours = rustix::fs::fstat(&fd)?;
        match rustix::fs::statat(&dir, name.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(named) if named.st_ino == ours.st_ino && named.st_dev == ours.st_dev => {}
            _ => return Err(Errno::WOULDBLOCK.into()),
        }
        if FileType::from_raw_mode(ours.st_mode) != FileType::RegularFile {
            return Err(Errno::INVAL.into());
        }
        let mut file = File::from(fd);
        let mut held = u64::try_from(ours.st_size).unwrap_or(0);
        if held > size {
            file.set_len(0)?;
            held = 0;
        }
        let hasher = transfer::hash_prefix(&mut file, held)?;
        Ok(Part {
            dir,
            name,
            final_name,
            file,
            held,
            hasher,
        })
    }
}

pub(crate) async fn run(args: FilesArgs) -> anyhow::Result<i32> {
    let root = Root::open(&args.root)?;
    // 0 keeps them until they are finished.
    let keep = match args.keep_partial {
        Duration::ZERO => Duration::MAX,
        keep => keep,
    };
    let (removed, remain) = scan_parts(&args.root, keep, CLEAN_BUDGET);
    if removed > 0 {
        tracing::info!(removed, keep = ?args.keep_partial, "removed unfinished uploads past --keep-partial");
    }
    if args.serve.guard.key_file.is_none()
        && args
            .serve
            .listen
            .iter()
            .filter_map(|w| crate::failure::parse_endpoint(w).ok())
            .any(|ep| !ep.is_local())
    {
        tracing::warn!(
            "serving files without --key-file on a non-loopback endpoint: anyone who can connect can read (and, without --read-only, write) them"
        );
    }
    tracing::info!(root = %args.root.display(), read_only = args.read_only, max_upload = args.max_upload, "files");
    let files = Arc::new(Files {
        root,
        read_only: args.read_only,
        max_upload: args.max_upload,
        parts: Parts {
            most: args.max_partial,
            state: std::sync::Mutex::default(),
        },
    });
    files.parts.found(remain);
    // Unfinished uploads past --keep-partial go while the server runs, not only at its start.
    // (The task ends with the process.)
    let (cleaned, root_path) = (Arc::clone(&files), args.root.clone());
    tokio::spawn(async move {
        // Often enough that a part goes soon after its time.
        let mut every =
            tokio::time::interval((keep / 4).clamp(Duration::from_secs(1), CLEAN_EVERY));
        every.tick().await;
        loop {
            every.tick().await;
            let root_path = root_path.clone();
            let Ok((removed, remain)) =
                tokio::task::spawn_blocking(move || scan_parts(&root_path, keep, CLEAN_BUDGET))
                    .await
            else {
                continue;
            };
            if removed > 0 {
                tracing::info!(
                    removed,
                    ?keep,
                    "removed unfinished uploads past --keep-partial"
                );
            }
            cleaned.parts.found(remain);
        }
    });
    let handler = FilesHandler(files);
    let service = Service {
        name: "files",
        default_endpoint: "127.0.0.1:8521",
        make_handler: move || handler.clone(),
        datagram: None::<NoDatagrams>,
        auth_failures: None,
    };
    serve(&args.serve, service).await
}
