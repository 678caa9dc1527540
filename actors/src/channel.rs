//! `ChannelMachine`: one channel's videos, from plan to publish.
//!
//! How to drive it: construct it for a (channel, node, epoch) that the
//! membership machine has claimed, feed [`ChannelInput::Start`], then every
//! input as it arrives, with a `now_ms` that never goes backwards, and a
//! [`ChannelInput::Tick`] whenever `now_ms` reaches [`ChannelMachine::next_deadline`].
//! Effects come out in order; the shell executes them and feeds results
//! back: store replies by `op_id`, job results by `JobId`, publish and lookup
//! results by slot.
//!
//! What it guarantees, and where:
//! - every store write is fenced by the owner record (node, epoch) and by the
//!   version of the channel record; a stale owner changes nothing
//!   ([`ChannelMachine::fence_checks`]);
//! - work starts only after its cost is durably charged against the budget;
//! - an upload starts only after its quota is durably reserved together with
//!   a publish intent; the reservation is refunded only on a definite failure;
//! - a video with an intent whose outcome is unknown (timeout, takeover) is
//!   looked up by its idempotency key before it is published again;
//! - one store operation is in flight at a time, so the machine's view of the
//!   store only changes through its own replies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use topology::{stage_cost_bound_micros, ChannelId, GpuId, NodeId, StageKind, Topology, DAY_MS};

use crate::breaker::{backoff_ms, Breaker, BreakerParams};
use crate::protocol::{JobId, JobKind, JobOutcome, JobSpec, LookupOutcome, PublishOutcome};
use crate::records::*;
use crate::rng::SeededRng;
use crate::sabotage::Sabotage;
use crate::store::{Check, Entry, StoreError, StoreOp, StoreReply, Txn, Write};

/// An upload starts only while the node's lease is valid for this much
/// longer (covers the time for the request to leave the node).
pub const LEASE_MARGIN_MS: u64 = 100;

/// A publish reservation is built only while the lease is valid for this
/// much longer than [`LEASE_MARGIN_MS`]: the reservation's commit must come
/// back, and the upload start, while the lease still holds.
pub const RESERVE_LEASE_MS: u64 = 300;

/// An unanswered [`ChannelEffect::AskLease`] is repeated after this long.
pub const LEASE_ASK_INTERVAL_MS: u64 = 1_000;

#[derive(Clone, Debug)]
pub struct ChannelParams {
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Real failures of one stage (see [`VideoRecord::stage_failures`])
    /// before the video fails as `stage-retries-exhausted`.
    pub stage_attempts_max: u32,
    /// Definite upload failures (5xx, a dropped connection) before the
    /// video fails as `stage-retries-exhausted`.
    pub publish_attempts_max: u32,
    /// Jobs of one stage lost without failing (never reached a GPU, went
    /// down with their node) before the video fails as `jobs-lost`.
    /// Takeovers and restarts are not counted at all.
    pub jobs_lost_max: u32,
    /// A slot is planned this long before its publish time.
    pub plan_lead_ms: u64,
    /// At most this many videos in progress at once.
    pub active_videos_max: usize,
    /// A GPU job not started within this is resubmitted.
    pub dispatch_timeout_ms: u64,
    /// Extra time a started job gets beyond its longest duration: a local
    /// executor stops the job after one grace (a failure of the stage), the
    /// machine takes it as lost after two.
    pub job_grace_ms: u64,
    /// An upload not answered within this has an unknown outcome. The
    /// publisher abandons the upload at the same moment, so nothing it sent
    /// can complete later.
    pub publish_timeout_ms: u64,
    /// A slot more than this late fails instead of publishing (quota).
    pub publish_grace_ms: u64,
    pub store_retry_ms: u64,
    pub breaker: BreakerParams,
    pub sabotage: Sabotage,
}

