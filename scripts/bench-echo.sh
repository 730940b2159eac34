#!/usr/bin/env bash
# Echo throughput, side by side in one run: `socketeer serve echo` against a minimal tokio
# echo server (crates/socketeer/examples/baseline_tokio_echo.rs), loaded by the same client
# (`socketeer bench`) with the same settings, alternating which goes first each round.
#
#   scripts/bench-echo.sh                 # 50 connections, 64-byte messages, 3 rounds of 5 s
#   CONNS=100 SIZE=1024 SECS=10 ROUNDS=5 scripts/bench-echo.sh
#
# Prints each run and the ratio of medians (socketeer / tokio). Bounded: ROUNDS x 2 runs of
# SECS seconds plus a one-second warm-up each, on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-50}
SIZE=${SIZE:-64}
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}

source bench/lib.sh

ours=$(start socketeer "$BIN" -q serve echo --listen 127.0.0.1:0)
base=$(start tokio "$BASE" 127.0.0.1:0)
echo "socketeer: $ours   tokio baseline: $base   ($CONNS conns, $SIZE-byte messages, ${SECS}s x $ROUNDS rounds)"

: >"$work/results"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="socketeer tokio"; else order="tokio socketeer"; fi
  for who in $order; do
    ep=$ours; [ "$who" = tokio ] && ep=$base
    json=$("$BIN" -q bench "$ep" -c "$CONNS" -s "$SIZE" -d "$SECS" --warmup 1 --json)
    echo "$who $json" >>"$work/results"
    echo "round $round $who: $json"
  done
done

python3 - "$work/results" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    runs.setdefault(who, []).append(json.loads(js))
med = {w: {k: statistics.median(r[k] for r in rs) for k in ("round_trips_per_sec", "p50_us", "p99_us")} for w, rs in runs.items()}
print()
print(f"{'server':<10} {'round trips/s':>14} {'p50 us':>8} {'p99 us':>8}   (medians)")
for w in ("socketeer", "tokio"):
    m = med[w]
    print(f"{w:<10} {m['round_trips_per_sec']:>14.0f} {m['p50_us']:>8.1f} {m['p99_us']:>8.1f}")
ratio = med["socketeer"]["round_trips_per_sec"] / med["tokio"]["round_trips_per_sec"]
print(f"\nsocketeer / tokio round trips/s: {ratio:.3f}")
PY
