//! The channel's store operations and what their replies mean. One is in
//! flight at a time, so the machine's view of the store only changes
//! through its own replies. A commit that conflicted or whose result is
//! unknown is read back (owner, channel record, controls, ledgers) to learn
//! what is true before anything is retried.

use crate::records::{
    active_prefix, budget_key, channel_key, control_key, owner_key, quota_key, quota_limits_key,
    ChannelRecord, ControlRecord, OwnerRecord, QuotaRecord, VideoRecord, CONTROL_ALL_KEY,
};
use crate::store::{prefix_end, Entry, Key, StoreError, StoreOp, StoreReply, RANGE_LIMIT_MAX};

use super::video::{Action, QuotaChange, Video};
use super::{ChannelEffect, ChannelMachine, Phase};

/// A commit on its way, with what to do once it is known to have applied
/// and how to undo its in-memory changes if it did not.
#[derive(Clone, Debug)]
pub(super) struct PendingCommit {
    /// The channel record's `write_seq` it carries (read back to settle
    /// an unknown result).
    pub seq: u64,
    pub slots: Vec<u64>,
    pub actions: Vec<Action>,
    pub quota: Vec<QuotaChange>,
    /// Records as they were before this commit's quota changes, restored
    /// when the commit did not apply.
    pub undo: Vec<VideoRecord>,
    pub quota_after: Vec<(u64, QuotaRecord)>,
    /// It also releases the channel (hands ownership back).
    pub release: bool,
    /// When it was sent (this node's clock): a reply much later than a
    /// store answers may come after the lease ran out.
    pub sent_ms: u64,
}

#[derive(Clone, Debug)]
pub(super) enum InFlight {
    Load,
    LoadVideos,
    Commit(Box<PendingCommit>),
    /// Reading back after a conflict or an unknown result.
    Resolve(Box<PendingCommit>),
    ReadQuota(Vec<u64>),
}

/// The records a channel reads when it starts, by name.
struct LoadReply {
    owner: Option<Entry>,
    chan: Option<Entry>,
    control: Option<Entry>,
    control_all: Option<Entry>,
    budget: Option<Entry>,
    quota_set: Option<Entry>,
}

impl LoadReply {
    fn keys(m: &ChannelMachine) -> Vec<Key> {
        vec![
            owner_key(m.id),
            channel_key(m.id),
            control_key(m.id),
            crate::store::key(CONTROL_ALL_KEY),
            budget_key(m.id),
            quota_limits_key(m.project()),
        ]
    }

    fn read(entries: Vec<Option<Entry>>) -> LoadReply {
        let mut it = entries.into_iter();
        LoadReply {
            owner: it.next().flatten(),
            chan: it.next().flatten(),
            control: it.next().flatten(),
            control_all: it.next().flatten(),
            budget: it.next().flatten(),
            quota_set: it.next().flatten(),
        }
    }
}

/// The records read back after a refused or unknown commit, by name.
struct ResolveReply {
    owner: Option<Entry>,
    chan: Option<Entry>,
    control_all: Option<Entry>,
    control: Option<Entry>,
    budget: Option<Entry>,
    quota_set: Option<Entry>,
    /// The ledgers of the commit's quota days, in its order.
    quotas: Vec<Option<Entry>>,
}

impl ResolveReply {
    fn keys(m: &ChannelMachine, commit: &PendingCommit) -> Vec<Key> {
        let mut keys = vec![
            owner_key(m.id),
            channel_key(m.id),
            crate::store::key(CONTROL_ALL_KEY),
            control_key(m.id),
            budget_key(m.id),
            quota_limits_key(m.project()),
        ];
        for (day, _) in &commit.quota_after {
            keys.push(quota_key(m.project(), *day));
        }
        keys
    }

