#!/usr/bin/env bash
# The GPU checks of a release build, on the GPU machine (no Rust there: carry the binary).
#   scripts/gpu-checks.sh TESSERA [OLD_TESSERA] [selftest|sanitize|ws|all]
# selftest: `tessera selftest --codegen both` (every case through both emitters); the
#   `ops/order.tile` program through `run --check` with this build and, when OLD_TESSERA (a
#   build from before the `order_memory` pass) is given, with that one (which should differ).
# sanitize: compute-sanitizer memcheck, racecheck and synccheck over the self-test (the default
#   emitter), each tool's summary line.
# ws: warp specialisation (`#[warp_specialize]`): the whole self-test with every case built with
#   `--warp-specialize true` through both emitters, the sanitizers on the `ws` cases, and
#   `tessera bench` of matmul, matmul_persistent, linear and attention with and without it (two
#   rounds).
# Logs go to $OUT (or ./gpu-checks-out) as selftest.log, order.log, memcheck.log, racecheck.log,
# synccheck.log, ws-*.log; the summaries are printed last.
set -uo pipefail
tessera=${1:?usage: gpu-checks.sh TESSERA [OLD_TESSERA] [selftest|sanitize|ws|all]}
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

if [ "$what" = ws ] || [ "$what" = all ]; then
    # A hang (a barrier protocol bug) ends at the timeout instead of the device call's limit.
    timeout 300 "$tessera" selftest --warp-specialize --codegen both >"$out/ws-selftest.log" 2>&1
    summary+=("selftest --warp-specialize --codegen both (exit $?): $(tail -n 1 "$out/ws-selftest.log")")
    grep -E '^FAIL' "$out/ws-selftest.log" | head -n 20
    for tool in memcheck racecheck synccheck; do
        timeout 300 compute-sanitizer --tool "$tool" "$tessera" selftest " ws " >"$out/ws-$tool.log" 2>&1
        code=$?
        summary+=("compute-sanitizer --tool $tool selftest ' ws ' (exit $code): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/ws-$tool.log" | tail -n 1); $(tail -n 1 "$out/ws-$tool.log")")
    done
    bench() {
        timeout 120 "$tessera" bench "$@" --no-cache --json 2>/dev/null |
            python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f ms, %s registers" % (d["timing"]["median_ms"], d.get("registers")))' 2>/dev/null ||
            echo "failed"
    }
    for round in 1 2; do
        for ws in false true; do
            w=(--warp-specialize "$ws")
            summary+=("round $round, warp_specialize=$ws: matmul 4096^3 $(bench examples/matmul.tile --dims M=4096,N=4096,K=4096 "${w[@]}")")
            summary+=("round $round, warp_specialize=$ws: linear 4096^3 $(bench examples/linear.tile --dims M=4096,N=4096,K=4096 "${w[@]}")")
            summary+=("round $round, warp_specialize=$ws: matmul_persistent 4096^3 $(bench examples/matmul_persistent.tile --dims M=4096,N=4096,K=4096 "${w[@]}")")
            a=(examples/attention.tile --dims B=4,H=32,S=4096 --arg scale=0.088 "${w[@]}")
            summary+=("round $round, warp_specialize=$ws: attention D128 $(bench "${a[@]}")")
            summary+=("round $round, warp_specialize=$ws: attention D128 BQ128 BK128 w8 $(bench "${a[@]}" --const BQ=128 --const BK=128 --warps 8)")
        done
    done
fi

printf '%s\n' "${summary[@]}"
