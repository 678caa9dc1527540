//! Where every effect goes. Each machine's effects pass through one of the
//! functions below, which appends the [`Route`]s to carry out; an executor
//! carries them out in order and decides nothing itself. A message for a
//! machine of this node is [`Route::Local`] (delivered straight to it), for
//! another node [`Route::Remote`] (over the network, where
//! [`arrive`] turns it into a local input); the rest is I/O of this node.
//!
//! A message whose target the view does not know (no dispatcher in view, a
//! GPU of another node) is dropped: every such message is one its sender
//! resends or times out on.

use topology::{ChannelId, GpuId, NodeId, RegionId};

use crate::channel::{ChannelEffect, ChannelInput};
use crate::dispatch::{DispatchEffect, DispatchInput};
use crate::gpu::{GpuEffect, GpuInput, GpuNotice};
use crate::membership::{MembershipEffect, MembershipInput};
use crate::protocol::{JobFailure, JobId, JobKind, JobOutcome, JobSpec};
use crate::records::VideoStatus;
use crate::store::StoreOp;

use super::msg::NodeMsg;
use super::view::NodeView;

/// An input for a machine on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    Membership(MembershipInput),
    /// To the machine hosting the channel, if any.
    Channel(ChannelId, ChannelInput),
    /// To every channel machine this node hosts.
    EachChannel(ChannelInput),
    Gpu(GpuId, GpuInput),
    /// To this node's region dispatcher, if it hosts it.
    Dispatcher(DispatchInput),
}

/// What happened, for metrics, logs and the simulator's statistics only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    VideoDone {
        channel: ChannelId,
        slot: u64,
        status: VideoStatus,
        cost_micros: u64,
        /// The slot's publishing instant (Unix ms).
        publish_at_ms: u64,
    },
    /// A peer's lease expired and this node removed it, after its lease
    /// had not moved for `silent_ms` (this node's clock).
    NodeRemoved { node: NodeId, silent_ms: u64 },
}

/// One thing for an executor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Local(Local),
    Remote {
        to: NodeId,
        msg: NodeMsg,
    },
    /// A store operation; its reply goes back to the machine that issued
    /// it (that very instance) as its `StoreReply` input.
    Store {
        op_id: u64,
        op: StoreOp,
    },
    /// A CPU or external stage, on this node's executor; its end comes back
    /// through [`local_job_outcome`].
    RunLocal(JobSpec),
    CancelLocal(JobId),
    /// A job on a GPU of this node; its end comes back as
    /// `GpuInput::Finished`. It must be stopped by `lease_until_ms`.
    RunGpu {
        gpu: GpuId,
        job: JobSpec,
        lease_until_ms: u64,
    },
    KillGpu {
        gpu: GpuId,
        id: JobId,
    },
    Publish {
        channel: ChannelId,
        slot: u64,
        attempt: u32,
        idempotency_key: String,
        timeout_ms: u64,
    },
    Lookup {
        channel: ChannelId,
        slot: u64,
        idempotency_key: String,
    },
    /// Host a channel machine under this (epoch, incarnation), and start it.
    StartChannel {
        channel: ChannelId,
        epoch: u64,
        incarnation: u64,
    },
    /// The channel's machine stopped (released, or fenced): drop it.
    ChannelStopped {
        channel: ChannelId,
        fenced: bool,
    },
    /// The node was declared dead: drop every channel machine now.
    DropAllChannels,
    /// Host this region's dispatcher or not (whichever it is now).
    HostDispatcher(bool),
    /// The drain is done: the node stops.
    Drained,
    Observe(Observation),
}

/// A message from this node to `to`: local delivery if it is this node.
pub fn send(view: &NodeView, to: NodeId, msg: NodeMsg, out: &mut Vec<Route>) {
    if to == view.me {
        if let Some(local) = arrive(view, msg) {
            out.push(Route::Local(local));
        }
    } else {
        out.push(Route::Remote { to, msg });
    }
}

