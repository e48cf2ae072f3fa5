//! `offload run [--on NODE] [--place K=NODE,...] -- PROG ARGS...`: starts PROG as a marked
//! process (docs/offload-threads.md, section 1): the syscall shim preloaded, address-space
//! randomization off (so every node lays the program out alike), then `exec`, so PROG keeps
//! this process's pid. `--on NODE` and `--place K=NODE` are checked against the node list and
//! handed to the shim as node indices: `OFFLOAD_ON=INDEX`, `OFFLOAD_PLACE=K=INDEX,...` (both
//! removed when not given; a placement on this node is no placement). Moving the threads is
//! the shim's part (docs/offload-threads.md, section 3).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::run::{self, RunError};

/// Where the guest image installs the shim.
pub const SHIM_PATH: &str = "/lib/offload/shim.so";

/// Arguments of `offload run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// `--on NODE`: where the main thread runs (None: here).
    pub on: Option<String>,
    /// `--place K=NODE`: the K-th thread created (1-based) starts on NODE.
    pub place: Vec<(u32, String)>,
    pub prog: String,
    pub args: Vec<String>,
}

/// Why `offload run` did not start the program.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}: not found")]
    NotFound(String),
    /// `why` reads after the program's name: "is statically linked; ...".
    #[error("{prog} {why}")]
    NotDynamic { prog: String, why: &'static str },
    #[error("{0}")]
    Node(#[from] RunError),
    #[error("{opt} {node}: {err}")]
    Placement {
        opt: &'static str,
        node: String,
        err: RunError,
    },
    #[error("cannot run {path}: {err}")]
    Exec {
        path: String,
        #[source]
        err: std::io::Error,
    },
}

impl LaunchError {
    /// The exit status, as a shell would give it: 127 not found, 126 not runnable, 2 usage.
    pub fn status(&self) -> u8 {
        match self {
            LaunchError::NotFound(_) => 127,
            LaunchError::Exec { .. } => 126,
            _ => 2,
        }
    }
}

/// Parses what follows `run`.
pub fn parse(args: &[&str]) -> Result<RunArgs, LaunchError> {
    let usage = |m: &str| LaunchError::Usage(format!("run: {m}"));
    let (mut on, mut place) = (None, Vec::new());
    let mut it = args.iter();
    loop {
        match it.next().copied() {
            Some("--on") => on = Some(it.next().ok_or_else(|| usage("--on needs a NODE"))?),
            Some("--place") => {
                let v = it
                    .next()
                    .ok_or_else(|| usage("--place needs K=NODE[,K=NODE]"))?;
                place.extend(parse_place(v).ok_or_else(|| usage("bad --place (K=NODE, K >= 1)"))?);
            }
            Some("--") => break,
            Some(other) => return Err(usage(&format!("unexpected '{other}' (use -- PROG ARGS)"))),
            None => return Err(usage("needs -- PROG [ARGS...]")),
        }
    }
    let prog = it.next().ok_or_else(|| usage("needs a PROG after --"))?;
    Ok(RunArgs {
        on: on.map(|s| s.to_string()),
        place,
        prog: prog.to_string(),
        args: it.map(|s| s.to_string()).collect(),
    })
}

fn parse_place(v: &str) -> Option<Vec<(u32, String)>> {
    v.split(',')
        .map(|item| {
            let (k, node) = item.split_once('=')?;
            let k: u32 = k.parse().ok().filter(|&k| k >= 1)?;
            (!node.is_empty()).then(|| (k, node.to_string()))
        })
        .collect()
}

/// Finds PROG: as given when it has a `/`, else the first executable file on `path`.
pub fn resolve_prog(prog: &str, path: Option<&str>) -> Option<PathBuf> {
    if prog.contains('/') {
        return Path::new(prog).is_file().then(|| PathBuf::from(prog));
    }
    path.unwrap_or("/usr/bin:/bin")
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(prog))
        .find(|p| p.is_file())
}

