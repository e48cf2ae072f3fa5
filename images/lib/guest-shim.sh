# Guest programs step of images/build.sh (sourced): the static `offload` command
# (cargo, crate guest-shim) -> build/guest-bin/offload, the kernel module offload.ko
# (kbuild against the guest kernel tree) -> build/guest-modules/offload.ko, and the syscall
# shim (make, guest-shim/shim) -> build/guest-lib/shim.so. All go into the guest initramfs,
# whose cache key hashes them. cargo, kbuild and make are incremental, so these steps run
# on every build.sh run (a few seconds when nothing changed).

GUEST_SHIM_DIR="$REPO_ROOT/guest-shim"
GUEST_KMOD_DIR="$GUEST_SHIM_DIR/kmod"
GUEST_SHIMLIB_DIR="$GUEST_SHIM_DIR/shim"
GUEST_LIB_DIR="$BUILD_DIR/guest-lib"
GUEST_RUST_TARGET=x86_64-unknown-linux-gnu
GUEST_BIN_PACKAGES=(binutils gcc libc6-dev)

# publish_if_changed SRC DST: publish SRC as DST unless DST already has the same bytes.
publish_if_changed() {
    if [[ -f $2 ]] && cmp -s "$1" "$2"; then
        return 1
    fi
    publish "$1" "$2"
}

# build_guest_bin: static `offload` (the explicit --target keeps RUSTFLAGS from
# invalidating the host build in target/release), stripped, into build/guest-bin/.
build_guest_bin() {
    step "guest bin"
    need_packages "${GUEST_BIN_PACKAGES[@]}"
    command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain; see README.md)"
    local logdir="$BUILD_DIR/logs" bin tmp
    bin="$REPO_ROOT/target/$GUEST_RUST_TARGET/release/offload"
    mkdir -p "$logdir" "$GUEST_BIN_DIR"
    log "guest bin: cargo build of offload (static, log: build/logs/guest-bin.log)"
    run_logged "$logdir/guest-bin.log" "cargo build offload" \
        env -C "$REPO_ROOT" RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release -p guest-shim --target "$GUEST_RUST_TARGET" --bin offload
    [[ -x $bin ]] || die "cargo finished but $bin is missing"
    if [[ $(readelf -lW "$bin") == *"program interpreter"* ]]; then
        die "$bin is dynamically linked (crt-static ignored?)"
    fi
    new_tmpdir guest-bin tmp
    strip -o "$tmp/offload" "$bin" || die "strip $bin failed"
    if publish_if_changed "$tmp/offload" "$GUEST_BIN_DIR/offload"; then
        log "guest bin: offload updated ($(du -k "$GUEST_BIN_DIR/offload" | cut -f1) KiB, static)"
    else
        log "guest bin: offload unchanged"
    fi
    build_guest_progs
}

# build_guest_progs: the e2e test and benchmark programs of tests/guest/*.c, dynamically
# linked against the build machine's glibc (which the guest initramfs carries), as
# build/guest-bin/ot-NAME (so /usr/bin/ot-NAME in the guest).
build_guest_progs() {
    local src name tmp
    new_tmpdir guest-progs tmp
    for src in "$REPO_ROOT"/tests/guest/*.c; do
        name="ot-$(basename "$src" .c)"
        gcc -O2 -Wall -Wextra -Werror -pthread -o "$tmp/$name" "$src" \
            || die "gcc $src failed"
        publish_if_changed "$tmp/$name" "$GUEST_BIN_DIR/$name" && log "guest bin: $name updated"
    done
    return 0
}

# build_guest_kmod: offload.ko against the published guest kernel tree. The tree's key is
# remembered: a different kernel means `make clean` first (kbuild's dependency files name
# the old tree, which stays in the cache, so it would not notice on its own).
build_guest_kmod() {
    step "guest kmod"
    need_packages "${KERNEL_PACKAGES[@]}"
    local tree="$OUT_DIR/guest/kernel-tree" logdir="$BUILD_DIR/logs" key stamp release ko vermagic
    [[ -f $tree/.vmm-complete && -f $OUT_DIR/guest/.kernel.key ]] \
        || die "no built guest kernel tree at $tree; run images/build.sh guest-kernel first"
    key=$(cat "$OUT_DIR/guest/.kernel.key")
    stamp="$GUEST_MODULES_DIR/.kernel.key"
    ko="$GUEST_KMOD_DIR/offload.ko"
    mkdir -p "$logdir" "$GUEST_MODULES_DIR"
    if ! stamp_matches "$stamp" "$key"; then
        log "guest kmod: no module build against kernel key $(short_key "$key") yet: make clean first"
        kmake "$tree" M="$GUEST_KMOD_DIR" clean >"$logdir/guest-kmod.log" 2>&1 \
            || die "make clean of $GUEST_KMOD_DIR failed (log: build/logs/guest-kmod.log)"
        rm -f "$GUEST_MODULES_DIR/offload.ko"
    fi
    log "guest kmod: kbuild of offload.ko (log: build/logs/guest-kmod.log)"
    run_logged "$logdir/guest-kmod.log" "make M=guest-shim/kmod modules" \
        kmake "$tree" M="$GUEST_KMOD_DIR" -j"$MAKE_JOBS" modules
    [[ -f $ko ]] || die "kbuild finished but $ko is missing"
    release=$(cat "$OUT_DIR/guest/kernel.release")
    vermagic=$(modinfo -F vermagic "$ko") || die "modinfo $ko failed"
    [[ $vermagic == "$release "* ]] || die "offload.ko vermagic '$vermagic' does not match kernel $release"
    if publish_if_changed "$ko" "$GUEST_MODULES_DIR/offload.ko"; then
        log "guest kmod: offload.ko updated ($(du -k "$ko" | cut -f1) KiB, vermagic $vermagic)"
    else
        log "guest kmod: offload.ko unchanged"
    fi
    write_stamp "$stamp" "$key"
}

# build_guest_shim: shim.so (LD_PRELOADed into marked processes; /lib/offload/shim.so in the
# guest) with its own Makefile, published into build/guest-lib/. Called by the initramfs
# step itself, so an initramfs never packs a shim older than the sources its key hashes.
build_guest_shim() {
    need_packages "${GUEST_BIN_PACKAGES[@]}" make
    local logdir="$BUILD_DIR/logs"
    mkdir -p "$logdir" "$GUEST_LIB_DIR"
    run_logged "$logdir/guest-shim.log" "make guest-shim/shim" make -C "$GUEST_SHIMLIB_DIR" shim.so
    if publish_if_changed "$GUEST_SHIMLIB_DIR/shim.so" "$GUEST_LIB_DIR/shim.so"; then
        log "guest shim: shim.so updated ($(du -k "$GUEST_LIB_DIR/shim.so" | cut -f1) KiB)"
    fi
}
