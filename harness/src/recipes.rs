//! The config-safety matrix's risk recipes: for each risk Kafka's documentation admits for a
//! setting, the scripted faults aimed at the window that realises it, the broker and client
//! settings that open that window quickly, and which matrix cells it bears on. A recipe turns a
//! cell's spec into one aimed run; the matrix runs a cell's recipes (then the random nemesis)
//! until the first violation or the cell's budget.

use results::matrix::CellConfig;

use crate::spec::{FaultKind, TestSpec};

/// Broker settings every recipe uses: the ISR shrinks 2 s after a follower stops fetching,
/// and the controller fences a silent broker after 3 s, so each window opens within a few
/// seconds of its fault.
const FAST_FAILOVER: &[(&str, &str)] = &[
    ("replica.lag.time.max.ms", "2000"),
    ("broker.session.timeout.ms", "3000"),
];

/// The client a recipe needs beyond the cell's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeClient {
    /// The cell's settings as they are.
    AsIs,
    /// A producer that retries after a short request timeout (what duplicates need).
    Retries,
    /// Subscribed consumers of the native client, which heartbeat from `poll`, so a worker
    /// that stops polling loses its membership (what a zombie needs).
    GroupMembers,
}

/// One documented risk and the faults aimed at it.
#[derive(Debug, Clone, Copy)]
pub struct RiskRecipe {
    /// Its name in reports and on the command line (`--recipes`).
    pub name: &'static str,
    /// The documented risk, in words.
    pub risk: &'static str,
    /// How the faults open the window that realises it.
    pub window: &'static str,
    /// The scripted (or random) fault kinds of its schedule.
    pub nemesis: &'static [FaultKind],
    /// Seconds between faults (a scripted fault's steps are this far apart).
    pub interval: f64,
    /// The client it needs.
    pub client: RecipeClient,
    /// Whether the risk bears on a cell's settings.
    pub bears_on: fn(&CellConfig) -> bool,
    /// Run it only when asked for by name or when the matrix varies what it is about (the
    /// duplicates recipe: when the idempotence axis has both values).
    pub on_request: bool,
}

fn acks_0_or_1(c: &CellConfig) -> bool {
    c.acks == "0" || c.acks == "1"
}

fn acks_all_min_isr_1(c: &CellConfig) -> bool {
    c.acks == "all" && c.min_isr <= 1
}

fn acks_all_min_isr_2_up(c: &CellConfig) -> bool {
    // Above the replication factor the topic is unwritable before Kafka 3.7 and follows the
    // replica count from 3.7 (KAFKA-15583).
    c.acks == "all"
        && c.min_isr >= 2
        && (c.min_isr <= c.replication_factor || c.rules().effective_min_isr)
}

fn unclean_on(c: &CellConfig) -> bool {
    c.unclean && c.acks != "0"
}

fn acks_all(c: &CellConfig) -> bool {
    c.acks == "all"
}

fn retries_without_idempotence(c: &CellConfig) -> bool {
    !c.idempotence && c.acks != "0"
}

