//! Deterministic random-schedule simulator of the DSM protocol (tests only; docs/dsm.md,
//! "Simulator").
//!
//! A few nodes run the real [`Protocol`] over a few pages. Each node has a simulated memory per
//! page (a value when populated, plus a write-protect flag) and executes the protocol's
//! [`Action`]s exactly as the engine does. Messages in flight form an unordered multiset: any
//! of them can be delivered next. A seeded PRNG picks every step: a guest access (performed if
//! the memory allows it, else a fault — also stale and concurrent faults), a delivery, a reset
//! at the page's manager, a node crash, and (in the staggered variant) one survivor declaring a
//! crashed node lost. After every step `check.rs` verifies the coherence invariants; at the end
//! everything is drained, every node writes and reads every page once more, and nothing may be
//! left waiting.
//!
//! `DSM_SIM_SEEDS=N` overrides the number of seeds of every test; `DSM_SIM_SEED=S` runs the one
//! seed `S` with a trace.

#[path = "sim/check.rs"]
mod check;

use std::collections::VecDeque;

use super::protocol::{
    Action, DataSrc, Geometry, InstallSrc, Local, Msg, NodeIdx, PageNo, PageState, Protocol, Want,
    INTERNAL_ERRORS,
};

/// What a `Lost` action installs in an unpopulated page (any value: it is never checked).
const GARBAGE: u64 = u64::MAX;
/// Trace lines kept for a failure report (`DSM_SIM_TRACE` overrides).
const TRACE_LEN: usize = 120;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x5eed_d5a0_c0ff_ee00)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// How nodes are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    None,
    /// A crash is declared at every survivor at once; its messages in flight vanish.
    Atomic,
    /// A crashed node's messages in flight still reach the survivors that have not declared it
    /// lost yet; each survivor declares it at its own later step.
    Staggered,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    nodes: (u16, u16),
    steps: usize,
    seeds: u64,
    loss: Loss,
    /// Most nodes crashed per run (always leaving one).
    crashes: usize,
    /// Percentage of steps that reset a page.
    reset_pct: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mem {
    val: Option<u64>,
    wp: bool,
}

struct Node {
    proto: Protocol,
    st: Vec<PageState>,
    mem: Vec<Mem>,
    /// Threads faulting on the page and not woken yet.
    waiters: Vec<u32>,
    /// Peers this node has declared lost.
    lost: u64,
    alive: bool,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    from: NodeIdx,
    to: NodeIdx,
    pi: usize,
    msg: Msg,
    data: Option<u64>,
    /// Picked for delivery, a slow message usually stays behind (long reorderings).
    slow: bool,
}

/// Event counts, to check that the schedules exercise every path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stats {
    reads: u64,
    writes: u64,
    faults: u64,
    delivered: u64,
    rejected: u64,
    grants: u64,
    fetches: u64,
    invals: u64,
    gones: u64,
    refusals: u64,
    lost_pages: u64,
    resets: u64,
    crashes: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.faults += o.faults;
        self.delivered += o.delivered;
        self.rejected += o.rejected;
        self.grants += o.grants;
        self.fetches += o.fetches;
        self.invals += o.invals;
        self.gones += o.gones;
        self.refusals += o.refusals;
        self.lost_pages += o.lost_pages;
        self.resets += o.resets;
        self.crashes += o.crashes;
    }

    fn count_send(&mut self, msg: &Msg) {
        match msg {
            Msg::Grant { .. } => self.grants += 1,
            Msg::Fetch { .. } => self.fetches += 1,
            Msg::Inval => self.invals += 1,
            Msg::Gone { .. } => self.gones += 1,
            Msg::Refuse => self.refusals += 1,
            _ => {}
        }
    }
}

