#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: `fuzz/run.sh [SECONDS_PER_TARGET]`
# (default 30). Each target starts from its seeds (fuzz/seeds/TARGET, committed)
# plus whatever an earlier run left in fuzz/corpus/TARGET, and fails on the first
# crash (a panic, an object accepted that cannot be stored and read back, …),
# leaving the input in fuzz/artifacts/TARGET. Needs cargo-fuzz and a nightly
# toolchain, or a stable one with RUSTC_BOOTSTRAP (what .ci/run sets up).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
targets=(manifest patch store selector quantity protobuf apply)

toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    # libFuzzer's flags are unstable options; a stable rustc takes them with this.
    export RUSTC_BOOTSTRAP=1
fi

# No sanitizer: Tugboat forbids unsafe code, so what the fuzzer looks for is
# panics, overflows, unbounded work and broken invariants, which need none, and
# the build takes a third of the time.
flags=(-O --sanitizer none)
start=$(date +%s)
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
echo "fuzz targets built in $(( $(date +%s) - start )) s"

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    before=$(ls "corpus/$t" | wc -l)
    echo "== fuzzing $t for ${seconds} s (corpus: $before inputs)"
    log="$(mktemp)"
    set +e
    cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|ERROR|SUMMARY|Test unit written' "$log" || true
    if [ "$status" -ne 0 ]; then tail -n 40 "$log"; fi
    rm -f "$log"
    after=$(ls "corpus/$t" | wc -l)
    echo "   $t: corpus $before -> $after inputs ($(cat corpus/"$t"/* | wc -c) bytes)"
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
echo "fuzzing done in $(( $(date +%s) - start )) s, nothing found"
