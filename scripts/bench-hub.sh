#!/usr/bin/env bash
# Durable ingest into `socketeer hub` (SQLite WAL, synchronous=FULL): 10 publishers over
# loopback, each line a reading of three values, acknowledged only after commit.
#   0. the disk: fsync latency of 32 KiB appends (the floor under every durable commit);
#   1. throughput: 10 x `socketeer publish --file` as fast as acknowledgements allow, each
#      with at most WINDOW lines unacknowledged;
#   2. latency at a fixed offered load: 10 publishers fed at RATE lines/s each (paced input),
#      send-to-ack p50/p99 from `publish --stats`;
#   3. mosquitto (Debian package, persistence on) carrying the same lines with QoS 1 from 10
#      `mosquitto_pub -l`, if it is installed or installable (skipped with a note otherwise).
# Prints FIGURE lines. Usage: scripts/bench-hub.sh   (READINGS=, RATE=, SECS=, WINDOW=, DIR=, ROUNDS=;
# SOCKETEER_BIN= another build to measure; MOSQUITTO=0 leaves part 3 out)
set -euo pipefail
cd "$(dirname "$0")/.."
READINGS=${READINGS:-1000000}
RATE=${RATE:-10000}
SECS=${SECS:-20}
WINDOW=${WINDOW:-20000}
ROUNDS=${ROUNDS:-1}
DIR=${DIR:-/var/tmp}
PUBLISHERS=10

cargo build --release -q
socketeer=${SOCKETEER_BIN:-$PWD/target/release/socketeer}
work=$(mktemp -d "$DIR/socketeer-bench-hub.XXXXXX")
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

per=$((READINGS / PUBLISHERS))
for p in $(seq 0 $((PUBLISHERS - 1))); do
  python3 bench/readings.py "$per" > "$work/in$p.jsonl"
done

start_hub() {
  rm -f "$work"/hub.db*
  "$socketeer" hub --no-auth --listen 127.0.0.1:0 --no-influx --no-http --db "$work/hub.db" \
    > "$work/hub.out" 2> "$work/hub.err" &
  hub=$!
  pids+=("$hub")
  until grep -q '^listening on tcp://' "$work/hub.out" 2>/dev/null; do
    kill -0 "$hub" || { cat "$work/hub.err"; exit 1; }
    sleep 0.05
  done
  ep=$(sed -n 's/^listening on tcp:\/\///p' "$work/hub.out" | head -1)
}

summary() { # name: reads publish --stats lines on stdin, prints the worst p50/p99
  python3 bench/readings.py summary
}

echo "machine: $(nproc) cores, $(uname -r); database in $DIR ($(df -T "$DIR" | awk 'NR==2 {print $2}'))"

# 0. The disk under the database.
python3 - "$work/fsync-probe" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
lat, end = [], time.monotonic() + 5
while time.monotonic() < end:
    os.write(fd, b"x" * 32768)
    t = time.perf_counter(); os.fsync(fd); lat.append((time.perf_counter() - t) * 1000)
os.close(fd); os.remove(sys.argv[1])
lat.sort(); n = len(lat)
print(f"FIGURE disk_fsync_p50={lat[n // 2]:.2f} ms p99={lat[n * 99 // 100]:.2f} ms max={lat[-1]:.1f} ms ({n} fsyncs in 5 s)")
EOF

