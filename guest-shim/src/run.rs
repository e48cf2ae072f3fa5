//! The two subcommands of `offload`, written against the [`Offload`] trait so they can be
//! tested without a device: `nodes` (this node and its peers, one line each) and `ping`
//! (round trips with a payload that is checked when it comes back, then a summary).

use std::io::Write;
use std::thread::sleep;

use crate::abi::name_str;
use crate::cli::PingArgs;
use crate::device::{DeviceError, Offload};
use crate::report::{self, NodeLine, Summary};

/// Why a subcommand stopped (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Device(#[from] DeviceError),
    #[error("{}", report::common_error(*errno))]
    Ioctl { errno: i32 },
    #[error("no node named {0}")]
    NoSuchName(String),
    #[error("{0} is this node; ping another node")]
    IsSelf(String),
    #[error("{0}")]
    Ping(String),
    /// A `mem` subcommand failed (the message says why).
    #[error("{0}")]
    Mem(String),
    /// `offload call` failed: the call did not run, or its fate is unknown.
    #[error("call: {0}")]
    Call(String),
    /// `offload serve` stopped.
    #[error("serve: {0}")]
    Serve(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// An ioctl error as a [`RunError`] that reads well (`interrupted`, not `NODE_INFO: ...`).
fn ioctl_error(e: DeviceError) -> RunError {
    match e.errno() {
        Some(errno) => RunError::Ioctl { errno },
        None => RunError::Device(e),
    }
}

/// This node and every other node the device knows, sorted by index.
pub fn list_nodes(dev: &dyn Offload) -> Result<Vec<NodeLine>, RunError> {
    let me = dev.node_info().map_err(ioctl_error)?;
    let peers = dev.peers().map_err(ioctl_error)?;
    let mut nodes = vec![NodeLine {
        name: name_str(&me.name),
        index: me.index,
        state: None,
    }];
    nodes.extend(peers.valid().iter().map(|p| NodeLine {
        name: name_str(&p.name),
        index: p.index,
        state: Some(p.state),
    }));
    nodes.sort_by_key(|n| n.index);
    Ok(nodes)
}

/// `offload nodes`.
pub fn nodes(dev: &dyn Offload, out: &mut dyn Write) -> Result<(), RunError> {
    for n in list_nodes(dev)? {
        writeln!(out, "{}", report::node_line(&n))?;
    }
    Ok(())
}

/// Where a ping goes: the index for the device and the name for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub index: u32,
    pub name: String,
}

/// Resolves NODE (a name, or an index) against the node list.
pub fn resolve(nodes: &[NodeLine], given: &str) -> Result<Target, RunError> {
    let found = match given.parse::<u32>() {
        Ok(i) => nodes.iter().find(|n| n.index == i),
        Err(_) => nodes.iter().find(|n| n.name == given),
    };
    match (found, given.parse::<u32>()) {
        (Some(n), _) if n.state.is_none() => Err(RunError::IsSelf(n.name.clone())),
        (Some(n), _) => Ok(Target {
            index: n.index,
            name: n.name.clone(),
        }),
        // An index the list does not show (it holds at most 16 peers): let the device judge.
        (None, Ok(i)) => Ok(Target {
            index: i,
            name: given.to_string(),
        }),
        (None, Err(_)) => Err(RunError::NoSuchName(given.to_string())),
    }
}

/// The payload of round trip `seq`: bytes that differ from one round trip to the next.
pub fn payload(seq: u32, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8) ^ 0x5a)
        .collect()
}

/// Errnos after which further round trips cannot succeed.
fn is_fatal(errno: i32) -> bool {
    matches!(
        errno,
        libc::EHOSTUNREACH | libc::ENODEV | libc::ENOTTY | libc::EINVAL | libc::EINTR
    )
}

