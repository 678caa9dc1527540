//! A node whose clock is far from its peers' does not run: three real
//! `reelfleet node` processes on a 3-member etcd cluster; one is restarted
//! under libfaketime with its wall clock an hour ahead and must refuse to
//! start (exit status 3, the offset named) without claiming a channel; then
//! with a clock that runs 1.5 times too fast, and must stop itself once it
//! is more than `timing.clock_offset_max_ms` off; then on the true clock,
//! and the fleet goes on with nothing lost or published twice.
//!
//! Needs etcd and libfaketime (Debian's `faketime`); skips without them,
//! except on CI, where `.ci/run` installs both.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::live_fleet::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Starts node `n` again from its config, under libfaketime's `faketime`
/// spec (None: the true clock), its output appended to its log.
fn respawn(root: &Path, node: &mut NodeProc, faketime: Option<&str>) {
    let out = std::fs::OpenOptions::new()
        .append(true)
        .open(&node.log)
        .expect("log");
    let err = out.try_clone().expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reelfleet"));
    cmd.arg("node")
        .arg("--config")
        .arg(root.join(format!("{}.toml", node.name)));
    if let Some(spec) = faketime {
        cmd.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", spec);
        if !spec.contains('x') {
            cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
    }
    let child: Child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start reelfleet node");
    node.child = Some(child);
}

fn kill(node: &mut NodeProc) {
    if let Some(mut c) = node.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits (at most `within`) for node's process to exit by itself.
fn exit_within(node: &mut NodeProc, within: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Some(c) = node.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                node.child = None;
                return Some(status);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Node `n3` restarted an hour ahead refuses before it claims anything,
/// and its channels stay with the others.
fn an_hour_ahead_is_refused(fleet: &mut Fleet, root: &Path, n3: usize) {
    let n3_id = fleet.node_id("n3");
    // An hour ahead: refused before it claims anything.
    kill(&mut fleet.nodes[n3]);
    respawn(root, &mut fleet.nodes[n3], Some("+3600"));
    let status = exit_within(&mut fleet.nodes[n3], Duration::from_secs(30));
    let log = fleet.nodes[n3].log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(3),
        "n3 an hour ahead did not refuse to start:\n{log}"
    );
    assert!(
        log.contains("refusing to start") && log.contains("ahead of 2 of the 2 peers"),
        "the refusal does not say why:\n{log}"
    );
    assert!(
        log.contains("clock is 3600.") || log.contains("clock is 3599."),
        "the refusal does not name the offset:\n{log}"
    );
    // Its channels went to the others (within a lease and a few renewals),
    // and it took none back.
    let t = Instant::now();
    let owned_by_n3 = || {
        fleet
            .owners()
            .values()
            .filter(|o| o.node == Some(n3_id))
            .count()
    };
    while owned_by_n3() > 0 && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(owned_by_n3(), 0, "a refused node owns channels");
}

/// Node `n3` on a clock 1.5 times too fast starts (true at first), then
/// stops itself once it is more than 2 s off.
fn a_fast_clock_stops_itself(fleet: &mut Fleet, root: &Path, n3: usize) {
    let t0 = Instant::now();
    respawn(root, &mut fleet.nodes[n3], Some("+0 x1.5"));
    let status = exit_within(&mut fleet.nodes[n3], Duration::from_secs(60));
    let log = fleet.nodes[n3].log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(3),
        "n3 on a fast clock did not stop itself:\n{log}"
    );
    assert!(
        log.contains("stopping: this node's clock is"),
        "the stop does not say why:\n{log}"
    );
    eprintln!(
        "n3 on a 1.5x clock stopped itself after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_node_far_from_its_peers_clocks_refuses_to_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is not installed, and CI must run this test (.ci/run installs faketime)"
        );
        eprintln!("skipping: libfaketime is not installed (apt install faketime)");
        return;
    }
    let Some(mut fleet) = start_fleet() else {
        return;
    };
    fleet.wait_steady(3);
    let root = fleet.root().to_path_buf();
    let n3 = 2;

    an_hour_ahead_is_refused(&mut fleet, &root, n3);
    a_fast_clock_stops_itself(&mut fleet, &root, n3);

    // On the true clock it runs again, and nothing was lost or repeated.
    respawn(&root, &mut fleet.nodes[n3], None);
    let before: usize = fleet.published_count().values().sum();
    fleet.wait_steady(before + 3);
    assert!(
        exit_within(&mut fleet.nodes[n3], Duration::from_millis(500)).is_none(),
        "n3 on the true clock exited:\n{}",
        fleet.nodes[n3].log_text()
    );
    fleet.kill_all();
    fleet.audit();
}
