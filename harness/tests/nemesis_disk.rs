//! Disk faults through the nemesis fault FS mounted as a netns node's data dir: a write blocked
//! by a stall until resume, EIO seen by a writer and by fsync, unfsynced bytes gone after a
//! kill with lose-unfsynced while fsynced bytes stay, file faults, and no mount left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use harness::node::netns::{list_fault_mounts, list_links, list_netns};
use harness::node::{NetnsCluster, NetnsOptions};
use nemesis::disk::{corrupt_file, DiskFault, FileFault};
use nemesis::{Action, Nemesis, ServiceSpec};

fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Writes "durable" + fsync to log, then "volatile" without fsync, creates never-fsynced
/// new.dat, then touches a marker and sleeps.
const WRITER: &str = "import os, sys, time\nd, marker = sys.argv[1], sys.argv[2]\nf = open(os.path.join(d, 'log'), 'ab')\nf.write(b'durable-'); f.flush(); os.fsync(f.fileno())\nf.write(b'volatile'); f.flush()\ng = open(os.path.join(d, 'new.dat'), 'wb'); g.write(b'never synced'); g.flush()\nopen(marker, 'w').close()\ntime.sleep(600)\n";

fn wait_for(p: &Path) {
    for _ in 0..500 {
        if p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", p.display());
}

#[test]
fn disk_faults_are_observed_and_the_mount_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        NetnsCluster::create(1, dir.path(), NetnsOptions { disk_faults: true }).expect("cluster");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    let n1 = nodes[0].clone();
    let data = n1.data_dir();
    assert!(
        list_fault_mounts().contains(&data),
        "data dir is a fault FS mount"
    );
    let nemesis = Nemesis::new(nodes.clone(), 3);

    // Stall: a write blocks until the fault stops.
    nemesis
        .apply(&Action::StartDisk {
            nodes: vec!["n1".into()],
            fault: DiskFault::Stall,
        })
        .expect("stall");
    let (tx, rx) = mpsc::channel();
    let target = data.join("stalled");
    let writer = std::thread::spawn(move || {
        let r = std::fs::write(&target, b"after the stall");
        let _ = tx.send(r.is_ok());
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "write blocked while stalled"
    );
    nemesis
        .apply(&Action::StopDisk {
            nodes: vec!["n1".into()],
        })
        .expect("resume");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "write completes after resume"
    );
    writer.join().expect("writer");
    assert_eq!(
        std::fs::read(data.join("stalled")).expect("read"),
        b"after the stall"
    );

    // EIO on writes, then on fsync.
    nemesis
        .apply(&Action::StartDisk {
            nodes: vec!["n1".into()],
            fault: DiskFault::EioWrites,
        })
        .expect("eio");
    let err = std::fs::write(data.join("eio"), b"x").expect_err("write fails");
    assert_eq!(err.raw_os_error(), Some(libc_eio()), "{err}");
    nemesis
        .apply(&Action::StopDisk {
            nodes: vec!["n1".into()],
        })
        .expect("clear");
    nemesis
        .apply(&Action::StartDisk {
            nodes: vec!["n1".into()],
            fault: DiskFault::EioFsync,
        })
        .expect("eio fsync");
    let mut f = std::fs::File::create(data.join("fsync")).expect("create");
    f.write_all(b"data").expect("write works");
    let err = f.sync_all().expect_err("fsync fails");
    assert_eq!(err.raw_os_error(), Some(libc_eio()));
    drop(f);
    nemesis
        .apply(&Action::StopDisk {
            nodes: vec!["n1".into()],
        })
        .expect("clear");

    // Lose unfsynced writes at kill time.
    let marker = dir.path().join("written");
    n1.set_service(ServiceSpec {
        program: python(),
        args: vec![
            "-c".into(),
            WRITER.into(),
            data.display().to_string(),
            marker.display().to_string(),
        ],
        env: vec![],
        log_file: dir.path().join("n1.log"),
        fake_clock: false,
    });
    n1.start_service().expect("start");
    wait_for(&marker);
    assert_eq!(
        std::fs::read(data.join("log")).expect("log"),
        b"durable-volatile"
    );
    let op = nemesis
        .apply(&Action::Kill {
            nodes: vec!["n1".into()],
            lose_unfsynced: true,
        })
        .expect("kill + lose");
    assert!(
        op.value["lost-unfsynced"]["n1"]["bytes"]
            .as_u64()
            .unwrap_or(0)
            >= 8,
        "{}",
        op.value
    );
    assert_eq!(
        std::fs::read(data.join("log")).expect("log"),
        b"durable-",
        "fsynced bytes kept"
    );
    assert_eq!(
        std::fs::read(data.join("new.dat")).expect("new"),
        b"",
        "unsynced file emptied"
    );

    // File faults: truncate the tail, flip bits.
    std::fs::write(data.join("segment"), vec![0u8; 1000]).expect("segment");
    corrupt_file(
        &data.join("segment"),
        &FileFault::TruncateTail {
            bytes: 100,
            seed: 1,
        },
    )
    .expect("truncate");
    assert_eq!(
        std::fs::metadata(data.join("segment")).expect("md").len(),
        900
    );
    corrupt_file(
        &data.join("segment"),
        &FileFault::BitFlip { flips: 3, seed: 9 },
    )
    .expect("flip");
    let flipped = std::fs::read(data.join("segment")).expect("read");
    assert!(flipped.iter().any(|b| *b != 0), "bits flipped");

    drop(nemesis);
    cluster.teardown().expect("teardown");
    assert!(!list_fault_mounts().contains(&data), "mount removed");
    let prefix = format!("jh{id}");
    assert!(!list_netns()
        .iter()
        .any(|n| n.starts_with(&format!("{prefix}-"))));
    assert!(!list_links().iter().any(|l| l.starts_with(&prefix)));
}

fn libc_eio() -> i32 {
    5
}
