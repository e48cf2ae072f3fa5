#!/usr/bin/env bash
# images/build.sh: builds every VM image of the project from Debian packages, into build/
# (git-ignored), each output cached by a hash of its inputs: the guest (L2) kernel and its
# built tree, the guest programs (static `offload` command, offload.ko, shim.so), the guest
# initramfs, and the emulated test host (L1) kernel + initramfs.
# Usage: images/build.sh [guest-kernel|guest-bin|guest-kmod|guest-initramfs|testhost]...
#        (default: all; always run in this order; guest-kmod needs the guest kernel tree)
# Layout, cache keys and the init contracts: images/README.md.
set -euo pipefail

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$IMAGES_DIR/.." && pwd)

# shellcheck source=lib/common.sh
source "$IMAGES_DIR/lib/common.sh"
# shellcheck source=lib/cpio.sh
source "$IMAGES_DIR/lib/cpio.sh"
# shellcheck source=lib/guest-kernel.sh
source "$IMAGES_DIR/lib/guest-kernel.sh"
# shellcheck source=lib/guest-initramfs.sh
source "$IMAGES_DIR/lib/guest-initramfs.sh"
# shellcheck source=lib/guest-shim.sh
source "$IMAGES_DIR/lib/guest-shim.sh"
# shellcheck source=lib/testhost.sh
source "$IMAGES_DIR/lib/testhost.sh"

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit "${1:-0}"
}

# take_lock: one build at a time per build/ directory (concurrent test runs share it).
take_lock() {
    exec 9>"$BUILD_DIR/.images.lock"
    if ! flock -n 9; then
        log "another images/build.sh is running; waiting for it"
        flock 9
    fi
}

main() {
    local targets=("$@") t
    ((${#targets[@]} > 0)) || targets=(guest-kernel guest-bin guest-kmod guest-initramfs testhost)
    for t in "${targets[@]}"; do
        case $t in
            guest-kernel | guest-bin | guest-kmod | guest-initramfs | testhost) ;;
            -h | --help) usage 0 ;;
            *) echo "images/build.sh: unknown target '$t'" >&2; usage 2 ;;
        esac
    done
    mkdir -p "$CACHE_DIR" "$OUT_DIR" "$TMP_ROOT"
    trap cleanup_tmpdirs EXIT
    trap 'exit 130' INT TERM
    take_lock
    local start=$SECONDS selected=" ${targets[*]} "
    # Always in dependency order, however the targets were given.
    for t in guest-kernel guest-bin guest-kmod guest-initramfs testhost; do
        [[ $selected == *" $t "* ]] || continue
        case $t in
            guest-kernel) build_guest_kernel ;;
            guest-bin) build_guest_bin ;;
            guest-kmod) build_guest_kmod ;;
            guest-initramfs) build_guest_initramfs ;;
            testhost) build_testhost ;;
        esac
    done
    step done
    log "images ready in build/images/ ($((SECONDS - start)) s)"
}

main "$@"