impl Default for ChannelParams {
    fn default() -> Self {
        ChannelParams {
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            stage_attempts_max: 8,
            publish_attempts_max: 12,
            jobs_lost_max: 64,
            plan_lead_ms: 30 * 60_000,
            active_videos_max: 64,
            dispatch_timeout_ms: 120_000,
            job_grace_ms: 30_000,
            publish_timeout_ms: 30_000,
            publish_grace_ms: 2 * DAY_MS,
            store_retry_ms: 250,
            breaker: BreakerParams::default(),
            sabotage: Sabotage::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelInput {
    /// Load state from the store and begin.
    Start,
    Tick,
    StoreReply {
        op_id: u64,
        reply: StoreReply,
    },
    JobStarted {
        id: JobId,
        gpu: Option<GpuId>,
    },
    JobFinished {
        id: JobId,
        outcome: JobOutcome,
    },
    PublishResult {
        slot: u64,
        attempt: u32,
        outcome: PublishOutcome,
    },
    LookupResult {
        slot: u64,
        outcome: LookupOutcome,
    },
    /// Pause, resume or kill, from the channel's own control record, with
    /// the record's store version (older versions are ignored).
    Control {
        record: ControlRecord,
        version: u64,
    },
    /// The fleet-wide control record (the kill switch).
    ControlAll {
        record: ControlRecord,
        version: u64,
    },
    /// Hand the channel over: settle uploads, then release ownership.
    Release,
    /// The node's lease is certainly valid until then (this node's clock):
    /// the answer to [`ChannelEffect::AskLease`].
    Lease {
        valid_until_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEffect {
    Store {
        op_id: u64,
        op: StoreOp,
    },
    StartJob(JobSpec),
    CancelJob {
        id: JobId,
        gpu: Option<GpuId>,
    },
    Publish {
        slot: u64,
        attempt: u32,
        idempotency_key: String,
        timeout_ms: u64,
    },
    Lookup {
        slot: u64,
        idempotency_key: String,
    },
    /// Ownership was released on request; the shell may drop the machine.
    Released,
    /// The owner record no longer names this (node, epoch): stop now.
    Fenced,
    /// A video reached its end (for metrics and the simulator's checks).
    VideoDone {
        slot: u64,
        status: VideoStatus,
    },
    /// An upload or lookup waits for the node's lease: say until when it
    /// is valid ([`ChannelInput::Lease`]).
    AskLease,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Loading,
    Running,
    Releasing,
    Stopped,
}

/// What a video is doing besides its durable record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Run {
    /// Ready for its next step at `wake_ms`.
    Idle,
    /// Its next step waits for the commit in flight (or the next one).
    AwaitCommit,
    Job {
        id: JobId,
        gpu: Option<GpuId>,
        started: bool,
        deadline_ms: u64,
    },
    Publishing {
        attempt: u32,
        deadline_ms: u64,
    },
    LookingUp {
        deadline_ms: u64,
    },
}

#[derive(Clone, Debug)]
struct Video {
    rec: VideoRecord,
    run: Run,
    wake_ms: u64,
    upload_attempt: u32,
    /// An upload's outcome is unknown: look it up before anything else.
    needs_lookup: bool,
    /// Loaded with a publish intent of a previous owner.
    taken_over_intent: bool,
}

/// A step that becomes an effect once the commit carrying it succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    StartJob(JobSpec),
    Publish { slot: u64 },
    Lookup { slot: u64 },
}

/// A change to a quota ledger, resolved against the cached ledger when the
/// transaction is built (reservations must fit; refunds always do).
#[derive(Clone, Debug, PartialEq, Eq)]
enum QuotaChange {
    ReservePublish { slot: u64 },
    ReserveLookup { slot: u64 },
    Refund { slot: u64 },
}

#[derive(Clone, Debug)]
enum InFlight {
    Load,
    LoadVideos,
    Commit {
        seq: u64,
        slots: Vec<u64>,
        actions: Vec<Action>,
        quota: Vec<QuotaChange>,
        /// Records as they were before this commit's quota changes, restored
        /// when the commit did not apply.
        undo: Vec<VideoRecord>,
        quota_after: Vec<(u64, QuotaRecord)>,
        release: bool,
    },
    /// Reading back after a conflict or an unknown result.
    Resolve {
        commit: Box<InFlight>,
    },
    ReadQuota(Vec<u64>),
}

pub struct ChannelMachine {
    topo: Arc<Topology>,
    id: ChannelId,
    node: NodeId,
    epoch: u64,
    incarnation: u64,
    params: ChannelParams,
    rng: SeededRng,
    phase: Phase,
    chan: ChannelRecord,
    chan_version: u64,
    control: ControlRecord,
    control_all: ControlRecord,
    control_version: u64,
    control_all_version: u64,
    videos: BTreeMap<u64, Video>,
    dirty: BTreeSet<u64>,
    chan_dirty: bool,
    actions: Vec<Action>,
    quota_changes: Vec<QuotaChange>,
    /// Cached ledger per quota day: (record, version).
    quota_cache: BTreeMap<u64, (QuotaRecord, u64)>,
    breakers: BTreeMap<String, Breaker>,
    inflight: Option<(u64, InFlight)>,
    next_op_id: u64,
    store_wait_until_ms: u64,
    lease_valid_until_ms: u64,
    /// An upload or lookup found the lease it knows too short.
    lease_wanted: bool,
    /// When the lease was last asked for and not answered yet.
    lease_asked_ms: Option<u64>,
    /// Videos that wait for the answer.
    lease_waiters: BTreeSet<u64>,
    release_requested: bool,
    gpu_cost_max: u64,
    deadline: Option<u64>,
    started: bool,
    /// Job cancels decided outside `step`, flushed by it.
    cancels: Vec<(JobId, Option<GpuId>)>,
    /// A read-back that failed to reach the store, retried by `step`.
    pending_resolve: Option<InFlight>,
}

impl ChannelMachine {
    pub fn new(
        topo: Arc<Topology>,
        id: ChannelId,
        node: NodeId,
        epoch: u64,
        incarnation: u64,
        params: ChannelParams,
        seed: u64,
    ) -> ChannelMachine {
        let gpu_cost_max = topo.gpu_cost_per_hour_max();
        ChannelMachine {
            topo,
            id,
            node,
            epoch,
            incarnation,
            params,
            rng: SeededRng::new(seed),
            phase: Phase::Loading,
            chan: ChannelRecord::default(),
            chan_version: 0,
            control: ControlRecord::default(),
            control_all: ControlRecord::default(),
            control_version: 0,
            control_all_version: 0,
            videos: BTreeMap::new(),
            dirty: BTreeSet::new(),
            chan_dirty: false,
            actions: Vec::new(),
            quota_changes: Vec::new(),
            quota_cache: BTreeMap::new(),
            breakers: BTreeMap::new(),
            inflight: None,
            next_op_id: 1,
            store_wait_until_ms: 0,
            lease_valid_until_ms: 0,
            lease_wanted: false,
            lease_asked_ms: None,
            lease_waiters: BTreeSet::new(),
            release_requested: false,
            gpu_cost_max,
            deadline: None,
            started: false,
            cancels: Vec::new(),
            pending_resolve: None,
        }
    }

    pub fn id(&self) -> ChannelId {
        self.id
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn active_videos(&self) -> usize {
        self.videos.len()
    }
    pub fn control(&self) -> ControlRecord {
        self.control.merge(self.control_all)
    }
    /// What the machine is doing, for people debugging a seed: phase, the
    /// store operation in flight, and each video's record and step.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "channel {} epoch {} {:?}, in flight {:?}, lease until {}, control {:?}\n",
            self.id,
            self.epoch,
            self.phase,
            self.inflight.as_ref().map(|(id, _)| id),
            self.lease_valid_until_ms,
            self.control()
        );
        for (slot, v) in &self.videos {
            s += &format!(
                "  slot {slot}: {:?} wake {} lookup {} | {:?}\n",
                v.run, v.wake_ms, v.needs_lookup, v.rec
            );
        }
        s
    }

    /// Whether a commit that reserves an upload is in flight (for tests that
    /// break a node at that moment).
    pub fn publish_commit_in_flight(&self) -> bool {
        matches!(&self.inflight, Some((_, InFlight::Commit { actions, .. }))
            if actions.iter().any(|a| matches!(a, Action::Publish { .. })))
    }

    /// Running jobs, for the simulator's kill-switch check.
    pub fn running_jobs(&self) -> impl Iterator<Item = JobId> + '_ {
        self.videos.values().filter_map(|v| match v.run {
            Run::Job { id, .. } => Some(id),
            _ => None,
        })
    }

    /// When the machine next wants a `Tick`; `None`: only inputs wake it.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    pub fn handle(&mut self, now_ms: u64, input: ChannelInput, out: &mut Vec<ChannelEffect>) {
        if self.phase == Phase::Stopped {
            return;
        }
        match input {
            ChannelInput::Start => self.started = true,
            ChannelInput::Tick => {}
            ChannelInput::StoreReply { op_id, reply } => {
                self.on_store_reply(now_ms, op_id, reply, out)
            }
            ChannelInput::JobStarted { id, gpu } => {
                let current = self
                    .videos
                    .get(&id.slot)
                    .map(|v| matches!(v.run, Run::Job { id: running, .. } if running == id))
                    .unwrap_or(false);
                if !current && id.channel == self.id {
                    // A job this machine no longer wants (killed, retried,
                    // or from an earlier epoch) started late: stop it.
                    probe!(JobStartedLateCancelled);
                    out.push(ChannelEffect::CancelJob { id, gpu });
                }
                if let Some(v) = self.videos.get_mut(&id.slot) {
                    if let Run::Job {
                        id: running,
                        started,
                        deadline_ms,
                        gpu: g,
                    } = &mut v.run
                    {
                        if *running == id && !*started {
                            let stage = &self
                                .topo
                                .pipeline(self.topo.channel(self.id).pipeline)
                                .stages[id.stage as usize];
                            *started = true;
                            *g = gpu;
                            *deadline_ms =
                                now_ms + 2 * stage.duration.max_ms() + self.params.job_grace_ms;
                        }
                    }
                }
            }
            ChannelInput::JobFinished { id, outcome } => self.on_job_finished(now_ms, id, outcome),
            ChannelInput::PublishResult {
                slot,
                attempt,
                outcome,
            } => self.on_publish_result(now_ms, slot, attempt, outcome),
            ChannelInput::LookupResult { slot, outcome } => {
                self.on_lookup_result(now_ms, slot, outcome)
            }
            ChannelInput::Control { record, version } => {
                if version >= self.control_version {
                    self.control_version = version;
                    self.on_control(now_ms, record, false, out);
                }
            }
            ChannelInput::ControlAll { record, version } => {
                if version >= self.control_all_version {
                    self.control_all_version = version;
                    self.control_all = record;
                    let merged = self.control.merge(record);
                    self.on_control(now_ms, merged, true, out);
                }
            }
            ChannelInput::Lease { valid_until_ms } => {
                self.lease_valid_until_ms = self.lease_valid_until_ms.max(valid_until_ms);
                // Only a lease that is good enough wakes the waiters (and
                // allows another ask at once); a lapsed one leaves them to
                // their next look, so that asking never spins.
                if self.lease_valid_until_ms > now_ms + LEASE_MARGIN_MS + RESERVE_LEASE_MS {
                    self.lease_asked_ms = None;
                    for slot in std::mem::take(&mut self.lease_waiters) {
                        if let Some(v) = self.videos.get_mut(&slot) {
                            v.wake_ms = v.wake_ms.min(now_ms);
                        }
                    }
                }
            }
            ChannelInput::Release => {
                self.release_requested = true;
                if self.phase == Phase::Running {
                    self.phase = Phase::Releasing;
                }
            }
        }
        self.step(now_ms, out);
    }

