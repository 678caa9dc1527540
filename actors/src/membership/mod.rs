//! `MembershipMachine`: one node's lease, its view of the cluster, and the
//! claiming and releasing of channels.
//!
//! How to drive it: feed `Start`, then store replies by `op_id`, `Tick` at
//! `next_deadline()`, `ChannelStopped` when the shell has dropped a channel
//! machine (released or fenced), and `Drain` to hand everything away. Effects:
//! store ops, channels to start (with their new epoch) or release, the view
//! of the members, the lease's validity for the channel machines, control
//! records, and `Drained`.
//!
//! Failure detection is by lease only. Each node renews `l/<node>` every
//! `renew_ms` and watches the leases of the next `monitors` members after it
//! in the watch ring (regions taken in turn, so that a region's nodes are
//! watched from other regions: `work::watched`); a lease whose version has
//! not moved for `lease_ms` of the watcher's own clock is expired, and the
//! watcher removes that node from the members record with a transaction
//! checked against the lease version it saw. Only durations on one clock are compared, so clock offsets between
//! nodes do no harm; `drift_margin_ms` covers clock rate differences.
//!
//! Architecture invariant: a channel is claimed only when its owner record is
//! absent, released, or names a node that is no longer a member, and the
//! claim is a transaction on the owner record's version that bumps the epoch.
//! So at most one node owns a channel in any epoch.
//!
//! The files: `lease.rs` (joining and renewing), `view.rs` (adopting a
//! members record: placement, wanted and released channels), `work.rs`
//! (refreshing, removing expired peers, control records, claims, drain).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use topology::{placement, ChannelId, NodeId, Topology};

use crate::machine::Monotonic;
use crate::records::{ControlRecord, MembersRecord};
use crate::rng::SeededRng;
use crate::store::{StoreOp, StoreReply};

mod lease;
mod view;
mod work;

#[cfg(test)]
mod hint_tests;
#[cfg(test)]
mod members_hint_tests;
#[cfg(test)]
mod release_tests;
#[cfg(test)]
mod renew_tests;
#[cfg(test)]
mod ring_tests;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
pub struct MembershipParams {
    pub lease_ms: u64,
    pub renew_ms: u64,
    /// How many successors each node watches.
    pub monitors: usize,
    /// Channels claimed per transaction: a check and a put each, so 256
    /// make 512 operations, well within the 20,000 every store takes
    /// (etcd with `--max-txn-ops 20000`). Taking over 10,000 channels on
    /// a 3-member etcd: 64 a batch took 1.4–1.9 s of claiming, 256 took
    /// 0.8–1.3 s (BENCHMARKS "One live node at scale").
    pub claim_batch: usize,
    /// Taken off the lease's validity for clock rate differences.
    pub drift_margin_ms: u64,
    /// Off except in tests (`crate::sabotage`).
    #[serde(skip)]
    pub sabotage: crate::sabotage::Sabotage,
}

