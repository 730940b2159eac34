#!/usr/bin/env bash
# Soak and fault scenarios (bench/soak.py): slowloris beside a real client, drain under load,
# running out of file descriptors, and 10,000 connect/close cycles — socketeer serve echo and
# the anchors (minimal tokio echo, ThreadingTCPServer) on loopback. Prints FIGURE lines.
#
#   bench/soak.sh                 # every scenario (about 3 minutes)
#   bench/soak.sh fds             # one: slowloris | drain | fds | cycles
#   N_SLOW=200 SECS=5 bench/soak.sh slowloris
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p socketeer-cli --bin socketeer
cargo build --release -q -p socketeer --example baseline_tokio_echo
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/soak.py "${1:-all}"
