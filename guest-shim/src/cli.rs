//! Argument parsing of the `offload` command (hand-written: the binary goes into every
//! guest initramfs and stays small).
//!
//! ```text
//! offload nodes
//! offload ping NODE [-c COUNT] [-s SIZE] [-i SECONDS]
//! offload mem SUBCOMMAND ...        (the memory window; see USAGE)
//! offload serve [--count N] [--map OFF@ADDR[:LEN]]...
//! offload call --node NODE --tid T [--map OFF@ADDR[:LEN]]... [--str ADDR=TEXT]... NR [ARG]...
//! offload run [--on NODE] [--place K=NODE[,K=NODE]...] -- PROG [ARG]...
//! offload ps
//! offload spawn --on NODE --exe PATH [--env NAME=VALUE]... [--exit]
//! offload shadow NODE PID TID REC_OFF REC_LEN UID GID      (started by offload.ko)
//! offload help | -h | --help
//! ```
//!
//! Window offsets and sizes: hex (`0x...`) or decimal, with an optional binary suffix
//! `K`, `M` or `G`; values (`VALUE`, `--seed`): hex or decimal; system call arguments: hex,
//! decimal or negative decimal (two's complement).

use std::time::Duration;

use crate::abi::PING_MAX;

/// The synopsis (printed after a usage error).
pub const SYNOPSIS: &str = "\
usage: offload nodes
       offload ping NODE [-c COUNT] [-s SIZE] [-i SECONDS]
       offload mem info
       offload mem read OFF
       offload mem write OFF VALUE
       offload mem wait OFF VALUE [--timeout-ms N]
       offload mem counter OFF --iters N --parties P [--timeout-ms N]
       offload mem fill --bytes N --seed S --mailbox OFF [--timeout-ms N]
       offload mem sum --mailbox OFF [--timeout-ms N]
       offload mem touch OFF BYTES (--read|--write) [--stride N]
       offload mem hold OFF [--write VALUE] [--seconds S]
       offload serve [--count N] [--map OFF@ADDR[:LEN]]...
       offload call --node NODE --tid T [--map OFF@ADDR[:LEN]]... [--str ADDR=TEXT]... NR [ARG]...
       offload run [--on NODE] [--place K=NODE[,K=NODE]...] -- PROG [ARG]...
       offload ps
       offload spawn --on NODE --exe PATH [--env NAME=VALUE]... [--exit]
       offload shadow NODE PID TID REC_OFF REC_LEN UID GID
       offload help";

/// The help text (`offload help`).
pub const USAGE: &str = "\
usage: offload nodes
       offload ping NODE [-c COUNT] [-s SIZE] [-i SECONDS]
       offload mem info
       offload mem read OFF
       offload mem write OFF VALUE
       offload mem wait OFF VALUE [--timeout-ms N]
       offload mem counter OFF --iters N --parties P [--timeout-ms N]
       offload mem fill --bytes N --seed S --mailbox OFF [--timeout-ms N]
       offload mem sum --mailbox OFF [--timeout-ms N]
       offload mem touch OFF BYTES (--read|--write) [--stride N]
       offload mem hold OFF [--write VALUE] [--seconds S]
       offload serve [--count N] [--map OFF@ADDR[:LEN]]...
       offload call --node NODE --tid T [--map OFF@ADDR[:LEN]]... [--str ADDR=TEXT]... NR [ARG]...
       offload run [--on NODE] [--place K=NODE[,K=NODE]...] -- PROG [ARG]...
       offload ps
       offload spawn --on NODE --exe PATH [--env NAME=VALUE]... [--exit]
       offload shadow NODE PID TID REC_OFF REC_LEN UID GID
       offload help

nodes   this node and every other node with its state, one per line: NAME INDEX STATE
        (STATE: self, up, down, lost)
ping    round trips through both monitors into NODE's driver and back; NODE is a name
        or an index. -c round trips (default 4), -s payload bytes (0-256, default 56),
        -i pause between round trips in seconds (default 0). Exit status 0 when every
        reply came back intact, 1 otherwise, 2 on bad usage.

mem     the memory window shared by every node (mmap of /dev/offload). OFF is a window
        offset, hex (0x...) or decimal; offsets and sizes take a K, M or G suffix. Every
        u64 is 8-byte aligned. Exit status 0 on success, 1 on failure, 2 on bad usage.
  info     window base=0x.. size=N slice_offset=0x.. slice_len=N node=I
  read     print the u64 at OFF (decimal)
  write    store VALUE at OFF
  wait     poll the u64 at OFF until it equals VALUE (default timeout 60000 ms)
  counter  P parties (on any nodes) each add 1 to the u64 at OFF+8 N times under a
           spinlock at OFF (arrivals at OFF+16, finished at OFF+24; one page); prints
           counter=<value> once all P finished
  fill     allocate ceil(N/4096) pages, fill N bytes with the pattern of seed S, print
           offset=0x.. checksum=0x.., publish the run in the mailbox page at OFF
           (OFF+8 offset, OFF+16 bytes, OFF = 1) and wait until a reader sets OFF+24
           (default timeout 600000 ms); then free the pages
  sum      wait for the mailbox at OFF, checksum the run it names, print
           offset=0x.. checksum=0x.. bytes=N ns=T, and set OFF+24
  touch    one u64 per stride (default 4096) over BYTES from OFF, read or written;
           prints pages=N ns=T ns_per_page=X
  hold     map the page of OFF, store VALUE there if --write, print holding, sleep
           S seconds (default 3600) without touching it again

