#!/usr/bin/env bash
# images/smoke.sh: boots the images of images/build.sh under QEMU TCG (no KVM needed) and
# checks the init contracts: the test host (L1) runs a script from an appended cpio and
# reports its exit status with /dev/kvm present; the guest (L2) kernel runs commands under
# `-M pc` (SMP from the MP table) and `-M microvm`, reporting their exit status; offload.ko
# loads without an offload device (no /dev/offload, clear `offload` errors), unloads, and
# leaves other virtio devices alone.
# Usage: images/smoke.sh [testhost|guest-pc|guest-argv64|guest-microvm|guest-offload]...
#        (default: all)
set -euo pipefail

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$IMAGES_DIR/.." && pwd)
OUT="$REPO_ROOT/build/images"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/images-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
QEMU=qemu-system-x86_64
BOOT_TIMEOUT=${SMOKE_TIMEOUT:-180}
FAILED=0

log() { printf '[smoke] %s\n' "$*"; }

# The machine options `-M microvm` needs for our kernel (documented in images/README.md):
# keep pit/pic (defaults; TCG has no kvm-clock, pic=off hangs SMP bring-up), keep the RTC,
# no ACPI, no auto-appended virtio_mmio.device= (QEMU would append it after our `--`, where
# it becomes an argument of the command), and reboot=t: microvm has no i8042.
MICROVM_ARGS=(-M microvm,x-option-roms=off,acpi=off,auto-kernel-cmdline=off
    -accel tcg -no-reboot -nodefaults -display none -serial stdio)
MICROVM_RNG="virtio_mmio.device=512@0xfeb00e00:12" # where microvm puts its first virtio-mmio device
# -nodefaults -display none: no VGA/NIC, so no SeaBIOS/iPXE text on the serial console.
PC_ARGS=(-M pc -accel tcg -no-reboot -nodefaults -display none -serial stdio)

