//! Situations scripted with the world's harness rather than drawn by a
//! swarm: each breaks one thing at one chosen moment.

use sim::scenario::Fault;
use sim::scenarios::builtin;
use sim::trace::Trace;
use sim::world::World;

/// Found by swarm seed 11150 (before parameters were varied): a node froze
/// right after sending the commit that reserves an upload; while it was
/// frozen another node took the channel over, looked the key up, found
/// nothing and published; when the frozen node thawed, the commit's answer
/// (success, from before the takeover) made it upload too. The answer
/// comes after the node's lease ran out, so it must not upload.
#[test]
fn a_reservation_answered_after_a_freeze_does_not_publish_again() {
    let mut w = World::new(builtin("steady", 1).expect("steady"), 1, Trace::new(None));
    let (node, ch) = loop {
        assert!(w.step(), "the run ended before any upload was reserved");
        if let Some(found) = w.find_channel(|m| m.publish_commit_in_flight()) {
            break found;
        }
    };
    // Frozen with the reservation in flight: the store applies it, the
    // answer waits for the node.
    w.inject(Fault::FreezeNode(node));
    let frozen_at = w.rel_ms();
    assert!(w.run_until(frozen_at + 120_000), "{:?}", w.violation);
    let others = w.hosts_of(ch);
    assert!(
        others.iter().any(|n| *n != node),
        "another node took {ch} over while {node} was frozen: {others:?}"
    );
    // Thawed: it hears the old answer first, with its lease long gone.
    w.inject(Fault::ThawNode(node));
    w.run();
    assert!(w.violation.is_none(), "{:?}", w.violation);
}
