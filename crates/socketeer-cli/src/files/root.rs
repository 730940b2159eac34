//! The served directory, confined by the kernel: every name is resolved with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, one component at a time from the root's descriptor,
//! so neither `..`, an absolute path nor a symbolic link — also one swapped in while a
//! transfer runs — can lead outside it. Work then continues on the descriptors opened, never on
//! path names again.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::path::{PART_MARK, RelPath};

/// How every name under the root is resolved.
const CONFINED: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);
const DIRECTORY: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Most entries one listing page returns.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub(crate) kind: String,
    pub(crate) size: u64,
}

/// The served root.
pub(crate) struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` and checks that this kernel confines lookups (openat2, Linux 5.6+).
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let fd = rustix::fs::open(path, DIRECTORY, Mode::empty())
            .map_err(|e| anyhow::anyhow!("--root {}: {}", path.display(), io::Error::from(e)))?;
        match rustix::fs::openat2(&fd, ".", DIRECTORY, Mode::empty(), CONFINED) {
            Ok(_) => {}
            Err(Errno::NOSYS) => anyhow::bail!(
                "this kernel has no openat2 (Linux 5.6 or later is needed to confine file access)"
            ),
            Err(e) => anyhow::bail!("--root {}: {}", path.display(), io::Error::from(e)),
        }
        Ok(Self { fd })
    }

    /// The directory holding `path`'s last component (or the root itself for the root),
    /// creating missing directories when `create` is set.
    pub(crate) fn parent_dir(&self, path: &RelPath, create: bool) -> io::Result<OwnedFd> {
        self.walk(path.parents(), create)
    }

    /// The directory `path` itself.
    pub(crate) fn dir(&self, path: &RelPath) -> io::Result<OwnedFd> {
        self.walk(&path.components, false)
    }

    fn walk(&self, names: &[String], create: bool) -> io::Result<OwnedFd> {
        let mut dir = rustix::fs::openat2(&self.fd, ".", DIRECTORY, Mode::empty(), CONFINED)?;
        for name in names {
            dir = match rustix::fs::openat2(&dir, name.as_str(), DIRECTORY, Mode::empty(), CONFINED)
            {
                Ok(next) => next,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat2(&dir, name.as_str(), DIRECTORY, Mode::empty(), CONFINED)?
                }
                Err(e) => return Err(e.into()),
            };
        }
        Ok(dir)
    }

    /// Opens a regular file to read: returns it and its size. Refuses anything else, and files
    /// with more than one hard link (one could be planted to a file outside the root).
    pub(crate) fn open_read(&self, path: &RelPath) -> io::Result<(File, u64)> {
        let name = path
            .name()
            .ok_or_else(|| refused("the root is a directory"))?;
        let dir = self.parent_dir(path, false)?;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        let fd = rustix::fs::openat2(&dir, name, flags, Mode::empty(), CONFINED)?;
        let stat = rustix::fs::fstat(&fd)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(refused("it is a directory (try ls)")),
            _ => return Err(refused("not a regular file")),
        }
        if stat.st_nlink > 1 {
            return Err(refused(
                "it has several hard links; such files are not served (one could be a file from outside the root)",
            ));
        }
        Ok((File::from(fd), u64::try_from(stat.st_size).unwrap_or(0)))
    }

    /// Lists a directory (or describes a single file) one page at a time: the entries whose
    /// names sort after `after` (a name's bytes in hex, as returned), in byte order, as many as
    /// fit [`LIST_BYTES`] of answer (and at most [`MAX_ENTRIES`]). Returns them and, if more
    /// follow, where to continue. A directory of any size is read with memory for one page.
    ///
    /// Partial uploads are listed as `partial`, under the name they will have, with the bytes
    /// they hold.
    pub(crate) fn list(
        &self,
        path: &RelPath,
        after: Option<&str>,
    ) -> io::Result<(Vec<Entry>, Option<String>)> {
        let after = match after.map(unhex) {
            Some(Some(after)) => Some(after),
            Some(None) => return Err(refused("bad listing cursor")),
            None => None,
        };
        let dir = match self.dir(path) {
            Ok(dir) => dir,
            Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
                let (_, size) = self.open_read(path)?;
                let name = path.name().unwrap_or_default().to_owned();
                let entry = Entry {
                    name,
                    kind: "file".into(),
                    size,
                };
                return Ok((vec![entry], None));
            }
            Err(e) => return Err(e),
        };
        // The page's names: the smallest after the cursor, kept in a bounded heap (its top is
        // the largest kept, dropped when a smaller one comes).
        let mut page: std::collections::BinaryHeap<Vec<u8>> = std::collections::BinaryHeap::new();
        let mut more = false;
        let mut reader = rustix::fs::Dir::read_from(&dir)?;
        while let Some(entry) = reader.read() {
            let raw = entry?.file_name().to_bytes().to_vec();
            if raw == b"." || raw == b".." || after.as_ref().is_some_and(|a| raw <= *a) {
                continue;
            }
            if page.len() < MAX_ENTRIES {
                page.push(raw);
            } else if page.peek().is_some_and(|top| raw < *top) {
                page.pop();
                page.push(raw);
                more = true;
            } else {
                more = true;
            }
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        for raw in page.into_sorted_vec() {
            let name = String::from_utf8_lossy(&raw).into_owned();
            // What its JSON may take at worst (every byte escaped).
            let cost = name.len() * 6 + 64;
            if bytes + cost > LIST_BYTES {
                more = true;
                break;
            }
            bytes += cost;
            let stat =
                rustix::fs::statat(&dir, raw.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .ok();
            let size = stat.map_or(0, |s| u64::try_from(s.st_size).unwrap_or(0));
            let kind = match stat.map(|s| FileType::from_raw_mode(s.st_mode)) {
                Some(FileType::RegularFile) if name.contains(PART_MARK) => "partial",
                Some(FileType::RegularFile) => "file",
                Some(FileType::Directory) => "dir",
                Some(FileType::Symlink) => "symlink",
                _ => "other",
            };
            let shown = match kind {
                "partial" => part_target(&name).unwrap_or(&name).to_owned(),
                _ => name.clone(),
            };
            entries.push(Entry {
                name: shown,
                kind: kind.into(),
                size,
            });
            last = Some(raw);
        }
        let next = last
            .filter(|_| more)
            .map(|raw| raw.iter().map(|b| format!("{b:02x}")).collect());
        Ok((entries, next))
    }
}

/// Bytes from hex digits.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 2 * 1024 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The name a partial upload will have once complete: `.NAME.socketeer-part-KEY` → `NAME`.
pub(crate) fn part_target(part: &str) -> Option<&str> {
    let (head, _) = part.rsplit_once(PART_MARK)?;
    head.strip_prefix('.')
}

/// The most a listing page may take (the control frame is [`super::wire::MAX_CONTROL`]).
pub(crate) const LIST_BYTES: usize = 3 << 20;

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_owned())
}

/// A file-system error as a client should read it.
pub(crate) fn describe(err: &io::Error) -> String {
    match err.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::LOOP) => "a symbolic link is in the way; links are not followed".into(),
        Some(Errno::XDEV) => "that path leads outside the served directory".into(),
        Some(Errno::NOENT) => "no such file or directory".into(),
        Some(Errno::NOTDIR) => "a part of the path is not a directory".into(),
        Some(Errno::NOSPC) => "the server's disk is full".into(),
        Some(Errno::ACCESS | Errno::PERM) => "permission denied".into(),
        Some(Errno::ISDIR) => "it is a directory".into(),
        _ => err.to_string(),
    }
}

/// Where a partial upload is: its directory (device, inode) and its name there.
pub(crate) type PartKey = (u64, u64, String);

/// Removes partial uploads untouched for longer than `age` under `root` (a younger one may
/// still be resumed; one an upload holds locked is never removed). Walks at most `budget`
/// entries and never follows links. Returns how many went, and the parts that remain with the
/// bytes each holds.
pub(crate) fn scan_parts(
    root: &Path,
    age: std::time::Duration,
    budget: usize,
) -> (usize, Vec<(PartKey, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let mut removed = 0;
    let mut remain = Vec::new();
    let mut seen = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(dir_meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > budget {
                return (removed, remain);
            }
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if !meta.is_file() || !name.contains(PART_MARK) {
                continue;
            }
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|e| e > age);
            if stale && !locked(&entry.path()) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
                continue;
            }
            remain.push(((dir_meta.dev(), dir_meta.ino(), name), meta.len()));
        }
    }
    (removed, remain)
}

/// True when an upload holds the file locked (it is being written).
fn locked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
}
