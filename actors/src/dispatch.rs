//! `DispatchMachine`: one region's GPU dispatcher.
//!
//! How to drive it: feed [`DispatchInput::Submit`] for GPU jobs from channel
//! actors (or spilled from another region), [`DispatchInput::Load`] for GPU
//! load reports, [`DispatchInput::Summary`] for other regions' summaries,
//! [`DispatchInput::Members`] with the nodes the view holds live (GPUs of
//! other nodes are not used), and `Tick` at
//! `next_deadline()`. Effects send jobs to GPUs or regions, refuse jobs, and
//! broadcast this region's summary.
//!
//! The score of a GPU for a job, lower is better (all in milliseconds of
//! expected delay, so the terms add up):
//!
//! ```text
//! score = est_wait_ms                          (queue: from its last report,
//!                                               plus jobs sent since)
//!       + duration_ms * cost_per_hour / price_ms_per_dollar_hour   (cost)
//!       + leftover_fraction * fit_weight_ms    (fit: prefer the tightest
//!                                               GPU so big jobs find room)
//! ```
//! A GPU that cannot hold the job at all, is draining, or whose report is
//! stale is never chosen. In a region of more than `candidates_max` GPUs,
//! only that many are scored, picked by a stride from the job id (the
//! power of many choices: close to the best at a fraction of the work). When the best local wait exceeds `spill_wait_ms`,
//! the job goes to the nearest region whose summary promises a shorter wait
//! including the extra latency; a spilled job is never spilled again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use topology::{GpuId, RegionId, Topology};

use crate::protocol::{JobFailure, JobSpec, LoadReport};

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
pub struct DispatchParams {
    pub spill_wait_ms: u64,
    /// Reports older than this are not trusted.
    pub report_stale_ms: u64,
    pub summary_interval_ms: u64,
    pub fit_weight_ms: u64,
    /// How many ms of waiting one dollar-per-hour of GPU price is worth,
    /// per second of job.
    pub cost_weight_ms: u64,
    /// At most this many GPUs are scored per job.
    pub candidates_max: usize,
}

