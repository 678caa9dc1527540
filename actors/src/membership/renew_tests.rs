//! The renewal carries the refresh: a quiet renewal period is one store
//! op, and a hint that pulls the refresh away from the renewal is
//! followed by the two going together again.

use super::hint_tests::a_and_b;
use super::*;
use crate::records::lease_key;
use crate::store::MemStore;

/// What one of A's store ops was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The renewal with the refresh's reads.
    RenewAndRefresh,
    /// The renewal alone.
    Renew,
    /// Point reads alone (a refresh, once claims are done).
    Get,
    Other,
}

fn kind(node: NodeId, op: &StoreOp) -> Kind {
    let renews = |t: &crate::store::Txn| {
        t.checks.is_empty()
            && t.writes.len() == 1
            && t.writes[0].key() == lease_key(node).as_slice()
    };
    match op {
        StoreOp::CommitGet { txn, .. } if renews(txn) => Kind::RenewAndRefresh,
        StoreOp::Commit(txn) if renews(txn) => Kind::Renew,
        StoreOp::Get(_) => Kind::Get,
        _ => Kind::Other,
    }
}

/// Runs A and B on one store in 10 ms steps until `until_ms`; A is told
/// at `hint_ms` that the members record changed. A's store ops, by when.
fn ops_of_a(until_ms: u64, hint_ms: Option<u64>) -> Vec<(u64, Kind)> {
    let mut store = MemStore::new();
    let (mut m, mut inbox) = a_and_b(MembershipParams::default());
    let mut ops = Vec::new();
    for step in 0..until_ms / 10 {
        let now = step * 10;
        if hint_ms == Some(now) {
            inbox.push((0, MembershipInput::MembersChanged { version: u64::MAX }));
        }
        for (i, mm) in m.iter().enumerate() {
            if mm.next_deadline().is_some_and(|d| d <= now) {
                inbox.push((i, MembershipInput::Tick));
            }
        }
        while let Some((i, input)) = inbox.pop() {
            let mut out = Vec::new();
            m[i].handle(now, input, &mut out);
            for e in out {
                if let MembershipEffect::Store { op_id, op } = e {
                    if i == 0 {
                        ops.push((now, kind(NodeId(0), &op)));
                    }
                    let reply = store.apply(&op);
                    inbox.push((i, MembershipInput::StoreReply { op_id, reply }));
                }
            }
        }
    }
    assert_eq!(m[0].phase(), MemberPhase::Member);
    ops
}

#[test]
fn a_quiet_period_is_one_store_op() {
    let renew_ms = MembershipParams::default().renew_ms;
    let ops = ops_of_a(20_000, None);
    let settled: Vec<Kind> = ops
        .iter()
        .filter(|(at, _)| *at >= 2_000)
        .map(|(_, k)| *k)
        .collect();
    assert!(
        settled.iter().all(|k| *k == Kind::RenewAndRefresh),
        "settled ops: {settled:?}"
    );
    // One a renewal period: the lease is renewed as often as before.
    let periods = (18_000 / renew_ms) as usize;
    assert!(
        settled.len().abs_diff(periods) <= 1,
        "{} renewals in {periods} periods",
        settled.len()
    );
}

#[test]
fn a_refresh_pulled_apart_by_a_hint_rejoins_the_renewal() {
    let renew_ms = MembershipParams::default().renew_ms;
    let hint_ms = 5_130;
    let ops = ops_of_a(20_000, Some(hint_ms));
    // The hint's refresh goes at once, alone.
    assert!(
        ops.contains(&(hint_ms, Kind::Get)),
        "no refresh at the hint: {ops:?}"
    );
    // By the next renewal the two are one op again, and stay so.
    let after: Vec<&(u64, Kind)> = ops
        .iter()
        .filter(|(at, _)| *at > hint_ms + renew_ms)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|(_, k)| *k == Kind::RenewAndRefresh),
        "after the hint: {after:?}"
    );
    // And no refresh period was longer than a renewal period.
    let refreshes: Vec<u64> = ops
        .iter()
        .filter(|(at, k)| *at >= 2_000 && matches!(k, Kind::RenewAndRefresh | Kind::Get))
        .map(|(at, _)| *at)
        .collect();
    assert!(refreshes.windows(2).all(|w| w[1] - w[0] <= renew_ms));
}
