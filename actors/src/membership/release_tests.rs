//! Releases are held to `RELEASES_IN_FLIGHT_MAX` at once: a node draining
//! more channels than that asks the rest as releases finish, each channel
//! once, and still leaves with nothing hosted. Releases that take long
//! (an upload settling first) give their slots up after
//! `RELEASE_SLOT_HELD_MS_MAX`, so they do not hold the others back.

use std::collections::{BTreeMap, BTreeSet};

use super::hint_tests::one_region_with;
use super::*;
use crate::store::MemStore;

const CHANNELS: usize = 1_000;

/// What the drain looked like from outside the machine.
#[derive(Debug, Default)]
struct Drain {
    /// Each channel released, and the step it was asked at.
    released: BTreeMap<ChannelId, u64>,
    /// Each channel that stopped, and the step it stopped at.
    stopped: BTreeMap<ChannelId, u64>,
    most_in_flight: usize,
    drained: bool,
}

const STEP_MS: u64 = 10;

/// Claims every channel, then drains; a channel asked to release stops
/// `stop_after(channel)` steps later (its machine settling and
/// committing), and store ops are answered at the next step.
fn claim_then_drain(stop_after: impl Fn(ChannelId) -> u64) -> Drain {
    let topo = one_region_with(&["a"], CHANNELS);
    let mut m = MembershipMachine::new(topo, NodeId(0), MembershipParams::default(), 7);
    let mut store = MemStore::new();
    let mut ops: Vec<(u64, StoreOp)> = Vec::new();
    let mut hosted = 0usize;
    // Releases in flight: (the step it stops at, the channel).
    let mut releasing: BTreeSet<(u64, ChannelId)> = BTreeSet::new();
    let mut d = Drain::default();
    let mut inbox = vec![MembershipInput::Start];
    let mut drain_asked = false;
    for step in 0..20_000u64 {
        let now = step * STEP_MS;
        for (op_id, op) in ops.drain(..) {
            let reply = store.apply(&op);
            inbox.push(MembershipInput::StoreReply { op_id, reply });
        }
        while let Some(&(at, ch)) = releasing.first() {
            if at > step {
                break;
            }
            releasing.pop_first();
            d.stopped.insert(ch, step);
            inbox.push(MembershipInput::ChannelStopped(ch));
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
                        let again = d.released.insert(ch, step);
                        assert!(again.is_none(), "{ch} asked to release twice");
                        releasing.insert((step + stop_after(ch), ch));
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
        let d = claim_then_drain(|_| stop_after);
        assert!(d.drained);
        assert_eq!(d.released.len(), CHANNELS, "every channel released once");
        assert_eq!(
            d.most_in_flight, RELEASES_IN_FLIGHT_MAX,
            "stop after {stop_after} steps: releases in flight held to the limit, and reaching it"
        );
    }
}

/// The first 300 channels (more than the limit) wait 30 s for an upload
/// before they release: the other 700 are still handed over long before
/// any of them, and the slow ones' slots go back to the limit.
#[test]
fn releases_waiting_on_uploads_do_not_hold_the_others_back() {
    const SLOW: u32 = 300;
    const SLOW_STEPS: u64 = 30_000 / STEP_MS;
    let slow = |ch: ChannelId| ch.0 < SLOW;
    let d = claim_then_drain(|ch| if slow(ch) { SLOW_STEPS } else { 2 });
    assert!(d.drained);
    assert_eq!(d.released.len(), CHANNELS, "every channel released once");
    let first_slow_stop = d
        .stopped
        .iter()
        .filter(|(ch, _)| slow(**ch))
        .map(|(_, at)| *at)
        .min()
        .expect("slow channels stopped");
    let last_fast_stop = d
        .stopped
        .iter()
        .filter(|(ch, _)| !slow(**ch))
        .map(|(_, at)| *at)
        .max()
        .expect("fast channels stopped");
    assert!(
        last_fast_stop < first_slow_stop,
        "every other channel handed over (last at step {last_fast_stop}) before \
         the first slow one (step {first_slow_stop})"
    );
    let waited_ms = (last_fast_stop - d.released.values().min().copied().unwrap_or(0)) * STEP_MS;
    assert!(
        waited_ms <= 2 * RELEASE_SLOT_HELD_MS_MAX + 1_000,
        "the others waited {waited_ms} ms: two slot periods at most (300 slow, 256 slots)"
    );
    assert!(
        d.most_in_flight <= RELEASES_IN_FLIGHT_MAX + SLOW as usize,
        "at most the limit beyond the slow ones in flight: {}",
        d.most_in_flight
    );
}
