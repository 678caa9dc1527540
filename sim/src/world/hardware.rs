//! The simulated hardware: GPUs that run jobs for a sampled time (faults
//! mid-job, stragglers), local executors and external providers (errors,
//! outages). What really ran is billed to the truth ledgers, and real
//! failures are counted there too (invariants 4, 9 and 11).

use std::collections::BTreeMap;

use actors::gpu::GpuInput;
use actors::node::{route, Local, LocalJobResult};
use actors::protocol::{JobId, JobKind, JobSpec};
use topology::{GpuId, NodeId};

use super::events::{Ev, Msg};
use super::World;
use crate::checks::{Invariant, Violation};

/// One GPU's hardware: memory in use and the jobs running on it.
pub(super) struct GpuHw {
    pub node: NodeId,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// Per job: the node's clock when it started, its lease, its spec.
    pub running: BTreeMap<JobId, (u64, u64, Box<JobSpec>)>,
    pub busy_since_ms: Option<u64>,
    pub busy_ms: u64,
}

impl GpuHw {
    pub fn new(node: NodeId, total_bytes: u64) -> GpuHw {
        GpuHw {
            node,
            total_bytes,
            used_bytes: 0,
            running: BTreeMap::new(),
            busy_since_ms: None,
            busy_ms: 0,
        }
    }
}

