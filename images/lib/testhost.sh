# Emulated test host (L1) step of images/build.sh (sourced): Debian's linux-image-cloud-amd64
# kernel -> build/images/testhost/vmlinuz, and busybox + the KVM (and virtio-net) modules of
# that kernel, decompressed, + /init (images/testhost-init.sh) -> initramfs-base.cpio.gz.
# This file is an input of the test host's cache key.

TESTHOST_INIT="$IMAGES_DIR/testhost-init.sh"
TESTHOST_PACKAGES=(linux-image-cloud-amd64 xz-utils)
# Module groups, loaded by the test host's init in this order (dependencies first).
# kvm: required, a failure is fatal. net: virtio-net for multi-host tests, best effort.
TESTHOST_KVM_MODULES=(irqbypass kvm kvm-amd)
TESTHOST_NET_MODULES=(virtio_pci virtio_net)

# testhost_kernel_version: newest /lib/modules/*cloud-amd64 that has a /boot/vmlinuz.
testhost_kernel_version() {
    local d ver
    for d in /lib/modules/*cloud-amd64; do
        ver=${d##*/}
        [[ -f /boot/vmlinuz-$ver && -f $d/modules.dep ]] && printf '%s\n' "$ver"
    done | sort -V | tail -n 1
}

testhost_manifest() {
    local ver="$1" owner
    owner=$(dpkg-query -S "/boot/vmlinuz-$ver" 2>/dev/null | cut -d: -f1 | head -n 1) || true
    [[ -n $owner ]] || die "/boot/vmlinuz-$ver belongs to no Debian package"
    echo "kernel $ver $owner $(pkg_version "$owner")"
    hash_files "/boot/vmlinuz-$ver"
    echo "busybox-static $(pkg_version busybox-static)"
    hash_files "$TESTHOST_INIT" "$IMAGES_DIR/lib/testhost.sh" "$IMAGES_DIR/lib/cpio.sh"
}

# Module database of one kernel: MOD_PATH[name]=relative path, MOD_DEPS[path]=its deps.
declare -A MOD_PATH=() MOD_DEPS=() MOD_SEEN=()
MOD_ORDER=()

load_module_db() {
    local dir="$1" path deps name
    while IFS=: read -r path deps; do
        name=${path##*/}
        name=${name%%.ko*}
        MOD_PATH[${name//-/_}]=$path
        MOD_DEPS[$path]=$deps
    done <"$dir/modules.dep"
}

# module_is_builtin DIR NAME
module_is_builtin() {
    sed 's#.*/##; s#\.ko$##; s#-#_#g' "$1/modules.builtin" | grep -qxF "${2//-/_}"
}

# order_module PATH: append PATH after its dependencies to MOD_ORDER (once).
order_module() {
    local path="$1" dep
    [[ -n ${MOD_SEEN[$path]:-} ]] && return 0
    MOD_SEEN[$path]=1
    for dep in ${MOD_DEPS[$path]:-}; do order_module "$dep"; done
    MOD_ORDER+=("$path")
}

# stage_module DIR PATH STAGING_MODDIR: copy one module, decompressed to plain .ko.
stage_module() {
    local src="$1/$2" name=${2##*/} dst
    dst="$3/${name%%.ko*}.ko"
    case $name in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
        *.ko.zst) need_packages zstd && zstd -qdc "$src" >"$dst" ;;
        *) die "unknown module format: $src" ;;
    esac || die "cannot decompress $src"
}

# stage_module_group DIR STAGING_MODDIR GROUP REQUIRED NAME...: stage NAME... and their
# dependencies not staged yet; append "GROUP file.ko" lines to load-order.
stage_module_group() {
    local dir="$1" moddir="$2" group="$3" required="$4" name path first
    shift 4
    for name in "$@"; do
        path=${MOD_PATH[${name//-/_}]:-}
        if [[ -z $path ]]; then
            module_is_builtin "$dir" "$name" && continue
            [[ $required == yes ]] && die "module $name not found in $dir (package ${TESTHOST_PACKAGES[0]})"
            log "test host: note: module $name is neither built in nor a module; skipped"
            continue
        fi
        first=${#MOD_ORDER[@]}
        order_module "$path"
        for path in "${MOD_ORDER[@]:first}"; do
            stage_module "$dir" "$path" "$moddir"
            name=${path##*/}
            printf '%s %s\n' "$group" "${name%%.ko*}.ko" >>"$moddir/load-order"
        done
    done
}

build_testhost() {
    step "test host image"
    need_packages "${TESTHOST_PACKAGES[@]}" "${CPIO_PACKAGES[@]}"
    [[ -f $TESTHOST_INIT ]] || die "$TESTHOST_INIT is missing"
    local ver key out="$OUT_DIR/testhost" staging moddir
    ver=$(testhost_kernel_version)
    [[ -n $ver ]] || die "no /lib/modules/*cloud-amd64 with a matching /boot/vmlinuz (package linux-image-cloud-amd64)"
    key=$(testhost_manifest "$ver" | key_of)
    mkdir -p "$out"
    if stamp_matches "$out/.key" "$key" && [[ -f $out/vmlinuz && -f $out/initramfs-base.cpio.gz ]]; then
        log "test host ($ver): cached (key $(short_key "$key"))"
        return 0
    fi
    rm -f "$out/.key"
    new_tmpdir testhost-initramfs staging
    moddir="$staging/lib/modules/$ver"
    stage_dirs "$staging" bin sbin usr/bin usr/sbin usr/share/vmm etc root proc sys dev tmp run \
        lib lib64 lib/x86_64-linux-gnu "lib/modules/$ver"
    stage_busybox "$staging"
    stage_device_nodes "$staging"
    stage_etc "$staging" testhost
    install -m 0755 "$TESTHOST_INIT" "$staging/init"
    load_module_db "/lib/modules/$ver"
    : >"$moddir/load-order"
    stage_module_group "/lib/modules/$ver" "$moddir" kvm yes "${TESTHOST_KVM_MODULES[@]}"
    stage_module_group "/lib/modules/$ver" "$moddir" net no "${TESTHOST_NET_MODULES[@]}"
    pack_cpio "$staging" "$out/initramfs-base.cpio.gz"
    publish "/boot/vmlinuz-$ver" "$out/vmlinuz"
    printf '%s\n' "$ver" >"$out/kernel.release.tmp.$$" && mv -f "$out/kernel.release.tmp.$$" "$out/kernel.release"
    write_stamp "$out/.key" "$key"
    log "test host ($ver): built (key $(short_key "$key"); modules: $(cut -d' ' -f2 "$moddir/load-order" | tr '\n' ' ')$(du -k "$out/initramfs-base.cpio.gz" | cut -f1) KiB)"
}
