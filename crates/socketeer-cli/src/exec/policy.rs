//! What a client may run: the command text is split into argv with shell-word rules (no shell
//! ever sees it unless the operator chose `--shell`), the program and its arguments must match
//! an allow rule, and the program is found on a fixed PATH, not the client's or the server's.
//!
//! Allowing a program is not allowing every option of it (`sort --compress-program=sh` runs a
//! shell, `sort -o FILE` writes one). An allow rule is written as a command line, the way
//! sudoers writes them: `--allow uptime` runs `uptime` with no arguments at all;
//! `--allow 'journalctl -u robot -n *'` runs exactly those arguments, `*` and `?` matching
//! within one argument (a wildcard never matches an argument that starts with `-` unless the
//! pattern itself does, so `cat *` does not become `cat --anything`); a last word `...` allows
//! any further arguments, options included — the operator says so in as many letters.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The PATH every command gets (and that bare program names are looked up on).
pub(crate) const FIXED_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The longest command text accepted (Linux refuses single arguments over 128 KiB anyway).
pub(crate) const MAX_COMMAND: usize = 64 * 1024;

/// One allow rule: a program and the arguments it may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// A bare name (looked up on [`FIXED_PATH`]) or an absolute path, as clients write it.
    pub(crate) program: String,
    /// One pattern per argument.
    pub(crate) args: Vec<String>,
    /// `...` ended the rule: any further arguments.
    pub(crate) rest: bool,
}

impl Rule {
    /// Parses `--allow TEXT` for `serve exec`.
    pub(crate) fn parse(text: &str) -> Result<Rule, String> {
        let words = shell_words::split(text)
            .map_err(|e| format!("--allow {text:?}: cannot split it into words: {e}"))?;
        let Some((program, args)) = words.split_first() else {
            return Err("--allow \"\": give a program name (ls) or an absolute path".into());
        };
        let bare = !program.contains('/');
        if program.chars().any(|c| c.is_whitespace() || c.is_control())
            || (!bare && !program.starts_with('/'))
            || program == "."
            || program == ".."
            || program.contains(['*', '?'])
        {
            return Err(format!(
                "--allow {text:?}: give a program name (ls) or an absolute path (/opt/bin/status), \
                 then the arguments it may get"
            ));
        }
        let mut args = args.to_vec();
        let rest = args.last().is_some_and(|last| last == "...");
        if rest {
            args.pop();
        }
        if let Some(bad) = args.iter().find(|a| a.contains('\0') || *a == "...") {
            return Err(format!(
                "--allow {text:?}: {bad:?} cannot be an argument pattern"
            ));
        }
        Ok(Rule {
            program: program.clone(),
            args,
            rest,
        })
    }

    /// True when `args` (the client's, after the program) fit this rule.
    fn admits(&self, args: &[String]) -> bool {
        let count_fits = if self.rest {
            args.len() >= self.args.len()
        } else {
            args.len() == self.args.len()
        };
        count_fits
            && self
                .args
                .iter()
                .zip(args)
                .all(|(pattern, arg)| argument_matches(pattern, arg))
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = vec![self.program.as_str()];
        words.extend(self.args.iter().map(String::as_str));
        if self.rest {
            words.push("...");
        }
        f.write_str(&shell_words::join(words))
    }
}

/// One argument against one pattern: `*` any run of characters but `/`, `?` any one but `/`,
/// everything else itself. A wildcard never admits an option (`-x`, `--x`) unless the pattern
/// starts with `-`, and never a `..` path component: `cat logs/*` stays in `logs`.
fn argument_matches(pattern: &str, arg: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern == arg;
    }
    if arg.starts_with('-') && !pattern.starts_with('-') {
        return false;
    }
    if arg.split('/').any(|part| part == "..") {
        return false;
    }
    glob(pattern.as_bytes(), arg.as_bytes())
}

