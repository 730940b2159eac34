#!/usr/bin/env bash
# A fleet beyond one machine: acknowledged readings into PostgreSQL through two hub nodes,
# beside one SQLite node and beside bare `COPY` of the same rows by psql — all in one run on
# this machine (publishers, nodes and PostgreSQL sharing its cores).
#   0. the anchor: the same rows (3 values each, as the hub stores them) written by 10 psql
#      `\copy` at once into the hub's own table (indexes and all), fsync and
#      synchronous_commit on — the most this PostgreSQL takes here;
#   1. throughput: 10 `socketeer publish --file` (5 per node), as fast as acknowledgements
#      allow (at most WINDOW lines unacknowledged each); then the same into one SQLite node;
#   2. latency at a fixed offered load: 10 publishers paced at RATE lines/s each, send-to-ack
#      p50/p99 (`publish --stats`), two PostgreSQL nodes, then one SQLite node.
# A throwaway PostgreSQL cluster (initdb/pg_ctl on a free port) is made and removed.
# Prints FIGURE lines. Usage: bench/fleet.sh   (READINGS=, RATE=, SECS=, WINDOW=, DIR=;
# SOCKETEER_BIN= another build)
set -euo pipefail
cd "$(dirname "$0")/.."
READINGS=${READINGS:-1000000}
RATE=${RATE:-10000}
SECS=${SECS:-20}
WINDOW=${WINDOW:-20000}
DIR=${DIR:-/var/tmp}
PUBLISHERS=10