# 1. Throughput (ROUNDS times, each into a fresh database: the figure is the median, with
#    every round's listed; the goal is met only if the slowest round meets it).
rates=()
for round in $(seq 1 "$ROUNDS"); do
  start_hub
  rm -f "$work"/stats*
  # Each round from a settled disk, as the first: the last round's database, just deleted,
  # leaves the file system work that would otherwise land on this round's syncs.
  sync
  t0=$(date +%s.%N)
  pubs=()
  for p in $(seq 0 $((PUBLISHERS - 1))); do
    "$socketeer" publish "$ep" --file "$work/in$p.jsonl" --max-unacked "$WINDOW" --stats > "$work/stats$p" &
    pubs+=($!)
  done
  wait "${pubs[@]}"
  t1=$(date +%s.%N)
  read -r p50 p99 acked < <(cat "$work"/stats* | summary)
  stored=$(python3 -c "import sqlite3; print(sqlite3.connect('$work/hub.db').execute('select count(*) from samples').fetchone()[0])")
  wall=$(echo "$t1 - $t0" | bc -l)
  rates+=("$(printf '%.0f' "$(echo "$acked / $wall" | bc -l)")")
  [ "$round" = "$ROUNDS" ] || { kill "$hub"; wait "$hub" 2>/dev/null || true; }
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}')
if [ "$ROUNDS" = 1 ]; then
  echo "FIGURE hub_durable_readings_per_sec=$median readings/s ($acked acknowledged in $(printf '%.2f' "$wall") s, $stored stored, 10 publishers, synchronous=FULL)"
else
  echo "FIGURE hub_durable_readings_per_sec=$median readings/s (median of $ROUNDS rounds: ${rates[*]}; slowest $(printf '%s\n' "${rates[@]}" | sort -n | head -1); last round $acked acknowledged, $stored stored; 10 publishers, synchronous=FULL)"
fi
echo "FIGURE hub_saturated_ack_p50=$p50 ms (up to $WINDOW lines in flight per publisher wait in line)"
echo "FIGURE hub_saturated_ack_p99=$p99 ms"
kill "$hub"; wait "$hub" 2>/dev/null || true

# 2. Latency at a fixed offered load.
start_hub
lines=$((RATE * SECS))
rm -f "$work"/stats*
pubs=()
for p in $(seq 0 $((PUBLISHERS - 1))); do
  python3 bench/readings.py "$lines" "$RATE" | "$socketeer" publish "$ep" --stats > "$work/stats$p" &
  pubs+=($!)
done
wait "${pubs[@]}"
read -r p50 p99 acked < <(cat "$work"/stats* | summary)
echo "FIGURE hub_offered_load=$((RATE * PUBLISHERS)) readings/s for $SECS s ($acked acknowledged)"
echo "FIGURE hub_ack_p50=$p50 ms"
echo "FIGURE hub_ack_p99=$p99 ms"
kill "$hub"; wait "$hub" 2>/dev/null || true

# 3. mosquitto, QoS 1, persistence on, the same lines.
[ "${MOSQUITTO:-1}" = 0 ] && exit 0
if ! command -v mosquitto >/dev/null; then
  apt-get install -y -q mosquitto mosquitto-clients >/dev/null 2>&1 || true
fi
if command -v mosquitto >/dev/null && command -v mosquitto_pub >/dev/null; then
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  cat > "$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/
max_queued_messages 0
EOF
  mosquitto -c "$work/mosquitto.conf" > "$work/mosq.log" 2>&1 &
  mosq=$!
  pids+=("$mosq")
  until mosquitto_pub -p "$port" -t ping -m x 2>/dev/null; do sleep 0.05; done
  t0=$(date +%s.%N)
  pubs=()
  for p in $(seq 0 $((PUBLISHERS - 1))); do
    mosquitto_pub -p "$port" -q 1 -t "robots/$p" -l < "$work/in$p.jsonl" &
    pubs+=($!)
  done
  wait "${pubs[@]}"
  t1=$(date +%s.%N)
  wall=$(echo "$t1 - $t0" | bc -l)
  echo "FIGURE mosquitto_qos1_messages_per_sec=$(printf '%.0f' "$(echo "$READINGS / $wall" | bc -l)") messages/s ($READINGS in $(printf '%.2f' "$wall") s; persistence saves to disk periodically, not per message)"
  kill "$mosq"; wait "$mosq" 2>/dev/null || true
else
  echo "note: mosquitto could not be installed here; comparison skipped"
fi
