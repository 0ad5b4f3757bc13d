//! The Kafka release whose replication rules this broker follows (`kafka.release`), and the
//! rules that release switches, each one named decision ([`ReleaseRules`]) with the release and
//! the KIP/JIRA that introduced it. The broker's code consults a rule, never the release number,
//! so a reader finds every release-dependent behaviour here (`docs/REPLICATION.md` describes
//! them; `../shared/reference/kafka-versions.md` lists the sources).

use std::fmt;
use std::str::FromStr;

/// The broker property naming the release.
pub const RELEASE_KEY: &str = "kafka.release";

/// A Kafka release (major.minor) this broker can behave as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaRelease {
    major: u8,
    minor: u8,
}

impl KafkaRelease {
    /// Kafka 2.6: the last release before truncation on fetch.
    pub const V2_6: KafkaRelease = KafkaRelease::new(2, 6);
    /// Kafka 2.7: followers truncate from the Fetch response's diverging epoch.
    pub const V2_7: KafkaRelease = KafkaRelease::new(2, 7);
    /// Kafka 3.5: the last release before KIP-890 part 1.
    pub const V3_5: KafkaRelease = KafkaRelease::new(3, 5);
    /// Kafka 3.6: transactional produce verification (KIP-890 part 1).
    pub const V3_6: KafkaRelease = KafkaRelease::new(3, 6);
    /// Kafka 3.7: effective min ISR and the HW held below it (KAFKA-15583).
    pub const V3_7: KafkaRelease = KafkaRelease::new(3, 7);
    /// Kafka 3.9: the last 3.x release.
    pub const V3_9: KafkaRelease = KafkaRelease::new(3, 9);
    /// Kafka 4.0: Eligible Leader Replicas available (KIP-966), re-registration fencing.
    pub const V4_0: KafkaRelease = KafkaRelease::new(4, 0);
    /// Kafka 4.1: Eligible Leader Replicas on by default.
    pub const V4_1: KafkaRelease = KafkaRelease::new(4, 1);

    const fn new(major: u8, minor: u8) -> KafkaRelease {
        KafkaRelease { major, minor }
    }

    /// The rules of this release.
    pub fn rules(self) -> ReleaseRules {
        ReleaseRules::of(self)
    }
}

/// Every release `kafka.release` accepts, oldest first.
pub const RELEASES: &[KafkaRelease] = &[
    KafkaRelease::V2_6,
    KafkaRelease::V2_7,
    KafkaRelease::V3_5,
    KafkaRelease::V3_6,
    KafkaRelease::V3_7,
    KafkaRelease::V3_9,
    KafkaRelease::V4_0,
    KafkaRelease::V4_1,
];

/// The release followed when `kafka.release` is not set: the newest implemented.
pub const DEFAULT_RELEASE: KafkaRelease = KafkaRelease::V4_1;

impl serde::Serialize for KafkaRelease {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Default for KafkaRelease {
    fn default() -> Self {
        DEFAULT_RELEASE
    }
}

impl fmt::Display for KafkaRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A `kafka.release` value that is not one of [`RELEASES`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown Kafka release `{value}`; allowed: {}", allowed_list())]
pub struct UnknownRelease {
    /// The value given.
    pub value: String,
}

/// The allowed values, comma-separated (for error messages and help text).
pub fn allowed_list() -> String {
    RELEASES
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for KafkaRelease {
    type Err = UnknownRelease;

    /// `major.minor`, optionally with a patch (`3.6.2` is 3.6's rules).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownRelease {
            value: s.to_string(),
        };
        let mut parts = s.trim().split('.');
        let major: u8 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor: u8 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        match parts.next() {
            None => {}
            Some(p) if p.parse::<u16>().is_ok() && parts.next().is_none() => {}
            Some(_) => return Err(bad()),
        }
        let r = KafkaRelease::new(major, minor);
        RELEASES.contains(&r).then_some(r).ok_or_else(bad)
    }
}

/// The replication rules a release follows. Each field is one decision the broker's code
/// consults at exactly one place (as the bug modes of `replication::bugs` are); the doc comment
/// names the release that introduced it and its KIP/JIRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseRules {
    /// The release these rules are.
    pub release: KafkaRelease,
    /// Kafka 2.7+ (KIP-595's Fetch v12 `DivergingEpoch`, KAFKA-10554): a follower with leader
    /// epochs fetches at once and truncates from the Fetch response's diverging epoch; before
    /// 2.7 it asks OffsetsForLeaderEpoch first (KIP-101/KIP-279). Both truncate to the same
    /// point; only the round trips differ.
    pub truncate_on_fetch: bool,
    /// Kafka 3.6+ (KIP-890 part 1, KAFKA-14402): the default of
    /// `transaction.partition.verification.enable`: the partition leader asks the transaction
    /// coordinator whether a transactional produce belongs to an ongoing transaction that
    /// includes the partition, and refuses it otherwise. Older releases append it.
    pub txn_verification_default: bool,
    /// Kafka 3.7+ (KAFKA-15583, PR #14594): effective min ISR = min(`min.insync.replicas`,
    /// replica count). Before, min.insync greater than the replica count made acks=all fail
    /// with NOT_ENOUGH_REPLICAS forever.
    pub effective_min_isr: bool,
    /// Kafka 3.7+ (KAFKA-15583, KIP-966 part 1): the leader does not advance the high
    /// watermark while the ISR is below the (effective) min ISR, so acks=1 records written then
    /// stay invisible to consumers and acks=all waiters time out until the ISR recovers.
    pub hw_requires_min_isr: bool,
    /// Kafka 4.0+ (KAFKA-18106, PR #18045): the default of `broker.reregistration.policy`: a
    /// broker registering a new incarnation while its old session is alive fences the old one
    /// first (`fence`); before 4.0 the controller answers DUPLICATE_BROKER_REGISTRATION until
    /// the old session expires (`refuse`).
    pub fence_reregistration: bool,
    /// Kafka 4.0+ (KIP-966): Eligible Leader Replicas are available
    /// (`eligible.leader.replicas.enable` may be set); before 4.0 setting it is refused. ELR
    /// brings the last-known-leader election with it (`LastKnownElr`, `metadata::image`): no
    /// rule of its own.
    pub elr_available: bool,
    /// Kafka 4.1+ (KIP-966, `eligible.leader.replicas.version` enabled for new clusters): the
    /// default of `eligible.leader.replicas.enable`.
    pub elr_default: bool,
}

