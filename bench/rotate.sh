#!/usr/bin/env bash
# Several echo servers in one rotation, the first the reference: each round runs the same
# client once against every server, each server first in turn, and prints per server the
# median over rounds of its p99 / the reference's p99 in the same round (and the same for
# round trips/s). For an effect of 0.1 on a noisy 2-core machine, where pairs of two are not
# enough. Loopback only; bounded: ROUNDS x servers x (SECS + 2) seconds.
#
#   VARIANTS="name|ENV=value ...|command args; ..."   a server per entry; it must print
#                                                     "listening on ENDPOINT"
#   bench/rotate.sh                        # the tokio echo, `serve echo`, `serve echo --threads 2`
#   ROUNDS=16 VARIANTS="tokio||$PWD/target/release/examples/baseline_tokio_echo 127.0.0.1:0;\
#   new||/tmp/socketeer-new -q serve echo --listen 127.0.0.1:0 --max-conns 5000" bench/rotate.sh
#   C=50 S=4096 bench/rotate.sh            # another grid point (connections, message bytes)
#   CLIENT_ARGS="--threads 2" bench/rotate.sh  # the client on two threads, a runtime each
#   BUSY=1 bench/rotate.sh                 # the tokio echo, the same spending 100/200/400 ns more
#                                          # per message (baseline_busy_echo), `serve echo`
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-8}
SECS=${SECS:-3}
C=${C:-1000}
S=${S:-64}
source bench/lib.sh
serve="$BIN -q serve echo --listen 127.0.0.1:0 --max-conns 5000"
if [ -n "${BUSY:-}" ]; then
  cargo build --release -q -p socketeer --example baseline_busy_echo
  busy=$PWD/target/release/examples/baseline_busy_echo
  VARIANTS=${VARIANTS:-"tokio||$BASE 127.0.0.1:0;busy0|SPIN_NS=0|$busy 127.0.0.1:0;\
busy100|SPIN_NS=100|$busy 127.0.0.1:0;busy200|SPIN_NS=200|$busy 127.0.0.1:0;\
busy400|SPIN_NS=400|$busy 127.0.0.1:0;socketeer||$serve"}
fi
VARIANTS=${VARIANTS:-"tokio||$BASE 127.0.0.1:0;socketeer||$serve;threads||$serve --threads 2"}
IFS=';' read -ra entries <<<"$VARIANTS"
names=() endpoints=()
for entry in "${entries[@]}"; do
  IFS='|' read -r name envs command <<<"$entry"
  name=$(echo "$name" | tr -d ' ')
  # (word splitting of the entry's command and environment is wanted here)
  # shellcheck disable=SC2086
  endpoint=$(start "$name" env $envs $command)
  [ -n "$endpoint" ] || { echo "rotate.sh: $name did not say where it listens" >&2; exit 1; }
  names+=("$name") endpoints+=("$endpoint")
done
n=${#names[@]}
for round in $(seq "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    i=$(((k + round) % n))
    result=$(timeout $((SECS + 30)) "$BIN" -q bench "${endpoints[$i]}" -c "$C" -s "$S" -d "$SECS" --warmup 1 --json ${CLIENT_ARGS:-} |
      python3 -c 'import json,sys; d = json.load(sys.stdin); print(d["round_trips_per_sec"], d["p99_us"])')
    echo "$round ${names[$i]} $result" | tee -a "$work/rounds" >&2
  done
done
python3 - "$work/rounds" "$C" "$S" "${names[@]}" <<'PY'
import collections, statistics, sys
path, c, s, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rounds = collections.defaultdict(dict)
for line in open(path):
    r, name, rate, p99 = line.split()
    rounds[r][name] = (float(rate), float(p99))
ref = names[0]
for name in names[1:]:
    p99 = [v[name][1] / v[ref][1] for v in rounds.values()]
    rate = [v[name][0] / v[ref][0] for v in rounds.values()]
    print(f"FIGURE rotate_{name}_to_{ref}_{c}x{s} p99 median {statistics.median(p99):.2f} "
          f"(above 1 in {sum(x > 1 for x in p99)} of {len(p99)} rounds; "
          f"{name} {statistics.median(v[name][1] for v in rounds.values()) / 1e3:.1f} ms, "
          f"{ref} {statistics.median(v[ref][1] for v in rounds.values()) / 1e3:.1f} ms), "
          f"round trips/s {statistics.median(rate):.2f}")
PY
