#!/usr/bin/env bash
# socketeer vs the minimal tokio echo in alternating pairs: for each grid point, ROUNDS pairs
# of SECS-second runs (same client; socketeer first in odd pairs, tokio first in even ones),
# and the median of the per-pair ratios. On a noisy 2-core machine a pair shares its moment's
# noise, so the median ratio is steadier than one grid run's (bench/grid.sh). Loopback only; bounded: points x ROUNDS x 2 x
# (SECS + 1) seconds.
#
#   bench/pair.sh                          # ROUNDS=5 SECS=3, the six request/response points
#   ROUNDS=3 POINTS="50x4096" bench/pair.sh
#   SERVER_BIN=/tmp/socketeer-old bench/pair.sh   # another build of the server, same client
#   SERVER_ARGS="--threads 2" bench/pair.sh        # the server with more options
#   VS_BIN=/tmp/socketeer-old bench/pair.sh       # against another build of socketeer instead
#                                                 # of the tokio echo (before/after a change)
#   CLIENT_ARGS="--threads 2" bench/pair.sh       # the client on two threads, a runtime each
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-3}
POINTS=${POINTS:-"1x64 50x64 1000x64 1x4096 50x4096 1000x4096"}
source bench/lib.sh
ep_socketeer=$(start socketeer "${SERVER_BIN:-$BIN}" -q serve echo --listen 127.0.0.1:0 --max-conns 5000 ${SERVER_ARGS:-})
if [ -n "${VS_BIN:-}" ]; then
  other=other
  ep_tokio=$(start other "$VS_BIN" -q serve echo --listen 127.0.0.1:0 --max-conns 5000 ${SERVER_ARGS:-})
else
  other=tokio
  ep_tokio=$(start tokio "$BASE" 127.0.0.1:0)
fi

run() { # endpoint connections size -> "round_trips_per_sec p99_us"
  timeout $((SECS + 30)) "$BIN" -q bench "$1" -c "$2" -s "$3" -d "$SECS" --warmup 1 --json ${CLIENT_ARGS:-} |
    python3 -c 'import json,sys; d = json.load(sys.stdin); print(d["round_trips_per_sec"], d["p99_us"])'
}
for point in $POINTS; do
  c=${point%x*}; s=${point#*x}
  pairs=()
  for round in $(seq "$ROUNDS"); do
    # Each server goes first in every other pair: whatever running first or second does
    # (a warm cache, the other's leftovers) falls on both alike.
    if ((round % 2)); then
      a=$(run "$ep_socketeer" "$c" "$s")
      b=$(run "$ep_tokio" "$c" "$s")
      first=socketeer
    else
      b=$(run "$ep_tokio" "$c" "$s")
      a=$(run "$ep_socketeer" "$c" "$s")
      first=$other
    fi
    pairs+=("${a// /,},${b// /,}")
    echo "pair $point socketeer=$a $other=$b (round trips/s, p99 us; $first first)" >&2
  done
  python3 - "$point" "$other" "${pairs[@]}" <<'PY'
import statistics, sys
point, other = sys.argv[1], sys.argv[2]
pairs = [[float(x) for x in p.split(",")] for p in sys.argv[3:]]
rate = [a / b for a, _, b, _ in pairs]
p99 = [ap / bp for _, ap, _, bp in pairs]
print(f"FIGURE pair_socketeer_to_{other}_{point}={statistics.median(rate):.2f} "
      f"(median of {len(rate)} pairs; min {min(rate):.2f}, max {max(rate):.2f}; "
      f"p99 socketeer/{other} median {statistics.median(p99):.2f})")
PY
done
