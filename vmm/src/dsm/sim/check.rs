//! The simulator's invariants (docs/dsm.md, "What the simulator checks"): after every step
//! ([`check`]) and once everything is delivered ([`quiescent`]).
//!
//! Only live nodes count (a crashed node's memory is gone). A copy is *coherent* unless the
//! node's local state is `Lost`.

use super::super::protocol::{Local, NodeIdx, INTERNAL_ERRORS};
use super::{bit, idx, Sim};

/// Invariants that hold after every step.
pub(super) fn check(sim: &Sim) -> Result<(), String> {
    let errors = INTERNAL_ERRORS.with(|c| c.get());
    if errors != 0 {
        return Err(format!("{errors} self-addressed messages were rejected"));
    }
    for pi in 0..sim.pages.len() {
        copies(sim, pi)?;
        directory(sim, pi)?;
    }
    Ok(())
}

fn live(sim: &Sim) -> impl Iterator<Item = (NodeIdx, &super::Node)> {
    sim.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.alive)
        .map(|(i, n)| (idx(i), n))
}

/// The page is lost for good: its manager crashed or gave it up.
fn page_lost(sim: &Sim, pi: usize) -> bool {
    let m = &sim.nodes[usize::from(sim.geo.manager(sim.pages[pi]))];
    !m.alive || m.st[pi].manager_view().is_some_and(|v| v.lost)
}

/// Memory matches the local state; single writer or several readers; every coherent copy holds
/// the latest value; `Lost` only where the page is lost.
fn copies(sim: &Sim, pi: usize) -> Result<(), String> {
    let manager = sim.geo.manager(sim.pages[pi]);
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for (i, n) in live(sim) {
        let (st, mem) = (&n.st[pi], n.mem[pi]);
        let local = st.local();
        let fits = match local {
            Local::Zero | Local::None => mem.val.is_none(),
            Local::Read => mem.val.is_some() && mem.wp,
            Local::Write | Local::Lost => mem.val.is_some() && !mem.wp,
        };
        let at = || format!("node {i} page #{pi}: {local:?}, pending {:?}", st.pending());
        if !fits {
            return Err(format!("{}: memory {mem:?} does not match", at()));
        }
        if local == Local::Zero && i != manager {
            return Err(format!("{}: Zero away from the manager", at()));
        }
        if local == Local::Lost && (st.pending().is_some() || !page_lost(sim, pi)) {
            return Err(format!("{}: Lost, but the page is not", at()));
        }
        match local {
            Local::Write | Local::Zero => writers.push(i),
            Local::Read => readers.push(i),
            _ => {}
        }
        let last = sim.last[pi];
        if matches!(local, Local::Read | Local::Write) && mem.val != Some(last) {
            return Err(format!("{}: stale copy {:?}, latest {last}", at(), mem.val));
        }
    }
    if writers.len() > 1 || (writers.len() == 1 && !readers.is_empty()) {
        return Err(format!(
            "page #{pi}: writers {writers:?} with readers {readers:?}"
        ));
    }
    Ok(())
}

/// Between transactions, the manager's copy set is exactly the live nodes holding a copy, and a
/// writer is the owner and only member.
fn directory(sim: &Sim, pi: usize) -> Result<(), String> {
    let manager = &sim.nodes[usize::from(sim.geo.manager(sim.pages[pi]))];
    if !manager.alive {
        return Ok(());
    }
    let Some(v) = manager.st[pi].manager_view() else {
        return Err(format!("page #{pi}: the manager has no directory"));
    };
    if v.lost || v.busy || v.queued > 0 {
        return Ok(());
    }
    for (i, n) in live(sim) {
        let local = n.st[pi].local();
        let has = matches!(local, Local::Read | Local::Write | Local::Zero);
        if has != (v.copyset & bit(i) != 0) {
            return Err(format!(
                "page #{pi}: node {i} is {local:?}, directory {v:?}"
            ));
        }
        let exclusive = matches!(local, Local::Write | Local::Zero);
        if exclusive && (v.copyset != bit(i) || v.owner != Some(i)) {
            return Err(format!("page #{pi}: node {i} writes, directory {v:?}"));
        }
    }
    Ok(())
}

/// Once nothing is in flight: nobody waits, every surviving page's owner holds the latest
/// value, every reset at a live manager finished.
pub(super) fn quiescent(sim: &Sim) -> Result<(), String> {
    if !sim.flight.is_empty() || !sim.undeclared.is_empty() {
        return Err("messages or declarations left after draining".into());
    }
    for (i, n) in live(sim) {
        for pi in 0..sim.pages.len() {
            let st = &n.st[pi];
            if !st.is_idle() || n.waiters[pi] != 0 {
                let w = n.waiters[pi];
                return Err(format!(
                    "node {i} page #{pi} hangs: {:?}, pending {:?}, {w} waiting threads, {:?}",
                    st.local(),
                    st.pending(),
                    st.manager_view()
                ));
            }
        }
    }
    (0..sim.pages.len()).try_for_each(|pi| latest_survives(sim, pi))
}

fn latest_survives(sim: &Sim, pi: usize) -> Result<(), String> {
    let manager = &sim.nodes[usize::from(sim.geo.manager(sim.pages[pi]))];
    if !manager.alive {
        return match live(sim).find(|(_, n)| !matches!(n.st[pi].local(), Local::None | Local::Lost))
        {
            Some((i, _)) => Err(format!("node {i} holds page #{pi} of a lost manager")),
            None => Ok(()),
        };
    }
    if sim.resets[pi] != 0 {
        return Err(format!("page #{pi}: a reset never finished"));
    }
    let Some(v) = manager.st[pi].manager_view() else {
        return Err(format!("page #{pi}: the manager has no directory"));
    };
    if v.lost {
        return Ok(());
    }
    let Some(o) = v.owner.filter(|&o| sim.nodes[usize::from(o)].alive) else {
        return Err(format!("page #{pi}: not lost, but no live owner: {v:?}"));
    };
    let owner = &sim.nodes[usize::from(o)];
    let last = sim.last[pi];
    let ok = match owner.st[pi].local() {
        Local::Read | Local::Write => owner.mem[pi].val == Some(last),
        Local::Zero => last == 0,
        _ => false,
    };
    if !ok {
        let (local, mem) = (owner.st[pi].local(), owner.mem[pi]);
        return Err(format!(
            "page #{pi}: owner {o} is {local:?} {mem:?}, latest {last}: a write was lost"
        ));
    }
    Ok(())
}