/// `offload ping`: prints a line per round trip and the summary; returns the summary.
pub fn ping(dev: &dyn Offload, args: &PingArgs, out: &mut dyn Write) -> Result<Summary, RunError> {
    let target = resolve(&list_nodes(dev)?, &args.target)?;
    let mut summary = Summary::default();
    for seq in 1..=args.count {
        if seq > 1 && !args.interval.is_zero() {
            sleep(args.interval);
        }
        let sent = payload(seq, args.size);
        summary.sent += 1;
        match dev.ping(target.index, &sent) {
            Ok((back, rtt)) if back == sent => {
                writeln!(
                    out,
                    "{}",
                    report::reply_line(seq, &target.name, back.len(), rtt)
                )?;
                summary.rtts.push(rtt);
            }
            Ok((back, _)) => {
                let why = format!(
                    "reply differs from what was sent ({} bytes back)",
                    back.len()
                );
                writeln!(out, "{}", report::error_line(seq, &target.name, &why))?;
            }
            Err(e) => {
                let Some(errno) = e.errno() else {
                    return Err(RunError::Device(e));
                };
                let why = report::ping_error(errno, &target.name);
                writeln!(out, "{}", report::error_line(seq, &target.name, &why))?;
                if is_fatal(errno) {
                    writeln!(out, "{}", summary.line())?;
                    return Err(RunError::Ping(why));
                }
            }
        }
    }
    writeln!(out, "{}", summary.line())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{NodeInfo, Peer, Peers, NAME_LEN, PEER_DOWN, PEER_UP};
    use std::cell::RefCell;
    use std::time::Duration;

    fn name(s: &str) -> [u8; NAME_LEN] {
        let mut n = [0; NAME_LEN];
        n[..s.len()].copy_from_slice(s.as_bytes());
        n
    }

    /// A device with nodes a (self, 1), b (0, up), c (2, down); pings answer from `replies`.
    struct Fake {
        replies: RefCell<Vec<Result<Option<Vec<u8>>, i32>>>,
        pinged: RefCell<Vec<u32>>,
    }

    impl Fake {
        fn new(replies: Vec<Result<Option<Vec<u8>>, i32>>) -> Self {
            Self {
                replies: RefCell::new(replies),
                pinged: RefCell::default(),
            }
        }
    }

    impl Offload for Fake {
        fn node_info(&self) -> Result<NodeInfo, DeviceError> {
            Ok(NodeInfo {
                index: 1,
                num_nodes: 3,
                name: name("a"),
            })
        }
        fn peers(&self) -> Result<Peers, DeviceError> {
            let mut p = Peers {
                count: 2,
                ..Default::default()
            };
            p.peers[0] = Peer {
                index: 2,
                state: PEER_DOWN,
                name: name("c"),
                reserved: 0,
            };
            p.peers[1] = Peer {
                index: 0,
                state: PEER_UP,
                name: name("b"),
                reserved: 0,
            };
            Ok(p)
        }
        /// `Ok(None)`: echo; `Ok(Some(bytes))`: answer bytes; `Err(errno)`.
        fn ping(&self, node: u32, payload: &[u8]) -> Result<(Vec<u8>, u64), DeviceError> {
            self.pinged.borrow_mut().push(node);
            match self.replies.borrow_mut().remove(0) {
                Ok(None) => Ok((payload.to_vec(), 1_000_000)),
                Ok(Some(b)) => Ok((b, 1_000_000)),
                Err(errno) => Err(DeviceError::Ioctl { op: "PING", errno }),
            }
        }
    }

    fn args(target: &str, count: u32) -> PingArgs {
        PingArgs {
            target: target.into(),
            count,
            size: 8,
            interval: Duration::ZERO,
        }
    }

    fn run_ping(fake: &Fake, a: &PingArgs) -> (Result<Summary, RunError>, String) {
        let mut out = Vec::new();
        let r = ping(fake, a, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn nodes_are_listed_by_index() {
        let mut out = Vec::new();
        nodes(&Fake::new(vec![]), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b 0 up\na 1 self\nc 2 down\n"
        );
    }

    #[test]
    fn targets_resolve_by_name_or_index() {
        let list = list_nodes(&Fake::new(vec![])).unwrap();
        assert_eq!(resolve(&list, "b").unwrap().index, 0);
        assert_eq!(resolve(&list, "2").unwrap().name, "c");
        assert_eq!(resolve(&list, "9").unwrap().index, 9);
        assert_eq!(
            resolve(&list, "x").unwrap_err().to_string(),
            "no node named x"
        );
        assert_eq!(
            resolve(&list, "1").unwrap_err().to_string(),
            "a is this node; ping another node"
        );
    }

    #[test]
    fn replies_are_verified() {
        let fake = Fake::new(vec![Ok(None), Ok(Some(vec![1, 2])), Ok(None)]);
        let (r, out) = run_ping(&fake, &args("b", 3));
        let s = r.unwrap();
        assert!(!s.all_received());
        assert_eq!(*fake.pinged.borrow(), vec![0, 0, 0]);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines[0], "seq=1 node=b bytes=8 rtt=1.000 ms");
        assert_eq!(
            lines[1],
            "seq=2 node=b error: reply differs from what was sent (2 bytes back)"
        );
        assert_eq!(
            lines[3],
            "3 sent, 2 received, min/median/max = 1.000/1.000/1.000 ms"
        );
    }

    #[test]
    fn transient_errors_continue_fatal_ones_stop() {
        let fake = Fake::new(vec![Err(libc::ENOTCONN), Ok(None)]);
        let (r, out) = run_ping(&fake, &args("b", 2));
        assert_eq!(r.unwrap().rtts.len(), 1);
        assert!(out.starts_with("seq=1 node=b error: peer b is down\n"));

        let fake = Fake::new(vec![Err(libc::EHOSTUNREACH), Ok(None)]);
        let (r, out) = run_ping(&fake, &args("9", 2));
        assert_eq!(r.unwrap_err().to_string(), "no node with index 9");
        assert_eq!(
            out,
            "seq=1 node=9 error: no node with index 9\n1 sent, 0 received\n"
        );
    }

    #[test]
    fn payloads_differ_between_round_trips() {
        assert_eq!(payload(1, 4).len(), 4);
        assert_ne!(payload(1, 8), payload(2, 8));
        assert!(payload(3, 0).is_empty());
    }
}
