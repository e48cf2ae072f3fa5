//! What the `offload` command prints: node lines (`a 0 self`, `b 1 up`), ping reply and
//! error lines, the ping summary, forwarded-call lines, `offload ps` lines, and the messages
//! for the errnos the driver returns.
//! All lines are one record each, space-separated, so scripts can parse them.

/// A node as `offload nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub name: String,
    pub index: u32,
    /// `None` for this node ("self"), else the device's state number.
    pub state: Option<u32>,
}

/// The word for a peer state (`state-N` for a number the ABI does not define).
pub fn state_name(state: u32) -> String {
    match state {
        crate::abi::PEER_DOWN => "down".into(),
        crate::abi::PEER_UP => "up".into(),
        crate::abi::PEER_LOST => "lost".into(),
        n => format!("state-{n}"),
    }
}

/// A node name as one printable word: bytes outside `!`..`~` become `?`, empty is `-`.
pub fn word(name: &str) -> String {
    if name.is_empty() {
        return "-".into();
    }
    name.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// `NAME INDEX STATE`.
pub fn node_line(n: &NodeLine) -> String {
    let state = n.state.map_or_else(|| "self".to_string(), state_name);
    format!("{} {} {}", word(&n.name), n.index, state)
}

/// Nanoseconds as milliseconds with three decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// `seq=1 node=b bytes=56 rtt=1.234 ms`.
pub fn reply_line(seq: u32, node: &str, bytes: usize, rtt_ns: u64) -> String {
    format!(
        "seq={seq} node={} bytes={bytes} rtt={} ms",
        word(node),
        ms(rtt_ns)
    )
}

/// `seq=2 node=b error: peer b is down`.
pub fn error_line(seq: u32, node: &str, message: &str) -> String {
    format!("seq={seq} node={} error: {message}", word(node))
}

/// What an errno from `OFFLOAD_IOC_PING` to `node` (a name, or an index the node list did
/// not show) means.
pub fn ping_error(errno: i32, node: &str) -> String {
    match errno {
        libc::ENOTCONN => format!("peer {node} is down"),
        libc::ETIMEDOUT => format!("no answer from {node} in time"),
        libc::ECONNRESET => format!("peer {node} was lost while waiting"),
        libc::EHOSTUNREACH if node.parse::<u32>().is_ok() => {
            format!("no node with index {node}")
        }
        libc::EHOSTUNREACH => format!("no node named {node}"),
        libc::EBUSY => "too many pings in flight on this node".into(),
        libc::EMSGSIZE => "payload too large for the device".into(),
        _ => common_error(errno),
    }
}

/// Messages for errnos any offload ioctl can return.
pub fn common_error(errno: i32) -> String {
    match errno {
        libc::EINTR => "interrupted".into(),
        libc::ENODEV => "the offload device was removed".into(),
        libc::EIO => "the offload device answered outside its contract (see dmesg)".into(),
        libc::ENOTTY => "/dev/offload does not understand this request (old offload.ko?)".into(),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    }
}

/// The symbolic name of the errnos a forwarded call can end with (`-ESRCH`), else `-N`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNRESET => "ECONNRESET",
        libc::EBUSY => "EBUSY",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::ENODEV => "ENODEV",
        libc::EIO => "EIO",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::ENOTTY => "ENOTTY",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENOENT => "ENOENT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EMSGSIZE => "EMSGSIZE",
        _ => return format!("-{errno}"),
    };
    format!("-{name}")
}

/// What an errno from `OFFLOAD_IOC_SYSCALL` to executor `tid` of `node` (as given) means;
/// ends with the errno's name so scripts can match it.
pub fn call_error(errno: i32, node: &str, tid: u32) -> String {
    let why = match errno {
        libc::EHOSTUNREACH if node.parse::<u32>().is_ok() => {
            format!("no node with index {node}, or it is this node")
        }
        libc::EHOSTUNREACH => format!("node {node} cannot be reached (unknown, or this node)"),
        libc::ENOTCONN => format!("peer {node} is down"),
        libc::ECONNRESET => format!("peer {node} was lost while waiting; the call may have run"),
        libc::EBUSY => format!("too many calls in flight (here or at {node})"),
        libc::ESRCH => format!("no executor for tid {tid} on node {node}"),
        _ => common_error(errno),
    };
    format!("{why} ({})", errno_name(errno))
}

/// What an errno from `OFFLOAD_IOC_EXEC_WAIT` / `EXEC_DONE` means.
pub fn exec_error(errno: i32, tid: u32) -> String {
    match errno {
        libc::EBUSY => format!("another open /dev/offload has the executor of tid {tid}"),
        libc::EINVAL => "the driver does not know that call (token)".into(),
        _ => common_error(errno),
    }
}

/// `served nr=83 ret=0`.
pub fn served_line(nr: u64, ret: i64) -> String {
    format!("served nr={nr} ret={ret}")
}

