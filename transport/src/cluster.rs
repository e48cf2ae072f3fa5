//! Cluster configuration: the node name → address table and the pre-shared cluster secret.
//!
//! A cluster is written either as a file (one `name host:port` per line, `#` starts a
//! comment) or inline (`a=127.0.0.1:7001,b=127.0.0.1:7002`). A node's index is its position
//! in that list, starting at 0; every node must be given the same list. The secret is a file
//! of at least 32 bytes; the 32-byte Noise PSK and the short cluster id are BLAKE2s-256
//! hashes of its whole content under two different domain strings.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use blake2::{Blake2s256, Digest};
use thiserror::Error;

/// Longest node name, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Shortest accepted secret file, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Most nodes in one cluster (indices are `u16` on the wire).
pub const MAX_NODES: usize = 1024;

/// Why a cluster description or secret was refused.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: expected `name host:port`, got {text:?}")]
    Syntax { line: usize, text: String },
    #[error("line {line}: invalid node name {name:?} (1 to 32 of A-Za-z0-9_-)")]
    Name { line: usize, name: String },
    #[error("line {line}: cannot resolve address {addr:?}")]
    Address {
        line: usize,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: node {name:?} is listed twice")]
    DuplicateName { line: usize, name: String },
    #[error("line {line}: address {addr} is already used by node {other:?}")]
    DuplicateAddress {
        line: usize,
        addr: SocketAddr,
        other: String,
    },
    #[error("the cluster lists no node")]
    Empty,
    #[error("the cluster lists more than {MAX_NODES} nodes")]
    TooMany,
    #[error("node {0:?} is not in the cluster")]
    UnknownNode(String),
    #[error("secret file {path} has {len} bytes, at least {MIN_SECRET_LEN} are required")]
    SecretTooShort { path: PathBuf, len: usize },
}

/// Index of a node in the cluster (its position in the cluster list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u16);

impl NodeId {
    /// The index as a `usize`, for indexing tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// True for 1 to [`MAX_NAME_LEN`] characters of `A-Za-z0-9_-`.
pub fn is_valid_node_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The nodes of a cluster, in index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    nodes: Vec<(String, SocketAddr)>,
}

impl Cluster {
    /// Builds a cluster from (name, address) pairs in index order, with the same checks as
    /// the parsers.
    pub fn new(nodes: Vec<(String, SocketAddr)>) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster { nodes: Vec::new() };
        for (i, (name, addr)) in nodes.into_iter().enumerate() {
            cluster.push(i + 1, name, addr)?;
        }
        cluster.finish()
    }

    /// Parses the file form: one `name host:port` per line, `#` comments, blank lines.
    pub fn parse_file_text(text: &str) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster { nodes: Vec::new() };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(addr), None) = (words.next(), words.next(), words.next()) else {
                return Err(syntax(i + 1, raw));
            };
            let addr = resolve(i + 1, addr)?;
            cluster.push(i + 1, name.to_owned(), addr)?;
        }
        cluster.finish()
    }

    /// Parses the inline form `a=127.0.0.1:7001,b=127.0.0.1:7002` (the "line" in errors is
    /// the 1-based position in the list).
    pub fn parse_inline(text: &str) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster { nodes: Vec::new() };
        for (i, item) in text.split(',').enumerate() {
            let item = item.trim();
            let Some((name, addr)) = item.split_once('=') else {
                return Err(syntax(i + 1, item));
            };
            let addr = resolve(i + 1, addr.trim())?;
            cluster.push(i + 1, name.trim().to_owned(), addr)?;
        }
        cluster.finish()
    }

    /// Reads a cluster file.
    pub fn from_file(path: &Path) -> Result<Cluster, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read {
            path: path.to_owned(),
            source,
        })?;
        Cluster::parse_file_text(&text)
    }

    /// A command-line value: the inline form if it contains `=`, else a cluster file path.
    pub fn from_arg(arg: &str) -> Result<Cluster, ClusterError> {
        if arg.contains('=') {
            Cluster::parse_inline(arg)
        } else {
            Cluster::from_file(Path::new(arg))
        }
    }

    fn push(&mut self, line: usize, name: String, addr: SocketAddr) -> Result<(), ClusterError> {
        if !is_valid_node_name(&name) {
            return Err(ClusterError::Name { line, name });
        }
        if self.nodes.iter().any(|(n, _)| *n == name) {
            return Err(ClusterError::DuplicateName { line, name });
        }
        if let Some((other, _)) = self.nodes.iter().find(|(_, a)| *a == addr) {
            let other = other.clone();
            return Err(ClusterError::DuplicateAddress { line, addr, other });
        }
        self.nodes.push((name, addr));
        Ok(())
    }

    fn finish(self) -> Result<Cluster, ClusterError> {
        match self.nodes.len() {
            0 => Err(ClusterError::Empty),
            n if n > MAX_NODES => Err(ClusterError::TooMany),
            _ => Ok(self),
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of the node called `name`.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        let i = self.nodes.iter().position(|(n, _)| n == name)?;
        Some(NodeId(i as u16))
    }

    /// Like [`id`](Self::id), as a `Result`.
    pub fn require(&self, name: &str) -> Result<NodeId, ClusterError> {
        self.id(name)
            .ok_or_else(|| ClusterError::UnknownNode(name.to_owned()))
    }

    /// The name of node `id` (`"?"` for an id outside the cluster).
    pub fn name(&self, id: NodeId) -> &str {
        self.nodes.get(id.index()).map_or("?", |(n, _)| n.as_str())
    }

    /// The address node `id` listens on.
    pub fn addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.nodes.get(id.index()).map(|(_, a)| *a)
    }

    /// All node ids, in index order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len()).map(|i| NodeId(i as u16))
    }
}

