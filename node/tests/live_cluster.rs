//! The live cluster end to end: three real `reelfleet node` processes on a
//! real 3-member etcd cluster, all on loopback, talking QUIC with mutual
//! TLS. One node is SIGKILLed (or SIGSTOPped and later resumed); every one
//! of its channels must be owned by a survivor within 5 s and keep
//! publishing, and an audit of the store and the publisher's records must
//! find no video lost, none published twice, and the budget and quota
//! ledgers consistent.
//!
//! Skips (with a printed reason) where etcd is not installed, except on CI
//! (`CI` set), where `.ci/run` installs it and a skip would hide a failure.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actors::records::{idempotency_key, OwnerRecord, VideoStatus};
use common::live_fleet::*;
use reelfleet::store::Store;
use topology::ChannelId;

/// What one signal to the busiest node led to.
struct Takeover {
    victim: usize,
    chans: Vec<ChannelId>,
    before: BTreeMap<ChannelId, OwnerRecord>,
    published_before: BTreeMap<ChannelId, usize>,
    took: Duration,
}

impl Fleet {
    /// Waits for a steady fleet, sends `signal` to the node owning the most
    /// channels, and waits until others own all of them under newer epochs.
    fn signal_busiest(&self, signal: i32, what: &str) -> Takeover {
        self.wait_steady(6);
        let (victim, chans, before) = self.busiest();
        assert!(!chans.is_empty(), "no node owns a channel");
        let published_before = self.published_count();
        eprintln!("{what} {} (owns {:?})", NODES[victim], chans);
        let t = Instant::now();
        self.nodes[victim].signal(signal);
        let took = self.wait_takeover(victim, &chans, &before, t);
        eprintln!(
            "all {} channels of {} ({what}) owned by the others after {:.2} s",
            chans.len(),
            NODES[victim],
            took.as_secs_f64()
        );
        Takeover {
            victim,
            chans,
            before,
            published_before,
            took,
        }
    }
}

#[test]
fn a_killed_node_s_channels_move_to_survivors_within_5_s() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut fleet) = start_fleet() else {
        return;
    };
    let Takeover {
        chans,
        published_before,
        took,
        ..
    } = fleet.signal_busiest(libc::SIGKILL, "SIGKILL");
    assert!(took <= TAKEOVER_BOUND, "takeover took {took:?}");
    fleet.wait_progress(&chans, &published_before);
    fleet.kill_all();
    fleet.audit();
    audit_catches_a_double_publish(&fleet);
}

/// The audit is a checker: it must catch what it is for. A second upload of
/// a published key must fail it, naming the key.
fn audit_catches_a_double_publish(fleet: &Fleet) {
    use reelfleet::publish::youtube::YoutubePublisher;
    use reelfleet::publish::{Publisher, Upload};
    let (ch, v) = fleet
        .videos()
        .into_iter()
        .find(|(_, v)| matches!(v.status, VideoStatus::Published { .. }))
        .expect("a published video");
    let key = idempotency_key(&fleet.topo.channel(ch).name, v.slot);
    let video = fleet._dir.path().join("dup.bin");
    std::fs::write(&video, b"a second copy").expect("video");
    let publisher =
        YoutubePublisher::new(fleet.youtube.publisher_config(), None).expect("publisher");
    let up = Upload {
        idempotency_key: key.clone(),
        video,
        title: "dup".into(),
        description: String::new(),
        metadata: serde_json::json!({}),
    };
    let out = fleet
        .rt
        .block_on(publisher.publish(&up, std::sync::Arc::new(|| true)));
    assert!(
        matches!(
            out,
            Some(actors::protocol::PublishOutcome::Published { .. })
        ),
        "{out:?}"
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fleet.audit()));
    let msg = caught.expect_err("the audit missed a double publish");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("published at most once"), "{msg}");
    assert!(msg.contains(&key), "{msg}");
}