struct Sim {
    rng: Rng,
    cfg: Config,
    geo: Geometry,
    /// The simulated pages (a subset of the window), indexed by `pi`.
    pages: Vec<PageNo>,
    nodes: Vec<Node>,
    flight: Vec<Flight>,
    /// The latest value written to each page (0 = zeros).
    last: Vec<u64>,
    counter: u64,
    /// Resets requested and not finished, per page.
    resets: Vec<u32>,
    /// (survivor, crashed node) pairs not declared yet (staggered loss).
    undeclared: Vec<(NodeIdx, NodeIdx)>,
    crash_at: Vec<usize>,
    /// Percentage of steps that deliver a message (varies by seed: short or long queues).
    deliver_pct: u64,
    /// Nodes that recently sent page data (preferred victims of a crash).
    data_senders: VecDeque<NodeIdx>,
    step: usize,
    trace: Option<VecDeque<String>>,
    trace_len: usize,
    stats: Stats,
}

fn bit(n: NodeIdx) -> u64 {
    1u64 << n
}

fn idx(n: usize) -> NodeIdx {
    NodeIdx::try_from(n).unwrap_or(NodeIdx::MAX)
}

impl Sim {
    fn new(seed: u64, cfg: Config, trace: bool) -> Self {
        let mut rng = Rng::new(seed);
        let (lo, hi) = cfg.nodes;
        let n = lo + idx(rng.below(usize::from(hi - lo) + 1));
        let total = u64::from(n) + rng.next() % (2 * u64::from(n) + 1);
        let geo = Geometry::new(total, n).expect("valid geometry");
        let pages = pick_pages(&mut rng, geo);
        let nodes = (0..n)
            .map(|i| {
                let proto = Protocol::new(i, geo).expect("valid node");
                Node {
                    proto,
                    st: pages.iter().map(|&p| proto.page_state(p)).collect(),
                    mem: vec![Mem::default(); pages.len()],
                    waiters: vec![0; pages.len()],
                    lost: 0,
                    alive: true,
                }
            })
            .collect();
        let crashes = match cfg.loss {
            Loss::None => 0,
            _ => 1 + rng.below(cfg.crashes.min(usize::from(n) - 1)),
        };
        let crash_at = (0..crashes).map(|_| rng.below(cfg.steps)).collect();
        let deliver_pct = 20 + rng.next() % 41;
        Self {
            rng,
            cfg,
            geo,
            last: vec![0; pages.len()],
            resets: vec![0; pages.len()],
            pages,
            nodes,
            flight: Vec::new(),
            counter: 0,
            undeclared: Vec::new(),
            crash_at,
            deliver_pct,
            data_senders: VecDeque::new(),
            step: 0,
            trace: trace.then(VecDeque::new),
            trace_len: std::env::var("DSM_SIM_TRACE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(TRACE_LEN),
            stats: Stats::default(),
        }
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            if t.len() >= self.trace_len {
                t.pop_front();
            }
            t.push_back(line());
        }
    }

    fn run(&mut self) -> Result<(), String> {
        INTERNAL_ERRORS.with(|c| c.set(0));
        for step in 0..self.cfg.steps {
            self.step = step;
            let crashes = self.crash_at.iter().filter(|&&s| s == step).count();
            for _ in 0..crashes {
                self.crash()?;
            }
            self.one_step()?;
            check::check(self)?;
        }
        self.step = self.cfg.steps;
        self.drain()?;
        check::quiescent(self)?;
        self.final_round()?;
        check::quiescent(self)
    }

    fn one_step(&mut self) -> Result<(), String> {
        let r = self.rng.next() % 100;
        let (deliver, reset) = (self.deliver_pct, self.cfg.reset_pct);
        if r < deliver {
            match self.pick_flight() {
                Some(i) => self.deliver(i),
                None => self.access(),
            }
        } else if r < deliver + reset {
            self.reset()
        } else if r < deliver + reset + 6 && !self.undeclared.is_empty() {
            let i = self.rng.below(self.undeclared.len());
            let (s, gone) = self.undeclared.swap_remove(i);
            self.declare(s, gone)
        } else {
            self.access()
        }
    }