cargo build --release -q
socketeer=${SOCKETEER_BIN:-$PWD/target/release/socketeer}
initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)
[ -n "$initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
pgbin=$(dirname "$initdb")
work=$(mktemp -d "$DIR/socketeer-bench-fleet.XXXXXX")
chmod 755 "$work"
as=""
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; as="runuser -u postgres --"; fi
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  $as "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
$as "$pgbin/initdb" -D "$work/pg" -U socketeer --auth=trust --locale=C -E UTF8 >/dev/null
$as "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_wal_size=4GB" start >/dev/null
psql() { $as "$pgbin/psql" -h "$work" -p "$port" -U socketeer "$@"; }
# CPU seconds PostgreSQL has used so far: the postmaster's own and its children's (those that
# ended: cutime/cstime; those running: their utime/stime).
pg_cpu() {
  python3 - "$(head -1 "$work/pg/postmaster.pid")" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
master = sys.argv[1]
def fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
total = 0
f = fields(master)
total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            f = fields(pid)
        except OSError:
            continue
        if f[1] == master:  # ppid
            total += int(f[11]) + int(f[12])
print(total / tick)
PY
}
url() { echo "postgres://socketeer@127.0.0.1:$port/$1"; }

per=$((READINGS / PUBLISHERS))
for p in $(seq 0 $((PUBLISHERS - 1))); do
  python3 bench/readings.py "$per" > "$work/in$p.jsonl"
done
chmod 644 "$work"/in*.jsonl

start_node() { # name db-argument -> sets ep
  "$socketeer" hub --no-auth --listen 127.0.0.1:0 --no-influx --no-http --db "$2" \
    > "$work/$1.out" 2> "$work/$1.err" &
  local pid=$!
  pids+=("$pid")
  until grep -q '^listening on tcp://' "$work/$1.out" 2>/dev/null; do
    kill -0 "$pid" || { cat "$work/$1.err"; exit 1; }
    sleep 0.05
  done
  ep=$(sed -n 's/^listening on tcp:\/\///p' "$work/$1.out" | head -1)
  node_pid=$pid
}

summary() { # reads publish --stats lines on stdin, prints the worst p50/p99 and the sum acked
  python3 bench/readings.py summary
}

echo "machine: $(nproc) cores, $(uname -r); PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') and SQLite in $DIR ($(df -T "$DIR" | awk 'NR==2 {print $2}'))"

# 0. The anchor: bare COPY of the same rows into the hub's own table.
psql -d postgres -qc 'CREATE DATABASE anchor'
start_node schema "$(url anchor)"   # a node makes the schema (then leaves)
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
psql -d anchor -qc "INSERT INTO devices (name, first_seen, last_seen) VALUES ('d', 0, 0);
                    INSERT INTO streams (device_id, name) VALUES (1, 'imu');"
for p in $(seq 0 $((PUBLISHERS - 1))); do
  python3 -c "
import sys, time
now = time.time()
w = sys.stdout.write
for k in range($per):
    w('1\t%f\t%f\t{\"ax\": %d.25, \"ay\": -1.5, \"az\": 9.81}\t\\\\N\n' % (now, now, k))
" > "$work/copy$p.tsv"
done
chmod 644 "$work"/copy*.tsv
cpu0=$(pg_cpu)
t0=$(date +%s.%N)
copies=()
for p in $(seq 0 $((PUBLISHERS - 1))); do
  psql -d anchor -qc "\\copy samples (stream_id, ts, recv_ts, vals, device_ts) FROM '$work/copy$p.tsv'" &
  copies+=($!)
done
wait "${copies[@]}"
t1=$(date +%s.%N)
wall=$(echo "$t1 - $t0" | bc -l)
copied=$(psql -d anchor -tAc 'SELECT count(*) FROM samples')
copy_rate=$(printf '%.0f' "$(echo "$copied / $wall" | bc -l)")
copy_cpu=$(echo "($(pg_cpu) - $cpu0) * 1000000 / $copied" | bc -l)
echo "FIGURE pg_bare_copy_rows_per_sec=$copy_rate rows/s ($copied rows by 10 psql \\copy at once in $(printf '%.2f' "$wall") s)"
echo "FIGURE pg_bare_copy_cpu=$(printf '%.2f' "$copy_cpu") PostgreSQL CPU seconds per million rows"

# 0b. The same rows and their idempotency keys (what the hub must write for each reading),
# both by bare COPY: each psql one transaction, samples then keys.
for p in $(seq 0 $((PUBLISHERS - 1))); do
  python3 -c "
import sys
w = sys.stdout.write
for k in range($per):
    w('%d\t%d\t%d\n' % ($p + 1, k, k * 7919))
" > "$work/keys$p.tsv"
done
chmod 644 "$work"/keys*.tsv
psql -d anchor -qc 'TRUNCATE samples'
cpu0=$(pg_cpu)
t0=$(date +%s.%N)
copies=()
for p in $(seq 0 $((PUBLISHERS - 1))); do
  psql -d anchor -q -1 \
    -c "\\copy samples (stream_id, ts, recv_ts, vals, device_ts) FROM '$work/copy$p.tsv'" \
    -c "\\copy received (session_id, seq, hash) FROM '$work/keys$p.tsv'" &
  copies+=($!)
done
wait "${copies[@]}"
t1=$(date +%s.%N)
wall=$(echo "$t1 - $t0" | bc -l)
keyed=$(psql -d anchor -tAc 'SELECT count(*) FROM received')
keyed_rate=$(printf '%.0f' "$(echo "$keyed / $wall" | bc -l)")
keyed_cpu=$(echo "($(pg_cpu) - $cpu0) * 1000000 / $keyed" | bc -l)
echo "FIGURE pg_bare_copy_with_keys_rows_per_sec=$keyed_rate rows/s ($keyed rows and their keys by 10 psql \\copy at once in $(printf '%.2f' "$wall") s)"
echo "FIGURE pg_bare_copy_with_keys_cpu=$(printf '%.2f' "$keyed_cpu") PostgreSQL CPU seconds per million rows"

# 1. Throughput: two PostgreSQL nodes, then one SQLite node.
throughput() { # label, then the node endpoints (publishers alternate between them)
  local label=$1; shift
  local eps=("$@")
  rm -f "$work"/stats*
  local t0 t1 pubs=()
  t0=$(date +%s.%N)
  for p in $(seq 0 $((PUBLISHERS - 1))); do
    "$socketeer" publish "${eps[$((p % ${#eps[@]}))]}" --file "$work/in$p.jsonl" \
      --max-unacked "$WINDOW" --stats > "$work/stats$p" &
    pubs+=($!)
  done
  wait "${pubs[@]}"
  t1=$(date +%s.%N)
  read -r p50 p99 acked < <(cat "$work"/stats* | summary)
  local wall rate
  wall=$(echo "$t1 - $t0" | bc -l)
  rate=$(printf '%.0f' "$(echo "$acked / $wall" | bc -l)")
  echo "FIGURE ${label}_readings_per_sec=$rate readings/s ($acked acknowledged in $(printf '%.2f' "$wall") s)"
  echo "FIGURE ${label}_saturated_ack_p50=$p50 ms p99=$p99 ms (up to $WINDOW in flight per publisher)"
  last_rate=$rate
}

latency() { # label, then the node endpoints
  local label=$1; shift
  local eps=("$@")
  rm -f "$work"/stats*
  local lines=$((RATE * SECS)) pubs=()
  for p in $(seq 0 $((PUBLISHERS - 1))); do
    python3 bench/readings.py "$lines" "$RATE" | "$socketeer" publish "${eps[$((p % ${#eps[@]}))]}" --stats > "$work/stats$p" &
    pubs+=($!)
  done
  wait "${pubs[@]}"
  read -r p50 p99 acked < <(cat "$work"/stats* | summary)
  echo "FIGURE ${label}_offered=$((RATE * PUBLISHERS)) readings/s for $SECS s ($acked acknowledged): ack p50=$p50 ms p99=$p99 ms"
}

psql -d postgres -qc 'CREATE DATABASE fleet'
start_node a "$(url fleet)"; a=$ep; a_pid=$node_pid
start_node b "$(url fleet)"; b=$ep; b_pid=$node_pid
cpu0=$(pg_cpu)
throughput pg_two_nodes "$a" "$b"
pg_rate=$last_rate
hub_cpu=$(echo "($(pg_cpu) - $cpu0) * 1000000 / $READINGS" | bc -l)
echo "FIGURE pg_two_nodes_cpu=$(printf '%.2f' "$hub_cpu") PostgreSQL CPU seconds per million readings (keys, samples, commits)"
echo "FIGURE pg_two_nodes_cpu_efficiency_vs_bare_copy=$(printf '%.2f' "$(echo "$copy_cpu / $hub_cpu" | bc -l)")x (bare COPY's PostgreSQL CPU per row / the nodes')"
echo "FIGURE pg_two_nodes_cpu_efficiency_vs_bare_copy_with_keys=$(printf '%.2f' "$(echo "$keyed_cpu / $hub_cpu" | bc -l)")x"
stored=$(psql -d fleet -tAc 'SELECT count(*) FROM samples')
echo "FIGURE pg_two_nodes_stored=$stored samples"
echo "FIGURE pg_two_nodes_vs_bare_copy=$(printf '%.2f' "$(echo "$pg_rate / $copy_rate" | bc -l)")x"
echo "FIGURE pg_two_nodes_vs_bare_copy_with_keys=$(printf '%.2f' "$(echo "$pg_rate / $keyed_rate" | bc -l)")x"
# The million rows just written are vacuumed now, as autovacuum soon would, so that its pass
# does not fall inside the latency phase (nor the SQLite node's, which runs with PostgreSQL
# stopped).
psql -d fleet -qc 'VACUUM ANALYZE'
latency pg_two_nodes "$a" "$b"
kill "$a_pid" "$b_pid"; wait "$a_pid" "$b_pid" 2>/dev/null || true
$as "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null

start_node s "$work/hub.db"; s=$ep; s_pid=$node_pid
throughput sqlite_one_node "$s"
kill "$s_pid"; wait "$s_pid" 2>/dev/null || true
rm -f "$work"/hub.db*
start_node s "$work/hub.db"; s=$ep; s_pid=$node_pid
latency sqlite_one_node "$s"
kill "$s_pid"; wait "$s_pid" 2>/dev/null || true
