#!/usr/bin/env bash
# Echo over Unix stream sockets, UDP and Unix datagram sockets (issue 25, part 4): `socketeer
# serve echo` beside a bare tokio server of the same kind (the baseline_tokio_echo example) and
# socat, loaded by the same client (`socketeer bench`) in one run, as ratios. Round trips/s of
# 64 B and 4 KiB messages with 1 and 50 clients (sockets), and bulk MB/s over Unix streams.
# Every server runs on core 0 and the client on core 1 (taskset): unpinned, a single client's
# round trip on this 2-core machine swings 3-10x with where the scheduler puts the two ends.
# Usage: bench/sockets.sh   (SECS= per point, 3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SECS=${SECS:-3}
command -v socat >/dev/null || { echo "socat is needed (apt-get install socat)" >&2; exit 1; }

rate() { # endpoint clients size -> round trips/s
  taskset -c 1 "$BIN" bench "$1" -c "$2" -s "$3" -d "$SECS" --warmup 0.5 --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r["round_trips_per_sec"]), r.get("lost_datagrams", 0))'
}
bulk() { # endpoint -> MB/s
  taskset -c 1 "$BIN" bench "$1" --bulk -c 4 -s 65536 -d "$SECS" --warmup 0.5 --json |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["mb_per_sec"]))'
}

echo "machine: $(nproc) cores, $(uname -r); $SECS s per point"
for kind in unix udp unixgram; do
  case $kind in
    unix)     ours="unix://$work/ours.sock"; base="unix://$work/base.sock"
              socat_ep="unix://$work/socat.sock"; socat_args=("UNIX-LISTEN:$work/socat.sock,fork,backlog=256" PIPE) ;;
    udp)      ours="udp://127.0.0.1:0"; base="udp://127.0.0.1:0"
              port=$(python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
              socat_ep="udp://127.0.0.1:$port"; socat_args=("UDP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" PIPE) ;;
    unixgram) ours="unixgram://$work/ours.dgram"; base="unixgram://$work/base.dgram"
              socat_ep="unixgram://$work/socat.dgram"; socat_args=("UNIX-RECVFROM:$work/socat.dgram,fork" PIPE) ;;
  esac
  ep_ours=$(start "ours-$kind" taskset -c 0 "$BIN" -q serve echo --listen "$ours" --max-line 65536)
  ep_base=$(start "base-$kind" taskset -c 0 "$BASE" "$base")
  taskset -c 0 socat "${socat_args[@]}" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do
    case $kind in udp) break ;; *) [ -S "${socat_ep#*://}" ] && break ;; esac
    sleep 0.05
  done
  for clients in 1 50; do
    for size in 64 4096; do
      read -r o lo < <(rate "$ep_ours" "$clients" "$size")
      read -r b lb < <(rate "$ep_base" "$clients" "$size")
      if [ "$kind" = udp ] && [ "$clients" -gt 1 ]; then
        s="-"; ls="-"   # socat's UDP-LISTEN,fork serves one peer per child: not comparable
      else
        read -r s ls < <(rate "$socat_ep" "$clients" "$size")
      fi
      ratio_b=$(python3 -c "print(f'{$o / $b:.2f}')")
      ratio_s=$( [ "$s" = "-" ] && echo "-" || python3 -c "print(f'{$o / max($s, 1):.2f}')")
      echo "FIGURE ${kind}_${clients}x${size} socketeer=$o tokio=$b socat=$s rt/s  socketeer/tokio=${ratio_b} socketeer/socat=${ratio_s}  lost=$lo/$lb/$ls"
    done
  done
  if [ "$kind" = unix ]; then
    # (socat's PIPE echo stalls under a client that writes while it reads: not measured.)
    o=$(bulk "$ep_ours"); b=$(bulk "$ep_base")
    echo "FIGURE unix_bulk socketeer=$o tokio=$b MB/s  socketeer/tokio=$(python3 -c "print(f'{$o / $b:.2f}')")"
  fi
done
