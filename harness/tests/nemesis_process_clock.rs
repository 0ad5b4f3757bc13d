//! Process and clock faults on netns nodes, observed from outside: kill -9 (gone, then back
//! with a new pid), pause (a counter stops advancing, then resumes), clock bump and strobe (a
//! service's reported wall clock moves), and nothing of the run remains afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::node::netns::{list_links, list_netns};
use harness::node::{NetnsCluster, NetnsOptions};
use nemesis::{Action, Nemesis, Node, ServiceSpec};

fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A service writing `i time.time()` into FILE every 20 ms. It waits on the monotonic clock
/// (not faked) because python's `time.sleep` fails with EINVAL under libfaketime after a bump.
const TICKER: &str = "import sys, time, os\ni = 0\nwhile True:\n    open(sys.argv[1] + '.t', 'w').write('%d %f' % (i, time.time()))\n    os.replace(sys.argv[1] + '.t', sys.argv[1])\n    i += 1\n    d = time.monotonic() + 0.02\n    while time.monotonic() < d: pass\n";

fn read(file: &Path) -> (u64, f64) {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(file) {
            let mut p = s.split_whitespace();
            if let (Some(i), Some(t)) = (p.next(), p.next()) {
                if let (Ok(i), Ok(t)) = (i.parse(), t.parse()) {
                    return (i, t);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no ticker output in {}", file.display());
}

/// Waits up to 5 s for the service's reported clock minus ours to be within 5 s of `want`.
fn wait_skew(file: &Path, want: f64, log: &Path) {
    let mut last = f64::NAN;
    for _ in 0..250 {
        let (_, t) = read(file);
        last = t - now();
        if (last - want).abs() < 5.0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("wanted a skew of {want} s, last saw {last}; service log: {log}");
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn setup(node: &dyn Node, dir: &Path, fake_clock: bool) -> PathBuf {
    let out = dir.join(format!("{}.tick", node.name()));
    node.set_service(ServiceSpec {
        program: python(),
        args: vec!["-c".into(), TICKER.into(), out.display().to_string()],
        env: vec![],
        log_file: dir.join(format!("{}.log", node.name())),
        fake_clock,
    });
    node.start_service().expect("start");
    read(&out);
    out
}

fn assert_clean(id: &str) {
    let prefix = format!("jh{id}");
    assert!(!list_netns()
        .iter()
        .any(|n| n.starts_with(&format!("{prefix}-"))));
    assert!(!list_links()
        .iter()
        .any(|l| l == &format!("{prefix}br") || l.starts_with(&format!("{prefix}v"))));
}

#[test]
fn kill_pause_and_clock_faults_are_observed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        NetnsCluster::create(2, dir.path(), NetnsOptions::default()).expect("cluster");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let f1 = setup(n1.as_ref(), dir.path(), false);
    let f2 = setup(n2.as_ref(), dir.path(), true);
    let nemesis = Nemesis::new(nodes.clone(), 7);

    // kill -9: the process is gone (pid no longer exists), then back with a new pid.
    let pid = n1.service_pid().expect("running");
    let op = nemesis
        .apply(&Action::Kill {
            nodes: vec!["n1".into()],
            lose_unfsynced: false,
        })
        .expect("kill");
    assert_eq!(op.f, "kill");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "killed process gone"
    );
    assert!(n1.service_pid().is_none());
    nemesis
        .apply(&Action::Start {
            nodes: vec!["n1".into()],
        })
        .expect("restart");
    let pid2 = n1.service_pid().expect("restarted");
    assert_ne!(pid, pid2);
    std::fs::remove_file(&f1).ok();
    read(&f1);

    // Graceful stop and restart.
    nemesis
        .apply(&Action::Stop {
            nodes: vec!["n1".into()],
        })
        .expect("stop");
    assert!(!Path::new(&format!("/proc/{pid2}")).exists());
    nemesis
        .apply(&Action::Start {
            nodes: vec!["n1".into()],
        })
        .expect("restart");

    // Pause: the counter stops advancing; resume: it advances again.
    nemesis
        .apply(&Action::Pause {
            nodes: vec!["n1".into()],
        })
        .expect("pause");
    std::thread::sleep(Duration::from_millis(100));
    let (a, _) = read(&f1);
    std::thread::sleep(Duration::from_millis(400));
    let (b, _) = read(&f1);
    assert_eq!(a, b, "no progress while paused");
    nemesis
        .apply(&Action::Resume {
            nodes: vec!["n1".into()],
        })
        .expect("resume");
    std::thread::sleep(Duration::from_millis(300));
    assert!(read(&f1).0 > b, "progress after resume");

    // Clock bump: the service's wall clock moves by +300 s; reset brings it back.
    let (_, t) = read(&f2);
    assert!((t - now()).abs() < 5.0, "unskewed at start: {}", t - now());
    nemesis
        .apply(&Action::BumpClock {
            nodes: vec!["n2".into()],
            offset_ms: 300_000,
        })
        .expect("bump");
    let log2 = dir.path().join("n2.log");
    wait_skew(&f2, 300.0, &log2);
    nemesis
        .apply(&Action::ResetClock {
            nodes: vec!["n2".into()],
        })
        .expect("reset");
    wait_skew(&f2, 0.0, &log2);

    // Strobe: the clock is seen both skewed by -120 s and unskewed during the strobe.
    nemesis
        .apply(&Action::StrobeClock {
            nodes: vec!["n2".into()],
            delta_ms: -120_000,
            period_ms: 150,
            duration_ms: 3_000,
        })
        .expect("strobe");
    let (mut saw_skew, mut saw_real) = (false, false);
    for _ in 0..100 {
        let s = read(&f2).1 - now();
        saw_skew |= (s + 120.0).abs() < 5.0;
        saw_real |= s.abs() < 5.0;
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        saw_skew && saw_real,
        "strobe flips: skew {saw_skew} real {saw_real}"
    );
    let ops = nemesis.heal_all().expect("heal");
    assert!(ops.iter().any(|o| o.f == "reset-clock"));
    wait_skew(&f2, 0.0, &log2);
    drop(nemesis);
    cluster.teardown().expect("teardown");
    assert_clean(&id);
}
