//! Network faults: partition topologies as grudges (node -> peers it drops), applied as an nft
//! table of our own inside each node's namespace; packet loss with `numgen random`; latency
//! probing (netem) so it can be refused clearly where the kernel has none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{NemesisError, NodeError};
use crate::node::Node;
use crate::NFT_TABLE_PREFIX;

/// The nft table holding partition rules.
pub const PARTITION_TABLE: &str = "jepsen_nemesis_partition";
/// The nft table holding packet-loss rules.
pub const LOSS_TABLE: &str = "jepsen_nemesis_loss";

/// A partition topology, computed from the node list (seeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "topology")]
pub enum Topology {
    /// Isolate one random node from all others.
    IsolateOne,
    /// Isolate the named node (the current partition leader or the active controller).
    IsolateNode {
        /// The node to isolate.
        node: String,
    },
    /// Random majority/minority halves.
    MajorityMinority,
    /// Every node sees a majority (itself and its ring neighbours); no two the same.
    MajoritiesRing,
    /// Two halves joined by one bridge node that sees both.
    Bridge,
    /// Cut the harness's clients from one node (random when `node` is None).
    CutClients {
        /// The node to cut clients from.
        node: Option<String>,
    },
    /// Cut one node from its peers on one TCP port only (either end), the rest of their
    /// traffic flowing: Jepsen 2013's cut of the followers' replication traffic to a leader that
    /// keeps its control-plane session.
    CutPort {
        /// The node cut off.
        node: String,
        /// The TCP port whose traffic is dropped.
        port: u16,
    },
}

impl Topology {
    /// The topology's name in nemesis ops.
    pub fn name(&self) -> &'static str {
        match self {
            Topology::IsolateOne => "isolate-one",
            Topology::IsolateNode { .. } => "isolate-node",
            Topology::MajorityMinority => "majority-minority",
            Topology::MajoritiesRing => "majorities-ring",
            Topology::Bridge => "bridge",
            Topology::CutClients { .. } => "cut-clients",
            Topology::CutPort { .. } => "cut-port",
        }
    }
}

/// A computed partition: which peers each node drops, and whether clients are cut from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grudge {
    /// The topology it came from.
    pub topology: String,
    /// node -> peers whose traffic it drops (both directions are filtered on the node).
    pub drops: BTreeMap<String, BTreeSet<String>>,
    /// Nodes that drop the harness's client traffic.
    pub clients_cut: BTreeSet<String>,
    /// Only traffic to or from this TCP port is dropped (None: all traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Grudge {
    /// True when traffic between `a` and `b` is cut (either side drops the other).
    pub fn cut(&self, a: &str, b: &str) -> bool {
        let has = |x: &str, y: &str| self.drops.get(x).is_some_and(|s| s.contains(y));
        has(a, b) || has(b, a)
    }

    /// The nodes with rules to install.
    pub fn targets(&self) -> BTreeSet<String> {
        self.drops
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(n, _)| n.clone())
            .chain(self.clients_cut.iter().cloned())
            .collect()
    }

    /// The op value describing this partition.
    pub fn describe(&self) -> serde_json::Value {
        let components = self.components();
        let isolated: Vec<&String> = self
            .drops
            .iter()
            .filter(|(n, s)| s.len() + 1 == self.drops.len() && !n.is_empty())
            .map(|(n, _)| n)
            .collect();
        serde_json::json!({
            "topology": self.topology,
            "grudge": self.drops,
            "isolated": isolated,
            "components": components,
            "clients-cut": self.clients_cut,
            "port": self.port,
        })
    }

    /// Each node's view: the nodes it can still reach (including itself).
    fn components(&self) -> BTreeMap<String, Vec<String>> {
        let nodes: Vec<&String> = self.drops.keys().collect();
        nodes
            .iter()
            .map(|a| {
                let sees = nodes
                    .iter()
                    .filter(|b| !self.cut(a, b))
                    .map(|b| b.to_string())
                    .collect();
                (a.to_string(), sees)
            })
            .collect()
    }
}

