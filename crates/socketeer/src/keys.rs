//! Shared keys: the server's [`KeyStore`] (one key, or one per device), the client's
//! [`ClientKey`], and [`generate_key`].
//!
//! A key is at least 32 random bytes written as hex (64 or more characters). The HMAC key is that
//! text exactly as written — its ASCII bytes — so a Python client uses
//! `open(path).read().strip().encode()`. A key file holds either one key, or lines
//! `DEVICE KEY`; blank lines and lines starting with `#` are ignored. Key files must not be
//! readable by group or others. The server re-reads its file when it changes, so removing a
//! device's line revokes that device at its next handshake.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, ErrorKind, Remedy, Result};

/// The shortest key accepted, in hex characters (32 bytes).
pub const MIN_KEY_HEX: usize = 64;
/// The longest device name, in bytes.
pub const MAX_DEVICE_LEN: usize = 64;

/// Makes a new key: 32 bytes from the operating system's random source, as 64 hex characters.
///
/// # Errors
/// When the random source fails.
pub fn generate_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("the system random source failed: {e}"),
        )
    })?;
    Ok(to_hex(&bytes))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// True for a valid device name: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
pub fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DEVICE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What a key file holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Keys {
    /// One key shared by every client; a client's device name is whatever it says.
    Single(Vec<u8>),
    /// One key per device; a client must name its device and prove that device's key.
    PerDevice(HashMap<String, Vec<u8>>),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            Self::Single(_) => f.write_str("Keys::Single(..)"),
            Self::PerDevice(map) => write!(f, "Keys::PerDevice({} devices)", map.len()),
        }
    }
}

fn key_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Auth,
        format!("key file {}: {why}", path.display()),
    )
}

/// Reads and checks a key file: permissions, format, key lengths.
///
/// # Errors
/// [`ErrorKind::Auth`] with a message saying how to fix the file.
pub fn read_key_file(path: &Path) -> Result<Keys> {
    let meta =
        std::fs::metadata(path).map_err(|e| key_error(path, "cannot read it").with_source(e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(
            path,
            format!(
                "is readable by group or others (mode {mode:03o}); run: chmod 600 {}",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| key_error(path, "cannot read it").with_source(e))?;
    parse_keys(&text).map_err(|why| key_error(path, why))
}

fn check_key(key: &str, line: usize) -> Result<Vec<u8>, String> {
    if !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "line {line}: the key is not hex; make one with `socketeer keygen`"
        ));
    }
    if key.len() < MIN_KEY_HEX {
        return Err(format!(
            "line {line}: the key is {} hex characters; keys must be at least {MIN_KEY_HEX} (32 random bytes); \
             make one with `socketeer keygen`",
            key.len()
        ));
    }
    // 32 random bytes in hex use nearly all 16 digits; a key of a few repeated digits (all
    // zeros, a pattern typed by hand) is not random, whatever its length.
    let mut digits = [false; 16];
    for b in key.bytes() {
        if let Some(d) = char::from(b).to_digit(16) {
            digits[d as usize] = true;
        }
    }
    if digits.iter().filter(|&&seen| seen).count() < 8 {
        return Err(format!(
            "line {line}: the key is not random (it uses only a few hex digits); make one with \
             `socketeer keygen`"
        ));
    }
    Ok(key.as_bytes().to_vec())
}

/// Parses key file text (see the module docs for the format).
///
/// # Errors
/// A message naming the line and what is wrong with it.
pub fn parse_keys(text: &str) -> Result<Keys, String> {
    let lines: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.split_whitespace().collect()))
        .collect();
    match lines.as_slice() {
        [] => Err("holds no key; make one with `socketeer keygen`".into()),
        [(line, fields)] if fields.len() == 1 => Ok(Keys::Single(check_key(fields[0], *line)?)),
        _ => {
            let mut devices = HashMap::new();
            for (line, fields) in &lines {
                let [device, key] = fields.as_slice() else {
                    if fields.len() == 1 {
                        // Typically `keygen > f` then `keygen --device D >> f`. Mixing is
                        // refused on purpose: with a shared key beside them, deleting a
                        // device's line would not revoke it.
                        return Err(format!(
                            "line {line}: a key with no device name, in a file with several \
                             lines: a key file holds either one shared key alone, or one \
                             `DEVICE KEY` line per device (so deleting a line revokes that \
                             device); write a device name before this key, or keep the shared \
                             key in a file of its own"
                        ));
                    }
                    return Err(format!(
                        "line {line}: expected `DEVICE KEY` (a file with several lines names a device on each)"
                    ));
                };
                if !valid_device_name(device) {
                    return Err(format!(
                        "line {line}: \"{device}\" is not a device name (1-64 of A-Z a-z 0-9 . _ -)"
                    ));
                }
                let key = check_key(key, *line)?;
                // One key for two devices would let either be taken for the other.
                if let Some((other, _)) = devices.iter().find(|(_, known)| **known == key) {
                    if *other != *device {
                        return Err(format!(
                            "line {line}: device \"{device}\" has the same key as \"{other}\"; \
                             each device needs its own (`socketeer keygen` makes one)"
                        ));
                    }
                }
                if devices.insert((*device).to_owned(), key).is_some() {
                    return Err(format!("line {line}: device \"{device}\" appears twice"));
                }
            }
            Ok(Keys::PerDevice(devices))
        }
    }
}

