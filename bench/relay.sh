#!/usr/bin/env bash
# Relays side by side (issue 26): `socketeer relay`, `socat -b 1048576 TCP-LISTEN:…,fork TCP:…`
# and `ncat -l -k --sh-exec "ncat …"`, each in front of the same echo server (the bare tokio
# echo), loaded by the same client (`socketeer bench`) in one run. Every relay runs on core 0,
# the echo and the client on core 1 (taskset), so the relay's own cost decides. Points: round
# trips/s of 64 B messages through to an echo, and one-way bulk MB/s (64 KiB writes, `bench
# --upload`) through to a sink that discards, with 1 and 100 connections;
# then TLS termination (socketeer relay --tls-cert vs socat OPENSSL-LISTEN vs ncat --ssl) at
# the same points. Each point is run ROUNDS times, the relays in a rotating order; the FIGURE
# lines give the medians and the ratios socketeer/socat and socketeer/ncat, and each relay's
# own CPU time per GB or per round trip (its processes' clock ticks over the run).
# Bulk points also measure the client straight into the sink (no relay): pinned, the ceiling.
# Usage: bench/relay.sh   (SECS= per run, 3; ROUNDS= 3; POINTS= "rt1 rt100 up1 up100")
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SECS=${SECS:-3}
ROUNDS=${ROUNDS:-3}
POINTS=${POINTS:-"rt1 rt100 up1 up100"}
# PIN=0: no taskset (everything shares both cores, as on a busy robot computer).
if [ "${PIN:-1}" = 0 ]; then pin0=(); pin1=(); else pin0=(taskset -c 0); pin1=(taskset -c 1); fi
for tool in socat ncat; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install ${tool/ncat/ncat})" >&2; exit 1; }
done

free_port() {
  python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}
wait_port() { # endpoint: until a connection is echoed
  for _ in $(seq 100); do
    "$BIN" -q bench "$@" -c 1 -d 0.05 --warmup 0 >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "nothing answers at $1" >&2
  return 1
}
# socat and ncat fork a process (ncat two) per connection, which can outlive the listener:
# each runs in a process group of its own, and the whole group is ended on exit.
groups=()
declare -A group
background() { # name command...
  local name=$1; shift
  setsid "$@" >/dev/null 2>"$work/$name.err" &
  groups+=($!)
  group[$name]=$!
}
reap() { # name: after a run, end the per-connection processes still left (stuck ones)
  local g=${group[$1]:-} p
  [ -n "$g" ] || return 0
  for p in $(pgrep -g "$g" || true); do
    [ "$p" = "$g" ] || kill -KILL "$p" 2>/dev/null || true
  done
}
end_groups() {
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 0.5
  for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  cleanup
}
trap end_groups EXIT

"$BIN" -q cert --out "$work/certs" >/dev/null
cert=$work/certs/server.pem key=$work/certs/server-key.pem ca=$work/certs/ca.pem

# Two targets: the bare tokio echo (round trips) and a sink that reads and discards (socat
# into /dev/null: one-way bulk, so the relay's own cost is what is measured, not four copies of
# every byte by the echo and the client sharing core 1).
echo_ep=$(start target "${pin1[@]}" "$BASE" 127.0.0.1:0)
sink_port=$(free_port)
background sink "${pin1[@]}" socat -u -b 1048576 \
  "TCP-LISTEN:$sink_port,bind=127.0.0.1,fork,reuseaddr,backlog=1024" OPEN:/dev/null
