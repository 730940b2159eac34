//! `socketeer scan`: exact open/closed/filtered results over all 65535 ports against
//! listeners the test opens, reasons from a network namespace with firewall rules and
//! unreachable routes, running out of descriptors mid-scan, parsing, and the output formats.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{bin, have, run};

/// Runs `script` with bash in a new network namespace (only `lo`, no other listeners), with
/// `$SOCKETEER` set; `None` (after printing why) where namespaces cannot be made.
fn in_netns(test: &str, script: &str) -> Option<(i32, String, String)> {
    if !have("unshare", test) || !have("ip", test) || !have("python3", test) {
        return None;
    }
    let works = Command::new("unshare")
        .args(["-n", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("SKIPPED {test}: cannot create a network namespace here (needs root)");
        return None;
    }
    let prelude = r#"
set -e
ip link set lo up
# The listeners live until their stdin (a pipe from this shell) closes. The trap also keeps
# bash from exec'ing the script's last command in its place, which would close that pipe
# and the listeners with it while the scan runs.
trap 'kill ${LISTENERS_PID:-} 2>/dev/null || true' EXIT
# Listeners on 127.0.0.1 at the given ports; returns once all listen.
listen() {
  coproc LISTENERS { exec python3 -u -c '
import socket, sys
held = []
for port in sys.argv[1:]:
    s = socket.socket()
    s.bind(("127.0.0.1", int(port)))
    s.listen(128)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
' "$@"; }
  read -r ready <&"${LISTENERS[0]}"
}
"#;
    let output = Command::new("unshare")
        .args(["-n", "bash", "-c"])
        .arg(format!("{prelude}\n{script}"))
        .env("SOCKETEER", bin())
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    Some((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Ports reported in one target's JSON, with their state.
fn ports_in(target: &Value, state: &str) -> BTreeSet<u64> {
    target["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter(|p| p["state"] == state)
        .map(|p| p["port"].as_u64().expect("port number"))
        .collect()
}

#[test]
fn every_port_exact_in_a_namespace_also_with_256_descriptors() {
    let test = "every_port_exact_in_a_namespace_also_with_256_descriptors";
    // Ports at both ends, well-known ones, and ports inside the ephemeral range (where a
    // careless scanner reports its own connections as open).
    let listeners = [1u64, 22, 80, 8080, 33_000, 45_678, 60_999, 65_535];
    let list = listeners.map(|p| p.to_string()).join(" ");
    let script = format!(
        r#"
listen {list}
"$SOCKETEER" scan -p- --json 127.0.0.1
echo '----'
(ulimit -n 256; exec "$SOCKETEER" scan -p- --json 127.0.0.1)
"#
    );
    let Some((code, out, err)) = in_netns(test, &script) else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    let (first, second) = out.split_once("----").expect("two documents");
    for (run, text) in [("default limits", first), ("ulimit -n 256", second)] {
        let doc = json(text);
        let target = &doc["targets"][0];
        let open = ports_in(target, "open");
        assert_eq!(open, BTreeSet::from(listeners), "{run}: open ports exactly");
        assert_eq!(target["counts"]["open"], listeners.len() as u64, "{run}");
        assert_eq!(
            target["counts"]["closed"],
            65_535 - listeners.len() as u64,
            "{run}: every other port closed"
        );
        assert_eq!(target["counts"]["filtered"], 0, "{run}");
        assert_eq!(
            target["reasons"]["conn-refused"],
            65_535 - listeners.len() as u64
        );
        if run == "ulimit -n 256" {
            let concurrency = doc["timing"]["concurrency"].as_u64().expect("concurrency");
            assert!(concurrency < 256, "stays under the limit: {concurrency}");
            assert_eq!(doc["timing"]["fd_limit"], 256);
        }
    }
}

#[test]
fn filtered_ports_have_their_reasons() {
    let test = "filtered_ports_have_their_reasons";
    if !have("nft", test) {
        return;
    }
    let script = r#"
nft add table inet t
nft add chain inet t in '{ type filter hook input priority 0; }'
nft add rule inet t in tcp dport 7001 drop
ip route add unreachable 198.51.100.0/24
ip route add prohibit 203.0.113.0/24
listen 7002
"$SOCKETEER" scan -p 7000-7002 --all --json --timeout 0.3 --retries 1 \
    127.0.0.1 198.51.100.7 203.0.113.9 192.0.2.1
"#;
    let Some((code, out, err)) = in_netns(test, script) else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    let doc = json(&out);
    let targets = doc["targets"].as_array().expect("targets");
    let reason = |address: &str, port: u64| -> (String, String) {
        let target = targets
            .iter()
            .find(|t| t["address"] == address)
            .unwrap_or_else(|| panic!("{address} in {out}"));
        let entry = target["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["port"] == port)
            .unwrap_or_else(|| panic!("{address}:{port} listed with --all"));
        (
            entry["state"].as_str().expect("state").to_owned(),
            entry["reason"].as_str().expect("reason").to_owned(),
        )
    };
    let pair = |s: &str, r: &str| (s.to_owned(), r.to_owned());
    assert_eq!(reason("127.0.0.1", 7000), pair("closed", "conn-refused"));
    assert_eq!(reason("127.0.0.1", 7001), pair("filtered", "no-response"));
    assert_eq!(reason("127.0.0.1", 7002), pair("open", "syn-ack"));
    for port in 7000..=7002 {
        assert_eq!(
            reason("198.51.100.7", port),
            pair("filtered", "host-unreach")
        );
        assert_eq!(
            reason("203.0.113.9", port),
            pair("filtered", "admin-prohibited")
        );
        assert_eq!(reason("192.0.2.1", port), pair("filtered", "net-unreach"));
    }
    // Only the timeout was retried, once.
    assert_eq!(doc["timing"]["retries"], 1, "{out}");

    // The table says the same, and shows the reason.
    let script = r#"
nft add table inet t
nft add chain inet t in '{ type filter hook input priority 0; }'
nft add rule inet t in tcp dport 7001 drop
"$SOCKETEER" scan -p 7000-7001 --timeout 0.2 --retries 0 127.0.0.1
"#;
    let (code, out, err) = in_netns(test, script).expect("namespace worked once");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("No open ports."), "{out}");
    assert!(
        out.contains("Not shown: 1 closed (conn-refused), 1 filtered (no-response)"),
        "{out}"
    );
}

#[test]
fn running_out_of_descriptors_mid_scan_backs_off_and_finishes() {
    let test = "running_out_of_descriptors_mid_scan_backs_off_and_finishes";
    if !have("nft", test) || !have("prlimit", test) {
        return;
    }
    // 2000 dropped ports keep probes (and descriptors) in flight; once the scan holds more
    // than 100, its limit is cut to 48 under it. Every port must still get its right answer.
    let script = r#"
nft add table inet t
nft add chain inet t in '{ type filter hook input priority 0; }'
nft add rule inet t in tcp dport 1000-2999 drop
listen 3500
"$SOCKETEER" scan -p 1-4000 --json --concurrency 300 --timeout 0.5 --retries 0 -r 127.0.0.1 > "$OUT" &
scan=$!
held() { ls /proc/$scan/fd 2>/dev/null | wc -l; }
while kill -0 $scan 2>/dev/null && [ "$(held)" -le 100 ]; do :; done
echo "held $(held)" >&2
prlimit --pid $scan --nofile=48:48
wait $scan
cat "$OUT"
"#;
    let dir = crate::support::TempDir::new("scan-emfile");
    let out_file = dir.0.join("out.json");
    let script = script.replace("\"$OUT\"", &format!("'{}'", out_file.display()));
    let Some((code, out, err)) = in_netns(test, &script) else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    let doc = json(&out);
    let target = &doc["targets"][0];
    assert_eq!(ports_in(target, "open"), BTreeSet::from([3500]), "{err}");
    assert_eq!(target["counts"]["filtered"], 2000);
    assert_eq!(target["reasons"]["no-response"], 2000);
    assert_eq!(target["counts"]["closed"], 4000 - 2000 - 1);
    let pressure = doc["timing"]["fd_pressure_events"].as_u64().expect("count");
    assert!(
        pressure > 0,
        "the descriptor limit was hit and handled: {err}"
    );
    let lowest = doc["timing"]["lowest_concurrency"]
        .as_u64()
        .expect("lowest");
    assert!(
        lowest < 48,
        "concurrency came down under the new limit: {lowest}"
    );
}

/// Listening sockets bound to the wildcard address, from /proc (they answer on every
/// loopback address, so a scan of one rightly reports them).
fn wildcard_listeners() -> BTreeSet<u64> {
    let mut ports = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 3 && fields[3] == "0A" {
                if let Some((address, port)) = fields[1].split_once(':') {
                    if address.chars().all(|c| c == '0') {
                        ports.insert(u64::from_str_radix(port, 16).expect("hex port"));
                    }
                }
            }
        }
    }
    ports
}

#[test]
fn every_port_of_a_loopback_address_without_a_namespace() {
    // Works unprivileged: listeners on an address of 127/8 no other test uses. Besides ours,
    // only listeners on the wildcard address answer there; /proc names them.
    let address = format!(
        "127.{}.{}.9",
        100 + std::process::id() % 100,
        std::process::id() % 250
    );
    let listeners: Vec<TcpListener> = (0..4)
        .map(|_| TcpListener::bind(format!("{address}:0")).expect("bind"))
        .collect();
    let ours: BTreeSet<u64> = listeners
        .iter()
        .map(|l| u64::from(l.local_addr().expect("addr").port()))
        .collect();
    let before = wildcard_listeners();
    let (status, out, err) = run(&["scan", "-p-", "--json", &address], b"");
    let after = wildcard_listeners();
    assert!(status.success(), "{err}");
    let doc = json(&out);
    let target = &doc["targets"][0];
    let open = ports_in(target, "open");
    assert!(
        open.is_superset(&ours),
        "every listener found: {open:?} vs {ours:?}"
    );
    let known: BTreeSet<u64> = ours.iter().chain(&before).chain(&after).copied().collect();
    let unexplained: Vec<_> = open.difference(&known).collect();
    assert!(
        unexplained.is_empty(),
        "no false positives: {unexplained:?}"
    );
    assert_eq!(target["counts"]["filtered"], 0);
    let closed = target["counts"]["closed"].as_u64().expect("closed");
    assert_eq!(closed + open.len() as u64, 65_535);
}

#[test]
fn ipv6_and_host_names() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED ipv6_and_host_names: no IPv6 loopback here");
        return;
    };
    let port = listener.local_addr().expect("addr").port().to_string();
    let (status, out, err) = run(&["scan", "-p", &port, "--greppable", "::1"], b"");
    assert!(status.success(), "{err}");
    assert_eq!(out, format!("Host: ::1 ()\tPorts: {port}/open/tcp/////\n"));

    let v4 = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = v4.local_addr().expect("addr").port().to_string();
    let (status, out, err) = run(&["scan", "-p", &port, "localhost"], b"");
    assert!(status.success(), "{err}");
    assert!(out.starts_with("Scan of localhost (127.0.0.1)\n"), "{out}");
    assert!(out.contains(&format!("{port}/tcp")), "{out}");
    assert!(out.contains("open"), "{out}");
}

#[test]
fn json_document_schema() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let spec = format!("{port},{closed}");
    let (status, out, err) = run(&["scan", "-p", &spec, "--json", "--all", "127.0.0.1"], b"");
    assert!(status.success(), "{err}");
    let doc = json(&out);
    assert_eq!(doc["scanner"], "socketeer");
    assert_eq!(doc["scan"], "tcp-connect");
    assert_eq!(doc["ports"]["count"], 2);
    assert_eq!(doc["ports"]["spec"], spec.as_str());
    assert_eq!(doc["ports"]["shown"], "all");
    let target = &doc["targets"][0];
    assert_eq!(target["target"], "127.0.0.1");
    assert_eq!(target["address"], "127.0.0.1");
    assert!(target["rtt_ms"].as_f64().is_some());
    assert!(target["timeout_ms"].as_f64().is_some());
    let ports = target["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 2);
    let open = ports.iter().find(|p| p["port"] == port).expect("open port");
    assert_eq!(open["protocol"], "tcp");
    assert_eq!(open["state"], "open");
    assert_eq!(open["reason"], "syn-ack");
    assert!(open["rtt_ms"].as_f64().is_some());
    assert!(open.get("service").is_some());
    let shut = ports
        .iter()
        .find(|p| p["port"] == closed)
        .expect("closed port");
    assert_eq!(
        (&shut["state"], &shut["reason"]),
        (&"closed".into(), &"conn-refused".into())
    );
    let timing = &doc["timing"];
    for field in [
        "started",
        "elapsed_s",
        "probes",
        "connects",
        "concurrency",
        "fd_limit",
        "threads",
    ] {
        assert!(!timing[field].is_null(), "timing.{field} in {out}");
    }
    assert_eq!(timing["probes"], 2);
}

#[test]
fn default_ports_are_the_top_thousand_and_nothing_open_exits_zero() {
    // A fresh /32 no one listens on (beyond wildcard listeners, which the top list may hit).
    let (status, out, err) = run(&["scan", "--json", "127.31.41.59"], b"");
    assert!(status.success(), "nothing open still exits 0: {err}");
    let doc = json(&out);
    assert_eq!(doc["ports"]["count"], 1000);
    assert_eq!(doc["ports"]["spec"], "top 1000");
    let (status, out, _) = run(
        &["scan", "--top-ports", "5", "--greppable", "127.31.41.59"],
        b"",
    );
    assert!(status.success());
    assert!(out.starts_with("Host: 127.31.41.59 ()\tPorts: "), "{out}");
    assert_eq!(out.lines().count(), 1, "one line per host");
}

#[test]
fn bad_targets_and_ports_are_usage_errors() {
    for (args, why) in [
        (
            &["scan", "-p", "70000", "127.0.0.1"][..],
            "port 70000 is above 65535",
        ),
        (
            &["scan", "-p", "0", "127.0.0.1"][..],
            "port 0 cannot be scanned",
        ),
        (&["scan", "-p", "90-80", "127.0.0.1"][..], "runs backwards"),
        (&["scan", "-p", "ssh", "127.0.0.1"][..], "not a port number"),
        (&["scan", "300.1.2.3"][..], "not a valid IPv4 address"),
        (&["scan", "10.0.0.0/33"][..], "prefix length must be 0-32"),
        (
            &["scan", "no_such host"][..],
            "not an IP address, CIDR network or host name",
        ),
        (&["scan", "10.0.0.0/8"][..], "more than --max-hosts 4096"),
        (
            &["scan", "--max-hosts", "100", "10.0.0.0/24"][..],
            "254 hosts, more than --max-hosts 100",
        ),
        (
            &["scan", "--top-ports", "1001", "127.0.0.1"][..],
            "--top-ports",
        ),
        (
            &["scan", "--timeout", "0", "127.0.0.1"][..],
            "between 0.001 and 300",
        ),
        (&["scan"][..], "TARGET"),
    ] {
        let (status, _, err) = run(args, b"");
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("socketeer: "), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // A name that does not resolve is skipped with a message; with nothing left, it fails.
    let (status, _, err) = run(&["scan", "-p", "80", "no-such-host.invalid"], b"");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot resolve no-such-host.invalid"), "{err}");
    assert!(err.contains("no target could be resolved"), "{err}");
}

#[test]
fn cidr_targets_expand() {
    let (status, out, err) = run(
        &[
            "scan",
            "-p",
            "9",
            "--greppable",
            "--timeout",
            "0.2",
            "127.77.0.0/30",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let hosts: Vec<&str> = out
        .lines()
        .map(|line| line.split('\t').next().expect("field"))
        .collect();
    assert_eq!(
        hosts,
        ["Host: 127.77.0.1 ()", "Host: 127.77.0.2 ()"],
        "network and broadcast addresses left out"
    );
}

#[test]
fn rate_caps_connects_per_second() {
    // 600 probes at 2000/s cannot finish in under 0.3 s (a lower bound: load only slows it).
    let (status, out, err) = run(
        &[
            "scan",
            "-p",
            "1-600",
            "--rate",
            "2000",
            "--json",
            "127.31.41.60",
        ],
        b"",
    );
    assert!(status.success(), "{err}");
    let doc = json(&out);
    let elapsed = doc["timing"]["elapsed_s"].as_f64().expect("elapsed");
    assert!(elapsed >= 0.28, "600 probes at 2000/s took {elapsed} s");
    assert_eq!(doc["timing"]["rate_limit"], 2000);
    assert_eq!(doc["timing"]["connects"], 600);
}