serve   become the executor of this thread's tid: print executor pid=P tid=T, then run
        each system call forwarded to that tid (raw syscall, -errno on failure) and
        print served nr=N ret=R; stop after --count N calls (default: never).
        --map OFF@ADDR[:LEN] maps window offset OFF at address ADDR (LEN bytes, default
        4096; OFF and ADDR page aligned), so pointer arguments into the window are valid.
call    forward system call NR with up to 6 ARGs (hex, decimal, or -N) to executor tid T
        of NODE (a name or an index) and print ret=R. --map as for serve; --str
        ADDR=TEXT writes TEXT and a NUL at ADDR (inside a --map) first. Exit status 1
        with the reason when the call could not run (no executor: -ESRCH; unknown
        node: -EHOSTUNREACH; ...).
run     exec PROG as a marked process: the syscall shim preloaded (/lib/offload/shim.so),
        address-space randomization off. PROG must be dynamically linked (else exit
        status 2); not found: 127. --on NODE: the main thread runs on NODE; --place
        K=NODE: the K-th thread created starts on NODE (the shim gets node indices in
        OFFLOAD_ON / OFFLOAD_PLACE); an unknown NODE is refused (exit status 2).
ps      the marked processes of this node, one per line: ROLE pid=P home=NODE:PID
        nodes=LIST executors=N forwarded=N served=N faults=N threads=N comm=NAME (ROLE: home,
        shadow; a home's threads include its executors, each standing for a thread elsewhere)
spawn   test helper: write a spawn record (PATH, the --env strings as its whole
        environment) into window pages and start a shadow of this process on NODE;
        print spawned node=N pid=P rec_off=0x.. rec_len=L, then wait for a signal
        (--exit: exit at once). Its end makes the driver kill the shadow.
shadow  run by offload.ko for a SPAWN from node NODE (not by users): exec the record's
        program as the shadow of PID; errors go to the kernel log.";

/// Default `-c`.
pub const DEFAULT_COUNT: u32 = 4;
/// Default `-s` (as ping(8)).
pub const DEFAULT_SIZE: usize = 56;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Nodes,
    Ping(PingArgs),
    Mem(MemCommand),
    Serve(ServeArgs),
    Call(CallArgs),
    Run(crate::launch::RunArgs),
    Ps,
    Spawn(crate::shadow::SpawnArgs),
    Shadow(crate::shadow::ShadowArgs),
    Help,
}

/// Default length of a `--map` (one page).
pub const DEFAULT_MAP_LEN: u64 = PAGE;

/// `--map OFF@ADDR[:LEN]`: window bytes `[off, off + len)` mapped at address `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSpec {
    pub off: u64,
    pub addr: u64,
    /// Bytes, a multiple of the page size.
    pub len: u64,
}

/// Arguments of `offload serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeArgs {
    /// Calls to serve before exiting (`None`: for ever).
    pub count: Option<u64>,
    pub maps: Vec<MapSpec>,
}

/// Arguments of `offload call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallArgs {
    /// The home node as given: a name or an index.
    pub node: String,
    pub tid: u32,
    pub maps: Vec<MapSpec>,
    /// `--str ADDR=TEXT`: text written NUL-terminated at an address inside a map.
    pub strs: Vec<(u64, String)>,
    pub nr: u64,
    /// At most [`crate::abi::SYSCALL_ARGS`]; missing ones are 0.
    pub args: Vec<u64>,
}

/// Default `mem wait --timeout-ms`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout of the other `mem` waits (counter barriers, fill and sum mailboxes).
pub const DEFAULT_LONG_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `mem touch --stride`.
pub const DEFAULT_STRIDE: u64 = 4096;
/// Default `mem hold --seconds`.
pub const DEFAULT_HOLD_SECONDS: u64 = 3600;
/// Bytes of the `counter` block and of the mailbox (four u64, in one page).
pub const BLOCK_LEN: u64 = 32;
/// The window's page size (the layouts above must not cross one).
pub const PAGE: u64 = 4096;

/// `offload mem ...`: every offset is a window offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemCommand {
    Info,
    Read {
        off: u64,
    },
    Write {
        off: u64,
        value: u64,
    },
    Wait {
        off: u64,
        value: u64,
        timeout: Duration,
    },
    Counter {
        off: u64,
        iters: u64,
        parties: u64,
        timeout: Duration,
    },
    Fill {
        bytes: u64,
        seed: u64,
        mailbox: u64,
        timeout: Duration,
    },
    Sum {
        mailbox: u64,
        timeout: Duration,
    },
    Touch {
        off: u64,
        bytes: u64,
        write: bool,
        stride: u64,
    },
    Hold {
        off: u64,
        write: Option<u64>,
        seconds: u64,
    },
}