    fn alive(&self) -> Vec<NodeIdx> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .map(idx)
            .collect()
    }

    /// A guest thread on a random live node accesses a random page.
    fn access(&mut self) -> Result<(), String> {
        let alive = self.alive();
        let n = alive[self.rng.below(alive.len())];
        let pi = self.rng.below(self.pages.len());
        let want = if self.rng.chance(50) {
            Want::Write
        } else {
            Want::Read
        };
        // A thread stuck on a pending page mostly stays stuck: let the protocol progress.
        if self.nodes[usize::from(n)].st[pi].pending().is_some() && self.rng.chance(75) {
            if let Some(i) = self.pick_flight() {
                return self.deliver(i);
            }
        }
        let allowed = self.allowed(n, pi, want);
        if allowed && !self.rng.chance(8) {
            self.perform(n, pi, want)
        } else {
            self.fault(n, pi, want, allowed)
        }
    }

    fn allowed(&self, n: NodeIdx, pi: usize, want: Want) -> bool {
        let m = self.nodes[usize::from(n)].mem[pi];
        m.val.is_some() && (want == Want::Read || !m.wp)
    }

    fn perform(&mut self, n: NodeIdx, pi: usize, want: Want) -> Result<(), String> {
        let node = &mut self.nodes[usize::from(n)];
        let coherent = node.st[pi].local() != Local::Lost;
        let val = node.mem[pi].val;
        if want == Want::Read {
            self.stats.reads += 1;
            self.log(|| format!("node {n} reads page #{pi}: {val:?}"));
            if coherent && val != Some(self.last[pi]) {
                let last = self.last[pi];
                return Err(format!(
                    "node {n} read {val:?} on page #{pi}, latest is {last}"
                ));
            }
            return Ok(());
        }
        self.counter += 1;
        node.mem[pi].val = Some(self.counter);
        if coherent {
            self.last[pi] = self.counter;
        }
        self.stats.writes += 1;
        let v = self.counter;
        self.log(|| format!("node {n} writes {v} to page #{pi}"));
        Ok(())
    }

    fn fault(&mut self, n: NodeIdx, pi: usize, want: Want, stale: bool) -> Result<(), String> {
        let page = self.pages[pi];
        let node = &mut self.nodes[usize::from(n)];
        let actions = node.proto.fault(&mut node.st[pi], page, want, node.lost);
        self.stats.faults += 1;
        self.log(|| format!("node {n} faults {want:?} on page #{pi} -> {actions:?}"));
        if stale && actions != [Action::Wake] {
            return Err(format!("stale fault at node {n} gave {actions:?}"));
        }
        if !stale {
            self.nodes[usize::from(n)].waiters[pi] += 1;
        }
        self.execute(n, pi, actions, None)
    }

    /// A random message in flight, except that a slow one is usually passed over.
    fn pick_flight(&mut self) -> Option<usize> {
        if self.flight.is_empty() {
            return None;
        }
        let i = self.rng.below(self.flight.len());
        (!self.flight[i].slow || self.rng.chance(10)).then_some(i)
    }

    fn deliver(&mut self, i: usize) -> Result<(), String> {
        let f = self.flight.swap_remove(i);
        let (to, pi) = (usize::from(f.to), f.pi);
        if !self.nodes[to].alive || self.nodes[to].lost & bit(f.from) != 0 {
            self.log(|| format!("dropped {f:?}"));
            return Ok(());
        }
        let page = self.pages[pi];
        let node = &mut self.nodes[to];
        let before = node.st[pi].clone();
        let r = node
            .proto
            .receive(&mut node.st[pi], page, f.from, f.msg, node.lost);
        self.stats.delivered += 1;
        match r {
            Ok(actions) => {
                self.log(|| format!("deliver {f:?} -> {actions:?}"));
                self.execute(f.to, pi, actions, f.data)
            }
            Err(e) => {
                self.stats.rejected += 1;
                self.log(|| format!("deliver {f:?} -> rejected: {e}"));
                let after = &self.nodes[to].st[pi];
                if format!("{before:?}") != format!("{after:?}") {
                    return Err(format!("rejected {f:?} changed the state"));
                }
                // Only a late message about a page lost here, or a late `Fetch` of a
                // transaction whose requester was lost, may be refused. A refused `Data` would
                // be a second copy sent for one request.
                let lost =
                    after.local() == Local::Lost || after.manager_view().is_some_and(|v| v.lost);
                let stale_fetch = matches!(f.msg, Msg::Fetch { .. });
                if self.cfg.loss == Loss::None || !(lost || stale_fetch) {
                    return Err(format!("{f:?} rejected: {e}"));
                }
                Ok(())
            }
        }
    }

    /// The page's manager resets it (its guest freed it).
    fn reset(&mut self) -> Result<(), String> {
        let pi = self.rng.below(self.pages.len());
        let page = self.pages[pi];
        let m = self.geo.manager(page);
        let node = &mut self.nodes[usize::from(m)];
        if !node.alive {
            return self.access();
        }
        let actions = node
            .proto
            .reset(&mut node.st[pi], page, node.lost)
            .map_err(|e| format!("reset refused: {e}"))?;
        self.resets[pi] += 1;
        self.log(|| format!("node {m} resets page #{pi} -> {actions:?}"));
        self.execute(m, pi, actions, None)
    }

    /// A random live node crashes (never the last one).
    fn crash(&mut self) -> Result<(), String> {
        let alive = self.alive();
        if alive.len() < 2 {
            return Ok(());
        }
        // Often a node that just sent a page: the hardest moment to lose it.
        let data: Vec<NodeIdx> = (self.flight.iter())
            .filter(|f| matches!(f.msg, Msg::Data { .. }))
            .map(|f| f.from)
            .chain(self.data_senders.iter().copied())
            .filter(|n| alive.contains(n))
            .collect();
        let victim = if !data.is_empty() && self.rng.chance(60) {
            data[self.rng.below(data.len())]
        } else {
            alive[self.rng.below(alive.len())]
        };
        self.stats.crashes += 1;
        self.log(|| format!("node {victim} crashes"));
        self.nodes[usize::from(victim)].alive = false;
        self.flight.retain(|f| f.to != victim);
        self.undeclared.retain(|&(s, _)| s != victim);
        let survivors: Vec<NodeIdx> = alive.into_iter().filter(|&s| s != victim).collect();
        if self.cfg.loss == Loss::Staggered {
            // Its last messages linger: some arrive around or after the first declarations.
            for f in self.flight.iter_mut().filter(|f| f.from == victim) {
                f.slow = true;
            }
            self.undeclared
                .extend(survivors.iter().map(|&s| (s, victim)));
            return Ok(());
        }
        self.flight.retain(|f| f.from != victim);
        for &s in &survivors {
            self.nodes[usize::from(s)].lost |= bit(victim);
        }
        for s in survivors {
            self.peer_lost_everywhere(s, victim)?;
        }
        Ok(())
    }

    /// Survivor `s` declares `gone` lost.
    fn declare(&mut self, s: NodeIdx, gone: NodeIdx) -> Result<(), String> {
        self.nodes[usize::from(s)].lost |= bit(gone);
        self.flight.retain(|f| !(f.from == gone && f.to == s));
        self.peer_lost_everywhere(s, gone)
    }

    fn peer_lost_everywhere(&mut self, s: NodeIdx, gone: NodeIdx) -> Result<(), String> {
        for pi in 0..self.pages.len() {
            let page = self.pages[pi];
            let node = &mut self.nodes[usize::from(s)];
            let actions = node.proto.peer_lost(&mut node.st[pi], page, gone);
            self.log(|| format!("node {s} loses node {gone}, page #{pi} -> {actions:?}"));
            self.execute(s, pi, actions, None)?;
        }
        Ok(())
    }

    /// Executes node `n`'s actions for page `pi` as the engine would; `data` = the value the
    /// handled message carried.
    fn execute(
        &mut self,
        n: NodeIdx,
        pi: usize,
        actions: Vec<Action>,
        data: Option<u64>,
    ) -> Result<(), String> {
        for a in actions {
            match a {
                Action::Send { to, msg, data } => self.send(n, pi, to, msg, data)?,
                Action::ResetDone { retired } => self.reset_done(pi, retired)?,
                _ => {
                    let mem = self.nodes[usize::from(n)].mem[pi];
                    let (new, wake) = self
                        .memory_effect(a, mem, data)
                        .map_err(|what| format!("node {n} page #{pi}: {what} ({a:?}, {mem:?})"))?;
                    let node = &mut self.nodes[usize::from(n)];
                    node.mem[pi] = new;
                    if wake {
                        node.waiters[pi] = 0;
                    }
                }
            }
        }
        Ok(())
    }

    /// What an action does to the page's memory, and whether it wakes the faulting threads.
    fn memory_effect(
        &mut self,
        a: Action,
        mem: Mem,
        data: Option<u64>,
    ) -> Result<(Mem, bool), &'static str> {
        let populated = mem.val.is_some();
        Ok(match a {
            Action::Install { .. } | Action::Lost { populated: false } if populated => {
                return Err("install on a populated page");
            }
            Action::Protect { .. } | Action::Drop | Action::Lost { populated: true }
                if !populated =>
            {
                return Err("needs a populated page");
            }
            Action::Install { access, src } => {
                let val = match src {
                    InstallSrc::Zero => 0,
                    InstallSrc::Message => data.ok_or("install without data")?,
                };
                let wp = access == Want::Read;
                (Mem { val: Some(val), wp }, true)
            }
            Action::Protect { access } => {
                let wp = access == Want::Read;
                (Mem { wp, ..mem }, !wp)
            }
            Action::Drop => (Mem::default(), false),
            Action::Lost { .. } => {
                self.stats.lost_pages += 1;
                let val = Some(mem.val.unwrap_or(GARBAGE));
                (Mem { val, wp: false }, true)
            }
            Action::Wake | Action::Send { .. } | Action::ResetDone { .. } => (mem, true),
        })
    }

    fn send(
        &mut self,
        n: NodeIdx,
        pi: usize,
        to: NodeIdx,
        msg: Msg,
        src: Option<DataSrc>,
    ) -> Result<(), String> {
        if to == n || usize::from(to) >= self.nodes.len() {
            return Err(format!("node {n} sends {msg:?} to node {to}"));
        }
        let data = match src {
            None => None,
            Some(DataSrc::Zero) => Some(0),
            Some(DataSrc::Local) => match self.nodes[usize::from(n)].mem[pi].val {
                Some(v) => Some(v),
                None => return Err(format!("node {n} sends its unpopulated page #{pi}")),
            },
        };
        if data.is_some() != matches!(msg, Msg::Data { .. }) {
            return Err(format!("node {n} sends {msg:?} with data {src:?}"));
        }
        self.stats.count_send(&msg);
        if data.is_some() {
            if self.data_senders.len() == 8 {
                self.data_senders.pop_front();
            }
            self.data_senders.push_back(n);
        }
        if self.nodes[usize::from(to)].alive {
            let slow = self.rng.chance(15);
            self.flight.push(Flight {
                from: n,
                to,
                pi,
                msg,
                data,
                slow,
            });
        }
        Ok(())
    }

    fn reset_done(&mut self, pi: usize, retired: bool) -> Result<(), String> {
        if self.resets[pi] == 0 {
            return Err(format!("ResetDone for page #{pi} without a reset"));
        }
        self.resets[pi] -= 1;
        self.stats.resets += 1;
        if !retired {
            self.last[pi] = 0;
        }
        Ok(())
    }

    /// Delivers everything in flight and lets every survivor declare every crash.
    fn drain(&mut self) -> Result<(), String> {
        for _ in 0..1_000_000 {
            if !self.undeclared.is_empty() && (self.flight.is_empty() || self.rng.chance(10)) {
                let i = self.rng.below(self.undeclared.len());
                let (s, gone) = self.undeclared.swap_remove(i);
                self.declare(s, gone)?;
            } else if let Some(i) = self.pick_flight() {
                self.deliver(i)?;
            } else if self.flight.is_empty() {
                return Ok(());
            }
            check::check(self)?;
        }
        Err("draining does not end".into())
    }

    /// Every live node writes, then reads, every page: each must succeed within a few faults.
    fn final_round(&mut self) -> Result<(), String> {
        for n in self.alive() {
            for pi in 0..self.pages.len() {
                for want in [Want::Write, Want::Read] {
                    self.access_until_done(n, pi, want)?;
                }
            }
        }
        Ok(())
    }

    fn access_until_done(&mut self, n: NodeIdx, pi: usize, want: Want) -> Result<(), String> {
        for _ in 0..4 {
            if self.allowed(n, pi, want) {
                self.perform(n, pi, want)?;
                return check::check(self);
            }
            self.fault(n, pi, want, false)?;
            self.drain()?;
        }
        Err(format!("node {n} never gets {want:?} access to page #{pi}"))
    }
}

