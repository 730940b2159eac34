//! The dashboard in a real browser: `tests/browser/dashboard.mjs` (playwright-core driving
//! Debian's headless Chromium) against `socketeer hub --demo`. `.ci/run` installs Chromium and
//! the npm package; elsewhere the test says why it skips.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::support::{TempDir, bin, have};

#[test]
fn the_dashboard_shows_live_robots_in_a_browser() {
    let test = "the_dashboard_shows_live_robots_in_a_browser";
    if !have("node", test) {
        return;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    for (what, path) in [
        ("Chromium", Path::new(&chromium).to_path_buf()),
        (
            "playwright-core (npm ci --prefix tests/browser)",
            browser_dir.join("node_modules/playwright-core"),
        ),
    ] {
        if !path.exists() {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {what} is not installed at {} (CI installs it via .ci/run)",
                path.display()
            );
            return;
        }
    }
    let shots = TempDir::new("dashboard");
    let output = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(&shots.0)
        .env("SOCKETEER_BIN", bin())
        .env("CHROMIUM", &chromium)
        .env("ROBOTS", "20")
        .env("RATE", "50")
        .env("LATENCY_SECS", "5")
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The figures, for whoever reads the log.
    let _ = writeln!(std::io::stderr(), "{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("dashboard test: ok"), "{stdout}");
    assert!(
        stdout.contains("markup: shown as text, nothing ran"),
        "{stdout}"
    );
    assert!(
        stdout.contains("clock: late-1 (an hour ahead) plotted live"),
        "{stdout}"
    );
    assert!(shots.0.join("dashboard-device.png").exists());
}
