//! Jobs on this node: local stages (CPU, external providers) for its
//! channels and GPU jobs for its GPUs, each run on the executor its stage's
//! node config names (`synthetic` unless `[executors.<stage>]` names
//! another), cancellable, with the result coming back to the machine that
//! asked. Also finds the finished video for the publisher.
//!
//! Artifacts live under `<artifacts>/<channel>/<slot>/<stage>/`; a stage's
//! `{input_dir}` is the previous stage's folder. Nodes that render for each
//! other's channels must share the artifacts folder (a shared mount).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actors::channel::ChannelInput;
use actors::gpu::GpuInput;
use actors::node::{route, LocalJobResult};
use actors::protocol::{JobId, JobSpec};
use topology::{placement, ChannelId, GpuId, StageKind, Topology};

use super::clock::Clock;
use super::config::ExecutorConfig;
use super::lock;
use super::metrics::Metrics;
use super::shell::Mailbox;
use crate::exec::command::CommandSpec;
use crate::exec::http::HttpSpec;
use crate::exec::{ExecJob, ExecOutcome};

/// Work running here, by job: dropping its sender cancels it.
type Running = Mutex<BTreeMap<JobId, (tokio::sync::oneshot::Sender<()>, RunningJob)>>;

/// What the admin RPC's `jobs` shows of a job running here.
#[derive(Clone, Copy, Debug)]
pub struct RunningJob {
    pub started_ms: u64,
    /// The GPU it runs on; `None` for a local (CPU or provider) stage.
    pub gpu: Option<GpuId>,
}

pub struct JobPort {
    pub topo: Arc<Topology>,
    pub name: String,
    /// This node's region, for logs.
    region: String,
    pub clock: Clock,
    pub artifacts: PathBuf,
    pub executors: BTreeMap<String, ExecutorConfig>,
    pub http: reqwest::Client,
    /// A local job gets its longest duration plus this, then fails.
    pub job_grace_ms: u64,
    pub metrics: Arc<Metrics>,
    running: Running,
}

