#!/usr/bin/env bash
# The GPU checks of a release build, on the GPU machine (no Rust there: carry the binary).
#   scripts/gpu-checks.sh TESSERA [OLD_TESSERA] [selftest|sanitize|all]
# selftest: `tessera selftest --codegen both` (every case through both emitters); the
#   `ops/order.tile` program through `run --check` with this build and, when OLD_TESSERA (a
#   build from before the `order_memory` pass) is given, with that one (which should differ).
# sanitize: compute-sanitizer memcheck, racecheck and synccheck over the self-test (the default
#   emitter), each tool's summary line.
# Logs go to $OUT (or ./gpu-checks-out) as selftest.log, order.log, memcheck.log, racecheck.log,
# synccheck.log; the summaries are printed last.
set -uo pipefail
tessera=${1:?usage: gpu-checks.sh TESSERA [OLD_TESSERA] [selftest|sanitize|all]}
old=${2:-}
what=${3:-all}
out=${OUT:-gpu-checks-out}
mkdir -p "$out"
export TESSERA_CACHE_DIR=${TESSERA_CACHE_DIR:-$(mktemp -d)}
summary=()

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true

if [ "$what" = selftest ] || [ "$what" = all ]; then
    "$tessera" selftest --codegen both >"$out/selftest.log" 2>&1
    summary+=("selftest --codegen both (exit $?): $(tail -n 1 "$out/selftest.log")")
    grep -E '^FAIL' "$out/selftest.log" | head -n 20
    order=(run tests/ops/order.tile --dims P=64 --arg x=random --arg a=random --check)
    : >"$out/order.log"
    for build in "$old" "$tessera"; do
        [ -n "$build" ] || continue
        for seed in 1 2 3; do
            echo "== $build seed $seed" >>"$out/order.log"
            "$build" "${order[@]}" --seed "$seed" >>"$out/order.log" 2>&1
            summary+=("order.tile, $(basename "$build"), seed $seed (exit $?): $(grep -c MISMATCH "$out/order.log") mismatches so far")
        done
    done
fi

if [ "$what" = sanitize ] || [ "$what" = all ]; then
    for tool in memcheck racecheck synccheck; do
        compute-sanitizer --tool "$tool" "$tessera" selftest >"$out/$tool.log" 2>&1
        code=$?
        summary+=("compute-sanitizer --tool $tool selftest (exit $code): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$tool.log" | tail -n 1); $(tail -n 1 "$out/$tool.log")")
    done
fi

printf '%s\n' "${summary[@]}"
