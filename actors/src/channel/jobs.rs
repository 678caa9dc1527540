//! A stage's jobs after they start: started and finished notices, the
//! deadlines of jobs that went silent, and the ledger's settling of what a
//! job held. Only a real failure of the stage spends its retry budget
//! (`stage_attempts_max`); a job lost without failing is counted on its
//! own (`jobs_lost_max`), and a takeover or restart counts nothing.

use topology::{stage_cost_bound_micros, GpuId, StageKind};

use crate::breaker::{backoff_ms, Breaker};
use crate::protocol::{JobId, JobOutcome};
use crate::records::{FailReason, VideoStatus};

use super::video::{QuotaChange, Run};
use super::{ChannelEffect, ChannelMachine};

impl ChannelMachine {
    pub(super) fn on_job_started(
        &mut self,
        now_ms: u64,
        id: JobId,
        gpu: Option<GpuId>,
        out: &mut Vec<ChannelEffect>,
    ) {
        if id.channel != self.id {
            return;
        }
        let stage_max_ms = self
            .stage(usize::from(id.stage))
            .map(|s| s.duration.max_ms());
        let grace_ms = self.params.job_grace_ms;
        let current = self
            .videos
            .get_mut(&id.slot)
            .and_then(|v| match &mut v.run {
                Run::Job {
                    id: running,
                    started,
                    deadline_ms,
                    gpu: g,
                } if *running == id => Some((started, deadline_ms, g)),
                _ => None,
            });
        let Some((started, deadline_ms, g)) = current else {
            // A job this machine no longer wants (killed, retried, or from
            // an earlier epoch) started late: stop it.
            probe!(JobStartedLateCancelled);
            out.push(ChannelEffect::CancelJob { id, gpu });
            return;
        };
        if !*started {
            // Running now: it may take its longest duration (twice, for a
            // slow GPU) plus the grace before it counts as lost.
            let max_ms = stage_max_ms.expect("a job of this channel's pipeline");
            *started = true;
            *g = gpu;
            *deadline_ms = now_ms + 2 * max_ms + grace_ms;
        }
    }

