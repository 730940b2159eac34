//! Running out of file descriptors: the accept loop backs off (it does not spin) and serves the
//! clients that waited once descriptors are free again.

use std::io::Write;

use crate::support::{Proc, have, listening, read_n, tcp};

#[test]
fn emfile_backs_off_and_recovers() {
    if !have("prlimit", "emfile_backs_off_and_recovers") {
        return;
    }
    // A descriptor limit small enough to hit with a few dozen clients.
    let mut server = Proc::spawn_program(
        "prlimit",
        &[
            "--nofile=32:32",
            crate::support::bin(),
            "serve",
            "echo",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    server
        .stdout
        .wait_for("listening line", |seen| !listening(seen).is_empty());
    let ep = listening(&server.stdout.seen).remove(0);

    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut c = tcp(&ep); // the kernel completes these in the backlog regardless
        c.write_all(b"x").expect("send");
        clients.push(c);
    }
    server.stderr.wait_for_text("out of resources; pausing");
    // The last client waits in the backlog: it has no reply while descriptors are exhausted.
    // Free most descriptors; then it must be served.
    let mut waiting = clients.pop().expect("last");
    clients.truncate(5);
    assert_eq!(read_n(&mut waiting, 1), "x");
    for c in &mut clients {
        assert_eq!(read_n(c, 1), "x");
    }
    drop(clients);
    // The pauses double (5 ms, 10 ms, ... 1 s), so a few seconds of exhaustion log only a handful
    // of warnings instead of a spinning loop's thousands.
    let warnings = server.stderr.text().matches("out of resources").count();
    assert!(
        warnings < 40,
        "{warnings} warnings: the accept loop is not backing off"
    );
}
