//! The admin commands that change what the machines decide, on three real
//! `reelfleet node` processes and a 3-member etcd cluster, driven through
//! `reelfleet ctl` and checked in the store and in the nodes' behaviour:
//!
//! - `exclude NODE`: the node keeps running and its lease, its channels
//!   move away, it takes none back after a restart; `include` gives it
//!   channels again;
//! - `maintenance NODE SECONDS`: a node SIGKILLed inside the window keeps
//!   its channels (nobody takes them) and takes them back when restarted;
//!   one still down when a window ends fails over;
//! - `budget CHANNEL --daily-hard 0`: the channel publishes nothing more,
//!   its videos fail for the daily budget, the others go on; raised, it
//!   publishes again;
//! - `quota PROJECT BUCKET --units-per-day 0`: nothing is published; raised
//!   again, publishing resumes;
//!
//! and every change is in `audit`. Skips where etcd is not installed,
//! except on CI.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use actors::records::{FailReason, OwnerRecord, VideoStatus};
use common::admin_ctl::Admin;
use common::live_fleet::*;
use reelfleet::certs::{self, Role};
use reelfleet::live::runtime::addr_key;
use reelfleet::store::Store;
use topology::ChannelId;

/// Waits (at most `within`) until `f` holds.
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn owned_by(fleet: &Fleet, node: &str) -> BTreeMap<ChannelId, OwnerRecord> {
    let id = fleet.node_id(node);
    fleet
        .owners()
        .into_iter()
        .filter(|(_, o)| o.node == Some(id))
        .collect()
}

fn kill_node(fleet: &mut Fleet, i: usize) {
    fleet.nodes[i].signal(libc::SIGKILL);
    if let Some(mut c) = fleet.nodes[i].child.take() {
        let _ = c.wait();
    }
}

fn restart_node(fleet: &mut Fleet, root: &Path, i: usize) {
    let name = fleet.nodes[i].name.clone();
    let cfg = std::fs::read_to_string(root.join(format!("{name}.toml"))).expect("config");
    let port = fleet.nodes[i].metrics_port;
    fleet.nodes[i] = spawn_node(root, &name, &cfg, port);
}

fn total_published(fleet: &Fleet) -> usize {
    fleet.published_count().values().sum()
}

#[test]
fn exclude_maintenance_budget_and_quota_take_effect_on_a_live_fleet() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut fleet) = start_fleet() else {
        return;
    };
    fleet.wait_steady(6);
    let root = fleet.root().to_path_buf();
    let certs_dir = root.join("certs");
    certs::issue(&certs_dir, Role::Operator, "otto").expect("operator");
    certs::issue(&certs_dir, Role::Admin, "ada").expect("admin");
    let got = fleet
        .rt
        .block_on(fleet.store.get(&[addr_key("n1")]))
        .expect("read");
    let n1 = String::from_utf8(got[0].clone().expect("n1's address").value).expect("address");
    let admin = Admin {
        node: n1,
        certs: &certs_dir,
    };

    exclude_and_include(&mut fleet, &admin, &root);
    maintenance(&mut fleet, &admin, &root);
    budget(&fleet, &admin);
    quota(&fleet, &admin);

    let (cmds, log) = admin.audited_commands("otto");
    assert_eq!(
        cmds,
        [
            "exclude",
            "include",
            "maintenance",
            "maintenance",
            "maintenance-off",
            "budget",
            "budget",
            "quota",
            "quota"
        ],
        "{log}"
    );
    fleet.kill_all();
    fleet.audit();
}

/// n2 excluded: it runs, holds its lease and nothing else, also after a
/// restart; included, it gets channels again. An operator may not.
fn exclude_and_include(fleet: &mut Fleet, admin: &Admin<'_>, root: &Path) {
    let refused = admin.run("otto", &["exclude", "n2"]);
    assert!(!refused.status.success(), "an operator excluded a node");
    let t0 = Instant::now();
    admin.ok("ada", &["exclude", "n2"]);
    wait_until("n2's channels move away", Duration::from_secs(15), || {
        owned_by(fleet, "n2").is_empty()
    });
    eprintln!(
        "exclude n2: its channels moved in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let row = |admin: &Admin<'_>| {
        admin
            .ok("otto", &["nodes"])
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["node"] == "n2")
            .cloned()
            .expect("n2's row")
    };
    let r = row(admin);
    assert!(r["member"] == true && r["excluded"] == true, "{r}");
    assert!(fleet.nodes[1].child.is_some(), "n2 still runs");
    // Restarted, it rejoins and still takes nothing.
    kill_node(fleet, 1);
    restart_node(fleet, root, 1);
    wait_until("n2 rejoins", Duration::from_secs(20), || {
        row(admin)["member"] == true
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        owned_by(fleet, "n2").is_empty(),
        "an excluded node took channels"
    );
    let before = total_published(fleet);
    wait_until("publishing goes on", Duration::from_secs(40), || {
        total_published(fleet) > before + 2
    });
    admin.ok("ada", &["include", "n2"]);
    wait_until("n2 gets channels again", Duration::from_secs(20), || {
        !owned_by(fleet, "n2").is_empty()
    });
}

