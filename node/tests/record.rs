//! The flight recorder on a real fleet: three `reelfleet node` processes on
//! a 3-member etcd cluster record every machine's inputs through a SIGKILL
//! failover (and the killed node's restart) and a SIGSTOP longer than the
//! lease; `reelfleet replay` then runs every recorded machine of every
//! node through this build's machines and finds each identical. Replayed
//! with a changed renewal period, it names the first input where the
//! membership machines decide otherwise. Needs etcd (skips without it,
//! except on CI).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::live_fleet::{spawn_node, start_fleet_with, NODES, SERIAL};

fn replay(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .arg("replay")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run reelfleet replay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn three_recorded_nodes_replay_identically_through_a_kill_and_a_freeze() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rec = tempfile::tempdir().expect("tempdir");
    let rec_dir = rec.path().to_path_buf();
    let with_record = |_: &str, cfg: String| {
        format!(
            "{cfg}[record]\ndir = \"{}\"\nsegment_bytes = 262144\ntotal_bytes_max = 67108864\n",
            rec_dir.display()
        )
    };
    let Some(mut fleet) = start_fleet_with(&with_record) else {
        return;
    };
    // A SIGKILL of the busiest node: its channels fail over, then it
    // comes back (a second run in its recording).
    fleet.wait_steady(6);
    let (victim, chans, before) = fleet.busiest();
    let t = Instant::now();
    fleet.nodes[victim].signal(libc::SIGKILL);
    fleet.wait_takeover(victim, &chans, &before, t);
    let name = NODES[victim];
    let cfg = std::fs::read_to_string(fleet.root().join(format!("{name}.toml"))).expect("config");
    let port = fleet.nodes[victim].metrics_port;
    fleet.nodes[victim] = spawn_node(fleet.root(), name, &cfg, port);
    // A moment to start the simulator from, later (the nodes' clocks are
    // the wall clock).
    let mid_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    // A SIGSTOP longer than the lease of the (then) busiest node: it is
    // fenced when it thaws.
    fleet.wait_steady(12);
    let (frozen, chans, before) = fleet.busiest();
    let t = Instant::now();
    fleet.nodes[frozen].signal(libc::SIGSTOP);
    fleet.wait_takeover(frozen, &chans, &before, t);
    std::thread::sleep(Duration::from_secs(1));
    fleet.nodes[frozen].signal(libc::SIGCONT);
    fleet.wait_steady(18);
    std::thread::sleep(Duration::from_secs(3));
    fleet.kill_all();
    fleet.audit();

    let (code, out) = replay(&rec_dir, &["--quiet"]);
    eprintln!("{out}");
    assert_eq!(code, 0, "replay found divergences:\n{out}");
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.contains("of 3 nodes"), "{summary}");
    assert!(summary.contains(" 0 diverged, 0 skipped"), "{summary}");
    let (_, full) = replay(&rec_dir, &[]);
    for n in NODES {
        assert!(
            full.contains(&format!("{n} run 1 membership:{n} ")),
            "{n}:\n{full}"
        );
    }
    // The killed node's restart is its second run, replayed too; channels
    // were made on more than one node (the failover).
    assert!(
        full.contains(&format!("{name} run 2 membership:{name} ")),
        "{full}"
    );
    let channel_lines = full.lines().filter(|l| l.contains(" channel:")).count();
    assert!(
        channel_lines > 9,
        "{channel_lines} channel machines:\n{full}"
    );

    // What if the nodes had renewed every 1.5 s: the membership machines
    // decide otherwise at the first tick where that shows, and replay
    // says which input of which machine, and exits non-zero.
    let (code, out) = replay(&rec_dir, &["--set", "membership.renew_ms=1500", "--quiet"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("membership:") && out.contains("DIVERGES at input"),
        "{out}"
    );
    assert!(out.contains("input:    Tick"), "{out}");

    what_if_from(&rec_dir, mid_ms);
}

/// A node whose recording disk fills (its later segments are /dev/full,
/// so writes fail with ENOSPC) logs once, sets `reelfleet_record_stopped`,
/// and goes on publishing.
#[test]
fn a_node_whose_recording_disk_fills_keeps_publishing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rec = tempfile::tempdir().expect("tempdir");
    let rec_dir = rec.path().to_path_buf();
    let with_record = |n: &str, cfg: String| {
        if n != "n1" {
            return cfg;
        }
        format!(
            "{cfg}[record]\ndir = \"{}\"\nsegment_bytes = 16384\ntotal_bytes_max = 67108864\n",
            rec_dir.display()
        )
    };
    let Some(mut fleet) = start_fleet_with(&with_record) else {
        return;
    };
    let n1_dir = rec_dir.join("n1");
    let first = n1_dir.join("run-000001-seg-000001.rfr");
    let t = Instant::now();
    while !first.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "n1 never began recording"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Every later segment is /dev/full (a segment the writer began before
    // these links exist stays a file; the next one it opens is a link).
    for seg in 2..=500 {
        let _ = std::os::unix::fs::symlink(
            "/dev/full",
            n1_dir.join(format!("run-000001-seg-{seg:06}.rfr")),
        );
    }
    let t = Instant::now();
    while fleet.nodes[0].metric("reelfleet_record_stopped") != Some(1) {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the recording never filled its first segment and failed:\n{}",
            fleet.nodes[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = fleet.nodes[0].log_text();
    assert_eq!(log.matches("recording stopped").count(), 1, "{log}");
    // n1 goes on: it still owns channels and they still publish.
    let n1 = fleet.node_id("n1");
    let mine: Vec<_> = fleet
        .owners()
        .into_iter()
        .filter(|(_, o)| o.node == Some(n1))
        .map(|(c, _)| c)
        .collect();
    assert!(!mine.is_empty(), "n1 owns nothing");
    let before = fleet.published_count();
    fleet.wait_progress(&mine, &before);
    assert!(fleet.nodes[0]
        .child
        .as_mut()
        .expect("n1")
        .try_wait()
        .expect("wait")
        .is_none());
    fleet.kill_all();
    fleet.audit();
}

/// The simulator from the recorded state at `mid_ms`: the recorded
/// fleet, its store as the nodes saw it then, and a what-if (a longer
/// lease, and n2 crashing 30 s in). It publishes from there without
/// publishing any recorded video again (invariant 1 against the recorded
/// uploads) and keeps every invariant.
fn what_if_from(rec_dir: &Path, mid_ms: u64) {
    let scenario = rec_dir.join("what-if.toml");
    std::fs::write(
        &scenario,
        "name = \"what-if\"\nduration_s = 120\nliveness_s = 600\nrecovery_bound_ms = 15000\n\
         [params]\nlease_ms = 4000\nrenew_ms = 1000\n\
         [[faults]]\nat_s = 30\nkind = \"crash-node\"\nnode = \"n2\"\n",
    )
    .expect("scenario");
    let out = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args(["sim", "--scenario-file"])
        .arg(&scenario)
        .arg("--from-recording")
        .arg(rec_dir)
        .args(["--at", &mid_ms.to_string()])
        .output()
        .expect("run reelfleet sim");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("from the recording of n1, n2, n3 at"),
        "{said}"
    );
    assert!(said.contains("scenario what-if seed 1: ok"), "{said}");
    assert!(said.contains("crash n2 at 30000 ms"), "{said}");
}