/// The simulated pages: 1 to 6 window pages, spread over every node's slice or all from one.
fn pick_pages(rng: &mut Rng, geo: Geometry) -> Vec<PageNo> {
    let nodes = geo.nodes();
    let mut pages = Vec::new();
    if rng.chance(30) {
        let slice = geo.slice(idx(rng.below(usize::from(nodes))));
        let len = usize::try_from(slice.end - slice.start).unwrap_or(1);
        let want = 1 + rng.below(len.min(6));
        let first = slice.start + rng.below(len - want + 1) as u64;
        pages.extend(first..first + want as u64);
    } else {
        let want = 1 + rng.below(6);
        for k in 0..want {
            let slice = geo.slice(idx(k % usize::from(nodes)));
            let len = usize::try_from(slice.end - slice.start).unwrap_or(1);
            let p = slice.start + rng.below(len) as u64;
            if !pages.contains(&p) {
                pages.push(p);
            }
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_u64(name: &str) -> Option<u64> {
        std::env::var(name).ok().and_then(|v| v.parse().ok())
    }

    fn failure(name: &str, seed: u64, cfg: Config, e: &str) -> String {
        let mut sim = Sim::new(seed, cfg, true);
        let again = sim
            .run()
            .err()
            .unwrap_or_else(|| "(passed on rerun?)".into());
        let trace: Vec<String> = sim.trace.take().unwrap_or_default().into();
        format!(
            "{name}: seed {seed} failed at step {}: {e}\n(rerun: {again})\nlast steps:\n  {}\n\
             reproduce: DSM_SIM_SEED={seed} cargo test -p vmm --release --lib dsm::sim::tests::{name}",
            sim.step,
            trace.join("\n  ")
        )
    }

    /// Runs `cfg` over its seeds (or `DSM_SIM_SEEDS`, or the one `DSM_SIM_SEED`) and returns the
    /// summed statistics, or `None` when too few seeds ran to expect every path exercised.
    fn run_many(name: &str, cfg: Config) -> Option<Stats> {
        let seeds: Vec<u64> = match env_u64("DSM_SIM_SEED") {
            Some(s) => vec![s],
            None => (0..env_u64("DSM_SIM_SEEDS").unwrap_or(cfg.seeds)).collect(),
        };
        let enough = seeds.len() >= 500;
        let mut total = Stats::default();
        for &seed in &seeds {
            let mut sim = Sim::new(seed, cfg, false);
            if let Err(e) = sim.run() {
                panic!("{}", failure(name, seed, cfg, &e));
            }
            total.add(&sim.stats);
        }
        eprintln!(
            "{name}: {} seeds x {} steps: {total:?}",
            seeds.len(),
            cfg.steps
        );
        enough.then_some(total)
    }

    fn config(nodes: (u16, u16), loss: Loss) -> Config {
        Config {
            nodes,
            steps: 500,
            seeds: 4000,
            loss,
            crashes: 1,
            reset_pct: 2,
        }
    }

    /// Every kind of step and message happened (when enough seeds ran).
    fn exercised(s: Option<Stats>) -> Option<Stats> {
        let s = s?;
        assert!(s.reads > 0 && s.writes > 0 && s.grants > 0, "{s:?}");
        assert!(s.fetches > 0 && s.invals > 0 && s.resets > 0, "{s:?}");
        Some(s)
    }

    #[test]
    fn many_schedules_two_nodes() {
        let s = run_many("many_schedules_two_nodes", config((2, 2), Loss::None));
        if let Some(s) = exercised(s) {
            assert_eq!(s.rejected + s.lost_pages + s.refusals, 0);
        }
    }

    #[test]
    fn many_schedules_several_nodes() {
        let cfg = Config {
            steps: 800,
            seeds: 3000,
            ..config((3, 5), Loss::None)
        };
        let s = run_many("many_schedules_several_nodes", cfg);
        if let Some(s) = exercised(s) {
            assert_eq!(s.rejected + s.lost_pages + s.refusals, 0);
        }
    }

    #[test]
    fn many_schedules_with_a_lost_node() {
        let s = run_many(
            "many_schedules_with_a_lost_node",
            config((2, 5), Loss::Atomic),
        );
        if let Some(s) = exercised(s) {
            assert!(s.crashes > 0 && s.lost_pages > 0 && s.gones > 0, "{s:?}");
        }
    }

    #[test]
    fn many_schedules_with_staggered_losses() {
        let cfg = Config {
            crashes: 2,
            seeds: 5000,
            ..config((2, 5), Loss::Staggered)
        };
        let s = run_many("many_schedules_with_staggered_losses", cfg);
        if let Some(s) = exercised(s) {
            assert!(s.crashes > 0 && s.lost_pages > 0 && s.gones > 0, "{s:?}");
            assert!(s.refusals > 0 && s.rejected > 0, "{s:?}");
        }
    }

    #[test]
    fn resets_under_load() {
        let cfg = Config {
            reset_pct: 12,
            seeds: 2500,
            ..config((2, 4), Loss::None)
        };
        if let Some(s) = exercised(run_many("resets_under_load", cfg)) {
            assert!(s.resets > 10 * cfg.seeds, "{s:?}");
        }
    }

    #[test]
    fn resets_with_lost_nodes() {
        let cfg = Config {
            reset_pct: 10,
            crashes: 2,
            seeds: 2500,
            ..config((2, 5), Loss::Staggered)
        };
        if let Some(s) = exercised(run_many("resets_with_lost_nodes", cfg)) {
            assert!(s.resets > 10 * cfg.seeds && s.lost_pages > 0, "{s:?}");
        }
    }

    #[test]
    fn runs_are_deterministic() {
        let cfg = config((2, 5), Loss::Staggered);
        for seed in 0..20 {
            let mut a = Sim::new(seed, cfg, false);
            let mut b = Sim::new(seed, cfg, false);
            assert_eq!(a.run(), b.run());
            assert_eq!((a.stats, a.counter), (b.stats, b.counter));
        }
    }

    /// The checker itself notices a stale copy, and memory that does not match the state.
    #[test]
    fn checker_catches_violations() {
        let cfg = config((2, 2), Loss::None);
        let mut sim = Sim::new(1, cfg, false);
        sim.pages.truncate(1);
        for node in &mut sim.nodes {
            node.st.truncate(1);
        }
        // The manager writes the page (Zero → Write), the other node reads it.
        let m = sim.geo.manager(sim.pages[0]);
        let other = 1 - m;
        sim.fault(m, 0, Want::Write, false).unwrap();
        sim.perform(m, 0, Want::Write).unwrap();
        sim.fault(other, 0, Want::Read, false).unwrap();
        sim.drain().unwrap();
        sim.perform(other, 0, Want::Read).unwrap();
        check::check(&sim).unwrap();
        let (m, other) = (usize::from(m), usize::from(other));
        sim.nodes[other].mem[0].val = Some(12345);
        assert!(check::check(&sim).unwrap_err().contains("stale"));
        sim.nodes[other].mem[0].val = Some(sim.last[0]);
        check::check(&sim).unwrap();
        sim.nodes[m].mem[0].wp = false; // a forgotten write protection
        assert!(check::check(&sim).unwrap_err().contains("does not match"));
    }
}
