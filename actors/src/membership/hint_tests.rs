//! The peer-unreachable hint: it speeds removal of a dead peer and never
//! beats the lease.

use super::*;
use crate::store::MemStore;

/// One region of `nodes`, one channel: the membership tests' cluster.
pub(super) fn one_region(nodes: &[&str]) -> Arc<Topology> {
    one_region_with(nodes, 1)
}

/// One region of `nodes` and `channels` channels.
pub(super) fn one_region_with(nodes: &[&str], channels: usize) -> Arc<Topology> {
    let mut toml = String::from("[[regions]]\nname = \"r\"\n");
    for n in nodes {
        toml.push_str(&format!("[[nodes]]\nname = \"{n}\"\nregion = \"r\"\n"));
    }
    toml.push_str(
        r#"[[pipelines]]
name = "p"
[[pipelines.stages]]
name = "upload"
kind = "publish"
duration_ms = 10
[[projects]]
name = "q"
[[channels]]
name = "c"
home_region = "r"
videos_per_day = 1
pipeline = "p"
project = "q"
"#,
    );
    toml.push_str(&format!("count = {channels}\n"));
    Arc::new(topology::config::parse_topology(&toml).expect("topology"))
}

/// Runs A and B on one store in 10 ms steps; B stops at `stop_ms`. With
/// `hint`, A is told every 100 ms after that that B is unreachable.
/// Returns when A removed B, and when A first saw B's last lease
/// version.
/// A lease that is not a multiple of the refresh period: with the
/// default 2,000 / 500 ms the refresh ticks already fall on the moment
/// a lease lapses, and the hint has nothing to gain.
const PARAMS: MembershipParams = MembershipParams {
    lease_ms: 2_250,
    renew_ms: 500,
    monitors: 2,
    claim_batch: 64,
    drift_margin_ms: 200,
    sabotage: crate::sabotage::Sabotage::OFF,
};

/// Nodes A and B of one region with `params`, and their `Start`s.
pub(super) fn a_and_b(
    params: MembershipParams,
) -> ([MembershipMachine; 2], Vec<(usize, MembershipInput)>) {
    let topo = one_region(&["a", "b"]);
    let m = [
        MembershipMachine::new(Arc::clone(&topo), NodeId(0), params, 1),
        MembershipMachine::new(Arc::clone(&topo), NodeId(1), params, 2),
    ];
    (
        m,
        vec![(0, MembershipInput::Start), (1, MembershipInput::Start)],
    )
}

fn removal(stop_ms: u64, hint: bool) -> (u64, u64) {
    let mut store = MemStore::new();
    let (mut m, mut inbox) = a_and_b(PARAMS);
    let mut since_b = None;
    for step in 0..2_000u64 {
        let now = step * 10;
        // As the live transport does: every failed redial is a hint.
        if hint && now >= stop_ms && (now - stop_ms).is_multiple_of(100) {
            inbox.push((0, MembershipInput::PeerUnreachable(NodeId(1))));
        }
        for (i, mm) in m.iter().enumerate() {
            if (i == 0 || now < stop_ms) && mm.next_deadline().is_some_and(|d| d <= now) {
                inbox.push((i, MembershipInput::Tick));
            }
        }
        while let Some((i, input)) = inbox.pop() {
            if i == 1 && now >= stop_ms {
                continue;
            }
            let mut out = Vec::new();
            m[i].handle(now, input, &mut out);
            for e in out {
                match e {
                    MembershipEffect::Store { op_id, op } => {
                        let reply = store.apply(&op);
                        inbox.push((i, MembershipInput::StoreReply { op_id, reply }));
                    }
                    MembershipEffect::NodeRemoved { node: n, .. } if i == 0 => {
                        assert_eq!(n, NodeId(1));
                        return (now, since_b.expect("B was watched"));
                    }
                    _ => {}
                }
            }
        }
        if let Some((_, since)) = m[0].watch.get(&NodeId(1)) {
            if now >= stop_ms {
                since_b = Some(*since);
            }
        }
    }
    panic!("B was never removed");
}

#[test]
fn a_lost_connection_speeds_removal_but_never_beats_the_lease() {
    let (lease, renew) = (PARAMS.lease_ms, PARAMS.renew_ms);
    let mut saved = 0;
    for stop in [3_000, 3_130, 3_270, 3_410] {
        let (plain, since) = removal(stop, false);
        let (hinted, since_h) = removal(stop, true);
        // Never before the lease has gone unrenewed for its length.
        assert!(plain >= since + lease && hinted >= since_h + lease);
        // The hint removes B at the first step the lease allows.
        assert!(
            hinted <= since_h + lease + 10,
            "stop {stop}: {hinted} vs {since_h}"
        );
        assert!(plain <= since + lease + renew + 10);
        assert!(hinted <= plain, "stop {stop}: the hint made it slower");
        saved += plain - hinted;
    }
    eprintln!("the hint removed B {saved} ms sooner over 4 removals");
    // 250 ms per removal: the lease lapses midway between two ticks.
    assert!(
        saved >= 4 * 200,
        "the hint saved only {saved} ms over 4 removals"
    );
}
