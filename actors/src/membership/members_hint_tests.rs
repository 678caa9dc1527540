//! The members-changed hint: a node that removes a dead peer tells the
//! other members, so those that do not watch the dead peer start claiming
//! its channels at once instead of at their next refresh; and a dead peer
//! is removed once, not once per watcher.

use super::*;
use crate::store::MemStore;

/// Store ops take `LATENCY_MS` each way of nothing: each is applied when
/// its reply is due, so a read asked before a peer's write can see it.
const LATENCY_MS: u64 = 30;
const STEP_MS: u64 = 10;
const DEAD: NodeId = NodeId(2);

struct Run {
    /// When each node first adopted a members record without `DEAD`.
    adopted_ms: [Option<u64>; 3],
    /// Every removal of `DEAD`: (when, by whom).
    removals: Vec<(u64, usize)>,
}

/// The world outside the three machines: the store with its latency, and
/// messages on their way.
struct World {
    store: MemStore,
    /// (due, node, op id, op)
    in_flight: Vec<(u64, usize, u64, StoreOp)>,
    later: Vec<(u64, usize, MembershipInput)>,
    hint: bool,
    stop_ms: u64,
    r: Run,
}

impl World {
    /// Store replies and messages due by `now`.
    fn due(&mut self, now: u64, inbox: &mut Vec<(usize, MembershipInput)>) {
        let store = &mut self.store;
        self.in_flight.retain(|(due, i, op_id, op)| {
            if *due > now {
                return true;
            }
            let reply = store.apply(op);
            inbox.push((
                *i,
                MembershipInput::StoreReply {
                    op_id: *op_id,
                    reply,
                },
            ));
            false
        });
        self.later.retain(|(due, i, input)| {
            if *due > now {
                return true;
            }
            inbox.push((*i, input.clone()));
            false
        });
    }

    fn take(&mut self, now: u64, i: usize, e: MembershipEffect) {
        match e {
            MembershipEffect::Store { op_id, op } => {
                self.in_flight.push((now + LATENCY_MS, i, op_id, op))
            }
            MembershipEffect::NodeRemoved { node, .. } => {
                assert_eq!(node, DEAD, "only the dead node is removed");
                self.r.removals.push((now, i));
            }
            MembershipEffect::View(members) if now >= self.stop_ms && !members.contains(DEAD) => {
                self.r.adopted_ms[i].get_or_insert(now);
            }
            MembershipEffect::TellMembersChanged { version, to } if self.hint => {
                for n in to {
                    let input = MembershipInput::MembersChanged { version };
                    self.later.push((now + STEP_MS, n.index(), input));
                }
            }
            _ => {}
        }
    }
}

/// Three nodes on one store; node `i` starts at `i * offset_ms` and `DEAD`
/// stops at `stop_ms`. With `hint`, `TellMembersChanged` reaches its
/// addressees one step later (as a message would).
fn run(monitors: usize, offset_ms: u64, stop_ms: u64, hint: bool) -> Run {
    let topo = super::hint_tests::one_region(&["a", "b", "c"]);
    let params = MembershipParams {
        monitors,
        ..MembershipParams::default()
    };
    let mut m: Vec<MembershipMachine> = (0..3u32)
        .map(|i| MembershipMachine::new(Arc::clone(&topo), NodeId(i), params, u64::from(i) + 1))
        .collect();
    let mut w = World {
        store: MemStore::new(),
        in_flight: Vec::new(),
        later: Vec::new(),
        hint,
        stop_ms,
        r: Run {
            adopted_ms: [None; 3],
            removals: Vec::new(),
        },
    };
    for step in 0..2_000u64 {
        let now = step * STEP_MS;
        let alive = |i: usize| now >= i as u64 * offset_ms && (i != DEAD.index() || now < stop_ms);
        let mut inbox: Vec<(usize, MembershipInput)> = (0..3)
            .filter(|i| now == *i as u64 * offset_ms)
            .map(|i| (i, MembershipInput::Start))
            .collect();
        w.due(now, &mut inbox);
        for (i, mm) in m.iter().enumerate() {
            if mm.next_deadline().is_some_and(|d| d <= now) {
                inbox.push((i, MembershipInput::Tick));
            }
        }
        for (i, input) in inbox.into_iter().filter(|(i, _)| alive(*i)) {
            let mut out = Vec::new();
            m[i].handle(now, input, &mut out);
            for e in out {
                w.take(now, i, e);
            }
        }
        if w.r.adopted_ms[..2].iter().all(Option::is_some) && now > stop_ms + 3_000 {
            return w.r;
        }
    }
    panic!(
        "the survivors never both adopted the removal: {:?}",
        w.r.adopted_ms
    );
}

#[test]
fn the_survivor_that_does_not_watch_hears_of_the_removal_at_once() {
    let renew = MembershipParams::default().renew_ms;
    let mut saved = 0;
    // One watcher each: a watches b, b watches c, c watches a.
    for (offset, stop) in [(130, 5_000), (170, 5_210), (240, 5_330), (90, 5_470)] {
        let plain = run(1, offset, stop, false);
        let hinted = run(1, offset, stop, true);
        for r in [&plain, &hinted] {
            assert_eq!(r.removals.len(), 1, "{:?}", r.removals);
        }
        let (removed, by) = hinted.removals[0];
        let other = 1 - by;
        let heard = hinted.adopted_ms[other].expect("adopted");
        // The hint's step, then one refresh's round trip.
        assert!(
            heard <= removed + STEP_MS + 2 * LATENCY_MS + STEP_MS,
            "offset {offset}: removed at {removed}, heard at {heard}"
        );
        let plain_heard = plain.adopted_ms[other].expect("adopted");
        assert!(plain_heard <= plain.removals[0].0 + renew + 2 * LATENCY_MS + STEP_MS);
        assert_eq!(
            plain.removals[0].0, removed,
            "the hint does not move the removal"
        );
        saved += plain_heard.saturating_sub(heard);
    }
    eprintln!("the hint brought the other survivor in {saved} ms sooner over 4 removals");
    assert!(
        saved >= 4 * 100,
        "the hint saved only {saved} ms over 4 removals"
    );
}

#[test]
fn a_dead_node_is_removed_once_however_its_watchers_refresh() {
    // Both survivors watch the dead node; their refreshes fall at other
    // moments, so one's read can be in flight while the other removes.
    let mut runs = 0;
    for offset in (0..500).step_by(30) {
        for stop in [5_000, 5_250] {
            for hint in [false, true] {
                let r = run(2, offset, stop, hint);
                assert_eq!(
                    r.removals.len(),
                    1,
                    "offset {offset} stop {stop} hint {hint}: removals {:?}",
                    r.removals
                );
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 68);
}
