//! Hex dumps of received bytes for `--hex`: offset, sixteen bytes in hex, and their printable
//! ASCII, with offsets running on across chunks.

use std::fmt::Write;

/// Formats chunks as hex dump lines, remembering the offset between calls.
#[derive(Debug, Default)]
pub(crate) struct HexDump {
    offset: u64,
}

impl HexDump {
    /// The dump of `chunk`, one line per 16 bytes, each ending in `\n`.
    pub(crate) fn dump(&mut self, chunk: &[u8]) -> String {
        let mut out = String::with_capacity(chunk.len() * 4 + 80);
        for row in chunk.chunks(16) {
            let _ = write!(out, "{:08x}  ", self.offset);
            for i in 0..16 {
                match row.get(i) {
                    Some(b) => {
                        let _ = write!(out, "{b:02x} ");
                    }
                    None => out.push_str("   "),
                }
                if i == 7 {
                    out.push(' ');
                }
            }
            out.push_str(" |");
            out.extend(row.iter().map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            }));
            out.push_str("|\n");
            self.offset += row.len() as u64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_run_on_across_chunks() {
        let mut dump = HexDump::default();
        assert_eq!(
            dump.dump(b"hello\n"),
            "00000000  68 65 6c 6c 6f 0a                                 |hello.|\n"
        );
        assert!(dump.dump(b"x").starts_with("00000006  78 "));
    }
}
