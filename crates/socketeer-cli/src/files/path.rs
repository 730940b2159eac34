//! The lexical check every file request passes before the file system is touched: a relative
//! path of plain names, nothing that could climb out or hide.

/// The longest name (one path component) accepted; leaves room for the temporary name of an
/// upload within Linux's 255-byte limit.
pub(crate) const MAX_NAME: usize = 200;
/// The longest path accepted.
pub(crate) const MAX_PATH: usize = 4096;
/// Names containing this are socketeer's partial uploads and downloads: never served or
/// overwritten by a request.
pub(crate) const PART_MARK: &str = ".socketeer-part";

/// A path inside the served root, as plain name components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelPath {
    pub(crate) components: Vec<String>,
}

impl RelPath {
    /// Checks `text` lexically. The empty string and `.` name the root itself.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_PATH {
            return Err(format!("path longer than {MAX_PATH} bytes"));
        }
        if text.contains('\0') {
            return Err("path contains a NUL byte".into());
        }
        if text.starts_with('/') {
            return Err("absolute paths are not served: give a path inside the root".into());
        }
        let mut components = Vec::new();
        for part in text.split('/') {
            match part {
                // "a//b" and a trailing slash are harmless; "." means here.
                "" | "." => {}
                ".." => return Err("\"..\" is not allowed in paths".into()),
                name if name.len() > MAX_NAME => {
                    return Err(format!(
                        "a name in the path is longer than {MAX_NAME} bytes"
                    ));
                }
                name if name.contains(PART_MARK) => {
                    return Err("names with \".socketeer-part\" are reserved".into());
                }
                name if name.chars().any(char::is_control) => {
                    return Err("control characters are not allowed in names".into());
                }
                name => components.push(name.to_owned()),
            }
        }
        Ok(Self { components })
    }

    /// The last component: the file's own name (None for the root).
    pub(crate) fn name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The directories leading to the last component.
    pub(crate) fn parents(&self) -> &[String] {
        &self.components[..self.components.len().saturating_sub(1)]
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.components.join("/"))
    }
}

/// `name` made safe to print on a terminal: control characters escaped.
pub(crate) fn printable(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused_before_the_file_system() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "//x",
            "a\0b",
            "a/\x1b[2Jb",
            ".x.socketeer-part-1",
        ] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::parse(&"n".repeat(MAX_NAME + 1)).is_err());
        let ok = RelPath::parse("a//b/./c.txt").expect("fine");
        assert_eq!(ok.components, ["a", "b", "c.txt"]);
        assert_eq!((ok.name(), ok.parents().len()), (Some("c.txt"), 2));
        // Percent-encoding is not decoded: it is a (strange) name like any other.
        assert_eq!(
            RelPath::parse("%2e%2e%2fx").expect("literal").components,
            ["%2e%2e%2fx"]
        );
        assert_eq!(RelPath::parse(".").expect("root").name(), None);
        assert_eq!(printable("a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
    }
}
