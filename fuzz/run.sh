#!/usr/bin/env bash
# Runs the fuzz targets for a while each, one after another, on the stable toolchain:
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 10 seconds for every target (the CI tier). Installs cargo-fuzz when it is missing.
# Each target starts from its committed seeds (fuzz/corpus/TARGET) and the inputs of crashes
# already fixed (fuzz/regressions/TARGET), both read only, plus what earlier runs found in
# $FUZZ_WORK_DIR (a temporary directory unless set): every run replays them all first. A crash
# leaves its input in fuzz/artifacts/TARGET/ and makes the script exit non-zero after the other
# targets have run.
# The last line of each target's run is printed as `fuzz TARGET: runs=... cov=... ft=...`.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1

seconds=${1:-10}
shift || true

# cargo-fuzz drives rustc with -Z flags (sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them, so no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz ${CARGO_FUZZ_VERSION}"; then
    echo "=== installing cargo-fuzz ${CARGO_FUZZ_VERSION}"
    cargo install cargo-fuzz --version "${CARGO_FUZZ_VERSION}" --locked || exit 1
fi

# No sanitizer: the proxy's Rust is memory safe outside two libsodium calls, and ASan would
# halve the executions per second; panics, overflows (debug assertions are on) and the
# targets' own assertions are what these runs look for.
flags=(--sanitizer none)
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "=== building ${#targets[@]} fuzz targets"
cargo fuzz build "${flags[@]}" || exit 1

work=${FUZZ_WORK_DIR:-$(mktemp -d)}
failed=()
for t in "${targets[@]}"; do
    mkdir -p "${work}/${t}" "corpus/${t}"
    dirs=("${work}/${t}" "corpus/${t}")
    if [ -d "regressions/${t}" ]; then
        dirs+=("regressions/${t}")
    fi
    log="${work}/${t}.log"
    echo "=== fuzz ${t}: ${seconds} s"
    # One process, one thread: the machine is shared. -timeout catches a hang in one input,
    # -rss_limit_mb a runaway allocation.
    cargo fuzz run "${flags[@]}" "${t}" "${dirs[@]}" -- \
        -max_total_time="${seconds}" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        >"${log}" 2>&1
    rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "${log}" | tail -n 1)
    runs=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]*([0-9]+)/\1/p' "${log}" | tail -n 1)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"${done_line}")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"${done_line}")
    corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"${done_line}")
    echo "fuzz ${t}: runs=${runs:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} exit=${rc}"
    if [ "${rc}" -ne 0 ]; then
        failed+=("${t}")
        tail -n 40 "${log}"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds} s each without a crash"
