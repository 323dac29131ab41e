#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets of fuzz/ with cargo-fuzz (libFuzzer; installed first if
# missing) and runs each for FUZZ_SECONDS (default 60), starting from its seeds in
# fuzz/corpus/<target>/. Prints each target's executions and any crash, and exits non-zero if
# one crashed. The crashing input is in fuzz/artifacts/<target>/; replay it with
# `cargo fuzz run -s none <target> <file>`, and keep it in fuzz/regressions/<target>/ (the
# unit tests replay that folder). `make fuzz-smoke` (part of `make test`) is a short run.
#
# FUZZ_TARGETS picks targets (default all); what a run finds beyond the seeds is kept in
# fuzz/corpus-found/<target>/ (not committed) and used by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-manifest route schedule cgi multipart host_abi}
cargo=${CARGO:-cargo}
# cargo-fuzz hands rustc -Z flags (coverage instrumentation), which stable takes with this.
export RUSTC_BOOTSTRAP=1
# No sanitizer: the code under test is safe Rust, and ASan would triple the build and
# refuse wasmtime's large memory reservations.
flags=(-s none)

if ! "$cargo" fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    "$cargo" install cargo-fuzz --locked
fi
"$cargo" fuzz build "${flags[@]}"

crashed=()
for t in $targets; do
    mkdir -p "fuzz/corpus-found/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/run.log"
    # Each host_abi input compiles a module, and covers so much of the compiler that
    # libFuzzer's entropic schedule would take three quarters of the time (46 against 160
    # executions a second).
    extra=()
    [ "$t" = host_abi ] && extra=(-entropic=0)
    # New inputs go to the first folder; the seeds are only read.
    status=0
    "$cargo" fuzz run "${flags[@]}" "$t" "fuzz/corpus-found/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=30 -print_final_stats=1 "${extra[@]}" \
        >"$log" 2>&1 || status=$?
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        echo "fuzz: $t: ${execs:-?} executions in ${seconds}s, no crash"
        continue
    fi
    crashed+=("$t")
    if grep -q "libFuzzer: timeout" "$log"; then
        # One input ran for 30 s: a hang, or a machine too loaded (replay it to tell).
        echo "fuzz: $t: TIMEOUT after ${execs:-?} executions (log: $log)"
    else
        echo "fuzz: $t: CRASH after ${execs:-?} executions (log: $log)"
    fi
    grep -E "panicked at|^==[0-9]+== ERROR|Test unit written to" "$log" | head -5 | sed 's/^/    /'
done

if [ "${#crashed[@]}" -gt 0 ]; then
    echo "fuzz: crashed: ${crashed[*]}"
    exit 1
fi
