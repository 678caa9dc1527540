//! The admin RPC on a production-shaped fleet: three `reelfleet node`
//! processes on a 3-member etcd cluster, driven through `reelfleet ctl` as
//! operators would, each command's effect checked in the store and in the
//! nodes' behaviour: a region paused publishes nothing until resumed, the
//! kill switch holds on every node (timed) and stops publishing, a killed
//! channel publishes nothing while the others go on, a node drained
//! through another node exits 0 and refuses to start until undrained,
//! `gpus`, `jobs` and `backup` answer for the whole fleet through one node,
//! and `audit` holds every change with who made it.
//!
//! Skips where etcd is not installed, except on CI.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin_ctl::Admin;
use common::live_fleet::*;
use reelfleet::certs::{self, Role};
use reelfleet::live::runtime::addr_key;
use reelfleet::store::Store;

fn total_published(fleet: &Fleet) -> usize {
    fleet.published_count().values().sum()
}

/// Nothing is published during `quiet` once `settle` has passed (work in
/// flight when the stop came may still finish during `settle`).
fn assert_quiet(fleet: &Fleet, settle: Duration, quiet: Duration, what: &str) {
    std::thread::sleep(settle);
    let before = total_published(fleet);
    std::thread::sleep(quiet);
    let after = total_published(fleet);
    assert_eq!(before, after, "{what}: videos were still published");
}

/// Publishing goes on: more than now within 40 s.
fn assert_publishing(fleet: &Fleet, what: &str) {
    let before = total_published(fleet);
    let t0 = Instant::now();
    while total_published(fleet) <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "{what}: nothing published in 40 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn ctl_drives_a_three_node_etcd_fleet() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut fleet) = start_fleet() else {
        return;
    };
    fleet.wait_steady(6);
    let root = fleet.root().to_path_buf();
    let certs_dir = root.join("certs");
    certs::issue(&certs_dir, Role::Viewer, "vera").expect("viewer");
    certs::issue(&certs_dir, Role::Operator, "otto").expect("operator");
    certs::issue(&certs_dir, Role::Admin, "ada").expect("admin");
    let addr = |n: &str| {
        let got = fleet
            .rt
            .block_on(fleet.store.get(&[addr_key(n)]))
            .expect("read");
        let e = got
            .into_iter()
            .next()
            .flatten()
            .expect("address in the store");
        String::from_utf8(e.value).expect("address")
    };
    let (n1, n2) = (addr("n1"), addr("n2"));
    let admin = Admin {
        node: n1,
        certs: &certs_dir,
    };

    reads(&admin);
    pause_and_resume(&fleet, &admin);
    killswitch(&fleet, &admin);
    kill_one_channel(&fleet, &admin);
    drain_through_another_node(&mut fleet, &admin, &root);

    let b = Admin {
        node: n2,
        certs: &certs_dir,
    };
    backup_through(&b, &root);
    check_audit(&admin);
    fleet.kill_all();
}

