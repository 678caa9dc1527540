//! The channel's calendar and each video's next step: slots are planned
//! `plan_lead_ms` before their publish time; an idle video whose time has
//! come either looks up an unknown upload, reserves its upload, or charges
//! its next stage's cost bound and asks for the job, each only if its
//! lease, budget, breaker and quota allow.

use std::sync::Arc;

use topology::{stage_cost_bound_micros, ProjectId, Stage, StageKind, DAY_MS};

use crate::protocol::{JobId, JobKind, JobSpec};
use crate::records::{FailReason, VideoRecord};

use super::video::{Action, QuotaChange, Run, Video};
use super::ChannelMachine;

/// The budget day of `now_ms` (UTC days).
pub(super) fn today(now_ms: u64) -> u64 {
    now_ms / DAY_MS
}

/// What the next stage of a video will be charged, and on which tier.
struct Charge {
    bound_micros: u64,
    cheap: bool,
}

impl ChannelMachine {
    pub(super) fn project(&self) -> ProjectId {
        self.topo.channel(self.id).project
    }

    /// The budget in force: the operator's, else the config's.
    pub(super) fn budget(&self) -> topology::Budget {
        self.budget_set
            .unwrap_or_else(|| self.topo.channel(self.id).budget)
    }

    /// Daily units of bucket `i` of this channel's project in force: the
    /// operator's, else the config's.
    pub(super) fn units_per_day(&self, i: usize) -> u64 {
        let config = self.topo.project(self.project()).buckets[i].units_per_day;
        self.quota_set
            .as_ref()
            .and_then(|u| u.get(i).copied())
            .unwrap_or(config)
    }

    pub(super) fn stage_count(&self) -> usize {
        self.topo
            .pipeline(self.topo.channel(self.id).pipeline)
            .stages
            .len()
    }

    pub(super) fn stage(&self, i: usize) -> Option<&Stage> {
        self.topo
            .pipeline(self.topo.channel(self.id).pipeline)
            .stages
            .get(i)
    }

