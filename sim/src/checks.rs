//! The invariants of [`crate::invariant`], checked while the run goes. Each
//! check names the invariant it enforces; the first violation stops the run.

use std::collections::{BTreeMap, BTreeSet};

use actors::records::{
    budget_key, channel_key, control_key, decode_budget, owner_key, quota_limits_key,
    ChannelRecord, ControlRecord, FailReason, Key, MembersRecord, OwnerRecord, QuotaLimitsRecord,
    QuotaRecord, VideoRecord, VideoStatus, CONTROL_ALL_KEY, MEMBERS_KEY,
};
use actors::store::{MemStore, Txn, Write};
use rustc_hash::FxHashMap;
use topology::{ChannelId, NodeId, ProjectId, StageKind, Topology};

pub use crate::invariant::{Invariant, Violation};

/// Watches every commit the store applies.
#[derive(Default)]
pub struct StoreWatch {
    /// Which node took each (channel, epoch). Point lookups only, never
    /// iterated: hashed (Fx, no random seed), as are the ledgers below
    /// that are only ever looked up (a B-tree of ~355,000 entries was
    /// 3-4 % of capacity-10m's time).
    pub epoch_owner: FxHashMap<(ChannelId, u64), NodeId>,
    /// Quota units reserved per project, all days.
    pub ledger_units: BTreeMap<ProjectId, u64>,
    /// When each video record first appeared (true ms), until the API
    /// publishes it.
    pub planned_at: FxHashMap<(ChannelId, u64), u64>,
    pub retry_limits: RetryLimits,
    /// The operator's maintenance window in force, if any.
    pub maintenance: Option<MaintenanceWatch>,
    /// When each node's clock last jumped ahead while it ran (true ms).
    pub jumped_ahead_ms: BTreeMap<NodeId, u64>,
}

/// A maintenance window as invariant 14 holds it: from when every node
/// has surely read it to when the first could have ended it (true ms).
#[derive(Clone, Debug, Default)]
pub struct MaintenanceWatch {
    pub nodes: BTreeSet<NodeId>,
    /// When the operator set it: no node read it before.
    pub set_ms: u64,
    pub from_ms: u64,
    pub until_ms: u64,
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

/// Invariant 11, the kill switch: a video fails as killed only while a
/// kill switch (the fleet's or its channel's) is durable in `store`, the
/// store before the commit. (Every write checks the versions of the
/// control records its machine acted on, and the simulator never lifts a
/// kill switch, so "durable now" is "durable when decided".)
fn check_killed(
    topo: &Topology,
    store: &MemStore,
    ch: ChannelId,
    rec: &VideoRecord,
    rel_ms: u64,
) -> Result<(), Violation> {
    if rec.status != VideoStatus::Failed(FailReason::Killed) {
        return Ok(());
    }
    let killed = |key: &[u8]| {
        store
            .value(key)
            .and_then(|v| ControlRecord::decode(v).ok())
            .is_some_and(|c| c.killed)
    };
    if killed(CONTROL_ALL_KEY) || killed(&control_key(ch)) {
        return Ok(());
    }
    Err(Violation::new(
        Invariant::FailureReasonsTrue,
        format!(
            "video {}/{} failed as killed, but no kill switch (the fleet's or the channel's) is on",
            topo.channel(ch).name,
            rec.slot
        ),
        rel_ms,
    ))
}

/// A commit about to apply, as the checks see it.
pub struct Seen<'a> {
    pub topo: &'a Topology,
    pub truth: &'a Truth,
    /// The store as it is *before* the commit.
    pub store: &'a MemStore,
    /// For a channel's commit: (channel, writing node, epoch).
    pub fence: Option<(ChannelId, NodeId, u64)>,
    /// The node whose commit it is.
    pub writer: NodeId,
    pub now_ms: u64,
    pub rel_ms: u64,
}

