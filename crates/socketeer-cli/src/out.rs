//! The program's results on standard output, and its messages and logs on standard error.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`socketeer ls | head -1`,
//! `socketeer bench --help | head`); these write the same text and take a reader that left as
//! the end of the output, not as a failure. Other write errors (a full disk) are returned.
//!
//! `eprintln!` panics too when stderr has gone (`socketeer serve echo 2>&1 | head -1`), and so
//! does the log subscriber (its own complaint about a failed write is an `eprint!`): a panic in
//! the signal task left a server that no SIGTERM could stop, one in the main task ended a
//! server that was serving. Messages therefore go through [`errln!`] and logs through
//! [`LossyStderr`], which drop what cannot be written: with its log reader gone a server keeps
//! serving (the logs are lost, not the service) and a signal still stops it.

use std::io::Write;

/// Writes to stdout and flushes; a closed pipe is not an error.
pub(crate) fn print(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `print!` through [`print`]: evaluates to `std::io::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::print(format_args!($($arg)*)) };
}

/// `println!` through [`print`]: evaluates to `std::io::Result<()>`. (Tested through the
/// program: `tests/it/usage.rs`, `output_into_a_closed_pipe_ends_quietly`.)
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes to stderr; a stderr that has gone (or fails) loses the message, nothing else.
pub(crate) fn eprint(args: std::fmt::Arguments<'_>) {
    crate::terminal::write_stderr(args.to_string().as_bytes());
}

/// `eprint!` through [`eprint`]: never panics.
macro_rules! err {
    ($($arg:tt)*) => { $crate::out::eprint(format_args!($($arg)*)) };
}

/// `eprintln!` through [`eprint`]: never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::eprint(format_args!("{}\n", format_args!($($arg)*))) };
}

/// The log subscriber's stderr: a write that fails is taken as done, so the subscriber never
/// reports it (with a panicking `eprint!`) and the event is simply lost. While a line editor
/// runs, events go above the line being typed ([`crate::terminal::write_stderr`]).
pub(crate) struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::terminal::write_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
