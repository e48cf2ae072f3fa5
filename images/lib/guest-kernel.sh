# Guest (L2) kernel step of images/build.sh (sourced): linux-source-6.1 + `make tinyconfig`
# + images/guest-kernel.config, built once per cache key into build/cache/kernel-<key>/ (the
# whole configured and built tree, kept for `make -C <tree> M=...` module builds), then
# published as build/images/guest/{vmlinux,bzImage,kernel.release,kernel-tree}.
# This file is an input of the kernel's cache key: editing it rebuilds the kernel.

KERNEL_SOURCE_PKG=linux-source-6.1
KERNEL_SOURCE_TAR=/usr/src/linux-source-6.1.tar.xz
KERNEL_FRAGMENT="$IMAGES_DIR/guest-kernel.config"
KERNEL_PACKAGES=(linux-source-6.1 make gcc libc6-dev bc flex bison libelf-dev libssl-dev xz-utils kmod)

# The manifest the kernel's cache key is the hash of.
guest_kernel_manifest() {
    echo "source $KERNEL_SOURCE_PKG $(pkg_version "$KERNEL_SOURCE_PKG")"
    echo "compiler $(gcc --version | head -n 1)"
    hash_files "$KERNEL_FRAGMENT" "$IMAGES_DIR/lib/guest-kernel.sh"
}

# kmake TREE ARGS...: make in TREE with a clean, reproducible kbuild environment.
kmake() {
    local tree="$1"
    shift
    env -u ARCH -u CROSS_COMPILE -u KBUILD_OUTPUT -u O -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
        KBUILD_BUILD_USER=vmm KBUILD_BUILD_HOST=images \
        KBUILD_BUILD_TIMESTAMP='Thu Jan  1 00:00:00 UTC 1970' \
        make -C "$tree" "$@"
}

# fragment_lines: the settings of the fragment, one per line, comments dropped.
fragment_lines() {
    grep -E '^(CONFIG_[A-Za-z0-9_]+=.*|# CONFIG_[A-Za-z0-9_]+ is not set)$' "$KERNEL_FRAGMENT"
}

# verify_fragment TREE: every setting of the fragment must be in TREE/.config as written.
verify_fragment() {
    local config="$1/.config" line sym dropped=()
    while IFS= read -r line; do
        if [[ $line == "# "* ]]; then
            sym=${line#\# }
            sym=${sym%% *}
            grep -q "^$sym=" "$config" && dropped+=("$line (got: $(grep "^$sym=" "$config"))")
        else
            sym=${line%%=*}
            grep -qxF "$line" "$config" \
                || dropped+=("$line (got: $(grep -E "^$sym=|^# $sym is not set" "$config" || echo absent))")
        fi
    done < <(fragment_lines)
    if ((${#dropped[@]} > 0)); then
        printf '[images]   dropped by olddefconfig: %s\n' "${dropped[@]}" >&2
        die "${#dropped[@]} option(s) of images/guest-kernel.config did not survive olddefconfig (missing dependency?)"
    fi
}

# configure_kernel TREE LOG: tinyconfig, merge the fragment, olddefconfig, verify.
configure_kernel() {
    local tree="$1" logfile="$2"
    kmake "$tree" tinyconfig >>"$logfile" 2>&1 || die "make tinyconfig failed (log: $logfile)"
    (cd "$tree" && scripts/kconfig/merge_config.sh -m .config "$KERNEL_FRAGMENT") >>"$logfile" 2>&1 \
        || die "merge_config.sh failed (log: $logfile)"
    kmake "$tree" olddefconfig >>"$logfile" 2>&1 || die "make olddefconfig failed (log: $logfile)"
    verify_fragment "$tree"
}

# build_kernel_tree TREE KEY: unpack, configure and build into TREE; stamp it complete last.
build_kernel_tree() {
    local tree="$1" key="$2" logdir="$BUILD_DIR/logs"
    mkdir -p "$logdir"
    [[ -f $KERNEL_SOURCE_TAR ]] || die "$KERNEL_SOURCE_TAR not found (package $KERNEL_SOURCE_PKG)"
    log "guest kernel: building (key $(short_key "$key"); ≈5 min on 2 cores, log: build/logs/kernel-$key.log)"
    rm -rf "$tree"
    mkdir -p "$tree"
    : >"$logdir/kernel-$key.log"
    run_logged "$logdir/kernel-$key.unpack.log" "unpacking $KERNEL_SOURCE_TAR" \
        tar -xf "$KERNEL_SOURCE_TAR" -C "$tree" --strip-components=1
    configure_kernel "$tree" "$logdir/kernel-$key.log"
    # `modules` (none are configured) writes Module.symvers and prepares the tree for M=.
    run_logged "$logdir/kernel-$key.log" "make -j$MAKE_JOBS vmlinux bzImage modules" \
        kmake "$tree" -j"$MAKE_JOBS" vmlinux bzImage modules
    verify_fragment "$tree"
    local f
    for f in vmlinux arch/x86/boot/bzImage include/config/kernel.release Module.symvers; do
        [[ -s $tree/$f ]] || die "kernel build finished but $f is missing"
    done
    [[ $(head -c 4 "$tree/vmlinux" | tail -c 3) == ELF ]] || die "vmlinux is not an ELF file"
    write_stamp "$tree/.vmm-complete" "$key"
}

# publish_guest_kernel TREE KEY: copy the kernel images out of the tree into build/images/guest.
publish_guest_kernel() {
    local tree="$1" key="$2" out="$OUT_DIR/guest"
    mkdir -p "$out"
    if stamp_matches "$out/.kernel.key" "$key" && [[ -f $out/vmlinux && -f $out/bzImage ]]; then
        return 0
    fi
    rm -f "$out/.kernel.key"
    publish "$tree/vmlinux" "$out/vmlinux"
    publish "$tree/arch/x86/boot/bzImage" "$out/bzImage"
    publish "$tree/include/config/kernel.release" "$out/kernel.release"
    publish_link "../../cache/kernel-$key" "$out/kernel-tree"
    write_stamp "$out/.kernel.key" "$key"
}

build_guest_kernel() {
    step "guest kernel"
    need_packages "${KERNEL_PACKAGES[@]}"
    local key tree
    key=$(guest_kernel_manifest | key_of)
    tree="$CACHE_DIR/kernel-$key"
    if stamp_matches "$tree/.vmm-complete" "$key"; then
        log "guest kernel: cached (key $(short_key "$key"))"
    else
        local start=$SECONDS
        build_kernel_tree "$tree" "$key"
        log "guest kernel: built in $((SECONDS - start)) s ($(cat "$tree/include/config/kernel.release"))"
    fi
    publish_guest_kernel "$tree" "$key"
}