/// Arguments of `offload ping`.
#[derive(Debug, Clone, PartialEq)]
pub struct PingArgs {
    /// The node as given: a name or an index.
    pub target: String,
    pub count: u32,
    pub size: usize,
    pub interval: Duration,
}

/// A command line that cannot be run (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("no subcommand given")]
    NoCommand,
    #[error("unknown subcommand '{0}'")]
    UnknownCommand(String),
    #[error("unexpected argument '{0}'")]
    Unexpected(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    #[error("bad value '{value}' for {option}: {why}")]
    BadValue {
        option: String,
        value: String,
        why: &'static str,
    },
    #[error("ping needs a NODE (a name or an index)")]
    NoTarget,
    #[error("{0}")]
    Missing(String),
}

/// Parses the arguments after the program name.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Command, UsageError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let Some((&first, rest)) = args.split_first() else {
        return Err(UsageError::NoCommand);
    };
    match first {
        "nodes" => match rest.first() {
            None => Ok(Command::Nodes),
            Some(a) => Err(UsageError::Unexpected(a.to_string())),
        },
        "ping" => parse_ping(rest).map(Command::Ping),
        "mem" => parse_mem(rest).map(Command::Mem),
        "serve" => parse_serve(rest).map(Command::Serve),
        "call" => parse_call(rest).map(Command::Call),
        "run" => crate::launch::parse(rest)
            .map(Command::Run)
            .map_err(|e| UsageError::Missing(e.to_string())),
        "ps" => match rest.first() {
            None => Ok(Command::Ps),
            Some(a) => Err(UsageError::Unexpected(a.to_string())),
        },
        "spawn" => crate::shadow::parse_spawn(rest)
            .map(Command::Spawn)
            .map_err(UsageError::Missing),
        "shadow" => crate::shadow::parse_shadow(rest)
            .map(Command::Shadow)
            .map_err(UsageError::Missing),
        "help" | "-h" | "--help" => Ok(Command::Help),
        other => Err(UsageError::UnknownCommand(other.to_string())),
    }
}

fn parse_ping(args: &[&str]) -> Result<PingArgs, UsageError> {
    let mut p = PingArgs {
        target: String::new(),
        count: DEFAULT_COUNT,
        size: DEFAULT_SIZE,
        interval: Duration::ZERO,
    };
    let mut target = None;
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        if arg.len() < 2 || !arg.starts_with('-') {
            if target.replace(arg.to_string()).is_some() {
                return Err(UsageError::Unexpected(arg.to_string()));
            }
            continue;
        }
        let (opt, attached) = arg.split_at(2);
        let value = if attached.is_empty() {
            it.next()
                .copied()
                .ok_or_else(|| UsageError::MissingValue(opt.to_string()))?
        } else {
            attached
        };
        match opt {
            "-c" => p.count = parse_count(value)?,
            "-s" => p.size = parse_size(value)?,
            "-i" => p.interval = parse_interval(value)?,
            _ => return Err(UsageError::UnknownOption(arg.to_string())),
        }
    }
    p.target = target.ok_or(UsageError::NoTarget)?;
    Ok(p)
}

/// Arguments of a subcommand (`mem ...`, `serve`, `call`): positionals and
/// `--option [value]` pairs (an option may repeat).
struct MemArgs<'a> {
    /// The command as messages name it (`mem read`, `call`).
    command: String,
    positional: Vec<&'a str>,
    options: Vec<(&'a str, &'a str)>,
}

impl<'a> MemArgs<'a> {
    /// Splits `args`; `flags` take no value, `valued` take one (`--opt V` or `--opt=V`).
    fn split(
        command: String,
        args: &[&'a str],
        flags: &[&str],
        valued: &[&str],
    ) -> Result<Self, UsageError> {
        let mut m = MemArgs {
            command,
            positional: Vec::new(),
            options: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(&arg) = it.next() {
            if !arg.starts_with("--") {
                m.positional.push(arg);
                continue;
            }
            let (name, attached) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            if flags.contains(&name) && attached.is_none() {
                m.options.push((name, ""));
            } else if valued.contains(&name) {
                let value = match attached {
                    Some(v) => v,
                    None => it
                        .next()
                        .copied()
                        .ok_or_else(|| UsageError::MissingValue(name.to_string()))?,
                };
                m.options.push((name, value));
            } else {
                return Err(UsageError::UnknownOption(arg.to_string()));
            }
        }
        Ok(m)
    }

    /// Exactly the positionals named in `names`.
    fn positionals(&self, names: &[&str]) -> Result<Vec<&'a str>, UsageError> {
        if let Some(extra) = self.positional.get(names.len()) {
            return Err(UsageError::Unexpected(extra.to_string()));
        }
        if self.positional.len() < names.len() {
            return Err(UsageError::Missing(format!(
                "{} needs {}",
                self.command,
                names[self.positional.len()..].join(" ")
            )));
        }
        Ok(self.positional.clone())
    }

    /// The last value given for `name`.
    fn option(&self, name: &str) -> Option<&'a str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| *n == name)
    }

