# Guest (L2) initramfs step of images/build.sh (sourced): busybox, /init (images/guest-init.sh),
# /lib/modules/*.ko (from build/guest-modules/, optional) and the project's guest binaries
# (every file of build/guest-bin/, optional) in /usr/bin -> build/images/guest/initramfs.cpio.gz.
# This file is an input of the initramfs cache key.

GUEST_INIT="$IMAGES_DIR/guest-init.sh"
GUEST_BIN_DIR="$BUILD_DIR/guest-bin"
GUEST_MODULES_DIR="$BUILD_DIR/guest-modules"

guest_initramfs_manifest() {
    echo "busybox-static $(pkg_version busybox-static)"
    hash_files "$GUEST_INIT" "$IMAGES_DIR/lib/guest-initramfs.sh" "$IMAGES_DIR/lib/cpio.sh"
    echo "guest-bin:"
    hash_dir "$GUEST_BIN_DIR"
    echo "guest-modules:"
    hash_dir "$GUEST_MODULES_DIR" '*.ko'
}

# stage_guest_files STAGING: init, modules and guest binaries on top of busybox.
stage_guest_files() {
    local staging="$1" f n_bin=0 n_ko=0
    install -m 0755 "$GUEST_INIT" "$staging/init"
    if [[ -d $GUEST_BIN_DIR ]]; then
        for f in "$GUEST_BIN_DIR"/*; do
            [[ -f $f ]] || continue
            rm -f "$staging/usr/bin/${f##*/}" # a guest binary replaces a busybox applet link
            install -m 0755 "$f" "$staging/usr/bin/${f##*/}"
            n_bin=$((n_bin + 1))
        done
    fi
    if [[ -d $GUEST_MODULES_DIR ]]; then
        for f in "$GUEST_MODULES_DIR"/*.ko; do
            [[ -f $f ]] || continue
            install -m 0644 "$f" "$staging/lib/modules/${f##*/}"
            n_ko=$((n_ko + 1))
        done
    fi
    GUEST_STAGED="$n_bin guest binaries, $n_ko modules"
}

build_guest_initramfs() {
    step "guest initramfs"
    need_packages "${CPIO_PACKAGES[@]}"
    [[ -f $GUEST_INIT ]] || die "$GUEST_INIT is missing"
    local key out="$OUT_DIR/guest" staging
    key=$(guest_initramfs_manifest | key_of)
    mkdir -p "$out"
    if stamp_matches "$out/.initramfs.key" "$key" && [[ -f $out/initramfs.cpio.gz ]]; then
        log "guest initramfs: cached (key $(short_key "$key"))"
        return 0
    fi
    rm -f "$out/.initramfs.key"
    new_tmpdir guest-initramfs staging
    stage_dirs "$staging" bin sbin usr/bin usr/sbin etc root proc sys dev tmp run lib/modules
    stage_busybox "$staging"
    stage_device_nodes "$staging"
    stage_etc "$staging" guest
    stage_guest_files "$staging"
    pack_cpio "$staging" "$out/initramfs.cpio.gz"
    write_stamp "$out/.initramfs.key" "$key"
    log "guest initramfs: built (key $(short_key "$key"); $GUEST_STAGED; $(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
}