/// Checks that `image` (the start of a file) is a 64-bit ELF with a `PT_INTERP`: only a
/// dynamically linked program loads the shim.
pub fn check_dynamic(image: &[u8]) -> Result<(), &'static str> {
    const PT_INTERP: u32 = 3;
    if image.len() < 64 || &image[..4] != b"\x7fELF" || image[4] != 2 {
        return Err("is not a 64-bit ELF program (scripts run a static shell: not marked)");
    }
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]) as usize;
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&image[0x20..0x28]);
    let (phoff, phentsize, phnum) = (
        u64::from_le_bytes(phoff) as usize,
        u16_at(0x36),
        u16_at(0x38),
    );
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(t) = image.get(at..at + 4) else {
            return Err("has program headers beyond the first 64 KiB");
        };
        if u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == PT_INTERP {
            return Ok(());
        }
    }
    Err("is statically linked; the shim needs a dynamically linked program")
}

/// `LD_PRELOAD` with the shim first (kept once), then what was there.
pub fn preload_with_shim(old: Option<&str>) -> String {
    let rest: Vec<&str> = old
        .unwrap_or("")
        .split([':', ' '])
        .filter(|s| !s.is_empty() && *s != SHIM_PATH)
        .collect();
    std::iter::once(SHIM_PATH)
        .chain(rest)
        .collect::<Vec<_>>()
        .join(":")
}

/// Where the shim is to run threads: `OFFLOAD_ON` and `OFFLOAD_PLACE` values (indices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub on: Option<String>,
    pub place: Option<String>,
}

/// The index of `node` in `nodes`; `None` for this node. An unknown node is an error.
fn placement_index(
    nodes: &[crate::report::NodeLine],
    opt: &'static str,
    node: &str,
) -> Result<Option<u32>, LaunchError> {
    let known = nodes
        .iter()
        .any(|n| n.name == node || n.index.to_string() == node);
    let err = |err| LaunchError::Placement {
        opt,
        node: node.to_string(),
        err,
    };
    match run::resolve(nodes, node) {
        Err(RunError::IsSelf(_)) => Ok(None),
        Ok(_) if !known => Err(err(RunError::NoSuchName(node.to_string()))),
        Ok(t) => Ok(Some(t.index)),
        Err(e) => Err(err(e)),
    }
}

/// Checks `--on` and `--place` against `nodes` (this node and its peers).
pub fn placement(
    args: &RunArgs,
    nodes: &[crate::report::NodeLine],
) -> Result<Placement, LaunchError> {
    let mut p = Placement::default();
    if let Some(on) = &args.on {
        p.on = placement_index(nodes, "--on", on)?.map(|i| i.to_string());
    }
    let mut items = Vec::new();
    for (k, node) in &args.place {
        if let Some(i) = placement_index(nodes, "--place", node)? {
            items.push(format!("{k}={i}"));
        }
    }
    p.place = (!items.is_empty()).then(|| items.join(","));
    Ok(p)
}

/// [`placement`] against the device's node list (not asked when nothing is placed).
fn check_nodes(args: &RunArgs) -> Result<Placement, LaunchError> {
    if args.on.is_none() && args.place.is_empty() {
        return Ok(Placement::default());
    }
    let dev = crate::device::Device::open().map_err(RunError::from)?;
    placement(args, &run::list_nodes(&dev)?)
}

