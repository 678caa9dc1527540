//! BUGGIFY-style variation for the swarm: the fleet's shape, the machines'
//! parameters and the world's behaviour are drawn from the seed, so that a
//! campaign tests non-default timings (the 30 s lease of capacity-10m, a
//! 1 s lease, short retry bases, tiny queues) and not only the defaults.
//!
//! Each parameter keeps its default with probability 1/2, else it is drawn
//! from its range below. The ranges are those an operator could configure
//! and still expect every invariant to hold; the constraints between them
//! (renew well inside the lease, an upload timeout longer than an upload)
//! are what any deployment must keep, and are kept here.
//!
//! | parameter | range |
//! |---|---|
//! | fleet: regions, nodes per region, GPUs per node | 2..=4, 1..=3, 1..=3 |
//! | fleet: channels, videos a day, channels per project | 6..=36 (GPU demand at most a quarter of capacity), 24/48/96, within 100 uploads a day |
//! | fleet: tight budgets (soft limits pick cheap tiers, hard limits stop) | 1 seed in 6 |
//! | fleet: tiny quota (4 uploads a day a project; a late video fails) | 1 seed in 8 |
//! | `lease_ms` (renew a 3rd to 5th of it, drift margin a 10th) | 1,000 / 2,000 / 5,000 / 10,000 / 30,000 |
//! | `monitors`, `claim_batch` | 1..=3, 1 / 8 / 64 |
//! | `retry_base_ms`, `retry_max_ms` | 100..=5,000, 5,000..=120,000 |
//! | `stage_attempts_max`, `publish_attempts_max`, `jobs_lost_max` | 3..=10, 3..=12, 16..=128 |
//! | `plan_lead_ms` | 5..=60 min |
//! | `active_videos_max` | 1 / 4 / 64 |
//! | `dispatch_timeout_ms`, `job_grace_ms` | 30..=300 s, 5..=60 s |
//! | `publish_timeout_ms` | an upload plus two API trips plus 2..=40 s |
//! | `store_retry_ms` | 50..=2,000 |
//! | breaker: failures to open, open period, its cap | 2..=8, 1..=10 s, 30..=300 s |
//! | GPU: report interval, heartbeat, queue limit | 200..=5,000 ms, 10..=120 s, 2 / 8 / 256 |
//! | dispatcher: spill wait, summary interval, candidates | 5..=120 s, 0.5..=10 s, 1 / 3 / 32 |
//! | world: store service, jitter, API latency, upload | 1..=50 ms, 0..=30 ms, 5..=200 ms, 2..=15 s |
//! | world: spurious store conflicts, provider errors (ppm) | 0 / 1,000 / 20,000, 0 / 2,000 / 20,000 |

use actors::rng::SeededRng;
use topology::{Budget, PublishingProject};

use crate::scenario::Scenario;
use crate::scenarios::FleetShape;

const MIN: u64 = 60_000;

/// Draws `lo..=hi`.
fn range(rng: &mut SeededRng, lo: u64, hi: u64) -> u64 {
    debug_assert!(lo <= hi);
    lo + rng.below(hi - lo + 1)
}

/// One of `choices`.
fn pick<T: Copy>(rng: &mut SeededRng, choices: &[T]) -> T {
    choices[rng.below(choices.len() as u64) as usize]
}

/// Whether to vary this parameter (half the time).
fn buggify(rng: &mut SeededRng) -> bool {
    rng.below(2) == 0
}

/// A fleet shape drawn from `rng`, and whether its quota is tiny.
pub fn fleet(rng: &mut SeededRng) -> (FleetShape, bool) {
    let mut shape = FleetShape::default();
    if buggify(rng) {
        shape.regions = range(rng, 2, 4) as usize;
        shape.nodes_per_region = range(rng, 1, 3) as usize;
        shape.gpus_per_node = range(rng, 1, 3) as usize;
        shape.channels = range(rng, 6, 36) as usize;
        // A project's default quota is 100 uploads a day: the fleet asks
        // for no more (a tiny quota, below, is the case where it must wait).
        shape.videos_per_day = pick(rng, &[24, 48, 96]);
        let fits = (100 / shape.videos_per_day).clamp(1, 3);
        shape.channels_per_project = range(rng, 1, u64::from(fits)) as usize;
        // A fleet that cannot render what it plans never meets a liveness
        // bound: keep the GPU demand within a quarter of what the GPUs can
        // do, so that a region can be down and the rest still keep up.
        let videos_per_day_max = gpu_videos_per_day(&shape) / 4;
        let channels_max = (videos_per_day_max / u64::from(shape.videos_per_day)).max(1);
        shape.channels = shape.channels.min(channels_max as usize);
    }
    if rng.below(6) == 0 {
        shape.budget = Budget {
            daily_soft_micros: 100_000,
            daily_hard_micros: 250_000,
            per_video_soft_micros: 40_000,
            per_video_hard_micros: 150_000,
        };
    }
    let tiny_quota = rng.below(8) == 0;
    if tiny_quota {
        shape.project = |i| {
            let mut p = PublishingProject::youtube_default(&format!("yt-small-{i}"));
            p.buckets[0].units_per_day = 4;
            p
        };
    }
    (shape, tiny_quota)
}

