#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/README.md): SECS seconds each (default 60), starting
# from the committed seeds plus whatever corpus earlier runs kept in fuzz/corpus/. Prints one
# FIGURE line per target; exits non-zero if any target found a crash (the input is kept in
# fuzz/artifacts/<target>/, and reproduced by `cargo fuzz run <target> <file>`).
#
#   scripts/fuzz.sh                      # all targets, 60 s each
#   SECS=600 TARGETS="hub_lines influx" scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${SECS:-60}
TARGETS=${TARGETS:-"lines frames auth_answer hub_lines influx exec_frames file_frames chat_lines"}

if ! command -v cargo-fuzz >/dev/null; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz)" >&2
    cargo install --locked cargo-fuzz >&2
fi
# cargo-fuzz builds with -Z flags (AddressSanitizer, coverage); this project keeps to the
# stable toolchain, and RUSTC_BOOTSTRAP lets stable rustc accept them.
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >&2

failed=0
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    log="$(mktemp)"
    if cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECS" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log")
        edges=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' "$log" | tail -1)
        inputs=$(ls "corpus/$t" | wc -l)
        echo "FIGURE fuzz_${t}_runs=${runs:-0} inputs in ${SECS}s (${edges:-?} edges covered, corpus ${inputs}, crashes 0)"
    else
        tail -40 "$log"
        echo "FIGURE fuzz_${t}_crashes=1 (input in fuzz/artifacts/$t/)"
        failed=1
    fi
    rm -f "$log"
done
exit "$failed"