    fn required(&self, name: &str) -> Result<&'a str, UsageError> {
        self.option(name)
            .ok_or_else(|| UsageError::Missing(format!("{} needs {name}", self.command)))
    }

    /// Every value given for `name`, in order.
    fn all(&self, name: &str) -> Vec<&'a str> {
        self.options
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect()
    }

    fn timeout(&self, default: Duration) -> Result<Duration, UsageError> {
        match self.option("--timeout-ms") {
            None => Ok(default),
            Some(v) => parse_value(v)
                .map(Duration::from_millis)
                .ok_or_else(|| bad("--timeout-ms", v, "milliseconds")),
        }
    }
}

/// A number: `0x` hex or decimal; with `suffix`, an optional K, M or G (powers of 1024).
pub fn parse_number(s: &str, suffix: bool) -> Option<u64> {
    let (digits, scale) = match s.as_bytes().last() {
        Some(b'k' | b'K') if suffix => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') if suffix => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') if suffix => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) if !hex.is_empty() && !hex.starts_with('+') => {
            u64::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().ok()?
        }
        None => return None,
    };
    n.checked_mul(scale)
}

/// A window offset or size (suffixes allowed).
fn parse_bytes(v: &str) -> Option<u64> {
    parse_number(v, true)
}

/// A value to store or compare (no suffix).
fn parse_value(v: &str) -> Option<u64> {
    parse_number(v, false)
}

fn offset(what: &str, v: &str) -> Result<u64, UsageError> {
    parse_bytes(v).ok_or_else(|| bad(what, v, "a window offset (hex 0x.. or decimal)"))
}

/// An offset of a u64: 8-byte aligned.
fn word_offset(what: &str, v: &str) -> Result<u64, UsageError> {
    let off = offset(what, v)?;
    if off % 8 != 0 {
        return Err(bad(what, v, "an 8-byte aligned offset"));
    }
    Ok(off)
}

/// The offset of a 32-byte block (counter, mailbox): aligned, inside one page.
fn block_offset(what: &str, v: &str) -> Result<u64, UsageError> {
    let off = word_offset(what, v)?;
    if off % PAGE > PAGE - BLOCK_LEN {
        return Err(bad(what, v, "an offset whose 32 bytes lie in one page"));
    }
    Ok(off)
}

fn value(what: &str, v: &str) -> Result<u64, UsageError> {
    parse_value(v).ok_or_else(|| bad(what, v, "a u64 (hex 0x.. or decimal)"))
}

fn at_least_one(what: &str, v: &str, n: Option<u64>) -> Result<u64, UsageError> {
    match n {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(bad(what, v, "a number of at least 1")),
    }
}

