//! End-to-end: shadows (docs/offload-threads.md, "Interfaces for migration and shadows (v1)")
//! between two real guests on one test host. In guest a, `offload spawn` writes a spawn
//! record into the window and asks b's driver (guest message SPAWN) to start a shadow; b's
//! driver runs `offload shadow`, which attaches the new process and execs the record's
//! program, here a small script (written by b) that saves its environment and sleeps. Then:
//! the spawning process ends → a's driver sends KILL → the shadow dies; a second shadow dies
//! when vmm a is frozen and b declares a lost, while b's VM keeps running. `offload run`'s
//! refusals (a static program, an unknown node) are checked in a on the way.
//!
//! One test-host run serves every test below (it takes minutes): the first test to run
//! starts it, the others read its output.

use std::sync::OnceLock;

use offload_tests::{Harness, RunOpts};

fn opts(name: &str) -> RunOpts {
    RunOpts {
        name: name.into(),
        timeout: Some(std::time::Duration::from_secs(900)),
        ..Default::default()
    }
}

/// Guest-side helpers (the guest command travels on the kernel command line, at most 2047
/// bytes with its base64 encoding: hence the terse shell). `U NODE` waits until the peer
/// is up; `W OFF` waits until the window word at OFF is 1; `S OFF V` stores V there.
const COMMON: &str = r#"U(){ i=0;until offload nodes|grep -q "^$1 [0-9]* up\$";do i=$((i+1));[ $i -gt 120 ]&&exit 9;sleep .5;done;}
W(){ offload mem wait $1 1 --timeout-ms 600000||exit 4;}
S(){ offload mem write $1 $2;}"#;

/// Host-side prologue: the cluster key and the peers (both monitors in this test host).
const PROLOGUE: &str = r#"printf 'an example cluster key of more than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
"#;

/// The environment variable the shadow must carry (the record's, set by a).
const MARK: &str = "SHADOW_TEST=hello-from-a";

/// a: the refusals of `offload run`, then the two spawns; frozen by the host at the end.
/// `T WHAT CMD...` prints `WHAT: <output> status=<status>`; `P N` starts `offload spawn`
/// in the background (pid in `$X`, output in /tmp/N), waits for its `spawned` line and
/// prints `spawnN=PID`. Window words (a's slice): 0x7ff2000 b ready; +8 spawn 1 done, +0x10
/// its pid; +0x18 b saw shadow 1; +0x20 spawner 1 ended; +0x28 b checked; +0x30 spawn 2
/// done, +0x38 its pid; +0x40 b saw shadow 2.
const SCRIPT_A: &str = r#"T(){ w=$1;shift;R=$("$@" 2>&1);echo "$w: $R status=$?";}
P(){ offload spawn --on b --exe /tmp/s.sh --env PATH=/usr/bin:/bin --env SHADOW_TEST=hello-from-a >/tmp/$1 2>&1& X=$!;until grep -q ^spawned /tmp/$1;do kill -0 $X||{ cat /tmp/$1;exit 8;};sleep .1;done;echo spawn$1=$X;}
U b
T static offload run -- busybox true
T nosuch offload run --on nosuchnode -- /bin/true
W 0x7ff2000
P 1;cat /tmp/1
offload ps|sed "s/^/a-ps: /"
S 0x7ff2010 $X;S 0x7ff2008 1;W 0x7ff2018
kill $X;wait $X;echo spawn1-status=$?
echo a-ps-after=$(offload ps|grep -c .)
S 0x7ff2020 1;W 0x7ff2028
P 2;S 0x7ff2038 $X;S 0x7ff2030 1;W 0x7ff2040
echo a-ready-for-loss;sleep 600"#;

/// b: writes the shadow's program /tmp/s.sh (saves its environment in /tmp/e.PID, then
/// sleeps), watches both shadows, reports what it saw, and goes on after a is lost.
/// `O HPID` prints the pid of the shadow of a's HPID (from `offload ps`), `F HPID` waits
/// for it; `G PID N` waits up to N/5 s for PID to be gone.
const SCRIPT_B: &str = r##"O(){ offload ps|grep "^shadow pid=[0-9]* home=a:$1 "|sed "s/^shadow pid=\([0-9]*\) .*/\1/";}
F(){ i=0;until [ -n "$(O $1)" ];do i=$((i+1));[ $i -gt 300 ]&&exit 5;sleep .2;done;O $1;}
G(){ i=0;while kill -0 $1 2>/dev/null;do i=$((i+1));[ $i -gt $2 ]&&return 1;sleep .2;done;}
U a
printf "#!/bin/sh\nenv>/tmp/e.\$\$\nexec sleep 600\n">/tmp/s.sh;chmod +x /tmp/s.sh
S 0x7ff2000 1;W 0x7ff2008;H=$(offload mem read 0x7ff2010)
P=$(F $H);offload ps|sed "s/^/b-ps: /"
i=0;until [ -s /tmp/e.$P ]||[ $i -gt 300 ];do i=$((i+1));sleep .2;done
grep -E "^(SHADOW_TEST|OFFLOAD_SHADOW)=" /tmp/e.$P|sed "s/^/shadow-env: /"
tr "\0" "\n"</proc/$P/environ|grep ^OFFLOAD_|sed "s/^/shadow-environ: /"
echo shadow1-comm=$(cat /proc/$P/comm)
S 0x7ff2018 1;W 0x7ff2020
G $P 300&&echo shadow1-killed||echo shadow1-survived
echo shadow1-ps-left=$(offload ps|grep -c "home=a:$H ")
S 0x7ff2028 1;W 0x7ff2030;H=$(offload mem read 0x7ff2038)
P=$(F $H);S 0x7ff2040 1;echo b-waiting-for-loss
G $P 900&&echo shadow2-killed||echo shadow2-survived
sleep 1;dmesg|grep -E "lost: SIGKILL|KILL from|SPAWN"|sed "s/^/b-dmesg: /"
offload nodes|sed "s/^/b-nodes: /";echo b-still-running"##;