    /// The provider an external stage calls, on the cheap tier or not.
    pub(super) fn provider_of(&self, stage: usize, cheap: bool) -> Option<String> {
        match &self.stage(stage)?.kind {
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

    pub(super) fn slot_publish_at(&self, slot: u64) -> u64 {
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

    pub(super) fn first_slot_at_or_after(&self, now_ms: u64) -> u64 {
        let per_day = u64::from(self.topo.channel(self.id).videos_per_day.max(1));
        let mut slot = (now_ms / DAY_MS) * per_day;
        while self.slot_publish_at(slot) < now_ms {
            slot += 1;
        }
        assert!(self.slot_publish_at(slot) >= now_ms);
        slot
    }

    /// First moment of the quota day after the one `now_ms` falls in.
    pub(super) fn next_quota_reset_ms(&self, now_ms: u64) -> u64 {
        let project = self.topo.project(self.project());
        let offset_ms = i64::from(project.reset_utc_offset_minutes) * 60_000;
        let day = project.quota_day(now_ms) as i64;
        ((day + 1) * DAY_MS as i64 - offset_ms).max(now_ms as i64 + 1) as u64
    }

    /// The quota day a change is counted on: today's for a reservation,
    /// the reservation's own for a refund.
    pub(super) fn quota_day_of(&self, change: &QuotaChange, now_ms: u64) -> Option<u64> {
        match change {
            QuotaChange::ReservePublish { .. } | QuotaChange::ReserveLookup { .. } => {
                Some(self.topo.project(self.project()).quota_day(now_ms))
            }
            QuotaChange::Refund { slot } => self.videos.get(slot).map(|v| v.rec.quota_day),
        }
    }

    /// Plans the slots whose time is within the lead, as far as the limit
    /// on videos in progress allows; a slot missed while nobody owned the
    /// channel is skipped.
    pub(super) fn plan(&mut self, now_ms: u64) {
        let mut planned = 0;
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
            if self.videos.contains_key(&slot) {
                continue; // already stored (the load moves `next_slot` past these)
            }
            let v = Video::new(VideoRecord::new(slot), now_ms);
            self.videos.insert(slot, v);
            self.dirty.insert(slot);
            planned += 1;
        }
        assert!(planned == 0 || self.videos.len() <= self.params.active_videos_max);
    }

    /// Starts the next step of an idle video, if its budget, breaker,
    /// quota and lease allow.
    pub(super) fn advance(&mut self, now_ms: u64, slot: u64) {
        let lease_ok = self.lease_good_for_reserve(now_ms);
        let stages = self.stage_count();
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        assert_eq!(v.run, Run::Idle, "only an idle video takes a step");
        // Unless a step below starts, look again a little later.
        v.wake_ms = now_ms + 250;
        let stage_ix = usize::from(v.rec.stage);
        if v.needs_lookup {
            self.advance_lookup(slot, lease_ok);
        } else if stage_ix < stages {
            let publish = self.stage(stage_ix).map(|s| s.kind == StageKind::Publish);
            if publish == Some(true) {
                self.advance_publish(slot, lease_ok);
            } else {
                self.advance_stage(now_ms, slot, stage_ix);
            }
        }
    }

    /// An upload whose outcome is unknown is looked up first (the lookup
    /// reserves its own quota unit).
    fn advance_lookup(&mut self, slot: u64, lease_ok: bool) {
        if !lease_ok {
            self.wait_for_lease(slot);
            return;
        }
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        assert!(v.needs_lookup);
        v.needs_lookup = false;
        v.run = Run::AwaitCommit;
        self.quota_changes.push(QuotaChange::ReserveLookup { slot });
    }

    /// The upload is reserved (with its intent) before it is sent.
    fn advance_publish(&mut self, slot: u64, lease_ok: bool) {
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        if v.rec.publish_intent {
            return; // a refund goes first
        }
        if !lease_ok {
            self.wait_for_lease(slot);
            return;
        }
        v.run = Run::AwaitCommit;
        self.quota_changes
            .push(QuotaChange::ReservePublish { slot });
    }

    /// A processing stage: charge its cost bound against the budgets, then
    /// ask for the job (it starts once the charge is durable).
    fn advance_stage(&mut self, now_ms: u64, slot: u64, stage_ix: usize) {
        let Some(charge) = self.charge_for(slot, stage_ix) else {
            return; // the video failed for its budget
        };
        let topo = Arc::clone(&self.topo);
        let spec = topo.channel(self.id);
        let stage = &topo.pipeline(spec.pipeline).stages[stage_ix];
        let kind = match &stage.kind {
            StageKind::Cpu => JobKind::Cpu,
            StageKind::Gpu => JobKind::Gpu,
            StageKind::External { .. } => {
                let provider = self.provider_of(stage_ix, charge.cheap).unwrap_or_default();
                if let Err(until) = self.breaker(&provider).try_acquire(now_ms) {
                    probe!(BreakerHeldBack);
                    if let Some(v) = self.videos.get_mut(&slot) {
                        v.wake_ms = until;
                    }
                    return;
                }
                JobKind::External { provider }
            }
            StageKind::Publish => unreachable!("the publish stage is reserved, not run"),
        };
        let day = today(now_ms);
        let id = self.take_charge(slot, stage_ix, day, charge.bound_micros);
        let fixed_cost_micros = if charge.cheap {
            stage.cost.cheap_fixed_micros
        } else {
            stage.cost.fixed_micros
        };
        self.actions.push(Action::StartJob(JobSpec {
            id,
            owner: self.node,
            kind,
            gpu_memory_bytes: stage.gpu_memory_bytes,
            duration: stage.duration,
            fixed_cost_micros,
            priority: spec.priority,
            home_region: spec.home_region,
            budget_day: day,
            hops: 0,
        }));
    }

    /// The stage's cost bound, on the cheap tier once a soft limit would be
    /// crossed; `None` (and the video failed) if a hard limit would be.
    fn charge_for(&mut self, slot: u64, stage_ix: usize) -> Option<Charge> {
        let budget = self.budget();
        let stage = self.stage(stage_ix)?;
        let full = stage_cost_bound_micros(stage, self.gpu_cost_max, false);
        let has_cheap = matches!(
            &stage.kind,
            StageKind::External {
                cheap_provider: Some(_),
                ..
            }
        );
        let cost_so_far = self.videos.get(&slot)?.rec.cost_micros;
        let day_spent = self.chan.spent_day_micros;
        let cheap = has_cheap
            && (day_spent.saturating_add(full) > budget.daily_soft_micros
                || cost_so_far.saturating_add(full) > budget.per_video_soft_micros);
        let bound_micros = stage_cost_bound_micros(stage, self.gpu_cost_max, cheap);
        if cheap {
            probe!(CheapTierChosen);
        }
        if cost_so_far.saturating_add(bound_micros) > budget.per_video_hard_micros {
            probe!(BudgetStop);
            self.fail_video(slot, FailReason::VideoBudget);
            return None;
        }
        if day_spent.saturating_add(bound_micros) > budget.daily_hard_micros {
            probe!(BudgetStop);
            self.fail_video(slot, FailReason::DailyBudget);
            return None;
        }
        Some(Charge {
            bound_micros,
            cheap,
        })
    }

    /// Charges `bound` to the video and the channel's ledgers (durable with
    /// the next commit, before the job starts); returns the job's id.
    fn take_charge(&mut self, slot: u64, stage_ix: usize, day: u64, bound: u64) -> JobId {
        let v = self
            .videos
            .get_mut(&slot)
            .expect("a video being advanced is here");
        assert_eq!(v.rec.held_micros, 0, "one stage holds at a time");
        v.rec.attempt = v.rec.attempt.checked_add(1).expect("attempts");
        v.rec.cost_micros = v.rec.cost_micros.checked_add(bound).expect("video cost");
        v.rec.held_micros = bound;
        v.rec.held_day = day;
        v.run = Run::AwaitCommit;
        let attempt = v.rec.attempt;
        self.chan.spent_day_micros = self
            .chan
            .spent_day_micros
            .checked_add(bound)
            .expect("day spend");
        self.chan.spent_total_micros = self
            .chan
            .spent_total_micros
            .checked_add(bound)
            .expect("total spend");
        self.chan_dirty = true;
        self.dirty.insert(slot);
        JobId {
            channel: self.id,
            slot,
            stage: u16::try_from(stage_ix).expect("a pipeline has under 65536 stages"),
            attempt,
            epoch: self.epoch,
        }
    }
}
