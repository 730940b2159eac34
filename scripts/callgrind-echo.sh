#!/usr/bin/env bash
# User-space instructions per echo round trip, counted by callgrind: repeatable where wall-clock
# figures are noisy. Runs `socketeer serve echo` and the tokio baseline under callgrind in turn,
# drives each with `socketeer bench` (50 connections, 64-byte messages, 4 s), and divides.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }
cargo build --release -q -p socketeer-cli --bin socketeer
cargo build --release -q -p socketeer --example baseline_tokio_echo
BIN=target/release/socketeer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

measure() { # name command...
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.cg" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  local pid=$!
  for _ in $(seq 200); do grep -q "listening on" "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  local ep; ep=$(sed -n 's/^listening on //p' "$work/$name.out" | head -1)
  local rts; rts=$("$BIN" -q bench "$ep" -c 50 -s 64 -d 4 --warmup 0 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["round_trips"])')
  callgrind_control -d "$pid" >/dev/null
  for _ in $(seq 100); do ls "$work/$name.cg".* >/dev/null 2>&1 && break; sleep 0.05; done
  sleep 0.5
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local ir; ir=$(callgrind_annotate "$work/$name.cg".* 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  echo "$name $rts $ir"
}

ours=$(measure socketeer "$BIN" -q serve echo --listen 127.0.0.1:0)
base=$(measure tokio target/release/examples/baseline_tokio_echo 127.0.0.1:0)
python3 - "$ours" "$base" <<'PY'
import sys
rows = [a.split() for a in sys.argv[1:]]
per = {}
for name, rts, ir in rows:
    per[name] = int(ir) / int(rts)
    print(f"{name:<10} {int(rts):>8} round trips  {int(ir):>13,} instructions  {per[name]:>7.0f} per round trip")
print(f"\nsocketeer / tokio instructions per round trip: {per['socketeer'] / per['tokio']:.2f}")
PY
