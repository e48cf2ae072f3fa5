#!/usr/bin/env bash
# guest-shim/shim/tests/run-tests.sh: native tests of shim.so (mode B: every trapped call
# runs locally). Builds shim.so and the test programs, runs each program (and a few system
# binaries) without and with LD_PRELOAD=shim.so, and requires identical output and exit
# status, plus a stats file (OFFLOAD_SHIM_STATS) proving that calls were really trapped.
# Needs Syscall User Dispatch (Linux >= 5.11); no KVM. Exit status: number of failures.
# Usage: guest-shim/shim/tests/run-tests.sh   (or: make -C guest-shim/shim check)
set -uo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHIM_DIR=$(cd "$TESTS_DIR/.." && pwd)
BIN="$TESTS_DIR/bin"
SHIM="$SHIM_DIR/shim.so"
FAILS=0
WORK=$(mktemp -d /tmp/shim-tests.XXXXXX)
trap '[[ -n ${KEEP:-} ]] || rm -rf "$WORK"' EXIT

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

build() {
    make -s -C "$SHIM_DIR" shim.so || { echo "FAIL: build of shim.so"; exit 1; }
    if [[ -n $(nm -D --undefined-only "$SHIM") ]]; then
        echo "FAIL: shim.so imports symbols (it must not call libc):"; nm -D --undefined-only "$SHIM"; exit 1
    fi
    mkdir -p "$BIN"
    local t
    for t in t_fileio t_threads t_forkexec t_signals t_memory; do
        gcc -O2 -Wall -Wextra -Werror -pthread -o "$BIN/$t" "$TESTS_DIR/$t.c" \
            || { echo "FAIL: build of $t"; exit 1; }
    done
    gcc -O2 -Wall -Wextra -Werror -o "$BIN/t_record" "$TESTS_DIR/t_record.c" "$SHIM_DIR/record.c" \
        || { echo "FAIL: build of t_record"; exit 1; }
}

# calls_of STATS COMM CLASS: summed calls= of CLASS lines of processes named COMM.
calls_of() {
    awk -v c="comm=$2" -v k="class=$3" '$3 == c && $5 == k { split($6, a, "="); s += a[2] } END { print s + 0 }' "$1"
}

# has_nr STATS COMM NR: some line of COMM lists syscall NR in its top list.
has_nr() {
    grep -E "comm=$2 .* top=(.*,)?$3:" "$1" >/dev/null
}

# SHIM_ENV: extra environment of the shimmed run (the marked-mode pass sets it);
# SHIM_WRAP: a command both runs go through (setarch -R for the migration pass)
SHIM_ENV=
SHIM_WRAP=

# run_pair NAME PREP CMD...: run CMD natively and under the shim (each after PREP, which
# resets the scratch state); outputs and statuses must match. Leaves the stats in
# $WORK/NAME.stats for the checks that follow.
run_pair() {
    local name=$1 prep=$2 rc1 rc2
    shift 2
    eval "$prep"
    (cd "$WORK/run" && $SHIM_WRAP timeout 20 "$@") >"$WORK/$name.native" 2>&1
    rc1=$?
    eval "$prep"
    rm -f "$WORK/$name.stats"
    (cd "$WORK/run" && $SHIM_WRAP env $SHIM_ENV OFFLOAD_SHIM_STATS="$WORK/$name.stats" LD_PRELOAD="$SHIM" timeout 20 "$@") \
        >"$WORK/$name.shim" 2>&1
    rc2=$?
    if [[ $rc1 != "$rc2" ]]; then
        fail "$name: exit status $rc1 natively, $rc2 with the shim"
    elif ! diff -u "$WORK/$name.native" "$WORK/$name.shim" >"$WORK/$name.diff"; then
        fail "$name: output differs with the shim:"; head -40 "$WORK/$name.diff"
    elif [[ ! -s $WORK/$name.stats ]]; then
        fail "$name: no stats file: the shim trapped nothing"
    else
        return 0
    fi
    return 1
}

# need NAME WHAT CONDITION...: one stats assertion.
need() {
    local name=$1 what=$2
    shift 2
    if "$@"; then return 0; fi
    fail "$name: stats: $what"; sed 's/^/    /' "$WORK/$name.stats" | head -20
}

ge() { (($1 >= $2)); }

fresh_dir() { rm -rf "$WORK/run" && mkdir -p "$WORK/run"; }
# ls of / without the entries other people's work changes while we run
# (spaces squeezed: column widths depend on the excluded entries' link counts, e.g. /proc)
ls_root() { ls -la / | grep -Ev ' (tmp|run|root|work|proc|sys|dev|\.|\.\.)$' | tr -s ' '; }
export -f ls_root

