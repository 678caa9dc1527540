//! A node's metrics, through the `metrics` facade into one
//! `metrics-exporter-prometheus` recorder per process: `reelfleet up` runs
//! six nodes in one process and serves one exposition, every series
//! labelled with its `node`.
//!
//! Events (a video published, a stage done, a store call) are recorded
//! where they happen. State that lives elsewhere (transport counters, GPU
//! telemetry, quota, owned channels) is copied in by [`Metrics::collect`]
//! just before each render. The few values the process reads back itself
//! (`up`'s status line, `/status`) are kept in local atomics too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::gpu_probe::GpuTelemetry;

/// Histogram bucket upper bounds in seconds: store calls (ms) to renders
/// (minutes) to plan-to-publish (hours).
const BUCKETS_SECONDS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// Buckets of the money histograms (a video's cost), in dollars.
const BUCKETS_USD: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long a gauge not set again stays in the exposition (several
/// ledger samples, `LEDGER_SAMPLE_MS`).
const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's recorder, installed on first use with every family
/// described (HELP text). An error when another recorder was installed
/// first (only possible in tests that install their own).
pub fn recorder() -> Result<PrometheusHandle, String> {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&BUCKETS_SECONDS)
                .map_err(|e| format!("metrics buckets: {e}"))?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_usd".into()),
                    &BUCKETS_USD,
                )
                .map_err(|e| format!("metrics buckets: {e}"))?
                // A gauge nobody sets any more (a channel that moved to
                // another node, a peer gone) leaves the exposition instead
                // of showing its last value forever; live gauges are set
                // at every render or sample.
                .idle_timeout(
                    metrics_util::MetricKindMask::GAUGE,
                    Some(GAUGE_IDLE_TIMEOUT),
                )
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            describe_all();
            Ok(handle)
        })
        .clone()
}

/// Renders the process's exposition after each node's `collect`.
pub fn render(nodes: &[&Metrics]) -> String {
    let Ok(handle) = recorder() else {
        return String::new();
    };
    for n in nodes {
        n.collect();
    }
    handle.run_upkeep();
    handle.render()
}