impl StoreWatch {
    /// Checks a commit that is about to apply, write by write.
    pub fn before_apply(&mut self, seen: &Seen<'_>, txn: &Txn) -> Result<(), Violation> {
        check_fence(seen)?;
        for w in &txn.writes {
            let Write::Put(key, value) = w else { continue };
            match Key::parse(key) {
                Some(Key::Owner(ch)) => self.owner_written(seen, ch, value)?,
                Some(Key::Members) => self.members_written(seen, value)?,
                Some(Key::Quota(project, _)) => self.quota_written(seen, project, key, value)?,
                Some(Key::Channel(ch)) => channel_written(seen, ch, value)?,
                Some(Key::DoneVideo(ch, _)) => {
                    if let Ok(rec) = VideoRecord::decode(value) {
                        let limits = &self.retry_limits;
                        check_failure_reason(seen.topo, seen.truth, limits, ch, &rec, seen.rel_ms)?;
                        check_killed(seen.topo, seen.store, ch, &rec, seen.rel_ms)?;
                    }
                }
                Some(Key::ActiveVideo(ch, slot)) => {
                    self.planned_at.entry((ch, slot)).or_insert(seen.now_ms);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Invariant 5: no two nodes own a channel in one epoch.
    fn owner_written(
        &mut self,
        seen: &Seen<'_>,
        ch: ChannelId,
        value: &[u8],
    ) -> Result<(), Violation> {
        let Ok(rec) = OwnerRecord::decode(value) else {
            return Ok(());
        };
        let Some(node) = rec.node else {
            return Ok(());
        };
        match self.epoch_owner.insert((ch, rec.epoch), node) {
            Some(prev) if prev != node => Err(Violation::new(
                Invariant::OneOwnerPerEpoch,
                format!(
                    "channel {ch} epoch {} owned by both {prev} and {node}",
                    rec.epoch
                ),
                seen.rel_ms,
            )),
            _ => Ok(()),
        }
    }

    /// Invariant 14: inside a maintenance window, no node in it is taken
    /// out of the members for a lapsed lease (a drain may take it out);
    /// its channels stay with it (they may still move where placement,
    /// with it a member, sends them: a handover, not a failover).
    fn members_written(&self, seen: &Seen<'_>, value: &[u8]) -> Result<(), Violation> {
        let Some(w) = &self.maintenance else {
            return Ok(());
        };
        if seen.now_ms < w.from_ms || seen.now_ms >= w.until_ms {
            return Ok(());
        }
        // A window is measured on each node's clock from when it read it. A
        // clock that jumped ahead after that ends it early on that node:
        // the simulator's clock-skew fault can do that to a running node; a
        // live node cannot (it reads the wall clock once, at start, and
        // counts on its monotonic clock after), so its removals are not
        // held to the window.
        if self
            .jumped_ahead_ms
            .get(&seen.writer)
            .is_some_and(|t| *t >= w.set_ms)
        {
            return Ok(());
        }
        let Ok(next) = MembersRecord::decode(value) else {
            return Ok(());
        };
        let before = seen
            .store
            .value(MEMBERS_KEY)
            .and_then(|v| MembersRecord::decode(v).ok())
            .unwrap_or_default();
        let removed = w
            .nodes
            .iter()
            .find(|n| before.contains(**n) && !before.is_draining(**n) && !next.contains(**n));
        match removed {
            Some(n) => Err(Violation::new(
                Invariant::MaintenanceHolds,
                format!(
                    "{} was removed from the members inside its maintenance window",
                    seen.topo.node(*n).name
                ),
                seen.rel_ms,
            )),
            None => Ok(()),
        }
    }

    /// Invariant 3 in the ledger; and the units reserved, for the API check.
    fn quota_written(
        &mut self,
        seen: &Seen<'_>,
        project: ProjectId,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Violation> {
        let Ok(new) = QuotaRecord::decode(value) else {
            return Ok(());
        };
        let before: Vec<u64> = seen
            .store
            .value(key)
            .and_then(|v| QuotaRecord::decode(v).ok())
            .map(|r| r.used)
            .unwrap_or_default();
        let old: u64 = before.iter().sum();
        let spec = seen.topo.project(project);
        // The limit in force when it commits: the operator's, else the
        // config's. Units already above a limit lowered since are not
        // raised.
        let set = seen
            .store
            .value(&quota_limits_key(project))
            .and_then(|v| QuotaLimitsRecord::decode(v).ok());
        for (i, (used, bucket)) in new.used.iter().zip(&spec.buckets).enumerate() {
            let limit = set
                .as_ref()
                .and_then(|q| q.units_per_day.get(i).copied())
                .unwrap_or(bucket.units_per_day);
            let was = before.get(i).copied().unwrap_or(0);
            if *used > limit && *used > was {
                return Err(Violation::new(
                    Invariant::QuotaNeverExceeded,
                    format!(
                        "project {} ledger reserves {used} of bucket {} (was {was}; {limit} a day)",
                        spec.name, bucket.name
                    ),
                    seen.rel_ms,
                ));
            }
        }
        let total = self.ledger_units.entry(project).or_default();
        *total = (*total + new.used.iter().sum::<u64>()).saturating_sub(old);
        Ok(())
    }
}

/// Invariant 5: a channel's commit applies only while its owner record
/// names the writer at the writer's epoch.
fn check_fence(seen: &Seen<'_>) -> Result<(), Violation> {
    let Some((ch, node, epoch)) = seen.fence else {
        return Ok(());
    };
    let owner = seen
        .store
        .value(&owner_key(ch))
        .and_then(|v| OwnerRecord::decode(v).ok());
    if owner.is_some_and(|o| o.node == Some(node) && o.epoch == epoch) {
        return Ok(());
    }
    Err(Violation::new(
        Invariant::OneOwnerPerEpoch,
        format!("channel {ch} write by {node} at epoch {epoch} committed while the owner record is {owner:?}"),
        seen.rel_ms,
    ))
}

/// Invariant 4 in the ledger: no write raises a day's spend above the
/// hard limit in force when it commits (the operator's, else the
/// config's). Spend already above a limit lowered since is not raised.
fn channel_written(seen: &Seen<'_>, ch: ChannelId, value: &[u8]) -> Result<(), Violation> {
    let Ok(rec) = ChannelRecord::decode(value) else {
        return Ok(());
    };
    let spec = seen.topo.channel(ch);
    let limit = seen
        .store
        .value(&budget_key(ch))
        .and_then(|v| decode_budget(v).ok())
        .unwrap_or(spec.budget)
        .daily_hard_micros;
    if rec.spent_day_micros <= limit {
        return Ok(());
    }
    // Over the limit: a violation only if this write raised it. Read only
    // now (every channel commit writes the record: six a video).
    let before = seen
        .store
        .value(&channel_key(ch))
        .and_then(|v| ChannelRecord::decode(v).ok())
        .filter(|c| c.spend_day == rec.spend_day)
        .map(|c| c.spent_day_micros)
        .unwrap_or(0);
    if rec.spent_day_micros > before {
        return Err(Violation::new(
            Invariant::HardBudgetNeverExceeded,
            format!(
                "channel {} ledger spent {} micros on day {} (was {before}), hard limit {limit}",
                spec.name, rec.spent_day_micros, rec.spend_day
            ),
            seen.rel_ms,
        ));
    }
    Ok(())
}

/// What actually ran, as the executors billed it.
#[derive(Default)]
pub struct Truth {
    /// Looked up only, never iterated (`StoreWatch::epoch_owner`).
    pub cost_by_day: FxHashMap<(ChannelId, u64), u64>,
    pub cost_by_video: FxHashMap<(ChannelId, u64), u64>,
    pub cost_by_channel: BTreeMap<ChannelId, u64>,
    pub total_cost_micros: u64,
    /// Real failures per (channel, slot, stage): an executor or provider
    /// said no, a GPU faulted or ran a job past its lease, the API answered
    /// an upload with a definite error.
    pub stage_failures: BTreeMap<(ChannelId, u64, u16), u32>,
    /// The highest budget each channel had over the run, where an operator
    /// changed it: what really ran is held to that (a charge made under a
    /// higher limit may be billed after a lower one is set).
    pub budget_ceiling: BTreeMap<ChannelId, topology::Budget>,
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
        let budget = self
            .budget_ceiling
            .get(&ch)
            .copied()
            .unwrap_or(topo.channel(ch).budget);
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

#[cfg(test)]
mod tests {
    use super::*;
    use actors::store::Txn;

    fn put(store: &mut MemStore, key: actors::store::Key, value: Vec<u8>) {
        store
            .commit(&Txn {
                checks: vec![],
                writes: vec![Write::Put(key, value)],
            })
            .expect("write");
    }

    /// A video recorded as killed with no kill switch on is caught (as a
    /// release once failed its held upload as killed); with the fleet's
    /// or the channel's switch on it is not, nor is any other status.
    #[test]
    fn killed_only_under_a_kill_switch() {
        let scenario = crate::scenarios::builtin("steady", 1).expect("a built-in");
        let topo = &*scenario.topology;
        let ch = ChannelId(0);
        let mut rec = VideoRecord::new(7);
        rec.status = VideoStatus::Failed(FailReason::Killed);
        let mut store = MemStore::new();
        let caught = check_killed(topo, &store, ch, &rec, 5).expect_err("no switch is on");
        assert_eq!(
            caught.invariant,
            Invariant::FailureReasonsTrue,
            "{}",
            caught.detail
        );
        let paused = ControlRecord {
            paused: true,
            killed: false,
        };
        put(&mut store, control_key(ch), paused.encode());
        assert!(
            check_killed(topo, &store, ch, &rec, 5).is_err(),
            "a pause is not a kill"
        );
        let killed = ControlRecord {
            paused: false,
            killed: true,
        };
        put(&mut store, control_key(ch), killed.encode());
        assert!(check_killed(topo, &store, ch, &rec, 5).is_ok());
        let mut fleet = MemStore::new();
        put(
            &mut fleet,
            actors::store::key(CONTROL_ALL_KEY),
            killed.encode(),
        );
        assert!(check_killed(topo, &fleet, ch, &rec, 5).is_ok());
        rec.status = VideoStatus::Failed(FailReason::StageFailed);
        assert!(check_killed(topo, &MemStore::new(), ch, &rec, 5).is_ok());
    }

    /// Invariant 4 in the ledger: a channel record whose day's spend is
    /// over the hard limit in force is caught when the write raised it,
    /// whether the limit is the config's or the operator's; a spend at the
    /// limit, or one already above a limit lowered since and not raised,
    /// or a new day's, is not.
    #[test]
    fn a_ledger_raised_past_the_hard_limit_is_caught() {
        let scenario = crate::scenarios::builtin("steady", 1).expect("a built-in");
        let topo = &*scenario.topology;
        let ch = ChannelId(0);
        let limit = topo.channel(ch).budget.daily_hard_micros;
        let record = |day: u64, spent: u64| ChannelRecord {
            write_seq: 1,
            next_slot: 0,
            spend_day: day,
            spent_day_micros: spent,
            spent_total_micros: spent,
        };
        let check = |store: &MemStore, rec: ChannelRecord| {
            let seen = Seen {
                topo,
                truth: &Truth::default(),
                store,
                fence: None,
                writer: NodeId(0),
                now_ms: 0,
                rel_ms: 5,
            };
            channel_written(&seen, ch, &rec.encode())
        };
        let mut store = MemStore::new();
        assert!(check(&store, record(3, limit)).is_ok(), "at the limit");
        let caught = check(&store, record(3, limit + 1)).expect_err("past the limit");
        assert_eq!(caught.invariant, Invariant::HardBudgetNeverExceeded);
        // The operator lowers the limit below what was already spent: the
        // spend stands, and only raising it further is caught.
        put(&mut store, channel_key(ch), record(3, limit / 2).encode());
        let mut lowered = topo.channel(ch).budget;
        lowered.daily_hard_micros = limit / 4;
        put(
            &mut store,
            budget_key(ch),
            actors::records::encode_budget(&lowered),
        );
        assert!(check(&store, record(3, limit / 2)).is_ok(), "not raised");
        assert!(check(&store, record(3, limit / 2 + 1)).is_err(), "raised");
        // A new day starts from nothing.
        assert!(
            check(&store, record(4, limit / 4 + 1)).is_err(),
            "a new day"
        );
        assert!(check(&store, record(4, limit / 4)).is_ok());
    }
}
