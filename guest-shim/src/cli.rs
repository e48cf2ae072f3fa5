//! Argument parsing of the `offload` command (hand-written: the binary goes into every
//! guest initramfs and stays small).
//!
//! ```text
//! offload nodes
//! offload ping NODE [-c COUNT] [-s SIZE] [-i SECONDS]
//! offload help | -h | --help
//! ```

use std::time::Duration;

use crate::abi::PING_MAX;

/// The synopsis (printed after a usage error).
pub const SYNOPSIS: &str = "\
usage: offload nodes
       offload ping NODE [-c COUNT] [-s SIZE] [-i SECONDS]
       offload help";

/// The help text (`offload help`).
pub const USAGE: &str = "\
usage: offload nodes
       offload ping NODE [-c COUNT] [-s SIZE] [-i SECONDS]
       offload help

nodes   this node and every other node with its state, one per line: NAME INDEX STATE
        (STATE: self, up, down, lost)
ping    round trips through both monitors into NODE's driver and back; NODE is a name
        or an index. -c round trips (default 4), -s payload bytes (0-256, default 56),
        -i pause between round trips in seconds (default 0). Exit status 0 when every
        reply came back intact, 1 otherwise, 2 on bad usage.";

/// Default `-c`.
pub const DEFAULT_COUNT: u32 = 4;
/// Default `-s` (as ping(8)).
pub const DEFAULT_SIZE: usize = 56;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Nodes,
    Ping(PingArgs),
    Help,
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

    #[test]
    fn a_lone_dash_is_a_target() {
        assert_eq!(ping(&["ping", "-"]).target, "-");
    }
}
