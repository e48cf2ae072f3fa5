# Guest (L2) initramfs step of images/build.sh (sourced): busybox, /init (images/guest-init.sh),
# /lib/modules/*.ko (from build/guest-modules/, optional), the project's guest binaries
# (every file of build/guest-bin/, optional) in /usr/bin, the syscall shim as
# /lib/offload/shim.so and the build machine's glibc (loader + the common libraries) for
# dynamically linked programs -> build/images/guest/initramfs.cpio.gz.
# This file is an input of the initramfs cache key.

GUEST_INIT="$IMAGES_DIR/guest-init.sh"
GUEST_BIN_DIR="$BUILD_DIR/guest-bin"
GUEST_MODULES_DIR="$BUILD_DIR/guest-modules"
# glibc for dynamically linked guest programs (the shim is LD_PRELOADed, so marked programs
# are dynamic): the loader at its ELF interpreter path, libraries where its built-in search
# path finds them without an ld.so.cache. libgcc_s: glibc dlopens it for thread unwinding.
GUEST_LOADER=/lib64/ld-linux-x86-64.so.2
GUEST_LIBS=(libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libgcc_s.so.1)
GUEST_LIBS_DIR=/lib/x86_64-linux-gnu

guest_initramfs_manifest() {
    echo "busybox-static $(pkg_version busybox-static)"
    hash_files "$GUEST_INIT" "$IMAGES_DIR/lib/guest-initramfs.sh" "$IMAGES_DIR/lib/cpio.sh"
    echo "guest-bin:"
    hash_dir "$GUEST_BIN_DIR"
    echo "guest-modules:"
    hash_dir "$GUEST_MODULES_DIR" '*.ko'
    echo "libc6 $(pkg_version libc6) libgcc-s1 $(pkg_version libgcc-s1)"
    echo "shim sources:"
    hash_files "$GUEST_SHIMLIB_DIR"/*.c "$GUEST_SHIMLIB_DIR"/*.h "$GUEST_SHIMLIB_DIR"/*.S \
        "$GUEST_SHIMLIB_DIR/Makefile" "$GUEST_SHIMLIB_DIR/shim.map"
    echo "guest-lib:"
    hash_dir "$GUEST_LIB_DIR"
}

# stage_guest_libs STAGING: /lib/offload/shim.so and glibc (real files, symlinks resolved).
stage_guest_libs() {
    local staging="$1" lib
    [[ -f $GUEST_LIB_DIR/shim.so ]] || die "$GUEST_LIB_DIR/shim.so is missing"
    install -D -m 0644 "$GUEST_LIB_DIR/shim.so" "$staging/lib/offload/shim.so"
    install -D -m 0755 "$(readlink -f "$GUEST_LOADER")" "$staging$GUEST_LOADER"
    for lib in "${GUEST_LIBS[@]}"; do
        [[ -e $GUEST_LIBS_DIR/$lib ]] || die "$GUEST_LIBS_DIR/$lib is missing (package libc6/libgcc-s1)"
        install -D -m 0644 "$(readlink -f "$GUEST_LIBS_DIR/$lib")" "$staging$GUEST_LIBS_DIR/$lib"
    done
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
    build_guest_shim
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
    stage_guest_libs "$staging"
    pack_cpio "$staging" "$out/initramfs.cpio.gz"
    write_stamp "$out/.initramfs.key" "$key"
    log "guest initramfs: built (key $(short_key "$key"); $GUEST_STAGED, shim + glibc; $(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
}
