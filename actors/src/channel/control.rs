//! Who may write, and whether work may start: the epoch fence every write
//! carries, the operator's pause and kill switch (the channel's own control
//! record and the fleet's), and stopping the machine.

use crate::records::{
    budget_key, channel_key, control_key, decode_budget, owner_key, quota_limits_key,
    ControlRecord, FailReason, OwnerRecord, QuotaLimitsRecord, VideoStatus, CONTROL_ALL_KEY,
};
use crate::store::{Check, Entry};

use super::video::{Action, Run};
use super::{ChannelEffect, ChannelMachine, Phase};
use crate::protocol::{JobKind, JobSpec};

impl ChannelMachine {
    pub(super) fn owner_record(&self) -> OwnerRecord {
        OwnerRecord {
            node: Some(self.node),
            epoch: self.epoch,
            incarnation: self.incarnation,
        }
    }

    /// The checks every write of this machine carries: the fence (owner
    /// record and channel record version), and the versions of the control
    /// records it has seen, so that no work starts once a pause or the kill
    /// switch is durable, whatever this node has heard of it.
    /// The vector has room for `more` checks besides.
    pub(super) fn fence_checks(&self, more: usize) -> Vec<Check> {
        let mut checks = Vec::with_capacity(6 + more);
        checks.extend([
            Check::VersionIs(crate::store::key(CONTROL_ALL_KEY), self.control_all_version),
            Check::VersionIs(control_key(self.id), self.control_version),
            // A budget or quota set by an operator holds from its commit:
            // no charge or reservation decided under the old one commits
            // after it.
            Check::VersionIs(budget_key(self.id), self.budget_version),
            Check::VersionIs(quota_limits_key(self.project()), self.quota_set_version),
        ]);
        if !self.params.sabotage.no_epoch_fencing {
            let owner = self.owner_record().encode();
            checks.push(Check::Equals(owner_key(self.id), owner));
            checks.push(Check::VersionIs(channel_key(self.id), self.chan_version));
        }
        assert!(checks.len() >= 2, "every write checks the controls");
        checks
    }

    /// Stops the machine for good: what runs is cancelled, and `effect`
    /// (fenced or released) tells the node.
    pub(super) fn stop(&mut self, out: &mut Vec<ChannelEffect>, effect: ChannelEffect) {
        assert!(matches!(
            effect,
            ChannelEffect::Fenced | ChannelEffect::Released
        ));
        for v in self.videos.values() {
            if let Run::Job { id, gpu, .. } = v.run {
                out.push(ChannelEffect::CancelJob { id, gpu });
            }
        }
        self.phase = Phase::Stopped;
        self.deadline = None;
        out.push(effect);
    }

    /// The channel's own control record, as membership read it.
    pub(super) fn on_own_control(&mut self, now_ms: u64, record: ControlRecord, version: u64) {
        if version >= self.control_version {
            self.control_version = version;
            self.control = record;
            self.on_control(now_ms, record.merge(self.control_all));
        }
    }

    /// The fleet's control record (the kill switch).
    pub(super) fn on_fleet_control(&mut self, now_ms: u64, record: ControlRecord, version: u64) {
        if version >= self.control_all_version {
            self.control_all_version = version;
            self.control_all = record;
            self.on_control(now_ms, self.control.merge(record));
        }
    }

    /// A limit record membership read: taken if newer than the one known
    /// (writes check its version, so a record missed here is read back at
    /// the next write anyway).
    pub(super) fn on_limit_record(&mut self, e: Entry) {
        let changed = match crate::records::Key::parse(&e.key) {
            Some(crate::records::Key::Budget(ch)) if ch == self.id => {
                e.version > self.budget_version && self.adopt_budget(Some(e))
            }
            Some(crate::records::Key::QuotaLimits(p)) if p == self.project() => {
                e.version > self.quota_set_version && self.adopt_quota(Some(e))
            }
            _ => false,
        };
        if changed {
            probe!(LimitsPushed);
            // Starts charged under the old limits and not yet written are
            // decided again; one in flight, when its write is refused.
            self.limits_changed = true;
            self.give_back_pending_starts();
        }
    }

    /// Every job start not yet in a commit goes back (charge and attempt),
    /// to be decided again.
    pub(super) fn give_back_pending_starts(&mut self) {
        let mut kept = Vec::new();
        for a in std::mem::take(&mut self.actions) {
            match a {
                Action::StartJob(spec) => self.give_back_start(&spec),
                other => kept.push(other),
            }
        }
        self.actions = kept;
    }

    /// Takes the operator's budget and quota records as read (at load or
    /// read-back); true if either changed.
    pub(super) fn adopt_limits(&mut self, budget: Option<Entry>, quota: Option<Entry>) -> bool {
        let b = self.adopt_budget(budget);
        let q = self.adopt_quota(quota);
        if b || q {
            probe!(LimitsChanged);
        }
        b || q
    }