    fn owner_record(&self) -> OwnerRecord {
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
    fn fence_checks(&self) -> Vec<Check> {
        let mut checks = vec![
            Check::VersionIs(CONTROL_ALL_KEY.to_vec(), self.control_all_version),
            Check::VersionIs(control_key(self.id), self.control_version),
        ];
        if !self.params.sabotage.no_epoch_fencing {
            checks.push(Check::Equals(
                owner_key(self.id),
                self.owner_record().encode(),
            ));
            checks.push(Check::VersionIs(channel_key(self.id), self.chan_version));
        }
        checks
    }

    fn issue(&mut self, what: InFlight, op: StoreOp, out: &mut Vec<ChannelEffect>) {
        debug_assert!(self.inflight.is_none(), "one store op at a time");
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        self.inflight = Some((op_id, what));
        out.push(ChannelEffect::Store { op_id, op });
    }

    fn stop(&mut self, out: &mut Vec<ChannelEffect>, effect: ChannelEffect) {
        for v in self.videos.values() {
            if let Run::Job { id, gpu, .. } = v.run {
                out.push(ChannelEffect::CancelJob { id, gpu });
            }
        }
        self.phase = Phase::Stopped;
        self.deadline = None;
        out.push(effect);
    }

    fn on_store_reply(
        &mut self,
        now_ms: u64,
        op_id: u64,
        reply: StoreReply,
        out: &mut Vec<ChannelEffect>,
    ) {
        let what = match self.inflight.take() {
            Some((id, what)) if id == op_id => what,
            other => {
                self.inflight = other;
                return;
            }
        };
        match what {
            InFlight::Load => match reply {
                StoreReply::Got(entries) => self.on_loaded(entries, out),
                _ => self.store_wait_until_ms = now_ms + self.params.store_retry_ms,
            },
            InFlight::LoadVideos => match reply {
                StoreReply::Range(entries) => self.on_videos_loaded(now_ms, entries, out),
                _ => self.store_wait_until_ms = now_ms + self.params.store_retry_ms,
            },
            InFlight::ReadQuota(days) => match reply {
                StoreReply::Got(entries) => {
                    for (day, e) in days.iter().zip(entries) {
                        self.cache_quota(*day, e);
                    }
                }
                _ => self.store_wait_until_ms = now_ms + self.params.store_retry_ms,
            },
            commit @ InFlight::Commit { .. } => match reply {
                StoreReply::Committed(version) => self.on_committed(now_ms, commit, version, out),
                StoreReply::Failed(StoreError::Unavailable(_))
                | StoreReply::Failed(StoreError::TooLarge(_)) => {
                    // Nothing was written: put the work back and try again.
                    probe!(CommitUnavailable);
                    self.requeue(commit);
                    self.store_wait_until_ms = now_ms + self.params.store_retry_ms;
                }
                StoreReply::Failed(_) => {
                    // Conflict or unknown: read back what is true.
                    self.issue_resolve(commit, out);
                }
                _ => self.requeue(commit),
            },
            InFlight::Resolve { commit } => match reply {
                StoreReply::Got(entries) => self.on_resolved(now_ms, *commit, entries, out),
                _ => {
                    // Could not read back: try the read again later.
                    probe!(ReadBackFailed);
                    self.store_wait_until_ms = now_ms + self.params.store_retry_ms;
                    self.resolve_again(*commit, out);
                }
            },
        }
    }

    /// Caches a quota ledger as read; a ledger that does not decode is not
    /// cached, so no reservation is built on it.
    fn cache_quota(&mut self, day: u64, e: Option<Entry>) {
        let cached = match e {
            Some(e) => match QuotaRecord::decode(&e.value) {
                Ok(r) => (r, e.version),
                Err(_) => return,
            },
            None => (QuotaRecord::default(), 0),
        };
        self.quota_cache.insert(day, cached);
    }

    fn resolve_again(&mut self, commit: InFlight, out: &mut Vec<ChannelEffect>) {
        // Deferred: `step` re-issues the read when the wait is over.
        let _ = out;
        self.pending_resolve = Some(commit);
    }

    /// Takes control records read from the store, if newer than known.
    fn adopt_control(
        &mut self,
        now_ms: u64,
        all: Option<Entry>,
        own: Option<Entry>,
        out: &mut Vec<ChannelEffect>,
    ) {
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
            self.on_control(now_ms, merged, true, out);
        }
    }

    fn on_loaded(&mut self, entries: Vec<Option<Entry>>, out: &mut Vec<ChannelEffect>) {
        let mut it = entries.into_iter();
        let owner = it.next().flatten();
        let chan = it.next().flatten();
        let control = it.next().flatten();
        let control_all = it.next().flatten();
        let mine = owner
            .as_ref()
            .and_then(|e| OwnerRecord::decode(&e.value).ok())
            .map(|o| o == self.owner_record())
            .unwrap_or(false);
        if !mine && !self.params.sabotage.no_epoch_fencing {
            probe!(FencedAtLoad);
            self.stop(out, ChannelEffect::Fenced);
            return;
        }
        if let Some(e) = chan {
            match ChannelRecord::decode(&e.value) {
                Ok(r) => {
                    self.chan = r;
                    self.chan_version = e.version;
                }
                Err(_) => {
                    // A corrupt channel record: refuse to guess.
                    self.stop(out, ChannelEffect::Fenced);
                    return;
                }
            }
        } else {
            self.chan_version = 0;
            self.chan_dirty = true;
            self.chan.next_slot = u64::MAX; // set from the clock in `on_videos_loaded`
        }
        // A control input that overtook this read is newer: keep it.
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
        let prefix = active_prefix(self.id);
        let end = crate::store::prefix_end(&prefix);
        self.issue(
            InFlight::LoadVideos,
            StoreOp::Range {
                start: prefix,
                end,
                limit: crate::store::RANGE_LIMIT_MAX,
            },
            out,
        );
    }