/// Every risk recipe, in the order a cell runs them.
pub const RISK_RECIPES: &[RiskRecipe] = &[
    RiskRecipe {
        name: "leader-failover",
        risk: "acks=0/1: the leader answers before its followers copy the record; if it fails \
               first, the record is lost",
        window: "the partition leader is cut from its peers (its clients still reach it and it \
                 goes on taking writes no follower fetches) until an in-sync follower is elected",
        nemesis: &[FaultKind::LeaderIsolation],
        interval: 5.0,
        client: RecipeClient::AsIs,
        bears_on: acks_0_or_1,
        on_request: false,
    },
    RiskRecipe {
        name: "isr-shrink-crash",
        risk: "acks=all with min.insync.replicas=1: the ISR shrinks to the leader, which then \
               acknowledges alone; a crash of that leader loses what it had not fsynced",
        window: "the leader's replication is cut until its ISR is itself, it acknowledges alone, \
                 then it is killed -9 losing its page cache and restarted as the only electable \
                 replica",
        nemesis: &[FaultKind::IsrShrinkCrash],
        interval: 4.0,
        client: RecipeClient::AsIs,
        bears_on: acks_all_min_isr_1,
        on_request: false,
    },
    RiskRecipe {
        name: "last-replica-standing",
        risk: "acks=all with min.insync.replicas>=2: the ISR shrinks to the leader and the \
               leader crashes losing its unfsynced tail, and is the only electable replica when \
               it returns (kafka-bugs.md #9); Eligible Leader Replicas (KIP-966, on by default \
               in Kafka 4.1) or an fsync per append close it",
        window: "the same aimed crash as isr-shrink-crash: replication cut until the ISR is the \
                 leader, then the leader killed -9 losing its page cache and restarted",
        nemesis: &[FaultKind::IsrShrinkCrash],
        interval: 4.0,
        client: RecipeClient::AsIs,
        bears_on: acks_all_min_isr_2_up,
        on_request: false,
    },
    RiskRecipe {
        name: "unclean-election",
        risk: "unclean.leader.election.enable=true: an out-of-sync replica can be elected and \
               acknowledged writes it lacks are lost",
        window: "the leader's replication is cut until its ISR is itself, then it is isolated \
                 and a lagging replica is elected uncleanly",
        nemesis: &[FaultKind::ReplicationCutFailover],
        interval: 8.0,
        client: RecipeClient::AsIs,
        bears_on: unclean_on,
        on_request: false,
    },
    RiskRecipe {
        name: "retry-duplicates",
        risk: "enable.idempotence=false with retries: a send that timed out after the broker \
               appended it is appended again by its retry",
        window: "partitions and kills while sends time out after 2 s and retry up to 10 times",
        nemesis: &[FaultKind::Partition, FaultKind::Kill],
        interval: 3.0,
        client: RecipeClient::Retries,
        bears_on: retries_without_idempotence,
        on_request: true,
    },
    RiskRecipe {
        name: "zombie-commit",
        risk: "a consumer that stalls past its session (a long GC pause) loses its partitions to \
               a rebalance, then commits its old positions; Kafka refuses the commit of a \
               member that is gone or of a stale generation, else the group's offsets move \
               back and the new owner's commits are lost (lost-commit). Aimed at acks=all \
               cells: the group's offsets are written like acks=all records \
               (offsets.commit.required.acks=-1) under the cell's min.insync.replicas, so a \
               lost commit there is a broken promise, not another face of a lossy setting",
        window: "subscribed consumers commit after every poll; one at a time stops polling \
                 (and so heartbeating) for twice its 3 s session while the others take its \
                 partitions and commit past it, then commits as the member it was",
        nemesis: &[FaultKind::ZombieConsumer],
        interval: 8.0,
        client: RecipeClient::GroupMembers,
        bears_on: acks_all,
        on_request: false,
    },
];

/// Recipes of the documented risks left out, and why (shown in the matrix's setup).
pub const LEFT_OUT: &[(&str, &str)] = &[];

/// The recipe named `name`.
pub fn by_name(name: &str) -> Option<&'static RiskRecipe> {
    RISK_RECIPES.iter().find(|r| r.name == name)
}

/// The recipes a cell runs: those bearing on its settings, of `chosen` when given (names),
/// else every recipe not run only on request, plus the on-request ones in `requested`.
pub fn for_cell(
    cell: &CellConfig,
    chosen: Option<&[String]>,
    requested: &[&str],
) -> Vec<&'static RiskRecipe> {
    RISK_RECIPES
        .iter()
        .filter(|r| (r.bears_on)(cell))
        .filter(|r| match chosen {
            Some(names) => names.iter().any(|n| n == r.name),
            None => !r.on_request || requested.contains(&r.name),
        })
        .collect()
}