fn parse_mem(args: &[&str]) -> Result<MemCommand, UsageError> {
    let Some((&sub, rest)) = args.split_first() else {
        return Err(UsageError::Missing(
            "mem needs a subcommand: info, read, write, wait, counter, fill, sum, touch, hold"
                .into(),
        ));
    };
    let split = |command: &str, flags: &[&str], valued: &[&str]| {
        MemArgs::split(format!("mem {command}"), rest, flags, valued)
    };
    match sub {
        "info" => {
            split("info", &[], &[])?.positionals(&[])?;
            Ok(MemCommand::Info)
        }
        "read" => {
            let a = split("read", &[], &[])?;
            let p = a.positionals(&["OFF"])?;
            Ok(MemCommand::Read {
                off: word_offset("OFF", p[0])?,
            })
        }
        "write" => {
            let a = split("write", &[], &[])?;
            let p = a.positionals(&["OFF", "VALUE"])?;
            Ok(MemCommand::Write {
                off: word_offset("OFF", p[0])?,
                value: value("VALUE", p[1])?,
            })
        }
        "wait" => {
            let a = split("wait", &[], &["--timeout-ms"])?;
            let p = a.positionals(&["OFF", "VALUE"])?;
            Ok(MemCommand::Wait {
                off: word_offset("OFF", p[0])?,
                value: value("VALUE", p[1])?,
                timeout: a.timeout(DEFAULT_WAIT_TIMEOUT)?,
            })
        }
        "counter" => {
            let a = split("counter", &[], &["--iters", "--parties", "--timeout-ms"])?;
            let p = a.positionals(&["OFF"])?;
            let iters = a.required("--iters")?;
            let parties = a.required("--parties")?;
            Ok(MemCommand::Counter {
                off: block_offset("OFF", p[0])?,
                iters: at_least_one("--iters", iters, parse_value(iters))?,
                parties: at_least_one("--parties", parties, parse_value(parties))?,
                timeout: a.timeout(DEFAULT_LONG_TIMEOUT)?,
            })
        }
        "fill" => {
            let a = split(
                "fill",
                &[],
                &["--bytes", "--seed", "--mailbox", "--timeout-ms"],
            )?;
            a.positionals(&[])?;
            let bytes = a.required("--bytes")?;
            Ok(MemCommand::Fill {
                bytes: at_least_one("--bytes", bytes, parse_bytes(bytes))?,
                seed: value("--seed", a.required("--seed")?)?,
                mailbox: block_offset("--mailbox", a.required("--mailbox")?)?,
                timeout: a.timeout(DEFAULT_LONG_TIMEOUT)?,
            })
        }
        "sum" => {
            let a = split("sum", &[], &["--mailbox", "--timeout-ms"])?;
            a.positionals(&[])?;
            Ok(MemCommand::Sum {
                mailbox: block_offset("--mailbox", a.required("--mailbox")?)?,
                timeout: a.timeout(DEFAULT_LONG_TIMEOUT)?,
            })
        }
        "touch" => {
            let a = split("touch", &["--read", "--write"], &["--stride"])?;
            let p = a.positionals(&["OFF", "BYTES"])?;
            let write = match (a.has("--read"), a.has("--write")) {
                (true, false) => false,
                (false, true) => true,
                _ => {
                    return Err(UsageError::Missing(
                        "mem touch needs exactly one of --read and --write".into(),
                    ))
                }
            };
            let stride = match a.option("--stride") {
                None => DEFAULT_STRIDE,
                Some(v) => match parse_bytes(v) {
                    Some(n) if n >= 8 && n % 8 == 0 => n,
                    _ => return Err(bad("--stride", v, "a multiple of 8 bytes")),
                },
            };
            Ok(MemCommand::Touch {
                off: word_offset("OFF", p[0])?,
                bytes: at_least_one("BYTES", p[1], parse_bytes(p[1]))?,
                write,
                stride,
            })
        }
        "hold" => {
            let a = split("hold", &[], &["--write", "--seconds"])?;
            let p = a.positionals(&["OFF"])?;
            let write = a
                .option("--write")
                .map(|v| value("--write", v))
                .transpose()?;
            let off = if write.is_some() {
                word_offset("OFF", p[0])?
            } else {
                offset("OFF", p[0])?
            };
            let seconds = match a.option("--seconds") {
                None => DEFAULT_HOLD_SECONDS,
                Some(v) => parse_value(v).ok_or_else(|| bad("--seconds", v, "seconds"))?,
            };
            Ok(MemCommand::Hold {
                off,
                write,
                seconds,
            })
        }
        other => Err(UsageError::UnknownCommand(format!("mem {other}"))),
    }
}

/// `OFF@ADDR[:LEN]`: OFF and ADDR page aligned, LEN ≥ 1 rounded up to whole pages.
fn parse_map(v: &str) -> Result<MapSpec, UsageError> {
    const WHY: &str = "OFF@ADDR[:LEN], OFF and ADDR page aligned, LEN at least 1";
    let (off, rest) = v.split_once('@').ok_or_else(|| bad("--map", v, WHY))?;
    let (addr, len) = match rest.split_once(':') {
        Some((a, l)) => (a, parse_bytes(l)),
        None => (rest, Some(DEFAULT_MAP_LEN)),
    };
    let spec = match (parse_bytes(off), parse_value(addr), len) {
        (Some(off), Some(addr), Some(len)) if len >= 1 => len
            .checked_next_multiple_of(PAGE)
            .map(|len| MapSpec { off, addr, len }),
        _ => None,
    };
    match spec {
        Some(m)
            if m.off % PAGE == 0 && m.addr % PAGE == 0 && m.addr.checked_add(m.len).is_some() =>
        {
            Ok(m)
        }
        _ => Err(bad("--map", v, WHY)),
    }
}

fn parse_maps(a: &MemArgs) -> Result<Vec<MapSpec>, UsageError> {
    a.all("--map").into_iter().map(parse_map).collect()
}

/// A system call number or argument: hex, decimal, or `-N` (two's complement).
pub fn parse_arg(v: &str) -> Option<u64> {
    match v.strip_prefix('-') {
        Some(n) => parse_value(n)
            .filter(|&n| n <= i64::MAX as u64 + 1)
            .map(|n| n.wrapping_neg()),
        None => parse_value(v),
    }
}

fn parse_serve(args: &[&str]) -> Result<ServeArgs, UsageError> {
    let a = MemArgs::split("serve".into(), args, &[], &["--count", "--map"])?;
    a.positionals(&[])?;
    let count = a
        .option("--count")
        .map(|v| at_least_one("--count", v, parse_value(v)))
        .transpose()?;
    Ok(ServeArgs {
        count,
        maps: parse_maps(&a)?,
    })
}

/// `--str ADDR=TEXT`.
fn parse_str(v: &str) -> Result<(u64, String), UsageError> {
    match v.split_once('=').map(|(a, t)| (parse_value(a), t)) {
        Some((Some(addr), text)) => Ok((addr, text.to_string())),
        _ => Err(bad("--str", v, "ADDR=TEXT with ADDR a number")),
    }
}

