//! The run's life after its faults: the recovery probe, the heal, and the
//! checks at the end of the liveness phase.

use std::collections::{BTreeMap, BTreeSet};

use actors::channel::Phase;
use actors::records::{
    active_key, channel_key, channel_of_video_key, done_key, idempotency_key, ChannelRecord,
    VideoRecord, VideoStatus,
};
use actors::store::prefix_end;
use topology::{placement, ChannelId, NodeId, ProjectId};

use super::World;
use crate::checks::{Invariant, Violation};
use crate::scenario::Fault;

/// What the checks at the end of a run need of every video record, active
/// and done, gathered in one pass that decodes each record and drops it:
/// holding all of them decoded at once (355,000 in a capacity-10m day) was
/// the run's peak memory, 44 MiB above the rest (BENCHMARKS.md).
#[derive(Default)]
struct VideoSums {
    cost_by_channel: BTreeMap<ChannelId, u64>,
    quota_by_project: BTreeMap<ProjectId, u64>,
    /// The first video, in key order, recorded as published that the API
    /// never saw.
    published_off_api: Option<String>,
}

/// One of the checks at the end of a run, given the sums of every video
/// record (read and decoded once for all of them).
type FinalCheck = fn(&World, &VideoSums) -> Result<(), Violation>;

impl World {
    fn healthy(&self, n: NodeId) -> bool {
        let node = &self.nodes[n.index()];
        node.alive
            && !self.faults.frozen[n.index()]
            && self.store_reachable(n)
            && !self.faults.partitioned[node.region.index()]
    }

