//! The real ports behind each machine's effects: the live counterparts of
//! the simulator's `exec_*`. Every effect is executed without blocking the
//! actor: I/O runs in a task that comes back to the actor as an input.
//! Ports carry out what the machine decided and nothing more: they never
//! retry on their own (retries and their charges are the machine's).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use ractor::ActorRef;

use actors::channel::{ChannelEffect, ChannelInput, ChannelMachine};
use actors::gpu::{GpuEffect, GpuInput, GpuMachine, GpuNotice};
use actors::membership::{MembershipEffect, MembershipInput, MembershipMachine};
use actors::protocol::{JobFailure, JobId, JobKind, JobOutcome, JobSpec};
use actors::records::{owner_key, OwnerRecord, VideoStatus};
use actors::dispatch::{DispatchEffect, DispatchInput, DispatchMachine};
use actors::store::{StoreError, StoreOp, StoreReply};
use topology::{ChannelId, GpuId, NodeId, RegionId};

use super::ctx::NodeCtx;
use super::metrics::Metrics;
use super::run_stage::{run_stage, StageResult};
use super::shell::{Machine, Ports, ShellMsg};
use super::supervisor::SupMsg;
use super::wire::Wire;
use crate::publish::{MayFinish, Upload};
use crate::store::Store;

/// An upload may finish only if this much of its time is left (the last
/// request must leave the node and be answered inside the machine's
/// timeout).
pub const FINISH_MARGIN_MS: u64 = 200;

/// Applies `op`, counting it and its failure.
async fn apply_counted(ctx: &NodeCtx, op: &StoreOp) -> StoreReply {
    Metrics::inc(&ctx.metrics.store_ops);
    let r = ctx.store.apply(op).await;
    if matches!(r, StoreReply::Failed(_)) {
        Metrics::inc(&ctx.metrics.store_errors);
    }
    r
}

fn store_op<M: Machine>(
    ctx: &Arc<NodeCtx>,
    me: &ActorRef<ShellMsg<M::Input>>,
    op: StoreOp,
    reply: impl FnOnce(StoreReply) -> M::Input + Send + 'static,
) {
    let ctx = Arc::clone(ctx);
    let me = me.clone();
    tokio::spawn(async move {
        let r = apply_counted(&ctx, &op).await;
        let _ = me.cast(ShellMsg::Input(reply(r)));
    });
}

// ----- channels -----------------------------------------------------------

pub struct ChannelPorts {
    pub ctx: Arc<NodeCtx>,
    pub channel: ChannelId,
    pub epoch: u64,
    pub incarnation: u64,
}

/// A channel commit was refused. Other conflicts are routine (the quota
/// ledger is shared by a project's channels); one because the owner record
/// names someone else is the epoch fence at work, and is counted and said
/// (even when the actor is gone and its reply goes nowhere). A diagnosis
/// only: the machine decides from its own read-back.
async fn note_fence(ctx: &NodeCtx, channel: ChannelId, epoch: u64, incarnation: u64) {
    let Ok(got) = ctx.store.get(&[owner_key(channel)]).await else {
        return;
    };
    let owner = got
        .into_iter()
        .next()
        .flatten()
        .and_then(|e| OwnerRecord::decode(&e.value).ok());
    let mine = OwnerRecord {
        node: Some(ctx.me),
        epoch,
        incarnation,
    };
    if let Some(o) = owner.filter(|o| *o != mine) {
        Metrics::inc(&ctx.metrics.fence_rejections);
        eprintln!(
            "{}: the store refused a write of channel {} at epoch {epoch}: the fence (owner now {} at epoch {})",
            ctx.name,
            ctx.topo.channel(channel).name,
            o.node.map(|n| ctx.topo.node(n).name.clone()).unwrap_or_else(|| "nobody".into()),
            o.epoch
        );
    }
}

impl Ports<ChannelMachine> for ChannelPorts {
    fn before_input(&self, m: &mut ChannelMachine) {
        m.note_lease_valid_until(self.ctx.lease_valid_until());
    }

