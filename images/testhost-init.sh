#!/bin/sh
# /init of the emulated test host (L1) initramfs (busybox sh). Mounts the basic filesystems,
# loads irqbypass, kvm, kvm-amd (then virtio-net modules, best effort), brings up lo, prints
# `testhost: ready ...`, runs /testhost/run.sh (from a cpio the harness appends), prints
# `testhost: exit-status=N` and powers off. Contract: images/README.md.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

# Status reported when the init fails before the script could run.
INIT_FAILED=125

finish() {
    echo "testhost: exit-status=$1"
    sync
    poweroff -f
    sleep 5
    exit 1 # poweroff failed: the kernel panics (use panic=-1 with -no-reboot)
}

fail() {
    echo "testhost: init-error=$*"
    finish "$INIT_FAILED"
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
    mount_fs debugfs /sys/kernel/debug
}

# load_modules: /lib/modules/$(uname -r)/load-order lists "GROUP file.ko", dependencies first.
# Group kvm must load (else kvm-error); group net is best effort.
load_modules() {
    dir=/lib/modules/$(uname -r)
    [ -f "$dir/load-order" ] || kvm_error "no-modules-for-$(uname -r)"
    while read -r group ko; do
        insmod "$dir/$ko" && continue
        case $group in
            kvm) kvm_error "insmod-$ko" ;;
            *) echo "testhost: module-error=$ko" ;;
        esac
    done <"$dir/load-order"
}

kvm_error() {
    echo "testhost: kvm-error=$*"
    finish "$INIT_FAILED"
}

wait_for_kvm() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -c /dev/kvm ] && return 0
        sleep 0.2
    done
    grep -qw svm /proc/cpuinfo || kvm_error "no-svm-in-cpuinfo"
    kvm_error "no-/dev/kvm"
}

run_script() {
    if [ -f /testhost/run.sh ]; then
        cd /testhost || fail "cd-/testhost"
        # No console input for scripts: several monitors must not compete for the console
        # (each would put it in raw mode and read it); a script pipes input where it wants some.
        sh /testhost/run.sh </dev/null
        finish "$?"
    fi
    echo "testhost: no /testhost/run.sh; shell on the console (exit to power off)"
    cd / || fail "cd-/"
    setsid cttyhack sh
    finish "$?"
}

main() {
    mount_all
    hostname testhost
    # khugepaged of this kernel was seen stuck for minutes (soft lockup on a CPU) while two
    # monitors ran: transparent huge pages buy the tests nothing, so they are off here.
    echo never >/sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
    load_modules
    wait_for_kvm
    ip link set lo up || fail "lo-up"
    echo "testhost: ready kernel=$(uname -r) cpus=$(nproc) kvm=yes"
    run_script
}

main "$@"
