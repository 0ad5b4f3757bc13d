//! Partition topologies as data: each grudge has the shape its name promises, for several
//! cluster sizes and seeds.

use nemesis::net::{grudge_for_seed, Topology};

fn nodes(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

fn sees(g: &nemesis::net::Grudge, a: &str, all: &[String]) -> usize {
    all.iter().filter(|b| !g.cut(a, b)).count()
}

#[test]
fn topologies_have_their_shapes() {
    for n in [3usize, 4, 5, 7, 9] {
        let all = nodes(n);
        let majority = n / 2 + 1;
        for seed in 0..20 {
            let g = grudge_for_seed(&Topology::IsolateOne, &all, seed).expect("isolate");
            let isolated: Vec<&String> = all.iter().filter(|a| sees(&g, a, &all) == 1).collect();
            assert_eq!(isolated.len(), 1);
            assert!(all
                .iter()
                .filter(|a| *a != isolated[0])
                .all(|a| sees(&g, a, &all) == n - 1));

            let g = grudge_for_seed(&Topology::MajorityMinority, &all, seed).expect("halves");
            let cut_pairs: usize = g.drops.values().map(|s| s.len()).sum::<usize>() / 2;
            assert_eq!(
                cut_pairs,
                (n / 2) * (n - n / 2),
                "every cross pair cut, nothing else"
            );
            assert!(all
                .iter()
                .all(|a| sees(&g, a, &all) == n - n / 2 || sees(&g, a, &all) == n / 2));

            let g = grudge_for_seed(&Topology::Bridge, &all, seed).expect("bridge");
            let bridges = all.iter().filter(|a| sees(&g, a, &all) == n).count();
            assert_eq!(bridges, 1, "exactly one node sees everyone");

            if n >= 5 {
                let g = grudge_for_seed(&Topology::MajoritiesRing, &all, seed).expect("ring");
                let mut views = std::collections::BTreeSet::new();
                for a in &all {
                    assert!(sees(&g, a, &all) >= majority, "{a} sees a majority");
                    assert!(sees(&g, a, &all) < n, "{a} does not see everyone");
                    let view: Vec<&String> = all.iter().filter(|b| !g.cut(a, b)).collect();
                    views.insert(view);
                }
                assert_eq!(views.len(), n, "no two nodes see the same majority");
            }
        }
    }
    let g =
        grudge_for_seed(&Topology::IsolateNode { node: "n2".into() }, &nodes(5), 0).expect("node");
    assert!(nodes(5)
        .iter()
        .filter(|b| *b != "n2")
        .all(|b| g.cut("n2", b)));
    assert!(grudge_for_seed(&Topology::IsolateNode { node: "n9".into() }, &nodes(5), 0).is_err());
    let g = grudge_for_seed(
        &Topology::CutClients {
            node: Some("n4".into()),
        },
        &nodes(5),
        0,
    )
    .expect("cc");
    assert_eq!(g.clients_cut.iter().collect::<Vec<_>>(), vec!["n4"]);
    assert_eq!(g.describe()["topology"], "cut-clients");
}

#[test]
fn same_seed_same_grudge() {
    let a = grudge_for_seed(&Topology::MajoritiesRing, &nodes(5), 11).expect("a");
    let b = grudge_for_seed(&Topology::MajoritiesRing, &nodes(5), 11).expect("b");
    assert_eq!(a, b);
}