    fn read(entries: Vec<Option<Entry>>) -> ResolveReply {
        let mut it = entries.into_iter();
        ResolveReply {
            owner: it.next().flatten(),
            chan: it.next().flatten(),
            control_all: it.next().flatten(),
            control: it.next().flatten(),
            budget: it.next().flatten(),
            quota_set: it.next().flatten(),
            quotas: it.collect(),
        }
    }
}

impl ChannelMachine {
    pub(super) fn issue(&mut self, what: InFlight, op: StoreOp, out: &mut Vec<ChannelEffect>) {
        assert!(self.inflight.is_none(), "one store op at a time");
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        assert!(op_id > 0 && self.next_op_id > op_id, "op ids only grow");
        self.inflight = Some((op_id, what));
        out.push(ChannelEffect::Store { op_id, op });
    }

    pub(super) fn issue_load(&mut self, out: &mut Vec<ChannelEffect>) {
        assert_eq!(self.phase, Phase::Loading);
        let keys = LoadReply::keys(self);
        self.issue(InFlight::Load, StoreOp::Get(keys), out);
    }

    /// The store could not be used: try again after `store_retry_ms`.
    fn store_later(&mut self, now_ms: u64) {
        self.store_wait_until_ms = now_ms + self.params.store_retry_ms;
    }

    pub(super) fn on_store_reply(
        &mut self,
        now_ms: u64,
        op_id: u64,
        reply: StoreReply,
        out: &mut Vec<ChannelEffect>,
    ) {
        let what = match self.inflight.take() {
            Some((id, what)) if id == op_id => what,
            other => {
                // A stale or duplicated reply: not the one awaited.
                self.inflight = other;
                return;
            }
        };
        match (what, reply) {
            (InFlight::Load, StoreReply::Got(entries)) => self.on_loaded(entries, out),
            (InFlight::LoadVideos, StoreReply::Range(entries)) => {
                self.on_videos_loaded(now_ms, entries, out)
            }
            (InFlight::ReadQuota(days), StoreReply::Got(entries)) => {
                assert_eq!(days.len(), entries.len(), "one ledger per day asked");
                for (day, e) in days.iter().zip(entries) {
                    self.cache_quota(*day, e);
                }
            }
            (InFlight::Commit(commit), reply) => self.on_commit_reply(now_ms, commit, reply, out),
            (InFlight::Resolve(commit), StoreReply::Got(entries)) => {
                self.on_resolved(now_ms, *commit, entries, out)
            }
            (InFlight::Resolve(commit), _) => {
                // Could not read back: `step` tries the read again later.
                probe!(ReadBackFailed);
                self.store_later(now_ms);
                self.pending_resolve = Some(commit);
            }
            (_, _) => self.store_later(now_ms),
        }
    }

    fn on_commit_reply(
        &mut self,
        now_ms: u64,
        commit: Box<PendingCommit>,
        reply: StoreReply,
        out: &mut Vec<ChannelEffect>,
    ) {
        match reply {
            StoreReply::Committed(version) => self.on_committed(now_ms, *commit, version, out),
            StoreReply::Failed(StoreError::Unavailable(_) | StoreError::TooLarge(_)) => {
                // Nothing was written: put the work back and try again.
                probe!(CommitUnavailable);
                self.requeue(*commit);
                self.store_later(now_ms);
            }
            // Conflict or unknown: read back what is true.
            StoreReply::Failed(_) => self.issue_resolve(commit, out),
            _ => self.requeue(*commit),
        }
    }

    /// Caches a quota ledger as read; a ledger that does not decode is not
    /// cached, so no reservation is built on it.
    pub(super) fn cache_quota(&mut self, day: u64, e: Option<Entry>) {
        let cached = match e {
            Some(e) => match QuotaRecord::decode(&e.value) {
                Ok(r) => (r, e.version),
                Err(_) => return,
            },
            None => (QuotaRecord::default(), 0),
        };
        self.quota_cache.insert(day, cached);
    }

