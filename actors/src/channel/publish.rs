//! Uploads and lookups coming back, and the node's lease they depend on.
//! A definite failure gives the reservation back; an unknown outcome never
//! does (the key is looked up first); a lookup that finds the upload
//! records the video as published, one that finds nothing gives the
//! reservation back so the video publishes afresh.

use crate::breaker::backoff_ms;
use crate::protocol::{LookupOutcome, PublishOutcome};
use crate::records::{FailReason, VideoStatus};

use super::video::{QuotaChange, Run};
use super::{
    ChannelEffect, ChannelMachine, Phase, LEASE_ASK_INTERVAL_MS, LEASE_MARGIN_MS, RESERVE_LEASE_MS,
};

impl ChannelMachine {
    fn mark_published(&mut self, slot: u64, remote_id: String) {
        if let Some(v) = self.videos.get_mut(&slot) {
            assert!(!v.rec.is_done(), "a video is published once");
            v.rec.status = VideoStatus::Published { remote_id };
            v.rec.publish_intent = false;
            v.rec.stage = v.rec.stage.saturating_add(1);
            v.run = Run::Idle;
            self.dirty.insert(slot);
        }
    }

    pub(super) fn on_publish_result(
        &mut self,
        now_ms: u64,
        slot: u64,
        attempt: u32,
        outcome: PublishOutcome,
    ) {
        let Some(v) = self.videos.get(&slot) else {
            return;
        };
        if !matches!(v.run, Run::Publishing { attempt: a, .. } if a == attempt) {
            return; // an earlier attempt's answer, or after the timeout
        }
        match outcome {
            PublishOutcome::Published { remote_id } => self.mark_published(slot, remote_id),
            definite => self.upload_refused(now_ms, slot, definite),
        }
    }

    /// A definite failure: nothing was published, so the reservation comes
    /// back; when to try again depends on why.
    fn upload_refused(&mut self, now_ms: u64, slot: u64, outcome: PublishOutcome) {
        assert!(!matches!(outcome, PublishOutcome::Published { .. }));
        let jitter = self.rng.next_u32();
        let (base, max) = (self.params.retry_base_ms, self.params.retry_max_ms);
        let reset = self.next_quota_reset_ms(now_ms);
        let failures_max = self.params.publish_attempts_max;
        let late_at = self.slot_publish_at(slot) + self.params.publish_grace_ms;
        self.quota_changes.push(QuotaChange::Refund { slot });
        let Some(v) = self.videos.get_mut(&slot) else {
            return;
        };
        v.run = Run::Idle;
        match outcome {
            PublishOutcome::RateLimited { retry_after_ms } => {
                probe!(UploadRateLimited);
                v.wake_ms = now_ms + retry_after_ms.max(backoff_ms(1, base, max, jitter));
            }
            PublishOutcome::QuotaExceeded => {
                // Someone else used the project's quota: wait for the
                // reset, or give up once the slot is too late to matter
                // (as when the ledger itself is full).
                probe!(UploadQuotaRefused);
                if now_ms > late_at {
                    self.fail_video(slot, FailReason::QuotaExhausted);
                } else {
                    v.wake_ms = reset.min(late_at + 1);
                    v.quota_wait = true;
                }
            }
            _ => {
                // A real failure of the publish stage (5xx, a dropped
                // connection before the upload completed).
                probe!(UploadTransient);
                v.rec.stage_failures = v.rec.stage_failures.saturating_add(1);
                v.wake_ms = now_ms + backoff_ms(v.rec.stage_failures, base, max, jitter);
                if v.rec.stage_failures >= failures_max {
                    self.fail_video(slot, FailReason::StageRetriesExhausted);
                }
            }
        }
    }

    pub(super) fn on_lookup_result(&mut self, now_ms: u64, slot: u64, outcome: LookupOutcome) {
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
                // The upload never completed: its reservation comes back and
                // the video publishes afresh.
                probe!(LookupNotFound);
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

    /// Whether the lease known here is good for a reservation now.
    pub(super) fn lease_good_for_reserve(&self, now_ms: u64) -> bool {
        self.lease_valid_until_ms > now_ms + LEASE_MARGIN_MS + RESERVE_LEASE_MS
    }

    /// The node's answer to [`ChannelEffect::AskLease`].
    pub(super) fn on_lease(&mut self, now_ms: u64, valid_until_ms: u64) {
        let before = self.lease_valid_until_ms;
        self.lease_answer_pending = false;
        self.lease_valid_until_ms = self.lease_valid_until_ms.max(valid_until_ms);
        assert!(
            self.lease_valid_until_ms >= before,
            "what is known of the lease only grows"
        );
        // Only a lease that is good enough wakes the waiters (and allows
        // another ask at once); a lapsed one leaves them to their next
        // look, so that asking never spins.
        if self.lease_good_for_reserve(now_ms) || self.params.sabotage.no_lease_ask_throttle {
            self.lease_asked_ms = None;
            for slot in std::mem::take(&mut self.lease_waiters) {
                if let Some(v) = self.videos.get_mut(&slot) {
                    v.wake_ms = v.wake_ms.min(now_ms);
                }
            }
        }
    }

    /// `slot` waits for a lease valid long enough: ask for it, and try the
    /// slot again as soon as the answer comes.
    pub(super) fn wait_for_lease(&mut self, slot: u64) {
        assert!(self.videos.contains_key(&slot));
        self.lease_wanted = true;
        self.lease_waiters.insert(slot);
    }

    /// Asks for the node's lease when a video waits for it, at most once a
    /// second while unanswered (an answer may be lost with a restart).
    pub(super) fn ask_lease(&mut self, now_ms: u64, out: &mut Vec<ChannelEffect>) {
        let wanted = std::mem::take(&mut self.lease_wanted);
        let asked_lately = self
            .lease_asked_ms
            .is_some_and(|t| now_ms < t + LEASE_ASK_INTERVAL_MS);
        if wanted && !asked_lately {
            self.lease_asked_ms = Some(now_ms);
            self.lease_answer_pending = true;
            out.push(ChannelEffect::AskLease);
        }
    }

    /// Whether the next commit waits for the lease's answer: a video waits
    /// for it to reserve its upload (or lookup), so that the reservation
    /// goes in the same commit as what is pending now (the finished last
    /// stage: one commit a video fewer; ARCHITECTURE, `channel/`).
    /// The answer is the node's own view, back at once. A commit waits
    /// once, for one ask's interval at most: without an answer by then it
    /// goes (asks repeat every interval, and would hold it for ever).
    pub(super) fn commit_waits_for_lease(&mut self, now_ms: u64) -> bool {
        let waits = self.lease_answer_pending
            && !self.lease_waiters.is_empty()
            && self.phase == Phase::Running
            && self.pending_resolve.is_none();
        if !waits {
            return false;
        }
        let asked_ms = self.lease_asked_ms.unwrap_or(now_ms);
        let until = *self
            .commit_held_until_ms
            .get_or_insert(asked_ms + LEASE_ASK_INTERVAL_MS);
        now_ms < until
    }
}
