#!/usr/bin/env bash
# ci/setup.sh: prepares a fresh machine: the Debian packages the project needs at run time
# (QEMU for the emulated test host, cpio/gzip for its initramfs), the VM images
# (images/build.sh, cached by input hash), and release builds of every binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNTIME_PACKAGES=(qemu-system-x86 cpio gzip)

missing=()
for p in "${RUNTIME_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
    echo "[setup] installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

images/build.sh
echo "[setup] building release binaries"
cargo build --release --workspace --quiet
