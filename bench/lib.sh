# Shared by the benchmark scripts (sourced, from the repository root): release builds of the
# program and the tokio echo, a scratch directory, and servers that are ended on exit.
#   start NAME COMMAND...   runs a server, waits for its "listening on" line, prints the endpoint
cargo build --release -q -p socketeer-cli --bin socketeer
cargo build --release -q -p socketeer --example baseline_tokio_echo
BIN=$PWD/target/release/socketeer
BASE=$PWD/target/release/examples/baseline_tokio_echo
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
work=$(mktemp -d)
pids=()
# (start runs inside $(...), a subshell: it leaves each server's PID in a file, not in a variable)
# Servers get SIGTERM, and SIGKILL half a second later if still there (an ncat busy with
# --sh-exec children was once seen to outlive the run).
cleanup() {
  local all=("${pids[@]}") f p
  for f in "$work"/*.pid; do [ -e "$f" ] && all+=("$(cat "$f")"); done
  for p in "${all[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start() { # name command...
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  echo $! >"$work/$name.pid"
  for _ in $(seq 100); do grep -q "listening on" "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/^listening on //p' "$work/$name.out" | head -1
}
