//! End-to-end: forwarded system calls (docs/offload-threads.md section 4) between two real
//! guests on one test host. In guest a, `offload serve` becomes the executor of its tid; in
//! guest b, `offload call` forwards system calls to it through both monitors (request
//! SYSCALL, event SYSCALL_IN, request SYSCALL_RET of docs/offload-device.md). Path and text
//! arguments live in window pages that both commands map at the same address, kept coherent
//! by the DSM.
//!
//! One test-host run serves every test below (it takes minutes): the first test to run
//! starts it, the others read its output.

use std::sync::OnceLock;

use offload_tests::{Harness, RunOpts};

fn opts(name: &str) -> RunOpts {
    RunOpts {
        name: name.into(),
        timeout: Some(std::time::Duration::from_secs(600)),
        ..Default::default()
    }
}

/// Guest-side helpers: `wait_up NODE` waits until the peer's link is up; `fwd WHAT ARGS...`
/// runs `offload call ARGS...` and prints `WHAT: <its output> status=<its exit status>`.
const GUEST_LIB: &str = r#"wait_up() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* up\$"; do i=$((i+1)); [ $i -gt 120 ] && { echo "timeout waiting for $1"; return 1; }; sleep 0.5; done; }
fwd() { what=$1; shift; R=$(offload call "$@" 2>&1); S=$?; echo "$what: $R status=$S"; }"#;

/// Host-side prologue: the cluster key and the peers (both monitors in this test host).
const PROLOGUE: &str = r#"printf 'an example cluster key of more than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
"#;

fn guest(script: &str) -> String {
    format!("'{GUEST_LIB}\n{script}'")
}

/// Window offsets, all in a's slice (the first half of the 256 MiB window): the page of the
/// call arguments, mapped at [`ADDR`] on both sides, and a handshake page: +0 "executor
/// ready" flag, +8 the executor's tid, +16 "b is done" flag; for the second executor (the
/// one killed): +24 ready, +32 its tid, +40 "b is calling it".
const ARGS_PAGE: &str = "0x7ff0000";
const HANDSHAKE: u64 = 0x7ff1000;
/// Where both sides map [`ARGS_PAGE`]; strings at +0, +0x100, +0x200.
const ADDR: u64 = 0x2000_0000_0000;
/// What b's forwarded `write(1, ...)` prints in a (with its newline: 23 bytes).
const WRITE_TEXT: &str = "forwarded-write-from-b";

/// a: start the executor, publish its tid, wait until b is done, then show what the calls
/// did in a's filesystem and output.
fn script_a() -> String {
    let (ready, tid, done) = (HANDSHAKE, HANDSHAKE + 8, HANDSHAKE + 16);
    let (ready2, tid2, calling) = (HANDSHAKE + 24, HANDSHAKE + 32, HANDSHAKE + 40);
    guest(&format!(
        "wait_up b || exit 9\n\
         offload serve --count 4 --map {ARGS_PAGE}@{ADDR:#x} > /tmp/serve.log 2>&1 & S=$!\n\
         i=0; until grep -q \"^executor \" /tmp/serve.log; do i=$((i+1)); [ $i -gt 600 ] && exit 8; sleep 0.1; done\n\
         T=$(grep \"^executor \" /tmp/serve.log | sed \"s/.*tid=//\")\n\
         offload mem write {tid:#x} $T && offload mem write {ready:#x} 1 || exit 3\n\
         offload serve --count 1 > /tmp/serve2.log 2>&1 & S2=$!\n\
         i=0; until grep -q \"^executor \" /tmp/serve2.log; do i=$((i+1)); [ $i -gt 600 ] && exit 8; sleep 0.1; done\n\
         T2=$(grep \"^executor \" /tmp/serve2.log | sed \"s/.*tid=//\")\n\
         offload mem write {tid2:#x} $T2 && offload mem write {ready2:#x} 1 || exit 3\n\
         offload mem wait {calling:#x} 1 --timeout-ms 600000 || echo b-never-called\n\
         sleep 1; kill -9 $S2; wait $S2; echo serve2-status=$?\n\
         offload mem wait {done:#x} 1 --timeout-ms 600000 || echo b-never-done\n\
         kill $S 2>/dev/null; wait $S; echo serve-status=$?\n\
         cat /tmp/serve.log\n\
         [ -d /tmp/fwd-dir ] && echo a-has-dir\n\
         [ -L /tmp/fwd-link ] && [ -d /tmp/fwd-link ] && echo a-has-link\n\
         echo a-done"
    ))
}

