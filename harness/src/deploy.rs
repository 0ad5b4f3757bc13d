//! Deploying the bundled broker: each node's `server.properties` derived from the test spec
//! (every node a broker, the first three — or all, when fewer — also controllers, as a KRaft
//! combined quorum), with the spec's broker properties applied last so users can override any
//! default here.

use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

use crate::spec::TestSpec;

/// Kafka listener port on every node.
pub const KAFKA_PORT: u16 = 9092;
/// Controller listener port on every controller.
pub const CONTROLLER_PORT: u16 = 9093;
/// Metrics (`/metrics`, `/health`) port on every node.
pub const METRICS_PORT: u16 = 9100;

/// How many of `nodes` are controllers: 3 (or all nodes when fewer), as KRaft deployments do.
pub fn controller_count(nodes: usize) -> usize {
    nodes.min(3)
}

/// The `server.properties` text of node `index` (0-based; node ids start at 1).
pub fn broker_properties(
    spec: &TestSpec,
    index: usize,
    addrs: &[IpAddr],
    data_dir: &Path,
) -> String {
    let id = index + 1;
    let controllers = controller_count(addrs.len());
    let voters: Vec<String> = addrs
        .iter()
        .take(controllers)
        .enumerate()
        .map(|(i, a)| format!("{}@{a}:{CONTROLLER_PORT}", i + 1))
        .collect();
    let addr = addrs[index];
    let roles = if index < controllers {
        "broker,controller"
    } else {
        "broker"
    };
    let mut out = String::new();
    let mut set = |k: &str, v: String| {
        let _ = writeln!(out, "{k}={v}");
    };
    set("node.id", id.to_string());
    set("process.roles", roles.into());
    set("controller.quorum.voters", voters.join(","));
    set("listeners", format!("PLAINTEXT://{addr}:{KAFKA_PORT}"));
    set("metrics.listener", format!("http://{addr}:{METRICS_PORT}"));
    set("log.dirs", data_dir.join("data").display().to_string());
    set(
        "metadata.log.dir",
        data_dir.join("meta").display().to_string(),
    );
    set("num.partitions", spec.partitions.to_string());
    set(
        "default.replication.factor",
        spec.replication_factor.to_string(),
    );
    // Test-friendly timings: faults are detected in seconds, not Kafka's production defaults.
    set("broker.heartbeat.interval.ms", "500".into());
    set("broker.session.timeout.ms", "3000".into());
    set("replica.lag.time.max.ms", "5000".into());
    set("auto.create.topics.enable", "false".into());
    for (k, v) in &spec.broker {
        set(k, v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::collections::BTreeMap;

    /// `key=value` lines, later lines winning, as the broker reads them.
    fn config_lines(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    fn addrs(n: u8) -> Vec<IpAddr> {
        (1..=n).map(|i| IpAddr::from([10, 88, 0, 10 + i])).collect()
    }

    #[test]
    fn five_nodes_have_three_controllers_and_spec_properties_win() {
        let cli = Cli::try_parse_from([
            "harness",
            "test",
            "--nodes",
            "5",
            "--broker-prop",
            "min.insync.replicas=2",
            "--broker-prop",
            "replica.lag.time.max.ms=9000",
        ])
        .expect("parses");
        let crate::cli::Command::Test(args) = cli.command else {
            panic!("test")
        };
        let spec = args.to_spec().expect("valid");
        let a = addrs(5);
        let p1 = config_lines(&broker_properties(&spec, 0, &a, Path::new("/d/n1")));
        let p5 = config_lines(&broker_properties(&spec, 4, &a, Path::new("/d/n5")));
        assert_eq!(p1["process.roles"], "broker,controller");
        assert_eq!(p5["process.roles"], "broker");
        assert_eq!(
            p5["controller.quorum.voters"],
            "1@10.88.0.11:9093,2@10.88.0.12:9093,3@10.88.0.13:9093"
        );
        assert_eq!(p5["listeners"], "PLAINTEXT://10.88.0.15:9092");
        assert_eq!(p1["min.insync.replicas"], "2");
        assert_eq!(
            p1["replica.lag.time.max.ms"], "9000",
            "the spec overrides defaults"
        );
        assert_eq!(p5["log.dirs"], "/d/n5/data");
    }
}
