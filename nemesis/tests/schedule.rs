//! The seeded schedule: same seed same schedule, different seed different schedule, final heal
//! in the fixed order, and only the requested kinds.

use std::time::Duration;

use nemesis::schedule::final_heal;
use nemesis::{Action, FaultKind, Schedule};

fn nodes() -> Vec<String> {
    (1..=5).map(|i| format!("n{i}")).collect()
}

fn gen(seed: u64, kinds: &[FaultKind]) -> Schedule {
    Schedule::generate(
        seed,
        &nodes(),
        kinds,
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .expect("schedule")
}

#[test]
fn same_seed_same_schedule_different_seed_different() {
    let kinds = [
        FaultKind::Partition,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Clock,
        FaultKind::Disk,
    ];
    let a = gen(42, &kinds);
    let b = gen(42, &kinds);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert!(a.actions.len() > 5, "{} actions", a.actions.len());
    assert_ne!(a, gen(43, &kinds));
    assert!(a.actions.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(a.actions.iter().all(|s| s.at_ms <= 120_000));
    assert_eq!(a.final_heal, final_heal(&nodes()));
    assert!(matches!(a.final_heal[0], Action::StopPartition));
    assert!(matches!(a.final_heal.last(), Some(Action::Start { .. })));
}

#[test]
fn only_requested_kinds_appear() {
    let s = gen(1, &[FaultKind::Pause]);
    assert!(s
        .actions
        .iter()
        .all(|a| matches!(a.action, Action::Pause { .. } | Action::Resume { .. })));
    assert!(FaultKind::parse("bogus").is_err());
}