    pub(super) fn probe(&mut self) {
        if self.pending_failovers.is_empty() {
            return;
        }
        let healthy: Vec<bool> = self.topo.node_ids().map(|n| self.healthy(n)).collect();
        let mut running: BTreeSet<ChannelId> = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !healthy[i] {
                continue;
            }
            for (ch, h) in &n.channels {
                if h.m.phase() == Phase::Running {
                    running.insert(*ch);
                }
            }
        }
        let rel = self.rel_ms();
        let mut still = Vec::new();
        for i in std::mem::take(&mut self.pending_failovers) {
            let f = &mut self.stats.failovers[i];
            let waiting = f
                .channels
                .iter()
                .filter(|c| placement::owner_of(&self.topo, **c, &healthy).is_some())
                .filter(|c| !running.contains(c))
                .count();
            if waiting == 0 {
                f.recovered_ms = Some(rel - f.at_ms);
                continue;
            }
            if let Some(bound) = self.sc.bounds.recovery_ms {
                if !f.disturbed && rel - f.at_ms > bound {
                    let what = f.what.clone();
                    let since = rel - f.at_ms;
                    self.fail(Violation::new(
                        Invariant::RecoveryWithinBound,
                        format!("after {what}: {waiting} channels still not running elsewhere after {since} ms (bound {bound} ms)"),
                        rel,
                    ));
                    return;
                }
            }
            still.push(i);
        }
        self.pending_failovers = still;
    }

    pub(super) fn heal(&mut self) {
        for p in &mut self.faults.partitioned {
            *p = false;
        }
        self.faults.one_way.clear();
        self.faults.store_outage = false;
        for f in std::mem::take(&mut self.faults.deferred_controls) {
            self.apply_fault(f);
        }
        self.faults.unknown_ppm = 0;
        self.faults.gpu_fail_ppm = 0;
        self.faults.straggler_ppm = 0;
        self.faults.providers_down.clear();
        self.api.faults = Default::default();
        self.faults.loss_ppm = 0;
        self.faults.dup_ppm = 0;
        self.faults.reorder_ppm = 0;
        for n in self.topo.node_ids() {
            self.thaw(n);
            if !self.nodes[n.index()].alive {
                self.start_node(n);
            }
        }
        // Paused channels resume so that their videos can finish; killed
        // channels stay killed (their videos end as failed: killed).
        let paused: Vec<ChannelId> = self.stopped_since_ms.keys().filter_map(|c| *c).collect();
        for ch in paused {
            self.apply_fault(Fault::Resume(ch));
        }
        let start = b"va/".to_vec();
        let end = prefix_end(&start);
        self.must_finish = self
            .store
            .scan(&start, &end)
            .filter_map(|(k, v, _)| {
                Some((channel_of_video_key(&k)?, VideoRecord::decode(v).ok()?.slot))
            })
            .collect();
    }

    /// The checks at the end of the liveness phase; the first that fails
    /// is the run's violation.
    pub(super) fn final_checks(&mut self) {
        let checks: [FinalCheck; 6] = [
            World::check_drains_finished,
            World::check_exclusions_hold,
            World::check_planned_videos_finished,
            World::check_api_matches_store,
            World::check_cost_ledgers,
            World::check_quota_ledgers,
        ];
        let videos = self.video_sums();
        for check in checks {
            if let Err(v) = check(self, &videos) {
                self.fail(v);
                return;
            }
        }
    }

    /// A drain ends in Drained, unless the node died first (a crash starts
    /// a new incarnation, which owes nothing).
    fn check_drains_finished(&self, _: &VideoSums) -> Result<(), Violation> {
        let stuck = self.drains_pending.iter().find(|(n, (inc, _))| {
            let node = &self.nodes[n.index()];
            node.alive && node.inc == *inc
        });
        match stuck {
            Some((n, (_, at))) => Err(Violation::new(
                Invariant::DrainsFinish,
                format!(
                    "the drain of {} asked {} ms after the start never finished",
                    self.topo.node(*n).name,
                    at - self.sc.start_utc_ms
                ),
                self.rel_ms(),
            )),
            None => Ok(()),
        }
    }

    /// A live excluded node hosts no channel.
    fn check_exclusions_hold(&self, _: &VideoSums) -> Result<(), Violation> {
        for n in &self.excluded {
            let node = &self.nodes[n.index()];
            if node.alive && !node.channels.is_empty() {
                let hosted: Vec<&str> = node
                    .channels
                    .keys()
                    .map(|c| self.topo.channel(*c).name.as_str())
                    .collect();
                return Err(Violation::new(
                    Invariant::ExclusionsHold,
                    format!(
                        "{} is excluded and still hosts {hosted:?}",
                        self.topo.node(*n).name
                    ),
                    self.rel_ms(),
                ));
            }
        }
        Ok(())
    }

    /// Every video planned before the heal ended within the liveness bound.
    fn check_planned_videos_finished(&self, _: &VideoSums) -> Result<(), Violation> {
        for (ch, slot) in &self.must_finish {
            let Some(v) = self.store.value(&active_key(*ch, *slot)) else {
                continue;
            };
            let rec = VideoRecord::decode(v)
                .map(|r| format!("{r:?}"))
                .unwrap_or_default();
            let hosted: Vec<String> = self.hosting(*ch).iter().map(|n| n.to_string()).collect();
            return Err(Violation::new(
                Invariant::NoLostVideo,
                format!(
                    "video {}/{slot} planned before the heal did not finish within {} ms after it: {rec}; hosted on {hosted:?}",
                    self.topo.channel(*ch).name,
                    self.sc.bounds.liveness_ms
                ),
                self.rel_ms(),
            ));
        }
        Ok(())
    }

    /// Everything on the API is recorded as published, and everything
    /// recorded as published is on the API.
    fn check_api_matches_store(&self, videos: &VideoSums) -> Result<(), Violation> {
        let rel = self.rel_ms();
        for (key, up) in &self.api.uploads {
            let rec = self
                .store
                .value(&done_key(up.channel, up.slot))
                .and_then(|v| VideoRecord::decode(v).ok());
            let ok = matches!(&rec, Some(VideoRecord { status: VideoStatus::Published { remote_id }, .. }) if *remote_id == up.remote_id);
            if !ok && self.store.value(&active_key(up.channel, up.slot)).is_none() {
                let detail = format!("video {key} is on the API but the store says {rec:?}");
                return Err(Violation::new(Invariant::NoLostVideo, detail, rel));
            }
        }
        if let Some(key) = &videos.published_off_api {
            let detail = format!("video {key} recorded as published but not on the API");
            return Err(Violation::new(Invariant::NoLostVideo, detail, rel));
        }
        Ok(())
    }

    /// Every video record in the store, read once, summed for the checks.
    fn video_sums(&self) -> VideoSums {
        let mut sums = VideoSums::default();
        self.each_video_record(|ch, rec| {
            *sums.cost_by_channel.entry(ch).or_default() += rec.cost_micros;
            *sums
                .quota_by_project
                .entry(self.topo.channel(ch).project)
                .or_default() += rec.quota_units;
            if sums.published_off_api.is_none()
                && matches!(rec.status, VideoStatus::Published { .. })
            {
                let key = idempotency_key(&self.topo.channel(ch).name, rec.slot);
                if !self.api.uploads.contains_key(&key) {
                    sums.published_off_api = Some(key);
                }
            }
        });
        sums
    }

    /// Each video record in the store, active then done, in key order.
    fn each_video_record(&self, mut f: impl FnMut(ChannelId, VideoRecord)) {
        for prefix in [b"va/".as_slice(), b"vd/".as_slice()] {
            for (k, v, _) in self.store.scan(prefix, &prefix_end(prefix)) {
                if let (Some(ch), Ok(rec)) = (channel_of_video_key(&k), VideoRecord::decode(v)) {
                    f(ch, rec);
                }
            }
        }
    }

    /// Every video record in the store, active and done.
    pub(super) fn video_records(&self) -> Vec<(ChannelId, VideoRecord)> {
        let mut all = Vec::new();
        self.each_video_record(|ch, rec| all.push((ch, rec)));
        all
    }

    /// Each channel's ledger equals the sum of its videos, and covers what
    /// really ran.
    fn check_cost_ledgers(&self, videos: &VideoSums) -> Result<(), Violation> {
        let cost_by_channel = &videos.cost_by_channel;
        for ch in self.topo.channel_ids() {
            let rec = self
                .store
                .value(&channel_key(ch))
                .and_then(|v| ChannelRecord::decode(v).ok())
                .unwrap_or_default();
            let videos = cost_by_channel.get(&ch).copied().unwrap_or(0);
            let truth = self.truth.cost_by_channel.get(&ch).copied().unwrap_or(0);
            let before = self.baseline.spend_micros.get(&ch).copied().unwrap_or(0);
            if i128::from(rec.spent_total_micros) != i128::from(videos) + before
                || truth > rec.spent_total_micros
            {
                return Err(Violation::new(
                    Invariant::LedgersMatchReality,
                    format!(
                        "channel {}: ledger {} micros, its videos {} micros, really spent {} micros",
                        self.topo.channel(ch).name,
                        rec.spent_total_micros,
                        videos,
                        truth
                    ),
                    self.rel_ms(),
                ));
            }
        }
        Ok(())
    }

    /// Each project's quota ledger equals the units its videos hold, and
    /// covers what the API charged.
    fn check_quota_ledgers(&self, videos: &VideoSums) -> Result<(), Violation> {
        let quota_by_project = &videos.quota_by_project;
        for (p, spec) in self.topo.projects.iter().enumerate() {
            let p = ProjectId(p as u16);
            let ledger = self.watch.ledger_units.get(&p).copied().unwrap_or(0);
            let videos = quota_by_project.get(&p).copied().unwrap_or(0);
            let charged = self.api.charged_total.get(&p).copied().unwrap_or(0);
            let before = self.baseline.quota_units.get(&p).copied().unwrap_or(0);
            if i128::from(ledger) != i128::from(videos) + before || charged > ledger {
                return Err(Violation::new(
                    Invariant::LedgersMatchReality,
                    format!(
                        "project {}: ledger {ledger} units, videos {videos}, API charged {charged}",
                        spec.name
                    ),
                    self.rel_ms(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use actors::store::{Txn, Write};

    use super::*;
    use crate::checks::Invariant;
    use crate::scenarios::builtin;
    use crate::trace::Trace;

    /// A steady run just before its end, every check still passing, and
    /// one published video record's key and record.
    fn near_end() -> (World, actors::store::Key, VideoRecord) {
        let mut w = World::new(builtin("steady", 1).expect("steady"), 1, Trace::new(None));
        let end_rel_ms = w.end_at_ms - w.sc.start_utc_ms;
        assert!(w.run_until(end_rel_ms - 1), "{:?}", w.violation);
        w.final_checks();
        assert!(w.violation.is_none(), "{:?}", w.violation);
        let (key, rec) = w
            .store
            .scan(b"vd/", &prefix_end(b"vd/"))
            .find_map(|(k, v, _)| {
                let rec = VideoRecord::decode(v).ok()?;
                matches!(rec.status, VideoStatus::Published { .. }).then(|| (k, rec))
            })
            .expect("steady publishes");
        (w, key, rec)
    }

    fn rewrite(w: &mut World, key: actors::store::Key, rec: &VideoRecord) {
        let txn = Txn {
            checks: vec![],
            writes: vec![Write::Put(key, rec.encode())],
        };
        w.store.commit(&txn).expect("written");
    }

    fn violation_after_final_checks(mut w: World) -> (Invariant, String) {
        w.final_checks();
        let v = w.violation.expect("the end-of-run checks fail");
        (v.invariant, v.detail)
    }

    #[test]
    fn a_video_recorded_as_published_that_the_api_never_saw_is_caught() {
        let (mut w, key, rec) = near_end();
        let ch = channel_of_video_key(&key).expect("a video key");
        let api_key = idempotency_key(&w.topo.channel(ch).name, rec.slot);
        assert!(w.api.uploads.remove(&api_key).is_some());
        let (inv, detail) = violation_after_final_checks(w);
        assert_eq!(inv, Invariant::NoLostVideo);
        assert!(
            detail.contains("recorded as published but not on the API"),
            "{detail}"
        );
        assert!(detail.contains(&api_key), "{detail}");
    }

    /// The ledger violation the end checks report once one published
    /// video's record is changed by `change`.
    fn ledger_violation(change: impl FnOnce(&mut VideoRecord)) -> String {
        let (mut w, key, mut rec) = near_end();
        change(&mut rec);
        rewrite(&mut w, key, &rec);
        let (inv, detail) = violation_after_final_checks(w);
        assert_eq!(inv, Invariant::LedgersMatchReality);
        detail
    }

    #[test]
    fn a_video_cost_its_channel_ledger_does_not_hold_is_caught() {
        let detail = ledger_violation(|rec| rec.cost_micros += 1);
        assert!(detail.starts_with("channel "), "{detail}");
    }

    #[test]
    fn quota_units_its_project_ledger_does_not_hold_are_caught() {
        let detail = ledger_violation(|rec| rec.quota_units += 1);
        assert!(detail.starts_with("project "), "{detail}");
    }
}