fn guest(script: &str) -> String {
    format!("'{COMMON}\n{script}'")
}

/// Runs both guests once (on first use) and returns the combined, prefixed output. When a
/// says it is ready, the host freezes vmm a (SIGSTOP): b must declare it lost (peer timeout
/// 2 s) and kill the second shadow. A failed run fails every test without running again.
fn output() -> &'static str {
    static OUT: OnceLock<Result<String, String>> = OnceLock::new();
    match OUT.get_or_init(run_both) {
        Ok(out) => out,
        Err(e) => panic!("test host run: {e}"),
    }
}

fn run_both() -> Result<String, String> {
    let h = Harness::locate().map_err(|e| format!("{e:#}"))?;
    let (ga, gb) = (guest(SCRIPT_A), guest(SCRIPT_B));
    let script = format!(
        r#"{PROLOGUE}
T=--peer-timeout-ms=2000
vmm launch --node b --peers $P --secret /tmp/key $T -- sh -c {gb} > /tmp/b.log 2>&1 &
B=$!
vmm launch --node a --peers $P --secret /tmp/key $T -- sh -c {ga} > /tmp/a.log 2>&1 &
A=$!
i=0; until grep -q 'a-ready-for-loss' /tmp/a.log || ! kill -0 $A 2>/dev/null || [ $i -gt 1200 ]; do sleep 0.5; i=$((i+1)); done
kill -STOP $A; echo "froze a"
wait $B; echo "b-status=$?"
kill -KILL $A; wait $A 2>/dev/null
sed 's/^/a| /' /tmp/a.log; sed 's/^/b| /' /tmp/b.log
"#
    );
    let r = h
        .run(&script, &opts("shadow"))
        .map_err(|e| format!("{e:#}"))?;
    println!("host: {}\n{}", r.host, r.output);
    Ok(r.output)
}

/// The pid a printed for spawn N (`spawnN=PID`).
fn spawner(out: &str, n: u32) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("a| spawn{n}=")))
        .unwrap_or_else(|| panic!("no spawn{n} line: {out}"))
        .trim()
        .to_string()
}

/// (a) The SPAWN starts a process in b that runs the record's program with the record's
/// environment plus OFFLOAD_SHADOW (home node 0 = a, the spawner's pid) and OFFLOAD_FD.
#[test]
fn a_spawn_runs_the_program_in_b_with_the_record_environment() {
    let out = output();
    let pid = spawner(out, 1);
    assert!(out.contains("a| spawned node=b pid="), "{out}");
    assert!(out.contains(&format!("b| shadow-env: {MARK}")), "{out}");
    let shadow = format!("OFFLOAD_SHADOW=0:{pid}:{pid}:");
    assert!(out.contains(&format!("b| shadow-env: {shadow}")), "{out}");
    assert!(
        out.contains(&format!("b| shadow-environ: {shadow}")),
        "{out}"
    );
    assert!(out.contains("b| shadow-environ: OFFLOAD_FD=3"), "{out}");
    assert!(out.contains("b| shadow1-comm=sleep"), "{out}");
}

/// (b) `offload ps` lists the shadow in b (home a and the spawner's pid) and the home in a
/// (nodes=b).
#[test]
fn ps_lists_the_shadow_and_the_home() {
    let out = output();
    let pid = spawner(out, 1);
    assert!(
        out.lines().any(|l| l.starts_with("b| b-ps: shadow pid=")
            && l.contains(&format!(" home=a:{pid} nodes=- "))),
        "{out}"
    );
    assert!(
        out.contains(&format!("a| a-ps: home pid={pid} home=a:{pid} nodes=b ")),
        "{out}"
    );
}

/// (c) When the spawning process ends, its file is released and a's driver sends KILL: the
/// shadow dies and b's `offload ps` no longer lists it; a lists nothing either.
#[test]
fn the_shadow_dies_with_its_home_process() {
    let out = output();
    assert!(out.contains("a| spawn1-status=143"), "{out}");
    assert!(out.contains("a| a-ps-after=0"), "{out}");
    assert!(out.contains("b| shadow1-killed"), "{out}");
    assert!(out.contains("b| shadow1-ps-left=0"), "{out}");
}

/// (d) vmm a frozen: b declares a lost, its driver SIGKILLs the second shadow and logs why,
/// and b's VM goes on to the end of its script.
#[test]
fn losing_the_home_kills_the_shadow_and_b_keeps_running() {
    let out = output();
    let pid = spawner(out, 2);
    assert!(out.contains("froze a"), "{out}");
    assert!(out.contains("b| shadow2-killed"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("b| b-dmesg: ")
            && l.contains("node 0 lost: SIGKILL to pid")
            && l.contains(&format!("shadow of pid {pid} there"))),
        "{out}"
    );
    assert!(out.contains("b| b-nodes: a 0 lost"), "{out}");
    assert!(out.contains("b| b-still-running"), "{out}");
    assert!(out.contains("b-status=0"), "{out}");
}

/// (e) `offload run` refuses a statically linked program with status 2.
#[test]
fn run_refuses_a_static_program() {
    let out = output();
    assert!(
        out.contains("a| static: offload: run: busybox is statically linked; the shim needs a dynamically linked program status=2"),
        "{out}"
    );
}

/// (f) `offload run --on` an unknown node fails with status 2 and says so.
#[test]
fn run_refuses_an_unknown_node() {
    let out = output();
    assert!(
        out.contains("a| nosuch: offload: run: --on nosuchnode: no node named nosuchnode status=2"),
        "{out}"
    );
}
