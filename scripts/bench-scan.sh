#!/usr/bin/env bash
# All 65535 TCP ports of 127.0.0.1 with a few listeners open, scanned by socketeer, nmap's
# connect scan (-sT -T5) and RustScan, side by side in the same run, ROUNDS times each, in turn.
# Prints wall time and peak memory per tool and round, whether every listener was found and
# what else was reported open (checked against the kernel's list of listening sockets), then
# medians and ratios as FIGURE lines.
#
# Usage: scripts/bench-scan.sh            (ROUNDS=5 by default)
#   nmap comes from Debian (apt-get install nmap); RustScan is built once with
#   `cargo install rustscan` into target/bench-tools (skipped, with a note, if it cannot be).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
TOOLS_DIR=${TOOLS_DIR:-$PWD/target/bench-tools}

cargo build --release -q
socketeer=$PWD/target/release/socketeer

if ! command -v nmap >/dev/null; then
  apt-get install -y -q nmap >/dev/null 2>&1 || echo "note: nmap not installed and cannot be; skipped" >&2
fi
rustscan=$TOOLS_DIR/bin/rustscan
if [ ! -x "$rustscan" ]; then
  echo "building RustScan (cargo install rustscan; once)..." >&2
  cargo install -q --locked --root "$TOOLS_DIR" rustscan >/dev/null 2>&1 \
    || echo "note: RustScan could not be built here; skipped" >&2
fi

# The listeners: python3 holds them until this script ends.
listeners=(22222 33445 50123 61000)
coproc LISTEN { exec python3 -u -c '
import socket, sys
held = []
for port in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(port))); s.listen(1024); held.append(s)
print("ready", flush=True)
sys.stdin.read()
' "${listeners[@]}"; }
trap 'kill $LISTEN_PID 2>/dev/null || true' EXIT
read -r _ <&"${LISTEN[0]}"

# Every port anything listens on that 127.0.0.1 reaches (ours and the machine's own).
listening() {
  ss -Hltn | awk '{ n = split($4, a, ":"); addr = substr($4, 1, length($4) - length(a[n]) - 1);
    if (addr == "127.0.0.1" || addr == "0.0.0.0" || addr == "*" || addr == "[::]" || addr == "[::ffff:127.0.0.1]") print a[n] }' | sort -un
}

tmp=$(mktemp -d)
trap 'kill $LISTEN_PID 2>/dev/null || true; rm -rf "$tmp"' EXIT

# run TOOL: runs one scan, prints "seconds kib open-ports".
run() {
  local out=$tmp/out err=$tmp/time
  case $1 in
    socketeer) /usr/bin/time -f '%e %M' -o "$err" "$socketeer" scan -p- --greppable 127.0.0.1 >"$out" ;;
    nmap) /usr/bin/time -f '%e %M' -o "$err" nmap -sT -T5 -p- -n -oG - 127.0.0.1 >"$out" ;;
    rustscan) /usr/bin/time -f '%e %M' -o "$err" "$rustscan" -a 127.0.0.1 -r 1-65535 -g >"$out" 2>/dev/null ;;
  esac
  local open
  case $1 in
    socketeer|nmap) open=$(grep -o '[0-9]*/open/' "$out" | cut -d/ -f1 | sort -n | tr '\n' ',') ;;
    rustscan) open=$(grep -o '\[.*\]' "$out" | tr -d '[]' | tr ',' '\n' | sort -n | tr '\n' ',') ;;
  esac
  echo "$(tail -1 "$err") ${open%,}"
}

tools=(socketeer)
command -v nmap >/dev/null && tools+=(nmap)
[ -x "$rustscan" ] && tools+=(rustscan)

echo "machine: $(nproc) cores, $(uname -r), open-file limit $(ulimit -Hn) (hard)"
echo "listeners: ${listeners[*]}"
declare -A times mems misses extras
for round in $(seq "$ROUNDS"); do
  for tool in "${tools[@]}"; do
    read -r secs kib open < <(run "$tool")
    truth=$(listening | tr '\n' ',')
    missing=() extra=()
    for port in "${listeners[@]}"; do
      [[ ",$open," == *",$port,"* ]] || missing+=("$port")
    done
    for port in ${open//,/ }; do
      [[ ",${truth%,}," == *",$port,"* ]] || extra+=("$port")
    done
    times[$tool]+="$secs "
    mems[$tool]+="$kib "
    misses[$tool]=$(( ${misses[$tool]:-0} + ${#missing[@]} ))
    extras[$tool]=$(( ${extras[$tool]:-0} + ${#extra[@]} ))
    printf 'round %d  %-9s %6.2f s  %7.1f MiB  open: %s%s%s\n' "$round" "$tool" "$secs" \
      "$(echo "$kib / 1024" | bc -l)" "$open" \
      "${missing[*]:+  MISSED: ${missing[*]}}" "${extra[*]:+  NOT LISTENING (false positive): ${extra[*]}}"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ours=$(echo "${times[socketeer]}" | median)
for tool in "${tools[@]}"; do
  t=$(echo "${times[$tool]}" | median)
  m=$(echo "${mems[$tool]}" | median)
  echo "FIGURE scan_all_ports_${tool}_seconds=$t s"
  echo "FIGURE scan_all_ports_${tool}_peak_rss=$(printf '%.1f' "$(echo "$m / 1024" | bc -l)") MiB"
  echo "FIGURE scan_all_ports_${tool}_missed_listeners=${misses[$tool]} over $ROUNDS rounds"
  echo "FIGURE scan_all_ports_${tool}_false_positives=${extras[$tool]} over $ROUNDS rounds"
  if [ "$tool" != socketeer ]; then
    echo "FIGURE scan_all_ports_speedup_vs_${tool}=$(printf '%.2f' "$(echo "$t / $ours" | bc -l)") x"
  fi
done