    fn execute(
        &self,
        me: &ActorRef<ShellMsg<ChannelInput>>,
        _m: &ChannelMachine,
        effect: ChannelEffect,
    ) {
        let ctx = &self.ctx;
        match effect {
            ChannelEffect::Store { op_id, op } => {
                let commit = matches!(op, StoreOp::Commit(_));
                let (ctx, me) = (Arc::clone(ctx), me.clone());
                let (channel, epoch, incarnation) = (self.channel, self.epoch, self.incarnation);
                tokio::spawn(async move {
                    let reply = apply_counted(&ctx, &op).await;
                    if commit && matches!(reply, StoreReply::Failed(StoreError::Conflict { .. })) {
                        note_fence(&ctx, channel, epoch, incarnation).await;
                    }
                    let _ = me.cast(ShellMsg::Input(ChannelInput::StoreReply { op_id, reply }));
                });
            }
            ChannelEffect::StartJob(spec) => start_job(ctx, me, spec),
            ChannelEffect::CancelJob { id, gpu } => match gpu {
                Some(g) => ctx.send(ctx.gpu_node(g), Wire::GpuCancel { gpu: g, id }),
                None => {
                    // Dropping the sender cancels the local job.
                    ctx.running().remove(&id);
                }
            },
            ChannelEffect::Publish {
                slot,
                attempt,
                idempotency_key,
                timeout_ms,
            } => self.publish(me, slot, attempt, idempotency_key, timeout_ms),
            ChannelEffect::Lookup {
                slot,
                idempotency_key,
            } => {
                Metrics::inc(&ctx.metrics.lookups);
                let ctx = Arc::clone(ctx);
                let me = me.clone();
                tokio::spawn(async move {
                    let outcome = ctx.publisher.lookup(&idempotency_key).await;
                    let _ = me.cast(ShellMsg::Input(ChannelInput::LookupResult {
                        slot,
                        outcome,
                    }));
                });
            }
            ChannelEffect::Released | ChannelEffect::Fenced => {
                let fenced = matches!(effect, ChannelEffect::Fenced);
                if fenced {
                    Metrics::inc(&ctx.metrics.fenced);
                    eprintln!(
                        "{}: channel {} fenced at epoch {}: another node owns it now",
                        ctx.name,
                        ctx.topo.channel(self.channel).name,
                        self.epoch
                    );
                }
                {
                    let mut l = ctx.locals();
                    if l.channels
                        .get(&self.channel)
                        .is_some_and(|(_, r)| r.get_id() == me.get_id())
                    {
                        l.channels.remove(&self.channel);
                    }
                }
                me.stop(Some(if fenced { "fenced" } else { "released" }.into()));
                ctx.to_membership(MembershipInput::ChannelStopped(self.channel));
            }
            ChannelEffect::VideoDone { slot, status } => {
                let name = &ctx.topo.channel(self.channel).name;
                match status {
                    VideoStatus::Published { remote_id } => {
                        Metrics::inc(&ctx.metrics.videos_published);
                        eprintln!("{}: published {name} slot {slot} as {remote_id}", ctx.name);
                    }
                    VideoStatus::Failed(why) => {
                        Metrics::inc(&ctx.metrics.videos_failed);
                        eprintln!("{}: {name} slot {slot} failed: {why:?}", ctx.name);
                    }
                    VideoStatus::Active => {}
                }
            }
        }
    }
}