    /// The budget record, if its version changed. A record that does not
    /// decode is not believed: the limit in force stays (its version is
    /// taken, or every write would fail its check and read back, forever).
    fn adopt_budget(&mut self, e: Option<Entry>) -> bool {
        let version = e.as_ref().map(|e| e.version).unwrap_or(0);
        if version == self.budget_version {
            return false;
        }
        match &e {
            Some(e) => {
                if let Ok(b) = decode_budget(&e.value) {
                    self.budget_set = Some(b);
                }
            }
            None => self.budget_set = None,
        }
        self.budget_version = version;
        true
    }

    /// The project's quota record, if its version changed (as the budget);
    /// videos asleep until the quota resets try again now.
    fn adopt_quota(&mut self, e: Option<Entry>) -> bool {
        let version = e.as_ref().map(|e| e.version).unwrap_or(0);
        if version == self.quota_set_version {
            return false;
        }
        match &e {
            Some(e) => {
                if let Ok(q) = QuotaLimitsRecord::decode(&e.value) {
                    self.quota_set = Some(q.units_per_day);
                }
            }
            None => self.quota_set = None,
        }
        self.quota_set_version = version;
        for v in self.videos.values_mut() {
            if v.quota_wait && v.run == Run::Idle {
                probe!(QuotaWaitWoken);
                v.quota_wait = false;
                v.wake_ms = 0;
            }
        }
        true
    }

    /// Takes control records read back from the store, if they changed.
    pub(super) fn adopt_control(&mut self, now_ms: u64, all: Option<Entry>, own: Option<Entry>) {
        let version = |e: &Option<Entry>| e.as_ref().map(|e| e.version).unwrap_or(0);
        let record = |e: &Option<Entry>| {
            e.as_ref()
                .and_then(|e| ControlRecord::decode(&e.value).ok())
                .unwrap_or_default()
        };
        let mut changed = false;
        if version(&all) != self.control_all_version {
            self.control_all_version = version(&all);
            self.control_all = record(&all);
            changed = true;
        }
        if version(&own) != self.control_version {
            self.control_version = version(&own);
            self.control = record(&own);
            changed = true;
        }
        if changed {
            probe!(ControlSeenAtReadBack);
            let merged = self.control.merge(self.control_all);
            self.on_control(now_ms, merged);
        }
    }

    /// The effective control changed: a stop takes back every job start
    /// not yet committed; a kill also cancels what runs and fails what has
    /// not started uploading.
    pub(super) fn on_control(&mut self, now_ms: u64, effective: ControlRecord) {
        assert_eq!(effective, self.control.merge(self.control_all));
        if effective.paused || effective.killed {
            let starts: Vec<Action> = self
                .actions
                .iter()
                .filter(|a| matches!(a, Action::StartJob(_)))
                .cloned()
                .collect();
            self.actions.retain(|a| !matches!(a, Action::StartJob(_)));
            for a in starts {
                if let Action::StartJob(spec) = a {
                    self.take_back_start(&spec);
                }
            }
        }
        if effective.killed {
            let slots: Vec<u64> = self.videos.keys().copied().collect();
            for slot in slots {
                self.kill_video(now_ms, slot);
            }
        }
    }

    /// A job start that must not happen now (a stop arrived before it was
    /// committed, or before it was sent): its charge is taken back exactly
    /// and the video waits, as if the step had never been taken.
    pub(super) fn take_back_start(&mut self, spec: &JobSpec) {
        probe!(StartDroppedAfterStop);
        self.give_back_start(spec);
    }

    /// The charge and the attempt of a start that did not run go back.
    pub(super) fn give_back_start(&mut self, spec: &JobSpec) {
        // A provider call granted as the breaker's half-open probe never
        // happens: free the probe slot, or the breaker waits for its
        // outcome forever and no call to that provider starts again
        // (swarm seed 1208, once starts answered late were held).
        if let JobKind::External { provider } = &spec.kind {
            self.breaker(provider).on_abandoned();
        }
        let slot = spec.id.slot;
        self.settle_held(slot, 0);
        if let Some(v) = self.videos.get_mut(&slot) {
            assert_eq!(v.rec.held_micros, 0, "the charge is taken back");
            v.run = Run::Idle;
            v.rec.attempt = v.rec.attempt.saturating_sub(1);
        }
        self.dirty.insert(slot);
    }

    /// Fails a video for the kill switch unless an upload may be in flight,
    /// which must settle first (it is failed or recorded when it answers).
    pub(super) fn kill_video(&mut self, now_ms: u64, slot: u64) {
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        if v.rec.is_done() || v.run == Run::AwaitCommit {
            return;
        }
        if v.rec.publish_intent {
            probe!(KillWaitsForUpload);
            return;
        }
        if let Run::Job { id, gpu, .. } = v.run {
            self.cancels.push((id, gpu));
        }
        v.run = Run::Idle;
        v.rec.held_micros = 0;
        v.rec.status = VideoStatus::Failed(FailReason::Killed);
        v.wake_ms = now_ms;
        self.dirty.insert(slot);
    }
}