/// `executor pid=P tid=T`.
pub fn executor_line(pid: u32, tid: u32) -> String {
    format!("executor pid={pid} tid={tid}")
}

/// What an errno from a window ioctl or an mmap of the window means.
pub fn window_error(errno: i32) -> String {
    match errno {
        libc::EOPNOTSUPP => "this VM has no memory window (the monitor offers none, or \
                             offload.ko could not use it: see dmesg)"
            .into(),
        _ => common_error(errno),
    }
}

/// What an errno from `OFFLOAD_IOC_ALLOC` of `pages` pages means.
pub fn alloc_error(errno: i32, pages: u64) -> String {
    match errno {
        libc::ENOMEM => format!("no free run of {pages} pages in this node's slice"),
        libc::EINVAL => format!("cannot allocate {pages} pages: more than this node's slice"),
        _ => window_error(errno),
    }
}

/// Round-trip times of a ping run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: u32,
    /// Round-trip times of the replies that came back intact, in ns.
    pub rtts: Vec<u64>,
}

impl Summary {
    /// Whether every round trip came back intact.
    pub fn all_received(&self) -> bool {
        self.rtts.len() == self.sent as usize
    }

    /// `4 sent, 4 received, min/median/max = 1.000/1.500/2.000 ms` (no times without replies).
    pub fn line(&self) -> String {
        let head = format!("{} sent, {} received", self.sent, self.rtts.len());
        let mut t = self.rtts.clone();
        t.sort_unstable();
        let (Some(&min), Some(&max)) = (t.first(), t.last()) else {
            return head;
        };
        let n = t.len();
        let median = if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2
        };
        format!(
            "{head}, min/median/max = {}/{}/{} ms",
            ms(min),
            ms(median),
            ms(max)
        )
    }
}

/// What an errno from `OFFLOAD_IOC_SPAWN` to `node` means; ends with the errno's name.
pub fn spawn_error(errno: i32, node: &str) -> String {
    let why = match errno {
        libc::EHOSTUNREACH => format!("node {node} cannot be reached (unknown, or this node)"),
        libc::ENOTCONN => format!("peer {node} is down or lost"),
        libc::ETIMEDOUT => format!("no answer from {node} in time; the shadow may run"),
        libc::ECONNRESET => format!("peer {node} was lost while waiting"),
        libc::EBUSY => {
            "this file is a shadow's or another process's, or too many messages in flight".into()
        }
        libc::ENOENT => format!("node {node} has no /usr/bin/offload to start the shadow"),
        libc::EOPNOTSUPP => "no memory window (or the peer does not know SPAWN)".into(),
        libc::EINVAL => "the record or the request was refused as invalid".into(),
        _ => common_error(errno),
    };
    format!("{why} ({})", errno_name(errno))
}

