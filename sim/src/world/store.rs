//! The simulated store: the in-memory model behind a latency (network to
//! the store's region plus service time), with outages, spurious conflicts,
//! and "commit result unknown" (applied or not, with equal odds). Every
//! commit that would apply is shown to the invariant checks first.

use actors::channel::ChannelInput;
use actors::membership::MembershipInput;
use actors::node::Local;
use actors::store::{StoreError, StoreOp, StoreReply, Txn};
use topology::{ChannelId, NodeId};

use super::events::{Ev, ForInc, Msg};
use super::trace_codes::store_op_code;
use super::World;
use crate::checks::Seen;

/// Where a store reply goes: the membership machine, or one channel
/// machine instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplyTo {
    Membership,
    Channel(ChannelId, u64),
}

/// A store operation on its way.
#[derive(Clone, Debug)]
pub(super) struct StoreCall {
    from: Caller,
    op: StoreOp,
}

/// Who sent a store operation, and where its reply goes.
#[derive(Clone, Copy, Debug)]
struct Caller {
    node: NodeId,
    inc: u32,
    reply_to: ReplyTo,
    op_id: u64,
    /// For a channel's commit: (channel, epoch), checked by invariant 5.
    fence: Option<(ChannelId, u64)>,
}

impl World {
    fn store_latency(&mut self, node: NodeId) -> u64 {
        let r = self.nodes[node.index()].region;
        u64::from(self.topo.latency(r, self.sc.world.store_region))
            + self.sc.world.store_service_ms
            + self.faults.store_slow_ms
            + self.rng.below(self.sc.world.jitter_ms + 1)
    }

    pub(super) fn store_reachable(&self, node: NodeId) -> bool {
        let r = self.nodes[node.index()].region;
        !self.faults.store_outage && !self.region_blocked(r, self.sc.world.store_region)
    }

    pub(super) fn send_store(
        &mut self,
        node: NodeId,
        reply_to: ReplyTo,
        op_id: u64,
        op: StoreOp,
        fence: Option<(ChannelId, u64)>,
    ) {
        self.stats.store_ops += 1;
        let inc = self.nodes[node.index()].inc;
        let lat = self.store_latency(node);
        let from = Caller {
            node,
            inc,
            reply_to,
            op_id,
            fence,
        };
        let call = StoreCall { from, op };
        self.push(self.now_ms + lat, Ev::StoreArrive(call));
    }

    pub(super) fn store_arrive(&mut self, call: StoreCall) {
        let StoreCall { from, op } = call;
        let rel = self.rel_ms();
        self.trace
            .event(rel, from.node.0, "store-op", from.op_id, store_op_code(&op));
        if !self.store_reachable(from.node) {
            // The client hears nothing and gives up after its timeout.
            let reply = StoreReply::Failed(StoreError::Unavailable("store unreachable".into()));
            self.push_reply(from, reply, self.now_ms + 1_000);
            return;
        }
        // A commit is taken whole, so that its values move into the store.
        let reply = match op {
            StoreOp::Commit(txn) => match self.commit(from, txn) {
                Some(r) => r,
                None => return, // an invariant broke: the run stops
            },
            // The commit as any other, then the reads after it.
            StoreOp::CommitGet { txn, keys } => match actors::store::check_get(&keys) {
                Err(e) => StoreReply::Failed(e),
                Ok(()) => match self.commit(from, txn) {
                    Some(StoreReply::Committed(version)) => StoreReply::CommittedGot {
                        version,
                        entries: keys.iter().map(|k| self.store.get(k)).collect(),
                    },
                    Some(failed) => failed,
                    None => return, // an invariant broke: the run stops
                },
            },
            other => self.store.apply(&other),
        };
        let at = self.now_ms + self.store_latency(from.node);
        self.push_reply(from, reply, at);
    }

    fn commit(&mut self, from: Caller, txn: Txn) -> Option<StoreReply> {
        if let Err(e) = actors::store::check_txn(&txn) {
            return Some(StoreReply::Failed(e));
        }
        if self.rng.chance(self.sc.world.store_conflict_ppm) {
            return Some(StoreReply::Failed(StoreError::Conflict {
                check_index: None,
            }));
        }
        if self.rng.chance(self.faults.unknown_ppm) {
            self.stats.commit_unknowns += 1;
            if self.rng.chance(500_000) {
                self.apply_commit(from, txn)?;
            }
            return Some(StoreReply::Failed(StoreError::CommitUnknown));
        }
        self.apply_commit(from, txn)
    }

    /// Applies `txn` if its checks hold, after the invariant checks saw it;
    /// `None` if they found a violation.
    fn apply_commit(&mut self, from: Caller, txn: Txn) -> Option<StoreReply> {
        let rel = self.rel_ms();
        if let Err(e) = self.store.check(&txn.checks) {
            return Some(StoreReply::Failed(e));
        }
        let seen = Seen {
            topo: &self.topo,
            truth: &self.truth,
            store: &self.store,
            fence: from.fence.map(|(ch, epoch)| (ch, from.node, epoch)),
            writer: from.node,
            now_ms: self.now_ms,
            rel_ms: rel,
        };
        if let Err(v) = self.watch.before_apply(&seen, &txn) {
            self.fail(v);
            return None;
        }
        Some(StoreReply::Committed(self.store.write_evaluated(txn)))
    }

    fn push_reply(&mut self, from: Caller, reply: StoreReply, at: u64) {
        let op_id = from.op_id;
        let msg = match from.reply_to {
            ReplyTo::Membership => Msg::Local(Local::Membership(MembershipInput::StoreReply {
                op_id,
                reply,
            })),
            ReplyTo::Channel(ch, gen) => {
                Msg::ChannelGen(ch, gen, ChannelInput::StoreReply { op_id, reply })
            }
        };
        let deliver = Ev::Deliver {
            node: from.node,
            inc: ForInc::only(from.inc),
            msg,
        };
        self.push(at, deliver);
    }
}
