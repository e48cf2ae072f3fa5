//! End-to-end: `offload run` (issue 5, item 6) with two VMs a and b on one test host. The
//! programs are tests/guest/*.c, built into the guest image as `/usr/bin/ot-*`.
//!
//! Threads, fork and placement of offloaded threads: docs/syscall-routing.md, "Threads,
//! fork and placement of offloaded threads". Run with
//! `cargo test --release -p offload-tests --test offload_run -- --test-threads=1`.

use std::sync::OnceLock;

use offload_tests::{Harness, RunOpts};

fn opts(name: &str) -> RunOpts {
    RunOpts {
        name: name.into(),
        // A run takes 2-3 minutes; the emulated host has stalled now and then (qemu busy, no
        // progress): such a run is killed at the timeout and booted once more.
        timeout: Some(std::time::Duration::from_secs(900)),
        // An L2 guest of the emulated host triple-faults now and then on its own (docs/dsm.md,
        // "L2 guests crash in the emulated test host"); such a run is repeated, and says so.
        triple_fault_retries: Some(3),
        ..Default::default()
    }
}

/// `wait_up NODE` waits until the peer's link is up.
const GUEST_LIB: &str = r#"wait_up() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* up\$"; do i=$((i+1)); [ $i -gt 120 ] && { echo "timeout waiting for $1"; return 1; }; sleep 0.5; done; }"#;

/// `prefix TAG` copies its input to the console line by line, each line after TAG (a whole
/// line per write, so the two VMs' lines interleave but never mix; the run can be watched).
const PROLOGUE: &str = r#"prefix() { while IFS= read -r l || [ -n "$l" ]; do echo "$1$l"; done; }
printf 'an example cluster key of more than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
"#;

/// A window word in a's slice: a sets it to 1 when b may look at its file system and processes.
const FLAG: &str = "0x7ff3000";

fn guest(script: &str) -> String {
    format!("'{GUEST_LIB}\n{script}'")
}

/// a: the scenarios, one after the other, each bounded by `timeout` (a hang shows as a
/// missing line, not a stuck run); then the flag for b.
fn script_a() -> String {
    guest(&format!(
        "wait_up b || exit 9\n\
         T=\"timeout 300\"\n\
         mkdir -p /tmp/home-dir\n\
         echo line-from-home-stdin | $T offload run --on b -- ot-files /tmp/home-dir > /tmp/files.out 2>&1; echo files-status=$?\n\
         sed \"s/^/files| /\" /tmp/files.out\n\
         echo a-tree: $(ls /tmp/home-dir/tree)\n\
         echo a-link=$(readlink /tmp/home-dir/tree/link)\n\
         echo local-$($T ot-threads)\n\
         echo marked-$($T offload run -- ot-threads)\n\
         echo remote-$($T offload run --on b -- ot-threads)\n\
         echo split-$($T offload run --place 1=b,2=b -- ot-threads)\n\
         echo layout-local-$($T ot-layout -r 5)\n\
         echo layout-split-$($T offload run --place 1=b -- ot-layout -r 5)\n\
         $T offload run --on b -- ot-crash; echo crash-status=$?\n\
         echo only-in-a > /tmp/only-in-a; $T offload run --place 1=b -- ot-layout -r 1 -m /tmp/only-in-a; echo lonely-status=$?\n\
         $T offload run --on b -- ot-forkexec > /tmp/fe.out 2>&1; echo forkexec-status=$?\n\
         sed \"s/^/fe| /\" /tmp/fe.out\n\
         mkfifo /tmp/vin; sleep 1000 > /tmp/vin & S=$!\n\
         mkdir -p /tmp/victim-dir; offload run --on b -- ot-files /tmp/victim-dir < /tmp/vin > /dev/null 2>&1 & V=$!\n\
         sleep 5; offload ps > /tmp/ps.out 2>&1; sed \"s/^/ps| /\" /tmp/ps.out\n\
         kill -TERM $V; wait $V; echo victim-status=$?; kill $S\n\
         sleep 3; offload mem write {FLAG} 1"
    ))
}

/// b: once a is done, what of a's work is visible here (it must not be).
fn script_b() -> String {
    guest(&format!(
        "wait_up a || exit 9\n\
         offload mem wait {FLAG} 1 --timeout-ms 900000 || exit 4\n\
         [ -e /tmp/home-dir ] && echo b-has-home-dir || echo b-has-no-home-dir\n\
         echo b-shadows-left=$(ps | grep -c \"[o]t-\")"
    ))
}