declare -A plain tls
relays() { # target-port suffix: a socketeer, socat and ncat relay to it, plain and TLS
  local tport=$1 at=$2 port
  plain[socketeer$at]=$(start "ours$at" "${pin0[@]}" "$BIN" -q relay 127.0.0.1:0 "tcp://127.0.0.1:$tport" \
    --max-conns 5000)
  tls[socketeer$at]=$(start "ours-tls$at" "${pin0[@]}" "$BIN" -q relay 127.0.0.1:0 "tcp://127.0.0.1:$tport" \
    --max-conns 5000 --tls-cert "$cert" --tls-key "$key")
  port=$(free_port)
  background "socat$at" "${pin0[@]}" socat -b 1048576 \
    "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,backlog=1024" "TCP:127.0.0.1:$tport"
  plain[socat$at]=tcp://127.0.0.1:$port
  port=$(free_port)
  background "socat-tls$at" "${pin0[@]}" socat -b 1048576 \
    "OPENSSL-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,backlog=1024,cert=$cert,key=$key,verify=0" \
    "TCP:127.0.0.1:$tport"
  tls[socat$at]=tcp://127.0.0.1:$port
  port=$(free_port)
  background "ncat$at" "${pin0[@]}" ncat -l 127.0.0.1 "$port" -k --max-conns 2000 \
    --sh-exec "ncat 127.0.0.1 $tport"
  plain[ncat$at]=tcp://127.0.0.1:$port
  port=$(free_port)
  background "ncat-tls$at" "${pin0[@]}" ncat -l 127.0.0.1 "$port" -k --max-conns 2000 --ssl \
    --ssl-cert "$cert" --ssl-key "$key" --sh-exec "ncat 127.0.0.1 $tport"
  tls[ncat$at]=tcp://127.0.0.1:$port
}
relays "${echo_ep##*:}" ""
relays "$sink_port" "-sink"
wait_listen() { # endpoint: until it accepts a connection
  local port=${1##*:}
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens at $1" >&2
  return 1
}
for name in socketeer socat ncat; do
  wait_port "${plain[$name]}"
  wait_port "${tls[$name]}" --ca "$ca"
  wait_listen "${plain[$name-sink]}"
  wait_listen "${tls[$name-sink]}"
done
where="relays on core 0, echo, sink and client on core 1"
[ "${PIN:-1}" = 0 ] && where="nothing pinned"
echo "machine: $(nproc) cores, $(uname -r); $where; $SECS s per run, $ROUNDS rounds"

measure() { # endpoint point [tls flags...] -> the figure (round trips/s or MB/s)
  local ep=$1 point=$2; shift 2
  local args
  case $point in
    rt1) args=(-c 1 -s 64) ;;
    rt100) args=(-c 100 -s 64) ;;
    up1) args=(--upload -c 1 -s 65536) ;;
    up100) args=(--upload -c 100 -s 65536) ;;
  esac
  timeout $((SECS + 60)) "${pin1[@]}" "$BIN" -q bench "$ep" "${args[@]}" "$@" -d "$SECS" --warmup 0.5 --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["failed_connections"] == 0, r
print(round(r["mb_per_sec"] if "'"$point"'".startswith("up") else r["round_trips_per_sec"]))'
}

# CPU time (clock ticks) a relay has used so far: its process, or for socat and ncat every
# process of its group plus the children it has already reaped.
ticks() { # process name
  local pids p t=0 f
  if [ -n "${group[$1]:-}" ]; then
    pids=$(pgrep -g "${group[$1]}" || true)
    f=($(sed 's/.*) //' "/proc/${group[$1]}/stat" 2>/dev/null))
    t=$(( ${f[13]:-0} + ${f[14]:-0} ))   # cutime + cstime
  else
    pids=$(cat "$work/$1.pid")
  fi
  for p in $pids; do
    f=($(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null))
    t=$(( t + ${f[11]:-0} + ${f[12]:-0} ))
  done
  echo "$t"
}
process() { # relay kind at -> the name its processes were started under
  local prefix=$1
  [ "$1" = socketeer ] && prefix=ours
  if [ "$2" = plain ]; then echo "$prefix$3"; else echo "$prefix-tls$3"; fi
}
hz=$(getconf CLK_TCK)

