#!/usr/bin/env bash
# The hub's Foxglove WebSocket beside the Foxglove SDK's own server (PyPI foxglove-sdk, Rust
# inside), relaying the same traffic to the same clients in one run: ROBOTS robots' IMU at RATE
# Hz and CAMERAS cameras' 640x480 JPEGs (~38 KB) at FPS, sent alike by bench/foxglove-load.py
# (to the hub's ingest; to the SDK's log()), and CLIENTS Foxglove clients
# (tests/browser/foxglove-bench.mjs, @foxglove/ws-protocol) subscribed to every IMU and image
# channel. Prints messages/s delivered and send-to-client p50/p99 as FIGURE lines, and the
# ratios. Loopback only; each run bounded by SECS.
#
#   bench/foxglove.sh            # ROBOTS=20 RATE=50 CAMERAS=8 FPS=15 CLIENTS=10 SECS=10
set -euo pipefail
cd "$(dirname "$0")/.."
export ROBOTS=${ROBOTS:-20} RATE=${RATE:-50} CAMERAS=${CAMERAS:-8} FPS=${FPS:-15}
CLIENTS=${CLIENTS:-10}
SECS=${SECS:-10}
WARMUP=3
python3 -c "import foxglove" 2>/dev/null || { echo "bench/foxglove.sh: pip install foxglove-sdk first" >&2; exit 1; }
cargo build --release -q -p socketeer-cli --bin socketeer -p socketeer-scene --example frames
bin=$PWD/target/release/socketeer
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
target/release/examples/frames 1 > "$work/frame.rec"
run_for=$((SECS + WARMUP + 2))

# socketeer hub
"$bin" hub --no-auth --listen 127.0.0.1:0 --http 127.0.0.1:0 --no-influx --db "$work/hub.db" \
  > "$work/hub.out" 2> "$work/hub.err" &
hub=$!
pids+=("$hub")
until [ "$(grep -c '^listening on' "$work/hub.out" 2>/dev/null)" -ge 2 ]; do
  kill -0 "$hub" || { cat "$work/hub.err"; exit 1; }
  sleep 0.05
done
ingest=$(grep -m1 -o 'tcp://[0-9.:]*' "$work/hub.out" | sed 's|tcp://||')
web=$(grep -o 'http://[0-9.:]*' "$work/hub.out" | head -1 | sed 's|http://||')
python3 bench/foxglove-load.py hub "$ingest" "$run_for" "$work/frame.rec" &
load=$!
pids+=("$load")
ours=$(node tests/browser/foxglove-bench.mjs "ws://$web/foxglove" "$CLIENTS" "$SECS" "$WARMUP")
wait "$load" || true
kill "$hub"; wait "$hub" 2>/dev/null || true
echo "FIGURE socketeer_hub: $ours"

# Foxglove SDK
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 bench/foxglove-load.py sdk "$port" "$run_for" "$work/frame.rec" > "$work/sdk.out" &
sdk=$!
pids+=("$sdk")
until grep -q ready "$work/sdk.out" 2>/dev/null; do kill -0 "$sdk"; sleep 0.05; done
theirs=$(node tests/browser/foxglove-bench.mjs "ws://127.0.0.1:$port" "$CLIENTS" "$SECS" "$WARMUP")
wait "$sdk" || true
echo "FIGURE foxglove_sdk: $theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("FIGURE ratio messages/s (hub / sdk) = %.2f; p99 hub %.1f ms vs sdk %.1f ms"
      % (a["messages_per_s"] / b["messages_per_s"], a["p99_ms"], b["p99_ms"]))
PY