/// b: wait for a's executor, forward the calls, check b's own filesystem, tell a it is done.
fn script_b() -> String {
    let (ready, tid, done) = (HANDSHAKE, HANDSHAKE + 8, HANDSHAKE + 16);
    let (ready2, tid2, calling) = (HANDSHAKE + 24, HANDSHAKE + 32, HANDSHAKE + 40);
    let (dir, link, text) = (ADDR, ADDR + 0x100, ADDR + 0x200);
    let len = WRITE_TEXT.len() + 1;
    guest(&format!(
        "wait_up a || exit 9\n\
         offload mem wait {ready:#x} 1 --timeout-ms 600000 || exit 4\n\
         T=$(offload mem read {tid:#x}); echo b-got-tid=$T\n\
         M=\"--map {ARGS_PAGE}@{ADDR:#x}\"\n\
         fwd mkdir --node a --tid $T $M --str {dir:#x}=/tmp/fwd-dir 83 {dir:#x} 0x1ed\n\
         fwd symlink --node a --tid $T $M --str {dir:#x}=/tmp/fwd-dir --str {link:#x}=/tmp/fwd-link 88 {dir:#x} {link:#x}\n\
         fwd getpid --node a --tid $T 39\n\
         fwd write --node a --tid $T $M --str \"{text:#x}={WRITE_TEXT}\n\" 1 1 {text:#x} {len}\n\
         [ -e /tmp/fwd-dir ] || echo b-has-no-dir\n\
         [ -L /tmp/fwd-link ] || echo b-has-no-link\n\
         fwd no-executor --node a --tid 1 39\n\
         fwd unknown-node --node 7 --tid $T 39\n\
         offload mem wait {ready2:#x} 1 --timeout-ms 600000 || exit 4\n\
         T2=$(offload mem read {tid2:#x}); offload mem write {calling:#x} 1\n\
         fwd pause-killed --node a --tid $T2 34\n\
         offload mem write {done:#x} 1\n\
         echo b-done"
    ))
}

/// Runs both guests once (on first use) and returns the combined, prefixed output. A failed
/// run fails every test without running again.
fn output() -> &'static str {
    static OUT: OnceLock<Result<String, String>> = OnceLock::new();
    match OUT.get_or_init(run_both) {
        Ok(out) => out,
        Err(e) => panic!("test host run: {e}"),
    }
}

fn run_both() -> Result<String, String> {
    let h = Harness::locate().map_err(|e| format!("{e:#}"))?;
    let (ga, gb) = (script_a(), script_b());
    let script = format!(
        r#"{PROLOGUE}
vmm launch --node b --peers $P --secret /tmp/key -- sh -c {gb} > /tmp/b.log 2>/tmp/b.err &
vmm launch --node a --peers $P --secret /tmp/key -- sh -c {ga} > /tmp/a.log 2>/tmp/a.err
echo "a-status=$?"
wait $!; echo "b-status=$?"
sed 's/^/a| /' /tmp/a.log; sed 's/^/b| /' /tmp/b.log
sed 's/^/a-vmm| /' /tmp/a.err; sed 's/^/b-vmm| /' /tmp/b.err
dmesg | tail -15 | sed 's/^/host-dmesg| /'
"#
    );
    let r = h
        .run(&script, &opts("forward"))
        .map_err(|e| format!("{e:#}"))?;
    println!("host: {}\n{}", r.host, r.output);
    Ok(r.output)
}