# boot NAME QEMU-ARGS...: run QEMU with a timeout, console to $WORK/NAME.log; print seconds.
boot() {
    local name="$1" start rc=0
    shift
    start=$(date +%s.%N)
    timeout "$BOOT_TIMEOUT" "$QEMU" "$@" </dev/null >"$WORK/$name.log" 2>"$WORK/$name.err" || rc=$?
    BOOT_SECONDS=$(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f')
    ((rc == 124)) && log "$name: timed out after $BOOT_TIMEOUT s"
    return 0
}

# expect NAME PATTERN: the console log of NAME must contain a line matching PATTERN.
expect() {
    if tr -d '\r' <"$WORK/$1.log" | grep -qE "$2"; then
        return 0
    fi
    log "$1: FAILED: no line matching /$2/; console log:"
    tr -d '\r' <"$WORK/$1.log" | tail -n 30 | sed 's/^/    /'
    grep -v 'TCG doesn.t support requested feature' "$WORK/$1.err" | tail -n 5 | sed 's/^/    stderr: /'
    FAILED=1
    return 1
}

# reject NAME PATTERN: the console log of NAME must not contain a line matching PATTERN.
reject() {
    if ! tr -d '\r' <"$WORK/$1.log" | grep -qE "$2"; then
        return 0
    fi
    log "$1: FAILED: unexpected line matching /$2/:"
    tr -d '\r' <"$WORK/$1.log" | grep -E "$2" | head -n 5 | sed 's/^/    /'
    FAILED=1
    return 1
}

smoke_testhost() {
    local stage="$WORK/overlay"
    mkdir -p "$stage/testhost"
    printf '%s\n' 'ls -l /dev/kvm' 'uname -r' 'exit 0' >"$stage/testhost/run.sh"
    (cd "$stage" && find . -mindepth 1 | cpio -o -H newc -R 0:0 --quiet | gzip -n) >"$WORK/overlay.cpio.gz"
    cat "$OUT/testhost/initramfs-base.cpio.gz" "$WORK/overlay.cpio.gz" >"$WORK/testhost-initrd"
    boot testhost -M q35 -accel tcg,thread=multi -smp 2 -cpu EPYC,+svm,+npt,+nrip-save -m 2048 \
        -nodefaults -display none -serial stdio -no-reboot -kernel "$OUT/testhost/vmlinuz" -initrd "$WORK/testhost-initrd" \
        -append "console=ttyS0 quiet panic=-1"
    expect testhost '^testhost: ready kernel=.* cpus=2 kvm=yes$' \
        && expect testhost '^crw.* /dev/kvm$' \
        && expect testhost '^testhost: exit-status=0$' \
        && log "testhost: ok (${BOOT_SECONDS} s wall, boot + script + poweroff)"
}

# guest NAME STATUS SMP KERNEL-ARGS MACHINE-ARGS... -- CMD...: boot the guest with CMD,
# expect exit STATUS.
guest() {
    local name="$1" status="$2" smp="$3" kargs="$4" margs=()
    shift 4
    while [[ $1 != -- ]]; do margs+=("$1"); shift; done
    shift
    boot "$name" "${margs[@]}" -smp "$smp" -m 256 -kernel "$OUT/guest/bzImage" \
        -initrd "$OUT/guest/initramfs.cpio.gz" \
        -append "console=ttyS0 $kargs panic=-1 quiet vmm.node=$name -- $*"
    local shown="$*"
    ((${#shown} <= 100)) || shown="${shown:0:97}..."
    expect "$name" "^vmm-guest: exit-status=$status\$" && log "$name: ok (${BOOT_SECONDS} s wall): $shown"
}

smoke_guest_pc() {
    local release
    release=$(cat "$OUT/guest/kernel.release")
    guest pc-uname 0 1 reboot=k "${PC_ARGS[@]}" -- uname -r && expect pc-uname "^$release\$"
    guest pc-exit3 3 1 reboot=k "${PC_ARGS[@]}" -- sh -c '"exit 3"'
    # SeaBIOS lists one MP-table CPU per package: give -M pc one socket per vCPU.
    guest pc-nproc 0 2,sockets=2,cores=1,threads=1 reboot=k "${PC_ARGS[@]}" -- nproc \
        && expect pc-nproc '^2$'
    guest pc-hostname 0 1 reboot=k "${PC_ARGS[@]}" -- hostname && expect pc-hostname '^pc-hostname$'
}

# argv64 ARG...: the command as the monitor encodes it (vmm/src/config.rs): `vmm.argv64` then
# `x` + base64 of each argument.
argv64() {
    local a out=vmm.argv64
    for a in "$@"; do out+=" x$(printf '%s' "$a" | base64 -w0)"; done
    printf '%s' "$out"
}

smoke_guest_argv64() {
    guest pc-argv64 4 1 reboot=k "${PC_ARGS[@]}" -- "$(argv64 sh -c 'echo "a  b"; exit 4' '')" \
        && expect pc-argv64 '^a  b$'
}

smoke_guest_microvm() {
    guest microvm-nproc 0 2 reboot=t "${MICROVM_ARGS[@]}" -- nproc && expect microvm-nproc '^2$'
    guest microvm-exit3 3 1 reboot=t "${MICROVM_ARGS[@]}" -- sh -c '"exit 3"'
    guest microvm-virtio 0 1 "reboot=t $MICROVM_RNG" "${MICROVM_ARGS[@]}" -device virtio-rng-device \
        -- cat /sys/bus/virtio/devices/virtio0/device && expect microvm-virtio '^0x0004$'
}

# What the guest runs for guest-offload: offload.ko (insmodded by init) is registered but
# bound to nothing (QEMU has no offload device), so /dev/offload is absent and `offload`
# says why; rmmod and a second insmod work. Each check prints one `check: ...` line.
OFFLOAD_SCRIPT='
grep -q "^offload " /proc/modules && echo "check: module-loaded"
[ -d /sys/bus/virtio/drivers/offload ] && echo "check: driver-registered"
[ -e /dev/offload ] || echo "check: no-dev-offload"
ls /sys/bus/virtio/drivers/offload | grep -q virtio || echo "check: nothing-bound"
offload nodes; echo "check: nodes-status=$?"
offload ping b -c 1; echo "check: ping-status=$?"
offload ping >/dev/null 2>&1; echo "check: usage-status=$?"
rmmod offload && echo "check: rmmod-ok"
offload nodes; echo "check: unloaded-nodes-status=$?"
insmod /lib/modules/offload.ko && echo "check: insmod-again-ok"
'

# offload_checks NAME: the lines OFFLOAD_SCRIPT must have printed, and no module trouble.
offload_checks() {
    local name="$1" c
    for c in module-loaded driver-registered no-dev-offload nothing-bound nodes-status=1 \
        ping-status=1 usage-status=2 rmmod-ok unloaded-nodes-status=1 insmod-again-ok; do
        expect "$name" "^check: $c\$" || return 1
    done
    expect "$name" '^offload: offload.ko is loaded but no offload device was found' \
        && expect "$name" '^offload: offload.ko is not loaded' \
        && reject "$name" 'insmod-error|Oops|BUG:|WARNING:|Call Trace'
}

smoke_guest_offload() {
    guest pc-offload 0 1 reboot=k "${PC_ARGS[@]}" -- "$(argv64 sh -c "$OFFLOAD_SCRIPT")" \
        && offload_checks pc-offload
    # With another virtio device present (virtio-rng, id 4), offload.ko must leave it alone.
    guest microvm-offload 0 1 "reboot=t $MICROVM_RNG" "${MICROVM_ARGS[@]}" -device virtio-rng-device \
        -- "$(argv64 sh -c "$OFFLOAD_SCRIPT")" && offload_checks microvm-offload
}

main() {
    local targets=("$@") t
    ((${#targets[@]} > 0)) || targets=(testhost guest-pc guest-argv64 guest-microvm guest-offload)
    command -v "$QEMU" >/dev/null || { log "$QEMU not found (package qemu-system-x86)"; exit 1; }
    for t in "${targets[@]}"; do
        case $t in
            testhost) smoke_testhost || true ;;
            guest-pc) smoke_guest_pc || true ;;
            guest-argv64) smoke_guest_argv64 || true ;;
            guest-microvm) smoke_guest_microvm || true ;;
            guest-offload) smoke_guest_offload || true ;;
            *) log "unknown target '$t'"; exit 2 ;;
        esac
    done
    ((FAILED == 0)) && log "all passed" || { log "some checks FAILED"; exit 1; }
}

main "$@"
