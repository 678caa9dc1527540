//! [`NodeMsg`]: everything one node's machines say to another node's. The
//! simulator carries these through its network, the live node as QUIC
//! frames (`node/src/live/wire.rs`); on arrival, [`super::route::arrive`]
//! turns one into an input for a local machine.

use topology::{GpuId, RegionId};

use crate::protocol::{JobId, JobOutcome, JobSpec, LoadReport};

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum NodeMsg {
    /// A GPU's notice to the node whose channel owns the job.
    JobStarted { id: JobId, gpu: GpuId },
    /// A GPU's (or a dispatcher's refusal) to the job's owner.
    JobFinished { id: JobId, outcome: JobOutcome },
    /// A job for a GPU of the receiving node.
    GpuSubmit { gpu: GpuId, job: JobSpec },
    /// The owner's cancel, for a GPU of the receiving node.
    GpuCancel { gpu: GpuId, id: JobId },
    /// A job for the receiving node's dispatcher of `region`.
    DispatchSubmit { region: RegionId, job: JobSpec },
    /// A GPU's load report for its region's dispatcher.
    DispatchLoad {
        region: RegionId,
        report: LoadReport,
    },
    /// One dispatcher's summary (`region`'s best wait) for another's (`to`).
    DispatchSummary {
        to: RegionId,
        region: RegionId,
        best_wait_ms: u64,
    },
    /// The sender changed the members record to `version` (it removed a
    /// node whose lease expired): a hint to refresh.
    MembersChanged { version: u64 },
}

impl NodeMsg {
    /// A short name, for traces and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            NodeMsg::JobStarted { .. } => "job-started",
            NodeMsg::JobFinished { .. } => "job-finished",
            NodeMsg::GpuSubmit { .. } => "gpu-submit",
            NodeMsg::GpuCancel { .. } => "gpu-cancel",
            NodeMsg::DispatchSubmit { .. } => "dispatch-submit",
            NodeMsg::DispatchLoad { .. } => "dispatch-load",
            NodeMsg::DispatchSummary { .. } => "dispatch-summary",
            NodeMsg::MembersChanged { .. } => "members-changed",
        }
    }
}
