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
//! in id order; a lease whose version has not moved for `lease_ms` of the
//! watcher's own clock is expired, and the watcher removes that node from the
//! members record with a transaction checked against the lease version it
//! saw. Only durations on one clock are compared, so clock offsets between
//! nodes do no harm; `drift_margin_ms` covers clock rate differences.
//!
//! Architecture invariant: a channel is claimed only when its owner record is
//! absent, released, or names a node that is no longer a member, and the
//! claim is a transaction on the owner record's version that bumps the epoch.
//! So at most one node owns a channel in any epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use topology::{placement, ChannelId, NodeId, Topology};

use crate::records::*;
use crate::rng::SeededRng;
use crate::store::{prefix_end, Check, Entry, StoreOp, StoreReply, Txn, Write};

#[derive(Clone, Copy, Debug)]
pub struct MembershipParams {
    pub lease_ms: u64,
    pub renew_ms: u64,
    /// How many successors each node watches.
    pub monitors: usize,
    /// Channels claimed per transaction.
    pub claim_batch: usize,
    /// Taken off the lease's validity for clock rate differences.
    pub drift_margin_ms: u64,
}

impl Default for MembershipParams {
    fn default() -> Self {
        MembershipParams {
            lease_ms: 2_000,
            renew_ms: 500,
            monitors: 2,
            claim_batch: 64,
            drift_margin_ms: 200,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// A peer's lease expired and this node removed it.
    NodeRemoved(NodeId),
    Drained,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberPhase {
    Joining,
    Member,
    Draining,
    Drained,
}

#[derive(Clone, Debug)]
enum LeaseOp {
    ReadSelf,
    Join { sent_ms: u64 },
    Renew { sent_ms: u64 },
}

#[derive(Clone, Debug)]
enum WorkOp {
    Refresh { watched: Vec<NodeId> },
    Remove(NodeId, MembersRecord),
    ReadControl,
    ReadOwners(Vec<ChannelId>),
    Claim(Vec<(ChannelId, u64)>),
    MarkDraining(MembersRecord),
    Leave,
}

#[derive(Clone, Copy, Debug)]
struct Hosted {
    epoch: u64,
    releasing: bool,
}

pub struct MembershipMachine {
    topo: Arc<Topology>,
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
    /// When a refresh last succeeded: after a gap (this node could not see
    /// the store) every watch starts over, since peers could not renew either.
    last_refresh_ok_ms: u64,
    hosted: BTreeMap<ChannelId, Hosted>,
    want: BTreeSet<ChannelId>,
    /// Placeable members by region, from the current view.
    live_by_region: Vec<Vec<NodeId>>,
    /// The view changed since hosted channels were last checked.
    releases_due: bool,
    /// A members write of this node's own (drain mark, leave) was refused:
    /// the record changed under it, so it is read again before the next
    /// try. Without this, nodes draining together retry with the version
    /// they already know is stale, and none of them ever gets through.
    members_stale: bool,
    /// Claims go through `want` in batches once per refresh round.
    claim_cursor: Option<ChannelId>,
    claims_round_done: bool,
    deadline: Option<u64>,
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
        MembershipMachine {
            topo,
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
            last_refresh_ok_ms: 0,
            hosted: BTreeMap::new(),
            want: BTreeSet::new(),
            live_by_region: Vec::new(),
            releases_due: false,
            claim_cursor: None,
            claims_round_done: false,
            members_stale: false,
            deadline: None,
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
    pub fn lease_valid_until_ms(&self) -> u64 {
        self.lease_valid_until_ms
    }
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    pub fn handle(&mut self, now_ms: u64, input: MembershipInput, out: &mut Vec<MembershipEffect>) {
        match input {
            MembershipInput::Start => self.started = true,
            MembershipInput::Tick => {}
            MembershipInput::StoreReply { op_id, reply } => {
                self.on_reply(now_ms, op_id, reply, out)
            }
            MembershipInput::ChannelStopped(ch) => {
                self.hosted.remove(&ch);
                if self.phase == MemberPhase::Member
                    && placement::owner_among(&self.topo, ch, &self.live_by_region)
                        == Some(self.node)
                {
                    self.want.insert(ch);
                }
            }
            MembershipInput::PeerUnreachable(n) => {
                if let Some((_, since)) = self.watch.get(&n) {
                    let due = (*since + self.params.lease_ms).max(now_ms);
                    self.next_refresh_ms = self.next_refresh_ms.min(due);
                }
            }
            MembershipInput::Drain => match self.phase {
                MemberPhase::Member => self.phase = MemberPhase::Draining,
                // Not (or no longer) a member and hosting nothing: already
                // where a drain ends. Joining first would forget the drain.
                MemberPhase::Joining => {
                    probe!(DrainWhileJoining);
                    self.hosted.clear();
                    self.phase = MemberPhase::Drained;
                    out.push(MembershipEffect::Drained);
                }
                MemberPhase::Draining | MemberPhase::Drained => {}
            },
        }
        self.step(now_ms, out);
    }

    fn issue_lease(&mut self, what: LeaseOp, op: StoreOp, out: &mut Vec<MembershipEffect>) {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        self.lease_op = Some((op_id, what));
        out.push(MembershipEffect::Store { op_id, op });
    }

    fn issue_work(&mut self, what: WorkOp, op: StoreOp, out: &mut Vec<MembershipEffect>) {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        self.work_op = Some((op_id, what));
        out.push(MembershipEffect::Store { op_id, op });
    }

    fn lease_record(&self) -> LeaseRecord {
        LeaseRecord {
            incarnation: self.incarnation,
            renewals: self.renewals,
        }
    }

    fn adopt_members(
        &mut self,
        members: MembersRecord,
        version: u64,
        out: &mut Vec<MembershipEffect>,
    ) {
        if version == self.members_version && members == self.members {
            return;
        }
        self.members = members;
        self.members_version = version;
        self.expired.retain(|n| self.members.contains(*n));
        let mut live = vec![false; self.topo.nodes.len()];
        for n in &self.members.nodes {
            if let Some(slot) = live.get_mut(n.index()) {
                *slot = !self.members.is_draining(*n);
            }
        }
        self.live_by_region = placement::live_by_region(&self.topo, &live);
        self.releases_due = true;
        out.push(MembershipEffect::View(self.members.clone()));
        if matches!(self.phase, MemberPhase::Member | MemberPhase::Draining)
            && !self.members.contains(self.node)
        {
            // Declared dead while alive (partitioned from the store): every
            // channel here is fenced already. Start over as a new incarnation
            // -- unless the node was draining: then it is out and hosts
            // nothing, which is all a drain asks, so it stops there instead
            // of rejoining and forgetting that it was asked to go.
            out.push(MembershipEffect::DropAllChannels);
            self.hosted.clear();
            self.lease_op = None;
            if self.phase == MemberPhase::Draining {
                probe!(DeclaredDeadWhileDraining);
                self.phase = MemberPhase::Drained;
                out.push(MembershipEffect::Drained);
            } else {
                probe!(DeclaredDead);
                self.phase = MemberPhase::Joining;
            }
        }
        self.recompute_want();
    }

    /// The channels placement gives this node that it does not host yet,
    /// and release requests for hosted channels placement moved away.
    fn recompute_want(&mut self) {
        self.want.clear();
        if self.phase != MemberPhase::Member {
            return;
        }
        let my_region = self.topo.node(self.node).region;
        for ch in self.topo.channel_ids() {
            // Cheap first: the channel lands in its first allowed region
            // with live nodes; only if that is ours does hashing decide.
            let first_live = self.topo.channel(ch).allowed_regions().find(|r| {
                self.live_by_region
                    .get(r.index())
                    .is_some_and(|v| !v.is_empty())
            });
            if first_live != Some(my_region) {
                continue;
            }
            if placement::owner_among(&self.topo, ch, &self.live_by_region) == Some(self.node)
                && !self.hosted.contains_key(&ch)
            {
                self.want.insert(ch);
            }
        }
    }

    fn releases(&mut self, out: &mut Vec<MembershipEffect>) {
        self.releases_due = false;
        let draining = self.phase == MemberPhase::Draining;
        for (ch, h) in self.hosted.iter_mut() {
            if h.releasing {
                continue;
            }
            if draining
                || placement::owner_among(&self.topo, *ch, &self.live_by_region) != Some(self.node)
            {
                h.releasing = true;
                out.push(MembershipEffect::ReleaseChannel(*ch));
            }
        }
    }

    fn watched(&self) -> Vec<NodeId> {
        let others: Vec<NodeId> = self
            .members
            .nodes
            .iter()
            .copied()
            .filter(|n| *n != self.node)
            .collect();
        if others.is_empty() {
            return others;
        }
        let start = others.partition_point(|n| *n < self.node);
        (0..self.params.monitors.min(others.len()))
            .map(|i| others[(start + i) % others.len()])
            .collect()
    }

    fn on_reply(
        &mut self,
        now_ms: u64,
        op_id: u64,
        reply: StoreReply,
        out: &mut Vec<MembershipEffect>,
    ) {
        if let Some((id, _)) = &self.lease_op {
            if *id == op_id {
                let Some((_, what)) = self.lease_op.take() else {
                    return;
                };
                self.on_lease_reply(now_ms, what, reply, out);
                return;
            }
        }
        if let Some((id, _)) = &self.work_op {
            if *id == op_id {
                let Some((_, what)) = self.work_op.take() else {
                    return;
                };
                self.on_work_reply(now_ms, what, reply, out);
            }
        }
    }

    fn on_lease_reply(
        &mut self,
        now_ms: u64,
        what: LeaseOp,
        reply: StoreReply,
        out: &mut Vec<MembershipEffect>,
    ) {
        match (what, reply) {
            (LeaseOp::ReadSelf, StoreReply::Got(entries)) => {
                let mut it = entries.into_iter();
                let lease = it.next().flatten();
                let members = it.next().flatten();
                let previous = lease
                    .and_then(|e| LeaseRecord::decode(&e.value).ok())
                    .map(|l| l.incarnation)
                    .unwrap_or(0);
                self.incarnation = self.incarnation.max(previous) + 1;
                self.renewals = 0;
                let (m, v) = decode_members(members);
                self.members = m;
                self.members_version = v;
                let mut joined = self.members.clone();
                joined.join(self.node, self.incarnation);
                joined.generation += 1;
                let txn = Txn {
                    checks: vec![Check::VersionIs(MEMBERS_KEY.to_vec(), v)],
                    writes: vec![
                        Write::Put(lease_key(self.node), self.lease_record().encode()),
                        Write::Put(MEMBERS_KEY.to_vec(), joined.encode()),
                    ],
                };
                self.issue_lease(LeaseOp::Join { sent_ms: now_ms }, StoreOp::Commit(txn), out);
            }
            (LeaseOp::Join { sent_ms }, StoreReply::Committed(_)) => {
                self.phase = MemberPhase::Member;
                self.lease_valid_until_ms =
                    sent_ms + self.params.lease_ms - self.params.drift_margin_ms;
                out.push(MembershipEffect::LeaseValidUntil(self.lease_valid_until_ms));
                self.next_renew_ms = now_ms + self.params.renew_ms;
                self.next_refresh_ms = now_ms;
                self.members_version = 0; // force the refresh to adopt the view
                self.control_gen_version = None;
            }
            (LeaseOp::Renew { sent_ms }, StoreReply::Committed(_)) => {
                self.lease_valid_until_ms =
                    sent_ms + self.params.lease_ms - self.params.drift_margin_ms;
                out.push(MembershipEffect::LeaseValidUntil(self.lease_valid_until_ms));
            }
            (LeaseOp::Renew { .. }, _) => {
                probe!(RenewFailed);
                // Try again soon; the lease runs out on its own if this keeps failing.
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

    fn on_work_reply(
        &mut self,
        now_ms: u64,
        what: WorkOp,
        reply: StoreReply,
        out: &mut Vec<MembershipEffect>,
    ) {
        match (what, reply) {
            (WorkOp::Refresh { watched }, StoreReply::Got(entries)) => {
                let mut it = entries.into_iter();
                let members = it.next().flatten();
                let control_gen = it.next().flatten();
                let version = members.as_ref().map(|e| e.version).unwrap_or(0);
                // Unchanged since last time: nothing to decode. A record that
                // does not decode is not believed: the view stays as it was.
                if version != self.members_version || version == 0 {
                    if let Some(Ok(m)) = members.as_ref().map(|e| MembersRecord::decode(&e.value)) {
                        self.adopt_members(m, version, out);
                    } else if members.is_none() {
                        self.adopt_members(MembersRecord::default(), 0, out);
                    }
                }
                self.members_stale = false;
                if now_ms.saturating_sub(self.last_refresh_ok_ms) > 2 * self.params.renew_ms {
                    if !self.watch.is_empty() {
                        probe!(WatchReset);
                    }
                    self.watch.clear();
                }
                self.last_refresh_ok_ms = now_ms;
                let gen_version = control_gen.map(|e| e.version).unwrap_or(0);
                if self.control_gen_version != Some(gen_version) {
                    self.control_gen_version = Some(gen_version);
                    self.control_dirty = true;
                }
                for (n, e) in watched.iter().zip(it) {
                    let version = e.map(|e| e.version).unwrap_or(0);
                    match self.watch.get(n) {
                        Some((seen, since)) if *seen == version => {
                            if now_ms.saturating_sub(*since) >= self.params.lease_ms {
                                self.expired.insert(*n);
                            }
                        }
                        _ => {
                            self.watch.insert(*n, (version, now_ms));
                        }
                    }
                }
                let current: BTreeSet<NodeId> = watched.into_iter().collect();
                self.watch.retain(|n, _| current.contains(n));
            }
            (WorkOp::Remove(n, next), StoreReply::Committed(version)) => {
                probe!(PeerRemoved);
                self.expired.remove(&n);
                self.watch.remove(&n);
                out.push(MembershipEffect::NodeRemoved(n));
                self.adopt_members(next, version, out);
            }
            (WorkOp::Remove(n, _), _) => {
                // Someone else changed the members record (perhaps removed
                // it first): look again before deciding.
                probe!(RemoveRefused);
                self.expired.remove(&n);
                self.watch.remove(&n);
                self.next_refresh_ms = now_ms;
            }
            (WorkOp::ReadControl, StoreReply::Range(entries)) => {
                self.control_dirty = false;
                for e in entries {
                    let Ok(record) = ControlRecord::decode(&e.value) else {
                        continue;
                    };
                    let version = e.version;
                    if e.key == CONTROL_ALL_KEY {
                        out.push(MembershipEffect::Control {
                            channel: None,
                            record,
                            version,
                        });
                    } else if let Some(ch) = channel_of_control_key(&e.key) {
                        if self.hosted.contains_key(&ch) {
                            out.push(MembershipEffect::Control {
                                channel: Some(ch),
                                record,
                                version,
                            });
                        }
                    }
                }
            }
            (WorkOp::ReadOwners(channels), StoreReply::Got(entries)) => {
                let mut claims = Vec::new();
                for (ch, e) in channels.into_iter().zip(entries) {
                    if self.hosted.contains_key(&ch) || !self.want.contains(&ch) {
                        continue;
                    }
                    let (owner, version) = match &e {
                        Some(e) => match OwnerRecord::decode(&e.value) {
                            Ok(o) => (Some(o), e.version),
                            Err(_) => continue, // corrupt: leave it for an operator
                        },
                        None => (None, 0),
                    };
                    let claimable = match owner {
                        None => true,
                        Some(OwnerRecord { node: None, .. }) => true,
                        Some(OwnerRecord {
                            node: Some(n),
                            incarnation,
                            ..
                        }) => {
                            // Mine, or its owner's process is gone: dead, or
                            // alive again as a later incarnation.
                            n == self.node || self.members.incarnation_of(n) != Some(incarnation)
                        }
                    };
                    if claimable {
                        if owner.is_some_and(|o| o.node.is_some_and(|n| n != self.node)) {
                            probe!(ClaimFromGoneOwner);
                        }
                        claims.push((ch, version, owner.map(|o| o.epoch).unwrap_or(0)));
                    } else {
                        probe!(ClaimOwnerBusy);
                    }
                }
                if !claims.is_empty() {
                    let mut txn = Txn::default();
                    let mut epochs = Vec::new();
                    for (ch, version, epoch) in claims {
                        txn.checks.push(Check::VersionIs(owner_key(ch), version));
                        let next = OwnerRecord {
                            node: Some(self.node),
                            epoch: epoch + 1,
                            incarnation: self.incarnation,
                        };
                        txn.writes.push(Write::Put(owner_key(ch), next.encode()));
                        epochs.push((ch, epoch + 1));
                    }
                    self.issue_work(WorkOp::Claim(epochs), StoreOp::Commit(txn), out);
                }
            }
            (WorkOp::Claim(claims), StoreReply::Committed(_)) => {
                for (channel, epoch) in claims {
                    self.want.remove(&channel);
                    self.hosted.insert(
                        channel,
                        Hosted {
                            epoch,
                            releasing: false,
                        },
                    );
                    out.push(MembershipEffect::StartChannel {
                        channel,
                        epoch,
                        incarnation: self.incarnation,
                    });
                }
                self.releases(out);
            }
            (WorkOp::MarkDraining(next), StoreReply::Committed(version)) => {
                self.adopt_members(next, version, out);
                self.releases(out);
            }
            (WorkOp::Leave, StoreReply::Committed(_)) => {
                self.phase = MemberPhase::Drained;
                out.push(MembershipEffect::Drained);
            }
            (WorkOp::MarkDraining(_) | WorkOp::Leave, _) => {
                probe!(MembersStale);
                self.members_stale = true;
                self.next_refresh_ms = now_ms;
            }
            (_, _) => {
                // Failed or conflicted: the next refresh shows what is true.
                self.next_refresh_ms = self.next_refresh_ms.min(now_ms + self.params.renew_ms / 2);
            }
        }
    }

    fn step(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) {
        if !self.started || self.phase == MemberPhase::Drained {
            self.deadline = None;
            return;
        }
        if self.phase == MemberPhase::Joining {
            if self.lease_op.is_none() && now_ms >= self.next_join_ms {
                self.issue_lease(
                    LeaseOp::ReadSelf,
                    StoreOp::Get(vec![lease_key(self.node), MEMBERS_KEY.to_vec()]),
                    out,
                );
            }
            self.deadline = Some(self.next_join_ms.max(now_ms + 1));
            if self.lease_op.is_some() {
                self.deadline = None;
            }
            return;
        }
        // Renew the lease on its own slot so claims never delay it.
        if self.lease_op.is_none() && now_ms >= self.next_renew_ms {
            self.renewals += 1;
            self.next_renew_ms = now_ms + self.params.renew_ms;
            let txn = Txn {
                checks: vec![],
                writes: vec![Write::Put(
                    lease_key(self.node),
                    self.lease_record().encode(),
                )],
            };
            self.issue_lease(
                LeaseOp::Renew { sent_ms: now_ms },
                StoreOp::Commit(txn),
                out,
            );
        }
        if self.work_op.is_none() {
            self.next_work(now_ms, out);
        }
        // An op in flight wakes the machine with its reply.
        let renew = self
            .lease_op
            .is_none()
            .then_some(self.next_renew_ms.max(now_ms + 1));
        let refresh = self
            .work_op
            .is_none()
            .then_some(self.next_refresh_ms.max(now_ms + 1));
        self.deadline = match (renew, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn next_work(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) {
        if let Some(n) = self.expired.iter().next().copied() {
            let lease_version = self.watch.get(&n).map(|(v, _)| *v).unwrap_or(0);
            let mut next = self.members.clone();
            next.remove(n);
            next.generation += 1;
            let txn = Txn {
                checks: vec![
                    Check::VersionIs(MEMBERS_KEY.to_vec(), self.members_version),
                    Check::VersionIs(lease_key(n), lease_version),
                ],
                writes: vec![Write::Put(MEMBERS_KEY.to_vec(), next.encode())],
            };
            self.issue_work(WorkOp::Remove(n, next), StoreOp::Commit(txn), out);
            return;
        }
        if self.phase == MemberPhase::Draining && !self.members_stale {
            if !self.members.is_draining(self.node) {
                let mut next = self.members.clone();
                let at = next.draining.partition_point(|n| *n < self.node);
                next.draining.insert(at, self.node);
                next.generation += 1;
                let txn = Txn {
                    checks: vec![Check::VersionIs(MEMBERS_KEY.to_vec(), self.members_version)],
                    writes: vec![Write::Put(MEMBERS_KEY.to_vec(), next.encode())],
                };
                self.issue_work(WorkOp::MarkDraining(next), StoreOp::Commit(txn), out);
                return;
            }
            self.releases(out);
            if self.hosted.is_empty() && now_ms < self.next_refresh_ms {
                let mut next = self.members.clone();
                next.remove(self.node);
                next.generation += 1;
                let txn = Txn {
                    checks: vec![Check::VersionIs(MEMBERS_KEY.to_vec(), self.members_version)],
                    writes: vec![
                        Write::Put(MEMBERS_KEY.to_vec(), next.encode()),
                        Write::Delete(lease_key(self.node)),
                    ],
                };
                self.issue_work(WorkOp::Leave, StoreOp::Commit(txn), out);
                return;
            }
        }
        if now_ms >= self.next_refresh_ms {
            self.next_refresh_ms = now_ms + self.params.renew_ms;
            let watched = self.watched();
            let mut keys = vec![MEMBERS_KEY.to_vec(), CONTROL_GEN_KEY.to_vec()];
            keys.extend(watched.iter().map(|n| lease_key(*n)));
            self.issue_work(WorkOp::Refresh { watched }, StoreOp::Get(keys), out);
            self.claims_round_done = self.want.is_empty();
            self.claim_cursor = None;
            return;
        }
        if self.control_dirty {
            let start = b"k/".to_vec();
            let end = prefix_end(&start);
            self.issue_work(
                WorkOp::ReadControl,
                StoreOp::Range {
                    start,
                    end,
                    limit: crate::store::RANGE_LIMIT_MAX,
                },
                out,
            );
            return;
        }
        if self.phase == MemberPhase::Member {
            if self.releases_due {
                self.releases(out);
            }
            if !self.claims_round_done {
                // Channels whose owner has not released yet are asked again
                // in the next round, not in a tight loop.
                let from = self
                    .claim_cursor
                    .map(|c| ChannelId(c.0 + 1))
                    .unwrap_or(ChannelId(0));
                let batch: Vec<ChannelId> = self
                    .want
                    .range(from..)
                    .copied()
                    .take(self.params.claim_batch)
                    .collect();
                match batch.last() {
                    None => {
                        self.claims_round_done = true;
                        self.claim_cursor = None;
                    }
                    Some(last) => {
                        self.claim_cursor = Some(*last);
                        let keys = batch.iter().map(|c| owner_key(*c)).collect();
                        self.issue_work(WorkOp::ReadOwners(batch), StoreOp::Get(keys), out);
                    }
                }
            }
        }
    }
}

fn decode_members(e: Option<Entry>) -> (MembersRecord, u64) {
    match e {
        Some(e) => match MembersRecord::decode(&e.value) {
            Ok(m) => (m, e.version),
            Err(_) => (MembersRecord::default(), e.version),
        },
        None => (MembersRecord::default(), 0),
    }
}

fn channel_of_control_key(key: &[u8]) -> Option<ChannelId> {
    let rest = key.strip_prefix(b"k/c/")?;
    let bytes: [u8; 4] = rest.try_into().ok()?;
    Some(ChannelId(u32::from_be_bytes(bytes)))
}

#[cfg(test)]
mod hint_tests {
    use super::*;
    use crate::store::MemStore;

    const TOPO: &str = r#"
[[regions]]
name = "r"
[[nodes]]
name = "a"
region = "r"
[[nodes]]
name = "b"
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
home_region = "r"
videos_per_day = 1
pipeline = "p"
project = "q"
"#;

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
    };

    fn removal(stop_ms: u64, hint: bool) -> (u64, u64) {
        let topo = Arc::new(topology::config::parse_topology(TOPO).expect("topology"));
        let params = PARAMS;
        let mut store = MemStore::new();
        let mut m = [
            MembershipMachine::new(Arc::clone(&topo), NodeId(0), params, 1),
            MembershipMachine::new(Arc::clone(&topo), NodeId(1), params, 2),
        ];
        let mut inbox: Vec<(usize, MembershipInput)> =
            vec![(0, MembershipInput::Start), (1, MembershipInput::Start)];
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
                        MembershipEffect::NodeRemoved(n) if i == 0 => {
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
}
