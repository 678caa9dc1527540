//! Building the channel's next commit, and what a commit allows once it is
//! known to have applied. Every commit carries the fence (owner record and
//! channel record version) and the versions of the control records and
//! quota ledgers it was built on; it writes the channel record (with a new
//! `write_seq`), every changed video, and the ledgers its quota changes
//! touch. Work it carries (a job start, an upload, a lookup) becomes an
//! effect only once it is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::protocol::JobKind;
use crate::records::{
    active_key, channel_key, done_key, idempotency_key, owner_key, quota_key, FailReason,
    OwnerRecord, QuotaRecord, VideoRecord, VideoStatus,
};
use crate::store::{Check, StoreOp, Txn, Write};

use super::store_io::{InFlight, PendingCommit};
use super::video::{Action, QuotaChange, Run};
use super::{
    ChannelEffect, ChannelMachine, Phase, HELD_DEADLINE_MS, LATE_REPLY_MS, LEASE_MARGIN_MS,
};

/// Quota changes applied to the cached ledgers while a commit is built.
#[derive(Default)]
struct QuotaPlan {
    ledgers: BTreeMap<u64, QuotaRecord>,
    undo: Vec<VideoRecord>,
    applied: Vec<QuotaChange>,
}

impl ChannelMachine {
    /// Writes what changed, with the work that waits for it, if anything
    /// did; first reads any quota ledger a change needs.
    pub(super) fn build_commit(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        assert!(self.inflight.is_none(), "one store op at a time");
        let release = self.phase == Phase::Releasing && !self.uploads_in_flight();
        if self.phase == Phase::Releasing && !release {
            probe!(ReleaseWaitsForUpload);
        }
        let nothing = self.dirty.is_empty()
            && !self.chan_dirty
            && self.actions.is_empty()
            && self.quota_changes.is_empty();
        if nothing && !release {
            return;
        }
        if self.read_missing_ledgers(now_ms, out) {
            return;
        }
        let mut actions = std::mem::take(&mut self.actions);
        let plan = self.plan_quota(now_ms, &mut actions);
        let release = release && actions.is_empty();
        // Sized up front (growing them a push at a time was 0.5 % of a
        // steady capacity-10m hour's instructions): the writes are the
        // channel record, at most two per changed video (an active record
        // deleted, a done one put), the ledgers, and a released owner.
        let mut txn = Txn {
            checks: self.fence_checks(plan.ledgers.len()),
            writes: Vec::with_capacity(2 + 2 * self.dirty.len() + plan.ledgers.len()),
        };
        for day in plan.ledgers.keys() {
            let version = self.quota_cache.get(day).map(|(_, v)| *v).unwrap_or(0);
            let key = quota_key(self.project(), *day);
            txn.checks.push(Check::VersionIs(key, version));
        }
        self.chan.write_seq += 1;
        let seq = self.chan.write_seq;
        let slots = self.write_records(&mut txn, &plan, release);
        self.chan_dirty = false;
        let pending = PendingCommit {
            seq,
            slots,
            actions,
            quota: plan.applied,
            undo: plan.undo,
            quota_after: plan.ledgers.into_iter().collect(),
            release,
            sent_ms: now_ms,
        };
        assert!(
            !txn.writes.is_empty(),
            "a commit writes at least its channel record"
        );
        self.issue(
            InFlight::Commit(Box::new(pending)),
            StoreOp::Commit(txn),
            out,
        );
    }

    pub(super) fn uploads_in_flight(&self) -> bool {
        self.videos
            .values()
            .any(|v| matches!(v.run, Run::Publishing { .. } | Run::LookingUp { .. }))
    }

