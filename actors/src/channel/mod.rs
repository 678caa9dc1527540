//! `ChannelMachine`: one channel's videos, from plan to publish.
//!
//! How to drive it (the [`crate::machine::Machine`] contract): construct it
//! for a (channel, node, epoch) that the membership machine has claimed,
//! feed [`ChannelInput::Start`], then every input as it arrives, with a
//! `now_ms` that never goes backwards, and a [`ChannelInput::Tick`] whenever
//! `now_ms` reaches [`ChannelMachine::next_deadline`]. Effects come out in
//! order; the executor carries them out and feeds results back: store
//! replies by `op_id`, job results by `JobId`, publish and lookup results by
//! slot, the node's lease when asked ([`ChannelEffect::AskLease`]).
//!
//! What it guarantees, and where:
//! - every store write is fenced by the owner record (node, epoch) and by the
//!   version of the channel record; a stale owner changes nothing
//!   (`control.rs`, `fence_checks`);
//! - work starts only after its cost is durably charged against the budget
//!   (`schedule.rs`, `commit.rs`);
//! - an upload starts only after its quota is durably reserved together with
//!   a publish intent, and only while the node's lease holds from building
//!   the reservation to sending the upload; the reservation is refunded
//!   only on a definite failure (`commit.rs`, `publish.rs`);
//! - a video with an intent whose outcome is unknown (timeout, takeover) is
//!   looked up by its idempotency key before it is published again;
//! - only real failures of a stage spend its retry budget; lost jobs are
//!   bounded on their own (`jobs.rs`);
//! - one store operation is in flight at a time, so the machine's view of the
//!   store only changes through its own replies (`store_io.rs`).
//!
//! The files: `video.rs` (a video's run state and pending work),
//! `schedule.rs` (planning slots and advancing videos), `jobs.rs` (job
//! results and timeouts), `publish.rs` (uploads, lookups, the lease),
//! `control.rs` (pause, kill, fence), `commit.rs` (building a commit),
//! `store_io.rs` (store operations and their replies).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use topology::{ChannelId, GpuId, NodeId, Topology, DAY_MS};

use crate::breaker::{Breaker, BreakerParams};
use crate::machine::Monotonic;
use crate::protocol::{JobId, JobOutcome, JobSpec, LookupOutcome, PublishOutcome};
use crate::records::{ChannelRecord, ControlRecord, QuotaRecord, VideoStatus};
use crate::rng::SeededRng;
use crate::sabotage::Sabotage;
use crate::store::{StoreOp, StoreReply};

mod commit;
mod control;
mod jobs;
mod publish;
mod schedule;
mod store_io;
mod video;

use store_io::{InFlight, PendingCommit};
use video::{Action, QuotaChange, Run, SlotSet, Video};

pub const LEASE_MARGIN_MS: u64 = 100;
/// A commit answered later than this after it was sent is late: the lease
/// known here must be checked before its job starts (a live store answers
/// in milliseconds; the shortest lease allowed is 200 ms plus a margin).
pub const LATE_REPLY_MS: u64 = 200;
/// The deadline of a start held for the lease: none (a good lease, a stop
/// or the channel's end decides), far enough never to come.
pub const HELD_DEADLINE_MS: u64 = u64::MAX / 4;

/// A publish reservation is built only while the lease is valid for this
/// much longer than [`LEASE_MARGIN_MS`]: the reservation's commit must come
/// back, and the upload start, while the lease still holds.
pub const RESERVE_LEASE_MS: u64 = 300;