impl JobPort {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topo: Arc<Topology>,
        name: String,
        clock: Clock,
        artifacts: PathBuf,
        executors: BTreeMap<String, ExecutorConfig>,
        http: reqwest::Client,
        job_grace_ms: u64,
        metrics: Arc<Metrics>,
    ) -> JobPort {
        let region = topo
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| topo.region(n.region).name.clone())
            .unwrap_or_default();
        JobPort {
            topo,
            name,
            region,
            clock,
            artifacts,
            executors,
            http,
            job_grace_ms,
            metrics,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts `spec` and registers its cancel; `None` if already running.
    fn begin(&self, id: JobId, gpu: Option<GpuId>) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut running = lock(&self.running);
        if running.contains_key(&id) {
            return None;
        }
        let job = RunningJob {
            started_ms: self.clock.now_ms(),
            gpu,
        };
        running.insert(id, (tx, job));
        self.metrics.job_started();
        if id.stage == 0 && id.attempt <= 1 {
            self.metrics
                .video_planned(&self.topo.channel(id.channel).name);
        }
        Some(rx)
    }

    fn end(&self, id: JobId) {
        if lock(&self.running).remove(&id).is_some() {
            self.metrics.job_ended();
        }
    }

    /// Every job running here, in job order.
    pub fn running(&self) -> Vec<(JobId, RunningJob)> {
        lock(&self.running)
            .iter()
            .map(|(id, (_, job))| (*id, *job))
            .collect()
    }

    /// Stops a job (its result, if any, is dropped).
    pub fn cancel(&self, id: JobId) {
        self.end(id);
    }

    /// Stops every job (the node is stopping).
    pub fn cancel_all(&self) {
        let ids: Vec<JobId> = lock(&self.running).keys().copied().collect();
        for id in ids {
            self.end(id);
        }
    }

    /// A CPU or external stage of a channel here; its end goes to `to`.
    pub fn run_local(self: &Arc<Self>, spec: JobSpec, to: Mailbox<ChannelInput>) {
        let Some(cancel) = self.begin(spec.id, None) else {
            return;
        };
        let port = Arc::clone(self);
        let span = self.span(&spec);
        let run = async move {
            let timeout_ms = spec.duration.max_ms() + port.job_grace_ms;
            let result = port.run_stage(&spec, timeout_ms, cancel).await;
            port.end(spec.id);
            if let Some(input) = route::local_job_outcome(&spec, result) {
                if let ChannelInput::JobFinished { outcome, .. } = &input {
                    let kind = match spec.kind {
                        actors::protocol::JobKind::External { .. } => "external",
                        _ => "cpu",
                    };
                    port.metrics.stage_cost(kind, outcome.cost_micros());
                }
                to.post(input);
            }
        };
        tokio::spawn(tracing::Instrument::instrument(run, span));
    }

    /// A job on a GPU of this node, stopped at its lease; its end goes to
    /// the GPU's machine.
    pub fn run_gpu(
        self: &Arc<Self>,
        gpu: GpuId,
        job: JobSpec,
        lease_until_ms: u64,
        to: Mailbox<GpuInput>,
    ) {
        let Some(cancel) = self.begin(job.id, Some(gpu)) else {
            return;
        };
        let port = Arc::clone(self);
        let span = self.span(&job);
        let run = async move {
            let timeout_ms = lease_until_ms.saturating_sub(port.clock.now_ms());
            let result = port.run_stage(&job, timeout_ms, cancel).await;
            port.end(job.id);
            let ok = match result {
                LocalJobResult::Succeeded => true,
                LocalJobResult::Failed { .. } => false,
                LocalJobResult::Cancelled => return,
            };
            to.post(GpuInput::Finished { id: job.id, ok });
        };
        tokio::spawn(tracing::Instrument::instrument(run, span));
    }

    /// The span a job's events run in: its video, and its stage.
    fn span(&self, spec: &JobSpec) -> tracing::Span {
        let chan = self.topo.channel(spec.id.channel);
        let stage = self
            .topo
            .pipeline(chan.pipeline)
            .stages
            .get(usize::from(spec.id.stage))
            .map(|s| s.name.as_str())
            .unwrap_or("?");
        let span = crate::logs::video_span(&self.name, &self.region, &chan.name, spec.id.slot);
        span.record("stage", stage);
        span
    }

    fn slot_dir(&self, channel: ChannelId, slot: u64) -> PathBuf {
        self.artifacts
            .join(&self.topo.channel(channel).name)
            .join(slot.to_string())
    }

    /// Runs `spec` for at most `timeout_ms`; `cancel` firing (or its sender
    /// being dropped) stops it.
    async fn run_stage(
        &self,
        spec: &JobSpec,
        timeout_ms: u64,
        cancel: tokio::sync::oneshot::Receiver<()>,
    ) -> LocalJobResult {
        let job = match self.exec_job(spec, timeout_ms) {
            Some(job) => job,
            None => return LocalJobResult::Failed { retryable: false },
        };
        let cancel = async move {
            let _ = cancel.await;
        };
        let run = self.execute(&job, timeout_ms, cancel);
        // The hard limit holds whatever the executor does.
        let limit = std::time::Duration::from_millis(timeout_ms);
        let started = std::time::Instant::now();
        let out = match tokio::time::timeout(limit, run).await {
            Ok(o) => o,
            Err(_) => ExecOutcome::Failed {
                reason: format!("timed out after {timeout_ms} ms"),
                retryable: true,
            },
        };
        let outcome = match &out {
            ExecOutcome::Succeeded { .. } => "ok",
            ExecOutcome::Failed { .. } => "failed",
            ExecOutcome::Cancelled => "cancelled",
        };
        let kind = match self.executors.get(&job.stage) {
            None | Some(ExecutorConfig::Synthetic) => "synthetic",
            Some(ExecutorConfig::Command { .. }) => "command",
            Some(ExecutorConfig::Http { .. }) => "http",
        };
        self.metrics
            .stage_done(&job.stage, kind, outcome, started.elapsed());
        match out {
            ExecOutcome::Succeeded { .. } => {
                tracing::info!(attempt = spec.id.attempt, "stage done");
                LocalJobResult::Succeeded
            }
            ExecOutcome::Failed { reason, retryable } => {
                tracing::warn!(attempt = spec.id.attempt, %reason, retryable, "stage failed");
                LocalJobResult::Failed { retryable }
            }
            ExecOutcome::Cancelled => {
                tracing::info!(attempt = spec.id.attempt, "stage cancelled");
                LocalJobResult::Cancelled
            }
        }
    }

    /// What the executor is handed for `spec`; `None` if its stage does not
    /// exist (a spec from a node with another pipeline).
    fn exec_job(&self, spec: &JobSpec, timeout_ms: u64) -> Option<ExecJob> {
        let chan = self.topo.channel(spec.id.channel);
        let pipeline = self.topo.pipeline(chan.pipeline);
        let Some(stage) = pipeline.stages.get(usize::from(spec.id.stage)) else {
            tracing::error!(
                stage_index = spec.id.stage,
                "the pipeline has no such stage"
            );
            return None;
        };
        let dir = self.slot_dir(spec.id.channel, spec.id.slot);
        let input_dir = match usize::from(spec.id.stage).checked_sub(1) {
            Some(prev) => dir.join(&pipeline.stages[prev].name),
            None => dir.clone(),
        };
        let vars = BTreeMap::from([
            ("channel".to_string(), chan.name.clone()),
            ("slot".to_string(), spec.id.slot.to_string()),
            ("attempt".to_string(), spec.id.attempt.to_string()),
            (
                "input_dir".to_string(),
                input_dir.to_string_lossy().into_owned(),
            ),
            (
                "title".to_string(),
                format!("{} number {}", chan.name, spec.id.slot),
            ),
        ]);
        let mix = placement::mix64(spec.id.slot ^ u64::from(spec.id.channel.0) << 32);
        let synthetic_ms = spec.duration.sample_ms(mix as u32);
        Some(ExecJob {
            name: format!(
                "{}/{}/{}/a{}",
                chan.name, spec.id.slot, stage.name, spec.id.attempt
            ),
            stage: stage.name.clone(),
            artifact_dir: dir.join(&stage.name),
            vars,
            duration_ms: match self.executors.get(&stage.name) {
                None | Some(ExecutorConfig::Synthetic) => synthetic_ms.min(timeout_ms),
                Some(_) => timeout_ms,
            },
        })
    }

    /// Runs `job` on the executor its stage is configured with.
    async fn execute(
        &self,
        job: &ExecJob,
        timeout_ms: u64,
        cancel: impl std::future::Future<Output = ()> + Send,
    ) -> ExecOutcome {
        match self.executors.get(&job.stage) {
            None | Some(ExecutorConfig::Synthetic) => {
                crate::exec::synthetic::run(job, cancel).await
            }
            Some(ExecutorConfig::Command {
                program,
                args,
                env,
                permanent_exit_codes,
            }) => {
                let c = CommandSpec {
                    program: program.clone(),
                    args: args.clone(),
                    env: env.clone(),
                    permanent_exit_codes: permanent_exit_codes.clone(),
                };
                crate::exec::command::run(&c, job, cancel).await
            }
            Some(ExecutorConfig::Http {
                url,
                body,
                timeout_ms: t,
                headers,
            }) => {
                let h = HttpSpec {
                    url: url.clone(),
                    body: body.clone().unwrap_or_else(|| serde_json::json!({})),
                    timeout_ms: t.unwrap_or(timeout_ms).min(timeout_ms),
                    headers: headers.clone(),
                };
                crate::exec::http::run(&self.http, &h, job, cancel).await
            }
        }
    }

    /// The file to publish for a video: the last stage's `video.mp4`, else
    /// its first artifact (a synthetic manifest). When no stage output is
    /// visible here (artifacts not shared), a small stand-in describing the
    /// video is written, so that a misconfigured mount shows in the
    /// published metadata instead of blocking the channel.
    pub fn video_for(&self, channel: ChannelId, slot: u64) -> PathBuf {
        let chan = self.topo.channel(channel);
        let pipeline = self.topo.pipeline(chan.pipeline);
        let dir = self.slot_dir(channel, slot);
        for stage in pipeline.stages.iter().rev() {
            if matches!(stage.kind, StageKind::Publish) {
                continue;
            }
            let d = dir.join(&stage.name);
            for name in ["video.mp4", "response.json", "manifest.json"] {
                if d.join(name).is_file() {
                    return d.join(name);
                }
            }
        }
        tracing::warn!(
            node = %self.name,
            region = %self.region,
            channel = %chan.name,
            slot,
            dir = %dir.display(),
            "no stage output for the video here; publishing a stand-in (is the artifacts folder shared?)"
        );
        let stand_in = dir.join("missing-artifact.json");
        let _ = std::fs::create_dir_all(&dir);
        let note = serde_json::json!({
            "channel": chan.name,
            "slot": slot,
            "note": format!("no stage output under {} on {}", dir.display(), self.name),
        });
        let _ = std::fs::write(&stand_in, note.to_string());
        stand_in
    }
}