/// Every family this process may export, with its HELP text. A family
/// shows only once it has a series.
pub const FAMILIES: [(&str, &str, &str); 52] = [
    (
        "reelfleet_build_info",
        "gauge",
        "Always 1; the version and the node in labels.",
    ),
    (
        "reelfleet_videos_planned_total",
        "counter",
        "Videos whose first stage started on this node, by channel.",
    ),
    (
        "reelfleet_videos_published_total",
        "counter",
        "Videos published, by channel.",
    ),
    (
        "reelfleet_videos_failed_total",
        "counter",
        "Videos that failed for good, by channel and reason.",
    ),
    (
        "reelfleet_stage_duration_seconds",
        "histogram",
        "Wall time of stage jobs run on this node, by stage, kind and outcome.",
    ),
    (
        "reelfleet_jobs_started_total",
        "counter",
        "Stage jobs started on this node.",
    ),
    (
        "reelfleet_jobs_running",
        "gauge",
        "Stage jobs running on this node now.",
    ),
    (
        "reelfleet_gpu_queued_jobs",
        "gauge",
        "Stage jobs waiting in a GPU's queue (admitted as its memory frees), by region and the cluster's GPU id (sum by region: a region's queue depth).",
    ),
    (
        "reelfleet_publish_attempts_total",
        "counter",
        "Uploads started.",
    ),
    (
        "reelfleet_publish_unknown_total",
        "counter",
        "Uploads whose outcome was unknown (looked up later).",
    ),
    (
        "reelfleet_publish_lookups_total",
        "counter",
        "Lookups of an upload whose outcome was unknown.",
    ),
    (
        "reelfleet_channels_owned",
        "gauge",
        "Channels this node runs now.",
    ),
    (
        "reelfleet_takeovers_total",
        "counter",
        "Peers this node removed after their lease lapsed (their channels were claimed).",
    ),
    (
        "reelfleet_fenced_total",
        "counter",
        "Channels this node stopped because another node owns them now.",
    ),
    (
        "reelfleet_fence_rejections_total",
        "counter",
        "Channel commits the store refused because of the epoch fence.",
    ),
    (
        "reelfleet_actor_restarts_total",
        "counter",
        "Actors restarted by their supervisor.",
    ),
    (
        "reelfleet_store_call_duration_seconds",
        "histogram",
        "Store calls, by backend, operation (get, range, check, commit, lease: this node's lease renewal) and outcome.",
    ),
    (
        "reelfleet_store_conflicts_total",
        "counter",
        "Store commits refused by a failed check, by backend.",
    ),
    (
        "reelfleet_store_errors_total",
        "counter",
        "Store calls that failed (unavailable, unknown outcome, ...), by backend.",
    ),
    (
        "reelfleet_quic_peers",
        "gauge",
        "Peers with an open outgoing QUIC connection.",
    ),
    (
        "reelfleet_quic_rtt_seconds",
        "gauge",
        "Round-trip time of the QUIC connection to each peer.",
    ),
    (
        "reelfleet_quic_frames_in_total",
        "counter",
        "Frames received from peers.",
    ),
    (
        "reelfleet_quic_frames_out_total",
        "counter",
        "Frames sent to peers.",
    ),
    (
        "reelfleet_quic_frames_dropped_total",
        "counter",
        "Frames dropped because a peer's queue was full.",
    ),
    (
        "reelfleet_quic_bad_frames_total",
        "counter",
        "Malformed frames received (the connection was closed).",
    ),
    (
        "reelfleet_quic_refused_peers_total",
        "counter",
        "Handshakes refused: no certificate, a foreign CA or a non-node certificate.",
    ),
    (
        "reelfleet_quic_connects_total",
        "counter",
        "Outgoing QUIC connections established.",
    ),
    (
        "reelfleet_gpu_memory_total_bytes",
        "gauge",
        "GPU memory, as reported by NVML or else as declared in the config.",
    ),
    (
        "reelfleet_gpu_memory_used_bytes",
        "gauge",
        "GPU memory in use (NVML only).",
    ),
    (
        "reelfleet_gpu_utilization_ratio",
        "gauge",
        "GPU utilisation, 0 to 1 (NVML only).",
    ),
    (
        "reelfleet_gpu_temperature_celsius",
        "gauge",
        "GPU temperature (NVML only).",
    ),
    (
        "reelfleet_gpu_healthy",
        "gauge",
        "1 when the GPU answers and is not overheating (probed GPUs only).",
    ),
    (
        "reelfleet_publisher_quota_units",
        "gauge",
        "Quota units this node's publisher spent on API calls since it started, by bucket.",
    ),
    (
        "reelfleet_quota_used_units",
        "gauge",
        "Quota units reserved today in the store's ledger, by project and bucket (sampled by nodes owning a channel of the project).",
    ),
    (
        "reelfleet_quota_limit_units",
        "gauge",
        "Quota units a bucket allows per day, by project and bucket.",
    ),
    (
        "reelfleet_channel_spend_today_usd",
        "gauge",
        "A channel's spend today (UTC day) from the store's ledger, sampled by its owner.",
    ),
    (
        "reelfleet_channel_spend_usd",
        "gauge",
        "A channel's spend over all days from the store's ledger, sampled by its owner.",
    ),
    (
        "reelfleet_node_spend_today_usd",
        "gauge",
        "The spend today (UTC day) of the channels this node owns, from the store's ledgers (exported also above metrics_channels_max, where the per-channel series stop).",
    ),
    (
        "reelfleet_node_spend_usd",
        "gauge",
        "The spend over all days of the channels this node owns, from the store's ledgers.",
    ),
    (
        "reelfleet_channel_budget_daily_usd",
        "gauge",
        "A channel's daily budget, by limit (soft, hard); absent when unlimited.",
    ),
    (
        "reelfleet_channel_target_videos_per_day",
        "gauge",
        "Videos a channel is to publish per day.",
    ),
    (
        "reelfleet_ready",
        "gauge",
        "1 when the node's store answers and its lease is held (as /ready).",
    ),
    (
        "reelfleet_video_cost_usd",
        "histogram",
        "What each video that ended on this node cost (every stage charged to it, on any node), by outcome.",
    ),
    (
        "reelfleet_video_publish_delay_seconds",
        "histogram",
        "How long after its slot's publishing instant each video went out; plan-to-publish is timing.plan_lead_ms plus this.",
    ),
    (
        "reelfleet_stage_cost_micros_total",
        "counter",
        "Money the stage jobs that ran on this node cost, in micro-dollars, by stage kind (cpu, gpu, external); per channel: reelfleet_channel_spend_usd.",
    ),
    (
        "reelfleet_takeover_detect_seconds",
        "histogram",
        "How long a dead peer's lease stood still before this node removed it (a takeover's detection; its channels are claimed within a refresh after).",
    ),
    (
        "reelfleet_breakers_open",
        "gauge",
        "Channels hosted here whose circuit breaker for a provider is open or half-open (calls held back after failures), by provider.",
    ),
    (
        "reelfleet_peer_clock_offset_seconds",
        "gauge",
        "A peer's clock minus this node's, as last probed (a node further than timing.clock_offset_max_ms from most peers stops).",
    ),
    (
        "reelfleet_record_bytes_total",
        "counter",
        "Bytes the flight recorder wrote (--record): machines' constructions, inputs and effect digests.",
    ),
    (
        "reelfleet_record_segments_dropped_total",
        "counter",
        "Recording segments deleted (oldest first) to keep the recording under record.total_bytes_max.",
    ),
    (
        "reelfleet_record_stopped",
        "gauge",
        "1 once a write of the flight recording failed (a full disk): the recording stopped, the node goes on.",
    ),
    (
        "reelfleet_http_requests_total",
        "counter",
        "Requests to the metrics and health listener, by path and status.",
    ),
];

