# Initramfs staging helpers of images/build.sh (sourced): busybox with its applet links,
# the device nodes the kernel needs before /init runs, and reproducible gzip newc packing.
# This file is an input of both initramfs cache keys.

BUSYBOX_BIN=/bin/busybox
CPIO_PACKAGES=(busybox-static cpio gzip)

# stage_dirs STAGING DIR...: create directories inside the staging tree.
stage_dirs() {
    local staging="$1" d
    shift
    for d in "$@"; do mkdir -p "$staging/$d"; done
}

# stage_busybox STAGING: /bin/busybox plus a symlink for each applet at its usual path.
stage_busybox() {
    local staging="$1" applet
    [[ -x $BUSYBOX_BIN ]] || die "$BUSYBOX_BIN not found (package busybox-static)"
    mkdir -p "$staging/bin"
    cp "$BUSYBOX_BIN" "$staging/bin/busybox"
    while IFS= read -r applet; do
        [[ -n $applet && $applet != linuxrc && $applet != bin/busybox ]] || continue
        [[ -e $staging/$applet || -L $staging/$applet ]] && continue
        mkdir -p "$staging/$(dirname "$applet")"
        ln -s /bin/busybox "$staging/$applet"
    done < <("$BUSYBOX_BIN" --list-full)
    [[ -L $staging/bin/sh ]] || die "busybox did not provide bin/sh"
}

# stage_device_nodes STAGING: /dev/console and /dev/null, which the kernel opens for /init
# before any devtmpfs is mounted (mknod needs root, which build.sh requires anyway).
stage_device_nodes() {
    local staging="$1"
    mkdir -p "$staging/dev"
    mknod -m 600 "$staging/dev/console" c 5 1 || die "mknod /dev/console failed (not root?)"
    mknod -m 666 "$staging/dev/null" c 1 3 || die "mknod /dev/null failed (not root?)"
}

# stage_etc STAGING HOSTNAME: the few /etc files busybox tools look at.
stage_etc() {
    local staging="$1"
    mkdir -p "$staging/etc"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$staging/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\n' >"$staging/etc/group"
    printf '%s\n' "$2" >"$staging/etc/hostname"
}

# pack_cpio STAGING OUT: gzip-compressed newc archive of STAGING (owner root, fixed times),
# written to a temporary name and renamed, so OUT is never partial.
pack_cpio() {
    local staging="$1" out="$2"
    find "$staging" -exec touch -h -d @0 {} + || die "cannot reset timestamps in $staging"
    (cd "$staging" && find . -mindepth 1 | LC_ALL=C sort \
        | cpio -o -H newc -R 0:0 --reproducible --quiet | gzip -9 -n) >"$out.tmp.$$" \
        || die "packing $out failed"
    mv -f "$out.tmp.$$" "$out"
}