/// One test-host run for every scenario but the lost peer. Each monitor's own log (stderr)
/// goes to the console through a pipe of its own (`a-vmm| `): sharing the guest output's
/// pipe, a log line could land in the middle of a guest line.
fn run() -> &'static str {
    static OUT: OnceLock<String> = OnceLock::new();
    OUT.get_or_init(|| {
        let (ga, gb) = (script_a(), script_b());
        let script = format!(
            r#"{PROLOGUE}
exec 4>&1
{{ {{ vmm launch --node b --peers $P --secret /tmp/key -- sh -c {gb}; echo "b-status=$?"; }} 2>&1 1>&3 | prefix "b-vmm| " >&4; }} 3>&1 | prefix "b| " &
B=$!
{{ {{ vmm launch --node a --peers $P --secret /tmp/key -- sh -c {ga}; echo "a-status=$?"; }} 2>&1 1>&3 | prefix "a-vmm| " >&4; }} 3>&1 | prefix "a| "
wait $B
"#
        );
        let h = Harness::locate().expect("harness");
        let r = h.run(&script, &opts("offload-run")).expect("test host run");
        println!("host: {} (runs: {})", r.host, r.attempts);
        r.output
    })
}

fn has(line: &str) {
    let out = run();
    assert!(out.contains(line), "missing `{line}` in:\n{out}");
}

/// Proves that layout changes made at home reach a thread on another node (issue 5, item 2):
/// ot-layout's main thread stays in a and, each round, maps a region, unmaps half of it,
/// grows it back with mremap, fills it and makes it read-only; its worker thread, started
/// on b by `--place 1=b`, sums the region. Without every change applied in b's shadow
/// before the call returns in a, the worker reads another round's values or dies of
/// SIGSEGV. After the first round main closes every fd above stderr (close_range), which
/// must leave the shim's files (window, executor) open. Then a read-only mapping of the
/// program file made in a is read by the worker (b maps its identical copy). The same line as a local run, and no fallback to running
/// the thread at home.
#[test]
fn layout_changes_made_at_home_reach_a_thread_on_b() {
    // 5 rounds (~30 pages each between a and b): the emulated host's guests die more often
    // the more pages move (docs/dsm.md); bench-layout runs more.
    has("a| layout-local-layout: rounds=5 sum=124054671360 file=same ok");
    has("a| layout-split-layout: rounds=5 sum=124054671360 file=same ok");
    let out = run();
    assert!(
        !out.contains("could not start a thread on its node"),
        "{out}"
    );
}

/// Proves that a process whose thread dies on another node dies at home too, with the same
/// signal (issue 5, item 5): ot-crash's thread on b reads address 8; b's kernel kills the
/// shadow with SIGSEGV, b's driver sends GONE, and a's process ends with status 139 (not
/// 124: the scenario runs under `timeout 300`).
#[test]
fn a_thread_that_dies_on_b_ends_its_process_in_a() {
    has("a| crash: faulting now");
    has("a| crash-status=139");
}

/// Proves that a shadow that cannot start (here: the home mapped a file, /tmp/only-in-a, that
/// b does not have) ends the process at home (SIGKILL: 137) instead of leaving it waiting
/// for its thread (124 from `timeout 300`): b's driver sends GONE when the shadow exits
/// with a failure status.
#[test]
fn a_shadow_that_cannot_start_ends_its_process_in_a() {
    has("a| lonely-status=137");
}

/// Proves that an offloaded thread's file-system calls run in the home VM: the tree, the file
/// and the link exist in a's file system and not in b's; stdin and stdout are a's.
#[test]
fn files_dirs_and_links_of_an_offloaded_thread_are_made_at_home() {
    has("a| files-status=0");
    has("a| files| files: read-back=content-from-the-program");
    has("a| files| files: link-target=file");
    has("a| files| line-from-home-stdin");
    has("a| a-tree: a file link");
    has("a| a-link=file");
    has("b| b-has-no-home-dir");
}

