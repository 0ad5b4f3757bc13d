//! The local backend: services on 127.0.0.x without namespaces; kill and pause work, clock via
//! libfaketime works, and partition/disk faults are refused with a reason.

use std::path::PathBuf;
use std::time::Duration;

use harness::node::LocalCluster;
use nemesis::net::Topology;
use nemesis::{Action, FaultKind, Nemesis, NemesisError, ServiceSpec};

fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn local_nodes_kill_pause_and_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = LocalCluster::create(3, dir.path()).expect("cluster");
    let nodes = cluster.nodes();
    assert_eq!(nodes[0].address().to_string(), "127.0.0.11");
    // The service binds its node's loopback alias (no root needed) and reports its clock.
    let port_file = dir.path().join("n1.port");
    let script = "import socket, sys, time\ns = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()\nopen(sys.argv[2], 'w').write(str(s.getsockname()[1]))\nwhile True:\n    c, _ = s.accept(); c.sendall(b'%f' % time.time()); c.close()\n";
    nodes[0].set_service(ServiceSpec {
        program: python(),
        args: vec![
            "-c".into(),
            script.into(),
            "127.0.0.11".into(),
            port_file.display().to_string(),
        ],
        env: vec![],
        log_file: dir.path().join("n1.log"),
        fake_clock: true,
    });
    nodes[0].start_service().expect("start");
    let mut port = None;
    for _ in 0..300 {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            if let Ok(p) = p.trim().parse::<u16>() {
                port = Some(p);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let port = port.expect("service listening");
    let ask = || -> Option<f64> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 11], port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut s, &mut buf).ok()?;
        buf.trim().parse().ok()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64()
    };
    assert!((ask().expect("answers") - now()).abs() < 5.0);

    let nemesis = Nemesis::new(nodes.clone(), 5);
    nemesis
        .apply(&Action::BumpClock {
            nodes: vec!["n1".into()],
            offset_ms: -600_000,
        })
        .expect("bump");
    let mut skew = 0.0;
    for _ in 0..100 {
        skew = ask().expect("answers") - now();
        if (skew + 600.0).abs() < 5.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!((skew + 600.0).abs() < 5.0, "clock moved back 600 s: {skew}");

    nemesis
        .apply(&Action::Pause {
            nodes: vec!["n1".into()],
        })
        .expect("pause");
    assert!(ask().is_none(), "a paused service does not answer");
    nemesis
        .apply(&Action::Resume {
            nodes: vec!["n1".into()],
        })
        .expect("resume");
    assert!(ask().is_some(), "answers after resume");

    let pid = nodes[0].service_pid().expect("pid");
    nemesis
        .apply(&Action::Kill {
            nodes: vec!["n1".into()],
            lose_unfsynced: false,
        })
        .expect("kill");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(ask().is_none());

    for kind in [FaultKind::Partition, FaultKind::Disk, FaultKind::PacketLoss] {
        match nemesis.check_supported(&[kind]) {
            Err(NemesisError::Unsupported { reason, .. }) => {
                assert!(reason.contains("local backend"), "{reason}")
            }
            other => panic!("{kind} should be refused: {other:?}"),
        }
    }
    let err = nemesis
        .apply(&Action::StartPartition {
            topology: Topology::IsolateOne,
            seed: None,
        })
        .expect_err("refused");
    assert!(err.to_string().contains("not supported"), "{err}");
    nemesis
        .check_supported(&[FaultKind::Kill, FaultKind::Pause, FaultKind::Clock])
        .expect("supported");
    drop(nemesis);
    cluster.teardown();
}