/// An unanswered [`ChannelEffect::AskLease`] is repeated after this long.
pub const LEASE_ASK_INTERVAL_MS: u64 = 1_000;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
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
    // Never recorded: a replayed machine runs with every switch off.
    #[serde(skip)]
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

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
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
    /// A budget or quota record an operator set for this channel (or its
    /// project), as membership read it with the control records; older
    /// versions than the one known are ignored.
    LimitRecord(crate::store::Entry),
    /// Hand the channel over: settle uploads, then release ownership.
    Release,
    /// The node's lease is certainly valid until then (this node's clock):
    /// the answer to [`ChannelEffect::AskLease`].
    Lease {
        valid_until_ms: u64,
    },
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
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
    /// A video reached its end (for metrics and the simulator's checks):
    /// what it cost, and the instant its slot was to be published (Unix
    /// ms), against which a node measures how late it went out.
    VideoDone {
        slot: u64,
        status: VideoStatus,
        cost_micros: u64,
        publish_at_ms: u64,
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

/// One channel's machine: see the module docs for how to drive it.
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
    /// The operator's budget for this channel (None: the config's), and
    /// the version of its record: every write checks it.
    budget_set: Option<topology::Budget>,
    budget_version: u64,
    /// The operator's daily units per bucket of this channel's project
    /// (None: the config's), and the version of its record.
    quota_set: Option<Vec<u64>>,
    quota_set_version: u64,
    /// A read-back found the limits above changed: uncommitted job starts
    /// go back and are decided again under them.
    limits_changed: bool,
    videos: BTreeMap<u64, Video>,
    dirty: SlotSet,
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
    /// An ask went out and no answer (good or not) came back yet.
    lease_answer_pending: bool,
    /// The pending commit waits for the lease's answer until then
    /// (`commit_waits_for_lease`); cleared when a commit goes out.
    commit_held_until_ms: Option<u64>,
    /// Committed starts answered late, waiting for a lease known good now
    /// (by slot).
    held_starts: BTreeMap<u64, crate::protocol::JobSpec>,
    /// Committed publish reservations answered when the lease known here
    /// was about to run out, waiting for a lease known good now (by slot).
    /// The videos in `Run::UploadHeld` (a slot whose video failed since is
    /// skipped): kept beside them so that `step`, on every input, tests an
    /// empty set instead of scanning the videos.
    held_uploads: BTreeSet<u64>,
    release_requested: bool,
    gpu_cost_max: u64,
    deadline: Option<u64>,
    started: bool,
    /// Job cancels decided outside `step`, flushed by it.
    cancels: Vec<(JobId, Option<GpuId>)>,
    /// A read-back that failed to reach the store, retried by `step`.
    pending_resolve: Option<Box<PendingCommit>>,
    /// Time only moves forward.
    clock: Monotonic,
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
        assert!(
            id.index() < topo.channels.len(),
            "{id} is not in the topology"
        );
        assert!(
            params.stage_attempts_max > 0 && params.publish_attempts_max > 0,
            "a stage needs at least one attempt"
        );
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
            budget_set: None,
            budget_version: 0,
            quota_set: None,
            quota_set_version: 0,
            limits_changed: false,
            videos: BTreeMap::new(),
            dirty: SlotSet::default(),
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
            lease_answer_pending: false,
            commit_held_until_ms: None,
            held_starts: BTreeMap::new(),
            held_uploads: BTreeSet::new(),
            release_requested: false,
            gpu_cost_max,
            deadline: None,
            started: false,
            cancels: Vec::new(),
            pending_resolve: None,
            clock: Monotonic::default(),
        }
    }

    pub fn id(&self) -> ChannelId {
        self.id
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn active_videos(&self) -> usize {
        self.videos.len()
    }
    /// Whether each provider's circuit breaker is open (or half-open,
    /// letting one probe call through), by provider, for metrics.
    pub fn breakers_open(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.breakers.iter().map(|(p, b)| {
            let open = !matches!(b.state, crate::breaker::BreakerState::Closed { .. });
            (p.as_str(), open)
        })
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
        matches!(&self.inflight, Some((_, InFlight::Commit(c)))
            if c.actions.iter().any(|a| matches!(a, Action::Publish { .. })))
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

    /// Takes one input at `now_ms` (never earlier than the last).
    pub fn handle(&mut self, now_ms: u64, input: ChannelInput, out: &mut Vec<ChannelEffect>) {
        self.clock.advance(now_ms, "channel machine");
        if self.phase == Phase::Stopped {
            return;
        }
        let effects_before = out.len();
        match input {
            ChannelInput::Start => self.started = true,
            ChannelInput::Tick => {}
            ChannelInput::StoreReply { op_id, reply } => {
                self.on_store_reply(now_ms, op_id, reply, out)
            }
            ChannelInput::JobStarted { id, gpu } => self.on_job_started(now_ms, id, gpu, out),
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
                self.on_own_control(now_ms, record, version)
            }
            ChannelInput::ControlAll { record, version } => {
                self.on_fleet_control(now_ms, record, version)
            }
            ChannelInput::Lease { valid_until_ms } => self.on_lease(now_ms, valid_until_ms),
            ChannelInput::LimitRecord(e) => self.on_limit_record(e),
            ChannelInput::Release => self.on_release(),
        }
        self.step(now_ms, out);
        assert!(
            self.inflight.is_some() || !out[effects_before..].iter().any(is_store_op),
            "a store op went out without being remembered"
        );
    }

    fn on_release(&mut self) {
        self.release_requested = true;
        if self.phase == Phase::Running {
            self.phase = Phase::Releasing;
        }
        assert!(self.phase != Phase::Running, "a release is never forgotten");
    }

    /// Everything that happens because time passed or state changed.
    fn step(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.flush_cancels(out);
        if self.phase == Phase::Loading {
            self.step_loading(now_ms, out);
            return;
        }
        self.check_timeouts(now_ms, out);
        self.roll_spend_day(now_ms);
        let control = self.control();
        let may_start = self.phase == Phase::Running && !control.paused && !control.killed;
        if may_start {
            self.plan(now_ms);
        }
        if self.phase == Phase::Releasing {
            self.drop_unsent_work();
        }
        if may_start {
            self.advance_ready(now_ms);
        } else if control.killed {
            self.settle_after_kill(now_ms, out);
        }
        self.release_held_starts(now_ms, out);
        self.release_held_uploads(now_ms, out);
        self.ask_lease(now_ms, out);
        let hold = may_start && self.commit_waits_for_lease(now_ms);
        if self.inflight.is_none() && now_ms >= self.store_wait_until_ms && !hold {
            match self.pending_resolve.take() {
                Some(commit) => self.issue_resolve(commit, out),
                None => self.build_commit(now_ms, out),
            }
            self.commit_held_until_ms = None;
        }
        let settling = control.killed && self.phase == Phase::Running;
        self.deadline = self.compute_deadline(now_ms, may_start, settling);
        debug_assert!(self.deadline.is_none_or(|d| d > now_ms));
    }

    fn flush_cancels(&mut self, out: &mut Vec<ChannelEffect>) {
        for (id, gpu) in self.cancels.drain(..) {
            assert_eq!(id.channel, self.id, "a cancel for another channel");
            out.push(ChannelEffect::CancelJob { id, gpu });
        }
    }

    /// Before the channel's state is loaded: read it (again, after a
    /// failure, once the store wait is over).
    fn step_loading(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        assert!(self.videos.is_empty(), "videos before the load");
        if self.started && self.inflight.is_none() && now_ms >= self.store_wait_until_ms {
            self.issue_load(out);
        }
        self.deadline = (self.inflight.is_none() && self.started)
            .then_some(self.store_wait_until_ms.max(now_ms + 1));
    }

    /// Spend resets at the start of each UTC day.
    fn roll_spend_day(&mut self, now_ms: u64) {
        let today = schedule::today(now_ms);
        if self.chan.spend_day != today {
            self.chan.spend_day = today;
            self.chan.spent_day_micros = 0;
            self.chan_dirty = true;
        }
        assert_eq!(self.chan.spend_day, today);
    }

    /// Releasing: the next owner reconciles whatever is not settled here,
    /// so work that has not been committed is dropped (refunds stay), and
    /// a dropped start gives its charge and its attempt back.
    fn drop_unsent_work(&mut self) {
        assert_eq!(self.phase, Phase::Releasing);
        self.quota_changes
            .retain(|q| matches!(q, QuotaChange::Refund { .. }));
        for action in std::mem::take(&mut self.actions) {
            if let Action::StartJob(spec) = action {
                self.take_back_start(&spec);
            }
        }
        for v in self.videos.values_mut() {
            if v.run == Run::AwaitCommit {
                v.run = Run::Idle;
            }
        }
    }

    /// Every idle video whose time has come takes its next step.
    fn advance_ready(&mut self, now_ms: u64) {
        let ready: Vec<u64> = self
            .videos
            .iter()
            .filter(|(_, v)| v.run == Run::Idle && v.wake_ms <= now_ms && !v.rec.is_done())
            .map(|(s, _)| *s)
            .collect();
        for slot in ready {
            if let Some(v) = self.videos.get_mut(&slot) {
                v.quota_wait = false;
            }
            self.advance(now_ms, slot);
        }
    }

    /// Killed: every video that can be is failed; uploads whose outcome is
    /// unknown still settle (looked up).
    fn settle_after_kill(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        assert!(self.control().killed);
        let slots: Vec<u64> = self.videos.keys().copied().collect();
        for slot in slots {
            self.kill_video(now_ms, slot);
        }
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
        self.flush_cancels(out);
    }

    /// When the machine next needs a tick.
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
        if self.inflight.is_none() && self.has_pending_writes() {
            match self.commit_held_until_ms {
                Some(until) if may_start && until > now_ms => consider(until),
                _ => consider(self.store_wait_until_ms),
            }
        }
        // Held starts and uploads ask for the lease again until it is good.
        if !self.held_starts.is_empty() || !self.held_uploads.is_empty() {
            consider(
                self.lease_asked_ms
                    .map_or(now_ms + 1, |t| t + LEASE_ASK_INTERVAL_MS),
            );
        }
        // Spend resets at the next UTC day.
        consider((now_ms / DAY_MS + 1) * DAY_MS);
        best
    }

    /// Whether anything waits to be written (or read back). A release
    /// waits while an upload is in flight (`build_commit`): the upload's
    /// reply or deadline wakes the machine then. Counting it as due had
    /// the machine ticked every millisecond for as long as the upload ran
    /// (a node draining with 10-minute uploads in flight: 262 M events in
    /// a simulated 90 minutes instead of 1.1 M).
    fn has_pending_writes(&self) -> bool {
        !self.dirty.is_empty()
            || self.chan_dirty
            || !self.actions.is_empty()
            || !self.quota_changes.is_empty()
            || self.pending_resolve.is_some()
            || (self.phase == Phase::Releasing
                && (!self.uploads_in_flight() || self.params.sabotage.no_release_sleep))
    }
}

fn is_store_op(e: &ChannelEffect) -> bool {
    matches!(e, ChannelEffect::Store { .. })
}
