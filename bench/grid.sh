#!/usr/bin/env bash
# The echo grid, side by side in one run: `socketeer serve echo` and the anchors users compare
# it with — a minimal tokio echo (crates/socketeer/examples/baseline_tokio_echo.rs), Python's
# socketserver.ThreadingTCPServer and asyncio echo (bench/anchors/), socat (fork + PIPE) and
# ncat (--sh-exec cat) — all loaded by the same client (`socketeer bench`) on 127.0.0.1:
# 1, 50 and 1000 connections x 64 B and 4 KiB request/response, plus bulk (1 connection,
# 64 KiB writes). Each point runs every server in turn (the order rotating per point).
#
#   bench/grid.sh                       # SECS=3 per run, all servers
#   SECS=5 SERVERS="socketeer tokio" bench/grid.sh
#
# Prints one FIGURE line per run and a table of ratios to tokio; writes the raw results to
# bench/results/grid.jsonl and, if python3 has matplotlib, bench/results/grid.png.
# Bounded: servers x 7 points x (SECS + 1 s warm-up); loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-3}
SERVERS=${SERVERS:-"socketeer tokio threading asyncio socat ncat"}
POINTS=${POINTS:-"1x64 50x64 1000x64 1x4096 50x4096 1000x4096 bulk"}

source bench/lib.sh
mkdir -p bench/results
out=bench/results/grid.jsonl
: >"$out"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name: starts that server, prints its endpoint
  local name=$1 port
  case $name in
    socketeer) "$BIN" -q serve echo --listen 127.0.0.1:0 --max-conns 20000 >"$work/$name.out" 2>"$work/$name.err" & ;;
    tokio) target/release/examples/baseline_tokio_echo 127.0.0.1:0 >"$work/$name.out" 2>"$work/$name.err" & ;;
    threading) python3 bench/anchors/threading_echo.py >"$work/$name.out" 2>"$work/$name.err" & ;;
    asyncio) python3 bench/anchors/asyncio_echo.py >"$work/$name.out" 2>"$work/$name.err" & ;;
    socat)
      port=$(free_port)
      socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,backlog=1024" PIPE >/dev/null 2>"$work/$name.err" &
      echo "listening on tcp://127.0.0.1:$port" >"$work/$name.out" ;;
    ncat)
      port=$(free_port)
      ncat -l 127.0.0.1 "$port" -k --max-conns 2000 --sh-exec cat >/dev/null 2>"$work/$name.err" &
      echo "listening on tcp://127.0.0.1:$port" >"$work/$name.out" ;;
  esac
  echo $! >"$work/$name.pid" # read by the caller: this runs in a command substitution
  for _ in $(seq 100); do grep -q "listening on" "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  local ep
  ep=$(sed -n 's/^listening on //p' "$work/$name.out" | head -1)
  # socat and ncat print nothing: wait until the port answers.
  for _ in $(seq 100); do "$BIN" -q bench "$ep" -c 1 -d 0.05 --warmup 0 >/dev/null 2>&1 && break; sleep 0.05; done
  echo "$ep"
}

declare -A eps
for s in $SERVERS; do
  if [ "$s" = socat ] && ! command -v socat >/dev/null; then echo "note: socat not installed; skipped"; continue; fi
  if [ "$s" = ncat ] && ! command -v ncat >/dev/null; then echo "note: ncat not installed; skipped"; continue; fi
  eps[$s]=$(start "$s")
  pids+=("$(cat "$work/$s.pid")")
  echo "$s: ${eps[$s]}"
done
echo "machine: $(nproc) cores, $(uname -r); ${SECS} s per run after a 1 s warm-up"

turn=0
for point in $POINTS; do
  names=("${!eps[@]}")
  # Rotate who goes first, so no server always runs on a cooler (or hotter) machine.
  n=${#names[@]}
  for i in $(seq 0 $((n - 1))); do
    s=${names[$(((i + turn) % n))]}
    if [ "$point" = bulk ]; then
      args=(--bulk -c 1 -s 65536)
    else
      args=(-c "${point%x*}" -s "${point#*x}")
    fi
    if json=$(timeout $((SECS + 60)) "$BIN" -q bench "${eps[$s]}" "${args[@]}" -d "$SECS" --warmup 1 --json 2>"$work/bench.err"); then
      echo "{\"server\":\"$s\",\"point\":\"$point\",\"result\":$json}" >>"$out"
      echo "FIGURE grid $point $s $json"
    else
      echo "{\"server\":\"$s\",\"point\":\"$point\",\"failed\":\"$(tr -d '"\n' <"$work/bench.err" | head -c 200)\"}" >>"$out"
      echo "FIGURE grid $point $s failed: $(head -c 200 "$work/bench.err")"
    fi
  done
  turn=$((turn + 1))
done

python3 bench/grid-report.py "$out"