fn parse_call(args: &[&str]) -> Result<CallArgs, UsageError> {
    let a = MemArgs::split(
        "call".into(),
        args,
        &[],
        &["--node", "--tid", "--map", "--str"],
    )?;
    let Some((&nr, rest)) = a.positional.split_first() else {
        return Err(UsageError::Missing("call needs NR".into()));
    };
    if let Some(extra) = rest.get(crate::abi::SYSCALL_ARGS) {
        return Err(UsageError::Unexpected(extra.to_string()));
    }
    let tid = a.required("--tid")?;
    let node = a.required("--node")?;
    if node.is_empty() {
        return Err(bad("--node", node, "a node name or index"));
    }
    Ok(CallArgs {
        node: node.to_string(),
        tid: tid
            .parse::<u32>()
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| bad("--tid", tid, "a thread id (decimal, at least 1)"))?,
        maps: parse_maps(&a)?,
        strs: a
            .all("--str")
            .into_iter()
            .map(parse_str)
            .collect::<Result<_, _>>()?,
        nr: parse_value(nr).ok_or_else(|| bad("NR", nr, "a system call number"))?,
        args: rest
            .iter()
            .map(|v| parse_arg(v).ok_or_else(|| bad("ARG", v, "a number (hex, decimal or -N)")))
            .collect::<Result<_, _>>()?,
    })
}

fn bad(option: &str, value: &str, why: &'static str) -> UsageError {
    UsageError::BadValue {
        option: option.to_string(),
        value: value.to_string(),
        why,
    }
}

fn parse_count(v: &str) -> Result<u32, UsageError> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(bad("-c", v, "a count of at least 1")),
    }
}

fn parse_size(v: &str) -> Result<usize, UsageError> {
    match v.parse::<usize>() {
        Ok(n) if n <= PING_MAX => Ok(n),
        _ => Err(bad("-s", v, "a size of 0 to 256 bytes")),
    }
}