impl World {
    fn stop_in_force(&self, ch: topology::ChannelId) -> Option<u64> {
        let all = self.stopped_since_ms.get(&None).copied();
        let own = self.stopped_since_ms.get(&Some(ch)).copied();
        match (all, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Invariant 8, where a channel decides to start a job: not later than
    /// the stop bound after its channel was paused or killed.
    pub(super) fn job_may_start(&mut self, spec: &JobSpec) -> bool {
        let rel = self.rel_ms();
        if let Some(since) = self.stop_in_force(spec.id.channel) {
            if self.now_ms > since + self.sc.bounds.stop_ms {
                self.fail(Violation::new(
                    Invariant::KillSwitchWithinBound,
                    format!(
                        "channel {} started stage {} of slot {} {} ms after it was stopped (bound {} ms)",
                        self.topo.channel(spec.id.channel).name,
                        spec.id.stage,
                        spec.id.slot,
                        self.now_ms - since,
                        self.sc.bounds.stop_ms
                    ),
                    rel,
                ));
                return false;
            }
        }
        self.stats.jobs_started += 1;
        if spec.kind == JobKind::Gpu {
            self.stats.gpu_jobs += 1;
        }
        true
    }

    /// A CPU or external stage on `node`'s executor: it ends after a sampled
    /// time; a failing provider answers fast.
    pub(super) fn run_local_job(&mut self, node: NodeId, spec: JobSpec) {
        let ok = match &spec.kind {
            JobKind::External { provider } => {
                !self.faults.providers_down.contains(provider)
                    && !self.rng.chance(self.sc.world.provider_error_ppm)
            }
            _ => true,
        };
        let dur = if ok {
            spec.duration.sample_ms(self.rng.next_u32())
        } else {
            200 + self.rng.below(300)
        };
        let inc = self.nodes[node.index()].inc;
        let end = Ev::LocalJobEnd {
            node,
            inc,
            spec: Box::new(spec),
            ok,
        };
        self.push(self.now_ms + dur, end);
    }

    pub(super) fn local_job_end(&mut self, node: NodeId, inc: u32, spec: JobSpec, ok: bool) {
        if !self.is_current(node, inc) || self.cancelled_local.remove(&spec.id) {
            return;
        }
        let rel = self.rel_ms();
        self.trace
            .event(rel, node.0, "local-job-end", spec.id.slot, u64::from(ok));
        let result = if ok {
            self.bill(&spec, spec.fixed_cost_micros);
            LocalJobResult::Succeeded
        } else {
            self.truth
                .stage_failed(spec.id.channel, spec.id.slot, spec.id.stage);
            LocalJobResult::Failed { retryable: true }
        };
        if let Some(input) = route::local_job_outcome(&spec, result) {
            let to = Local::Channel(spec.id.channel, input);
            self.deliver(node, Msg::Local(to));
        }
    }

    /// A job on a GPU of `node`: it runs a sampled time (a straggler longer,
    /// a fault cuts it short), unless its machine kills it first.
    pub(super) fn run_gpu_job(&mut self, node: NodeId, gpu: GpuId, job: JobSpec, lease_until: u64) {
        let rel = self.rel_ms();
        let hw = &self.gpu_hw[gpu.index()];
        if hw.used_bytes + job.gpu_memory_bytes > hw.total_bytes {
            let (used, total) = (hw.used_bytes, hw.total_bytes);
            self.fail(Violation::new(
                Invariant::GpuMemoryNeverOvercommitted,
                format!(
                    "GPU {gpu} asked to hold {} bytes more with {used} of {total} in use",
                    job.gpu_memory_bytes
                ),
                rel,
            ));
            return;
        }
        let local_start = self.local_now(node);
        let mut dur = job.duration.sample_ms(self.rng.next_u32());
        if self.rng.chance(self.faults.straggler_ppm) {
            dur *= self.sc.world.straggler_factor;
        }
        let fault = self.rng.chance(self.faults.gpu_fail_ppm);
        if fault {
            dur = self.rng.below(dur + 1);
        }
        let inc = self.nodes[node.index()].inc;
        let now = self.now_ms;
        let hw = &mut self.gpu_hw[gpu.index()];
        hw.used_bytes += job.gpu_memory_bytes;
        if hw.running.is_empty() {
            hw.busy_since_ms = Some(now);
        }
        let id = job.id;
        hw.running
            .insert(id, (local_start, lease_until, Box::new(job)));
        let end = Ev::GpuEnd {
            gpu,
            inc,
            id,
            ok: !fault,
        };
        self.push(now + dur, end);
    }

    pub(super) fn gpu_job_end(&mut self, gpu: GpuId, inc: u32, id: JobId, ok: bool) {
        let (node, _) = self.gpu_local[gpu.index()];
        if !self.is_current(node, inc) || !self.gpu_hw_stop(gpu, id) {
            return;
        }
        if !ok {
            self.truth.stage_failed(id.channel, id.slot, id.stage);
        }
        let rel = self.rel_ms();
        self.trace
            .event(rel, node.0, "gpu-job-end", id.slot, u64::from(ok));
        let finished = Local::Gpu(gpu, GpuInput::Finished { id, ok });
        self.deliver(node, Msg::Local(finished));
    }

    /// The GPU machine stops a job: if it was still running at its lease,
    /// it timed out on a live GPU, a real failure of its stage.
    pub(super) fn kill_gpu_job(&mut self, node: NodeId, gpu: GpuId, id: JobId) {
        let lease_until = self.gpu_hw[gpu.index()].running.get(&id).map(|r| r.1);
        if lease_until.is_some_and(|l| self.local_now(node) >= l) {
            self.truth.stage_failed(id.channel, id.slot, id.stage);
        }
        self.gpu_hw_stop(gpu, id);
    }

    /// Bills what a job really cost to the truth ledgers (invariants 4, 9).
    fn bill(&mut self, spec: &JobSpec, cost_micros: u64) {
        let rel = self.rel_ms();
        let billed = self.truth.bill(
            &self.topo,
            spec.id.channel,
            spec.id.slot,
            spec.budget_day,
            cost_micros,
            rel,
        );
        if let Err(v) = billed {
            self.fail(v);
        }
    }

    /// Takes a job off the simulated hardware and bills it; false if it was
    /// not running (already stopped).
    pub(super) fn gpu_hw_stop(&mut self, gpu: GpuId, id: JobId) -> bool {
        let node = self.gpu_hw[gpu.index()].node;
        let Some((local_start, lease_until, spec)) = self.gpu_hw[gpu.index()].running.remove(&id)
        else {
            return false;
        };
        let local_now = self.local_now(node);
        let now = self.now_ms;
        let hw = &mut self.gpu_hw[gpu.index()];
        hw.used_bytes -= spec.gpu_memory_bytes;
        if hw.running.is_empty() {
            if let Some(s) = hw.busy_since_ms.take() {
                hw.busy_ms += now - s;
            }
        }
        let held = local_now
            .saturating_sub(local_start)
            .min(lease_until - local_start);
        let price = self.topo.gpu(gpu).cost_per_hour_micros;
        let cost = spec.fixed_cost_micros + price * held / 3_600_000;
        self.bill(&spec, cost);
        true
    }
}
