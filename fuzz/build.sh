#!/usr/bin/env bash
# Builds the fuzz targets; with FUZZ_SECS=N also runs each for N seconds.
#
# With cargo-fuzz installed (and a nightly toolchain, or RUSTC_BOOTSTRAP=1
# on stable) this is `cargo fuzz build`. Without it, the same
# instrumentation is requested by hand: SanitizerCoverage through stable
# -C flags, plus AddressSanitizer through -Zsanitizer, which stable rustc
# accepts only with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
targets=(decode event_record)
secs="${FUZZ_SECS:-0}"
export RUSTC_BOOTSTRAP=1
if cargo fuzz --version >/dev/null 2>&1; then
    cargo fuzz build -O
    bin_dir="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
else
    host="$(rustc -vV | sed -n 's/^host: //p')"
    export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        -Zsanitizer=address -Cdebug-assertions -Coverflow-checks"
    cargo build --release --locked --target "$host" --bins
    bin_dir="${CARGO_TARGET_DIR:-target}/$host/release"
fi
for t in "${targets[@]}"; do
    test -x "$bin_dir/$t"
    echo "built $bin_dir/$t"
    if [ "$secs" -gt 0 ]; then
        mkdir -p "corpus/$t"
        "$bin_dir/$t" -max_total_time="$secs" "corpus/$t"
    fi
done
