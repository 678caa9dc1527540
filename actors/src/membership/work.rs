//! The membership machine's work slot, one op at a time: refreshing the
//! view (members, control generation, the watched peers' leases), removing
//! a peer whose lease stopped moving, reading control records, claiming
//! channels in batches, and the drain (mark draining, release everything,
//! leave).

use std::collections::{BTreeMap, BTreeSet};

use topology::{ChannelId, NodeId, Topology};

use crate::records::{
    lease_key, owner_key, ControlRecord, Key, MaintenanceRecord, MembersRecord, OwnerRecord,
    CONTROL_GEN_KEY, MEMBERS_KEY,
};
use crate::store::{
    prefix_end, Check, Entry, StoreError, StoreOp, StoreReply, Txn, Write, RANGE_LIMIT_MAX,
};

use super::{Hosted, MemberPhase, MembershipEffect, MembershipMachine, WorkOp};

/// What a refresh reads, by name.
struct RefreshReply {
    members: Option<Entry>,
    control_gen: Option<Entry>,
    /// The watched peers' leases, in the order asked.
    leases: Vec<Option<Entry>>,
}

impl RefreshReply {
    fn keys(watched: &[NodeId]) -> Vec<crate::store::Key> {
        let mut keys = Vec::with_capacity(2 + watched.len());
        keys.push(crate::store::key(MEMBERS_KEY));
        keys.push(crate::store::key(CONTROL_GEN_KEY));
        keys.extend(watched.iter().map(|n| lease_key(*n)));
        keys
    }

    fn read(entries: Vec<Option<Entry>>) -> RefreshReply {
        let mut it = entries.into_iter();
        RefreshReply {
            members: it.next().flatten(),
            control_gen: it.next().flatten(),
            leases: it.collect(),
        }
    }
}

impl MembershipMachine {
    pub(super) fn issue_work(
        &mut self,
        what: WorkOp,
        op: StoreOp,
        out: &mut Vec<MembershipEffect>,
    ) {
        assert!(self.work_op.is_none(), "one work op at a time");
        let op_id = self.next_op_id();
        self.work_op = Some((op_id, what));
        out.push(MembershipEffect::Store { op_id, op });
    }

    /// The peers this node watches: the next `monitors` members after it
    /// in the watch ring (wrapping around). The ring takes the members one
    /// region at a time in turn — each region's first node, then each
    /// region's second, and so on — so that a region's nodes, which fail
    /// together when the region does, are watched from other regions and
    /// all found expired within one lease. In id order (region by region)
    /// only the `monitors` nodes just past the last live one were watched:
    /// each removal brought the next ones into view with a fresh lease to
    /// wait out, and a 50-node region took 18 minutes to fail over
    /// (capacity-10m-chaos). One region: id order, as before.
    pub(super) fn watched(&self) -> Vec<NodeId> {
        let n = self.ring.len();
        let known = |x: &NodeId| x.index() < n;
        // Members are kept in id order (`MembersRecord::decode` refuses
        // any other): the last is the largest.
        debug_assert!(self.members.nodes.is_sorted(), "members in id order");
        if !known(&self.node) || !self.members.nodes.last().is_none_or(known) {
            return self.watched_by_sorting();
        }
        // The ring of the members (and this node) is the whole ring with
        // the others left out: walk it from this node, asking of each node
        // whether it is a member (a binary search), until `monitors` are
        // found -- usually the next few. Marking the members in a table of
        // the whole ring first cost an allocation and a pass over all of
        // them on every refresh (4.9 % of a steady capacity-10m hour's
        // instructions: BENCHMARKS "Fewer instructions, same decisions").
        let me = self.ring_pos[self.node.index()];
        let mut out = Vec::with_capacity(self.params.monitors);
        for i in 1..n {
            if out.len() == self.params.monitors {
                break;
            }
            let x = self.ring[(me + i) % n];
            if self.members.contains(x) {
                out.push(x);
            }
        }
        out
    }

