//! Messages between machines, and the work items they hand to executors.
//! Plain data: the simulator carries them through its network, the live
//! shell through ractor over QUIC.

use topology::{ChannelId, DurationModel, GpuId, NodeId, RegionId};

/// Names one attempt of one stage of one video under one ownership epoch.
/// Results for any other id are stale and ignored.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct JobId {
    pub channel: ChannelId,
    pub slot: u64,
    pub stage: u16,
    pub attempt: u32,
    pub epoch: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum JobKind {
    Cpu,
    Gpu,
    External { provider: String },
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub id: JobId,
    /// Where results go: the node whose channel actor asked.
    pub owner: NodeId,
    pub kind: JobKind,
    pub gpu_memory_bytes: u64,
    pub duration: DurationModel,
    /// The tier's fixed price; GPU time is added by whoever runs it.
    pub fixed_cost_micros: u64,
    pub priority: u8,
    pub home_region: RegionId,
    /// The budget day the job's cost was charged to.
    pub budget_day: u64,
    /// Region dispatchers the job has passed through (spill hops).
    pub hops: u8,
}

#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum JobFailure {
    /// The GPU faulted mid-job.
    GpuFault,
    /// The job outlived its lease on the GPU and was stopped.
    LeaseExpired,
    /// The external provider answered with an error or not at all.
    ProviderError,
    /// Cancelled on request (kill, drain, stale epoch).
    Cancelled,
    /// No GPU anywhere can hold the job.
    NoCapacity,
    /// The executor process failed.
    ExecutorError,
}

impl JobFailure {
    /// Whether the stage itself failed, which spends its retry budget: an
    /// executor, provider or GPU said so, or the job ran past its lease on
    /// a live GPU. The others are the fleet's doing (cancelled, turned
    /// away, no GPU can hold it) and count as lost jobs instead.
    pub fn is_stage_failure(self) -> bool {
        matches!(
            self,
            JobFailure::GpuFault
                | JobFailure::LeaseExpired
                | JobFailure::ProviderError
                | JobFailure::ExecutorError
        )
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded {
        cost_micros: u64,
    },
    Failed {
        failure: JobFailure,
        retryable: bool,
        cost_micros: u64,
    },
}

impl JobOutcome {
    /// What the job cost, whatever its outcome.
    pub fn cost_micros(&self) -> u64 {
        match self {
            JobOutcome::Succeeded { cost_micros } | JobOutcome::Failed { cost_micros, .. } => {
                *cost_micros
            }
        }
    }
}

/// What a GPU tells its region dispatcher about itself.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadReport {
    pub gpu: GpuId,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub running: u32,
    pub queued: u32,
    /// Estimated time until a newly queued job starts.
    pub est_wait_ms: u64,
    pub draining: bool,
    pub cost_per_hour_micros: u64,
}

/// Outcome of one upload attempt as the publisher saw it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    Published {
        remote_id: String,
    },
    /// 5xx or a dropped connection before the upload completed: definite.
    Transient,
    /// 429: definite; wait at least this long.
    RateLimited {
        retry_after_ms: u64,
    },
    /// 403 quotaExceeded: definite; wait for the next quota day.
    QuotaExceeded,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum LookupOutcome {
    Found { remote_id: String },
    NotFound,
    Failed,
}
