#!/usr/bin/env bash
# File transfer over loopback, side by side in one run: socketeer put/get (BLAKE3-verified, into
# a real file, synced) against nc and `socat -b 1048576` piping the same file into a file.
#
#   scripts/bench-files.sh              # 1 GiB, 3 rounds
#   SIZE_MB=256 ROUNDS=5 scripts/bench-files.sh
#   DIR=/dev/shm scripts/bench-files.sh     # files in memory: the transfer path alone, no disk
#   SOCKETEER_BIN=/tmp/other scripts/bench-files.sh   # another build of socketeer
#
# Prints GB/s for each run and the medians. Bounded: ROUNDS x 4 transfers, 127.0.0.1 only.
# Note: socketeer syncs the file (fsync) before reporting success; nc and socat do not.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
cargo build --release -q -p socketeer-cli --bin socketeer
BIN=${SOCKETEER_BIN:-$PWD/target/release/socketeer}
DIR=${DIR:-/var/tmp}
work=$(mktemp -d "$DIR/socketeer-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/root" "$work/down"
head -c "$((SIZE_MB << 20))" /dev/urandom > "$work/in.bin"
bytes=$(stat -c %s "$work/in.bin")

"$BIN" -q serve files --root "$work/root" --listen 127.0.0.1:0 --max-upload 64GiB > "$work/server.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/server.out" && break; sleep 0.05; done
EP=$(awk '/listening on/ {print $3}' "$work/server.out")

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$bytes / ($2 - $1) / 1e9:.2f}')"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A results
run() { # name: times one transfer, appends GB/s
  local name=$1 t0 t1
  t0=$(now); "${@:2}"; t1=$(now)
  local r; r=$(rate "$t0" "$t1"); results[$name]+="$r "
  printf '%-26s %s GB/s\n' "$name" "$r"
}
pipe_pair() { # listener-cmd sender-cmd (both shell strings); port substituted for PORT
  local port; port=$(free_port)
  bash -c "${1//PORT/$port}" & local l=$!
  for _ in $(seq 100); do ss -ltn | grep -q ":$port " && break; sleep 0.02; done
  bash -c "${2//PORT/$port}"
  wait "$l"
}
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  rm -f "$work/root/in.bin" "$work/down/out.bin" "$work/nc.out" "$work/socat.out"
  run "socketeer put" "$BIN" put "$EP" "$work/in.bin" in.bin
  run "socketeer get" "$BIN" get "$EP" in.bin "$work/down/out.bin"
  cmp -s "$work/in.bin" "$work/down/out.bin" || { echo "get: content differs"; exit 1; }
  run "nc" pipe_pair "nc -l 127.0.0.1 PORT > $work/nc.out" "nc -N 127.0.0.1 PORT < $work/in.bin"
  run "socat -b 1048576" pipe_pair \
    "socat -b 1048576 -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr CREATE:$work/socat.out" \
    "socat -b 1048576 -u OPEN:$work/in.bin TCP:127.0.0.1:PORT"
done
echo
echo "medians over $ROUNDS rounds ($SIZE_MB MiB):"
for name in "socketeer put" "socketeer get" "nc" "socat -b 1048576"; do
  m=$(echo "${results[$name]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '  %-22s %s GB/s\n' "$name" "$m"
done