    pub(super) fn on_job_finished(&mut self, now_ms: u64, id: JobId, outcome: JobOutcome) {
        let Some(v) = self.videos.get(&id.slot) else {
            return;
        };
        if !matches!(v.run, Run::Job { id: running, .. } if running == id) {
            return; // stale: an earlier attempt or epoch
        }
        let provider = self.provider_of_job(id);
        match outcome {
            JobOutcome::Succeeded { cost_micros } => {
                self.settle_held(id.slot, cost_micros);
                if let Some(p) = provider {
                    self.breaker(&p).on_success();
                }
                self.stage_done(now_ms, id.slot);
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

    /// The provider a job of an external stage called: the cheap one if
    /// what it held was below the full tier's bound.
    fn provider_of_job(&self, id: JobId) -> Option<String> {
        let stage = self.stage(usize::from(id.stage))?;
        if !matches!(stage.kind, StageKind::External { .. }) {
            return None;
        }
        let held = self.videos.get(&id.slot).map(|v| v.rec.held_micros)?;
        let cheap = held < stage_cost_bound_micros(stage, self.gpu_cost_max, false);
        self.provider_of(usize::from(id.stage), cheap)
    }

    /// The stage succeeded: on to the next, with fresh counters.
    fn stage_done(&mut self, now_ms: u64, slot: u64) {
        let stages = self.stage_count();
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        assert!(
            usize::from(v.rec.stage) < stages,
            "a stage past the end succeeded"
        );
        v.rec.stage += 1;
        v.rec.attempt = 0;
        v.rec.stage_failures = 0;
        v.rec.jobs_lost = 0;
        v.run = Run::Idle;
        v.wake_ms = now_ms;
    }

    /// The stage itself failed: this spends its retry budget.
    pub(super) fn after_stage_failure(&mut self, now_ms: u64, slot: u64, retryable: bool) {
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
        // (A record from a run with a larger budget may already be past
        // this one: it fails now, never retries forever.)
        assert_eq!(
            v.rec.status,
            VideoStatus::Active,
            "only an active video retries"
        );
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
    pub(super) fn after_job_lost(&mut self, now_ms: u64, slot: u64) {
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
        assert_eq!(
            v.rec.status,
            VideoStatus::Active,
            "only an active video loses jobs"
        );
        v.rec.jobs_lost = v.rec.jobs_lost.saturating_add(1);
        if v.rec.jobs_lost >= lost_max {
            self.fail_video(slot, FailReason::JobsLost);
        } else {
            v.run = Run::Idle;
            v.wake_ms = now_ms + backoff_ms(v.rec.jobs_lost, base, max, jitter);
        }
    }

    /// Settles what a job held against what it cost. A video's cost and the
    /// channel's ledgers include the hold, so none can go below it.
    pub(super) fn settle_held(&mut self, slot: u64, actual_micros: u64) {
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        let held = v.rec.held_micros;
        v.rec.cost_micros = v
            .rec
            .cost_micros
            .checked_sub(held)
            .and_then(|c| c.checked_add(actual_micros))
            .expect("a video's cost holds what it reserved");
        self.chan.spent_total_micros = self
            .chan
            .spent_total_micros
            .checked_sub(held)
            .and_then(|c| c.checked_add(actual_micros))
            .expect("the channel's total holds every reservation");
        if v.rec.held_day == self.chan.spend_day {
            let day = self.chan.spent_day_micros.checked_add(actual_micros);
            self.chan.spent_day_micros = day.expect("daily spend").saturating_sub(held);
        }
        v.rec.held_micros = 0;
        self.chan_dirty = true;
    }

    pub(super) fn fail_video(&mut self, slot: u64, reason: FailReason) {
        if let Some(v) = self.videos.get_mut(&slot) {
            assert!(
                !matches!(v.rec.status, VideoStatus::Published { .. }),
                "a published video never fails"
            );
            v.rec.status = VideoStatus::Failed(reason);
            v.run = Run::Idle;
            self.dirty.insert(slot);
        }
    }

    pub(super) fn breaker(&mut self, provider: &str) -> &mut Breaker {
        // The name is copied only for a provider not seen before (an
        // `entry` would copy it on every call: a job's every start and end).
        if !self.breakers.contains_key(provider) {
            let params = self.params.breaker;
            self.breakers
                .insert(provider.to_string(), Breaker::new(params));
        }
        self.breakers
            .get_mut(provider)
            .expect("inserted above if it was missing")
    }

    /// Jobs, uploads and lookups that went silent past their deadlines.
    pub(super) fn check_timeouts(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
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
            self.job_timed_out(now_ms, slot, id, gpu, out);
        }
        for slot in expired_uploads {
            self.upload_timed_out(now_ms, slot);
        }
        let jitter = self.rng.next_u32();
        for slot in expired_lookups {
            self.lookup_timed_out(now_ms, slot, jitter);
        }
    }

    /// No answer in time: the job never reached a GPU, or its node went
    /// away (a live GPU or executor reports its own timeouts before this
    /// deadline). The stage did not fail.
    fn job_timed_out(
        &mut self,
        now_ms: u64,
        slot: u64,
        id: JobId,
        gpu: Option<GpuId>,
        out: &mut Vec<ChannelEffect>,
    ) {
        assert_eq!(id.slot, slot);
        out.push(ChannelEffect::CancelJob { id, gpu });
        // The job may have run: its whole reservation stays charged.
        if let Some(v) = self.videos.get_mut(&slot) {
            v.rec.held_micros = 0;
        }
        if let Some(p) = self.provider_of(usize::from(id.stage), false) {
            self.breaker(&p).on_abandoned();
        }
        self.after_job_lost(now_ms, slot);
        self.dirty.insert(slot);
    }

    fn upload_timed_out(&mut self, now_ms: u64, slot: u64) {
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
            assert!(v.rec.publish_intent, "an upload in flight has its intent");
            v.run = Run::Idle;
            v.needs_lookup = true;
            v.wake_ms = now_ms;
        }
    }

    fn lookup_timed_out(&mut self, now_ms: u64, slot: u64, jitter: u32) {
        probe!(LookupFailed);
        let (base, max) = (self.params.retry_base_ms, self.params.retry_max_ms);
        if let Some(v) = self.videos.get_mut(&slot) {
            v.run = Run::Idle;
            v.needs_lookup = true;
            v.wake_ms = now_ms + backoff_ms(2, base, max, jitter);
        }
    }
}
