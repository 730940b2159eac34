#!/usr/bin/env bash
# The hub's memory while a live viewer never reads: `socketeer hub` (release build) with ROBOTS
# simulated robots (IMU at RATE Hz, cameras at FPS frames/s: 640x480 JPEGs of about 38 KB), and
# one viewer of /api/live with a 4 KiB receive buffer that reads nothing, for SECS seconds. The
# hub's resident memory is sampled every STEP seconds; prints the samples' spread as FIGURE
# lines. Loopback only; bounded by SECS.
#
#   bench/viewer-memory.sh                 # SECS=600 ROBOTS=8 RATE=50 FPS=15 STEP=10
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-600}
ROBOTS=${ROBOTS:-8}
RATE=${RATE:-50}
FPS=${FPS:-15}
STEP=${STEP:-10}
cargo build --release -q -p socketeer-cli --bin socketeer
bin=$PWD/target/release/socketeer
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin" hub --no-auth --listen 127.0.0.1:0 --http 127.0.0.1:0 --no-influx --db "$work/hub.db" \
  --http-timeout 3600 > "$work/hub.out" 2> "$work/hub.err" &
hub=$!
pids+=("$hub")
until [ "$(grep -c '^listening on' "$work/hub.out" 2>/dev/null)" -ge 2 ]; do
  kill -0 "$hub" || { cat "$work/hub.err"; exit 1; }
  sleep 0.05
done
ingest=$(sed -n 's/^listening on tcp:\/\///p' "$work/hub.out" | head -1)
web=$(sed -n 's/^listening on http:\/\///p' "$work/hub.out" | head -1)
web=${web%/}

# The viewer: subscribes, then never reads (its receive window closes at 4 KiB).
python3 - "$web" "$SECS" <<'EOF' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, int(port)))
s.sendall(f"GET /api/live HTTP/1.1\r\nHost: {sys.argv[1]}\r\n\r\n".encode())
time.sleep(float(sys.argv[2]) + 30)
EOF
pids+=($!)

"$bin" -q simulate "$ingest" --devices "$ROBOTS" --rate "$RATE" --camera-fps "$FPS" --duration "$SECS" \
  > /dev/null 2> "$work/sim.err" &
sim=$!
pids+=("$sim")

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$hub/status"; }
samples=()
for _ in $(seq 1 $((SECS / STEP))); do
  sleep "$STEP" # sampling interval of a measurement, not a synchronisation
  samples+=("$(rss)")
done
wait "$sim" || true
frames=$(curl -s "http://$web/api/frames?device=robot-1&from=0&to=4000000000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["frames"]))')
dropped=$(curl -s "http://$web/metrics" | awk '/^socketeer_hub_live_viewers_dropped_total/ {print $2}')
python3 - "$SECS" "$STEP" "$frames" "$dropped" "${samples[@]}" <<'EOF'
import sys
secs, step, frames, dropped = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
kib = [int(x) for x in sys.argv[5:]]
# After the first minute: the database's caches and the writer's buffers have filled.
settled = kib[max(1, 60 // step):] or kib
lo, hi = min(settled), max(settled)
mid = (lo + hi) / 2
print(f"FIGURE hub_rss_first={kib[0] / 1024:.1f} MiB after {step} s, last={kib[-1] / 1024:.1f} MiB after {secs} s")
print(f"FIGURE hub_rss_after_first_minute min={lo / 1024:.1f} max={hi / 1024:.1f} MiB (spread ±{(hi - lo) / 2 / mid * 100:.1f}% of the middle)")
print(f"FIGURE frames_stored_robot_1={frames}; viewers dropped for falling behind: {dropped}")
EOF