/// What a message that arrived at this node is for; `None` if nothing here
/// takes it (a GPU or a dispatcher this node does not have).
pub fn arrive(view: &NodeView, msg: NodeMsg) -> Option<Local> {
    Some(match msg {
        NodeMsg::JobStarted { id, gpu } => {
            Local::Channel(id.channel, ChannelInput::JobStarted { id, gpu: Some(gpu) })
        }
        NodeMsg::JobFinished { id, outcome } => {
            Local::Channel(id.channel, ChannelInput::JobFinished { id, outcome })
        }
        NodeMsg::GpuSubmit { gpu, job } if view.node_of_gpu(gpu) == view.me => {
            Local::Gpu(gpu, GpuInput::Submit(job))
        }
        NodeMsg::GpuCancel { gpu, id } if view.node_of_gpu(gpu) == view.me => {
            Local::Gpu(gpu, GpuInput::Cancel(id))
        }
        NodeMsg::DispatchSubmit { region, job } if region == view.region => {
            Local::Dispatcher(DispatchInput::Submit(job))
        }
        NodeMsg::DispatchLoad { region, report } if region == view.region => {
            Local::Dispatcher(DispatchInput::Load(report))
        }
        NodeMsg::DispatchSummary {
            to,
            region,
            best_wait_ms,
        } if to == view.region => Local::Dispatcher(DispatchInput::Summary {
            region,
            best_wait_ms,
        }),
        NodeMsg::MembersChanged { version } => {
            Local::Membership(MembershipInput::MembersChanged { version })
        }
        _ => return None,
    })
}

/// Where a channel machine's effects go.
pub fn channel_effect(view: &NodeView, ch: ChannelId, e: ChannelEffect, out: &mut Vec<Route>) {
    match e {
        ChannelEffect::Store { op_id, op } => out.push(Route::Store { op_id, op }),
        ChannelEffect::StartJob(spec) => start_job(view, spec, out),
        ChannelEffect::CancelJob { id, gpu } => match gpu {
            Some(g) => send(
                view,
                view.node_of_gpu(g),
                NodeMsg::GpuCancel { gpu: g, id },
                out,
            ),
            None => out.push(Route::CancelLocal(id)),
        },
        ChannelEffect::Publish {
            slot,
            attempt,
            idempotency_key,
            timeout_ms,
        } => out.push(Route::Publish {
            channel: ch,
            slot,
            attempt,
            idempotency_key,
            timeout_ms,
        }),
        ChannelEffect::Lookup {
            slot,
            idempotency_key,
        } => out.push(Route::Lookup {
            channel: ch,
            slot,
            idempotency_key,
        }),
        ChannelEffect::Released | ChannelEffect::Fenced => {
            let fenced = e == ChannelEffect::Fenced;
            out.push(Route::ChannelStopped {
                channel: ch,
                fenced,
            });
            out.push(Route::Local(Local::Membership(
                MembershipInput::ChannelStopped(ch),
            )));
        }
        ChannelEffect::VideoDone {
            slot,
            status,
            cost_micros,
            publish_at_ms,
        } => out.push(Route::Observe(Observation::VideoDone {
            channel: ch,
            slot,
            status,
            cost_micros,
            publish_at_ms,
        })),
        ChannelEffect::AskLease => out.push(Route::Local(Local::Channel(
            ch,
            ChannelInput::Lease {
                valid_until_ms: view.lease_valid_until_ms,
            },
        ))),
    }
}

/// A GPU job goes to its home region's dispatcher, or, with none in view,
/// to this node's region's; CPU and external stages run here.
fn start_job(view: &NodeView, spec: JobSpec, out: &mut Vec<Route>) {
    match spec.kind {
        JobKind::Gpu => {
            let home = spec.home_region;
            let target = match view.dispatcher_of(home) {
                Some(d) => Some((d, home)),
                None => view.dispatcher_of(view.region).map(|d| (d, view.region)),
            };
            if let Some((d, region)) = target {
                send(view, d, NodeMsg::DispatchSubmit { region, job: spec }, out);
            }
        }
        JobKind::Cpu | JobKind::External { .. } => out.push(Route::RunLocal(spec)),
    }
}

/// Where a GPU machine's effects go.
pub fn gpu_effect(view: &NodeView, gpu: GpuId, e: GpuEffect, out: &mut Vec<Route>) {
    match e {
        GpuEffect::Run {
            job,
            lease_until_ms,
        } => out.push(Route::RunGpu {
            gpu,
            job,
            lease_until_ms,
        }),
        GpuEffect::Kill { id } => out.push(Route::KillGpu { gpu, id }),
        GpuEffect::Notify { to, notice } => {
            let msg = match notice {
                GpuNotice::Started { id, gpu } => NodeMsg::JobStarted { id, gpu },
                GpuNotice::Finished { id, outcome } => NodeMsg::JobFinished { id, outcome },
            };
            send(view, to, msg, out);
        }
        GpuEffect::Report(report) => {
            if let Some(d) = view.dispatcher_of(view.region) {
                let region = view.region;
                send(view, d, NodeMsg::DispatchLoad { region, report }, out);
            }
        }
    }
}