    /// `watched` for a members record that names a node the topology does
    /// not have (a record from a larger fleet's config): the ring sorted
    /// afresh.
    pub(super) fn watched_by_sorting(&self) -> Vec<NodeId> {
        // Not a member yet (or any more): placed where it would be.
        let mut all = self.members.nodes.clone();
        if !all.contains(&self.node) {
            all.push(self.node);
        }
        let ring = watch_ring(&self.topo, &all);
        let me = ring
            .iter()
            .position(|n| *n == self.node)
            .expect("the ring holds this node");
        let others = ring.len() - 1;
        (1..=self.params.monitors.min(others))
            .map(|i| ring[(me + i) % ring.len()])
            .collect()
    }

    pub(super) fn on_work_reply(
        &mut self,
        now_ms: u64,
        what: WorkOp,
        reply: StoreReply,
        out: &mut Vec<MembershipEffect>,
    ) {
        match (what, reply) {
            (WorkOp::Refresh { watched }, StoreReply::Got(entries)) => {
                self.refreshed(now_ms, watched, RefreshReply::read(entries), out)
            }
            (WorkOp::Remove(n, next), StoreReply::Committed(version)) => {
                probe!(PeerRemoved);
                self.expired.remove(&n);
                let since = self.watch.remove(&n).map_or(now_ms, |(_, since)| since);
                out.push(MembershipEffect::NodeRemoved {
                    node: n,
                    silent_ms: now_ms.saturating_sub(since),
                });
                let to: Vec<NodeId> = next
                    .nodes
                    .iter()
                    .copied()
                    .filter(|m| *m != self.node)
                    .collect();
                out.push(MembershipEffect::TellMembersChanged { version, to });
                self.adopt_members(next, version, out);
            }
            (WorkOp::Remove(n, _), _) => {
                // Someone else changed the members record (perhaps removed
                // it, or another peer, first): look again before deciding.
                // The watch stays: if the lease moved, the refresh starts
                // it over; if not, the peer is still expired and goes out
                // at once (restarting it cost a whole lease when two peers
                // of one region died together: region-partition seed 253).
                probe!(RemoveRefused);
                self.expired.remove(&n);
                self.next_refresh_ms = now_ms;
            }
            (WorkOp::ReadControl, StoreReply::Range(entries)) => {
                self.controls_read(now_ms, entries, out)
            }
            (WorkOp::ReadOwners(channels), StoreReply::Got(entries)) => {
                self.owners_read(channels, entries, out)
            }
            (WorkOp::Claim(claims), StoreReply::Committed(_)) => self.claimed(claims, out),
            (WorkOp::Claim(claims), StoreReply::Failed(StoreError::CommitUnknown)) => {
                // It may have applied: read the owner records back first.
                self.unresolved_claims = claims;
            }
            (WorkOp::ResolveClaims(claims), StoreReply::Got(entries)) => {
                self.claims_resolved(claims, entries, out)
            }
            (WorkOp::ResolveClaims(claims), _) => {
                // Could not read back: try again, after a pause, before
                // anything else.
                self.unresolved_claims = claims;
                self.resolve_at_ms = now_ms + self.params.renew_ms / 4;
            }
            other => self.drain_reply(now_ms, other, out),
        }
    }