/// About how many videos a day the fleet's GPUs can render: each video
/// holds 8 GiB for ~20 s and 16 GiB for ~45 s (the shorts pipeline), so a
/// GPU does `memory / 880 GiB·s` videos a second.
fn gpu_videos_per_day(shape: &FleetShape) -> u64 {
    let mut gib = 0;
    for _ in 0..shape.regions {
        for i in 0..shape.nodes_per_region {
            for g in 0..shape.gpus_per_node {
                // As `build_fleet` alternates them: L4 (24 GiB), A100 (80 GiB).
                gib += if (i + g) % 2 == 1 { 80 } else { 24 };
            }
        }
    }
    gib * 86_400 / 880
}

/// Varies the machines' and the world's parameters of `s` from `rng`.
pub fn params(s: &mut Scenario, rng: &mut SeededRng, tiny_quota: bool) {
    membership(s, rng);
    channel(s, rng);
    gpu_and_dispatch(s, rng);
    world(s, rng);
    if tiny_quota {
        // A video that cannot get quota soon fails (quota-exhausted)
        // rather than wait for tomorrow's reset; one planned just before
        // the heal may wait for its slot plus that grace.
        let c = &mut s.machines.channel;
        c.publish_grace_ms = 20 * MIN;
        let waits_ms = c.plan_lead_ms + c.publish_grace_ms + 15 * MIN;
        s.bounds.liveness_ms = s.bounds.liveness_ms.max(waits_ms);
    }
}

fn membership(s: &mut Scenario, rng: &mut SeededRng) {
    let m = &mut s.machines.membership;
    if buggify(rng) {
        m.lease_ms = pick(rng, &[1_000, 2_000, 5_000, 10_000, 30_000]);
        m.renew_ms = m.lease_ms / range(rng, 3, 5);
        m.drift_margin_ms = m.lease_ms / 10;
    }
    if buggify(rng) {
        m.monitors = range(rng, 1, 3) as usize;
    }
    if buggify(rng) {
        m.claim_batch = pick(rng, &[1, 8, 64]);
    }
    assert!(m.renew_ms < m.lease_ms && m.drift_margin_ms < m.lease_ms);
}

fn channel(s: &mut Scenario, rng: &mut SeededRng) {
    let c = &mut s.machines.channel;
    if buggify(rng) {
        c.retry_base_ms = range(rng, 100, 5_000);
        c.retry_max_ms = range(rng, 5_000, 120_000).max(c.retry_base_ms);
    }
    if buggify(rng) {
        c.stage_attempts_max = range(rng, 3, 10) as u32;
        c.publish_attempts_max = range(rng, 3, 12) as u32;
        c.jobs_lost_max = range(rng, 16, 128) as u32;
    }
    if buggify(rng) {
        c.plan_lead_ms = range(rng, 5, 60) * MIN;
    }
    if buggify(rng) {
        c.active_videos_max = pick(rng, &[1, 4, 64]);
    }
    if buggify(rng) {
        c.dispatch_timeout_ms = range(rng, 30_000, 300_000);
        c.job_grace_ms = range(rng, 5_000, 60_000);
    }
    if buggify(rng) {
        c.store_retry_ms = range(rng, 50, 2_000);
    }
    if buggify(rng) {
        c.breaker.failures_to_open = range(rng, 2, 8) as u32;
        c.breaker.open_ms = range(rng, 1_000, 10_000);
        c.breaker.open_ms_max = range(rng, 30_000, 300_000);
    }
}

fn gpu_and_dispatch(s: &mut Scenario, rng: &mut SeededRng) {
    let g = &mut s.machines.gpu;
    if buggify(rng) {
        g.report_interval_ms = range(rng, 200, 5_000);
        g.heartbeat_ms = range(rng, 10_000, 120_000);
    }
    if buggify(rng) {
        g.queue_jobs_max = pick(rng, &[2, 8, 256]);
    }
    let heartbeat_ms = g.heartbeat_ms;
    let r = &mut s.machines.dispatch;
    if buggify(rng) {
        r.spill_wait_ms = range(rng, 5_000, 120_000);
        r.summary_interval_ms = range(rng, 500, 10_000);
    }
    if buggify(rng) {
        r.candidates_max = pick(rng, &[1, 3, 32]);
    }
    // A dispatcher must hear from a live GPU before it calls it stale.
    r.report_stale_ms = r.report_stale_ms.max(2 * heartbeat_ms + 30_000);
}

fn world(s: &mut Scenario, rng: &mut SeededRng) {
    let w = &mut s.world;
    if buggify(rng) {
        w.store_service_ms = range(rng, 1, 50);
        w.jitter_ms = range(rng, 0, 30);
    }
    if buggify(rng) {
        w.api_latency_ms = range(rng, 5, 200);
        w.upload_ms = range(rng, 2_000, 15_000);
    }
    if buggify(rng) {
        w.store_conflict_ppm = pick(rng, &[0, 1_000, 20_000]);
        w.provider_error_ppm = pick(rng, &[0, 2_000, 20_000]);
    }
    // An upload timeout shorter than an upload would time every upload
    // out: a misconfiguration, not a fault. Keep it longer, by a margin
    // that itself varies.
    let c = &mut s.machines.channel;
    let floor = w.upload_ms + 2 * w.api_latency_ms + 2_000;
    if buggify(rng) || c.publish_timeout_ms < floor {
        c.publish_timeout_ms = floor + range(rng, 0, 38_000);
    }
}
