//! Releases are held to `RELEASES_IN_FLIGHT_MAX` at once: a node draining
//! more channels than that asks the rest as releases finish, each channel
//! once, and still leaves with nothing hosted.

use std::collections::{BTreeSet, VecDeque};

use super::*;
use crate::store::MemStore;

const CHANNELS: usize = 1_000;

/// One node, one region, `channels` channels.
fn one_node(channels: usize) -> Arc<Topology> {
    let toml = format!(
        r#"[[regions]]
name = "r"
[[nodes]]
name = "a"
region = "r"
[[pipelines]]
name = "p"
[[pipelines.stages]]
name = "upload"
kind = "publish"
duration_ms = 10
[[projects]]
name = "q"
[[channels]]
name = "c"
count = {channels}
home_region = "r"
videos_per_day = 1
pipeline = "p"
project = "q"
"#
    );
    Arc::new(topology::config::parse_topology(&toml).expect("topology"))
}

/// What the drain looked like from outside the machine.
#[derive(Debug, Default)]
struct Drain {
    released: BTreeSet<ChannelId>,
    most_in_flight: usize,
    drained: bool,
}

/// Claims every channel, then drains; a channel asked to release stops
/// `stop_after` steps later (its machine settling and committing), and
/// store ops are answered at the next step.
fn claim_then_drain(stop_after: u64) -> Drain {
    let topo = one_node(CHANNELS);
    let mut m = MembershipMachine::new(topo, NodeId(0), MembershipParams::default(), 7);
    let mut store = MemStore::new();
    let mut ops: Vec<(u64, StoreOp)> = Vec::new();
    let mut hosted = 0usize;
    let mut releasing: VecDeque<(u64, ChannelId)> = VecDeque::new();
    let mut d = Drain::default();
    let mut inbox = vec![MembershipInput::Start];
    let mut drain_asked = false;
    for step in 0..20_000u64 {
        let now = step * 10;
        for (op_id, op) in ops.drain(..) {
            let reply = store.apply(&op);
            inbox.push(MembershipInput::StoreReply { op_id, reply });
        }
        while releasing
            .front()
            .is_some_and(|(at, _)| *at + stop_after <= step)
        {
            if let Some((_, ch)) = releasing.pop_front() {
                inbox.push(MembershipInput::ChannelStopped(ch));
            }
        }
        if hosted == CHANNELS && !drain_asked {
            drain_asked = true;
            inbox.push(MembershipInput::Drain);
        }
        if m.next_deadline().is_some_and(|t| t <= now) {
            inbox.push(MembershipInput::Tick);
        }
        for input in std::mem::take(&mut inbox) {
            let mut out = Vec::new();
            m.handle(now, input, &mut out);
            for e in out {
                match e {
                    MembershipEffect::Store { op_id, op } => ops.push((op_id, op)),
                    MembershipEffect::StartChannel { .. } => hosted += 1,
                    MembershipEffect::ReleaseChannel(ch) => {
                        assert!(drain_asked, "{ch} released before the drain");
                        assert!(d.released.insert(ch), "{ch} asked to release twice");
                        releasing.push_back((step, ch));
                        d.most_in_flight = d.most_in_flight.max(releasing.len());
                    }
                    MembershipEffect::Drained => d.drained = true,
                    _ => {}
                }
            }
        }
        if d.drained {
            return d;
        }
    }
    panic!(
        "no drain: hosted {hosted}, released {}, in flight {}",
        d.released.len(),
        releasing.len()
    );
}

#[test]
fn a_drain_releases_every_channel_at_most_the_limit_at_once() {
    for stop_after in [1, 3, 20] {
        let d = claim_then_drain(stop_after);
        assert!(d.drained);
        assert_eq!(d.released.len(), CHANNELS, "every channel released once");
        assert_eq!(
            d.most_in_flight, RELEASES_IN_FLIGHT_MAX,
            "stop after {stop_after} steps: releases in flight held to the limit, and reaching it"
        );
    }
}