impl Default for MembershipParams {
    fn default() -> Self {
        MembershipParams {
            lease_ms: 2_000,
            renew_ms: 500,
            monitors: 2,
            claim_batch: 256,
            drift_margin_ms: 200,
            sabotage: crate::sabotage::Sabotage::OFF,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MembershipInput {
    Start,
    Tick,
    StoreReply {
        op_id: u64,
        reply: StoreReply,
    },
    ChannelStopped(ChannelId),
    Drain,
    /// The connection to a peer was lost: a hint, never a verdict. If the
    /// peer is watched, the next refresh is moved to the first moment its
    /// lease could have lapsed (instead of the next refresh tick), so a dead
    /// peer is removed up to `renew_ms` sooner when the lease is not a
    /// multiple of the refresh period or refreshes were delayed by other
    /// work; a live peer's lease keeps moving and nothing happens.
    PeerUnreachable(NodeId),
    /// A peer changed the members record to `version` (it removed a node
    /// whose lease expired): a hint, never a verdict. A node that knows
    /// an older record refreshes at once instead of at its next refresh
    /// tick, so every survivor starts claiming a dead node's channels
    /// within a store round trip of its removal, not up to `renew_ms`
    /// later; the record it reads decides, as at any refresh.
    MembersChanged {
        version: u64,
    },
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MembershipEffect {
    Store {
        op_id: u64,
        op: StoreOp,
    },
    StartChannel {
        channel: ChannelId,
        epoch: u64,
        incarnation: u64,
    },
    ReleaseChannel(ChannelId),
    /// This node was declared dead: drop every channel machine now.
    DropAllChannels,
    View(MembersRecord),
    LeaseValidUntil(u64),
    Control {
        channel: Option<ChannelId>,
        record: ControlRecord,
        version: u64,
    },
    /// An operator's budget or quota record for a hosted channel (or its
    /// project), read with the control records.
    LimitRecord {
        channel: ChannelId,
        entry: crate::store::Entry,
    },
    /// A peer's lease expired and this node removed it, after its lease
    /// had not moved for `silent_ms` on this node's clock.
    NodeRemoved {
        node: NodeId,
        silent_ms: u64,
    },
    /// Tell these members that the members record is now at `version`
    /// (`MembershipInput::MembersChanged` on their side).
    TellMembersChanged {
        version: u64,
        to: Vec<NodeId>,
    },
    Drained,
}

/// Hosted channels asked to release at once, at most: each release is a
/// commit in flight and the work its channel machine does to settle
/// (`view::releases`). As many as a claim takes (`claim_batch`'s default).
pub const RELEASES_IN_FLIGHT_MAX: usize = 256;

/// How long a release counts against `RELEASES_IN_FLIGHT_MAX`, at most. A
/// channel with an upload in flight releases only once the upload has
/// settled (minutes, for a long video): without this, a node hosting
/// more than the limit's worth of such channels would hand over none of
/// its others until they had. A release this old is waiting on
/// something other than its commit, so it gives its slot up: at most
/// the limit's worth of new releases go out per this period.
pub const RELEASE_SLOT_HELD_MS_MAX: u64 = 5_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberPhase {
    Joining,
    Member,
    Draining,
    Drained,
}

#[derive(Clone, Debug)]
pub(super) enum LeaseOp {
    ReadSelf,
    Join { sent_ms: u64 },
    Renew { sent_ms: u64 },
}

#[derive(Clone, Debug)]
pub(super) enum WorkOp {
    Refresh {
        watched: Vec<NodeId>,
    },
    Remove(NodeId, MembersRecord),
    ReadControl,
    ReadOwners(Vec<ChannelId>),
    Claim(Vec<(ChannelId, u64)>),
    /// Reading back claims whose commit result was unknown.
    ResolveClaims(Vec<(ChannelId, u64)>),
    MarkDraining(MembersRecord),
    Leave,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Hosted {
    epoch: u64,
    releasing: bool,
    /// Asked to release and counted against `RELEASES_IN_FLIGHT_MAX`
    /// (until it stops, or for `RELEASE_SLOT_HELD_MS_MAX`).
    holds_slot: bool,
}

/// A `CommitGet`'s reply as the commit's and the reads' (any other reply
/// as itself, twice).
fn split_commit_get(reply: StoreReply) -> (StoreReply, StoreReply) {
    match reply {
        StoreReply::CommittedGot { version, entries } => {
            (StoreReply::Committed(version), StoreReply::Got(entries))
        }
        other => (other.clone(), other),
    }
}

pub struct MembershipMachine {
    topo: Arc<Topology>,
    /// The watch ring of every node in the topology (`work::watch_ring`),
    /// computed once: a node's place in it depends only on the topology,
    /// so the ring of any set of members is this one with the others left
    /// out. Sorting the members at every refresh was a fifth of
    /// capacity-10m's time (200 nodes, each refreshing every 10 s).
    ring: Vec<NodeId>,
    /// Each topology node's position in `ring`, by node index.
    ring_pos: Vec<usize>,
    node: NodeId,
    params: MembershipParams,
    rng: SeededRng,
    phase: MemberPhase,
    started: bool,
    incarnation: u64,
    renewals: u64,
    lease_valid_until_ms: u64,
    members: MembersRecord,
    members_version: u64,
    control_gen_version: Option<u64>,
    control_dirty: bool,
    lease_op: Option<(u64, LeaseOp)>,
    work_op: Option<(u64, WorkOp)>,
    next_op_id: u64,
    next_renew_ms: u64,
    next_refresh_ms: u64,
    next_join_ms: u64,
    /// Watched leases: version and when this node first saw it.
    watch: BTreeMap<NodeId, (u64, u64)>,
    expired: BTreeSet<NodeId>,
    /// Nodes in an operator's maintenance window, and until when on this
    /// node's clock (counted from when it read the window): an expired
    /// lease of theirs is not removed before then.
    maintenance_until: BTreeMap<NodeId, u64>,
    /// The version of the maintenance record read (0: none).
    maintenance_version: u64,
    /// When a refresh last succeeded: after a gap (this node could not see
    /// the store) every watch starts over, since peers could not renew either.
    last_refresh_ok_ms: u64,
    hosted: BTreeMap<ChannelId, Hosted>,
    want: BTreeSet<ChannelId>,
    /// Placeable members by region, from the current view.
    live_by_region: Vec<Vec<NodeId>>,
    /// Hosted channels from `release_from` on may need a release request
    /// (the view changed, channels were claimed, a drain began, or the
    /// last scan stopped at `RELEASES_IN_FLIGHT_MAX`).
    releases_due: bool,
    /// Where the next scan for releases starts.
    release_from: ChannelId,
    /// Hosted channels holding a release slot (`Hosted::holds_slot`).
    release_slots_held: usize,
    /// Releases in the order they were asked (when, which channel, its
    /// epoch), for giving slots up after `RELEASE_SLOT_HELD_MS_MAX`;
    /// entries of channels that stopped are dropped as they reach the
    /// front.
    release_slots: VecDeque<(u64, ChannelId, u64)>,
    /// A members write of this node's own (drain mark, leave) was refused:
    /// the record changed under it, so it is read again before the next
    /// try. Without this, nodes draining together retry with the version
    /// they already know is stale, and none of them ever gets through.
    members_stale: bool,
    /// Claims go through `want` in batches once per refresh round.
    claim_cursor: Option<ChannelId>,
    claims_round_done: bool,
    /// A refresh answered and no other op has had its turn since.
    just_refreshed: bool,
    /// Claims whose commit result was unknown, to read back before any
    /// other work: an owner record naming this node that it does not know
    /// it holds would be held by nobody.
    unresolved_claims: Vec<(ChannelId, u64)>,
    /// A read-back that failed is retried no sooner than this, so a store
    /// that is down is not asked again at once, over and over.
    resolve_at_ms: u64,
    deadline: Option<u64>,
    /// Time only moves forward.
    clock: Monotonic,
}

impl MembershipMachine {
    pub fn new(
        topo: Arc<Topology>,
        node: NodeId,
        params: MembershipParams,
        seed: u64,
    ) -> MembershipMachine {
        assert!(
            params.renew_ms < params.lease_ms,
            "renew_ms {} must be less than lease_ms {}",
            params.renew_ms,
            params.lease_ms
        );
        let all: Vec<NodeId> = (0..topo.nodes.len())
            .map(|i| NodeId(u32::try_from(i).expect("node ids fit u32")))
            .collect();
        let ring = work::watch_ring(&topo, &all);
        let mut ring_pos = vec![0; ring.len()];
        for (pos, n) in ring.iter().enumerate() {
            ring_pos[n.index()] = pos;
        }
        MembershipMachine {
            topo,
            ring,
            ring_pos,
            node,
            params,
            rng: SeededRng::new(seed),
            phase: MemberPhase::Joining,
            started: false,
            incarnation: 0,
            renewals: 0,
            lease_valid_until_ms: 0,
            members: MembersRecord::default(),
            members_version: 0,
            control_gen_version: None,
            control_dirty: false,
            lease_op: None,
            work_op: None,
            next_op_id: 1,
            next_renew_ms: 0,
            next_refresh_ms: 0,
            next_join_ms: 0,
            watch: BTreeMap::new(),
            expired: BTreeSet::new(),
            maintenance_until: BTreeMap::new(),
            maintenance_version: 0,
            last_refresh_ok_ms: 0,
            hosted: BTreeMap::new(),
            want: BTreeSet::new(),
            live_by_region: Vec::new(),
            releases_due: false,
            release_from: ChannelId(0),
            release_slots_held: 0,
            release_slots: VecDeque::new(),
            claim_cursor: None,
            claims_round_done: false,
            members_stale: false,
            just_refreshed: false,
            unresolved_claims: Vec::new(),
            resolve_at_ms: 0,
            deadline: None,
            clock: Monotonic::default(),
        }
    }

    pub fn phase(&self) -> MemberPhase {
        self.phase
    }

    pub fn members(&self) -> &MembersRecord {
        &self.members
    }

    pub fn hosted(&self) -> impl Iterator<Item = (ChannelId, u64)> + '_ {
        self.hosted.iter().map(|(c, h)| (*c, h.epoch))
    }

    /// What the machine is doing, for people debugging a seed.
    pub fn describe(&self) -> String {
        format!(
            "membership of {} {:?} inc {}: hosted {:?}, want {:?}, lease op {:?}, work op {:?}, stale {}, refresh at {}, expired {:?}",
            self.node,
            self.phase,
            self.incarnation,
            self.hosted,
            self.want,
            self.lease_op,
            self.work_op,
            self.members_stale,
            self.next_refresh_ms,
            self.expired
        )
    }

    /// Store operations in flight (its lease slot and its work slot).
    pub fn ops_in_flight(&self) -> usize {
        usize::from(self.lease_op.is_some()) + usize::from(self.work_op.is_some())
    }

    pub fn lease_valid_until_ms(&self) -> u64 {
        self.lease_valid_until_ms
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Takes one input at `now_ms` (never earlier than the last).
    pub fn handle(&mut self, now_ms: u64, input: MembershipInput, out: &mut Vec<MembershipEffect>) {
        self.clock.advance(now_ms, "membership machine");
        match input {
            MembershipInput::Start => self.started = true,
            MembershipInput::Tick => {}
            MembershipInput::StoreReply { op_id, reply } => {
                self.on_reply(now_ms, op_id, reply, out)
            }
            MembershipInput::ChannelStopped(ch) => self.on_channel_stopped(ch),
            MembershipInput::PeerUnreachable(n) => self.on_peer_unreachable(now_ms, n),
            MembershipInput::MembersChanged { version } => self.on_members_changed(now_ms, version),
            MembershipInput::Drain => self.on_drain(out),
        }
        self.step(now_ms, out);
        assert!(
            self.phase != MemberPhase::Drained || self.hosted.is_empty(),
            "a drained node hosts nothing"
        );
    }

    /// A channel machine of this node stopped (released or fenced): it may
    /// be wanted again, under a new claim.
    fn on_channel_stopped(&mut self, ch: ChannelId) {
        if self.hosted.remove(&ch).is_some_and(|h| h.holds_slot) {
            assert!(
                self.release_slots_held > 0,
                "a release stopped that was counted"
            );
            self.release_slots_held -= 1;
        }
        if self.phase == MemberPhase::Member
            && placement::owns(&self.topo, ch, &self.live_by_region, self.node)
        {
            self.want.insert(ch);
        }
        assert!(!self.hosted.contains_key(&ch));
    }

    /// A hint: refresh at the first moment a watched peer's lease could
    /// have lapsed, never sooner.
    fn on_peer_unreachable(&mut self, now_ms: u64, n: NodeId) {
        if let Some((_, since)) = self.watch.get(&n) {
            let due = (*since + self.params.lease_ms).max(now_ms);
            assert!(due >= *since + self.params.lease_ms || due == now_ms);
            self.next_refresh_ms = self.next_refresh_ms.min(due);
        }
    }

    /// A hint: a peer wrote a members record newer than the one this node
    /// knows, so refresh now (after the op in flight).
    fn on_members_changed(&mut self, now_ms: u64, version: u64) {
        if self.phase == MemberPhase::Joining || version <= self.members_version {
            return;
        }
        probe!(MembersHinted);
        self.next_refresh_ms = self.next_refresh_ms.min(now_ms);
    }

    fn on_drain(&mut self, out: &mut Vec<MembershipEffect>) {
        match self.phase {
            MemberPhase::Member => {
                self.phase = MemberPhase::Draining;
                self.rescan_releases();
            }
            // Not (or no longer) a member and hosting nothing: already
            // where a drain ends. Joining first would forget the drain.
            MemberPhase::Joining => {
                probe!(DrainWhileJoining);
                self.hosted.clear();
                self.release_slots_held = 0;
                self.release_slots.clear();
                self.phase = MemberPhase::Drained;
                out.push(MembershipEffect::Drained);
            }
            MemberPhase::Draining | MemberPhase::Drained => {}
        }
        assert!(
            self.phase != MemberPhase::Member,
            "a drain is never forgotten"
        );
    }

    /// A store reply, for the lease op or the work op in flight.
    fn on_reply(
        &mut self,
        now_ms: u64,
        op_id: u64,
        reply: StoreReply,
        out: &mut Vec<MembershipEffect>,
    ) {
        let lease = self.lease_op.as_ref().is_some_and(|(id, _)| *id == op_id);
        let work = self.work_op.as_ref().is_some_and(|(id, _)| *id == op_id);
        match (
            self.lease_op.take_if(|_| lease),
            self.work_op.take_if(|_| work),
        ) {
            // A renewal that carried the refresh (`lease::renew_with`): the
            // lease hears of the commit first, then the work slot of the
            // reads, as if each had gone alone.
            (Some((_, renew)), Some((_, refresh))) => {
                let (committed, got) = split_commit_get(reply);
                self.on_lease_reply(now_ms, renew, committed, out);
                self.on_work_reply(now_ms, refresh, got, out);
            }
            (Some((_, what)), None) => {
                self.on_lease_reply(now_ms, what, split_commit_get(reply).0, out)
            }
            (None, Some((_, what))) => {
                self.on_work_reply(now_ms, what, split_commit_get(reply).1, out)
            }
            (None, None) => {}
        }
    }

    fn next_op_id(&mut self) -> u64 {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        assert!(self.next_op_id > op_id, "op ids only grow");
        op_id
    }

    fn step(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) {
        if !self.started || self.phase == MemberPhase::Drained {
            self.deadline = None;
            return;
        }
        if self.phase == MemberPhase::Joining {
            self.step_joining(now_ms, out);
            return;
        }
        // The work slot first: a refresh due with the renewal goes with it,
        // as one store round trip (`refresh`).
        if self.work_op.is_none() {
            self.next_work(now_ms, out);
        }
        // Renew the lease on its own slot so claims never delay it.
        if self.lease_op.is_none() && now_ms >= self.next_renew_ms {
            self.issue_renew(now_ms, out);
        }
        // An op in flight wakes the machine with its reply.
        let renew = self
            .lease_op
            .is_none()
            .then_some(self.next_renew_ms.max(now_ms + 1));
        let work_due_ms = if self.unresolved_claims.is_empty() {
            self.next_refresh_ms
        } else {
            self.resolve_at_ms
        };
        let refresh = self
            .work_op
            .is_none()
            .then_some(work_due_ms.max(now_ms + 1));
        self.deadline = match (renew, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        assert!(self.deadline.is_none_or(|d| d > now_ms));
    }
}
