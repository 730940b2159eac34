#!/usr/bin/env bash
# Chat fan-out, side by side in one run: `socketeer serve chat` against `ncat --broker`, loaded
# by the same client (`socketeer bench --fanout`): CONNS connections all reading, SENDERS of
# them sending lines as fast as the broker takes them; the figure is lines delivered per second
# over all connections. Alternates which broker goes first each round.
#
#   scripts/bench-chat.sh                 # 100 connections, 10 senders, 3 rounds of 5 s
#   CONNS=100 SENDERS=1 SECS=5 ROUNDS=3 scripts/bench-chat.sh
#   STALLED=1 scripts/bench-chat.sh      # plus one client that never reads
#   RATES="0 50000 150000" scripts/bench-chat.sh   # lines/s offered; 0 = as fast as taken
#   PIN=0 scripts/bench-chat.sh          # no CPU pinning
#   CHAT_ARGS="--coalesce 0" scripts/bench-chat.sh   # more `serve chat` options (here: every
#                                        # burst written at once, as before --coalesce)
#
# At a fixed offered rate both brokers deliver the same lines, so their CPU time compares what
# each spends per line; at rate 0 the load client takes a whole core and both brokers another.
#
# Broker cost is separated from client cost: both brokers run on core BROKER_CPU (0) and the
# load client on core CLIENT_CPU (1), so neither broker competes with the client for a core, and
# "lines per broker core-second" is the broker's CPU time alone (PIN=1 needs two cores).
#
# Bounded: ROUNDS x 2 runs of SECS seconds plus a one-second warm-up each, on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-100}
SENDERS=${SENDERS:-10}
STALLED=${STALLED:-0}   # extra connections that never read (a client on a dead link)
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
RATES=${RATES:-0 50000 150000}
PIN=${PIN:-1}
read -r -a chat_args <<<"${CHAT_ARGS:-}"
BROKER_CPU=${BROKER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  on_broker=(taskset -c "$BROKER_CPU"); on_client=(taskset -c "$CLIENT_CPU")
else
  on_broker=(); on_client=()
fi
command -v ncat >/dev/null || { echo "needs ncat (apt-get install ncat)"; exit 1; }

cargo build --release -q -p socketeer-cli --bin socketeer
BIN=target/release/socketeer
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# socketeer: no per-client rate limit (the default 50 lines/s is for people, not benchmarks).
"${on_broker[@]}" "$BIN" -q serve chat --rate 0 "${chat_args[@]}" --listen 127.0.0.1:0 >"$work/chat.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/chat.out" && break; sleep 0.05; done
ours=$(sed -n 's/^listening on //p' "$work/chat.out" | head -1)
ours_pid=${pids[0]}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${on_broker[@]}" ncat --broker --listen 127.0.0.1 "$port" --max-conns $((CONNS + STALLED + 10)) >"$work/ncat.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
theirs="tcp://127.0.0.1:$port"
theirs_pid=${pids[1]}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # user+system clock ticks
echo "socketeer chat${CHAT_ARGS:+ ($CHAT_ARGS)}: $ours   ncat --broker: $theirs   ($CONNS connections, $SENDERS sending, $STALLED stalled, ${SECS}s x $ROUNDS rounds)"
[ ${#on_broker[@]} -gt 0 ] && echo "brokers on core $BROKER_CPU, the load client on core $CLIENT_CPU"

: >"$work/results"
for rate in $RATES; do
  rate_arg=()
  [ "$rate" != 0 ] && rate_arg=(--rate "$rate")
  for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="socketeer ncat"; else order="ncat socketeer"; fi
    for who in $order; do
      ep=$ours; pid=$ours_pid
      [ "$who" = ncat ] && { ep=$theirs; pid=$theirs_pid; }
      before=$(cpu "$pid")
      json=$("${on_client[@]}" "$BIN" -q bench "$ep" -c "$CONNS" --fanout "$SENDERS" --stalled "$STALLED" -d "$SECS" --warmup 1 "${rate_arg[@]}" --json) ||
        { echo "  ($who did not accept the benchmark's connections: counted as 0)"; json='{"lines_delivered_per_sec":0,"failed_connections":0}'; }
      ticks=$(( $(cpu "$pid") - before ))
      echo "$rate $who $ticks $json" >>"$work/results"
      echo "offered ${rate/#0/max} round $round $who: $json"
    done
  done
done

python3 - "$work/results" "$(getconf CLK_TCK)" "$SECS" <<'PY'
import json, statistics, sys
tck, secs = int(sys.argv[2]), float(sys.argv[3])
runs = {}
for line in open(sys.argv[1]):
    rate, who, ticks, js = line.split(" ", 3)
    r = json.loads(js)
    r["cores"] = int(ticks) / tck / (secs + 1.05)   # the broker's CPU over warm-up + run
    runs.setdefault(int(rate), {}).setdefault(who, []).append(r)
print()
print(f"{'offered lines/s':>16} {'broker':<10} {'delivered/s':>12} {'broker cores':>13} {'lines/core-s':>13} {'dropped':>8}   (medians)")
for rate, by in runs.items():
    med = {w: statistics.median(r["lines_delivered_per_sec"] for r in rs) for w, rs in by.items()}
    cores = {w: statistics.median(r["cores"] for r in rs) for w, rs in by.items()}
    failed = {w: sum(r["failed_connections"] for r in rs) for w, rs in by.items()}
    per_core = {w: (med[w] / cores[w] if cores[w] > 0 else 0) for w in by}
    for w in ("socketeer", "ncat"):
        offered = f"{rate:,}" if rate else "max"
        print(f"{offered:>16} {w:<10} {med[w]:>12.0f} {cores[w]:>13.2f} {per_core[w]:>13.0f} {failed[w]:>8}")
    if med["ncat"] > 0 and per_core["ncat"] > 0:
        print(f"{'':>16} socketeer / ncat: {med['socketeer'] / med['ncat']:.2f}x lines delivered/s, "
              f"{per_core['socketeer'] / per_core['ncat']:.2f}x lines per broker core-second")
    else:
        print(f"{'':>16} ncat delivered nothing: its broker blocks on the client that does not read")
PY