impl Default for DispatchParams {
    fn default() -> Self {
        DispatchParams {
            spill_wait_ms: 60_000,
            report_stale_ms: 150_000,
            summary_interval_ms: 2_000,
            fit_weight_ms: 500,
            cost_weight_ms: 200,
            candidates_max: 32,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum DispatchInput {
    Submit(JobSpec),
    Load(LoadReport),
    Summary {
        region: RegionId,
        best_wait_ms: u64,
    },
    /// Which nodes are live (`live[node]`): GPUs of the others are not used.
    Members(Vec<bool>),
    Tick,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum DispatchEffect {
    ToGpu { gpu: GpuId, job: JobSpec },
    ToRegion { region: RegionId, job: JobSpec },
    Refuse { job: JobSpec, failure: JobFailure },
    Summary { region: RegionId, best_wait_ms: u64 },
}

/// A GPU's part in the summary: when it last reported, and its wait for
/// a job that needs no memory (`wait_of(view, 0)`), `None` if draining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SummaryWait {
    at_ms: u64,
    wait_ms: Option<u64>,
}

impl SummaryWait {
    fn of(v: &GpuView) -> SummaryWait {
        SummaryWait {
            at_ms: v.at_ms,
            wait_ms: (!v.report.draining).then(|| DispatchMachine::wait_of(v, 0)),
        }
    }
}

#[derive(Clone, Debug)]
struct GpuView {
    report: LoadReport,
    at_ms: u64,
    /// Sent since the report: memory and expected time.
    sent_bytes: u64,
    sent_ms: u64,
}

pub struct DispatchMachine {
    topo: Arc<Topology>,
    region: RegionId,
    params: DispatchParams,
    /// The GPUs heard from, sorted by id: the sampled candidates are
    /// picked by position (a B-tree walked to each of them cost 5 % of a
    /// capacity-10m day, 400 GPUs a region).
    gpus: Vec<(GpuId, GpuView)>,
    /// What the summary needs of each GPU, at the same positions as
    /// `gpus`: the summary's scan every `summary_interval_ms` reads 24
    /// bytes a GPU here instead of a whole 80-byte entry (that scan, 400
    /// GPUs a region, was an eighth of a steady capacity-10m hour's
    /// first-level data-cache misses).
    waits: Vec<SummaryWait>,
    summaries: BTreeMap<RegionId, (u64, u64)>,
    last_summary_ms: Option<u64>,
    dispatched: u64,
    spilled: u64,
    /// Jobs dispatched lately: a duplicated submit must not run twice.
    recent: BTreeSet<crate::protocol::JobId>,
    recent_order: VecDeque<crate::protocol::JobId>,
    /// Time only moves forward.
    clock: crate::machine::Monotonic,
}

/// The positions of `take` candidates among `n` GPUs sorted by id: from
/// `start`, every `stride`-th, wrapping around (what walking the sorted
/// GPUs in a cycle from `start` and taking every `stride`-th gives).
fn sample_positions(
    n: usize,
    take: usize,
    start: usize,
    stride: usize,
) -> impl Iterator<Item = usize> {
    assert!(take <= n && (n == 0 || start < n));
    // `take` steps of `stride` stay within one lap (`stride` is at most
    // `n / take`), so a position wraps by one subtraction, not a division.
    assert!(
        take == 0 || (take - 1) * stride < n,
        "the sample laps the GPUs"
    );
    let mut next = start;
    (0..take).map(move |_| {
        let at = next;
        next += stride;
        if next >= n {
            next -= n;
        }
        at
    })
}

/// How many recent job ids a dispatcher remembers to drop duplicates.
pub const RECENT_JOBS_MAX: usize = 8192;

impl DispatchMachine {
    pub fn new(topo: Arc<Topology>, region: RegionId, params: DispatchParams) -> DispatchMachine {
        assert!(
            region.index() < topo.regions.len(),
            "{region} is not in the topology"
        );
        assert!(params.summary_interval_ms > 0);
        DispatchMachine {
            topo,
            region,
            params,
            gpus: Vec::new(),
            waits: Vec::new(),
            summaries: BTreeMap::new(),
            last_summary_ms: None,
            dispatched: 0,
            spilled: 0,
            recent: BTreeSet::new(),
            recent_order: VecDeque::new(),
            clock: crate::machine::Monotonic::default(),
        }
    }

    pub fn region(&self) -> RegionId {
        self.region
    }

    /// The GPUs it knows and the regions it has heard from, for people
    /// debugging a seed.
    pub fn describe(&self, now_ms: u64) -> String {
        let mut s = format!("dispatcher of {}:\n", self.region);
        for (g, v) in &self.gpus {
            s += &format!(
                "  {g}: fresh {} reported at {} sent {} B {} ms | {:?}\n",
                self.fresh(v, now_ms),
                v.at_ms,
                v.sent_bytes,
                v.sent_ms,
                v.report
            );
        }
        s += &format!("  summaries {:?}\n", self.summaries);
        s
    }
    pub fn spilled(&self) -> u64 {
        self.spilled
    }
    pub fn dispatched(&self) -> u64 {
        self.dispatched
    }

    pub fn next_deadline(&self) -> Option<u64> {
        Some(
            self.last_summary_ms
                .map(|t| t + self.params.summary_interval_ms)
                .unwrap_or(0),
        )
    }

    pub fn handle(&mut self, now_ms: u64, input: DispatchInput, out: &mut Vec<DispatchEffect>) {
        self.clock.advance(now_ms, "dispatch machine");
        match input {
            DispatchInput::Submit(job) => self.dispatch(now_ms, job, out),
            DispatchInput::Load(report) => {
                let gpu = report.gpu;
                let view = GpuView {
                    report,
                    at_ms: now_ms,
                    sent_bytes: 0,
                    sent_ms: 0,
                };
                let wait = SummaryWait::of(&view);
                match self.gpu_pos(gpu) {
                    Ok(i) => {
                        self.gpus[i].1 = view;
                        self.waits[i] = wait;
                    }
                    Err(i) => {
                        self.gpus.insert(i, (gpu, view));
                        self.waits.insert(i, wait);
                    }
                }
                debug_assert!(self.gpus.windows(2).all(|w| w[0].0 < w[1].0));
            }
            DispatchInput::Summary {
                region,
                best_wait_ms,
            } => {
                if region != self.region {
                    self.summaries.insert(region, (best_wait_ms, now_ms));
                }
            }
            DispatchInput::Members(live) => {
                let topo = Arc::clone(&self.topo);
                self.gpus.retain(|(g, _)| {
                    live.get(topo.gpu(*g).node.index())
                        .copied()
                        .unwrap_or(false)
                });
                self.waits = self.gpus.iter().map(|(_, v)| SummaryWait::of(v)).collect();
            }
            DispatchInput::Tick => {}
        }
        let due = self
            .last_summary_ms
            .map(|t| t + self.params.summary_interval_ms)
            .unwrap_or(0);
        if now_ms >= due {
            debug_assert!(self.waits_match_views());
            self.last_summary_ms = Some(now_ms);
            out.push(DispatchEffect::Summary {
                region: self.region,
                best_wait_ms: self.best_wait_ms(now_ms),
            });
        }
    }

    /// Whether something heard at `at_ms` is still trusted at `now_ms`.
    fn recent(&self, at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(at_ms) <= self.params.report_stale_ms
    }

    fn fresh(&self, v: &GpuView, now_ms: u64) -> bool {
        self.recent(v.at_ms, now_ms) && !v.report.draining
    }

    fn wait_of(v: &GpuView, need_bytes: u64) -> u64 {
        let free = v.report.free_bytes.saturating_sub(v.sent_bytes);
        let base = v.report.est_wait_ms + v.sent_ms;
        if free >= need_bytes && v.report.queued == 0 {
            base.saturating_sub(v.sent_ms.min(base))
        } else {
            base.max(1)
        }
    }

    /// The wait a typical job would see here now: what the summary says.
    /// The least `wait_of(view, 0)` over the fresh GPUs, read from
    /// `waits`.
    fn best_wait_ms(&self, now_ms: u64) -> u64 {
        self.waits
            .iter()
            .filter(|w| self.recent(w.at_ms, now_ms))
            .filter_map(|w| w.wait_ms)
            .min()
            .unwrap_or(u64::MAX / 4)
    }

    /// `waits` says what the views say, position by position.
    fn waits_match_views(&self) -> bool {
        self.waits.len() == self.gpus.len()
            && self
                .gpus
                .iter()
                .zip(&self.waits)
                .all(|((_, v), w)| SummaryWait::of(v) == *w)
    }

    /// A GPU's score for `job`, given its wait for the job (`wait_of`).
    fn score_of_wait(&self, v: &GpuView, job: &JobSpec, wait: u64) -> u64 {
        debug_assert_eq!(wait, Self::wait_of(v, job.gpu_memory_bytes));
        let dollars_per_hour = v.report.cost_per_hour_micros / 1_000_000;
        let cost =
            job.duration.mean_ms / 1000 * dollars_per_hour * self.params.cost_weight_ms / 1000;
        let leftover = v.report.total_bytes.saturating_sub(job.gpu_memory_bytes);
        let fit = leftover * self.params.fit_weight_ms / v.report.total_bytes.max(1);
        wait + cost + fit
    }

    fn dispatch(&mut self, now_ms: u64, mut job: JobSpec, out: &mut Vec<DispatchEffect>) {
        let effects_before = out.len();
        if !self.recent.insert(job.id) {
            probe!(DispatchDuplicate);
            return; // a duplicate delivery
        }
        self.recent_order.push_back(job.id);
        while self.recent_order.len() > RECENT_JOBS_MAX {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
        // The sampled candidates first; if none of them can take the job,
        // every GPU (a sample of stale or small GPUs must not turn away a
        // job another GPU could run).
        let best = self
            .best_gpu(now_ms, &job, true)
            .or_else(|| self.best_gpu(now_ms, &job, false));
        let local_wait = best.map(|(_, w, _)| w).unwrap_or(u64::MAX);
        if local_wait > self.params.spill_wait_ms && job.hops == 0 {
            if let Some(region) = self.spill_target(now_ms, local_wait) {
                probe!(DispatchSpilled);
                assert_ne!(
                    region, self.region,
                    "a job is never spilled to its own region"
                );
                job.hops += 1;
                self.spilled += 1;
                out.push(DispatchEffect::ToRegion { region, job });
                Self::assert_one_placement(out, effects_before);
                return;
            }
        }
        match best {
            Some((_, _, gpu)) => {
                if let Ok(i) = self.gpu_pos(gpu) {
                    let v = &mut self.gpus[i].1;
                    v.sent_bytes += job.gpu_memory_bytes;
                    v.sent_ms += job.duration.mean_ms / (u64::from(v.report.running).max(1));
                    self.waits[i] = SummaryWait::of(v);
                }
                self.dispatched += 1;
                out.push(DispatchEffect::ToGpu { gpu, job });
            }
            None => {
                probe!(DispatchNoGpu);
                out.push(DispatchEffect::Refuse {
                    job,
                    failure: JobFailure::NoCapacity,
                })
            }
        }
        Self::assert_one_placement(out, effects_before);
    }

    /// The best (score, wait, GPU) for `job` among the sampled candidates
    /// (the power of many choices: a stride from the job's id and attempt)
    /// or among all GPUs.
    fn best_gpu(&self, now_ms: u64, job: &JobSpec, sampled: bool) -> Option<(u64, u64, GpuId)> {
        let n = self.gpus.len();
        let take = if sampled {
            n.min(self.params.candidates_max.max(1))
        } else {
            n
        };
        let id =
            job.id.slot ^ (u64::from(job.id.channel.0) << 32) ^ (u64::from(job.id.attempt) << 48);
        let start = if n > take {
            (topology::placement::mix64(id) % n as u64) as usize
        } else {
            0
        };
        let stride = if n > take { (n / take).max(1) } else { 1 };
        let need_bytes = job.gpu_memory_bytes;
        let best = sample_positions(n, take, start, stride)
            .map(|i| &self.gpus[i])
            .filter(|(_, v)| self.fresh(v, now_ms) && v.report.total_bytes >= need_bytes)
            .map(|(g, v)| {
                let wait = Self::wait_of(v, need_bytes);
                (self.score_of_wait(v, job, wait), wait, *g)
            })
            .min();
        assert!(best.is_none_or(|(_, _, g)| self.gpu_pos(g).is_ok()));
        best
    }

    /// Where `gpu` is among the GPUs heard from, or where it would go.
    fn gpu_pos(&self, gpu: GpuId) -> Result<usize, usize> {
        self.gpus.binary_search_by_key(&gpu, |(g, _)| *g)
    }

    /// Every dispatch ends in exactly one placement: a GPU, a region, or a
    /// refusal (a duplicate in none).
    fn assert_one_placement(out: &[DispatchEffect], before: usize) {
        let placed = out[before..]
            .iter()
            .filter(|e| !matches!(e, DispatchEffect::Summary { .. }))
            .count();
        assert!(placed <= 1, "a job placed {placed} times");
    }

    /// The nearest region whose wait plus the extra latency beats ours.
    fn spill_target(&self, now_ms: u64, local_wait: u64) -> Option<RegionId> {
        self.summaries
            .iter()
            .filter(|(_, (_, at))| self.recent(*at, now_ms))
            .filter_map(|(r, (wait, _))| {
                let latency = u64::from(self.topo.latency(self.region, *r)) * 2;
                (wait + latency < local_wait && *wait <= self.params.spill_wait_ms)
                    .then_some((latency, *wait, *r))
            })
            .min()
            .map(|(_, _, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{JobId, JobKind};
    use topology::{ChannelId, DurationModel, NodeId, Region, GIB};

    /// The candidates picked by position are the ones a walk of the
    /// sorted GPUs in a cycle picked before (the B-tree the dispatcher
    /// kept them in), for every shape of fleet and sample.
    #[test]
    fn sampled_positions_match_a_cyclic_walk() {
        for n in 1..60 {
            for take in 1..=n {
                let stride = if n > take { (n / take).max(1) } else { 1 };
                for start in 0..n {
                    let start = if n > take { start } else { 0 };
                    let walk: Vec<usize> = (0..n)
                        .cycle()
                        .skip(start)
                        .step_by(stride)
                        .take(take)
                        .collect();
                    let picked: Vec<usize> = sample_positions(n, take, start, stride).collect();
                    assert_eq!(picked, walk, "n {n} take {take} start {start}");
                }
            }
        }
    }

    fn topo() -> Arc<Topology> {
        let mut t = Topology::default();
        for name in ["a", "b", "c"] {
            t.regions.push(Region { name: name.into() });
        }
        t.latency_ms = vec![vec![1, 10, 80], vec![10, 1, 80], vec![80, 80, 1]];
        Arc::new(t)
    }

    fn job(gib: u64) -> JobSpec {
        JobSpec {
            id: JobId {
                channel: ChannelId(0),
                slot: 0,
                stage: 0,
                attempt: 1,
                epoch: 1,
            },
            owner: NodeId(0),
            kind: JobKind::Gpu,
            gpu_memory_bytes: gib * GIB,
            duration: DurationModel {
                mean_ms: 10_000,
                jitter_ms: 0,
            },
            fixed_cost_micros: 0,
            priority: 0,
            home_region: RegionId(0),
            budget_day: 0,
            hops: 0,
        }
    }

    fn report(gpu: u32, total_gib: u64, free_gib: u64, wait: u64) -> LoadReport {
        LoadReport {
            gpu: GpuId(gpu),
            free_bytes: free_gib * GIB,
            total_bytes: total_gib * GIB,
            running: 1,
            queued: u32::from(wait > 0),
            est_wait_ms: wait,
            draining: false,
            cost_per_hour_micros: 1_000_000,
        }
    }

    #[test]
    fn prefers_the_idle_gpu_that_fits_tightest() {
        let mut r = DispatchMachine::new(topo(), RegionId(0), DispatchParams::default());
        let mut out = Vec::new();
        r.handle(0, DispatchInput::Load(report(1, 80, 80, 0)), &mut out);
        r.handle(0, DispatchInput::Load(report(2, 24, 24, 0)), &mut out);
        r.handle(0, DispatchInput::Load(report(3, 16, 16, 0)), &mut out);
        out.clear();
        r.handle(1, DispatchInput::Submit(job(20)), &mut out);
        assert_eq!(
            out,
            vec![DispatchEffect::ToGpu {
                gpu: GpuId(2),
                job: job(20)
            }]
        );
    }

    #[test]
    fn spills_to_the_nearest_region_that_is_faster() {
        let mut r = DispatchMachine::new(topo(), RegionId(0), DispatchParams::default());
        let mut out = Vec::new();
        r.handle(0, DispatchInput::Load(report(1, 24, 0, 300_000)), &mut out);
        r.handle(
            0,
            DispatchInput::Summary {
                region: RegionId(1),
                best_wait_ms: 5_000,
            },
            &mut out,
        );
        r.handle(
            0,
            DispatchInput::Summary {
                region: RegionId(2),
                best_wait_ms: 0,
            },
            &mut out,
        );
        out.clear();
        r.handle(1, DispatchInput::Submit(job(8)), &mut out);
        let mut spilled = job(8);
        spilled.hops = 1;
        assert_eq!(
            out,
            vec![DispatchEffect::ToRegion {
                region: RegionId(1),
                job: spilled.clone()
            }]
        );
        // A spilled job stays where it lands even if that region is slow.
        out.clear();
        let mut there = DispatchMachine::new(topo(), RegionId(1), DispatchParams::default());
        there.handle(1, DispatchInput::Load(report(9, 24, 0, 300_000)), &mut out);
        out.clear();
        there.handle(2, DispatchInput::Submit(spilled.clone()), &mut out);
        assert_eq!(
            out,
            vec![DispatchEffect::ToGpu {
                gpu: GpuId(9),
                job: spilled
            }]
        );
    }

    /// The summary read from `waits` is the least wait over the fresh
    /// views, as a scan of the views computes it, after reports (one
    /// draining, some going stale) and after jobs sent since them.
    #[test]
    fn the_summary_is_what_the_views_say() {
        let params = DispatchParams::default();
        let mut r = DispatchMachine::new(topo(), RegionId(0), params);
        let mut out = Vec::new();
        let scan = |r: &DispatchMachine, now_ms: u64| {
            r.gpus
                .iter()
                .filter(|(_, v)| r.fresh(v, now_ms))
                .map(|(_, v)| DispatchMachine::wait_of(v, 0))
                .min()
                .unwrap_or(u64::MAX / 4)
        };
        // Every GPU has a queue, so each job sent to one lengthens its wait.
        for (gpu, wait) in [(5, 9_000), (1, 4_000), (3, 1_000), (2, 7_000)] {
            r.handle(0, DispatchInput::Load(report(gpu, 24, 24, wait)), &mut out);
        }
        let mut draining = report(4, 80, 80, 0);
        draining.draining = true;
        r.handle(10, DispatchInput::Load(draining), &mut out);
        for now_ms in [20, 30, 40] {
            let mut j = job(8);
            j.id.slot = now_ms;
            r.handle(now_ms, DispatchInput::Submit(j), &mut out);
            assert!(r.waits_match_views());
            assert_eq!(r.best_wait_ms(now_ms), scan(&r, now_ms));
        }
        // GPU 3 reports again; the others go stale.
        let later_ms = params.report_stale_ms + 5;
        r.handle(
            later_ms,
            DispatchInput::Load(report(3, 24, 24, 2_000)),
            &mut out,
        );
        assert!(r.waits_match_views());
        assert_eq!(r.best_wait_ms(later_ms), 2_000);
        assert_eq!(r.best_wait_ms(later_ms), scan(&r, later_ms));
        let all_stale_ms = later_ms + params.report_stale_ms + 1;
        assert_eq!(r.best_wait_ms(all_stale_ms), u64::MAX / 4);
    }

    #[test]
    fn refuses_when_nothing_can_hold_the_job() {
        let mut r = DispatchMachine::new(topo(), RegionId(0), DispatchParams::default());
        let mut out = Vec::new();
        r.handle(0, DispatchInput::Load(report(1, 16, 16, 0)), &mut out);
        out.clear();
        r.handle(1, DispatchInput::Submit(job(40)), &mut out);
        assert!(matches!(
            out[0],
            DispatchEffect::Refuse {
                failure: JobFailure::NoCapacity,
                ..
            }
        ));
    }
}