t0=$SECONDS
build
ran=0

check() { ran=$((ran + 1)); echo "ok   $1"; }

if run_pair fileio fresh_dir "$BIN/t_fileio" "$WORK/run"; then
    need fileio "HOME calls" ge "$(calls_of "$WORK/fileio.stats" t_fileio HOME)" 20 &&
        need fileio "openat (257) trapped" has_nr "$WORK/fileio.stats" t_fileio 257 &&
        need fileio "getdents64 (217) trapped" has_nr "$WORK/fileio.stats" t_fileio 217 &&
        check fileio
fi

if run_pair threads fresh_dir "$BIN/t_threads"; then
    need threads "clone3 (435) trapped 12 times" grep -q "comm=t_threads .*class=SPECIAL .*435:12" "$WORK/threads.stats" &&
        need threads "thread exits (60) trapped" has_nr "$WORK/threads.stats" t_threads 60 &&
        need threads "LOCAL nanosleep/clock_nanosleep" ge "$(calls_of "$WORK/threads.stats" t_threads LOCAL)" 90 &&
        check threads
fi

if run_pair forkexec fresh_dir "$BIN/t_forkexec"; then
    # the exec'd echo images loaded the shim again (LD_PRELOAD survived exec): 3 of them
    need forkexec "3 echo processes with stats" ge "$(grep -c 'comm=echo .*class=HOME' "$WORK/forkexec.stats")" 3 &&
        need forkexec "main process: clone3 x3 (thread, 2 posix_spawn), clone x2 (fork), vfork" \
            grep -qE "comm=t_forkexec at=exit_group class=SPECIAL .*(435:3.*56:2|56:2.*435:3)" "$WORK/forkexec.stats" &&
        need forkexec "fork children counted on their own (>= 1000 getppid)" \
            grep -q "comm=t_forkexec .*class=HOME .*110:1000" "$WORK/forkexec.stats" &&
        check forkexec
fi

if run_pair signals fresh_dir "$BIN/t_signals"; then
    need signals "rt_sigreturn (15) of program handlers trapped" has_nr "$WORK/signals.stats" t_signals 15 &&
        need signals "rt_sigprocmask (14) interposed" has_nr "$WORK/signals.stats" t_signals 14 &&
        check signals
fi

if run_pair ls-root fresh_dir bash -c ls_root; then
    need ls-root "ls trapped calls" ge "$(calls_of "$WORK/ls-root.stats" ls HOME)" 20 && check ls-root
fi

if run_pair ls-dir 'fresh_dir; mkdir -p $WORK/run/d/e; echo x >$WORK/run/d/f; ln -s f $WORK/run/d/l; touch -h -d @0 $WORK/run/d/l; touch -d @0 $WORK/run/d $WORK/run/d/* $WORK/run' \
    ls -la --time-style=+%s d; then
    need ls-dir "ls trapped calls" ge "$(calls_of "$WORK/ls-dir.stats" ls HOME)" 20 && check ls-dir
fi

SH_SCRIPT='for i in 1 2 3; do echo "n=$i"; done; /bin/echo piped | cat; x=$(printf "%s" sub); echo "$x"; (exit 3); echo "status=$?"; ls / >/dev/null && echo listed; sort </dev/null; exit 5'
if run_pair sh fresh_dir sh -c "$SH_SCRIPT"; then
    need sh "sh trapped calls" ge "$(calls_of "$WORK/sh.stats" sh HOME)" 5 &&
        need sh "children (cat, echo, ls, sort) shimmed" ge "$(grep -cE 'comm=(cat|echo|ls|sort) .*class=HOME' "$WORK/sh.stats")" 4 &&
        check sh
fi

# a SIGSYS the program did not handle (kill -SYS, not a SUD trap) keeps its default action:
# sh dies of it (status 159 both ways; no exit_group, so only timeout's exec lines in stats)
if run_pair kill-sys fresh_dir sh -c 'echo before; kill -SYS $$; echo after' 2>/dev/null; then
    check kill-sys
fi

if run_pair memory fresh_dir "$BIN/t_memory"; then
    need memory "mmap/munmap/mprotect/mremap/brk trapped" grep -q "comm=t_memory .*class=LAYOUT .*12:" "$WORK/memory.stats" &&
        check memory
fi

# ---- marked mode: every private writable mapping in the window (a memfd stands in for
# /dev/offload). Same programs, same outputs; the window line of each marked process must
# say private_rw=0 (no private writable mapping left besides the shim's altstacks).
SHIM_ENV="OFFLOAD_MARKED=1 OFFLOAD_SHIM_FAKE_WINDOW=1G"