/// The node list of a PS entry: `b,c` (names from `name`), `-` when empty.
fn node_list(nodes: u64, name: &dyn Fn(u32) -> String) -> String {
    let list: Vec<String> = (0..64)
        .filter(|i| nodes & (1u64 << i) != 0)
        .map(|i| word(&name(i)))
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// `ROLE pid=P home=NODE:PID nodes=LIST executors=N forwarded=N served=N faults=N`; `name`
/// gives a node's name from its index.
pub fn ps_line(e: &crate::abi::PsEntry, name: &dyn Fn(u32) -> String) -> String {
    format!(
        "{} pid={} home={}:{} nodes={} executors={} forwarded={} served={} faults={}",
        crate::shadow::role_name(e),
        e.pid,
        word(&name(e.home_node)),
        e.home_pid,
        node_list(e.nodes, name),
        e.executors,
        e.forwarded,
        e.served,
        e.faults
    )
}

/// `  thread TID node=NODE[ calls=N]` under a home's `offload ps` line: where one thread of
/// the process runs (`node=?` for an executor that has served no call yet); `calls` (the
/// calls it forwarded home) only for a thread on another node.
pub fn thread_line(
    tid: u32,
    node: Option<u32>,
    calls: Option<u64>,
    name: &dyn Fn(u32) -> String,
) -> String {
    let node = node.map_or("?".to_string(), |n| word(&name(n)));
    match calls {
        Some(c) => format!("  thread {tid} node={node} calls={c}"),
        None => format!("  thread {tid} node={node}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lines() {
        let me = NodeLine {
            name: "a".into(),
            index: 0,
            state: None,
        };
        assert_eq!(node_line(&me), "a 0 self");
        let b = NodeLine {
            name: "b".into(),
            index: 1,
            state: Some(1),
        };
        assert_eq!(node_line(&b), "b 1 up");
        let odd = NodeLine {
            name: "x y\n".into(),
            index: 7,
            state: Some(9),
        };
        assert_eq!(node_line(&odd), "x?y? 7 state-9");
        assert_eq!(state_name(0), "down");
        assert_eq!(state_name(2), "lost");
        assert_eq!(word(""), "-");
    }

    #[test]
    fn ping_lines() {
        assert_eq!(
            reply_line(1, "b", 56, 1_234_567),
            "seq=1 node=b bytes=56 rtt=1.235 ms"
        );
        assert_eq!(
            error_line(2, "b", &ping_error(libc::ENOTCONN, "b")),
            "seq=2 node=b error: peer b is down"
        );
    }

    #[test]
    fn errno_messages() {
        assert_eq!(ping_error(libc::ENOTCONN, "b"), "peer b is down");
        assert_eq!(ping_error(libc::EHOSTUNREACH, "x"), "no node named x");
        assert_eq!(ping_error(libc::EHOSTUNREACH, "7"), "no node with index 7");
        assert_eq!(ping_error(libc::ETIMEDOUT, "b"), "no answer from b in time");
        assert_eq!(
            ping_error(libc::ECONNRESET, "b"),
            "peer b was lost while waiting"
        );
        assert_eq!(ping_error(libc::EINTR, "b"), "interrupted");
        assert!(common_error(libc::EIO).contains("dmesg"));
        assert!(common_error(libc::EPERM).contains("not permitted"));
        assert!(window_error(libc::EOPNOTSUPP).starts_with("this VM has no memory window"));
        assert_eq!(
            alloc_error(libc::ENOMEM, 3),
            "no free run of 3 pages in this node's slice"
        );
        assert!(alloc_error(libc::EOPNOTSUPP, 3).contains("no memory window"));
        assert_eq!(alloc_error(libc::EINTR, 3), "interrupted");
    }

    #[test]
    fn call_messages_name_the_errno() {
        assert_eq!(
            call_error(libc::ESRCH, "a", 99),
            "no executor for tid 99 on node a (-ESRCH)"
        );
        assert_eq!(
            call_error(libc::EHOSTUNREACH, "7", 1),
            "no node with index 7, or it is this node (-EHOSTUNREACH)"
        );
        assert!(call_error(libc::EHOSTUNREACH, "x", 1).ends_with("(-EHOSTUNREACH)"));
        assert_eq!(
            call_error(libc::ENOTCONN, "b", 1),
            "peer b is down (-ENOTCONN)"
        );
        assert!(call_error(libc::ECONNRESET, "b", 1).contains("lost"));
        assert_eq!(call_error(libc::EINTR, "b", 1), "interrupted (-EINTR)");
        assert_eq!(errno_name(libc::EPERM), "-1");
        assert!(exec_error(libc::EBUSY, 5).contains("tid 5"));
        assert_eq!(served_line(39, -2), "served nr=39 ret=-2");
        assert_eq!(executor_line(10, 11), "executor pid=10 tid=11");
    }

    #[test]
    fn ps_and_spawn_lines() {
        let name = |i: u32| {
            ["a", "b", "c"]
                .get(i as usize)
                .map_or(i.to_string(), |s| s.to_string())
        };
        let mut e = crate::abi::PsEntry {
            pid: 7,
            role: crate::abi::ROLE_HOME,
            home_node: 0,
            home_pid: 7,
            nodes: 0b110 | 1 << 9,
            executors: 2,
            forwarded: 0,
            served: 5,
            faults: 3,
            ..Default::default()
        };
        assert_eq!(
            ps_line(&e, &name),
            "home pid=7 home=a:7 nodes=b,c,9 executors=2 forwarded=0 served=5 faults=3"
        );
        e.role = crate::abi::ROLE_SHADOW;
        e.nodes = 0;
        assert!(ps_line(&e, &name).starts_with("shadow pid=7 home=a:7 nodes=- "));
        assert!(spawn_error(libc::ENOENT, "b").ends_with("(-ENOENT)"));
        assert!(spawn_error(libc::ENOTCONN, "b").contains("peer b is down"));
    }

    #[test]
    fn summary_lines() {
        let s = Summary {
            sent: 4,
            rtts: vec![2_000_000, 1_000_000, 1_500_000, 1_600_000],
        };
        assert!(s.all_received());
        assert_eq!(
            s.line(),
            "4 sent, 4 received, min/median/max = 1.000/1.550/2.000 ms"
        );
        let odd = Summary {
            sent: 3,
            rtts: vec![3, 1_000_000, 2_000_000],
        };
        assert!(!Summary {
            sent: 4,
            ..odd.clone()
        }
        .all_received());
        assert_eq!(
            odd.line(),
            "3 sent, 3 received, min/median/max = 0.000/1.000/2.000 ms"
        );
        let none = Summary {
            sent: 2,
            rtts: vec![],
        };
        assert_eq!(none.line(), "2 sent, 0 received");
        assert!(!none.all_received());
    }
}