fn syntax(line: usize, text: &str) -> ClusterError {
    ClusterError::Syntax {
        line,
        text: text.to_owned(),
    }
}

fn resolve(line: usize, addr: &str) -> Result<SocketAddr, ClusterError> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    let err = |source| ClusterError::Address {
        line,
        addr: addr.to_owned(),
        source,
    };
    addr.to_socket_addrs()
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::ErrorKind::NotFound.into()))
}

/// The key material derived from the cluster secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    psk: [u8; 32],
    cluster_id: [u8; 8],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// Derives the PSK and cluster id from raw secret bytes (any length; files are checked
    /// for the 32-byte minimum by [`from_file`](Self::from_file)).
    pub fn from_bytes(material: &[u8]) -> Secret {
        let hash = |domain: &[u8]| -> [u8; 32] {
            let mut h = Blake2s256::new();
            h.update(domain);
            h.update(material);
            h.finalize().into()
        };
        let psk = hash(b"offload-transport v1 psk\0");
        let id = hash(b"offload-transport v1 cluster-id\0");
        let mut cluster_id = [0u8; 8];
        cluster_id.copy_from_slice(&id[..8]);
        Secret { psk, cluster_id }
    }

    /// Reads a secret file (`--secret FILE`): its whole content is the key material. Refuses
    /// files under 32 bytes; warns (log) if the file is readable by group or others.
    pub fn from_file(path: &Path) -> Result<Secret, ClusterError> {
        let read_err = |source| ClusterError::Read {
            path: path.to_owned(),
            source,
        };
        let material = std::fs::read(path).map_err(read_err)?;
        if material.len() < MIN_SECRET_LEN {
            return Err(ClusterError::SecretTooShort {
                path: path.to_owned(),
                len: material.len(),
            });
        }
        warn_if_exposed(path);
        Ok(Secret::from_bytes(&material))
    }

    /// The 32-byte Noise pre-shared key.
    pub fn psk(&self) -> &[u8; 32] {
        &self.psk
    }

    /// A short public fingerprint of the secret, carried in `Hello` for diagnostics.
    pub fn cluster_id(&self) -> [u8; 8] {
        self.cluster_id
    }
}

fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            log::warn!(
                "secret file {} is accessible by group or others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_form_with_comments() {
        let c = Cluster::parse_file_text(
            "# the cluster\n\na 127.0.0.1:7001   # first\n  b\t[::1]:7002\n#c 1.2.3.4:5\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.id("a"), Some(NodeId(0)));
        assert_eq!(c.id("b"), Some(NodeId(1)));
        assert_eq!(c.id("c"), None);
        assert_eq!(c.name(NodeId(1)), "b");
        assert_eq!(c.name(NodeId(9)), "?");
        assert_eq!(c.addr(NodeId(1)), Some("[::1]:7002".parse().unwrap()));
        assert_eq!(c.ids().collect::<Vec<_>>(), vec![NodeId(0), NodeId(1)]);
    }

    #[test]
    fn inline_form_equals_file_form() {
        let a = Cluster::parse_inline("a=127.0.0.1:7001, b = 127.0.0.1:7002").unwrap();
        let b = Cluster::parse_file_text("a 127.0.0.1:7001\nb 127.0.0.1:7002").unwrap();
        assert_eq!(a, b);
        assert_eq!(Cluster::from_arg("a=127.0.0.1:1").unwrap().len(), 1);
    }

    #[test]
    fn hostnames_resolve() {
        let c = Cluster::parse_inline("a=localhost:7001").unwrap();
        assert_eq!(c.addr(NodeId(0)).unwrap().port(), 7001);
    }

    #[test]
    fn errors() {
        type Check = fn(&ClusterError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("a", |e| matches!(e, ClusterError::Syntax { line: 1, .. })),
            ("a 1.2.3.4:5 x", |e| {
                matches!(e, ClusterError::Syntax { .. })
            }),
            ("a 1.2.3.4", |e| matches!(e, ClusterError::Address { .. })),
            ("a nohost.invalid:99999", |e| {
                matches!(e, ClusterError::Address { .. })
            }),
            ("a!b 1.2.3.4:5", |e| matches!(e, ClusterError::Name { .. })),
            ("a 1.2.3.4:5\na 1.2.3.4:6", |e| {
                matches!(e, ClusterError::DuplicateName { line: 2, .. })
            }),
            ("a 1.2.3.4:5\n\nb 1.2.3.4:5", |e| {
                matches!(e, ClusterError::DuplicateAddress { line: 3, .. })
            }),
            ("# nothing\n", |e| matches!(e, ClusterError::Empty)),
        ];
        for (text, check) in cases {
            let err = Cluster::parse_file_text(text).unwrap_err();
            assert!(check(&err), "{text:?} gave {err:?}");
        }
        assert!(matches!(
            Cluster::parse_inline("a=1.2.3.4:5,b"),
            Err(ClusterError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            Cluster::parse_inline(""),
            Err(ClusterError::Syntax { .. })
        ));
        let long = "x".repeat(33);
        assert!(Cluster::parse_inline(&format!("{long}=1.2.3.4:5")).is_err());
        assert!(Cluster::from_arg("/nonexistent/cluster").is_err());
        let c = Cluster::parse_inline("a=1.2.3.4:5").unwrap();
        assert!(matches!(c.require("b"), Err(ClusterError::UnknownNode(_))));
    }

    #[test]
    fn node_names() {
        assert!(is_valid_node_name("a"));
        assert!(is_valid_node_name("Node_2-x"));
        assert!(is_valid_node_name(&"z".repeat(32)));
        assert!(!is_valid_node_name(""));
        assert!(!is_valid_node_name(&"z".repeat(33)));
        assert!(!is_valid_node_name("a b"));
        assert!(!is_valid_node_name("é"));
    }

    #[test]
    fn secret_file_rules() {
        let dir = std::env::temp_dir().join(format!("transport-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, [7u8; 31]).unwrap();
        assert!(matches!(
            Secret::from_file(&short),
            Err(ClusterError::SecretTooShort { len: 31, .. })
        ));
        let good = dir.join("good");
        std::fs::write(&good, [7u8; 32]).unwrap();
        let s = Secret::from_file(&good).unwrap();
        assert_eq!(s, Secret::from_bytes(&[7u8; 32]));
        assert_ne!(s, Secret::from_bytes(&[8u8; 32]));
        assert_ne!(&s.psk()[..8], &s.cluster_id()[..], "domains differ");
        assert!(!format!("{s:?}").contains("psk"));
        assert!(Secret::from_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
