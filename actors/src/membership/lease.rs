//! This node's lease: joining the members record as a new incarnation, and
//! renewing `l/<node>` every `renew_ms` on a slot of its own (so that
//! claims never delay it). The lease is valid from when a renewal was sent
//! for `lease_ms` less the drift margin, measured on this node's clock.

use crate::records::{lease_key, LeaseRecord, MembersRecord, MEMBERS_KEY};
use crate::store::{Check, Entry, Key, StoreOp, StoreReply, Txn, Write};

use super::{LeaseOp, MemberPhase, MembershipEffect, MembershipMachine, WorkOp};

/// What a joining node reads first, by name.
struct ReadSelfReply {
    lease: Option<Entry>,
    members: Option<Entry>,
}

impl ReadSelfReply {
    fn keys(m: &MembershipMachine) -> Vec<Key> {
        vec![lease_key(m.node), crate::store::key(MEMBERS_KEY)]
    }

    fn read(entries: Vec<Option<Entry>>) -> ReadSelfReply {
        let mut it = entries.into_iter();
        ReadSelfReply {
            lease: it.next().flatten(),
            members: it.next().flatten(),
        }
    }
}

/// A members record as stored (a corrupt one reads as empty, at its
/// version, so that a join overwrites it rather than wait forever).
pub(super) fn decode_members(e: Option<Entry>) -> (MembersRecord, u64) {
    match e {
        Some(e) => match MembersRecord::decode(&e.value) {
            Ok(m) => (m, e.version),
            Err(_) => (MembersRecord::default(), e.version),
        },
        None => (MembersRecord::default(), 0),
    }
}

impl MembershipMachine {
    pub(super) fn lease_record(&self) -> LeaseRecord {
        LeaseRecord {
            incarnation: self.incarnation,
            renewals: self.renewals,
        }
    }

    pub(super) fn issue_lease(
        &mut self,
        what: LeaseOp,
        op: StoreOp,
        out: &mut Vec<MembershipEffect>,
    ) {
        assert!(self.lease_op.is_none(), "one lease op at a time");
        let op_id = self.next_op_id();
        self.lease_op = Some((op_id, what));
        out.push(MembershipEffect::Store { op_id, op });
    }

    /// Joining: read this node's last lease and the members, then join.
    pub(super) fn step_joining(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) {
        assert_eq!(self.phase, MemberPhase::Joining);
        if self.lease_op.is_none() && now_ms >= self.next_join_ms {
            let keys = ReadSelfReply::keys(self);
            self.issue_lease(LeaseOp::ReadSelf, StoreOp::Get(keys), out);
        }
        self.deadline = if self.lease_op.is_some() {
            None
        } else {
            Some(self.next_join_ms.max(now_ms + 1))
        };
    }

    pub(super) fn issue_renew(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) {
        let txn = self.renewal(now_ms);
        let renew = LeaseOp::Renew { sent_ms: now_ms };
        self.issue_lease(renew, StoreOp::Commit(txn), out);
    }

    /// The renewal and the work slot's read of `keys` (a refresh) as one
    /// store op: both slots hold it, under one op id, and its reply is
    /// handed to each (`MembershipMachine::on_reply`).
    pub(super) fn renew_with(
        &mut self,
        now_ms: u64,
        work: WorkOp,
        keys: Vec<Key>,
        out: &mut Vec<MembershipEffect>,
    ) {
        assert!(
            self.lease_op.is_none() && self.work_op.is_none(),
            "both slots free"
        );
        let txn = self.renewal(now_ms);
        let op_id = self.next_op_id();
        self.lease_op = Some((op_id, LeaseOp::Renew { sent_ms: now_ms }));
        self.work_op = Some((op_id, work));
        out.push(MembershipEffect::Store {
            op_id,
            op: StoreOp::CommitGet {
                txn,
                keys: keys.into_boxed_slice(),
            },
        });
    }

    /// The next renewal's transaction: the lease record, its count moved on.
    fn renewal(&mut self, now_ms: u64) -> Txn {
        assert!(matches!(
            self.phase,
            MemberPhase::Member | MemberPhase::Draining
        ));
        self.renewals += 1;
        self.next_renew_ms = now_ms + self.params.renew_ms;
        Txn {
            checks: vec![],
            writes: vec![Write::Put(
                lease_key(self.node),
                self.lease_record().encode(),
            )],
        }
    }

    pub(super) fn on_lease_reply(
        &mut self,
        now_ms: u64,
        what: LeaseOp,
        reply: StoreReply,
        out: &mut Vec<MembershipEffect>,
    ) {
        match (what, reply) {
            (LeaseOp::ReadSelf, StoreReply::Got(entries)) => {
                self.join(now_ms, ReadSelfReply::read(entries), out)
            }
            (LeaseOp::Join { sent_ms }, StoreReply::Committed(_)) => {
                self.joined(now_ms, sent_ms, out)
            }
            (LeaseOp::Renew { sent_ms }, StoreReply::Committed(_)) => {
                self.lease_valid_from(sent_ms, out)
            }
            (LeaseOp::Renew { .. }, _) => {
                // Try again soon; the lease runs out on its own if this
                // keeps failing.
                probe!(RenewFailed);
                self.next_renew_ms = now_ms + self.params.renew_ms / 4;
            }
            (_, _) => {
                // Join failed or conflicted: read again after a jittered pause.
                probe!(JoinRetried);
                let pause = self.params.renew_ms / 4 + self.rng.below(self.params.renew_ms / 2 + 1);
                self.next_join_ms = now_ms + pause;
            }
        }
    }

    /// Joins as the next incarnation: the lease and the members record in
    /// one transaction on the members version just read.
    fn join(&mut self, now_ms: u64, r: ReadSelfReply, out: &mut Vec<MembershipEffect>) {
        let previous = r
            .lease
            .and_then(|e| LeaseRecord::decode(&e.value).ok())
            .map(|l| l.incarnation)
            .unwrap_or(0);
        self.incarnation = self.incarnation.max(previous) + 1;
        assert!(self.incarnation > previous, "a new incarnation");
        self.renewals = 0;
        let (m, v) = decode_members(r.members);
        self.members = m;
        self.members_version = v;
        let mut joined = self.members.clone();
        joined.join(self.node, self.incarnation);
        joined.generation += 1;
        let txn = Txn {
            checks: vec![Check::VersionIs(crate::store::key(MEMBERS_KEY), v)],
            writes: vec![
                Write::Put(lease_key(self.node), self.lease_record().encode()),
                Write::Put(crate::store::key(MEMBERS_KEY), joined.encode()),
            ],
        };
        let join = LeaseOp::Join { sent_ms: now_ms };
        self.issue_lease(join, StoreOp::Commit(txn), out);
    }

    fn joined(&mut self, now_ms: u64, sent_ms: u64, out: &mut Vec<MembershipEffect>) {
        self.phase = MemberPhase::Member;
        self.lease_valid_from(sent_ms, out);
        self.next_renew_ms = now_ms + self.params.renew_ms;
        self.next_refresh_ms = now_ms;
        self.members_version = 0; // force the refresh to adopt the view
        self.control_gen_version = None;
    }

    /// A renewal (or the join) sent at `sent_ms` committed.
    fn lease_valid_from(&mut self, sent_ms: u64, out: &mut Vec<MembershipEffect>) {
        let until = sent_ms + self.params.lease_ms - self.params.drift_margin_ms;
        assert!(until > sent_ms, "the drift margin is less than the lease");
        self.lease_valid_until_ms = self.lease_valid_until_ms.max(until);
        out.push(MembershipEffect::LeaseValidUntil(self.lease_valid_until_ms));
    }
}