#[test]
fn a_frozen_node_is_fenced_when_it_thaws_and_publishes_nothing_twice() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut fleet) = start_fleet() else {
        return;
    };
    let Takeover {
        victim,
        chans,
        before,
        published_before,
        took,
    } = fleet.signal_busiest(libc::SIGSTOP, "SIGSTOP");
    assert!(took <= TAKEOVER_BOUND, "takeover took {took:?}");
    fleet.wait_progress(&chans, &published_before);
    // Thaw: the node's machines wake with stale ownership and must be
    // stopped by the store, not by luck.
    fleet.nodes[victim].signal(libc::SIGCONT);
    let t0 = Instant::now();
    let (fenced, dropped) = loop {
        let log = fleet.nodes[victim].log_text();
        let (fenced, dropped) = (fence_hits(&log), log.contains("declared dead"));
        if fenced > 0 && dropped {
            break (fenced, dropped);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            fleet.dump_logs();
            panic!(
                "after 20 s the thawed node hit the fence {fenced} times; noticed its removal: {dropped}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "after SIGCONT: {fenced} stale channel write(s) stopped by the fence; declared dead: {dropped}"
    );
    // It must not own anything it did not claim again under a new epoch.
    std::thread::sleep(Duration::from_secs(3));
    let owners = fleet.owners();
    for c in &chans {
        let o = owners.get(c).expect("owner record");
        assert!(
            o.epoch > before.get(c).map(|b| b.epoch).unwrap_or(0),
            "channel {c:?} went back to its old epoch: {o:?}"
        );
    }
    let _ = fleet.nodes[victim].metric("reelfleet_fenced_total");
    fleet.kill_all();
    fleet.audit();
}

#[test]
fn a_drained_node_hands_its_channels_over_and_exits_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut fleet) = start_fleet() else {
        return;
    };
    fleet.wait_steady(6);
    // Metrics are served while nodes run, with the publisher's quota use
    // (a node that has uploaded nothing yet says 0).
    let spent: Vec<Option<u64>> = fleet
        .nodes
        .iter()
        .map(|n| n.metric("reelfleet_publisher_quota_units"))
        .collect();
    assert!(spent.iter().all(|u| u.is_some()), "quota metric: {spent:?}");
    assert!(
        spent.iter().flatten().sum::<u64>() > 0,
        "quota metric: {spent:?}"
    );
    // A node's exposition passes Prometheus's own checker.
    let text = fleet.nodes[0].metrics_text().unwrap_or_default();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(body.contains("# HELP reelfleet_channels_owned "), "{text}");
    if let Some(complaints) = common::promtool::promtool_complaints(body) {
        assert!(
            complaints.is_empty(),
            "promtool check metrics:\n{complaints}"
        );
    }
    let Takeover {
        victim,
        chans,
        published_before,
        ..
    } = fleet.signal_busiest(libc::SIGTERM, "SIGTERM (drain)");
    let child = fleet.nodes[victim].child.as_mut().expect("child");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the drained node did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    fleet.nodes[victim].child = None;
    assert!(status.success(), "a drained node exits 0: {status:?}");
    let log = fleet.nodes[victim].log_text();
    assert!(log.contains("draining"), "{log}");
    assert!(
        fence_hits(&log) == 0,
        "a graceful handover hit the fence:\n{log}"
    );
    fleet.wait_progress(&chans, &published_before);
    fleet.kill_all();
    fleet.audit();
}

/// How many times a node's log says the epoch fence stopped one of its
/// channels (`live::ports` when a machine learns it was fenced,
/// `live::store_port` when the store refused a write).
fn fence_hits(log: &str) -> usize {
    log.matches("channel fenced: another node owns it now")
        .count()
        + log
            .matches("the store refused a channel write: the epoch fence")
            .count()
}

/// A node started while the store has lost its quorum waits for it
/// (saying so) instead of exiting, and starts once the store is back.
#[test]
fn a_node_started_while_the_store_is_down_waits_for_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut fleet) = start_fleet() else {
        return;
    };
    fleet.wait_steady(2);
    let n = 2;
    fleet.nodes[n].signal(libc::SIGKILL);
    fleet._etcd.kill_member(0);
    fleet._etcd.kill_member(1);
    let cfg = std::fs::read_to_string(fleet.root().join(format!("{}.toml", NODES[n])))
        .expect("the node's config");
    let port = fleet.nodes[n].metrics_port;
    fleet.nodes[n] = spawn_node(fleet.root(), NODES[n], &cfg, port);
    std::thread::sleep(Duration::from_secs(4));
    let child = fleet.nodes[n].child.as_mut().expect("child");
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the node exited while the store was down:\n{}",
        fleet.nodes[n].log_text()
    );
    let log = fleet.nodes[n].log_text();
    assert!(
        log.contains("the store is unavailable; waiting for it"),
        "{log}"
    );
    fleet._etcd.start_member(0);
    fleet._etcd.start_member(1);
    fleet._etcd.wait_healthy(Duration::from_secs(20));
    let t = Instant::now();
    while fleet.nodes[n].metric("reelfleet_channels_owned").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the node did not start after the store came back:\n{}",
            fleet.nodes[n].log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The test's own client reconnects to the restarted members too.
    while fleet
        .rt
        .block_on(fleet.store.get(&[actors::store::key(b"o/")]))
        .is_err()
    {
        assert!(t.elapsed() < Duration::from_secs(30), "the store");
        std::thread::sleep(Duration::from_millis(250));
    }
    fleet.kill_all();
    fleet.audit();
}

/// Per-channel ledger series stop above `metrics_channels_max` owned
/// channels (their memory: ~3.6 KiB a channel); the node's totals go on.
#[test]
fn per_channel_ledger_metrics_stop_above_the_cap_and_node_totals_go_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let capped = NODES[0];
    let Some(mut fleet) = start_fleet_with(&|n, cfg| {
        if n == capped {
            cfg.replacen("[timing]", "metrics_channels_max = 0\n[timing]", 1)
        } else {
            cfg
        }
    }) else {
        return;
    };
    fleet.wait_steady(2);
    // The second sample (every 15 s) sees the channels the nodes own.
    let t = Instant::now();
    let owns = |i: usize| {
        fleet.nodes[i]
            .metric("reelfleet_channels_owned")
            .unwrap_or(0)
            > 0
    };
    loop {
        let texts: Vec<String> = (0..2)
            .map(|i| fleet.nodes[i].metrics_text().unwrap_or_default())
            .collect();
        let per_channel = |i: usize| texts[i].contains("reelfleet_channel_spend_usd{");
        let totals = |i: usize| texts[i].contains("reelfleet_node_spend_usd{");
        // The capped node said so once its sample saw channels.
        let said = fleet.nodes[0]
            .log_text()
            .contains("per-channel ledger metrics off");
        if said && owns(0) && owns(1) && per_channel(1) && totals(0) {
            assert!(
                !per_channel(0),
                "a node over its cap exported per-channel series"
            );
            assert!(totals(1));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "no ledger sample with both nodes owning channels:\n{}\n{}\n{}",
            texts[0],
            texts[1],
            fleet.nodes[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    fleet.kill_all();
}
