//! What chat text may contain: lines neutralised so no client can repaint another's terminal,
//! and nickname rules.

use std::borrow::Cow;

/// Longest nickname, in bytes.
pub(crate) const MAX_NICK: usize = 32;

/// Makes a received line safe to show: the line ending is dropped, invalid UTF-8 becomes U+FFFD,
/// C0 controls and DEL become caret notation (`ESC` is shown as `^[`, so an ANSI sequence arrives
/// as harmless text), C1 controls and bidirectional overrides become `?`. Tabs stay. Plain
/// printable ASCII, the common case, is returned as it is, uncopied.
pub(crate) fn neutralise(line: &[u8]) -> Cow<'_, str> {
    let line = socketeer::codec::trim_line_end(line);
    if line.iter().all(|&b| matches!(b, b' '..=b'~' | b'\t')) {
        if let Ok(plain) = std::str::from_utf8(line) {
            return Cow::Borrowed(plain);
        }
    }
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\u{0}'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push('?')
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Why a nickname is not acceptable, if it is not.
pub(crate) fn nick_problem(nick: &str) -> Option<String> {
    if nick.is_empty() {
        return Some("a nickname cannot be empty".into());
    }
    if nick.len() > MAX_NICK {
        return Some(format!("a nickname is at most {MAX_NICK} characters"));
    }
    if !nick
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-[]|^".contains(&b))
    {
        return Some("a nickname may use A-Z a-z 0-9 and . _ - [ ] | ^".into());
    }
    if nick.eq_ignore_ascii_case("server") || nick.starts_with('*') {
        return Some(format!("\"{nick}\" is reserved"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_shown_not_obeyed() {
        assert_eq!(
            neutralise(b"\x1b[2J\x1b[31mred\x07\r\n"),
            "^[[2J^[[31mred^G"
        );
        assert_eq!(neutralise("a\u{202e}b\u{85}c\x7f".as_bytes()), "a?b?c^?");
        assert_eq!(neutralise(b"tab\there \xff ok\n"), "tab\there \u{fffd} ok");
        assert_eq!(neutralise("欢迎\n".as_bytes()), "欢迎");
    }

    #[test]
    fn nicknames() {
        assert!(nick_problem("robot-1").is_none());
        assert!(nick_problem("").is_some());
        assert!(nick_problem(&"x".repeat(33)).is_some());
        assert!(nick_problem("has space").is_some());
        assert!(nick_problem("Server").is_some());
    }
}