    /// The drain's replies, and any op that failed.
    fn drain_reply(
        &mut self,
        now_ms: u64,
        r: (WorkOp, StoreReply),
        out: &mut Vec<MembershipEffect>,
    ) {
        match r {
            (WorkOp::MarkDraining(next), StoreReply::Committed(version)) => {
                self.adopt_members(next, version, out);
                self.releases(out);
            }
            (WorkOp::Leave, StoreReply::Committed(_)) => {
                assert!(self.hosted.is_empty(), "a node leaves with nothing hosted");
                self.phase = MemberPhase::Drained;
                out.push(MembershipEffect::Drained);
            }
            (WorkOp::MarkDraining(_) | WorkOp::Leave, _) => {
                // The members record changed under this write: read it
                // again before the next try (nodes draining together would
                // otherwise retry with a version they know is stale).
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

    fn refreshed(
        &mut self,
        now_ms: u64,
        watched: Vec<NodeId>,
        r: RefreshReply,
        out: &mut Vec<MembershipEffect>,
    ) {
        let version = r.members.as_ref().map(|e| e.version).unwrap_or(0);
        // Unchanged since last time: nothing to decode. A record that does
        // not decode is not believed: the view stays as it was.
        if version != self.members_version || version == 0 {
            match r.members.as_ref().map(|e| MembersRecord::decode(&e.value)) {
                Some(Ok(m)) => self.adopt_members(m, version, out),
                None => self.adopt_members(MembersRecord::default(), 0, out),
                Some(Err(_)) => {}
            }
        }
        self.members_stale = false;
        self.just_refreshed = true;
        if now_ms.saturating_sub(self.last_refresh_ok_ms) > 2 * self.params.renew_ms {
            // This node could not see the store for a while, so peers could
            // not renew either: every watch starts over.
            if !self.watch.is_empty() {
                probe!(WatchReset);
            }
            self.watch.clear();
        }
        self.last_refresh_ok_ms = now_ms;
        let gen_version = r.control_gen.map(|e| e.version).unwrap_or(0);
        if self.control_gen_version != Some(gen_version) {
            self.control_gen_version = Some(gen_version);
            self.control_dirty = true;
        }
        self.watch_leases(now_ms, watched, r.leases);
    }

    /// A watched lease whose version has not moved for `lease_ms` on this
    /// node's clock has expired.
    fn watch_leases(&mut self, now_ms: u64, watched: Vec<NodeId>, leases: Vec<Option<Entry>>) {
        assert!(leases.len() <= watched.len(), "one lease per watched peer");
        for (n, e) in watched.iter().zip(leases) {
            let version = e.map(|e| e.version).unwrap_or(0);
            match self.watch.get(n) {
                Some((seen, since)) if *seen == version => {
                    // A node that is no longer a member (another watcher
                    // removed it since this refresh was asked) is not
                    // removed again.
                    if now_ms.saturating_sub(*since) >= self.params.lease_ms
                        && self.members.contains(*n)
                    {
                        self.expired.insert(*n);
                    }
                }
                _ => {
                    // A lease that moved is alive: not to be removed on an
                    // expiry seen before (one held for a maintenance
                    // window, or not removed yet).
                    self.watch.insert(*n, (version, now_ms));
                    self.expired.remove(n);
                }
            }
        }
        let current: BTreeSet<NodeId> = watched.into_iter().collect();
        self.watch.retain(|n, _| current.contains(n));
    }

    /// Control records for the fleet and for this node's channels, and
    /// the maintenance window.
    fn controls_read(&mut self, now_ms: u64, entries: Vec<Entry>, out: &mut Vec<MembershipEffect>) {
        self.control_dirty = false;
        // A range cut at its limit may have left the window out: absence
        // then proves nothing.
        let complete = entries.len() < RANGE_LIMIT_MAX;
        let mut window = None;
        for e in entries {
            match Key::parse(&e.key) {
                Some(Key::Maintenance) => {
                    window = Some(e);
                    continue;
                }
                Some(Key::Budget(ch)) => {
                    if self.hosted.contains_key(&ch) {
                        out.push(MembershipEffect::LimitRecord {
                            channel: ch,
                            entry: e,
                        });
                    }
                    continue;
                }
                Some(Key::QuotaLimits(p)) => {
                    for ch in self.hosted.keys() {
                        if self.topo.channel(*ch).project == p {
                            out.push(MembershipEffect::LimitRecord {
                                channel: *ch,
                                entry: e.clone(),
                            });
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let Ok(record) = ControlRecord::decode(&e.value) else {
                continue;
            };
            let version = e.version;
            let channel = match Key::parse(&e.key) {
                Some(Key::ControlAll) => None,
                Some(Key::Control(ch)) if self.hosted.contains_key(&ch) => Some(ch),
                _ => continue,
            };
            out.push(MembershipEffect::Control {
                channel,
                record,
                version,
            });
        }
        match window {
            Some(e) => self.maintenance_read(now_ms, &e),
            None if complete => {
                self.maintenance_until.clear();
                self.maintenance_version = 0;
            }
            None => {}
        }
    }

    /// A maintenance window, new since the last read, starts now on this
    /// node's clock; one already known keeps its end (a record that does
    /// not decode is not believed: the window stays as it was).
    fn maintenance_read(&mut self, now_ms: u64, e: &Entry) {
        if e.version == self.maintenance_version {
            return;
        }
        let Ok(w) = MaintenanceRecord::decode(&e.value) else {
            return;
        };
        probe!(MaintenanceRead);
        self.maintenance_version = e.version;
        let until = now_ms.saturating_add(w.duration_ms);
        self.maintenance_until = w.nodes.into_iter().map(|n| (n, until)).collect();
    }

    /// Whether `n` is inside a maintenance window now.
    fn in_maintenance(&self, n: NodeId, now_ms: u64) -> bool {
        !self.params.sabotage.no_maintenance
            && self
                .maintenance_until
                .get(&n)
                .is_some_and(|until| now_ms < *until)
    }

    /// Owner records of wanted channels: claim those that are free, or
    /// whose owner's process is gone.
    fn owners_read(
        &mut self,
        channels: Vec<ChannelId>,
        entries: Vec<Option<Entry>>,
        out: &mut Vec<MembershipEffect>,
    ) {
        assert_eq!(
            channels.len(),
            entries.len(),
            "one owner record per channel"
        );
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
            if self.claimable(owner) {
                claims.push((ch, version, owner.map(|o| o.epoch).unwrap_or(0)));
            } else {
                probe!(ClaimOwnerBusy);
            }
        }
        if !claims.is_empty() {
            self.claim(claims, out);
        }
    }

    /// Free, released, mine, or owned by a process that is gone (dead, or
    /// alive again as a later incarnation).
    fn claimable(&self, owner: Option<OwnerRecord>) -> bool {
        match owner {
            None | Some(OwnerRecord { node: None, .. }) => true,
            Some(OwnerRecord {
                node: Some(n),
                incarnation,
                ..
            }) => {
                let gone = self.members.incarnation_of(n) != Some(incarnation);
                if gone && n != self.node {
                    probe!(ClaimFromGoneOwner);
                }
                n == self.node || gone
            }
        }
    }

    /// One transaction on each owner record's version, bumping its epoch.
    fn claim(&mut self, claims: Vec<(ChannelId, u64, u64)>, out: &mut Vec<MembershipEffect>) {
        let mut txn = Txn::default();
        let mut epochs = Vec::new();
        for (ch, version, epoch) in claims {
            txn.checks.push(Check::VersionIs(owner_key(ch), version));
            let next = OwnerRecord {
                node: Some(self.node),
                epoch: epoch + 1,
                incarnation: self.incarnation,
            };
            assert!(next.epoch > epoch, "a claim moves the epoch on");
            txn.writes.push(Write::Put(owner_key(ch), next.encode()));
            epochs.push((ch, epoch + 1));
        }
        self.issue_work(WorkOp::Claim(epochs), StoreOp::Commit(txn), out);
    }

    fn claimed(&mut self, claims: Vec<(ChannelId, u64)>, out: &mut Vec<MembershipEffect>) {
        for (channel, epoch) in claims {
            if self.hosted.contains_key(&channel) {
                continue; // claimed meanwhile (an unknown result read back late)
            }
            self.want.remove(&channel);
            let hosted = Hosted {
                epoch,
                releasing: false,
                holds_slot: false,
            };
            assert!(
                self.hosted.insert(channel, hosted).is_none(),
                "claimed once"
            );
            out.push(MembershipEffect::StartChannel {
                channel,
                epoch,
                incarnation: self.incarnation,
            });
        }
        self.rescan_releases();
        self.releases(out);
    }

    /// The owner records of claims whose result was unknown: those that
    /// name this node at the claimed epoch and this incarnation applied.
    fn claims_resolved(
        &mut self,
        claims: Vec<(ChannelId, u64)>,
        entries: Vec<Option<Entry>>,
        out: &mut Vec<MembershipEffect>,
    ) {
        assert_eq!(claims.len(), entries.len(), "one owner record per claim");
        let mine = |e: &Option<Entry>, epoch: u64| {
            e.as_ref()
                .and_then(|e| OwnerRecord::decode(&e.value).ok())
                .is_some_and(|o| {
                    o.node == Some(self.node)
                        && o.epoch == epoch
                        && o.incarnation == self.incarnation
                })
        };
        let applied: Vec<(ChannelId, u64)> = claims
            .into_iter()
            .zip(&entries)
            .filter(|((_, epoch), e)| mine(e, *epoch))
            .map(|(c, _)| c)
            .collect();
        if applied.is_empty() {
            probe!(ClaimNotApplied);
        } else {
            probe!(ClaimAppliedAfterAll);
            self.claimed(applied, out);
        }
    }

    /// The next op of the work slot, in priority order: read back claims
    /// of unknown result, remove an expired peer, the drain's next step, a
    /// refresh when due, control records, claims.
    pub(super) fn next_work(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) {
        assert!(self.work_op.is_none());
        if !self.unresolved_claims.is_empty() {
            if now_ms < self.resolve_at_ms {
                return; // the step wakes the machine at `resolve_at_ms`
            }
            let claims = std::mem::take(&mut self.unresolved_claims);
            let keys = claims.iter().map(|(c, _)| owner_key(*c)).collect();
            self.issue_work(WorkOp::ResolveClaims(claims), StoreOp::Get(keys), out);
            return;
        }
        if self.remove_expired(now_ms, out) {
            return;
        }
        if self.phase == MemberPhase::Draining && !self.members_stale && self.drain_step(out) {
            return;
        }
        // Another op gets a turn after each refresh, or a store further
        // away than the refresh period would leave no room for any.
        let refreshed_last = std::mem::take(&mut self.just_refreshed);
        if now_ms >= self.next_refresh_ms && !refreshed_last {
            self.refresh(now_ms, out);
            return;
        }
        if self.control_dirty {
            let start = crate::store::key(b"k/");
            let end = prefix_end(&start);
            let range = StoreOp::Range {
                start,
                end,
                limit: RANGE_LIMIT_MAX,
            };
            self.issue_work(WorkOp::ReadControl, range, out);
            return;
        }
        if self.phase == MemberPhase::Member {
            if self.releases_due {
                self.releases(out);
            }
            if !self.claims_round_done {
                self.next_claims(out);
            }
        }
    }

    /// Removes an expired peer, checked against the lease version seen (a
    /// peer that renewed meanwhile is not removed), unless it is inside a
    /// maintenance window; true if one went out.
    fn remove_expired(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) -> bool {
        // Control records changed since they were read: the maintenance
        // window among them may hold this removal back, so read them first.
        if self.control_dirty && !self.expired.is_empty() {
            probe!(RemovalAfterControlRead);
            return false;
        }
        let Some(n) = self
            .expired
            .iter()
            .copied()
            .find(|n| !self.in_maintenance(*n, now_ms))
        else {
            if !self.expired.is_empty() {
                probe!(RemovalHeldForMaintenance);
            }
            return false;
        };
        assert_ne!(n, self.node, "a node never removes itself for a lease");
        let lease_version = self.watch.get(&n).map(|(v, _)| *v).unwrap_or(0);
        let mut next = self.members.clone();
        next.remove(n);
        next.generation += 1;
        let txn = Txn {
            checks: vec![
                Check::VersionIs(crate::store::key(MEMBERS_KEY), self.members_version),
                Check::VersionIs(lease_key(n), lease_version),
            ],
            writes: vec![Write::Put(crate::store::key(MEMBERS_KEY), next.encode())],
        };
        self.issue_work(WorkOp::Remove(n, next), StoreOp::Commit(txn), out);
        true
    }

    /// Draining: mark this node draining, release every channel, and once
    /// none is hosted, leave; true if an op went out.
    fn drain_step(&mut self, out: &mut Vec<MembershipEffect>) -> bool {
        if !self.members.is_draining(self.node) {
            let mut next = self.members.clone();
            let at = next.draining.partition_point(|n| *n < self.node);
            next.draining.insert(at, self.node);
            next.generation += 1;
            let txn = Txn {
                checks: vec![Check::VersionIs(
                    crate::store::key(MEMBERS_KEY),
                    self.members_version,
                )],
                writes: vec![Write::Put(crate::store::key(MEMBERS_KEY), next.encode())],
            };
            self.issue_work(WorkOp::MarkDraining(next), StoreOp::Commit(txn), out);
            return true;
        }
        self.releases(out);
        if !self.hosted.is_empty() {
            return false;
        }
        // (The leave is checked against the members version: if it moved,
        // the leave is refused and the record read again first. It does
        // not wait for a refresh to be due, which a store further away
        // than a refresh period would never allow: swarm seed 185.)
        let mut next = self.members.clone();
        next.remove(self.node);
        next.generation += 1;
        let txn = Txn {
            checks: vec![Check::VersionIs(
                crate::store::key(MEMBERS_KEY),
                self.members_version,
            )],
            writes: vec![
                Write::Put(crate::store::key(MEMBERS_KEY), next.encode()),
                Write::Delete(lease_key(self.node)),
            ],
        };
        self.issue_work(WorkOp::Leave, StoreOp::Commit(txn), out);
        true
    }

    /// Reads the members, the control generation and the watched leases;
    /// a new claims round starts with it.
    ///
    /// When the renewal is due too and its slot is free, both go as one
    /// `CommitGet`: two of the five events of a quiet renewal period in
    /// the simulator (its ticks, two ops, two replies), and two of the
    /// store's operations, are gone (BENCHMARKS: "The renewal carries the
    /// refresh"). The next refresh is due when the next renewal is, if
    /// that comes within `renew_ms`, so that the two stay together after
    /// a hint, a failure or a busy work slot pulled them apart: refreshes
    /// come no less often than before, and sooner only then.
    fn refresh(&mut self, now_ms: u64, out: &mut Vec<MembershipEffect>) {
        let watched = self.watched();
        let keys = RefreshReply::keys(&watched);
        let what = WorkOp::Refresh { watched };
        if self.lease_op.is_none() && now_ms >= self.next_renew_ms {
            self.renew_with(now_ms, what, keys, out);
        } else {
            self.issue_work(what, StoreOp::Get(keys), out);
        }
        self.next_refresh_ms = now_ms + self.params.renew_ms;
        if self.next_renew_ms > now_ms {
            self.next_refresh_ms = self.next_refresh_ms.min(self.next_renew_ms);
        }
        assert!(
            self.next_refresh_ms > now_ms && self.next_refresh_ms <= now_ms + self.params.renew_ms,
            "a refresh is due again within a renewal period"
        );
        self.claims_round_done = self.want.is_empty();
        self.claim_cursor = None;
    }

    /// The next batch of wanted channels whose owners to read. Channels
    /// whose owner has not released yet are asked again in the next round,
    /// not in a tight loop.
    fn next_claims(&mut self, out: &mut Vec<MembershipEffect>) {
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

/// `members` in watch-ring order. Each node's place is fixed by the
/// cluster config: its rank within its region, spread evenly over the
/// ring (rank `r` of a region of `n` nodes at `(2r + 1) / 2n`; regions
/// of equal size then simply take turns), then region, then id. Fixed:
/// removing a node moves no other node, so no other node gets new
/// watchers and a fresh lease to wait out; spread: a large region's nodes
/// are interleaved with the small regions' instead of left in one run at
/// the end. See `watched`.
pub(super) fn watch_ring(topo: &Topology, members: &[NodeId]) -> Vec<NodeId> {
    let mut size: BTreeMap<u16, u64> = BTreeMap::new();
    for d in &topo.nodes {
        *size.entry(d.region.0).or_default() += 1;
    }
    let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
    // (numerator, denominator, region) of each node's place, by id.
    let places: Vec<(u64, u64, u16)> = topo
        .nodes
        .iter()
        .map(|d| {
            let rank = seen.entry(d.region.0).or_default();
            let place = (2 * *rank + 1, 2 * size[&d.region.0], d.region.0);
            *rank += 1;
            place
        })
        .collect();
    let mut keyed: Vec<((u64, u64, u16), NodeId)> = members
        .iter()
        .map(|n| {
            let place = places.get(n.index()).copied().unwrap_or((1, 1, u16::MAX));
            (place, *n)
        })
        .collect();
    keyed.sort_unstable_by(|((na, da, ra), a), ((nb, db, rb), b)| {
        (u128::from(*na) * u128::from(*db))
            .cmp(&(u128::from(*nb) * u128::from(*da)))
            .then(ra.cmp(rb))
            .then(a.cmp(b))
    });
    keyed.into_iter().map(|(_, n)| n).collect()
}