/// Starts the program; returns only on failure.
pub fn run(args: &RunArgs) -> LaunchError {
    let placed = match check_nodes(args) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let path_var = std::env::var("PATH").ok();
    let Some(path) = resolve_prog(&args.prog, path_var.as_deref()) else {
        return LaunchError::NotFound(args.prog.clone());
    };
    let shown = path.display().to_string();
    let mut head = Vec::with_capacity(65536);
    let read = std::fs::File::open(&path).and_then(|f| f.take(65536).read_to_end(&mut head));
    if let Err(err) = read {
        return LaunchError::Exec { path: shown, err };
    }
    if let Err(why) = check_dynamic(&head) {
        return LaunchError::NotDynamic {
            prog: args.prog.clone(),
            why,
        };
    }
    no_randomization();
    let preload = preload_with_shim(std::env::var("LD_PRELOAD").ok().as_deref());
    let mut cmd = std::process::Command::new(&path);
    cmd.arg0(OsString::from(&args.prog))
        .args(&args.args)
        .env("LD_PRELOAD", preload)
        .env("OFFLOAD_MARKED", "1");
    for (name, value) in [("OFFLOAD_ON", &placed.on), ("OFFLOAD_PLACE", &placed.place)] {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    let err = cmd.exec();
    LaunchError::Exec { path: shown, err }
}

/// Turns address-space randomization off for this process and what it execs.
pub fn no_randomization() {
    const ADDR_NO_RANDOMIZE: libc::c_ulong = 0x0040000;
    // SAFETY: personality(2) only reads its argument; 0xffffffff queries without changing.
    let current = unsafe { libc::personality(0xffff_ffff) };
    if current >= 0 {
        // SAFETY: as above; the new persona is the current one plus ADDR_NO_RANDOMIZE.
        unsafe { libc::personality(current as libc::c_ulong | ADDR_NO_RANDOMIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_parsed_and_checked() {
        let a = parse(&["--on", "b", "--place", "1=b,2=a", "--", "ot-x", "-n", "3"]).unwrap();
        assert_eq!(a.on.as_deref(), Some("b"));
        assert_eq!(a.place, vec![(1, "b".to_string()), (2, "a".to_string())]);
        assert_eq!((a.prog.as_str(), a.args.len()), ("ot-x", 2));
        assert_eq!(parse(&["--", "p"]).unwrap().on, None);
        for bad in [
            &[][..],
            &["p"],
            &["--on"],
            &["--"],
            &["--place", "0=b", "--", "p"],
            &["--place", "1=", "--", "p"],
            &["--place", "x", "--", "p"],
        ] {
            assert!(matches!(parse(bad), Err(LaunchError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn only_dynamic_elf_programs_are_accepted() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(check_dynamic(&me[..me.len().min(65536)]), Ok(()));
        assert!(check_dynamic(b"#!/bin/sh\necho hi\n").is_err());
        // A header with no program headers at all: static.
        let mut elf = vec![0u8; 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        assert!(check_dynamic(&elf)
            .unwrap_err()
            .contains("statically linked"));
        // Program headers said to lie beyond the bytes read.
        elf[0x20] = 0xff;
        elf[0x38] = 1;
        elf[0x36] = 56;
        assert!(check_dynamic(&elf).is_err());
    }

    fn node(name: &str, index: u32, state: Option<u32>) -> crate::report::NodeLine {
        crate::report::NodeLine {
            name: name.into(),
            index,
            state,
        }
    }

    #[test]
    fn placements_become_node_indices() {
        let nodes = [node("a", 0, None), node("b", 1, Some(1))];
        let a = parse(&["--on", "b", "--place", "1=b,2=a,3=1", "--", "p"]).unwrap();
        let p = placement(&a, &nodes).unwrap();
        assert_eq!(p.on.as_deref(), Some("1"));
        assert_eq!(p.place.as_deref(), Some("1=1,3=1"));
        let here = parse(&["--on", "a", "--", "p"]).unwrap();
        assert_eq!(placement(&here, &nodes).unwrap(), Placement::default());
        let bad = parse(&["--on", "nosuchnode", "--", "p"]).unwrap();
        let e = placement(&bad, &nodes).unwrap_err();
        assert_eq!(e.to_string(), "--on nosuchnode: no node named nosuchnode");
        assert_eq!(e.status(), 2);
        let bad = parse(&["--place", "1=7", "--", "p"]).unwrap();
        assert!(placement(&bad, &nodes)
            .unwrap_err()
            .to_string()
            .contains("7"));
    }

    #[test]
    fn the_shim_is_preloaded_first_and_once() {
        assert_eq!(preload_with_shim(None), SHIM_PATH);
        assert_eq!(
            preload_with_shim(Some("/x.so /lib/offload/shim.so:/y.so")),
            format!("{SHIM_PATH}:/x.so:/y.so")
        );
    }

    #[test]
    fn programs_are_found_on_the_path() {
        assert!(resolve_prog("sh", Some("/nonexistent:/bin")).is_some());
        assert!(resolve_prog("no-such-program-here", Some("/bin")).is_none());
        assert!(resolve_prog("/bin/sh", None).is_some());
    }
}