    fn on_videos_loaded(&mut self, now_ms: u64, entries: Vec<Entry>, out: &mut Vec<ChannelEffect>) {
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
            let mut v = Video {
                rec,
                run: Run::Idle,
                wake_ms: now_ms,
                upload_attempt: 0,
                needs_lookup: false,
                taken_over_intent: false,
            };
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
            self.videos.insert(slot, v);
        }
        self.phase = if self.release_requested {
            Phase::Releasing
        } else {
            Phase::Running
        };
        let c = self.control.merge(self.control_all);
        self.on_control(now_ms, c, true, out);
    }

    fn project(&self) -> topology::ProjectId {
        self.topo.channel(self.id).project
    }

    fn slot_publish_at(&self, slot: u64) -> u64 {
        let spec = self.topo.channel(self.id);
        let per_day = u64::from(spec.videos_per_day.max(1));
        let day = slot / per_day;
        let k = slot % per_day;
        let start = u64::from(spec.window.start_minute) * 60_000;
        let len = u64::from(
            spec.window
                .end_minute
                .saturating_sub(spec.window.start_minute),
        ) * 60_000;
        day * DAY_MS + start + k * len / per_day
    }

    fn first_slot_at_or_after(&self, now_ms: u64) -> u64 {
        let per_day = u64::from(self.topo.channel(self.id).videos_per_day.max(1));
        let mut slot = (now_ms / DAY_MS) * per_day;
        while self.slot_publish_at(slot) < now_ms {
            slot += 1;
        }
        slot
    }

    fn on_control(
        &mut self,
        now_ms: u64,
        c: ControlRecord,
        merged: bool,
        _out: &mut Vec<ChannelEffect>,
    ) {
        if !merged {
            self.control = c;
        }
        let eff = if merged { c } else { c.merge(self.control_all) };
        if eff.killed {
            // Kill: cancel what runs, fail what has not started uploading.
            let slots: Vec<u64> = self.videos.keys().copied().collect();
            for slot in slots {
                self.kill_video(now_ms, slot);
            }
        }
    }

    /// Fails a video for the kill switch unless an upload may be in flight,
    /// which must settle first (it is failed or recorded when it answers).
    fn kill_video(&mut self, now_ms: u64, slot: u64) {
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

/// The transitions: results, timeouts, planning, and building commits.
impl ChannelMachine {
    fn stage_count(&self) -> usize {
        self.topo
            .pipeline(self.topo.channel(self.id).pipeline)
            .stages
            .len()
    }

    fn today(now_ms: u64) -> u64 {
        now_ms / DAY_MS
    }

    /// First moment of the quota day after the one `now_ms` falls in.
    fn next_quota_reset_ms(&self, now_ms: u64) -> u64 {
        let project = self.topo.project(self.project());
        let offset_ms = i64::from(project.reset_utc_offset_minutes) * 60_000;
        let day = project.quota_day(now_ms) as i64;
        ((day + 1) * DAY_MS as i64 - offset_ms).max(now_ms as i64 + 1) as u64
    }

    fn settle_held(&mut self, slot: u64, actual_micros: u64) {
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        let held = v.rec.held_micros;
        v.rec.cost_micros = v.rec.cost_micros - held + actual_micros;
        self.chan.spent_total_micros = self.chan.spent_total_micros - held + actual_micros;
        if v.rec.held_day == self.chan.spend_day {
            self.chan.spent_day_micros =
                (self.chan.spent_day_micros + actual_micros).saturating_sub(held);
        }
        v.rec.held_micros = 0;
        self.chan_dirty = true;
    }

    fn fail_video(&mut self, slot: u64, reason: FailReason) {
        if let Some(v) = self.videos.get_mut(&slot) {
            v.rec.status = VideoStatus::Failed(reason);
            v.run = Run::Idle;
            self.dirty.insert(slot);
        }
    }

    fn provider_of(&self, stage: usize, cheap: bool) -> Option<String> {
        let spec = &self
            .topo
            .pipeline(self.topo.channel(self.id).pipeline)
            .stages[stage];
        match &spec.kind {
            StageKind::External {
                provider,
                cheap_provider,
            } => Some(match (cheap, cheap_provider) {
                (true, Some(c)) => c.clone(),
                _ => provider.clone(),
            }),
            _ => None,
        }
    }

    fn on_job_finished(&mut self, now_ms: u64, id: JobId, outcome: JobOutcome) {
        let Some(v) = self.videos.get(&id.slot) else {
            return;
        };
        match v.run {
            Run::Job { id: running, .. } if running == id => {}
            _ => return,
        }
        let cheap = matches!(
            &self
                .topo
                .pipeline(self.topo.channel(self.id).pipeline)
                .stages[id.stage as usize]
                .kind,
            StageKind::External { .. }
        ) && v.rec.held_micros
            < stage_cost_bound_micros(
                &self
                    .topo
                    .pipeline(self.topo.channel(self.id).pipeline)
                    .stages[id.stage as usize],
                self.gpu_cost_max,
                false,
            );
        let provider = self.provider_of(id.stage as usize, cheap);
        match outcome {
            JobOutcome::Succeeded { cost_micros } => {
                self.settle_held(id.slot, cost_micros);
                if let Some(p) = provider {
                    self.breaker(&p).on_success();
                }
                if let Some(v) = self.videos.get_mut(&id.slot) {
                    v.rec.stage += 1;
                    v.rec.attempt = 0;
                    v.rec.stage_failures = 0;
                    v.rec.jobs_lost = 0;
                    v.run = Run::Idle;
                    v.wake_ms = now_ms;
                }
            }
            JobOutcome::Failed {
                failure,
                retryable,
                cost_micros,
            } => {
                self.settle_held(id.slot, cost_micros);
                let real = failure.is_stage_failure();
                if let Some(p) = provider {
                    if real {
                        self.breaker(&p).on_failure(now_ms);
                    } else {
                        self.breaker(&p).on_abandoned();
                    }
                }
                if real {
                    self.after_stage_failure(now_ms, id.slot, retryable);
                } else {
                    self.after_job_lost(now_ms, id.slot);
                }
            }
        }
        self.dirty.insert(id.slot);
    }

    /// The stage itself failed: this spends its retry budget.
    fn after_stage_failure(&mut self, now_ms: u64, slot: u64, retryable: bool) {
        let attempts_max = self.params.stage_attempts_max;
        let old_accounting = self.params.sabotage.no_true_retry_accounting;
        let jitter = self.rng.next_u32();
        let (base, max) = (self.params.retry_base_ms, self.params.retry_max_ms);
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        v.rec.stage_failures = v.rec.stage_failures.saturating_add(1);
        // Sabotaged: every job started at the stage counts, as it once did.
        let spent = if old_accounting {
            v.rec.attempt
        } else {
            v.rec.stage_failures
        };
        if !retryable {
            self.fail_video(slot, FailReason::StageFailed);
        } else if spent >= attempts_max {
            probe!(StageRetriesExhausted);
            self.fail_video(slot, FailReason::StageRetriesExhausted);
        } else {
            probe!(StageFailure);
            v.run = Run::Idle;
            v.wake_ms = now_ms + backoff_ms(v.rec.stage_failures, base, max, jitter);
        }
    }

    /// The job was lost or turned away without the stage failing (its GPU
    /// or node went away, it never reached a GPU, no GPU could take it):
    /// counted on its own, never against the stage's retry budget.
    fn after_job_lost(&mut self, now_ms: u64, slot: u64) {
        if self.params.sabotage.no_true_retry_accounting {
            self.after_stage_failure(now_ms, slot, true);
            return;
        }
        let lost_max = self.params.jobs_lost_max;
        let jitter = self.rng.next_u32();
        let (base, max) = (self.params.retry_base_ms, self.params.retry_max_ms);
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        probe!(JobLost);
        v.rec.jobs_lost = v.rec.jobs_lost.saturating_add(1);
        if v.rec.jobs_lost >= lost_max {
            self.fail_video(slot, FailReason::JobsLost);
        } else {
            v.run = Run::Idle;
            v.wake_ms = now_ms + backoff_ms(v.rec.jobs_lost, base, max, jitter);
        }
    }

    fn breaker(&mut self, provider: &str) -> &mut Breaker {
        let params = self.params.breaker;
        self.breakers
            .entry(provider.to_string())
            .or_insert_with(|| Breaker::new(params))
    }

    fn mark_published(&mut self, slot: u64, remote_id: String) {
        if let Some(v) = self.videos.get_mut(&slot) {
            v.rec.status = VideoStatus::Published { remote_id };
            v.rec.publish_intent = false;
            v.rec.stage = v.rec.stage.saturating_add(1);
            v.run = Run::Idle;
            self.dirty.insert(slot);
        }
    }

    fn on_publish_result(&mut self, now_ms: u64, slot: u64, attempt: u32, outcome: PublishOutcome) {
        let Some(v) = self.videos.get(&slot) else {
            return;
        };
        match v.run {
            Run::Publishing { attempt: a, .. } if a == attempt => {}
            _ => return,
        }
        let jitter = self.rng.next_u32();
        let (base, max) = (self.params.retry_base_ms, self.params.retry_max_ms);
        let reset = self.next_quota_reset_ms(now_ms);
        let failures_max = self.params.publish_attempts_max;
        match outcome {
            PublishOutcome::Published { remote_id } => self.mark_published(slot, remote_id),
            definite => {
                self.quota_changes.push(QuotaChange::Refund { slot });
                let Some(v) = self.videos.get_mut(&slot) else {
                    return;
                };
                v.run = Run::Idle;
                match definite {
                    PublishOutcome::RateLimited { retry_after_ms } => {
                        probe!(UploadRateLimited);
                        v.wake_ms = now_ms + retry_after_ms.max(backoff_ms(1, base, max, jitter));
                    }
                    PublishOutcome::QuotaExceeded => {
                        probe!(UploadQuotaRefused);
                        v.wake_ms = reset;
                    }
                    _ => {
                        probe!(UploadTransient);
                        v.rec.stage_failures = v.rec.stage_failures.saturating_add(1);
                        v.wake_ms = now_ms + backoff_ms(v.rec.stage_failures, base, max, jitter);
                        if v.rec.stage_failures >= failures_max {
                            self.fail_video(slot, FailReason::StageRetriesExhausted);
                        }
                    }
                }
            }
        }
    }

    fn on_lookup_result(&mut self, now_ms: u64, slot: u64, outcome: LookupOutcome) {
        let Some(v) = self.videos.get(&slot) else {
            return;
        };
        if !matches!(v.run, Run::LookingUp { .. }) {
            return;
        }
        let jitter = self.rng.next_u32();
        let (base, max) = (self.params.retry_base_ms, self.params.retry_max_ms);
        match outcome {
            LookupOutcome::Found { remote_id } => {
                probe!(LookupFoundUpload);
                if v.taken_over_intent {
                    probe!(LookupFoundAfterTakeover);
                }
                self.mark_published(slot, remote_id)
            }
            LookupOutcome::NotFound => {
                probe!(LookupNotFound);
                // The upload never completed: its reservation comes back and
                // the video publishes afresh.
                self.quota_changes.push(QuotaChange::Refund { slot });
                if let Some(v) = self.videos.get_mut(&slot) {
                    v.run = Run::Idle;
                    v.wake_ms = now_ms;
                }
                if self.control().killed {
                    self.fail_video(slot, FailReason::Killed);
                }
            }
            LookupOutcome::Failed => {
                probe!(LookupFailed);
                if let Some(v) = self.videos.get_mut(&slot) {
                    v.run = Run::Idle;
                    v.needs_lookup = true;
                    v.wake_ms = now_ms + backoff_ms(2, base, max, jitter);
                }
            }
        }
    }

    fn requeue(&mut self, commit: InFlight) {
        let InFlight::Commit {
            slots,
            actions,
            quota,
            undo,
            ..
        } = commit
        else {
            return;
        };
        self.dirty.extend(slots);
        self.chan_dirty = true;
        for rec in undo.into_iter().rev() {
            if let Some(v) = self.videos.get_mut(&rec.slot) {
                v.rec = rec;
            }
        }
        let stopped = {
            let c = self.control();
            c.paused || c.killed
        };
        let mut kept = Vec::new();
        for a in actions {
            if let Action::StartJob(spec) = a {
                if stopped {
                    // Not started, and now it must not: the charge was never
                    // durable, so it is taken back exactly.
                    probe!(StartDroppedAfterStop);
                    self.settle_held(spec.id.slot, 0);
                    if let Some(v) = self.videos.get_mut(&spec.id.slot) {
                        v.run = Run::Idle;
                        v.rec.attempt = v.rec.attempt.saturating_sub(1);
                    }
                } else {
                    kept.push(Action::StartJob(spec));
                }
            }
        }
        kept.append(&mut self.actions);
        self.actions = kept;
        let mut q = quota;
        q.append(&mut self.quota_changes);
        self.quota_changes = q;
    }

    fn on_resolved(
        &mut self,
        now_ms: u64,
        commit: InFlight,
        entries: Vec<Option<Entry>>,
        out: &mut Vec<ChannelEffect>,
    ) {
        let mut it = entries.into_iter();
        let owner = it.next().flatten();
        let chan = it.next().flatten();
        let control_all = it.next().flatten();
        let control = it.next().flatten();
        self.adopt_control(now_ms, control_all, control, out);
        let owner_ok = owner
            .and_then(|e| OwnerRecord::decode(&e.value).ok())
            .map(|o| o == self.owner_record())
            .unwrap_or(false);
        if !owner_ok && !self.params.sabotage.no_epoch_fencing {
            probe!(FencedAtReadBack);
            self.stop(out, ChannelEffect::Fenced);
            return;
        }
        let InFlight::Commit {
            seq, quota_after, ..
        } = &commit
        else {
            return;
        };
        for ((day, _), e) in quota_after.iter().zip(it) {
            self.cache_quota(*day, e);
        }
        let (applied_seq, version) = match &chan {
            Some(e) => (
                ChannelRecord::decode(&e.value)
                    .map(|r| r.write_seq)
                    .unwrap_or(0),
                e.version,
            ),
            None => (0, 0),
        };
        if applied_seq >= *seq && !self.params.sabotage.no_epoch_fencing {
            // It was applied after all.
            probe!(CommitAppliedAfterAll);
            let cache: Vec<(u64, (QuotaRecord, u64))> = quota_after
                .iter()
                .filter_map(|(d, _)| self.quota_cache.get(d).cloned().map(|c| (*d, c)))
                .collect();
            self.on_committed(now_ms, commit, version, out);
            for (d, c) in cache {
                self.quota_cache.insert(d, c);
            }
        } else {
            probe!(CommitNotApplied);
            self.chan_version = version;
            self.requeue(commit);
        }
    }

    fn on_committed(
        &mut self,
        now_ms: u64,
        commit: InFlight,
        version: u64,
        out: &mut Vec<ChannelEffect>,
    ) {
        let InFlight::Commit {
            slots,
            actions,
            quota_after,
            release,
            ..
        } = commit
        else {
            return;
        };
        self.chan_version = version;
        for (day, rec) in quota_after {
            self.quota_cache.insert(day, (rec, version));
        }
        for slot in slots {
            let done = self
                .videos
                .get(&slot)
                .map(|v| v.rec.is_done())
                .unwrap_or(false);
            if done && !self.dirty.contains(&slot) {
                if let Some(v) = self.videos.remove(&slot) {
                    out.push(ChannelEffect::VideoDone {
                        slot,
                        status: v.rec.status,
                    });
                }
            }
        }
        let killed = self.control().killed;
        for action in actions {
            match action {
                Action::StartJob(spec) => {
                    let slot = spec.id.slot;
                    if killed {
                        self.fail_video(slot, FailReason::Killed);
                        continue;
                    }
                    let Some(v) = self.videos.get_mut(&slot) else {
                        continue;
                    };
                    let is_gpu = spec.kind == JobKind::Gpu;
                    let deadline_ms = if is_gpu {
                        now_ms + self.params.dispatch_timeout_ms
                    } else {
                        // Executors stop a local job at its longest
                        // duration plus one grace and report that as a
                        // failure; silence for a second grace means the
                        // job was lost.
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
                Action::Publish { slot } => {
                    // The reservation was built while the lease was valid,
                    // but its answer may come much later (a stalled or
                    // frozen process): by then another node may own the
                    // channel and have published. Upload only while the
                    // lease still holds; else give the reservation back
                    // (nothing was sent) and start over.
                    if self.lease_valid_until_ms <= now_ms + LEASE_MARGIN_MS {
                        probe!(PublishHeldForLease);
                        self.quota_changes.push(QuotaChange::Refund { slot });
                        if let Some(v) = self.videos.get_mut(&slot) {
                            v.run = Run::Idle;
                            v.wake_ms = now_ms;
                        }
                        self.lease_wanted = true;
                        continue;
                    }
                    let name = &self.topo.channel(self.id).name;
                    let key = idempotency_key(name, slot);
                    let Some(v) = self.videos.get_mut(&slot) else {
                        continue;
                    };
                    v.upload_attempt += 1;
                    v.run = Run::Publishing {
                        attempt: v.upload_attempt,
                        deadline_ms: now_ms + self.params.publish_timeout_ms,
                    };
                    out.push(ChannelEffect::Publish {
                        slot,
                        attempt: v.upload_attempt,
                        idempotency_key: key,
                        timeout_ms: self.params.publish_timeout_ms,
                    });
                }
                Action::Lookup { slot } => {
                    let key = idempotency_key(&self.topo.channel(self.id).name, slot);
                    let Some(v) = self.videos.get_mut(&slot) else {
                        continue;
                    };
                    v.run = Run::LookingUp {
                        deadline_ms: now_ms + self.params.publish_timeout_ms,
                    };
                    out.push(ChannelEffect::Lookup {
                        slot,
                        idempotency_key: key,
                    });
                }
            }
        }
        if release {
            self.stop(out, ChannelEffect::Released);
        }
    }

    /// Everything that happens because time passed or state changed.
    fn step(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        if self.phase == Phase::Stopped {
            return;
        }
        for (id, gpu) in self.cancels.drain(..) {
            out.push(ChannelEffect::CancelJob { id, gpu });
        }
        if self.phase == Phase::Loading {
            if self.started && self.inflight.is_none() && now_ms >= self.store_wait_until_ms {
                self.issue(
                    InFlight::Load,
                    StoreOp::Get(vec![
                        owner_key(self.id),
                        channel_key(self.id),
                        control_key(self.id),
                        CONTROL_ALL_KEY.to_vec(),
                    ]),
                    out,
                );
            }
            self.deadline = (self.inflight.is_none() && self.started)
                .then_some(self.store_wait_until_ms.max(now_ms + 1));
            return;
        }
        self.check_timeouts(now_ms, out);
        let today = Self::today(now_ms);
        if self.chan.spend_day != today {
            self.chan.spend_day = today;
            self.chan.spent_day_micros = 0;
            self.chan_dirty = true;
        }
        let control = self.control();
        let may_start = self.phase == Phase::Running && !control.paused && !control.killed;
        if may_start {
            self.plan(now_ms);
        }
        if self.phase == Phase::Releasing {
            // The next owner reconciles whatever is not settled here.
            self.quota_changes
                .retain(|q| matches!(q, QuotaChange::Refund { .. }));
            let dropped: Vec<u64> = self
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::StartJob(s) => Some(s.id.slot),
                    _ => None,
                })
                .collect();
            self.actions.clear();
            for slot in dropped {
                if let Some(v) = self.videos.get_mut(&slot) {
                    v.run = Run::Idle;
                }
            }
            for v in self.videos.values_mut() {
                if v.run == Run::AwaitCommit {
                    v.run = Run::Idle;
                }
            }
        }
        if may_start {
            let ready: Vec<u64> = self
                .videos
                .iter()
                .filter(|(_, v)| v.run == Run::Idle && v.wake_ms <= now_ms && !v.rec.is_done())
                .map(|(s, _)| *s)
                .collect();
            for slot in ready {
                self.advance(now_ms, slot);
            }
        } else if control.killed {
            let slots: Vec<u64> = self.videos.keys().copied().collect();
            for slot in slots {
                self.kill_video(now_ms, slot);
            }
            // Uploads whose outcome is unknown still settle after a kill.
            let unknown: Vec<u64> = self
                .videos
                .iter()
                .filter(|(_, v)| v.run == Run::Idle && v.needs_lookup && v.wake_ms <= now_ms)
                .map(|(s, _)| *s)
                .collect();
            if self.phase == Phase::Running {
                for slot in unknown {
                    self.advance(now_ms, slot);
                }
            }
            for (id, gpu) in self.cancels.drain(..) {
                out.push(ChannelEffect::CancelJob { id, gpu });
            }
        }
        self.ask_lease(now_ms, out);
        if self.inflight.is_none() && now_ms >= self.store_wait_until_ms {
            if let Some(commit) = self.pending_resolve.take() {
                self.issue_resolve(commit, out);
            } else {
                self.build_commit(now_ms, out);
            }
        }
        let settling = control.killed && self.phase == Phase::Running;
        self.deadline = self.compute_deadline(now_ms, may_start, settling);
    }

    /// `slot` waits for a lease valid long enough: ask for it, and try the
    /// slot again as soon as the answer comes.
    fn wait_for_lease(&mut self, slot: u64) {
        self.lease_wanted = true;
        self.lease_waiters.insert(slot);
    }

    /// Asks for the node's lease when a video waits for it, at most once a
    /// second while unanswered (an answer may be lost with a restart).
    fn ask_lease(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        let wanted = std::mem::take(&mut self.lease_wanted);
        let asked_lately = self
            .lease_asked_ms
            .is_some_and(|t| now_ms < t + LEASE_ASK_INTERVAL_MS);
        if wanted && !asked_lately {
            self.lease_asked_ms = Some(now_ms);
            out.push(ChannelEffect::AskLease);
        }
    }

    fn issue_resolve(&mut self, commit: InFlight, out: &mut Vec<ChannelEffect>) {
        let mut keys = vec![
            owner_key(self.id),
            channel_key(self.id),
            CONTROL_ALL_KEY.to_vec(),
            control_key(self.id),
        ];
        if let InFlight::Commit { quota_after, .. } = &commit {
            for (day, _) in quota_after {
                keys.push(quota_key(self.project(), *day));
            }
        }
        self.issue(
            InFlight::Resolve {
                commit: Box::new(commit),
            },
            StoreOp::Get(keys),
            out,
        );
    }

    fn check_timeouts(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        let mut expired_jobs = Vec::new();
        let mut expired_uploads = Vec::new();
        let mut expired_lookups = Vec::new();
        for (slot, v) in &self.videos {
            match v.run {
                Run::Job {
                    id,
                    gpu,
                    deadline_ms,
                    ..
                } if deadline_ms <= now_ms => expired_jobs.push((*slot, id, gpu)),
                Run::Publishing { deadline_ms, .. } if deadline_ms <= now_ms => {
                    expired_uploads.push(*slot)
                }
                Run::LookingUp { deadline_ms } if deadline_ms <= now_ms => {
                    expired_lookups.push(*slot)
                }
                _ => {}
            }
        }
        for (slot, id, gpu) in expired_jobs {
            out.push(ChannelEffect::CancelJob { id, gpu });
            // The job may have run: its whole reservation stays charged.
            if let Some(v) = self.videos.get_mut(&slot) {
                v.rec.held_micros = 0;
            }
            // No answer in time: the job never reached a GPU, or its node
            // went away (a live GPU or executor reports its own timeouts
            // before this deadline). The stage did not fail.
            let provider = self.provider_of(id.stage as usize, false);
            if let Some(p) = provider {
                self.breaker(&p).on_abandoned();
            }
            self.after_job_lost(now_ms, slot);
            self.dirty.insert(slot);
        }
        for slot in expired_uploads {
            probe!(UploadTimedOut);
            if self.params.sabotage.no_reconciliation {
                // Sabotaged: a silent upload is taken as failed and retried.
                self.quota_changes.push(QuotaChange::Refund { slot });
                if let Some(v) = self.videos.get_mut(&slot) {
                    v.run = Run::Idle;
                    v.wake_ms = now_ms;
                }
            } else if let Some(v) = self.videos.get_mut(&slot) {
                // The upload was abandoned at its timeout: ask what happened.
                v.run = Run::Idle;
                v.needs_lookup = true;
                v.wake_ms = now_ms;
            }
        }
        let jitter = self.rng.next_u32();
        for slot in expired_lookups {
            probe!(LookupFailed);
            if let Some(v) = self.videos.get_mut(&slot) {
                v.run = Run::Idle;
                v.needs_lookup = true;
                v.wake_ms = now_ms
                    + backoff_ms(
                        2,
                        self.params.retry_base_ms,
                        self.params.retry_max_ms,
                        jitter,
                    );
            }
        }
    }

    fn plan(&mut self, now_ms: u64) {
        while self.videos.len() < self.params.active_videos_max {
            let slot = self.chan.next_slot;
            let at = self.slot_publish_at(slot);
            if at > now_ms + self.params.plan_lead_ms {
                break;
            }
            self.chan.next_slot += 1;
            self.chan_dirty = true;
            if at + self.params.publish_grace_ms < now_ms {
                continue; // missed while nobody owned the channel
            }
            self.videos.insert(
                slot,
                Video {
                    rec: VideoRecord::new(slot),
                    run: Run::Idle,
                    wake_ms: now_ms,
                    upload_attempt: 0,
                    needs_lookup: false,
                    taken_over_intent: false,
                },
            );
            self.dirty.insert(slot);
        }
    }

    /// Starts the next step of an idle video, if its budget, breaker,
    /// quota and lease allow.
    fn advance(&mut self, now_ms: u64, slot: u64) {
        let lease_ok = self.lease_valid_until_ms > now_ms + LEASE_MARGIN_MS + RESERVE_LEASE_MS;
        let stage_count = self.stage_count();
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        // Unless a step below starts, look again a little later.
        v.wake_ms = now_ms + 250;
        if v.needs_lookup {
            if lease_ok {
                v.needs_lookup = false;
                v.run = Run::AwaitCommit;
                self.quota_changes.push(QuotaChange::ReserveLookup { slot });
            } else {
                self.wait_for_lease(slot);
            }
            return;
        }
        let stage_ix = v.rec.stage as usize;
        if stage_ix >= stage_count {
            return;
        }
        let topo = Arc::clone(&self.topo);
        let spec = topo.channel(self.id);
        let stage = &topo.pipeline(spec.pipeline).stages[stage_ix];
        if stage.kind == StageKind::Publish {
            if v.rec.publish_intent {
                return; // a refund goes first
            }
            if !lease_ok {
                self.wait_for_lease(slot);
                return;
            }
            self.quota_changes
                .push(QuotaChange::ReservePublish { slot });
            if let Some(v) = self.videos.get_mut(&slot) {
                v.run = Run::AwaitCommit;
            }
            return;
        }
        let today = Self::today(now_ms);
        let budget = spec.budget;
        let full = stage_cost_bound_micros(stage, self.gpu_cost_max, false);
        let has_cheap = matches!(
            &stage.kind,
            StageKind::External {
                cheap_provider: Some(_),
                ..
            }
        );
        let cost_so_far = v.rec.cost_micros;
        let cheap = has_cheap
            && (self.chan.spent_day_micros.saturating_add(full) > budget.daily_soft_micros
                || cost_so_far.saturating_add(full) > budget.per_video_soft_micros);
        let bound = stage_cost_bound_micros(stage, self.gpu_cost_max, cheap);
        if cheap {
            probe!(CheapTierChosen);
        }
        if cost_so_far.saturating_add(bound) > budget.per_video_hard_micros {
            probe!(BudgetStop);
            self.fail_video(slot, FailReason::VideoBudget);
            return;
        }
        if self.chan.spent_day_micros.saturating_add(bound) > budget.daily_hard_micros {
            probe!(BudgetStop);
            self.fail_video(slot, FailReason::DailyBudget);
            return;
        }
        let kind = match &stage.kind {
            StageKind::Cpu => JobKind::Cpu,
            StageKind::Gpu => JobKind::Gpu,
            StageKind::External { .. } => {
                let provider = self.provider_of(stage_ix, cheap).unwrap_or_default();
                if let Err(until) = self.breaker(&provider).try_acquire(now_ms) {
                    probe!(BreakerHeldBack);
                    if let Some(v) = self.videos.get_mut(&slot) {
                        v.wake_ms = until;
                    }
                    return;
                }
                JobKind::External { provider }
            }
            StageKind::Publish => return,
        };
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        v.rec.attempt += 1;
        v.rec.cost_micros += bound;
        v.rec.held_micros = bound;
        v.rec.held_day = today;
        v.run = Run::AwaitCommit;
        self.chan.spent_day_micros += bound;
        self.chan.spent_total_micros += bound;
        self.chan_dirty = true;
        self.dirty.insert(slot);
        let id = JobId {
            channel: self.id,
            slot,
            stage: stage_ix as u16,
            attempt: v.rec.attempt,
            epoch: self.epoch,
        };
        self.actions.push(Action::StartJob(JobSpec {
            id,
            owner: self.node,
            kind,
            gpu_memory_bytes: stage.gpu_memory_bytes,
            duration: stage.duration,
            fixed_cost_micros: if cheap {
                stage.cost.cheap_fixed_micros
            } else {
                stage.cost.fixed_micros
            },
            priority: spec.priority,
            home_region: spec.home_region,
            budget_day: today,
            hops: 0,
        }));
    }

    fn quota_day_of(&self, change: &QuotaChange, now_ms: u64) -> Option<u64> {
        match change {
            QuotaChange::ReservePublish { .. } | QuotaChange::ReserveLookup { .. } => {
                Some(self.topo.project(self.project()).quota_day(now_ms))
            }
            QuotaChange::Refund { slot } => self.videos.get(slot).map(|v| v.rec.quota_day),
        }
    }

    fn build_commit(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        let releasing = self.phase == Phase::Releasing;
        let uploads_in_flight = self
            .videos
            .values()
            .any(|v| matches!(v.run, Run::Publishing { .. } | Run::LookingUp { .. }));
        let release = releasing && !uploads_in_flight;
        if releasing && uploads_in_flight {
            probe!(ReleaseWaitsForUpload);
        }
        if self.dirty.is_empty()
            && !self.chan_dirty
            && self.actions.is_empty()
            && self.quota_changes.is_empty()
            && !release
        {
            return;
        }
        let sabotage_quota = self.params.sabotage.no_quota_reservation;
        // Quota ledgers must be known before a change to them is built.
        if !sabotage_quota {
            let mut missing: Vec<u64> = self
                .quota_changes
                .iter()
                .filter_map(|c| self.quota_day_of(c, now_ms))
                .filter(|d| !self.quota_cache.contains_key(d))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            if !missing.is_empty() {
                let keys = missing
                    .iter()
                    .map(|d| quota_key(self.project(), *d))
                    .collect();
                self.issue(InFlight::ReadQuota(missing), StoreOp::Get(keys), out);
                return;
            }
        }
        let topo = Arc::clone(&self.topo);
        let project = topo.project(self.project());
        let publish_units = project.publish_units();
        let mut lookup_units = vec![0u64; project.buckets.len()];
        lookup_units[project.lookup_cost.bucket] += project.lookup_cost.units;
        let mut quota_after: BTreeMap<u64, QuotaRecord> = BTreeMap::new();
        let mut undo = Vec::new();
        let mut applied = Vec::new();
        let mut actions = std::mem::take(&mut self.actions);
        let reset = self.next_quota_reset_ms(now_ms);
        for change in std::mem::take(&mut self.quota_changes) {
            let Some(day) = self.quota_day_of(&change, now_ms) else {
                continue;
            };
            let slot = match change {
                QuotaChange::ReservePublish { slot }
                | QuotaChange::ReserveLookup { slot }
                | QuotaChange::Refund { slot } => slot,
            };
            let Some(v) = self.videos.get(&slot) else {
                continue;
            };
            let publish_at = self.slot_publish_at(slot);
            if sabotage_quota {
                // Sabotaged: publish with no reservation at all.
                match change {
                    QuotaChange::ReservePublish { slot } => {
                        if let Some(v) = self.videos.get_mut(&slot) {
                            v.rec.publish_intent = true;
                        }
                        actions.push(Action::Publish { slot });
                    }
                    QuotaChange::ReserveLookup { slot } => actions.push(Action::Lookup { slot }),
                    QuotaChange::Refund { slot } => {
                        if let Some(v) = self.videos.get_mut(&slot) {
                            v.rec.publish_intent = false;
                        }
                    }
                }
                self.dirty.insert(slot);
                continue;
            }
            let ledger = quota_after.entry(day).or_insert_with(|| {
                let mut r = self
                    .quota_cache
                    .get(&day)
                    .map(|(r, _)| r.clone())
                    .unwrap_or_default();
                r.used.resize(project.buckets.len(), 0);
                r
            });
            let (units, sign): (&[u64], i8) = match change {
                QuotaChange::ReservePublish { .. } => (&publish_units, 1),
                QuotaChange::ReserveLookup { .. } => (&lookup_units, 1),
                QuotaChange::Refund { .. } => (&publish_units, -1),
            };
            if sign > 0 {
                let fits = ledger
                    .used
                    .iter()
                    .zip(units)
                    .zip(&project.buckets)
                    .all(|((used, u), b)| used + u <= b.units_per_day);
                if !fits {
                    // Out of quota today: wait for the reset, or give up once
                    // the slot is too late to matter.
                    let late = now_ms > publish_at + self.params.publish_grace_ms;
                    if late {
                        probe!(QuotaExhaustedLate);
                        if let Some(v) = self.videos.get_mut(&slot) {
                            v.rec.status = VideoStatus::Failed(FailReason::QuotaExhausted);
                            v.run = Run::Idle;
                        }
                        self.dirty.insert(slot);
                    } else if let Some(v) = self.videos.get_mut(&slot) {
                        probe!(QuotaWaitForReset);
                        v.run = Run::Idle;
                        // Back at the reset, or when the slot turns too late.
                        v.wake_ms = reset.min(publish_at + self.params.publish_grace_ms + 1);
                        v.needs_lookup = matches!(change, QuotaChange::ReserveLookup { .. });
                    }
                    continue;
                }
            } else if !v.rec.publish_intent {
                continue; // nothing reserved to give back
            }
            undo.push(v.rec.clone());
            let total: u64 = units.iter().sum();
            for (used, u) in ledger.used.iter_mut().zip(units) {
                *used = if sign > 0 {
                    *used + u
                } else {
                    used.saturating_sub(*u)
                };
            }
            let Some(v) = self.videos.get_mut(&slot) else {
                continue;
            };
            match change {
                QuotaChange::ReservePublish { slot } => {
                    v.rec.publish_intent = true;
                    v.rec.quota_day = day;
                    v.rec.quota_units += total;
                    actions.push(Action::Publish { slot });
                }
                QuotaChange::ReserveLookup { slot } => {
                    v.rec.quota_units += total;
                    actions.push(Action::Lookup { slot });
                }
                QuotaChange::Refund { .. } => {
                    v.rec.publish_intent = false;
                    v.rec.quota_units = v.rec.quota_units.saturating_sub(total);
                }
            }
            applied.push(change);
            self.dirty.insert(slot);
        }
        let mut txn = Txn {
            checks: self.fence_checks(),
            writes: Vec::new(),
        };
        for day in quota_after.keys() {
            let version = self.quota_cache.get(day).map(|(_, v)| *v).unwrap_or(0);
            txn.checks
                .push(Check::VersionIs(quota_key(self.project(), *day), version));
        }
        self.chan.write_seq += 1;
        let seq = self.chan.write_seq;
        txn.writes
            .push(Write::Put(channel_key(self.id), self.chan.encode()));
        let slots: Vec<u64> = std::mem::take(&mut self.dirty).into_iter().collect();
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
        for (day, rec) in &quota_after {
            txn.writes
                .push(Write::Put(quota_key(self.project(), *day), rec.encode()));
        }
        let release = release && actions.is_empty();
        if release {
            txn.writes.push(Write::Put(
                owner_key(self.id),
                OwnerRecord {
                    node: None,
                    epoch: self.epoch,
                    incarnation: self.incarnation,
                }
                .encode(),
            ));
        }
        self.chan_dirty = false;
        let op = StoreOp::Commit(txn);
        self.issue(
            InFlight::Commit {
                seq,
                slots,
                actions,
                quota: applied,
                undo,
                quota_after: quota_after.into_iter().collect(),
                release,
            },
            op,
            out,
        );
    }

    fn compute_deadline(&self, now_ms: u64, may_start: bool, settling: bool) -> Option<u64> {
        let mut best: Option<u64> = None;
        let mut consider = |t: u64| {
            let t = t.max(now_ms + 1);
            best = Some(best.map_or(t, |b: u64| b.min(t)));
        };
        for v in self.videos.values() {
            match v.run {
                Run::Idle if (may_start || (settling && v.needs_lookup)) && !v.rec.is_done() => {
                    consider(v.wake_ms)
                }
                Run::Job { deadline_ms, .. }
                | Run::Publishing { deadline_ms, .. }
                | Run::LookingUp { deadline_ms } => consider(deadline_ms),
                _ => {}
            }
        }
        if may_start && self.videos.len() < self.params.active_videos_max {
            let at = self.slot_publish_at(self.chan.next_slot);
            consider(at.saturating_sub(self.params.plan_lead_ms));
        }
        let pending = !self.dirty.is_empty()
            || self.chan_dirty
            || !self.actions.is_empty()
            || !self.quota_changes.is_empty()
            || self.pending_resolve.is_some()
            || self.phase == Phase::Releasing;
        if self.inflight.is_none() && pending {
            consider(self.store_wait_until_ms);
        }
        // Spend resets at the next UTC day.
        consider((now_ms / DAY_MS + 1) * DAY_MS);
        best
    }
}
