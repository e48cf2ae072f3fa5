#!/bin/sh
# /init of the guest (L2) initramfs (busybox sh). Mounts the basic filesystems, sets the
# hostname from `vmm.node=NAME`, insmods /lib/modules/*.ko, runs the command the kernel passes
# after `--` (or a shell), prints `vmm-guest: exit-status=N` and reboots (i8042 reset, the
# monitor stops). Errors of its own: `vmm-guest: init-error=WHAT`, then reboot.
# Contract: images/README.md.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

# Boot benchmarks pass `vmm_mark=1` (a parameter without a dot reaches init as an environment
# variable): the first thing init does is say it started.
[ -n "${vmm_mark:-}" ] && echo "vmm-guest: init-start"

# Reboot through the kernel (reboot=k: keyboard-controller reset). Should that fail, init
# exits: the kernel panics and, with panic=-1, resets anyway. Never hang.
finish() {
    sync
    reboot -f
    sleep 5
    exit 1
}

fail() {
    echo "vmm-guest: init-error=$*"
    finish
}

# is_mounted DIR (false while /proc is not mounted yet)
is_mounted() {
    grep -qs "^[^ ]* $1 " /proc/mounts
}

# mount_fs TYPE DIR [OPTIONS]
mount_fs() {
    mkdir -p "$2" || fail "mkdir-$2"
    is_mounted "$2" && return 0
    mount -t "$1" ${3:+-o "$3"} "$1" "$2" || fail "mount-$2"
}

mount_all() {
    mount_fs proc /proc
    mount_fs sysfs /sys
    mount_fs devtmpfs /dev mode=0755
    mount_fs devpts /dev/pts gid=5,mode=0620,ptmxmode=0666
    mount_fs tmpfs /dev/shm mode=1777
    mount_fs tmpfs /tmp mode=1777
    mount_fs tmpfs /run mode=0755
}

# node_name: the value of vmm.node= on the kernel command line (before `--`), else "guest".
node_name() {
    name=guest
    set -f
    for arg in $(cat /proc/cmdline); do
        case $arg in
            --) break ;;
            vmm.node=*) name=${arg#vmm.node=} ;;
        esac
    done
    set +f
    echo "$name"
}

set_hostname() {
    node=$(node_name)
    hostname "$node" || fail "hostname-$node"
}

# load_modules: every /lib/modules/*.ko in sorted order; a failure is reported, not fatal.
load_modules() {
    for ko in /lib/modules/*.ko; do
        [ -f "$ko" ] || continue
        insmod "$ko" || echo "vmm-guest: insmod-error=${ko##*/}"
    done
}

# The command arrives as `vmm.argv64 xB64 xB64...`: each argument is `x` + its base64, so
# quotes, spaces and newlines survive the kernel command line (vmm/src/config.rs).
# decode_arg XB64 prints one argument byte for byte; main keeps trailing newlines with a
# sentinel.
decode_arg() {
    printf '%s' "${1#x}" | base64 -d || fail "bad-argv64"
}

main() {
    if [ "${1:-}" = vmm.argv64 ]; then
        shift
        n=$#
        while [ "$n" -gt 0 ]; do
            arg=$(decode_arg "$1"; printf .)
            shift
            set -- "$@" "${arg%.}"
            n=$((n - 1))
        done
    fi
    mount_all
    set_hostname
    load_modules
    cd / || fail "cd-/"
    if [ "$#" -gt 0 ]; then
        command "$@"
        status=$?
    else
        echo "vmm-guest: no command after -- on the kernel command line; shell on the console (exit to stop)"
        setsid cttyhack sh
        status=$?
    fi
    echo "vmm-guest: exit-status=$status"
    finish
}

main "$@"
