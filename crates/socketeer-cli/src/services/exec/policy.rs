//! What a client may run: the command text is split into argv with shell-word rules (no shell
//! ever sees it unless the operator chose `--shell`), the program must be on the allow list,
//! and it is found on a fixed PATH, not the client's or the server's.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The PATH every command gets (and that bare program names are looked up on).
pub(crate) const FIXED_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The longest command text accepted (Linux refuses single arguments over 128 KiB anyway).
pub(crate) const MAX_COMMAND: usize = 64 * 1024;

/// The operator's rules for commands.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Allowed programs: bare names (looked up on [`FIXED_PATH`]) or absolute paths.
    pub(crate) allow: Vec<String>,
    pub(crate) allow_any: bool,
    pub(crate) shell: bool,
    /// The environment every command gets: PATH plus the `--env` pass-throughs.
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: PathBuf,
}

/// A command ready to spawn.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The executable that will run.
    pub(crate) program: PathBuf,
    /// The arguments, `argv[0]` as the client wrote it.
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: PathBuf,
}

/// Why a command is not run. The exit codes follow the shells: 126 cannot run, 127 not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            code: 126,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Policy {
    /// Checks the allow list entries themselves (at start).
    pub(crate) fn check_allow_list(allow: &[String]) -> Result<(), String> {
        for entry in allow {
            let bare = !entry.contains('/');
            if entry.is_empty()
                || entry.chars().any(|c| c.is_whitespace() || c.is_control())
                || (!bare && !entry.starts_with('/'))
                || entry == "."
                || entry == ".."
            {
                return Err(format!(
                    "--allow \"{entry}\": give a program name (ls) or an absolute path (/opt/bin/status)"
                ));
            }
        }
        Ok(())
    }

    /// The environment for commands: the fixed PATH and each `--env NAME` present now.
    pub(crate) fn environment(pass: &[String]) -> Vec<(OsString, OsString)> {
        let mut env = vec![(OsString::from("PATH"), OsString::from(FIXED_PATH))];
        for name in pass {
            if let Some(value) = std::env::var_os(name) {
                env.push((OsString::from(name), value));
            }
        }
        env
    }

    /// Turns command text into something to run, or says why not.
    pub(crate) fn prepare(&self, text: &str) -> Result<Prepared, Refusal> {
        let text = text.trim_end_matches(['\r', '\n']);
        if text.len() > MAX_COMMAND {
            return Err(Refusal::bad(format!(
                "command refused: longer than {MAX_COMMAND} bytes"
            )));
        }
        if text.contains('\0') {
            return Err(Refusal::bad("command refused: it contains a NUL byte"));
        }
        if text.contains(['\n', '\r']) {
            return Err(Refusal::bad(
                "command refused: one command per request (it contains a line break)",
            ));
        }
        if self.shell {
            return Ok(self.prepared(
                PathBuf::from("/bin/sh"),
                vec!["sh".into(), "-c".into(), text.into()],
            ));
        }
        let argv = shell_words::split(text).map_err(|e| {
            Refusal::bad(format!("command refused: cannot split it into words: {e}"))
        })?;
        let Some(program) = argv.first() else {
            return Err(Refusal::bad("command refused: it is empty"));
        };
        let path = self.resolve(program)?;
        Ok(self.prepared(path, argv))
    }

    fn prepared(&self, program: PathBuf, argv: Vec<String>) -> Prepared {
        Prepared {
            program,
            argv,
            env: self.env.clone(),
            cwd: self.cwd.clone(),
        }
    }

    /// The executable for `program`, if it is allowed and exists.
    fn resolve(&self, program: &str) -> Result<PathBuf, Refusal> {
        let listed = self.allow.iter().any(|a| a == program);
        if !listed && !self.allow_any {
            return Err(Refusal::bad(format!(
                "command refused: {} is not an allowed program",
                shell_words::quote(program)
            )));
        }
        let not_found = || Refusal {
            code: 127,
            message: format!("{}: program not found", shell_words::quote(program)),
        };
        if program.contains('/') {
            // Only with --allow-any (a listed path is absolute, checked at start): relative
            // to the fixed working directory.
            let path = self.cwd.join(program);
            return is_executable(&path).then_some(path).ok_or_else(not_found);
        }
        FIXED_PATH
            .split(':')
            .map(|dir| Path::new(dir).join(program))
            .find(|p| is_executable(p))
            .ok_or_else(not_found)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> Policy {
        Policy {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            allow_any: false,
            shell: false,
            env: Policy::environment(&[]),
            cwd: PathBuf::from("/"),
        }
    }

    #[test]
    fn words_are_split_like_a_shell_but_nothing_is_interpreted() {
        let p = policy(&["echo"]);
        let prepared = p
            .prepare("echo 'a b' \"$(id)\" `x` ; | && * ~ >f")
            .expect("allowed");
        assert_eq!(
            prepared.argv,
            [
                "echo", "a b", "$(id)", "`x`", ";", "|", "&&", "*", "~", ">f"
            ]
        );
        assert!(prepared.program.ends_with("echo"));
    }

    #[test]
    fn only_listed_programs_run() {
        let p = policy(&["echo"]);
        for text in [
            "rm -rf /",
            "LD_PRELOAD=/x echo",
            "/bin/echo hi",
            "./echo",
            "../bin/echo",
            "-echo",
            "'echo x'",
            "",
            "echo\nid",
            "echo \0",
        ] {
            assert!(p.prepare(text).is_err(), "{text:?} must be refused");
        }
        assert_eq!(
            p.prepare(&"x".repeat(MAX_COMMAND + 1)).map(|_| ()),
            Err(Refusal::bad(format!(
                "command refused: longer than {MAX_COMMAND} bytes"
            )))
        );
        assert!(Policy::check_allow_list(&["bin/ls".into()]).is_err());
        assert!(Policy::check_allow_list(&["/bin/ls".into(), "ls".into()]).is_ok());
    }
}
