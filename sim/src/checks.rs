//! The invariants of DESIGN.md, checked while the run goes. Each check says
//! which invariant it is; the first violation stops the run.

use std::collections::{BTreeMap, BTreeSet};

use actors::records::{ChannelRecord, OwnerRecord, QuotaRecord};
use actors::store::{MemStore, Txn, Write};
use topology::{ChannelId, NodeId, ProjectId, Topology};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: u8,
    pub name: &'static str,
    pub detail: String,
    /// Milliseconds since the run's start.
    pub at_ms: u64,
}

pub const INVARIANT_NAMES: [&str; 10] = [
    "no-double-publish",
    "no-lost-video",
    "quota-never-exceeded",
    "hard-budget-never-exceeded",
    "one-owner-per-epoch",
    "gpu-memory-never-overcommitted",
    "recovery-within-bound",
    "kill-switch-within-bound",
    "ledgers-match-reality",
    "determinism",
];

pub fn violation(invariant: u8, detail: String, at_ms: u64) -> Violation {
    Violation {
        invariant,
        name: INVARIANT_NAMES[(invariant - 1) as usize],
        detail,
        at_ms,
    }
}

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
}

impl StoreWatch {
    /// Called with the store as it is *before* `txn` is applied.
    pub fn before_apply(
        &mut self,
        topo: &Topology,
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
                return Err(violation(
                    5,
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
                            return Err(violation(
                                5,
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
                        return Err(violation(
                            3,
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
                    return Err(violation(
                        4,
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
}

impl Truth {
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
            return Err(violation(
                4,
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
            return Err(violation(
                4,
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