/// Both VMs ran their scripts to the end, and the executor served exactly the 4 calls that
/// name it (mkdir, symlink, getpid, write) and exited by itself.
#[test]
fn both_guests_finish_and_the_executor_serves_four_calls() {
    let out = output();
    assert!(out.contains("a-status=0"), "{out}");
    assert!(out.contains("b-status=0"), "{out}");
    assert!(
        out.contains("a| a-done") && out.contains("b| b-done"),
        "{out}"
    );
    assert!(out.contains("a| serve-status=0"), "{out}");
    assert_eq!(out.matches("a| served nr=").count(), 4, "{out}");
}

/// (a) b forwards `mkdir` and `symlink` whose path strings it wrote into window pages: both
/// succeed, the directory and the link exist in a's filesystem and not in b's.
#[test]
fn mkdir_and_symlink_run_in_the_home_filesystem() {
    let out = output();
    assert!(out.contains("b| mkdir: ret=0 status=0"), "{out}");
    assert!(out.contains("b| symlink: ret=0 status=0"), "{out}");
    assert!(out.contains("a| served nr=83 ret=0"), "{out}");
    assert!(out.contains("a| served nr=88 ret=0"), "{out}");
    assert!(out.contains("a| a-has-dir"), "{out}");
    assert!(out.contains("a| a-has-link"), "{out}");
    assert!(out.contains("b| b-has-no-dir"), "{out}");
    assert!(out.contains("b| b-has-no-link"), "{out}");
}

/// (b) b forwards `getpid`: the result is the pid of the executor process in a, as
/// `offload serve` printed it.
#[test]
fn getpid_returns_the_executor_pid() {
    let out = output();
    let pid = out
        .lines()
        .find_map(|l| l.strip_prefix("a| executor pid="))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no executor line: {out}"));
    assert!(
        out.contains(&format!("b| getpid: ret={pid} status=0")),
        "pid {pid}: {out}"
    );
}

/// (c) b forwards `write(1, ADDR, LEN)` with the text in a window page: the text appears in
/// a's output (the executor's stdout), and b gets the byte count.
#[test]
fn write_prints_in_the_home_output() {
    let out = output();
    let len = WRITE_TEXT.len() + 1;
    assert!(
        out.lines().any(|l| l == format!("a| {WRITE_TEXT}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("b| write: ret={len} status=0")),
        "{out}"
    );
}

/// (d) A call to a tid that has no executor at home (tid 1, a's init) is refused by a's
/// driver: `offload call` reports -ESRCH and exits 1.
#[test]
fn a_call_to_a_tid_without_executor_gets_esrch() {
    let out = output();
    assert!(
        out.contains(
            "b| no-executor: offload: call: no executor for tid 1 on node a (-ESRCH) status=1"
        ),
        "{out}"
    );
}

/// (e) A call to a node that does not exist (index 7 of 2) is refused by b's monitor:
/// `offload call` reports -EHOSTUNREACH and exits 1.
#[test]
fn a_call_to_an_unknown_node_gets_ehostunreach() {
    let out = output();
    assert!(
        out.contains("b| unknown-node: offload: call: no node with index 7, or it is this node (-EHOSTUNREACH) status=1"),
        "{out}"
    );
}

/// An executor that dies with a forwarded call in hand (a's second executor, killed while
/// it runs b's `pause()`) does not leave the caller waiting: a's driver answers every call
/// of a released file with -ESRCH (a call still queued, or arriving after the exit, gets
/// the same answer).
#[test]
fn a_call_whose_executor_dies_gets_esrch() {
    let out = output();
    assert!(out.contains("a| serve2-status=137"), "{out}");
    let tid = out
        .lines()
        .find_map(|l| l.strip_prefix("b| pause-killed: offload: call: no executor for tid "))
        .unwrap_or_else(|| panic!("no pause-killed line: {out}"));
    assert!(tid.ends_with("on node a (-ESRCH) status=1"), "{out}");
}