fn complete(
    nodes: &[String],
    cut: impl Fn(&str, &str) -> bool,
) -> BTreeMap<String, BTreeSet<String>> {
    nodes
        .iter()
        .map(|a| {
            let s = nodes
                .iter()
                .filter(|b| *b != a && cut(a, b))
                .cloned()
                .collect();
            (a.clone(), s)
        })
        .collect()
}

/// Computes the grudge of `topology` over `nodes` using `rng` for random choices.
pub fn grudge<R: Rng>(
    topology: &Topology,
    nodes: &[String],
    rng: &mut R,
) -> Result<Grudge, NemesisError> {
    if nodes.len() < 2 && !matches!(topology, Topology::CutClients { .. }) {
        return Err(NemesisError::Invalid(format!(
            "partition `{}` needs at least 2 nodes, have {}",
            topology.name(),
            nodes.len()
        )));
    }
    let check = |n: &String| {
        if nodes.contains(n) {
            Ok(())
        } else {
            Err(NemesisError::UnknownNode(n.clone()))
        }
    };
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let mut clients_cut = BTreeSet::new();
    let mut port = None;
    let drops = match topology {
        Topology::IsolateOne | Topology::IsolateNode { .. } | Topology::CutPort { .. } => {
            let target = match topology {
                Topology::IsolateNode { node } => {
                    check(node)?;
                    node.clone()
                }
                Topology::CutPort { node, port: p } => {
                    check(node)?;
                    port = Some(*p);
                    check(node)?;
                    node.clone()
                }
                _ => shuffled[0].clone(),
            };
            complete(nodes, |a, b| a == target || b == target)
        }
        Topology::MajorityMinority => {
            let minority: BTreeSet<&String> = shuffled[..nodes.len() / 2].iter().collect();
            complete(nodes, |a, b| {
                minority.contains(&a.to_string()) != minority.contains(&b.to_string())
            })
        }
        Topology::MajoritiesRing => {
            // Ring order from the shuffle; each node sees the nodes within ring distance r,
            // r = ceil((majority - 1) / 2), so it sees 2r + 1 >= a majority, and each window is
            // centred on a different node.
            let n = shuffled.len();
            let pos: BTreeMap<String, usize> = shuffled
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i))
                .collect();
            let majority = n / 2 + 1;
            let r = (majority - 1).div_ceil(2);
            complete(nodes, |a, b| {
                let d = pos[a].abs_diff(pos[b]);
                d.min(n - d) > r
            })
        }
        Topology::Bridge => {
            let half = nodes.len() / 2;
            let bridge = shuffled[half].clone();
            let left: BTreeSet<String> = shuffled[..half].iter().cloned().collect();
            complete(nodes, |a, b| {
                a != bridge && b != bridge && left.contains(a) != left.contains(b)
            })
        }
        Topology::CutClients { node } => {
            let target = match node {
                Some(n) => {
                    check(n)?;
                    n.clone()
                }
                None => shuffled[0].clone(),
            };
            clients_cut.insert(target);
            complete(nodes, |_, _| false)
        }
    };
    Ok(Grudge {
        topology: topology.name().to_string(),
        drops,
        clients_cut,
        port,
    })
}

fn addr_set(addrs: &[IpAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("{{ {} }}", list.join(", "))
}

fn family(addrs: &[IpAddr]) -> &'static str {
    if addrs.first().is_some_and(|a| a.is_ipv6()) {
        "ip6"
    } else {
        "ip"
    }
}

/// The nft script that makes a node drop traffic to and from `addrs` in table `table`.
pub fn drop_script(table: &str, addrs: &[IpAddr], loss_percent: Option<u8>) -> String {
    port_drop_script(table, addrs, loss_percent, None)
}

