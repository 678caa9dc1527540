//! The invariants of [`crate::invariant`], checked while the run goes. Each
//! check names the invariant it enforces; the first violation stops the run.

use std::collections::{BTreeMap, BTreeSet};

use actors::records::{
    ChannelRecord, FailReason, OwnerRecord, QuotaRecord, VideoRecord, VideoStatus,
};
use actors::store::{MemStore, Txn, Write};
use topology::{ChannelId, NodeId, ProjectId, StageKind, Topology};

pub use crate::invariant::{Invariant, Violation};

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}
fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// Watches every commit the store applies.
#[derive(Default)]
pub struct StoreWatch {
    /// Which node took each (channel, epoch).
    pub epoch_owner: BTreeMap<(ChannelId, u64), NodeId>,
    /// Quota units reserved per project, all days.
    pub ledger_units: BTreeMap<ProjectId, u64>,
    /// When each video record first appeared (true ms).
    pub planned_at: BTreeMap<(ChannelId, u64), u64>,
    pub retry_limits: RetryLimits,
}

/// The retry budgets the machines run with, for invariant 11.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryLimits {
    pub stage_attempts_max: u32,
    pub publish_attempts_max: u32,
}

/// Invariant 11: a video that failed because a stage's retries ran out had
/// that many real failures of that stage (as the executors, GPUs and API
/// saw them, whoever owned the channel); one that failed for good had one.
fn check_failure_reason(
    topo: &Topology,
    truth: &Truth,
    limits: &RetryLimits,
    ch: ChannelId,
    rec: &VideoRecord,
    rel_ms: u64,
) -> Result<(), Violation> {
    let needed = match rec.status {
        VideoStatus::Failed(FailReason::StageRetriesExhausted) => {
            let stage = &topo.pipeline(topo.channel(ch).pipeline).stages;
            let publish = stage
                .get(usize::from(rec.stage))
                .is_some_and(|s| s.kind == StageKind::Publish);
            if publish {
                limits.publish_attempts_max
            } else {
                limits.stage_attempts_max
            }
        }
        VideoStatus::Failed(FailReason::StageFailed) => 1,
        _ => return Ok(()),
    };
    let real = truth.stage_failures_of(ch, rec.slot, rec.stage);
    if real < needed {
        return Err(Violation::new(
            Invariant::FailureReasonsTrue,
            format!(
                "video {}/{} failed as {:?} at stage {} after {real} real failures of that stage (the reason needs {needed}); the record says {} jobs started, {} failures, {} lost",
                topo.channel(ch).name,
                rec.slot,
                rec.status,
                rec.stage,
                rec.attempt,
                rec.stage_failures,
                rec.jobs_lost
            ),
            rel_ms,
        ));
    }
    Ok(())
}

impl StoreWatch {
    /// Called with the store as it is *before* `txn` is applied.
    #[allow(clippy::too_many_arguments)]
    pub fn before_apply(
        &mut self,
        topo: &Topology,
        truth: &Truth,
        store: &MemStore,
        txn: &Txn,
        fence: Option<(ChannelId, NodeId, u64)>,
        now_ms: u64,
        rel_ms: u64,
    ) -> Result<(), Violation> {
        if let Some((ch, node, epoch)) = fence {
            let owner = store
                .value(&actors::records::owner_key(ch))
                .and_then(|v| OwnerRecord::decode(v).ok());
            let ok = owner.is_some_and(|o| o.node == Some(node) && o.epoch == epoch);
            if !ok {
                return Err(Violation::new(
                    Invariant::OneOwnerPerEpoch,
                    format!(
                        "channel {ch} write by {node} at epoch {epoch} committed while the owner record is {owner:?}"
                    ),
                    rel_ms,
                ));
            }
        }
        for w in &txn.writes {
            let Write::Put(key, value) = w else { continue };
            if let Some(rest) = key.strip_prefix(b"o/") {
                let (Some(ch), Ok(rec)) = (be_u32(rest), OwnerRecord::decode(value)) else {
                    continue;
                };
                if let Some(node) = rec.node {
                    let ch = ChannelId(ch);
                    if let Some(prev) = self.epoch_owner.insert((ch, rec.epoch), node) {
                        if prev != node {
                            return Err(Violation::new(
                                Invariant::OneOwnerPerEpoch,
                                format!(
                                    "channel {ch} epoch {} owned by both {prev} and {node}",
                                    rec.epoch
                                ),
                                rel_ms,
                            ));
                        }
                    }
                }
            } else if let Some(rest) = key.strip_prefix(b"q/") {
                let Some(p) = rest.get(..2) else { continue };
                let project = ProjectId(u16::from_be_bytes([p[0], p[1]]));
                let Ok(new) = QuotaRecord::decode(value) else {
                    continue;
                };
                let old: u64 = store
                    .value(key)
                    .and_then(|v| QuotaRecord::decode(v).ok())
                    .map(|r| r.used.iter().sum())
                    .unwrap_or(0);
                let spec = topo.project(project);
                for (used, bucket) in new.used.iter().zip(&spec.buckets) {
                    if *used > bucket.units_per_day {
                        return Err(Violation::new(
                            Invariant::QuotaNeverExceeded,
                            format!(
                                "project {} ledger reserves {used} of bucket {} ({} a day)",
                                spec.name, bucket.name, bucket.units_per_day
                            ),
                            rel_ms,
                        ));
                    }
                }
                let total = self.ledger_units.entry(project).or_default();
                *total = (*total + new.used.iter().sum::<u64>()).saturating_sub(old);
            } else if let Some(rest) = key.strip_prefix(b"c/") {
                let (Some(ch), Ok(rec)) = (be_u32(rest), ChannelRecord::decode(value)) else {
                    continue;
                };
                let spec = topo.channel(ChannelId(ch));
                if rec.spent_day_micros > spec.budget.daily_hard_micros {
                    return Err(Violation::new(
                        Invariant::HardBudgetNeverExceeded,
                        format!(
                            "channel {} ledger spent {} micros on day {}, hard limit {}",
                            spec.name,
                            rec.spent_day_micros,
                            rec.spend_day,
                            spec.budget.daily_hard_micros
                        ),
                        rel_ms,
                    ));
                }
            } else if let Some(rest) = key.strip_prefix(b"vd/") {
                let (Some(ch), Ok(rec)) = (be_u32(rest), VideoRecord::decode(value)) else {
                    continue;
                };
                check_failure_reason(topo, truth, &self.retry_limits, ChannelId(ch), &rec, rel_ms)?;
            } else if let Some(rest) = key.strip_prefix(b"va/") {
                if let (Some(ch), Some(slot)) = (be_u32(rest), rest.get(5..).and_then(be_u64)) {
                    self.planned_at
                        .entry((ChannelId(ch), slot))
                        .or_insert(now_ms);
                }
            }
        }
        Ok(())
    }
}