impl ChannelPorts {
    fn publish(
        &self,
        me: &ActorRef<ShellMsg<ChannelInput>>,
        slot: u64,
        attempt: u32,
        key: String,
        timeout_ms: u64,
    ) {
        let ctx = Arc::clone(&self.ctx);
        Metrics::inc(&ctx.metrics.uploads_started);
        let deadline = ctx.clock.now_ms() + timeout_ms;
        let (channel, epoch) = (self.channel, self.epoch);
        let me = me.clone();
        tokio::spawn(async move {
            let chan = ctx.topo.channel(channel);
            let upload = Upload {
                idempotency_key: key.clone(),
                video: super::run_stage::video_for(&ctx, channel, slot),
                title: format!("{} #{slot}", chan.name),
                description: format!("Made by reelfleet for {} (slot {slot}).", chan.name),
                metadata: serde_json::json!({
                    "channel": chan.name,
                    "slot": slot,
                    "attempt": attempt,
                    "node": ctx.name,
                    "epoch": epoch,
                }),
            };
            // Checked right before the step that makes the upload visible:
            // the lease, the ownership and the machine's own timeout must
            // all still hold (a process frozen mid-upload fails this when it
            // thaws, because the monotonic clock kept counting).
            let guard_ctx = Arc::clone(&ctx);
            let may_finish: MayFinish = Arc::new(move || {
                let now = guard_ctx.clock.now_ms();
                now + FINISH_MARGIN_MS < deadline
                    && guard_ctx.lease_valid_until() > now
                    && !guard_ctx.stopping.load(Ordering::Acquire)
                    && guard_ctx
                        .locals()
                        .channels
                        .get(&channel)
                        .is_some_and(|(e, _)| *e == epoch)
            });
            let wait = ctx.clock.until(deadline);
            let r = tokio::time::timeout(wait, ctx.publisher.publish(&upload, may_finish)).await;
            match r {
                Ok(Some(outcome)) => {
                    let _ = me.cast(ShellMsg::Input(ChannelInput::PublishResult {
                        slot,
                        attempt,
                        outcome,
                    }));
                }
                // Unknown: the machine's own timeout makes it look the key up.
                _ => Metrics::inc(&ctx.metrics.uploads_unknown),
            }
        });
    }
}

fn start_job(ctx: &Arc<NodeCtx>, me: &ActorRef<ShellMsg<ChannelInput>>, spec: JobSpec) {
    Metrics::inc(&ctx.metrics.jobs_started);
    match spec.kind {
        JobKind::Gpu => {
            let home = spec.home_region;
            let target = match ctx.dispatcher_of(home) {
                Some(d) => Some((d, home)),
                // No dispatcher in view: try the node's own region.
                None => ctx.dispatcher_of(ctx.region).map(|d| (d, ctx.region)),
            };
            if let Some((d, region)) = target {
                ctx.send(d, Wire::RegionSubmit { region, job: spec });
            }
        }
        JobKind::Cpu | JobKind::External { .. } => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            ctx.running().insert(spec.id, tx);
            ctx.metrics.jobs_running.fetch_add(1, Ordering::Relaxed);
            let ctx = Arc::clone(ctx);
            let me = me.clone();
            tokio::spawn(async move {
                let timeout_ms = spec.duration.max_ms() + ctx.timing.job_grace_ms;
                let r = run_stage(&ctx, &spec, timeout_ms, rx).await;
                ctx.running().remove(&spec.id);
                ctx.metrics.jobs_running.fetch_sub(1, Ordering::Relaxed);
                let failure = match spec.kind {
                    JobKind::External { .. } => JobFailure::ProviderError,
                    _ => JobFailure::ExecutorError,
                };
                let outcome = match r {
                    StageResult::Ok => JobOutcome::Succeeded {
                        cost_micros: spec.fixed_cost_micros,
                    },
                    StageResult::Failed { retryable } => JobOutcome::Failed {
                        failure,
                        retryable,
                        cost_micros: 0,
                    },
                    StageResult::Cancelled => return,
                };
                let _ = me.cast(ShellMsg::Input(ChannelInput::JobFinished {
                    id: spec.id,
                    outcome,
                }));
            });
        }
    }
}

// ----- GPUs ---------------------------------------------------------------

pub struct GpuPorts {
    pub ctx: Arc<NodeCtx>,
    pub gpu: GpuId,
    /// Jobs this GPU's actor started on the hardware.
    pub jobs: Mutex<BTreeSet<JobId>>,
}

