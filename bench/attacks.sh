#!/usr/bin/env bash
# The hostile-peer scenarios of issue 20 against `socketeer hub` (bench/attacks.py): a real
# robot's acknowledgement latency and the hub's peak memory under each attack. Prints FIGURE
# lines; about 90 s for all.
#
#   bench/attacks.sh                        # every scenario, this build
#   bench/attacks.sh udp                    # one: none|udp|http|halfopen|cardinality|viewers|handshakes|hog
#   HUB_BIN=/path/to/older/socketeer bench/attacks.sh   # the same against another build
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p socketeer-cli --bin socketeer
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/attacks.py "${1:-all}"
