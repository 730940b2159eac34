#!/usr/bin/env bash
# The io_uring question (issue 25, part 5), side by side in one run: the minimal echo on
# io_uring (bench/uring-echo, monoio, a thread per core), the minimal tokio echo
# (baseline_tokio_echo), `socketeer serve echo` (default runtime) and `socketeer serve echo
# --threads` (a current-thread runtime per core), loaded by the same client
# (`socketeer bench`) at 1, 50 and 1000 connections x 64 B and 4 KiB. Each round runs the four
# servers in a rotated order; the figures are medians over rounds, as ratios to tokio.
#
#   bench/uring.sh                          # ROUNDS=3 SECS=3, six points
#   ROUNDS=5 POINTS="1000x64" bench/uring.sh
#
# Loopback only; bounded: points x ROUNDS x 4 x (SECS + 1) seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
POINTS=${POINTS:-"1x64 50x64 1000x64 1x4096 50x4096 1000x4096"}
source bench/lib.sh
cargo build --release -q --manifest-path bench/uring-echo/Cargo.toml
URING=$PWD/bench/uring-echo/target/release/uring-echo

declare -A ep
ep[uring]=$(start uring "$URING" 127.0.0.1:0)
ep[tokio]=$(start tokio "$BASE" 127.0.0.1:0)
ep[socketeer]=$(start socketeer "$BIN" -q serve echo --listen 127.0.0.1:0 --max-conns 5000)
ep[threads]=$(start threads "$BIN" -q serve echo --threads 2 --listen 127.0.0.1:0 --max-conns 5000)
for s in uring tokio socketeer threads; do
  [ -n "${ep[$s]}" ] || { echo "$s did not start: $(cat "$work/$s.err")"; exit 1; }
done
echo "uring-echo ${ep[uring]}, tokio ${ep[tokio]}, socketeer ${ep[socketeer]}, socketeer --threads ${ep[threads]}"

run() { # endpoint connections size -> "round_trips_per_sec p99_us"
  timeout $((SECS + 30)) "$BIN" -q bench "$1" -c "$2" -s "$3" -d "$SECS" --warmup 1 --json |
    python3 -c 'import json,sys; d = json.load(sys.stdin); print(d["round_trips_per_sec"], d["p99_us"])'
}
servers=(uring tokio socketeer threads)
: >"$work/results"
for point in $POINTS; do
  c=${point%x*}; s=${point#*x}
  for round in $(seq "$ROUNDS"); do
    for k in 0 1 2 3; do
      who=${servers[$(( (k + round) % 4 ))]}
      read -r rps p99 < <(run "${ep[$who]}" "$c" "$s")
      echo "$point $who $rps $p99" >>"$work/results"
      echo "  $point round $round $who: $rps round trips/s, p99 $p99 us" >&2
    done
  done
done
python3 - "$work/results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    point, who, rps, p99 = line.split()
    runs.setdefault(point, {}).setdefault(who, []).append((float(rps), float(p99)))
print(f"\n{'point':<10} {'server':<20} {'round trips/s':>14} {'p99 us':>9} {'vs tokio':>9} {'p99 vs tokio':>13}   (medians)")
names = {"uring": "io_uring (monoio)", "tokio": "tokio", "socketeer": "socketeer", "threads": "socketeer --threads"}
for point, by in runs.items():
    med = {w: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for w, v in by.items()}
    t_rps, t_p99 = med["tokio"]
    for w in ("uring", "tokio", "socketeer", "threads"):
        rps, p99 = med[w]
        print(f"{point:<10} {names[w]:<20} {rps:>14.0f} {p99:>9.0f} {rps / t_rps:>8.2f}x {p99 / t_p99:>12.2f}x")
        tag = {"uring": "uring", "socketeer": "socketeer", "threads": "threads"}.get(w)
        if tag:
            print(f"FIGURE {tag}_to_tokio_{point}={rps / t_rps:.2f} (p99 {p99 / t_p99:.2f})")
PY