impl GpuPorts {
    pub fn new(ctx: Arc<NodeCtx>, gpu: GpuId) -> GpuPorts {
        GpuPorts {
            ctx,
            gpu,
            jobs: Mutex::new(BTreeSet::new()),
        }
    }
    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeSet<JobId>> {
        super::lock(&self.jobs)
    }
}

impl Ports<GpuMachine> for GpuPorts {
    fn execute(&self, me: &ActorRef<ShellMsg<GpuInput>>, _m: &GpuMachine, effect: GpuEffect) {
        let ctx = &self.ctx;
        match effect {
            GpuEffect::Run {
                job,
                lease_until_ms,
            } => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                ctx.running().insert(job.id, tx);
                self.jobs().insert(job.id);
                ctx.metrics.jobs_running.fetch_add(1, Ordering::Relaxed);
                let ctx = Arc::clone(ctx);
                let me = me.clone();
                tokio::spawn(async move {
                    let timeout_ms = lease_until_ms.saturating_sub(ctx.clock.now_ms());
                    let r = run_stage(&ctx, &job, timeout_ms, rx).await;
                    ctx.running().remove(&job.id);
                    ctx.metrics.jobs_running.fetch_sub(1, Ordering::Relaxed);
                    let ok = match r {
                        StageResult::Ok => true,
                        StageResult::Failed { .. } => false,
                        StageResult::Cancelled => return,
                    };
                    let _ = me.cast(ShellMsg::Input(GpuInput::Finished { id: job.id, ok }));
                });
            }
            GpuEffect::Kill { id } => {
                ctx.running().remove(&id);
                self.jobs().remove(&id);
            }
            GpuEffect::Notify { to, notice } => match notice {
                GpuNotice::Started { id, gpu } => ctx.send(to, Wire::JobStarted { id, gpu }),
                GpuNotice::Finished { id, outcome } => {
                    self.jobs().remove(&id);
                    ctx.send(to, Wire::JobFinished { id, outcome })
                }
            },
            GpuEffect::Report(report) => {
                if let Some(d) = ctx.dispatcher_of(ctx.region) {
                    ctx.send(
                        d,
                        Wire::RegionLoad {
                            region: ctx.region,
                            report,
                        },
                    );
                }
            }
        }
    }

    /// A failed or stopped GPU actor takes its jobs with it: their owners
    /// time out and resubmit, as after a GPU fault.
    fn stopped(&self) {
        let ids: Vec<JobId> = self.jobs().iter().copied().collect();
        let mut running = self.ctx.running();
        for id in ids {
            running.remove(&id);
        }
    }
}

// ----- the region dispatcher ---------------------------------------------

pub struct RegionPorts {
    pub ctx: Arc<NodeCtx>,
}

impl Ports<DispatchMachine> for RegionPorts {
    fn execute(
        &self,
        _me: &ActorRef<ShellMsg<DispatchInput>>,
        _m: &DispatchMachine,
        effect: DispatchEffect,
    ) {
        let ctx = &self.ctx;
        match effect {
            DispatchEffect::ToGpu { gpu, job } => {
                ctx.send(ctx.gpu_node(gpu), Wire::GpuSubmit { gpu, job })
            }
            DispatchEffect::ToRegion { region, job } => {
                if let Some(d) = ctx.dispatcher_of(region) {
                    ctx.send(d, Wire::RegionSubmit { region, job });
                }
            }
            DispatchEffect::Refuse { job, failure } => ctx.send(
                job.owner,
                Wire::JobFinished {
                    id: job.id,
                    outcome: JobOutcome::Failed {
                        failure,
                        retryable: true,
                        cost_micros: 0,
                    },
                },
            ),
            DispatchEffect::Summary {
                region,
                best_wait_ms,
            } => {
                for r in 0..ctx.topo.regions.len() {
                    let to = RegionId(r as u16);
                    if to == region {
                        continue;
                    }
                    if let Some(d) = ctx.dispatcher_of(to) {
                        ctx.send(
                            d,
                            Wire::RegionSummary {
                                to,
                                region,
                                best_wait_ms,
                            },
                        );
                    }
                }
            }
        }
    }
}