/// Reads through one node answer for all three.
fn reads(admin: &Admin<'_>) {
    let s = admin.ok("vera", &["status"]);
    let members = s["nodes"]
        .as_array()
        .map(|n| n.iter().filter(|r| r["member"] == true).count());
    assert_eq!(members, Some(3), "{s}");
    let t0 = Instant::now();
    loop {
        let g = admin.ok("vera", &["gpus"]);
        if g.as_array().map(Vec::len) == Some(3) {
            assert!(g[0]["model"] == "L4", "{g}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "gpus: {g}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(admin.ok("vera", &["jobs"]).is_array());
    assert!(admin.ok("vera", &["regions"])[0]["region"] == "local");
}

fn pause_and_resume(fleet: &Fleet, admin: &Admin<'_>) {
    let e = admin.run("vera", &["pause", "--region", "local"]);
    assert!(!e.status.success(), "a viewer paused a region");
    admin.ok("otto", &["pause", "--region", "local"]);
    let ch = &fleet.topo.channels[0].name;
    assert_eq!(admin.ok("vera", &["channel", ch])["paused"], true);
    assert_quiet(
        fleet,
        Duration::from_secs(5),
        Duration::from_secs(5),
        "region paused",
    );
    admin.ok("otto", &["resume", "--region", "local"]);
    assert_publishing(fleet, "region resumed");
}

fn killswitch(fleet: &Fleet, admin: &Admin<'_>) {
    let e = admin.run("otto", &["killswitch", "on", "--reason", "drill"]);
    assert!(!e.status.success(), "an operator flipped the kill switch");
    let k = admin.ok("ada", &["killswitch", "on", "--reason", "drill"]);
    assert_eq!(k["nodes"]["held_on_every_node"], true, "{k}");
    assert_eq!(k["nodes"]["held"].as_array().map(Vec::len), Some(3), "{k}");
    eprintln!(
        "kill switch held on all 3 nodes after {} ms",
        k["nodes"]["held_after_ms"]
    );
    assert_quiet(
        fleet,
        Duration::from_secs(3),
        Duration::from_secs(5),
        "kill switch on",
    );
    let k = admin.ok("ada", &["killswitch", "off", "--reason", "drill over"]);
    assert_eq!(k["nodes"]["held_on_every_node"], true, "{k}");
    assert_publishing(fleet, "kill switch off");
}

/// A killed channel publishes nothing while the others go on.
fn kill_one_channel(fleet: &Fleet, admin: &Admin<'_>) {
    let victim = topology::ChannelId(0);
    let name = fleet.topo.channel(victim).name.clone();
    admin.ok("otto", &["kill", &name]);
    assert_eq!(admin.ok("vera", &["channel", &name])["killed"], true);
    std::thread::sleep(Duration::from_secs(3));
    let before = fleet.published_count();
    let t0 = Instant::now();
    loop {
        let now = fleet.published_count();
        let others: usize = now
            .iter()
            .filter(|(c, _)| **c != victim)
            .map(|(_, n)| n)
            .sum();
        let others_before: usize = before
            .iter()
            .filter(|(c, _)| **c != victim)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            now.get(&victim),
            before.get(&victim),
            "a killed channel published"
        );
        if others >= others_before + 3 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the others stopped too"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `drain n3` through n1: n3 exits 0, its channels move, it refuses to
/// start until `undrain`, and then joins again.
fn drain_through_another_node(fleet: &mut Fleet, admin: &Admin<'_>, root: &Path) {
    let n3 = fleet.node_id("n3");
    admin.ok("otto", &["drain", "n3"]);
    let child = fleet.nodes[2].child.as_mut().expect("n3 runs");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "n3 did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    fleet.nodes[2].child = None;
    assert!(status.success(), "a drained node exits 0: {status:?}");
    assert!(fleet.owners().values().all(|o| o.node != Some(n3)));
    let cfg = std::fs::read_to_string(root.join("n3.toml")).expect("n3 config");
    let again = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args(["node", "--config"])
        .arg(root.join("n3.toml"))
        .output()
        .expect("start n3 again");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && err.contains("drained by otto"),
        "{err}"
    );
    admin.ok("otto", &["undrain", "n3"]);
    let port = fleet.nodes[2].metrics_port;
    fleet.nodes[2] = spawn_node(root, "n3", &cfg, port);
    let t0 = Instant::now();
    loop {
        let s = admin.ok("vera", &["nodes"]);
        let member = s.as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["node"] == "n3" && r["member"] == true)
        });
        if member {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "n3 did not rejoin: {s}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A backup through another node, checked whole.
fn backup_through(b: &Admin<'_>, root: &Path) {
    let out = root.join("fleet.backup");
    let r = b.ok("vera", &["backup", "--out", out.to_str().expect("path")]);
    assert!(r["records"].as_u64().is_some_and(|n| n > 0), "{r}");
    let v = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args(["backup", "--verify"])
        .arg(&out)
        .output()
        .expect("verify");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

/// Every change, in order, with who made it.
fn check_audit(admin: &Admin<'_>) {
    let log = admin.ok("vera", &["audit"]);
    let seen: Vec<(String, String)> = log
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap_or_default().to_string(),
                r["command"]["cmd"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("otto", "pause"),
        ("otto", "resume"),
        ("ada", "killswitch"),
        ("ada", "killswitch"),
        ("otto", "kill"),
        ("otto", "drain"),
        ("otto", "undrain"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want, "{log}");
}
