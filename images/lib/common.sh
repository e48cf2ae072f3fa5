# Shared helpers of images/build.sh (sourced, not run): logging, errors, apt package
# installation, input hashing, atomic file publication, long steps with progress lines.

# Where things are; build.sh sets IMAGES_DIR and REPO_ROOT before sourcing this file.
BUILD_DIR="${BUILD_DIR:-$REPO_ROOT/build}"
CACHE_DIR="$BUILD_DIR/cache"
OUT_DIR="$BUILD_DIR/images"
TMP_ROOT="$BUILD_DIR/tmp"
MAKE_JOBS="${IMAGES_JOBS:-2}"
PROGRESS_SECONDS="${IMAGES_PROGRESS_SECONDS:-30}"
APT_UPDATED=0
CURRENT_STEP="setup"

log() { printf '[images] %s\n' "$*"; }

# die MESSAGE: stop the build, naming the step that failed.
die() {
    printf '[images] error: %s: %s\n' "$CURRENT_STEP" "$*" >&2
    exit 1
}

step() { CURRENT_STEP="$1"; }

short_key() { printf '%s…' "${1:0:8}"; }

# pkg_installed PKG: true when dpkg has PKG fully installed.
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

pkg_version() {
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || die "package $1 is not installed"
}

# need_packages PKG...: install the missing ones with apt-get (one `apt-get update` per run).
need_packages() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing Debian packages (${missing[*]}); run as root or: apt-get install ${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ((APT_UPDATED == 0)); then
        apt-get update -qq >"$TMP_ROOT/apt-update.log" 2>&1 \
            || { tail -n 20 "$TMP_ROOT/apt-update.log" >&2; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$TMP_ROOT/apt-install.log" 2>&1 \
        || { tail -n 20 "$TMP_ROOT/apt-install.log" >&2; die "apt-get install failed for: ${missing[*]}"; }
    for p in "${missing[@]}"; do
        pkg_installed "$p" || die "package $p is still not installed after apt-get install"
    done
}

# hash_files FILE...: one "sha256  name" line per file (input to a cache key).
hash_files() {
    local f
    for f in "$@"; do
        [[ -f $f ]] || die "cache key input missing: $f"
        printf '%s  %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "${f##*/}"
    done
}

# hash_dir DIR [GLOB]: hash names and contents of the regular files of DIR (none if absent).
hash_dir() {
    local dir="$1" glob="${2:-*}" f
    [[ -d $dir ]] || { echo "absent $dir"; return 0; }
    for f in "$dir"/$glob; do
        [[ -f $f ]] && hash_files "$f"
    done
    return 0
}

# key_of: read a manifest on stdin, print its sha256 truncated to 16 hex digits.
key_of() { sha256sum | cut -c1-16; }

# stamp_matches STAMPFILE KEY: true when STAMPFILE exists and holds KEY.
stamp_matches() { [[ -f $1 && "$(cat "$1")" == "$2" ]]; }

write_stamp() { printf '%s\n' "$2" >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"; }

# publish SRC DST: copy SRC to DST through a temporary name, so DST is never partial.
publish() {
    cp -f "$1" "$2.tmp.$$" || die "cannot copy $1 to $2"
    mv -f "$2.tmp.$$" "$2"
}

# publish_link TARGET LINK: atomically (re)point symlink LINK at TARGET.
publish_link() {
    ln -sfn "$1" "$2.tmp.$$" && mv -Tf "$2.tmp.$$" "$2" || die "cannot link $2 -> $1"
}

# new_tmpdir NAME VAR: set VAR to a fresh scratch directory under build/tmp, removed at exit.
TMP_DIRS=()
new_tmpdir() {
    local d
    d=$(mktemp -d "$TMP_ROOT/$1.XXXXXX") || die "cannot create a scratch directory"
    TMP_DIRS+=("$d")
    printf -v "$2" '%s' "$d"
}
RUN_PID=
cleanup_tmpdirs() {
    local d
    [[ -n $RUN_PID ]] && kill "$RUN_PID" 2>/dev/null && wait "$RUN_PID" 2>/dev/null
    for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done
}

# run_logged LOGFILE LABEL CMD...: run CMD with output in LOGFILE; every PROGRESS_SECONDS
# print the elapsed time and the last line of the log; on failure show the log's tail.
run_logged() {
    local logfile="$1" label="$2" pid start next last rc=0
    shift 2
    start=$SECONDS
    next=$((start + PROGRESS_SECONDS))
    "$@" >"$logfile" 2>&1 &
    pid=$!
    RUN_PID=$pid
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if ((SECONDS >= next)) && kill -0 "$pid" 2>/dev/null; then
            next=$((next + PROGRESS_SECONDS))
            last=$(tail -n 1 "$logfile" 2>/dev/null | tr -s ' ' | cut -c1-90)
            log "  … $label: $((SECONDS - start)) s: $last"
        fi
    done
    wait "$pid" || rc=$?
    RUN_PID=
    if ((rc != 0)); then
        tail -n 40 "$logfile" >&2
        die "$label failed (exit $rc); full log: $logfile"
    fi
}
