#!/usr/bin/env bash
# The hub's crash test at the issue's full size: 10 publishers send 100,000 readings in all
# while the hub is killed with SIGKILL 20 times at spread-out points of the ingest and
# restarted; every reading must be stored exactly once and the database must pass
# PRAGMA integrity_check. (`cargo test` runs the same test smaller: 20,000 readings, 5 kills.)
# Usage: scripts/hub-kill.sh   (READINGS=, CYCLES= to change the size)
set -euo pipefail
cd "$(dirname "$0")/.."
export SOCKETEER_KILL_READINGS=${READINGS:-100000} SOCKETEER_KILL_CYCLES=${CYCLES:-20}
start=$(date +%s.%N)
cargo test -q --release -p socketeer-cli --test it \
  hub::sigkill_at_any_moment_loses_nothing_acknowledged_and_duplicates_nothing -- --exact
end=$(date +%s.%N)
echo "FIGURE hub_kill_readings=$SOCKETEER_KILL_READINGS"
echo "FIGURE hub_kill_cycles=$SOCKETEER_KILL_CYCLES"
echo "FIGURE hub_kill_lost=0 (the test fails otherwise)"
echo "FIGURE hub_kill_duplicates=0 (the test fails otherwise)"
printf 'FIGURE hub_kill_wall=%.1f s\n' "$(echo "$end - $start" | bc -l)"