fn describe_all() {
    for (name, kind, help) in FAMILIES {
        match kind {
            "counter" => describe_counter!(name, help),
            "gauge" => describe_gauge!(name, help),
            _ => describe_histogram!(name, help),
        }
    }
}

/// Copies values kept elsewhere into a node's metrics at each render.
pub type Collector = Box<dyn Fn(&Metrics) + Send + Sync>;

/// One GPU's telemetry as last sampled.
pub type GpuRow = GpuTelemetry;

/// A node's metrics handle: its label and the values it reads back.
pub struct Metrics {
    node: String,
    /// The node's region (a label of per-region series).
    region: String,
    pub videos_published: AtomicU64,
    pub videos_failed: AtomicU64,
    pub jobs_running: AtomicU64,
    /// Stage jobs that ended on this node, however (`bench-dispatch`).
    pub jobs_ended: AtomicU64,
    /// Published videos' delay after their slots' instants: sum, count
    /// and largest since last reset (`bench-dispatch`).
    pub publish_delay_ms_sum: AtomicU64,
    pub publish_delay_count: AtomicU64,
    pub publish_delay_ms_max: AtomicU64,
    pub channels_owned: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub gpus: Mutex<Vec<GpuRow>>,
    /// Jobs waiting in each hosted GPU's queue, by GPU id.
    gpu_queues: Mutex<std::collections::BTreeMap<u32, u64>>,
    /// Each hosted channel's breakers: open (or half-open) or not, by
    /// (channel, provider).
    breakers: Mutex<std::collections::BTreeMap<(u32, String), bool>>,
    /// Called by `collect` for values kept elsewhere (transport, quota).
    pub collectors: Mutex<Vec<Collector>>,
}