/// What actually ran, as the executors billed it.
#[derive(Default)]
pub struct Truth {
    pub cost_by_day: BTreeMap<(ChannelId, u64), u64>,
    pub cost_by_video: BTreeMap<(ChannelId, u64), u64>,
    pub cost_by_channel: BTreeMap<ChannelId, u64>,
    pub total_cost_micros: u64,
    /// Real failures per (channel, slot, stage): an executor or provider
    /// said no, a GPU faulted or ran a job past its lease, the API answered
    /// an upload with a definite error.
    pub stage_failures: BTreeMap<(ChannelId, u64, u16), u32>,
}

impl Truth {
    pub fn stage_failed(&mut self, ch: ChannelId, slot: u64, stage: u16) {
        *self.stage_failures.entry((ch, slot, stage)).or_default() += 1;
    }

    pub fn stage_failures_of(&self, ch: ChannelId, slot: u64, stage: u16) -> u32 {
        self.stage_failures
            .get(&(ch, slot, stage))
            .copied()
            .unwrap_or(0)
    }

    pub fn bill(
        &mut self,
        topo: &Topology,
        ch: ChannelId,
        slot: u64,
        budget_day: u64,
        micros: u64,
        rel_ms: u64,
    ) -> Result<(), Violation> {
        if micros == 0 {
            return Ok(());
        }
        self.total_cost_micros += micros;
        *self.cost_by_channel.entry(ch).or_default() += micros;
        let day = self.cost_by_day.entry((ch, budget_day)).or_default();
        *day += micros;
        let video = self.cost_by_video.entry((ch, slot)).or_default();
        *video += micros;
        let budget = topo.channel(ch).budget;
        if *day > budget.daily_hard_micros {
            return Err(Violation::new(
                Invariant::HardBudgetNeverExceeded,
                format!(
                    "channel {} really spent {} micros on day {budget_day}, hard limit {}",
                    topo.channel(ch).name,
                    day,
                    budget.daily_hard_micros
                ),
                rel_ms,
            ));
        }
        if *video > budget.per_video_hard_micros {
            return Err(Violation::new(
                Invariant::HardBudgetNeverExceeded,
                format!(
                    "video {}/{slot} really cost {} micros, hard limit {}",
                    topo.channel(ch).name,
                    video,
                    budget.per_video_hard_micros
                ),
                rel_ms,
            ));
        }
        Ok(())
    }
}

/// A node or region failure whose channels must be owned again in time.
#[derive(Clone, Debug)]
pub struct Failover {
    pub what: String,
    pub at_ms: u64,
    pub channels: BTreeSet<ChannelId>,
    pub recovered_ms: Option<u64>,
    /// Another fault got in the way (the bound is not enforced then).
    pub disturbed: bool,
}
