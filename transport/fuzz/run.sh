#!/usr/bin/env bash
# transport/fuzz/run.sh [SECONDS] [TARGET...]: runs each fuzz target (default: all) for
# SECONDS (default 60) with cargo-fuzz. Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets
# stable rustc accept the -Z flags cargo-fuzz passes. Crashes land in artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(frame_decoder session_responder)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz (once)"
    cargo install --locked cargo-fuzz || { echo "run.sh: cannot install cargo-fuzz" >&2; exit 2; }
fi
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "[fuzz] $t for ${secs}s"
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1
done