/// `*`/`?` matching that never crosses a `/` (fnmatch's FNM_PATHNAME), iteratively (no
/// recursion: a hostile argument cannot blow the stack, and the work is at most pattern length
/// × argument length).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if (c == b'?' && text[t] != b'/') || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // A star may take one more character, but never a '/'.
                Some((sp, st)) if text[st] != b'/' => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                _ => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// The operator's rules for commands.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// The allow rules (`--allow`); a program may have several.
    pub(crate) allow: Vec<Rule>,
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
        if !self.allow_any {
            let rules: Vec<&Rule> = self
                .allow
                .iter()
                .filter(|r| r.program == *program)
                .collect();
            if !rules.iter().any(|rule| rule.admits(&argv[1..])) {
                let allowed: Vec<String> = rules.iter().map(|r| format!("`{r}`")).collect();
                return Err(Refusal::bad(format!(
                    "command refused: {} may run only as {}",
                    shell_words::quote(program),
                    allowed.join(" or ")
                )));
            }
        }
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
        let listed = self.allow.iter().any(|rule| rule.program == program);
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
            allow: allow
                .iter()
                .map(|s| Rule::parse(s).expect("rule"))
                .collect(),
            allow_any: false,
            shell: false,
            env: Policy::environment(&[]),
            cwd: PathBuf::from("/"),
        }
    }

    #[test]
    fn words_are_split_like_a_shell_but_nothing_is_interpreted() {
        let p = policy(&["echo ..."]);
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
        assert!(Rule::parse("bin/ls").is_err());
        assert!(Rule::parse("/bin/ls").is_ok() && Rule::parse("ls").is_ok());
    }

    #[test]
    fn allowing_a_program_does_not_allow_its_options() {
        // The README's rules: uptime and sort, with no arguments.
        let p = policy(&["uptime", "sort"]);
        assert!(p.prepare("sort").is_ok());
        assert!(p.prepare("uptime").is_ok());
        for text in [
            "sort --compress-program=sh",
            "sort -o /tmp/x",
            "sort /etc/shadow",
            "uptime -p",
        ] {
            let refused = p.prepare(text).expect_err(text);
            assert!(
                refused.message.contains("may run only as"),
                "{text}: {refused}"
            );
        }
        // Patterns the operator writes: exact words, wildcards within one argument (never an
        // option), several rules for one program, and an explicit `...`.
        let p = policy(&[
            "journalctl -u robot -n *",
            "cat logs/*.txt",
            "cat -n logs/*.txt",
            "ls ...",
        ]);
        for text in [
            "journalctl -u robot -n 50",
            "cat logs/run1.txt",
            "cat -n logs/a.txt",
            "ls",
            "ls -la /",
        ] {
            assert!(p.prepare(text).is_ok(), "{text} allowed");
        }
        for text in [
            "journalctl -u robot -n --output=export",
            "journalctl -u sshd -n 50",
            "journalctl -u robot -n 50 -f",
            "cat logs/run1.txt /etc/shadow",
            "cat /etc/shadow",
            "cat logs/x.txt.gz",
            "cat --show-all",
            "cat logs/../../etc/x.txt",
            "cat logs/sub/x.txt",
        ] {
            assert!(p.prepare(text).is_err(), "{text} refused");
        }
        assert!(Rule::parse("sort *").is_ok());
        assert!(
            policy(&["sort *"])
                .prepare("sort --compress-program=sh")
                .is_err()
        );
        assert!(Rule::parse("so*rt").is_err());
        assert!(Rule::parse("echo 'a").is_err());
    }

    #[test]
    fn glob_matches_like_fnmatch_without_recursion() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*.txt", "a.txt", true),
            ("*.txt", "a.txt.gz", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "anything", true),
            ("*", "a/b", false),
            ("logs/*", "logs/a", true),
            ("logs/*", "logs/a/b", false),
            ("?", "/", false),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
        }
        // A pathological pattern against a long argument ends quickly.
        let long = "a".repeat(60_000);
        assert!(!glob(b"*a*a*a*a*a*a*a*b", long.as_bytes()));
    }
}