    fn on_loaded(&mut self, entries: Vec<Option<Entry>>, out: &mut Vec<ChannelEffect>) {
        let r = LoadReply::read(entries);
        let mine = r
            .owner
            .as_ref()
            .and_then(|e| OwnerRecord::decode(&e.value).ok())
            .is_some_and(|o| o == self.owner_record());
        if !mine && !self.params.sabotage.no_epoch_fencing {
            probe!(FencedAtLoad);
            self.stop(out, ChannelEffect::Fenced);
            return;
        }
        if !self.load_channel_record(r.chan) {
            // A corrupt channel record: refuse to guess.
            self.stop(out, ChannelEffect::Fenced);
            return;
        }
        self.adopt_newer_control(r.control, r.control_all);
        self.adopt_limits(r.budget, r.quota_set);
        let prefix = active_prefix(self.id);
        let end = prefix_end(&prefix);
        let range = StoreOp::Range {
            start: prefix,
            end,
            limit: RANGE_LIMIT_MAX,
        };
        self.issue(InFlight::LoadVideos, range, out);
    }

    /// Takes the stored channel record; false if it does not decode.
    fn load_channel_record(&mut self, chan: Option<Entry>) -> bool {
        match chan {
            Some(e) => match ChannelRecord::decode(&e.value) {
                Ok(r) => {
                    self.chan = r;
                    // Not asserted non-zero: a backend may number a first
                    // write 0 (FoundationDB's versions are its own).
                    self.chan_version = e.version;
                    true
                }
                Err(_) => false,
            },
            None => {
                self.chan_version = 0;
                self.chan_dirty = true;
                self.chan.next_slot = u64::MAX; // set from the clock in `on_videos_loaded`
                true
            }
        }
    }

    /// A control input that overtook the load is newer: keep it.
    fn adopt_newer_control(&mut self, control: Option<Entry>, control_all: Option<Entry>) {
        if let Some(e) = control {
            if e.version > self.control_version {
                self.control_version = e.version;
                self.control = ControlRecord::decode(&e.value).unwrap_or_default();
            }
        }
        if let Some(e) = control_all {
            if e.version > self.control_all_version {
                self.control_all_version = e.version;
                self.control_all = ControlRecord::decode(&e.value).unwrap_or_default();
            }
        }
    }

    fn on_videos_loaded(&mut self, now_ms: u64, entries: Vec<Entry>, out: &mut Vec<ChannelEffect>) {
        assert!(self.videos.is_empty(), "videos are loaded once");
        if self.chan.next_slot == u64::MAX {
            self.chan.next_slot = self.first_slot_at_or_after(now_ms);
        }
        for e in entries {
            let Ok(mut rec) = VideoRecord::decode(&e.value) else {
                continue;
            };
            // Whatever the previous owner was running may or may not have
            // run: its charge stays on the ledger.
            rec.held_micros = 0;
            let slot = rec.slot;
            let v = self.taken_over(Video::new(rec, now_ms), now_ms);
            self.videos.insert(slot, v);
            // A video stored past the stored `next_slot` (the channel
            // record's write did not land) is never planned again.
            if slot >= self.chan.next_slot {
                self.chan.next_slot = slot + 1;
                self.chan_dirty = true;
            }
        }
        self.phase = if self.release_requested {
            Phase::Releasing
        } else {
            Phase::Running
        };
        let c = self.control.merge(self.control_all);
        self.on_control(now_ms, c);
        let _ = out;
    }

    /// A video as a new owner finds it: a publish intent means an upload
    /// may be in flight.
    fn taken_over(&self, mut v: Video, now_ms: u64) -> Video {
        if v.rec.publish_intent && !self.params.sabotage.no_reconciliation {
            // The previous owner may have an upload in flight until its
            // lease ran out plus one upload timeout: wait that long (on
            // this clock), then ask before retrying.
            probe!(LookupAfterTakeover);
            v.needs_lookup = true;
            v.taken_over_intent = true;
            v.wake_ms = now_ms + self.params.publish_timeout_ms + 1_000;
        } else if v.rec.publish_intent {
            v.rec.publish_intent = false;
        }
        v
    }