/// The spec of one aimed run: the cell's spec with the recipe's faults and settings (the
/// cell's own acks, min.insync, unclean election and flush stay).
pub fn apply(recipe: &RiskRecipe, cell_spec: &TestSpec) -> TestSpec {
    let mut spec = cell_spec.clone();
    spec.nemesis = recipe.nemesis.to_vec();
    spec.nemesis_interval = recipe.interval;
    for (k, v) in FAST_FAILOVER {
        spec.broker.insert(k.to_string(), v.to_string());
    }
    match recipe.client {
        RecipeClient::AsIs => {}
        RecipeClient::Retries => {
            spec.client.retries = spec.client.retries.max(10);
            spec.client.request_timeout_ms = 2000;
        }
        RecipeClient::GroupMembers => {
            spec.client.consumer_mode = crate::spec::ConsumerMode::Subscribe;
            spec.client.client = crate::spec::ClientKind::Native;
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(acks: &str, mi: u32, unclean: bool, idem: bool) -> CellConfig {
        CellConfig {
            acks: acks.into(),
            min_isr: mi,
            unclean,
            idempotence: idem,
            replication_factor: 3,
            flush: results::matrix::FLUSH_DEFAULT.into(),
            release: results::matrix::RELEASE_BEFORE_SETTING.into(),
            rules: None,
        }
    }

    fn names(c: &CellConfig, requested: &[&str]) -> Vec<&'static str> {
        for_cell(c, None, requested)
            .iter()
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn each_documented_risk_aims_at_the_cells_it_bears_on() {
        assert_eq!(names(&cell("1", 2, false, false), &[]), ["leader-failover"]);
        assert_eq!(names(&cell("0", 1, false, false), &[]), ["leader-failover"]);
        assert_eq!(
            names(&cell("all", 1, false, false), &[]),
            ["isr-shrink-crash", "zombie-commit"]
        );
        assert_eq!(
            names(&cell("all", 2, false, false), &[]),
            ["last-replica-standing", "zombie-commit"]
        );
        // min.insync above the replication factor: under 3.6 nothing is writable, so only the
        // group's commits are aimed at; from 3.7 the replica count is the minimum.
        assert_eq!(names(&cell("all", 4, false, false), &[]), ["zombie-commit"]);
        let mut newer = cell("all", 4, false, false);
        newer.release = "3.7".into();
        assert_eq!(
            names(&newer, &[]),
            ["last-replica-standing", "zombie-commit"]
        );
        assert_eq!(
            names(&cell("all", 2, true, false), &["retry-duplicates"]),
            [
                "last-replica-standing",
                "unclean-election",
                "retry-duplicates",
                "zombie-commit"
            ]
        );
        assert!(names(&cell("all", 2, false, true), &["retry-duplicates"])
            .iter()
            .all(|n| *n != "retry-duplicates"));
        let only = vec!["leader-failover".to_string()];
        assert!(for_cell(&cell("all", 1, false, false), Some(&only), &[]).is_empty());
        assert!(by_name("isr-shrink-crash").is_some() && by_name("nope").is_none());
    }

    #[test]
    fn an_aimed_spec_keeps_the_cells_settings_and_adds_the_recipes() {
        let mut base = TestSpec::default();
        base.broker.insert("min.insync.replicas".into(), "1".into());
        let r = by_name("isr-shrink-crash").expect("recipe");
        let s = apply(r, &base);
        assert_eq!(s.nemesis, vec![FaultKind::IsrShrinkCrash]);
        assert_eq!(s.broker["min.insync.replicas"], "1");
        assert_eq!(s.broker["replica.lag.time.max.ms"], "2000");
        // The fault's first step lasts one interval, longer than the lag time: the ISR shrinks.
        assert!(r.interval * 1000.0 > 2000.0);
        // The restart comes one interval after the crash, once the session (3 s) fenced it.
        assert!(r.interval * 1000.0 > 3000.0);
        let d = apply(by_name("retry-duplicates").expect("recipe"), &base);
        assert!(d.client.retries >= 10 && d.client.request_timeout_ms == 2000);
        let z = apply(by_name("zombie-commit").expect("recipe"), &base);
        assert_eq!(z.nemesis, vec![FaultKind::ZombieConsumer]);
        assert!(crate::workload::can_stall(&z));
    }
}