impl Metrics {
    pub fn new(node: &str, region: &str) -> Metrics {
        // Installing here means every node process has its recorder
        // before the first event; a failure only loses metrics.
        if let Err(e) = recorder() {
            tracing::warn!(node, error = %e, "metrics are off");
        }
        gauge!("reelfleet_build_info", "node" => node.to_string(), "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Metrics {
            node: node.to_string(),
            region: region.to_string(),
            videos_published: AtomicU64::new(0),
            videos_failed: AtomicU64::new(0),
            jobs_running: AtomicU64::new(0),
            jobs_ended: AtomicU64::new(0),
            publish_delay_ms_sum: AtomicU64::new(0),
            publish_delay_count: AtomicU64::new(0),
            publish_delay_ms_max: AtomicU64::new(0),
            channels_owned: AtomicU64::new(0),
            actor_restarts: AtomicU64::new(0),
            gpus: Mutex::new(Vec::new()),
            gpu_queues: Mutex::new(Default::default()),
            breakers: Mutex::new(Default::default()),
            collectors: Mutex::new(Vec::new()),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn count(&self, name: &'static str) {
        counter!(name, "node" => self.node.clone()).increment(1);
    }

    pub fn video_planned(&self, channel: &str) {
        counter!("reelfleet_videos_planned_total", "node" => self.node.clone(), "channel" => channel.to_string()).increment(1);
    }

    pub fn video_published(&self, channel: &str) {
        self.videos_published.fetch_add(1, Ordering::Relaxed);
        counter!("reelfleet_videos_published_total", "node" => self.node.clone(), "channel" => channel.to_string()).increment(1);
    }

    /// A video's cost and, published, how long after its slot's instant.
    pub fn video_done(&self, outcome: &'static str, cost_usd: f64, late_ms: Option<u64>) {
        histogram!("reelfleet_video_cost_usd", "node" => self.node.clone(), "outcome" => outcome)
            .record(cost_usd);
        if let Some(ms) = late_ms {
            self.publish_delay_ms_sum.fetch_add(ms, Ordering::Relaxed);
            self.publish_delay_count.fetch_add(1, Ordering::Relaxed);
            self.publish_delay_ms_max.fetch_max(ms, Ordering::Relaxed);
            histogram!("reelfleet_video_publish_delay_seconds", "node" => self.node.clone())
                .record(ms as f64 / 1000.0);
        }
    }

    pub fn video_failed(&self, channel: &str, reason: &str) {
        self.videos_failed.fetch_add(1, Ordering::Relaxed);
        counter!(
            "reelfleet_videos_failed_total",
            "node" => self.node.clone(),
            "channel" => channel.to_string(),
            "reason" => reason.to_string()
        )
        .increment(1);
    }

    pub fn job_started(&self) {
        self.count("reelfleet_jobs_started_total");
        let n = self.jobs_running.fetch_add(1, Ordering::Relaxed) + 1;
        gauge!("reelfleet_jobs_running", "node" => self.node.clone()).set(n as f64);
    }

    pub fn job_ended(&self) {
        self.jobs_ended.fetch_add(1, Ordering::Relaxed);
        let n = self
            .jobs_running
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        gauge!("reelfleet_jobs_running", "node" => self.node.clone()).set(n as f64);
    }

    /// A stage job ended: `kind` is its executor (synthetic, command, http).
    pub fn stage_done(
        &self,
        stage: &str,
        kind: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        histogram!(
            "reelfleet_stage_duration_seconds",
            "node" => self.node.clone(),
            "stage" => stage.to_string(),
            "kind" => kind,
            "outcome" => outcome
        )
        .record(took.as_secs_f64());
    }

    /// What a stage job that ended on this node cost, by stage kind (cpu,
    /// gpu, external): counted where it ran, once.
    pub fn stage_cost(&self, kind: &'static str, micros: u64) {
        counter!("reelfleet_stage_cost_micros_total", "node" => self.node.clone(), "kind" => kind)
            .increment(micros);
    }

    pub fn publish_attempt(&self) {
        self.count("reelfleet_publish_attempts_total");
    }
    pub fn publish_unknown(&self) {
        self.count("reelfleet_publish_unknown_total");
    }
    pub fn publish_lookup(&self) {
        self.count("reelfleet_publish_lookups_total");
    }
    pub fn fenced(&self) {
        self.count("reelfleet_fenced_total");
    }
    pub fn fence_rejection(&self) {
        self.count("reelfleet_fence_rejections_total");
    }
    /// This node removed a dead peer whose lease had stood still for
    /// `silent_ms` (it claims the peer's channels within a refresh).
    pub fn takeover(&self, silent_ms: u64) {
        self.count("reelfleet_takeovers_total");
        histogram!("reelfleet_takeover_detect_seconds", "node" => self.node.clone())
            .record(silent_ms as f64 / 1000.0);
    }
    pub fn actor_restart(&self) {
        self.actor_restarts.fetch_add(1, Ordering::Relaxed);
        self.count("reelfleet_actor_restarts_total");
    }

    pub fn set_channels_owned(&self, n: usize) {
        self.channels_owned.store(n as u64, Ordering::Relaxed);
        gauge!("reelfleet_channels_owned", "node" => self.node.clone()).set(n as f64);
    }

    /// A store call ended; `outcome` is ok, conflict or error.
    pub fn store_call(
        &self,
        backend: &'static str,
        op: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        histogram!(
            "reelfleet_store_call_duration_seconds",
            "node" => self.node.clone(),
            "backend" => backend,
            "op" => op,
            "outcome" => outcome
        )
        .record(took.as_secs_f64());
        match outcome {
            "conflict" => counter!("reelfleet_store_conflicts_total", "node" => self.node.clone(), "backend" => backend).increment(1),
            "error" => counter!("reelfleet_store_errors_total", "node" => self.node.clone(), "backend" => backend).increment(1),
            _ => {}
        }
    }

    pub fn set_ready(&self, ready: bool) {
        gauge!("reelfleet_ready", "node" => self.node.clone()).set(if ready { 1.0 } else { 0.0 });
    }

    /// Copies in what is kept elsewhere: GPU telemetry and the collectors'.
    /// The node's own gauges are set again too (they change rarely, and a
    /// gauge not set within `GAUGE_IDLE_TIMEOUT` leaves the exposition).
    pub fn collect(&self) {
        let node = self.node.clone();
        gauge!("reelfleet_build_info", "node" => node.clone(), "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        gauge!("reelfleet_channels_owned", "node" => node.clone())
            .set(self.channels_owned.load(Ordering::Relaxed) as f64);
        gauge!("reelfleet_jobs_running", "node" => node)
            .set(self.jobs_running.load(Ordering::Relaxed) as f64);
        let gpus = super::lock(&self.gpus).clone();
        for g in &gpus {
            let gpu = format!("{}:{}", g.index, g.name);
            let l = [("node", self.node.clone()), ("gpu", gpu)];
            gauge!("reelfleet_gpu_memory_total_bytes", &l).set(g.memory_total_bytes as f64);
            // A GPU known only from the config has no telemetry: no
            // made-up zeros for it, and health only when a probe said so.
            if !g.uuid.is_empty() {
                gauge!("reelfleet_gpu_memory_used_bytes", &l).set(g.memory_used_bytes as f64);
                gauge!("reelfleet_gpu_utilization_ratio", &l)
                    .set(f64::from(g.utilization_percent) / 100.0);
                gauge!("reelfleet_gpu_temperature_celsius", &l).set(f64::from(g.temperature_c));
            }
            if !g.uuid.is_empty() || g.reason.is_some() {
                gauge!("reelfleet_gpu_healthy", &l).set(if g.healthy { 1.0 } else { 0.0 });
            }
        }
        // Per provider: how many hosted channels have its breaker open.
        let mut open: std::collections::BTreeMap<String, u64> = Default::default();
        for ((_, provider), is_open) in super::lock(&self.breakers).iter() {
            *open.entry(provider.clone()).or_default() += u64::from(*is_open);
        }
        for (provider, n) in open {
            let l = [("node", self.node.clone()), ("provider", provider)];
            gauge!("reelfleet_breakers_open", &l).set(n as f64);
        }
        let queues = super::lock(&self.gpu_queues).clone();
        for (gpu, queued) in queues {
            let l = [
                ("node", self.node.clone()),
                ("region", self.region.clone()),
                ("gpu_id", gpu.to_string()),
            ];
            gauge!("reelfleet_gpu_queued_jobs", &l).set(queued as f64);
        }
        for c in super::lock(&self.collectors).iter() {
            c(self);
        }
    }

    /// How many jobs wait in GPU `gpu`'s queue now.
    /// A channel's breakers as its machine has them now.
    pub fn breakers<'a>(&self, channel: u32, states: impl Iterator<Item = (&'a str, bool)>) {
        let mut b = super::lock(&self.breakers);
        for (provider, open) in states {
            b.insert((channel, provider.to_string()), open);
        }
    }

    /// A channel that left this node: its breakers are no longer here.
    pub fn breakers_gone(&self, channel: u32) {
        super::lock(&self.breakers).retain(|(c, _), _| *c != channel);
    }

    pub fn gpu_queue(&self, gpu: u32, queued: u64) {
        super::lock(&self.gpu_queues).insert(gpu, queued);
        let l = [
            ("node", self.node.clone()),
            ("region", self.region.clone()),
            ("gpu_id", gpu.to_string()),
        ];
        gauge!("reelfleet_gpu_queued_jobs", &l).set(queued as f64);
    }

    /// Sets a counter kept elsewhere to its absolute value.
    pub fn absolute(&self, name: &'static str, value: u64) {
        counter!(name, "node" => self.node.clone()).absolute(value);
    }

    /// Sets a gauge, with extra labels.
    pub fn level(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        let mut l: Vec<(&'static str, String)> = vec![("node", self.node.clone())];
        l.extend(labels.iter().cloned());
        gauge!(name, &l).set(value);
    }
}