impl ReleaseRules {
    /// The rules of `release`.
    pub fn of(release: KafkaRelease) -> ReleaseRules {
        ReleaseRules {
            release,
            truncate_on_fetch: release >= KafkaRelease::V2_7,
            txn_verification_default: release >= KafkaRelease::V3_6,
            effective_min_isr: release >= KafkaRelease::V3_7,
            hw_requires_min_isr: release >= KafkaRelease::V3_7,
            fence_reregistration: release >= KafkaRelease::V4_0,
            elr_available: release >= KafkaRelease::V4_0,
            elr_default: release >= KafkaRelease::V4_1,
        }
    }
}

impl Default for ReleaseRules {
    fn default() -> Self {
        ReleaseRules::of(DEFAULT_RELEASE)
    }
}

/// What `broker --list-releases` prints: the default release and every release with its
/// rules, so a harness that does not link this crate learns both from the binary.
pub fn releases_json() -> serde_json::Value {
    serde_json::json!({
        "default": DEFAULT_RELEASE,
        "releases": RELEASES.iter().map(|r| r.rules()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_with_or_without_a_patch_and_unknown_ones_name_the_allowed() {
        assert_eq!("3.6".parse::<KafkaRelease>().ok(), Some(KafkaRelease::V3_6));
        assert_eq!(
            "4.1.0".parse::<KafkaRelease>().ok(),
            Some(KafkaRelease::V4_1)
        );
        for bad in ["3.8", "4", "4.1.x", "latest", "", "3.6.1.2"] {
            let err = bad.parse::<KafkaRelease>().expect_err(bad).to_string();
            assert!(err.contains("2.6") && err.contains("4.1"), "{bad}: {err}");
        }
        for r in RELEASES {
            assert_eq!(r.to_string().parse::<KafkaRelease>().ok(), Some(*r));
        }
        assert_eq!(KafkaRelease::default(), *RELEASES.last().expect("some"));
    }

    #[test]
    fn rules_switch_at_their_releases() {
        let r = |s: &str| s.parse::<KafkaRelease>().expect("known").rules();
        assert!(!r("2.6").truncate_on_fetch && r("2.7").truncate_on_fetch);
        assert!(!r("3.5").txn_verification_default && r("3.6").txn_verification_default);
        assert!(!r("3.6").hw_requires_min_isr && r("3.7").hw_requires_min_isr);
        assert!(!r("3.6").effective_min_isr && r("3.7").effective_min_isr);
        assert!(!r("3.9").elr_available && r("4.0").elr_available);
        assert!(!r("3.9").fence_reregistration && r("4.0").fence_reregistration);
        assert!(!r("4.0").elr_default && r("4.1").elr_default);
    }

    #[test]
    fn the_release_list_names_the_default_and_each_release_with_its_rules() {
        let v = releases_json();
        assert_eq!(v["default"], "4.1");
        let list = v["releases"].as_array().expect("an array");
        assert_eq!(list.len(), RELEASES.len());
        assert_eq!(list[3]["release"], "3.6");
        assert_eq!(list[3]["effective_min_isr"], false);
        assert_eq!(list[4]["release"], "3.7");
        assert_eq!(list[4]["effective_min_isr"], true);
        assert_eq!(list[7]["elr_default"], true);
    }
}
