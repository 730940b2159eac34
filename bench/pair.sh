#!/usr/bin/env bash
# socketeer vs the minimal tokio echo in alternating pairs: for each grid point, ROUNDS pairs
# of SECS-second runs (socketeer, then tokio, same client), and the median of the per-pair
# ratios. On a noisy 2-core machine a pair shares its moment's noise, so the median ratio is
# steadier than one grid run's (bench/grid.sh). Loopback only; bounded: points x ROUNDS x 2 x
# (SECS + 1) seconds.
#
#   bench/pair.sh                          # ROUNDS=5 SECS=3, the six request/response points
#   ROUNDS=3 POINTS="50x4096" bench/pair.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-3}
POINTS=${POINTS:-"1x64 50x64 1000x64 1x4096 50x4096 1000x4096"}
cargo build --release -q -p socketeer-cli --bin socketeer
cargo build --release -q -p socketeer --example baseline_tokio_echo
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
BIN=target/release/socketeer
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start() { # name command...
  local name=$1; shift
  "$@" >"$work/$name.out" 2>/dev/null &
  pids+=("$!")
  for _ in $(seq 100); do grep -q "listening on" "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
}
start socketeer "$BIN" -q serve echo --listen 127.0.0.1:0 --max-conns 5000
start tokio target/release/examples/baseline_tokio_echo 127.0.0.1:0
ep_socketeer=$(sed -n 's/^listening on //p' "$work/socketeer.out" | head -1)
ep_tokio=$(sed -n 's/^listening on //p' "$work/tokio.out" | head -1)

rate() { # endpoint connections size
  timeout $((SECS + 30)) "$BIN" -q bench "$1" -c "$2" -s "$3" -d "$SECS" --warmup 1 --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["round_trips_per_sec"])'
}
for point in $POINTS; do
  c=${point%x*}; s=${point#*x}
  ratios=()
  for _ in $(seq "$ROUNDS"); do
    a=$(rate "$ep_socketeer" "$c" "$s")
    b=$(rate "$ep_tokio" "$c" "$s")
    ratios+=("$(python3 -c "print($a / $b)")")
    echo "pair $point socketeer=$a tokio=$b" >&2
  done
  python3 - "$point" "${ratios[@]}" <<'PY'
import statistics, sys
point, ratios = sys.argv[1], [float(r) for r in sys.argv[2:]]
print(f"FIGURE pair_socketeer_to_tokio_{point}={statistics.median(ratios):.2f} "
      f"(median of {len(ratios)} pairs; min {min(ratios):.2f}, max {max(ratios):.2f})")
PY
done
