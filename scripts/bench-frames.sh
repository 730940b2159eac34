#!/usr/bin/env bash
# Durable camera frames into `socketeer hub` (SQLite WAL, synchronous=FULL): 640x480 JPEGs of
# about 40 KB with two detections each, from 8 `socketeer publish` processes over loopback,
# each acknowledged only after commit.
#   1. frames alone: acknowledged frames/s and MB/s, send-to-ack percentiles;
#   2. frames alongside 100,000 readings/s offered (10 paced publishers, as in bench-hub.sh):
#      both rates, and the readings' ack p99.
# Prints FIGURE lines. Usage: scripts/bench-frames.sh   (FRAMES= per publisher, RATE= readings/s
# per reading publisher, SECS=, WINDOW= frames in flight per publisher, DIR=; SOCKETEER_BIN=)
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES=${FRAMES:-300}
RATE=${RATE:-10000}
SECS=${SECS:-10}
WINDOW=${WINDOW:-64}
DIR=${DIR:-/var/tmp}
PUBLISHERS=8
READERS=10

cargo build --release -q -p socketeer-cli --bin socketeer
cargo build --release -q -p socketeer-scene --example frames
socketeer=${SOCKETEER_BIN:-$PWD/target/release/socketeer}
work=$(mktemp -d "$DIR/socketeer-bench-frames.XXXXXX")
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/frames "$FRAMES" > "$work/frames.bin"
bytes=$(stat -c %s "$work/frames.bin")

start_hub() {
  rm -f "$work"/hub.db*
  "$socketeer" hub --no-auth --listen 127.0.0.1:0 --no-influx --no-http --db "$work/hub.db" \
    --image-budget 0 > "$work/hub.out" 2> "$work/hub.err" &
  hub=$!
  pids+=("$hub")
  until grep -q '^listening on tcp://' "$work/hub.out" 2>/dev/null; do
    kill -0 "$hub" || { cat "$work/hub.err"; exit 1; }
    sleep 0.05
  done
  ep=$(sed -n 's/^listening on tcp:\/\///p' "$work/hub.out" | head -1)
}

summary() { # publish --stats lines on stdin: worst p50, worst p99, acknowledged in all
  python3 -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
print(max(r['ack_ms']['p50'] for r in rows), max(r['ack_ms']['p99'] for r in rows), sum(r['acknowledged'] for r in rows))
"
}

frame_publishers() {
  fpubs=()
  for p in $(seq 1 $PUBLISHERS); do
    SOCKETEER_LOG=warn "$socketeer" publish "$ep" --file "$work/frames.bin" --max-unacked "$WINDOW" \
      --stats > "$work/fstats$p" &
    fpubs+=($!)
  done
}

echo "machine: $(nproc) cores, $(uname -r); database in $DIR ($(df -T "$DIR" | awk 'NR==2 {print $2}')); $FRAMES frames of $((bytes / FRAMES)) bytes each per publisher"

# 1. Frames alone.
start_hub
t0=$(date +%s.%N)
frame_publishers
wait "${fpubs[@]}"
t1=$(date +%s.%N)
read -r p50 p99 acked < <(cat "$work"/fstats* | summary)
wall=$(echo "$t1 - $t0" | bc -l)
echo "FIGURE hub_frames_per_sec=$(printf '%.0f' "$(echo "$acked / $wall" | bc -l)") frames/s ($acked acknowledged in $(printf '%.2f' "$wall") s, $PUBLISHERS publishers, synchronous=FULL)"
echo "FIGURE hub_frames_mb_per_sec=$(printf '%.1f' "$(echo "$bytes * $PUBLISHERS / $wall / 1000000" | bc -l)") MB/s"
echo "FIGURE hub_frames_ack_p50=$p50 ms p99=$p99 ms (up to $WINDOW frames in flight per publisher)"
kill "$hub"; wait "$hub" 2>/dev/null || true

# 2. Frames alongside 100,000 readings/s offered.
start_hub
lines=$((RATE * SECS))
rpubs=()
for p in $(seq 1 $READERS); do
  python3 -c "
import sys, time
rate, total = $RATE, $lines
batch = max(1, rate // 100)
start = time.monotonic(); sent = 0
out = sys.stdout
while sent < total:
    n = min(batch, total - sent)
    out.write(''.join('{\"stream\":\"imu\",\"values\":{\"ax\":%d.25,\"ay\":-1.5,\"az\":9.81}}\n' % (sent + i) for i in range(n)))
    out.flush()
    sent += n
    delay = start + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
" | SOCKETEER_LOG=warn "$socketeer" publish "$ep" --stats > "$work/rstats$p" &
  rpubs+=($!)
done
t0=$(date +%s.%N)
frame_publishers
wait "${fpubs[@]}"
t1=$(date +%s.%N)
wait "${rpubs[@]}"
read -r fp50 fp99 facked < <(cat "$work"/fstats* | summary)
read -r rp50 rp99 racked < <(cat "$work"/rstats* | summary)
wall=$(echo "$t1 - $t0" | bc -l)
echo "FIGURE hub_frames_with_readings_per_sec=$(printf '%.0f' "$(echo "$facked / $wall" | bc -l)") frames/s ($facked in $(printf '%.2f' "$wall") s, beside $((RATE * READERS)) readings/s offered)"
echo "FIGURE hub_readings_beside_frames=$racked acknowledged of $((lines * READERS)) offered in $SECS s; ack p50=$rp50 ms p99=$rp99 ms"
echo "FIGURE hub_frames_beside_readings_ack_p50=$fp50 ms p99=$fp99 ms"
kill "$hub"; wait "$hub" 2>/dev/null || true