    /// Quota ledgers must be known before a change to them is built: reads
    /// the ones not cached; true if a read went out.
    fn read_missing_ledgers(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) -> bool {
        if self.params.sabotage.no_quota_reservation {
            return false;
        }
        let mut missing: Vec<u64> = self
            .quota_changes
            .iter()
            .filter_map(|c| self.quota_day_of(c, now_ms))
            .filter(|d| !self.quota_cache.contains_key(d))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return false;
        }
        let keys = missing
            .iter()
            .map(|d| quota_key(self.project(), *d))
            .collect();
        self.issue(InFlight::ReadQuota(missing), StoreOp::Get(keys), out);
        true
    }

    /// The channel record, every changed video, the ledgers, and (when
    /// releasing) the owner record given back; returns the videos written.
    fn write_records(&mut self, txn: &mut Txn, plan: &QuotaPlan, release: bool) -> Vec<u64> {
        txn.writes
            .push(Write::Put(channel_key(self.id), self.chan.encode()));
        let slots = self.dirty.take();
        for slot in &slots {
            let Some(v) = self.videos.get(slot) else {
                continue;
            };
            if v.rec.is_done() {
                txn.writes.push(Write::Delete(active_key(self.id, *slot)));
                txn.writes
                    .push(Write::Put(done_key(self.id, *slot), v.rec.encode()));
            } else {
                txn.writes
                    .push(Write::Put(active_key(self.id, *slot), v.rec.encode()));
            }
        }
        for (day, rec) in &plan.ledgers {
            txn.writes
                .push(Write::Put(quota_key(self.project(), *day), rec.encode()));
        }
        if release {
            let released = OwnerRecord {
                node: None,
                epoch: self.epoch,
                incarnation: self.incarnation,
            };
            txn.writes
                .push(Write::Put(owner_key(self.id), released.encode()));
        }
        slots
    }

    /// Applies the pending quota changes to the cached ledgers: a
    /// reservation that fits is taken (with its upload or lookup added to
    /// `actions`), one that does not waits for the reset or fails the video
    /// once too late; a refund gives back what the video holds.
    fn plan_quota(&mut self, now_ms: u64, actions: &mut Vec<Action>) -> QuotaPlan {
        let mut plan = QuotaPlan::default();
        for change in std::mem::take(&mut self.quota_changes) {
            let Some(day) = self.quota_day_of(&change, now_ms) else {
                continue;
            };
            if !self.videos.contains_key(&change.slot()) {
                continue;
            }
            if self.params.sabotage.no_quota_reservation {
                self.sabotaged_quota(change, actions);
                continue;
            }
            if self.apply_quota(now_ms, day, change, &mut plan, actions) {
                plan.applied.push(change);
                self.dirty.insert(change.slot());
            }
        }
        plan
    }

    /// Sabotaged: publish with no reservation at all.
    fn sabotaged_quota(&mut self, change: QuotaChange, actions: &mut Vec<Action>) {
        let slot = change.slot();
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        match change {
            QuotaChange::ReservePublish { slot } => {
                v.rec.publish_intent = true;
                actions.push(Action::Publish { slot });
            }
            QuotaChange::ReserveLookup { slot } => actions.push(Action::Lookup { slot }),
            QuotaChange::Refund { .. } => v.rec.publish_intent = false,
        }
        self.dirty.insert(slot);
    }

    /// The units a change moves, per bucket, and whether it adds them.
    fn quota_units(&self, change: QuotaChange) -> (Vec<u64>, bool) {
        let project = self.topo.project(self.project());
        match change {
            QuotaChange::ReservePublish { .. } => (project.publish_units(), true),
            QuotaChange::ReserveLookup { .. } => {
                let mut units = vec![0u64; project.buckets.len()];
                units[project.lookup_cost.bucket] += project.lookup_cost.units;
                (units, true)
            }
            QuotaChange::Refund { .. } => (project.publish_units(), false),
        }
    }

    /// One change against the day's ledger; true if it applied.
    fn apply_quota(
        &mut self,
        now_ms: u64,
        day: u64,
        change: QuotaChange,
        plan: &mut QuotaPlan,
        actions: &mut Vec<Action>,
    ) -> bool {
        let topo = Arc::clone(&self.topo);
        let project = topo.project(self.project());
        let ledger = plan.ledgers.entry(day).or_insert_with(|| {
            let mut r = self
                .quota_cache
                .get(&day)
                .map(|(r, _)| r.clone())
                .unwrap_or_default();
            r.used.resize(project.buckets.len(), 0);
            r
        });
        let (units, reserve) = self.quota_units(change);
        let slot = change.slot();
        let Some(v) = self.videos.get(&slot) else {
            return false;
        };
        let limits: Vec<u64> = (0..project.buckets.len())
            .map(|i| self.units_per_day(i))
            .collect();
        if reserve {
            let fits = ledger
                .used
                .iter()
                .zip(&units)
                .zip(&limits)
                .all(|((used, u), limit)| used.checked_add(*u).is_some_and(|t| t <= *limit));
            if !fits {
                self.quota_does_not_fit(now_ms, change);
                return false;
            }
        } else if !v.rec.publish_intent {
            return false; // nothing reserved to give back
        }
        plan.undo.push(v.rec.clone());
        for (used, u) in ledger.used.iter_mut().zip(&units) {
            *used = if reserve {
                used.checked_add(*u)
                    .expect("a reservation that fits does not overflow")
            } else {
                used.saturating_sub(*u)
            };
        }
        for ((used, b), limit) in ledger.used.iter().zip(&project.buckets).zip(&limits) {
            assert!(
                !reserve || *used <= *limit,
                "a reservation overfilled bucket {}",
                b.name
            );
        }
        let total: u64 = units.iter().sum();
        self.quota_applied(day, change, total, actions);
        true
    }

    /// Out of quota today: wait for the reset, or give up once the slot is
    /// too late to matter.
    fn quota_does_not_fit(&mut self, now_ms: u64, change: QuotaChange) {
        let slot = change.slot();
        let publish_at = self.slot_publish_at(slot);
        let late_at = publish_at + self.params.publish_grace_ms;
        let reset = self.next_quota_reset_ms(now_ms);
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        v.run = Run::Idle;
        if now_ms > late_at {
            probe!(QuotaExhaustedLate);
            v.rec.status = VideoStatus::Failed(FailReason::QuotaExhausted);
            self.dirty.insert(slot);
        } else {
            probe!(QuotaWaitForReset);
            // Back at the reset, or when the slot turns too late.
            v.wake_ms = reset.min(late_at + 1);
            v.quota_wait = true;
            v.needs_lookup = matches!(change, QuotaChange::ReserveLookup { .. });
        }
    }

    /// A change applied to the ledger: the video's record follows it.
    fn quota_applied(
        &mut self,
        day: u64,
        change: QuotaChange,
        units: u64,
        actions: &mut Vec<Action>,
    ) {
        let Some(v) = self.videos.get_mut(&change.slot()) else {
            return;
        };
        match change {
            QuotaChange::ReservePublish { slot } => {
                v.rec.publish_intent = true;
                v.rec.quota_day = day;
                v.rec.quota_units = v.rec.quota_units.checked_add(units).expect("quota units");
                actions.push(Action::Publish { slot });
            }
            QuotaChange::ReserveLookup { slot } => {
                v.rec.quota_units = v.rec.quota_units.checked_add(units).expect("quota units");
                actions.push(Action::Lookup { slot });
            }
            QuotaChange::Refund { .. } => {
                assert!(v.rec.publish_intent, "a refund gives back a reservation");
                v.rec.publish_intent = false;
                v.rec.quota_units = v.rec.quota_units.saturating_sub(units);
            }
        }
    }

    /// The commit applied (said so, or read back): finished videos leave,
    /// the work it carried starts, and a release ends the machine.
    pub(super) fn on_committed(
        &mut self,
        now_ms: u64,
        commit: PendingCommit,
        version: u64,
        out: &mut Vec<ChannelEffect>,
    ) {
        assert!(version >= self.chan_version || self.chan_version == 0 || version == 0);
        self.chan_version = version;
        for (day, rec) in commit.quota_after {
            self.quota_cache.insert(day, (rec, version));
        }
        for slot in commit.slots {
            let done = self.videos.get(&slot).is_some_and(|v| v.rec.is_done());
            if done && !self.dirty.contains(&slot) {
                if let Some(v) = self.videos.remove(&slot) {
                    out.push(ChannelEffect::VideoDone {
                        slot,
                        status: v.rec.status,
                        cost_micros: v.rec.cost_micros,
                        publish_at_ms: self.slot_publish_at(slot),
                    });
                }
            }
        }
        for action in commit.actions {
            match action {
                Action::StartJob(spec) => {
                    self.start_committed_job(now_ms, commit.sent_ms, spec, out)
                }
                Action::Publish { slot } => self.start_upload(now_ms, slot, out),
                Action::Lookup { slot } => self.start_lookup(now_ms, slot, out),
            }
        }
        if commit.release {
            self.stop(out, ChannelEffect::Released);
        }
    }

    fn start_committed_job(
        &mut self,
        now_ms: u64,
        sent_ms: u64,
        spec: crate::protocol::JobSpec,
        out: &mut Vec<ChannelEffect>,
    ) {
        let late = now_ms > sent_ms + LATE_REPLY_MS;
        if late && self.lease_valid_until_ms <= now_ms + LEASE_MARGIN_MS {
            // The start applied while the lease held, but its answer came
            // so late (a frozen or cut-off process) that the lease may have
            // run out: another node may own the channel and run this
            // stage, and a stop written meanwhile is unknown here (swarm
            // seed 17376: a stage started 75 s after the kill switch). The
            // job waits, committed, for a lease known good now; a stop that
            // arrives first takes it back. (Taking it back at once and
            // committing the start again livelocked where every store
            // answer is late: seeds 5113, 5635, 6041.)
            probe!(JobHeldForLease);
            if let Some(v) = self.videos.get_mut(&spec.id.slot) {
                v.run = Run::Job {
                    id: spec.id,
                    gpu: None,
                    started: false,
                    deadline_ms: HELD_DEADLINE_MS,
                };
                self.held_starts.insert(spec.id.slot, spec);
                self.lease_wanted = true;
            }
            return;
        }
        self.start_now(now_ms, spec, out);
    }

    /// Held starts go once the lease is known good now; until then the
    /// lease is asked for again (at most once a second).
    pub(super) fn release_held_starts(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        if self.held_starts.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held_starts);
        let lease_good = self.lease_valid_until_ms > now_ms + LEASE_MARGIN_MS;
        for (slot, spec) in held {
            let waiting = self
                .videos
                .get(&slot)
                .is_some_and(|v| matches!(v.run, Run::Job { id, .. } if id == spec.id));
            if !waiting {
                continue; // stopped or killed meanwhile
            }
            if lease_good {
                self.start_now(now_ms, spec, out);
            } else {
                self.held_starts.insert(slot, spec);
                self.lease_wanted = true;
            }
        }
    }

    /// Held uploads go once the lease is known good now. Nothing of one
    /// was sent, so the kill switch or a release gives its reservation
    /// back instead (a kill fails the video, as for any video not yet
    /// uploading); a pause does not hold back an upload whose reservation
    /// is durable, held or not.
    pub(super) fn release_held_uploads(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        if self.held_uploads.is_empty() {
            return;
        }
        let lease_good = self.lease_valid_until_ms > now_ms + LEASE_MARGIN_MS;
        let killed = self.control().killed;
        let releasing = self.phase == Phase::Releasing;
        for slot in std::mem::take(&mut self.held_uploads) {
            let Some(v) = self.videos.get_mut(&slot) else {
                continue;
            };
            if v.run != Run::UploadHeld {
                continue; // failed meanwhile
            }
            if killed || releasing {
                self.quota_changes.push(QuotaChange::Refund { slot });
                v.run = Run::Idle;
                v.wake_ms = now_ms;
                if killed {
                    self.fail_video(slot, FailReason::Killed);
                }
            } else if lease_good {
                self.start_upload(now_ms, slot, out);
            } else {
                self.held_uploads.insert(slot);
                self.lease_wanted = true;
            }
        }
    }

    /// Starts a committed job, unless a stop says otherwise.
    fn start_now(
        &mut self,
        now_ms: u64,
        spec: crate::protocol::JobSpec,
        out: &mut Vec<ChannelEffect>,
    ) {
        let slot = spec.id.slot;
        let control = self.control();
        if control.killed {
            // The job never ran: its charge goes back before the video fails.
            self.take_back_start(&spec);
            self.fail_video(slot, FailReason::Killed);
            return;
        }
        if control.paused {
            // The charge is durable but the job must not start: it is
            // taken back with the next commit.
            self.take_back_start(&spec);
            return;
        }
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        assert_eq!(spec.id.epoch, self.epoch, "a job of this epoch");
        let is_gpu = spec.kind == JobKind::Gpu;
        let deadline_ms = if is_gpu {
            now_ms + self.params.dispatch_timeout_ms
        } else {
            // Executors stop a local job at its longest duration plus one
            // grace and report that as a failure; silence for a second
            // grace means the job was lost.
            now_ms + spec.duration.max_ms() + 2 * self.params.job_grace_ms
        };
        v.run = Run::Job {
            id: spec.id,
            gpu: None,
            started: !is_gpu,
            deadline_ms,
        };
        out.push(ChannelEffect::StartJob(spec));
    }

    /// The reservation was built while the lease was valid, but its answer
    /// may come much later (a stalled or frozen process), or just after
    /// the lease known here was renewed (a store slower than the reserve
    /// window): by then another node may own the channel and have
    /// published. Upload only while the lease still holds; else hold the
    /// reservation, committed, until the lease is known good now.
    /// (Giving it back at once and reserving again livelocked where every
    /// commit takes longer than `RESERVE_LEASE_MS`: swarm seed 351293, a
    /// 318 ms commit against a lease the channel knew only ~400 ms ahead.)
    fn start_upload(&mut self, now_ms: u64, slot: u64, out: &mut Vec<ChannelEffect>) {
        if self.lease_valid_until_ms <= now_ms + LEASE_MARGIN_MS {
            probe!(PublishHeldForLease);
            if let Some(v) = self.videos.get_mut(&slot) {
                assert!(v.rec.publish_intent, "a held upload keeps its intent");
                v.run = Run::UploadHeld;
                self.held_uploads.insert(slot);
            }
            self.lease_wanted = true;
            return;
        }
        let key = idempotency_key(&self.topo.channel(self.id).name, slot);
        let timeout_ms = self.params.publish_timeout_ms;
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        assert!(
            v.rec.publish_intent,
            "an upload only with its intent durable"
        );
        v.upload_attempt += 1;
        let attempt = v.upload_attempt;
        v.run = Run::Publishing {
            attempt,
            deadline_ms: now_ms + timeout_ms,
        };
        out.push(ChannelEffect::Publish {
            slot,
            attempt,
            idempotency_key: key,
            timeout_ms,
        });
    }

    fn start_lookup(&mut self, now_ms: u64, slot: u64, out: &mut Vec<ChannelEffect>) {
        let key = idempotency_key(&self.topo.channel(self.id).name, slot);
        let deadline_ms = now_ms + self.params.publish_timeout_ms;
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        assert!(!v.rec.is_done(), "a finished video is not looked up");
        v.run = Run::LookingUp { deadline_ms };
        out.push(ChannelEffect::Lookup {
            slot,
            idempotency_key: key,
        });
    }
}