    pub(super) fn issue_resolve(
        &mut self,
        commit: Box<PendingCommit>,
        out: &mut Vec<ChannelEffect>,
    ) {
        let keys = ResolveReply::keys(self, &commit);
        self.issue(InFlight::Resolve(commit), StoreOp::Get(keys), out);
    }

    fn on_resolved(
        &mut self,
        now_ms: u64,
        commit: PendingCommit,
        entries: Vec<Option<Entry>>,
        out: &mut Vec<ChannelEffect>,
    ) {
        let r = ResolveReply::read(entries);
        self.adopt_control(now_ms, r.control_all, r.control);
        if self.adopt_limits(r.budget, r.quota_set) {
            self.limits_changed = true;
        }
        let owner_ok = r
            .owner
            .and_then(|e| OwnerRecord::decode(&e.value).ok())
            .is_some_and(|o| o == self.owner_record());
        if !owner_ok && !self.params.sabotage.no_epoch_fencing {
            probe!(FencedAtReadBack);
            self.stop(out, ChannelEffect::Fenced);
            return;
        }
        assert!(r.quotas.len() <= commit.quota_after.len());
        for ((day, _), e) in commit.quota_after.iter().zip(r.quotas) {
            self.cache_quota(*day, e);
        }
        let (applied_seq, version) = match &r.chan {
            Some(e) => (
                ChannelRecord::decode(&e.value)
                    .map(|c| c.write_seq)
                    .unwrap_or(0),
                e.version,
            ),
            None => (0, 0),
        };
        if applied_seq >= commit.seq && !self.params.sabotage.no_epoch_fencing {
            // It applied before any change of limits: nothing to decide again.
            self.limits_changed = false;
            self.applied_after_all(now_ms, commit, version, out);
        } else {
            probe!(CommitNotApplied);
            self.chan_version = version;
            self.requeue(commit);
        }
    }

    /// The read-back shows the commit applied: carry on as if it had said
    /// so, keeping the ledgers as just read (they may have moved since).
    fn applied_after_all(
        &mut self,
        now_ms: u64,
        commit: PendingCommit,
        version: u64,
        out: &mut Vec<ChannelEffect>,
    ) {
        probe!(CommitAppliedAfterAll);
        let cache: Vec<(u64, (QuotaRecord, u64))> = commit
            .quota_after
            .iter()
            .filter_map(|(d, _)| self.quota_cache.get(d).cloned().map(|c| (*d, c)))
            .collect();
        self.on_committed(now_ms, commit, version, out);
        for (d, c) in cache {
            self.quota_cache.insert(d, c);
        }
    }

    /// The commit did not apply: its work goes back in the queue and its
    /// in-memory changes are undone (a job start that a stop now forbids
    /// is taken back exactly).
    pub(super) fn requeue(&mut self, commit: PendingCommit) {
        self.dirty.extend(commit.slots);
        self.chan_dirty = true;
        for rec in commit.undo.into_iter().rev() {
            if let Some(v) = self.videos.get_mut(&rec.slot) {
                v.rec = rec;
            }
        }
        let c = self.control();
        let stopped = c.paused || c.killed;
        // Starts charged under a budget that changed are decided again.
        let limits_changed = std::mem::take(&mut self.limits_changed);
        let mut kept = Vec::new();
        for a in commit.actions {
            let Action::StartJob(spec) = a else { continue };
            if stopped {
                self.take_back_start(&spec);
            } else if limits_changed {
                self.give_back_start(&spec);
            } else {
                kept.push(Action::StartJob(spec));
            }
        }
        if limits_changed {
            self.give_back_pending_starts();
        }
        kept.append(&mut self.actions);
        self.actions = kept;
        let mut q = commit.quota;
        q.append(&mut self.quota_changes);
        self.quota_changes = q;
        assert!(self.chan_dirty);
    }
}