// ----- membership ---------------------------------------------------------

pub struct MembershipPorts {
    pub ctx: Arc<NodeCtx>,
}

impl Ports<MembershipMachine> for MembershipPorts {
    fn execute(
        &self,
        me: &ActorRef<ShellMsg<MembershipInput>>,
        m: &MembershipMachine,
        effect: MembershipEffect,
    ) {
        let ctx = &self.ctx;
        ctx.metrics
            .channels_owned
            .store(m.hosted().count() as u64, Ordering::Relaxed);
        match effect {
            MembershipEffect::Store { op_id, op } => {
                store_op::<MembershipMachine>(ctx, me, op, move |reply| {
                    MembershipInput::StoreReply { op_id, reply }
                })
            }
            MembershipEffect::StartChannel {
                channel,
                epoch,
                incarnation,
            } => {
                if let Some(s) = ctx.supervisor() {
                    let _ = s.cast(SupMsg::StartChannel {
                        channel,
                        epoch,
                        incarnation,
                    });
                }
            }
            MembershipEffect::ReleaseChannel(ch) => {
                let r = ctx.locals().channels.get(&ch).map(|(_, r)| r.clone());
                if let Some(r) = r {
                    let _ = r.cast(ShellMsg::Input(ChannelInput::Release));
                }
            }
            MembershipEffect::DropAllChannels => {
                eprintln!(
                    "{}: this node was declared dead: dropping every channel",
                    ctx.name
                );
                if let Some(s) = ctx.supervisor() {
                    let _ = s.cast(SupMsg::StopAllChannels);
                }
            }
            MembershipEffect::View(members) => {
                let mut placeable = vec![false; ctx.topo.nodes.len()];
                for n in &members.nodes {
                    if !members.is_draining(*n) {
                        if let Some(p) = placeable.get_mut(n.index()) {
                            *p = true;
                        }
                    }
                }
                let view = ctx.set_view(placeable.clone());
                let host =
                    view.dispatchers.get(ctx.region.index()).copied().flatten() == Some(ctx.me);
                if let Some(s) = ctx.supervisor() {
                    let _ = s.cast(SupMsg::HostDispatcher(host));
                }
                let l = ctx.locals();
                // GPUs report to the (possibly new) dispatcher at once, and
                // the dispatcher forgets GPUs of nodes that left.
                for g in l.gpus.values() {
                    let _ = g.cast(ShellMsg::Input(GpuInput::ReportNow));
                }
                if let Some(d) = &l.dispatcher {
                    let _ = d.cast(ShellMsg::Input(DispatchInput::Members(placeable)));
                }
            }
            MembershipEffect::LeaseValidUntil(t) => {
                ctx.lease_valid_until_ms.store(t, Ordering::Release);
            }
            MembershipEffect::Control {
                channel,
                record,
                version,
            } => {
                let l = ctx.locals();
                match channel {
                    Some(ch) => {
                        if let Some((_, r)) = l.channels.get(&ch) {
                            let _ =
                                r.cast(ShellMsg::Input(ChannelInput::Control { record, version }));
                        }
                    }
                    None => {
                        for (_, r) in l.channels.values() {
                            let _ = r.cast(ShellMsg::Input(ChannelInput::ControlAll {
                                record,
                                version,
                            }));
                        }
                    }
                }
            }
            MembershipEffect::NodeRemoved(n) => {
                Metrics::inc(&ctx.metrics.node_removals);
                eprintln!(
                    "{}: removed {} (lease expired); claiming its channels",
                    ctx.name,
                    node_name(ctx, n)
                );
            }
            MembershipEffect::Drained => ctx.request_stop("drained"),
        }
    }
}

fn node_name(ctx: &NodeCtx, n: NodeId) -> String {
    ctx.topo
        .nodes
        .get(n.index())
        .map(|x| x.name.clone())
        .unwrap_or_else(|| n.to_string())
}
