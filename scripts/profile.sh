#!/usr/bin/env bash
# `make profile`: records where the dispatcher spends its CPU under load and prints the top
# symbols, inclusive (each symbol's share of samples with its callees), then self time.
#
# The dispatcher is built with the `profiling` cargo profile (release code, symbols and line
# tables, not stripped) and frame pointers, into target/profiling/; guests' frames are named
# through wasmtime's perf map (`--perf-map`). wrk drives `POST /echo` (64 B) while
# `perf record` samples every thread of the dispatcher.
#
# The function (a workspace crate, `echo` unless PROFILE_FUNCTION says) is built as `make
# functions` builds it but with its name section kept, into target/profile-wasm/, so its
# frames are named too.
#
#   make profile                                  # echo, 64 connections, 10 s
#   PROFILE_FUNCTION=echo-std PROFILE_PATH=/echo-std make profile
#   PROFILE_CONNECTIONS=16 PROFILE_SECONDS=20 PROFILE_CALL_GRAPH=dwarf make profile
#
# The recording stays in $PROFILE_DIR (default target/profile/) for `perf report -i`; it is
# never committed.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${PROFILE_CONNECTIONS:-64}
SECONDS_=${PROFILE_SECONDS:-10}
CALL_GRAPH=${PROFILE_CALL_GRAPH:-fp}
FUNCTION=${PROFILE_FUNCTION:-echo}
ROUTE=${PROFILE_PATH:-/echo}
OUT=${PROFILE_DIR:-target/profile}
TOP=${PROFILE_TOP:-60}

for tool in perf wrk; do
    command -v "$tool" >/dev/null || { echo "profile: \`$tool\` is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
done

echo "profile: building $FUNCTION.wasm with its symbols"
CARGO_TARGET_DIR=target/profile-wasm CARGO_PROFILE_RELEASE_STRIP=false \
    CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    cargo build --release --target wasm32-wasip1 -p "$FUNCTION"
WASM=target/profile-wasm/wasm32-wasip1/release/${FUNCTION//-/_}.wasm

echo "profile: building the dispatcher (profile \`profiling\`, frame pointers)"
RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes" cargo build --profile profiling -p dispatcher
BIN=target/profiling/dispatcher

rm -rf "$OUT" && mkdir -p "$OUT/manifests"
cat >"$OUT/manifests/profiled.toml" <<EOF
name = "profiled"
wasm = "$(realpath "$WASM")"

[trigger.http]
path = "$ROUTE"
methods = ["POST"]

[limits]
max_concurrency = 256
EOF
printf 'wrk.method = "POST"\nwrk.body = string.rep("x", 64)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' >"$OUT/post.lua"

# Logging as in production (one line per request), optimized code from the start.
NO_COLOR=1 DATABASE_URL= "$BIN" serve --manifests "$OUT/manifests" --listen 127.0.0.1:0 \
    --no-cache --compile optimized --perf-map >"$OUT/dispatcher.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    ADDR=$(grep -o 'dispatcher listening on http://[0-9.:]*' "$OUT/dispatcher.log" | sed 's/.*http:\/\///' || true)
    [ -n "$ADDR" ] && break
    kill -0 $PID 2>/dev/null || { cat "$OUT/dispatcher.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "profile: the dispatcher did not start" >&2; exit 1; }
URL="http://$ADDR$ROUTE"

wrk -t2 -c"$CONNECTIONS" -d2s -s "$OUT/post.lua" "$URL" >/dev/null  # warm-up
echo "profile: recording $SECONDS_ s of wrk -t2 -c$CONNECTIONS POST $URL (call graph: $CALL_GRAPH)"
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_}s" -s "$OUT/post.lua" --latency "$URL" >"$OUT/wrk.txt" &
WRK=$!
sleep 0.5
perf record -F 1999 -g --call-graph "$CALL_GRAPH" -p $PID -o "$OUT/perf.data" \
    -- sleep $((SECONDS_ - 1)) 2>"$OUT/perf-record.log"
wait $WRK
grep -E 'Requests/sec|Latency ' "$OUT/wrk.txt"
kill $PID && wait $PID 2>/dev/null || true
trap - EXIT

# One line per symbol: its percentages and name, the padding perf adds cut off.
report() {
    perf report -i "$OUT/perf.data" --stdio -g none --percent-limit 0.3 --sort symbol "$@" \
        2>/dev/null | grep -v -e '^#' -e '^$' | sed -e 's/[[:space:]-]*$//' | cut -c1-150 \
        | head -n "$TOP" || true
}
echo
echo "== top symbols, inclusive (children) =="
report --children
echo
echo "== top symbols, self =="
report --no-children
echo
echo "profile: the recording is $OUT/perf.data (perf report -i $OUT/perf.data --children)"
