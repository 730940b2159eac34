#!/usr/bin/env bash
# Memory per idle connection: 10,000 connections held open to `socketeer serve echo` and to
# the minimal tokio echo (4 KiB buffer per connection), server RSS before and after, and how
# long a fresh client then waits for its echo. Loopback only; connections closed at the end.
#
#   bench/idle.sh            # N=10000
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
source bench/lib.sh

measure() { # name command...
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do grep -q "listening on" "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  local ep
  ep=$(sed -n 's/^listening on tcp:\/\///p' "$work/$name.out" | head -1)
  python3 - "$name" "$pid" "$ep" "$N" <<'PY'
import socket, sys, time
name, pid, ep, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host, port = ep.rsplit(":", 1)
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def echo_ms():
    t = time.perf_counter()
    s = socket.create_connection((host, int(port)))
    s.sendall(b"x" * 64)
    got = b""
    while len(got) < 64:
        got += s.recv(64 - len(got))
    s.close()
    return (time.perf_counter() - t) * 1000
echo_ms()  # warm
before = rss_kib()
conns = []
for _ in range(n):
    conns.append(socket.create_connection((host, int(port))))
time.sleep(1)  # a measurement window, not a synchronisation
silent = rss_kib()
# Every connection accepted and served once (an idle client that has spoken), then idle.
for s in conns:
    s.sendall(b"y")
for s in conns:
    s.recv(1)
time.sleep(1)  # let the server settle; this is a measurement window, not a synchronisation
after = rss_kib()
fresh = sorted(echo_ms() for _ in range(20))
print(f"FIGURE idle_{name}_rss_per_silent_conn={(silent - before) / n:.2f} KiB (connected, never sent)")
print(f"FIGURE idle_{name}_rss_per_conn={(after - before) / n:.2f} KiB ({n} idle connections that each echoed once; RSS {before} -> {after} KiB)")
print(f"FIGURE idle_{name}_fresh_client_echo_ms p50={fresh[10]:.2f} max={fresh[-1]:.2f}")
for s in conns:
    s.close()
PY
}

measure socketeer "$BIN" -q serve echo --listen 127.0.0.1:0 --max-conns 20000
measure tokio "$BASE" 127.0.0.1:0