/// n3 in a window of 60 s, SIGKILLed: nobody takes its channels; restarted,
/// it takes them back itself. In a window of 4 s and killed, its channels
/// move once the window has ended.
fn maintenance(fleet: &mut Fleet, admin: &Admin<'_>, root: &Path) {
    fleet.wait_steady(0);
    let before = owned_by(fleet, "n3");
    assert!(!before.is_empty(), "n3 owns nothing to keep");
    let w = admin.ok("otto", &["maintenance", "n3", "60"]);
    assert_eq!(w["maintenance"], serde_json::json!(["n3"]), "{w}");
    let s = admin.ok("otto", &["status"]);
    assert_eq!(s["maintenance"]["nodes"], serde_json::json!(["n3"]), "{s}");
    // Every node reads it with the control records (within a refresh).
    std::thread::sleep(Duration::from_secs(2));
    kill_node(fleet, 2);
    // Three leases and more: it would have failed over by now.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        owned_by(fleet, "n3"),
        before,
        "n3's channels moved in its window"
    );
    restart_node(fleet, root, 2);
    wait_until(
        "n3 takes its channels back",
        Duration::from_secs(20),
        || {
            let now = owned_by(fleet, "n3");
            now.len() == before.len() && now.iter().all(|(c, o)| o.epoch > before[c].epoch)
        },
    );
    // A short window: once it ends, a node still down fails over.
    fleet.wait_steady(0);
    admin.ok("otto", &["maintenance", "n3", "4"]);
    std::thread::sleep(Duration::from_secs(2));
    kill_node(fleet, 2);
    let t0 = Instant::now();
    wait_until(
        "n3's channels fail over after the window",
        Duration::from_secs(20),
        || owned_by(fleet, "n3").is_empty(),
    );
    eprintln!(
        "a node down past a 4 s window failed over {:.1} s after it died",
        t0.elapsed().as_secs_f64()
    );
    admin.ok("otto", &["maintenance", "off"]);
    let s = admin.ok("otto", &["status"]);
    assert!(s["maintenance"].is_null(), "{s}");
    restart_node(fleet, root, 2);
}

/// A channel's daily hard budget at $0: it publishes nothing more and its
/// videos fail for the budget while the others go on; raised, it goes on.
fn budget(fleet: &Fleet, admin: &Admin<'_>) {
    fleet.wait_steady(0);
    let victim = ChannelId(1);
    let name = fleet.topo.channel(victim).name.clone();
    let refused = admin.run("otto", &["budget", &name, "--daily-hard", "0"]);
    assert!(!refused.status.success(), "an operator changed a budget");
    let r = admin.ok("ada", &["budget", &name, "--daily-hard", "0"]);
    assert_eq!(r["daily_hard_usd"], 0.0, "{r}");
    // What had its stages charged may still finish.
    std::thread::sleep(Duration::from_secs(6));
    let before = fleet.published_count();
    let t0 = Instant::now();
    wait_until(
        "the other channels publish",
        Duration::from_secs(40),
        || {
            let now = fleet.published_count();
            assert_eq!(
                now.get(&victim),
                before.get(&victim),
                "a channel with no budget published"
            );
            let others = |m: &BTreeMap<ChannelId, usize>| -> usize {
                m.iter()
                    .filter(|(c, _)| **c != victim)
                    .map(|(_, n)| n)
                    .sum()
            };
            others(&now) >= others(&before) + 3 && t0.elapsed() > Duration::from_secs(8)
        },
    );
    let failed_for_budget = fleet
        .videos()
        .iter()
        .any(|(c, v)| *c == victim && v.status == VideoStatus::Failed(FailReason::DailyBudget));
    assert!(
        failed_for_budget,
        "no video of {name} failed for its budget"
    );
    admin.ok("ada", &["budget", &name, "--daily-hard", "1000"]);
    let was = fleet.published_count().get(&victim).copied().unwrap_or(0);
    wait_until(
        "the channel publishes again",
        Duration::from_secs(40),
        || fleet.published_count().get(&victim).copied().unwrap_or(0) > was,
    );
}

/// The project's quota at 0 units a day: nothing is published; back up,
/// publishing resumes.
fn quota(fleet: &Fleet, admin: &Admin<'_>) {
    admin.ok("ada", &["quota", "p", "units", "--units-per-day", "0"]);
    // An upload already past its reservation may still land.
    std::thread::sleep(Duration::from_secs(6));
    let before = total_published(fleet);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(total_published(fleet), before, "published with no quota");
    admin.ok(
        "ada",
        &["quota", "p", "units", "--units-per-day", "10000000"],
    );
    wait_until("publishing resumes", Duration::from_secs(60), || {
        total_published(fleet) > before + 2
    });
}