/// Where a dispatcher's effects go.
pub fn dispatch_effect(view: &NodeView, e: DispatchEffect, out: &mut Vec<Route>) {
    match e {
        DispatchEffect::ToGpu { gpu, job } => send(
            view,
            view.node_of_gpu(gpu),
            NodeMsg::GpuSubmit { gpu, job },
            out,
        ),
        DispatchEffect::ToRegion { region, job } => {
            if let Some(d) = view.dispatcher_of(region) {
                send(view, d, NodeMsg::DispatchSubmit { region, job }, out);
            }
        }
        DispatchEffect::Refuse { job, failure } => {
            let outcome = JobOutcome::Failed {
                failure,
                retryable: true,
                cost_micros: 0,
            };
            let msg = NodeMsg::JobFinished {
                id: job.id,
                outcome,
            };
            send(view, job.owner, msg, out);
        }
        DispatchEffect::Summary {
            region,
            best_wait_ms,
        } => {
            for r in 0..view.topo().regions.len() {
                let to = RegionId(r as u16);
                if to == region {
                    continue;
                }
                if let Some(d) = view.dispatcher_of(to) {
                    let msg = NodeMsg::DispatchSummary {
                        to,
                        region,
                        best_wait_ms,
                    };
                    send(view, d, msg, out);
                }
            }
        }
    }
}

/// Where the membership machine's effects go; a new members record or a
/// renewed lease updates `view` first.
pub fn membership_effect(view: &mut NodeView, e: MembershipEffect, out: &mut Vec<Route>) {
    match e {
        MembershipEffect::Store { op_id, op } => out.push(Route::Store { op_id, op }),
        MembershipEffect::StartChannel {
            channel,
            epoch,
            incarnation,
        } => out.push(Route::StartChannel {
            channel,
            epoch,
            incarnation,
        }),
        MembershipEffect::ReleaseChannel(ch) => {
            out.push(Route::Local(Local::Channel(ch, ChannelInput::Release)))
        }
        MembershipEffect::DropAllChannels => out.push(Route::DropAllChannels),
        MembershipEffect::View(members) => {
            view.set_members(&members);
            // Start or stop this node's dispatcher; GPUs report to the
            // (possibly new) dispatcher at once, and it forgets the GPUs of
            // nodes that left.
            out.push(Route::HostDispatcher(view.hosts_dispatcher()));
            for g in view.my_gpus() {
                out.push(Route::Local(Local::Gpu(*g, GpuInput::ReportNow)));
            }
            let members = DispatchInput::Members(view.placeable.clone());
            out.push(Route::Local(Local::Dispatcher(members)));
        }
        MembershipEffect::LeaseValidUntil(t) => {
            view.lease_valid_until_ms = view.lease_valid_until_ms.max(t);
        }
        MembershipEffect::Control {
            channel,
            record,
            version,
        } => out.push(Route::Local(match channel {
            Some(ch) => Local::Channel(ch, ChannelInput::Control { record, version }),
            None => Local::EachChannel(ChannelInput::ControlAll { record, version }),
        })),
        MembershipEffect::LimitRecord { channel, entry } => out.push(Route::Local(Local::Channel(
            channel,
            ChannelInput::LimitRecord(entry),
        ))),
        MembershipEffect::NodeRemoved { node, silent_ms } => {
            out.push(Route::Observe(Observation::NodeRemoved { node, silent_ms }))
        }
        MembershipEffect::TellMembersChanged { version, to } => {
            for n in to {
                send(view, n, NodeMsg::MembersChanged { version }, out);
            }
        }
        MembershipEffect::Drained => out.push(Route::Drained),
    }
}

/// How a local (CPU or external) job ended, as the executor saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalJobResult {
    Succeeded,
    /// The executor or provider failed (a timeout included).
    Failed {
        retryable: bool,
    },
    /// Stopped by a cancel: its owner gave up on it, nothing to report.
    Cancelled,
}

/// The input that tells a channel how its local job ended.
pub fn local_job_outcome(spec: &JobSpec, result: LocalJobResult) -> Option<ChannelInput> {
    let outcome = match result {
        LocalJobResult::Succeeded => JobOutcome::Succeeded {
            cost_micros: spec.fixed_cost_micros,
        },
        LocalJobResult::Failed { retryable } => JobOutcome::Failed {
            failure: match spec.kind {
                JobKind::External { .. } => JobFailure::ProviderError,
                JobKind::Cpu | JobKind::Gpu => JobFailure::ExecutorError,
            },
            retryable,
            cost_micros: 0,
        },
        LocalJobResult::Cancelled => return None,
    };
    Some(ChannelInput::JobFinished {
        id: spec.id,
        outcome,
    })
}