/// The server's keys, re-read from their file whenever it changes (so a removed device line
/// takes effect at that device's next handshake). If the file becomes invalid, every handshake
/// fails until it is fixed: a broken key file never lets anyone in.
#[derive(Debug)]
pub struct KeyStore {
    path: Option<PathBuf>,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<(u64, u64, i64, i64)>,
    keys: std::result::Result<Keys, String>,
}

impl KeyStore {
    /// Loads a key file, checking it now so a bad file stops the server from starting.
    ///
    /// # Errors
    /// As [`read_key_file`].
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let keys = read_key_file(&path)?;
        let stamp = stamp(&path);
        Ok(Self {
            path: Some(path),
            state: Mutex::new(Loaded {
                stamp,
                keys: Ok(keys),
            }),
        })
    }

    /// Keys held in memory (no file to watch).
    pub fn from_keys(keys: Keys) -> Self {
        Self {
            path: None,
            state: Mutex::new(Loaded {
                stamp: None,
                keys: Ok(keys),
            }),
        }
    }

    /// The current keys, re-reading the file first if it changed.
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] when the file has become unreadable or invalid.
    pub fn current(&self) -> Result<Keys> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(path) = &self.path {
            let now = stamp(path);
            if now != state.stamp {
                state.stamp = now;
                state.keys = read_key_file(path).map_err(|e| e.to_string());
                match &state.keys {
                    Ok(_) => tracing::info!(path = %path.display(), "key file changed; reloaded"),
                    Err(why) => {
                        tracing::error!(%why, "key file changed and is now invalid; refusing every client until it is fixed")
                    }
                }
            }
        }
        state
            .keys
            .clone()
            .map_err(|why| Error::new(ErrorKind::Auth, why))
    }
}

/// Identifies a version of the file: inode, size and modification time.
fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A client's key and the device name it authenticates as.
#[derive(Clone)]
pub struct ClientKey {
    pub(crate) device: String,
    pub(crate) key: Vec<u8>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// A key given directly (its text as written, e.g. 64 hex characters).
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] for a bad device name or key.
    pub fn new(device: &str, key_text: &str) -> Result<Self> {
        if !valid_device_name(device) {
            return Err(Error::new(
                ErrorKind::Auth,
                format!("\"{device}\" is not a device name (1-64 of A-Z a-z 0-9 . _ -)"),
            ));
        }
        let key = check_key(key_text.trim(), 1).map_err(|why| Error::new(ErrorKind::Auth, why))?;
        Ok(Self {
            device: device.to_owned(),
            key,
        })
    }

    /// Reads a client's key file: a single key (used with `device`), or `DEVICE KEY` lines, from
    /// which `device`'s line is taken.
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] for a bad file or a device it does not list.
    pub fn from_file(path: &Path, device: &str) -> Result<Self> {
        if !valid_device_name(device) {
            return Err(Error::new(
                ErrorKind::Auth,
                format!("\"{device}\" is not a device name (1-64 of A-Z a-z 0-9 . _ -)"),
            ));
        }
        let key = match read_key_file(path)? {
            Keys::Single(key) => key,
            Keys::PerDevice(mut devices) => devices.remove(device).ok_or_else(|| {
                key_error(path, format!("has no line for device \"{device}\""))
                    .with_remedy(Remedy::NameDevice)
            })?,
        };
        Ok(Self {
            device: device.to_owned(),
            key,
        })
    }

    /// The device name this key authenticates as.
    pub fn device(&self) -> &str {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn single_and_per_device_files_parse() {
        assert_eq!(
            parse_keys(&format!("# comment\n\n{K1}\n")),
            Ok(Keys::Single(K1.as_bytes().to_vec()))
        );
        let Ok(Keys::PerDevice(map)) = parse_keys(&format!("robot-1 {K1}\nrobot_2 {K1}ff\n"))
        else {
            panic!("per-device")
        };
        assert_eq!(map.len(), 2);
        assert_eq!(map["robot_2"], format!("{K1}ff").into_bytes());
    }

    #[test]
    fn bad_files_say_how_to_fix_them() {
        assert!(
            parse_keys("")
                .expect_err("invalid")
                .contains("socketeer keygen")
        );
        assert!(
            parse_keys("abcd")
                .expect_err("invalid")
                .contains("at least 64")
        );
        assert!(
            parse_keys(&format!("{K1}zz"))
                .expect_err("invalid")
                .contains("not hex")
        );
        assert!(
            parse_keys(&format!("a {K1}\na {K1}"))
                .expect_err("invalid")
                .contains("twice")
        );
        assert!(
            parse_keys(&format!("a {K1}\n{K1}"))
                .expect_err("invalid")
                .contains("DEVICE KEY")
        );
        assert!(
            parse_keys(&format!("a {K1}\nb {K1}"))
                .expect_err("invalid")
                .contains("device \"b\" has the same key as \"a\"")
        );
        for weak in ["0".repeat(64), "ab".repeat(32), "0123".repeat(16)] {
            assert!(
                parse_keys(&weak).expect_err("weak").contains("not random"),
                "{weak}"
            );
        }
        assert!(
            parse_keys(&format!("b/ad {K1}\nx {K1}"))
                .expect_err("invalid")
                .contains("not a device name")
        );
    }

    #[test]
    fn generated_keys_are_64_hex_and_distinct() {
        let a = generate_key().expect("key");
        let b = generate_key().expect("key");
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let keys = Keys::Single(K1.as_bytes().to_vec());
        assert!(!format!("{keys:?}").contains("0011"));
        let client = ClientKey::new("r1", K1).expect("key");
        assert!(!format!("{client:?}").contains("0011"));
    }
}