# marked_ok NAME COMM: COMM ended marked with nothing private left, and no marked process
# of the run left anything private.
marked_ok() {
    grep -qE "comm=$2 at=exit_group window marked=1 .* private_rw=0 " "$WORK/$1.stats" &&
        ! grep -qE "window marked=1 .* private_rw=[1-9]" "$WORK/$1.stats"
}

futex_private_of() {
    grep -E "comm=$2 at=exit_group window marked=1" "$WORK/$1.stats" | sed -E 's/.*futex_private=([0-9]+).*/\1/' | head -1
}

if run_pair m-fileio fresh_dir "$BIN/t_fileio" "$WORK/run"; then
    need m-fileio "t_fileio marked, private_rw=0" marked_ok m-fileio t_fileio && check m-fileio
fi
if run_pair m-threads fresh_dir "$BIN/t_threads"; then
    need m-threads "t_threads marked, private_rw=0" marked_ok m-threads t_threads &&
        need m-threads "pthread_join futexes made private" ge "$(futex_private_of m-threads t_threads)" 1 &&
        check m-threads
fi
if run_pair m-forkexec fresh_dir "$BIN/t_forkexec"; then
    need m-forkexec "t_forkexec marked, private_rw=0" marked_ok m-forkexec t_forkexec &&
        need m-forkexec "fork children unmarked" grep -q "comm=t_forkexec at=exit_group window marked=0" "$WORK/m-forkexec.stats" &&
        need m-forkexec "exec'd echo marked again" grep -q "comm=echo at=exit_group window marked=1 .* private_rw=0 " "$WORK/m-forkexec.stats" &&
        check m-forkexec
fi
if run_pair m-signals fresh_dir "$BIN/t_signals"; then
    need m-signals "t_signals marked, private_rw=0" marked_ok m-signals t_signals && check m-signals
fi
if run_pair m-memory fresh_dir "$BIN/t_memory"; then
    need m-memory "t_memory marked, private_rw=0" marked_ok m-memory t_memory && check m-memory
fi
if run_pair m-sh fresh_dir sh -c "$SH_SCRIPT"; then
    need m-sh "sh marked, private_rw=0" marked_ok m-sh sh && check m-sh
fi

# ---- migration to self (docs/offload-threads.md section 3, natively): OFFLOAD_ON makes the
# constructor capture the main thread's context and write the spawn record into the window
# (a file here); test mode then execs the program with OFFLOAD_SHADOW, whose shim checks
# the file mappings, maps the window regions over its own memory and resumes the captured
# context. No ASLR (setarch -R), as `offload run` does. Outputs must equal the native ones.
if "$BIN/t_record" >/dev/null; then check record; else fail "record: encode/decode unit test"; fi

migrated_ok() {
    grep -qE "comm=$2 at=exit_group window marked=1 .* private_rw=0 .* migrated=1" "$WORK/$1.stats"
}
SHIM_ENV="OFFLOAD_ON=0 OFFLOAD_SHIM_MIGRATE_TEST=1 OFFLOAD_SHIM_FAKE_WINDOW=1G@$WORK/win"
SHIM_WRAP="setarch -R"
if run_pair g-fileio fresh_dir "$BIN/t_fileio" "$WORK/run"; then
    need g-fileio "t_fileio resumed from its record" migrated_ok g-fileio t_fileio && check g-fileio
fi
if run_pair g-threads fresh_dir "$BIN/t_threads"; then
    need g-threads "t_threads resumed from its record" migrated_ok g-threads t_threads && check g-threads
fi
if run_pair g-forkexec fresh_dir "$BIN/t_forkexec"; then
    need g-forkexec "t_forkexec resumed from its record" migrated_ok g-forkexec t_forkexec && check g-forkexec
fi
if run_pair g-signals fresh_dir "$BIN/t_signals"; then
    need g-signals "t_signals resumed from its record" migrated_ok g-signals t_signals && check g-signals
fi
if run_pair g-memory fresh_dir "$BIN/t_memory"; then
    need g-memory "t_memory resumed from its record" migrated_ok g-memory t_memory && check g-memory
fi
rm -f "$WORK"/win.*
SHIM_ENV=
SHIM_WRAP=

# OFFLOAD_SHIM=off: the shim must do nothing at all (no stats file)
rm -f "$WORK/off.stats"
out=$(OFFLOAD_SHIM=off OFFLOAD_SHIM_STATS="$WORK/off.stats" LD_PRELOAD="$SHIM" /bin/echo off)
if [[ $out == off && ! -e $WORK/off.stats ]]; then check shim-off; else fail "OFFLOAD_SHIM=off still trapped"; fi

echo "shim tests: $ran passed, $FAILS failed ($((SECONDS - t0)) s)"
exit $((FAILS > 0))
