//! The store, as the machines' store routes use it: every operation runs in
//! a task and its reply comes back to the machine that issued it, counted
//! in the metrics. A refused channel commit is diagnosed (the epoch fence,
//! or a routine conflict) for logs and metrics only: the machine decides
//! from its own read-back. A fenced channel commit also writes its
//! writer's tag (`writer_tag`).

use std::sync::Arc;

use actors::records::{lease_key, owner_key, OwnerRecord};
use actors::store::{StoreError, StoreOp, StoreReply};
use topology::{ChannelId, NodeId, Topology};

use super::metrics::Metrics;
use super::shell::Mailbox;
use super::writer_tag::{tagged, WriterTag};
use crate::store::any::AnyStore;
use crate::store::Store;

pub struct StorePort {
    pub store: Arc<AnyStore>,
    pub metrics: Arc<Metrics>,
    pub topo: Arc<Topology>,
    pub me: NodeId,
    pub name: String,
}

/// Which channel machine issued a commit: its fence.
#[derive(Clone, Copy, Debug)]
pub struct Fence {
    pub channel: ChannelId,
    pub epoch: u64,
    pub incarnation: u64,
}

impl StorePort {
    /// Applies `op`, counting it and its failure.
    pub async fn apply(&self, op: &StoreOp) -> StoreReply {
        let started = std::time::Instant::now();
        let r = self.store.apply(op).await;
        let name = match op {
            StoreOp::Get(_) => "get",
            StoreOp::Range { .. } => "range",
            StoreOp::Commit(t) if t.writes.is_empty() => "check",
            // The membership machine's renewal: its latency is the lease's
            // margin against the store.
            StoreOp::Commit(t) if t.writes.iter().any(|w| w.key() == lease_key(self.me)) => "lease",
            StoreOp::Commit(_) => "commit",
        };
        let outcome = match &r {
            StoreReply::Failed(StoreError::Conflict { .. }) => "conflict",
            StoreReply::Failed(_) => "error",
            _ => "ok",
        };
        self.metrics
            .store_call(self.store.backend(), name, outcome, started.elapsed());
        r
    }

    /// Runs `op` in a task; its reply goes to `to` as `reply(…)`. A refused
    /// commit of a channel (`fence`) is diagnosed on the way.
    pub fn spawn<I: Send + 'static>(
        self: &Arc<Self>,
        op: StoreOp,
        fence: Option<Fence>,
        to: Mailbox<I>,
        reply: impl FnOnce(StoreReply) -> I + Send + 'static,
    ) {
        let port = Arc::clone(self);
        // A fenced channel commit names its writer (evidence for audits).
        let op = match (fence, op) {
            (Some(f), StoreOp::Commit(t)) => {
                let tag = WriterTag {
                    node: self.name.clone(),
                    epoch: f.epoch,
                    incarnation: f.incarnation,
                };
                StoreOp::Commit(tagged(t, f.channel, &tag))
            }
            (_, op) => op,
        };
        tokio::spawn(async move {
            let r = port.apply(&op).await;
            let refused = matches!(r, StoreReply::Failed(StoreError::Conflict { .. }));
            if let (true, Some(f), StoreOp::Commit(_)) = (refused, fence, &op) {
                port.note_fence(f).await;
            }
            to.post(reply(r));
        });
    }

    /// A channel commit was refused. Other conflicts are routine (the quota
    /// ledger is shared by a project's channels); one because the owner
    /// record names someone else is the epoch fence at work, and is counted
    /// and said.
    async fn note_fence(&self, f: Fence) {
        let Ok(got) = self.store.get(&[owner_key(f.channel)]).await else {
            return;
        };
        let owner = got
            .into_iter()
            .next()
            .flatten()
            .and_then(|e| OwnerRecord::decode(&e.value).ok());
        let mine = OwnerRecord {
            node: Some(self.me),
            epoch: f.epoch,
            incarnation: f.incarnation,
        };
        if let Some(o) = owner.filter(|o| *o != mine) {
            self.metrics.fence_rejection();
            let now = o
                .node
                .and_then(|n| self.topo.nodes.get(n.index()))
                .map(|n| n.name.clone())
                .unwrap_or_else(|| "nobody".into());
            tracing::warn!(
                node = %self.name,
                channel = %self.topo.channel(f.channel).name,
                epoch = f.epoch,
                owner = %now,
                owner_epoch = o.epoch,
                "the store refused a channel write: the epoch fence"
            );
        }
    }
}
