//! The program's results on standard output.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`socketeer ls | head -1`,
//! `socketeer bench --help | head`); these write the same text and take a reader that left as
//! the end of the output, not as a failure. Other write errors (a full disk) are returned.

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