/// Proves that memory stays coherent under pthread mutexes and condition variables: the
/// 4-thread program prints the same line unmarked, marked at home, all on b, and split.
#[test]
fn threads_sharing_arrays_give_the_local_result_wherever_they_run() {
    let out = run();
    let line = |tag: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("a| {tag}-threads: ")))
            .map(str::to_string)
    };
    let local = line("local").expect("local run");
    for tag in ["marked", "remote", "split"] {
        assert_eq!(line(tag).as_deref(), Some(local.as_str()), "{tag}:\n{out}");
    }
}

/// Proves that fork and exec from an offloaded thread happen at home.
#[test]
fn fork_and_exec_from_an_offloaded_thread() {
    has("a| fe| forkexec-child-ran");
    has("a| fe| forkexec: status=0");
    has("a| forkexec-status=0");
}

/// Proves that SIGTERM to the home process ends it (status 143) and tears its shadow down.
#[test]
fn sigterm_ends_an_offloaded_process_and_its_shadow() {
    has("a| victim-status=143");
    has("b| b-shadows-left=0");
    has("a-status=0");
    has("b-status=0");
}

/// Proves that `offload ps` at home lists the marked process, its node list and counters,
/// and each of its threads with its node: the main thread of `offload run --on b` on b.
#[test]
fn offload_ps_lists_the_process_and_its_thread_on_b() {
    let out = run();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("a| ps| ")).collect();
    let home = lines.iter().find(|l| l.starts_with("a| ps| home pid="));
    let home = home.unwrap_or_else(|| panic!("no home line in:\n{out}"));
    assert!(
        home.contains(" nodes=b ") && home.ends_with(" comm=ot-files"),
        "{home}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("a| ps|   thread ") && l.contains(" node=b calls=")),
        "no thread on b in:\n{}",
        lines.join("\n")
    );
}

/// Proves the lost-peer rule for offloaded threads: stopping b's monitor mid-run kills the
/// process whose thread was on b (SIGKILL, logged), and nothing else in a.
#[test]
fn stopping_the_remote_monitor_kills_only_that_process() {
    let ga = guest(&format!(
        "wait_up b || exit 9\n\
         sleep 1000 & S=$!\n\
         mkfifo /tmp/vin; sleep 1000 > /tmp/vin & W=$!\n\
         mkdir -p /tmp/lost-dir; timeout 300 offload run --on b -- ot-files /tmp/lost-dir < /tmp/vin > /dev/null 2>&1 & V=$!\n\
         sleep 5; offload mem write {FLAG} 1\n\
         wait $V; echo victim-status=$?\n\
         kill -0 $S && echo bystander-alive; kill $S $W; echo a-done"
    ));
    let gb = guest(&format!(
        "wait_up a || exit 9\n\
         offload mem wait {FLAG} 1 --timeout-ms 900000 || exit 4\n\
         ps | grep -q \"[o]t-files\" && echo b-has-shadow\n\
         sleep 1000"
    ));
    let script = format!(
        r#"{PROLOGUE}
T=--peer-timeout-ms=2000
vmm launch --node b --peers $P --secret /tmp/key $T -- sh -c {gb} > /tmp/b.log 2>&1 &
B=$!
{{ vmm launch --node a --peers $P --secret /tmp/key $T -- sh -c {ga}; echo "a-status=$?"; }} 2>&1 | tee /tmp/a.log | prefix "a| " &
A=$!
# b's state from /proc: empty or Z once its monitor ended (a guest triple fault, say).
b_ended() {{ st=$(cut -d' ' -f3 /proc/$B/stat 2>/dev/null); [ -z "$st" ] || [ "$st" = Z ]; }}
i=0; until grep -q 'b-has-shadow' /tmp/b.log || b_ended || [ $i -gt 1200 ]; do sleep 0.5; i=$((i+1)); done
kill -STOP $B; echo "froze b"
wait $A
kill -KILL $B; wait $B 2>/dev/null
prefix "b| " < /tmp/b.log
"#
    );
    let h = Harness::locate().expect("harness");
    let r = h
        .run(&script, &opts("offload-run-lost-peer"))
        .expect("test host run");
    let out = &r.output;
    println!("host: {} (runs: {})\n{out}", r.host, r.attempts);
    for line in [
        "b| b-has-shadow",
        "a| victim-status=137",
        "a| bystander-alive",
        "a| a-done",
        "a-status=0",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
}