turn=0
for kind in plain tls; do
  for point in $POINTS; do
    declare -A cpu=([socketeer]="" [socat]="" [ncat]="")
    declare -A got=([socketeer]="" [socat]="" [ncat]="" [direct]="")
    names=(socketeer socat ncat)
    # Bulk points also run the client straight into the sink, no relay. Pinned (client and
    # sink sharing core 1) that is the ceiling a relay works under: it can only add work to
    # the path. Unpinned it is not (a relay spreads the work over both cores).
    case $point in up*) [ "$kind" = plain ] && names+=(direct) ;; esac
    for round in $(seq "$ROUNDS"); do
      for i in "${!names[@]}"; do
        name=${names[$(((i + turn) % ${#names[@]}))]}
        at=""; case $point in up*) at=-sink ;; esac
        if [ "$name" = direct ]; then
          value=$(measure "tcp://127.0.0.1:$sink_port" "$point" 2>>"$work/measure.err") || value=0
          reap sink
          got[direct]+="$value "
          echo "run $kind $point direct $value" >&2
          continue
        fi
        if [ "$kind" = plain ]; then
          ep=${plain[$name$at]}; flags=()
        else
          ep=${tls[$name$at]}; flags=(--ca "$ca")
        fi
        # (A relay that cannot carry a point — ncat's --sh-exec stalls under bulk echo — counts
        # as 0 and is said so; its stuck children are ended so they cost the next runs nothing.)
        proc=$(process "$name" "$kind" "$at")
        before=$(ticks "$proc")
        if ! value=$(measure "$ep" "$point" "${flags[@]}" 2>>"$work/measure.err"); then
          value=0
        fi
        used=$(( $(ticks "$proc") - before ))
        # The relay's CPU per unit carried: ms per GB, or us per round trip (the warm-up's
        # traffic counted at the measured rate).
        cpu[$name]+="$(python3 -c "v=$value; s=$SECS+0.5; c=$used/$hz
print(0 if not v else round(c / (v * s / 1000) * 1000 if '$point'.startswith('up') else c / (v * s) * 1e6, 2))") "
        [ "$value" = 0 ] && echo "note: $name carried nothing at $kind $point" >&2
        if [ "$kind" = plain ]; then reap "$name$at"; else reap "$name-tls$at"; fi
        reap sink
        got[$name]+="$value "
        echo "run $kind $point $name $value" >&2
      done
      turn=$((turn + 1))
    done
    python3 - "$kind" "$point" "${got[socketeer]}" "${got[socat]}" "${got[ncat]}" \
      "${cpu[socketeer]}" "${cpu[socat]}" "${cpu[ncat]}" "${got[direct]}" <<'PY'
import statistics, sys
kind, point = sys.argv[1], sys.argv[2]
ours, socat, ncat = ([float(x) for x in a.split()] for a in sys.argv[3:6])
cpu = {n: statistics.median([float(x) for x in a.split()])
       for n, a in zip(("socketeer", "socat", "ncat"), sys.argv[6:9])}
direct = [float(x) for x in sys.argv[9].split()]
unit = "MB/s" if point.startswith("up") else "round trips/s"
m = {n: statistics.median(v) for n, v in (("socketeer", ours), ("socat", socat), ("ncat", ncat))}
ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"
print(f"FIGURE relay_{kind}_{point} socketeer={m['socketeer']:.0f} socat={m['socat']:.0f} "
      f"ncat={m['ncat']:.0f} {unit} (medians of {len(ours)}); socketeer/socat={ratio(m['socketeer'], m['socat'])} "
      f"socketeer/ncat={ratio(m['socketeer'], m['ncat'])}")
if direct:
    d = statistics.median(direct)
    print(f"FIGURE relay_{kind}_{point}_direct client straight into the sink={d:.0f} MB/s "
          f"(medians of {len(direct)}); socketeer/direct={ratio(m['socketeer'], d)} "
          f"socat/direct={ratio(m['socat'], d)}")
per = "ms per GB" if point.startswith("up") else "us per round trip"
print(f"FIGURE relay_{kind}_{point}_cpu socketeer={cpu['socketeer']} socat={cpu['socat']} "
      f"ncat={cpu['ncat']} relay CPU {per} (medians); socketeer/socat={ratio(cpu['socketeer'], cpu['socat'])}")
PY
  done
done
