//! The summary of a run, as text for people and JSON for tools.

use std::collections::BTreeMap;

use actors::records::{VideoRecord, VideoStatus};
use actors::store::prefix_end;
use serde::Serialize;

use crate::checks::{Invariant, Violation};
use crate::trace::format_item;
use crate::world::World;

#[derive(Serialize, Debug, Clone)]
pub struct FailoverReport {
    pub what: String,
    pub at_ms: u64,
    pub channels: usize,
    pub recovered_ms: Option<u64>,
    pub disturbed: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct ViolationReport {
    pub invariant: u8,
    pub name: String,
    pub detail: String,
    pub at_ms: u64,
    pub last_events: Vec<String>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub ok: bool,
    pub violation: Option<ViolationReport>,
    pub sim_duration_ms: u64,
    pub recovery_bound_ms: Option<u64>,
    pub stop_bound_ms: u64,
    pub liveness_bound_ms: u64,
    pub videos_planned: u64,
    pub videos_published: u64,
    pub videos_failed: BTreeMap<String, u64>,
    pub videos_in_progress: u64,
    pub plan_to_publish_p50_ms: u64,
    pub plan_to_publish_p99_ms: u64,
    pub gpu_utilisation: f64,
    pub cost_total_usd: f64,
    pub cost_per_video_usd: f64,
    pub quota_units_used: u64,
    pub upload_calls: u64,
    pub lookup_calls: u64,
    pub quota_refusals: u64,
    pub failovers: Vec<FailoverReport>,
    pub jobs_started: u64,
    pub gpu_jobs: u64,
    pub store_ops: u64,
    pub commit_unknowns: u64,
    pub fenced_machines: u64,
    pub events_processed: u64,
    pub trace_hash: String,
    /// Only for capacity runs: does the fleet keep up, and what limits it.
    pub keeps_up: bool,
    pub bottleneck: String,
    /// The fault schedule the run followed.
    pub faults: Vec<String>,
    /// How often each coverage probe was hit, indexed like
    /// `actors::probe::Probe::ALL`.
    #[serde(skip)]
    pub probes: Vec<u64>,
    /// The same, by name, for the probes that were hit.
    pub probe_hits: BTreeMap<String, u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How the run's videos ended, from the store.
#[derive(Default)]
struct VideoTally {
    planned: u64,
    published: u64,
    in_progress: u64,
    failed: BTreeMap<String, u64>,
}

fn tally_videos(w: &World) -> VideoTally {
    let mut t = VideoTally::default();
    for prefix in [b"va/".as_slice(), b"vd/".as_slice()] {
        for (_, v, _) in w.store.scan(prefix, &prefix_end(prefix)) {
            let Ok(rec) = VideoRecord::decode(v) else {
                continue;
            };
            t.planned += 1;
            match rec.status {
                VideoStatus::Active => t.in_progress += 1,
                VideoStatus::Published { .. } => t.published += 1,
                VideoStatus::Failed(r) => *t.failed.entry(r.name().to_string()).or_default() += 1,
            }
        }
    }
    t
}

/// GPU-busy time over GPU time, the whole run.
fn gpu_utilisation(w: &World) -> f64 {
    let elapsed = w.now_ms - w.sc.start_utc_ms;
    let gpus = w.topo.gpus.len() as f64;
    if gpus > 0.0 && elapsed > 0 {
        w.gpu_busy_ms() as f64 / (gpus * elapsed as f64)
    } else {
        0.0
    }
}

/// For capacity runs: does the fleet keep up (nearly every video due by
/// the end published, publishing not lagging the plan by more than the
/// lead), and if not, what limits it.
fn keeps_up(w: &World, t: &VideoTally, p99_ms: u64, utilisation: f64) -> (bool, String) {
    let keeps_up = t.in_progress as f64 <= 0.02 * t.planned.max(1) as f64
        && p99_ms < w.sc.machines.channel.plan_lead_ms * 2;
    let bottleneck = if utilisation > 0.85 {
        "GPUs (utilisation above 85%)".to_string()
    } else if w.api.quota_refusals > 0 {
        "publishing quota".to_string()
    } else if !keeps_up {
        "scheduling and dispatch latency".to_string()
    } else {
        format!(
            "none: GPUs {:.0}% busy, quota not reached",
            utilisation * 100.0
        )
    };
    (keeps_up, bottleneck)
}

fn violation_report(w: &World) -> Option<ViolationReport> {
    w.violation.as_ref().map(|v: &Violation| ViolationReport {
        invariant: v.invariant.number(),
        name: v.invariant.name().to_string(),
        detail: v.detail.clone(),
        at_ms: v.at_ms,
        last_events: w.trace.recent().map(format_item).collect(),
    })
}

fn failover_reports(w: &World) -> Vec<FailoverReport> {
    w.stats
        .failovers
        .iter()
        .map(|f| FailoverReport {
            what: f.what.clone(),
            at_ms: f.at_ms,
            channels: f.channels.len(),
            recovered_ms: f.recovered_ms,
            disturbed: f.disturbed,
        })
        .collect()
}

pub fn summarize(w: &World, seed: u64) -> Summary {
    let t = tally_videos(w);
    let mut lat = w.stats.publish_latency_ms.clone();
    lat.sort_unstable();
    let utilisation = gpu_utilisation(w);
    let cost = w.truth.total_cost_micros as f64 / 1e6;
    let p99 = percentile(&lat, 0.99);
    let (keeps_up, bottleneck) = keeps_up(w, &t, p99, utilisation);
    Summary {
        scenario: w.sc.name.clone(),
        seed,
        ok: w.violation.is_none(),
        violation: violation_report(w),
        sim_duration_ms: w.now_ms - w.sc.start_utc_ms,
        recovery_bound_ms: w.sc.bounds.recovery_ms,
        stop_bound_ms: w.sc.bounds.stop_ms,
        liveness_bound_ms: w.sc.bounds.liveness_ms,
        videos_planned: t.planned,
        videos_published: t.published,
        videos_in_progress: t.in_progress,
        plan_to_publish_p50_ms: percentile(&lat, 0.5),
        plan_to_publish_p99_ms: p99,
        gpu_utilisation: (utilisation * 1000.0).round() / 1000.0,
        cost_total_usd: (cost * 100.0).round() / 100.0,
        cost_per_video_usd: if t.published > 0 {
            ((cost / t.published as f64) * 10_000.0).round() / 10_000.0
        } else {
            0.0
        },
        videos_failed: t.failed,
        quota_units_used: w.api.charged_total.values().sum(),
        upload_calls: w.api.upload_calls,
        lookup_calls: w.api.lookup_calls,
        quota_refusals: w.api.quota_refusals,
        failovers: failover_reports(w),
        jobs_started: w.stats.jobs_started,
        gpu_jobs: w.stats.gpu_jobs,
        store_ops: w.stats.store_ops,
        commit_unknowns: w.stats.commit_unknowns,
        fenced_machines: w.stats.fenced,
        events_processed: w.trace.events,
        trace_hash: format!("{:016x}", w.trace.hash()),
        keeps_up,
        bottleneck,
        faults: w
            .sc
            .faults
            .iter()
            .map(|f| format!("{}.{:03}s {:?}", f.at_ms / 1000, f.at_ms % 1000, f.fault))
            .collect(),
        probes: Vec::new(),
        probe_hits: BTreeMap::new(),
    }
}

impl Summary {
    /// A run that panicked before its world existed (building the scenario
    /// or the world): a failing seed with the panic's message.
    pub fn panicked(scenario: &str, seed: u64, message: &str) -> Summary {
        Summary {
            scenario: scenario.to_string(),
            seed,
            ok: false,
            violation: Some(ViolationReport {
                invariant: Invariant::Assertion.number(),
                name: Invariant::Assertion.name().to_string(),
                detail: format!("panicked: {message}"),
                at_ms: 0,
                last_events: Vec::new(),
            }),
            ..Summary::default()
        }
    }

    pub fn to_text(&self) -> String {
        let status = if self.ok { "ok" } else { "VIOLATION" };
        let mut s = format!("scenario {} seed {}: {status}\n", self.scenario, self.seed);
        if let Some(v) = &self.violation {
            s += &self.violation_text(v);
        }
        s += &format!(
            "  bounds: recovery {}, stop {} ms, liveness {} ms\n",
            self.recovery_bound_ms
                .map(|b| format!("{b} ms"))
                .unwrap_or_else(|| "measured only".into()),
            self.stop_bound_ms,
            self.liveness_bound_ms
        );
        s += &format!(
            "  videos: {} planned, {} published, {} in progress, failed {:?}\n",
            self.videos_planned, self.videos_published, self.videos_in_progress, self.videos_failed
        );
        s += &format!(
            "  plan to publish: p50 {} ms, p99 {} ms; GPU utilisation {:.1}%; cost ${:.2} (${:.4}/video)\n",
            self.plan_to_publish_p50_ms,
            self.plan_to_publish_p99_ms,
            self.gpu_utilisation * 100.0,
            self.cost_total_usd,
            self.cost_per_video_usd
        );
        s += &format!(
            "  quota: {} units, {} uploads, {} lookups, {} refusals\n",
            self.quota_units_used, self.upload_calls, self.lookup_calls, self.quota_refusals
        );
        s += &self.failovers_text();
        s += &format!(
            "  events {}, store ops {}, commit unknowns {}, fenced machines {}, trace {}\n",
            self.events_processed,
            self.store_ops,
            self.commit_unknowns,
            self.fenced_machines,
            self.trace_hash
        );
        if self.scenario.starts_with("capacity-10m") {
            s += &format!(
                "  keeps up: {}; bottleneck: {}\n",
                self.keeps_up, self.bottleneck
            );
        }
        s
    }

    /// The violation, the events before it, the schedule, and how to run
    /// it again.
    fn violation_text(&self, v: &ViolationReport) -> String {
        let mut s = format!(
            "  invariant {} ({}) violated at {} ms: {}\n  last events:\n",
            v.invariant, v.name, v.at_ms, v.detail
        );
        for e in &v.last_events {
            s += &format!("    {e}\n");
        }
        s += "  fault schedule:\n";
        for f in &self.faults {
            s += &format!("    {f}\n");
        }
        s += &format!(
            "  reproduce: reelfleet sim --scenario {} --seed {}\n",
            self.scenario, self.seed
        );
        s
    }

    fn failovers_text(&self) -> String {
        let mut s = String::new();
        for f in &self.failovers {
            let recovered = f
                .recovered_ms
                .map(|r| format!("in {r} ms"))
                .unwrap_or_else(|| "never".into());
            let disturbed = if f.disturbed {
                " (disturbed by later faults)"
            } else {
                ""
            };
            s += &format!(
                "  failover: {} at {} ms, {} channels, recovered {recovered}{disturbed}\n",
                f.what, f.at_ms, f.channels
            );
        }
        s
    }
}