fn parse_interval(v: &str) -> Result<Duration, UsageError> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(bad("-i", v, "seconds between 0 and 3600")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(args: &[&str]) -> PingArgs {
        match parse(args) {
            Ok(Command::Ping(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subcommands() {
        assert_eq!(parse(&["nodes"]), Ok(Command::Nodes));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse::<&str>(&[]), Err(UsageError::NoCommand));
        assert_eq!(
            parse(&["pong"]),
            Err(UsageError::UnknownCommand("pong".into()))
        );
        assert_eq!(
            parse(&["nodes", "x"]),
            Err(UsageError::Unexpected("x".into()))
        );
    }

    #[test]
    fn shadow_subcommands() {
        assert_eq!(parse(&["ps"]), Ok(Command::Ps));
        assert!(parse(&["ps", "x"]).is_err());
        assert!(matches!(
            parse(&["spawn", "--on", "b", "--exe", "/bin/sh"]),
            Ok(Command::Spawn(_))
        ));
        assert!(matches!(
            parse(&["shadow", "0", "1", "1", "0", "64", "0", "0"]),
            Ok(Command::Shadow(_))
        ));
        assert!(parse(&["shadow", "0"]).is_err());
    }

    #[test]
    fn ping_defaults_and_options() {
        let p = ping(&["ping", "b"]);
        assert_eq!((p.target.as_str(), p.count, p.size), ("b", 4, 56));
        assert_eq!(p.interval, Duration::ZERO);
        let p = ping(&["ping", "-c", "10", "1", "-s0", "-i", "0.5"]);
        assert_eq!((p.target.as_str(), p.count, p.size), ("1", 10, 0));
        assert_eq!(p.interval, Duration::from_millis(500));
        assert_eq!(ping(&["ping", "-s", "256", "b"]).size, 256);
    }

    #[test]
    fn ping_usage_errors() {
        assert_eq!(parse(&["ping"]), Err(UsageError::NoTarget));
        assert_eq!(
            parse(&["ping", "b", "c"]),
            Err(UsageError::Unexpected("c".into()))
        );
        assert_eq!(
            parse(&["ping", "b", "-c"]),
            Err(UsageError::MissingValue("-c".into()))
        );
        assert_eq!(
            parse(&["ping", "b", "-x", "1"]),
            Err(UsageError::UnknownOption("-x".into()))
        );
        for bad in [
            &["ping", "b", "-c", "0"][..],
            &["ping", "b", "-c", "x"],
            &["ping", "b", "-s", "257"],
            &["ping", "b", "-s", "-1"],
            &["ping", "b", "-i", "nan"],
            &["ping", "b", "-i", "-1"],
        ] {
            assert!(
                matches!(parse(bad), Err(UsageError::BadValue { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_help_starts_with_the_synopsis() {
        assert!(USAGE.starts_with(SYNOPSIS));
    }

    fn mem(args: &[&str]) -> Result<MemCommand, UsageError> {
        let mut all = vec!["mem"];
        all.extend_from_slice(args);
        match parse(&all)? {
            Command::Mem(m) => Ok(m),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_take_hex_decimal_and_suffixes() {
        assert_eq!(parse_number("0x1000", true), Some(4096));
        assert_eq!(parse_number("0X10", false), Some(16));
        assert_eq!(parse_number("4096", false), Some(4096));
        assert_eq!(parse_number("4K", true), Some(4096));
        assert_eq!(parse_number("128M", true), Some(128 << 20));
        assert_eq!(parse_number("0x10k", true), Some(16 << 10));
        assert_eq!(parse_number("1g", true), Some(1 << 30));
        assert_eq!(parse_number("4K", false), None);
        assert_eq!(parse_number("18446744073709551615", false), Some(u64::MAX));
        assert_eq!(parse_number("17179869184G", true), None); // 2^64: overflows
        for bad in ["", "0x", "K", "-1", "+1", "0x+1", "1.5", " 1", "0xg"] {
            assert_eq!(parse_number(bad, true), None, "{bad:?}");
        }
    }

    #[test]
    fn mem_subcommands() {
        assert_eq!(mem(&["info"]), Ok(MemCommand::Info));
        assert_eq!(mem(&["read", "0x8"]), Ok(MemCommand::Read { off: 8 }));
        assert_eq!(
            mem(&["write", "128M", "0x2a"]),
            Ok(MemCommand::Write {
                off: 128 << 20,
                value: 42
            })
        );
        assert_eq!(
            mem(&["wait", "16", "7"]),
            Ok(MemCommand::Wait {
                off: 16,
                value: 7,
                timeout: DEFAULT_WAIT_TIMEOUT
            })
        );
        assert_eq!(
            mem(&["wait", "--timeout-ms=250", "16", "7"]),
            Ok(MemCommand::Wait {
                off: 16,
                value: 7,
                timeout: Duration::from_millis(250)
            })
        );
        assert_eq!(
            mem(&["counter", "0x1000", "--iters", "1000", "--parties", "2"]),
            Ok(MemCommand::Counter {
                off: 4096,
                iters: 1000,
                parties: 2,
                timeout: DEFAULT_LONG_TIMEOUT
            })
        );
        assert_eq!(
            mem(&[
                "fill",
                "--bytes",
                "1M",
                "--seed",
                "7",
                "--mailbox",
                "0x7fff000"
            ]),
            Ok(MemCommand::Fill {
                bytes: 1 << 20,
                seed: 7,
                mailbox: 0x7fff000,
                timeout: DEFAULT_LONG_TIMEOUT
            })
        );
        assert_eq!(
            mem(&["sum", "--mailbox=4064", "--timeout-ms", "5"]),
            Ok(MemCommand::Sum {
                mailbox: 4064,
                timeout: Duration::from_millis(5)
            })
        );
        assert_eq!(
            mem(&["touch", "0", "64M", "--write"]),
            Ok(MemCommand::Touch {
                off: 0,
                bytes: 64 << 20,
                write: true,
                stride: 4096
            })
        );
        assert_eq!(
            mem(&["touch", "--read", "--stride", "64", "8", "1K"]),
            Ok(MemCommand::Touch {
                off: 8,
                bytes: 1024,
                write: false,
                stride: 64
            })
        );
        assert_eq!(
            mem(&["hold", "0x1001"]),
            Ok(MemCommand::Hold {
                off: 0x1001,
                write: None,
                seconds: DEFAULT_HOLD_SECONDS
            })
        );
        assert_eq!(
            mem(&["hold", "0x1000", "--write", "5", "--seconds", "0"]),
            Ok(MemCommand::Hold {
                off: 0x1000,
                write: Some(5),
                seconds: 0
            })
        );
    }

    #[test]
    fn mem_usage_errors() {
        let missing = |args: &[&str]| matches!(mem(args), Err(UsageError::Missing(_)));
        assert!(missing(&[]));
        assert!(missing(&["read"]));
        assert!(missing(&["write", "0"]));
        assert!(missing(&["counter", "0", "--iters", "1"]));
        assert!(missing(&["fill", "--bytes", "1", "--seed", "1"]));
        assert!(missing(&["sum"]));
        assert!(missing(&["touch", "0", "4096"]));
        assert!(missing(&["touch", "0", "4096", "--read", "--write"]));
        assert_eq!(
            mem(&["read"]).unwrap_err().to_string(),
            "mem read needs OFF"
        );
        assert_eq!(
            mem(&["frob"]),
            Err(UsageError::UnknownCommand("mem frob".into()))
        );
        assert_eq!(mem(&["info", "x"]), Err(UsageError::Unexpected("x".into())));
        assert_eq!(
            mem(&["read", "0", "--bogus"]),
            Err(UsageError::UnknownOption("--bogus".into()))
        );
        assert_eq!(
            mem(&["wait", "0", "1", "--timeout-ms"]),
            Err(UsageError::MissingValue("--timeout-ms".into()))
        );
        for bad in [
            &["read", "4"][..], // unaligned u64
            &["read", "x"],
            &["write", "0", "1K"], // values take no suffix
            &["write", "0", "-1"],
            &["counter", "4072", "--iters", "1", "--parties", "1"], // crosses a page
            &["counter", "0", "--iters", "0", "--parties", "1"],
            &["counter", "0", "--iters", "1", "--parties", "0"],
            &["fill", "--bytes", "0", "--seed", "1", "--mailbox", "0"],
            &["sum", "--mailbox", "4"],
            &["touch", "0", "0", "--read"],
            &["touch", "0", "8", "--read", "--stride", "12"],
            &["hold", "4", "--write", "1"],
            &["hold", "0", "--seconds", "x"],
            &["wait", "0", "1", "--timeout-ms", "1s"],
        ] {
            assert!(
                matches!(mem(bad), Err(UsageError::BadValue { .. })),
                "{bad:?}: {:?}",
                mem(bad)
            );
        }
    }

    #[test]
    fn serve_options() {
        assert_eq!(
            parse(&["serve"]),
            Ok(Command::Serve(ServeArgs {
                count: None,
                maps: vec![]
            }))
        );
        assert_eq!(
            parse(&[
                "serve",
                "--count",
                "4",
                "--map",
                "0x7ff0000@0x200000000000",
                "--map=16K@0x200000010000:5000"
            ]),
            Ok(Command::Serve(ServeArgs {
                count: Some(4),
                maps: vec![
                    MapSpec {
                        off: 0x7ff0000,
                        addr: 0x2000_0000_0000,
                        len: 4096
                    },
                    MapSpec {
                        off: 16 << 10,
                        addr: 0x2000_0001_0000,
                        len: 8192
                    }
                ]
            }))
        );
    }

    #[test]
    fn serve_usage_errors() {
        for bad in [
            &["serve", "--count", "0"][..],
            &["serve", "--map", "0x1000"],
            &["serve", "--map", "0x1001@0x200000000000"],
            &["serve", "--map", "0x1000@0x200000000001"],
            &["serve", "--map", "0x1000@0x200000000000:0"],
            &["serve", "--map", "0x1000@1K"],
            &["serve", "--map", "0@0xfffffffffffff000:8K"],
        ] {
            assert!(
                matches!(parse(bad), Err(UsageError::BadValue { .. })),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        assert_eq!(
            parse(&["serve", "x"]),
            Err(UsageError::Unexpected("x".into()))
        );
    }

    fn call(args: &[&str]) -> Result<CallArgs, UsageError> {
        let mut all = vec!["call"];
        all.extend_from_slice(args);
        match parse(&all)? {
            Command::Call(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn call_arguments() {
        let c = call(&[
            "--node",
            "a",
            "--tid",
            "42",
            "--map",
            "0x7ff0000@0x200000000000",
            "--str",
            "0x200000000000=/tmp/x y",
            "--str=0x200000000100=",
            "83",
            "0x200000000000",
            "0755",
        ])
        .unwrap();
        assert_eq!((c.node.as_str(), c.tid, c.nr), ("a", 42, 83));
        assert_eq!(c.maps.len(), 1);
        assert_eq!(
            c.strs,
            vec![
                (0x2000_0000_0000, "/tmp/x y".to_string()),
                (0x2000_0000_0100, String::new())
            ]
        );
        assert_eq!(c.args, vec![0x2000_0000_0000, 755]);
        let c = call(&[
            "--node", "1", "--tid", "7", "0x101", "-100", "1", "2", "3", "4", "5",
        ])
        .unwrap();
        assert_eq!(c.nr, 257);
        assert_eq!(c.args[0], (-100i64) as u64);
        assert_eq!(c.args.len(), 6);
        assert_eq!(parse_arg("-9223372036854775808"), Some(1 << 63));
        assert_eq!(parse_arg("-9223372036854775809"), None);
    }

    #[test]
    fn call_usage_errors() {
        let missing = |args: &[&str]| matches!(call(args), Err(UsageError::Missing(_)));
        assert!(missing(&["--node", "a", "--tid", "1"]));
        assert!(missing(&["--node", "a", "39"]));
        assert!(missing(&["--tid", "1", "39"]));
        assert_eq!(
            call(&["--tid", "1", "39"]).unwrap_err().to_string(),
            "call needs --node"
        );
        assert_eq!(
            call(&["--node", "a", "--tid", "1", "39", "1", "2", "3", "4", "5", "6", "7"]),
            Err(UsageError::Unexpected("7".into()))
        );
        for bad in [
            &["--node", "a", "--tid", "0", "39"][..],
            &["--node", "a", "--tid", "x", "39"],
            &["--node", "", "--tid", "1", "39"],
            &["--node", "a", "--tid", "1", "x"],
            &["--node", "a", "--tid", "1", "39", "1K"],
            &["--node", "a", "--tid", "1", "--str", "nope", "39"],
            &["--node", "a", "--tid", "1", "--str", "x=1", "39"],
            &["--node", "a", "--tid", "1", "--map", "1@0", "39"],
        ] {
            assert!(
                matches!(call(bad), Err(UsageError::BadValue { .. })),
                "{bad:?}: {:?}",
                call(bad)
            );
        }
    }

    #[test]
    fn a_lone_dash_is_a_target() {
        assert_eq!(ping(&["ping", "-"]).target, "-");
    }
}