/// [`drop_script`] restricted to TCP traffic to or from `port` when it is given.
pub fn port_drop_script(
    table: &str,
    addrs: &[IpAddr],
    loss_percent: Option<u8>,
    port: Option<u16>,
) -> String {
    let fam = family(addrs);
    let set = addr_set(addrs);
    let loss = match loss_percent.filter(|p| *p < 100) {
        None => String::new(),
        Some(p) => format!(" numgen random mod 100 < {p}"),
    };
    let matches: Vec<String> = match port {
        None => vec![String::new()],
        Some(p) => vec![format!(" tcp dport {p}"), format!(" tcp sport {p}")],
    };
    let mut script = format!(
        "add table inet {table}; \
         add chain inet {table} input {{ type filter hook input priority -10; policy accept; }}; \
         add chain inet {table} output {{ type filter hook output priority -10; policy accept; }}"
    );
    for m in &matches {
        script.push_str(&format!(
            "; add rule inet {table} input {fam} saddr {set}{m}{loss} drop\
             ; add rule inet {table} output {fam} daddr {set}{m}{loss} drop"
        ));
    }
    script
}

fn run_ok(node: &dyn Node, argv: &[&str]) -> Result<(), NodeError> {
    let out = node.exec(argv)?;
    if out.success() {
        Ok(())
    } else {
        Err(NodeError::CommandFailed {
            node: node.name().to_string(),
            command: argv.join(" "),
            status: format!("{:?}", out.code),
            stderr: out.stderr.trim().to_string(),
        })
    }
}

/// Installs drop rules for `addrs` on `node` in `table` (replacing an earlier table).
pub fn install_drops(
    node: &dyn Node,
    table: &str,
    addrs: &[IpAddr],
    loss_percent: Option<u8>,
) -> Result<(), NodeError> {
    install_port_drops(node, table, addrs, loss_percent, None)
}

/// [`install_drops`] restricted to TCP traffic to or from `port` when it is given.
pub fn install_port_drops(
    node: &dyn Node,
    table: &str,
    addrs: &[IpAddr],
    loss_percent: Option<u8>,
    port: Option<u16>,
) -> Result<(), NodeError> {
    delete_table(node, table)?;
    if addrs.is_empty() {
        return Ok(());
    }
    run_ok(
        node,
        &["nft", &port_drop_script(table, addrs, loss_percent, port)],
    )
}

/// Deletes `table` on `node`; a missing table is fine.
pub fn delete_table(node: &dyn Node, table: &str) -> Result<(), NodeError> {
    let out = node.exec(&["nft", "list", "tables"])?;
    if !out.success() {
        return Err(NodeError::CommandFailed {
            node: node.name().to_string(),
            command: "nft list tables".into(),
            status: format!("{:?}", out.code),
            stderr: out.stderr.trim().to_string(),
        });
    }
    if out
        .stdout
        .lines()
        .any(|l| l.trim() == format!("table inet {table}"))
    {
        run_ok(node, &["nft", "delete", "table", "inet", table])?;
    }
    Ok(())
}

/// Deletes every nft table of ours on `node`.
pub fn delete_all_tables(node: &dyn Node) -> Result<(), NodeError> {
    let out = node.exec(&["nft", "list", "tables"])?;
    for line in out.stdout.lines() {
        let mut parts = line.split_whitespace();
        if let (Some("table"), Some(fam), Some(name)) = (parts.next(), parts.next(), parts.next()) {
            if name.starts_with(NFT_TABLE_PREFIX) {
                run_ok(node, &["nft", "delete", "table", fam, name])?;
            }
        }
    }
    Ok(())
}

/// Probes whether `node`'s kernel has netem (adds and removes a qdisc on `lo`).
/// `Ok(())` when it does; `Err(reason)` otherwise.
pub fn probe_netem(node: &dyn Node) -> Result<(), String> {
    match node.exec(&["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]) {
        Ok(out) if out.success() => {
            let _ = node.exec(&["tc", "qdisc", "del", "dev", "lo", "root"]);
            Ok(())
        }
        Ok(out) => Err(format!(
            "no netem qdisc in this kernel (`tc qdisc add ... netem` failed: {}); latency needs netem",
            out.stderr.trim()
        )),
        Err(e) => Err(format!("could not probe netem: {e}")),
    }
}

/// The grudge a fresh `Nemesis::new(nodes, seed)` computes for its first partition of
/// `topology` (for tests and reports that want to predict it).
pub fn grudge_for_seed(
    topology: &Topology,
    nodes: &[String],
    seed: u64,
) -> Result<Grudge, NemesisError> {
    use rand::SeedableRng;
    grudge(
        topology,
        nodes,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
    )
}
