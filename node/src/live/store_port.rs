//! The store, as the machines' store routes use it: every operation runs in
//! a task and its reply comes back to the machine that issued it, counted
//! in the metrics. A refused channel commit is diagnosed (the epoch fence,
//! or a routine conflict) for logs and metrics only: the machine decides
//! from its own read-back. A fenced channel commit also writes its
//! writer's tag (`writer_tag`).
//!
//! Channel reads (gets and ranges: a machine loading its records, a
//! read-back) run at most [`CHANNEL_READS_IN_FLIGHT_MAX`] at a time; the
//! membership machine's operations (lease renewals, refreshes, claims)
//! and every commit go at once. A node that claims thousands of channels
//! starts as many machines, each loading its records: with every load in
//! flight at once, the next claim batch and the lease renewal queued
//! behind all of them in the store. On etcd, 2,000 channels with a
//! backlog were claimed in 61 s instead of 97 s, with 5.2 times the job
//! transitions and 4.5 times the videos published (BENCHMARKS "Dispatch
//! throughput of one node"). Commits are not held back: a commit that
//! waited would find the ledgers it read moved on (a project's quota
//! ledger is shared), conflict, and wait again; holding commits too
//! starved publishing on etcd (1 video a second instead of 312).

use std::sync::Arc;

use actors::records::{lease_key, owner_key, OwnerRecord};
use actors::store::{StoreError, StoreOp, StoreReply};
use topology::{ChannelId, NodeId, Topology};

use super::metrics::Metrics;
use super::read_batch;
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
    /// Permits for channel reads in flight (`CHANNEL_READS_IN_FLIGHT_MAX`)
    /// where they go one by one.
    pub channel_reads: Arc<tokio::sync::Semaphore>,
    /// Channel reads waiting for a batch, where they go together
    /// (`read_batch`; etcd).
    pub batched_reads: read_batch::Queue,
}

/// Channel reads in flight at once, per node: an operation of the
/// membership machine waits behind at most this many of them.
pub const CHANNEL_READS_IN_FLIGHT_MAX: usize = 128;

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
        self.count(op, &r, started.elapsed());
        r
    }

    /// Counts `op`'s call and its outcome in the metrics.
    pub fn count(&self, op: &StoreOp, r: &StoreReply, took: std::time::Duration) {
        let name = match op {
            StoreOp::Get(_) => "get",
            StoreOp::Range { .. } => "range",
            StoreOp::Commit(t) if t.writes.is_empty() => "check",
            // The membership machine's renewal: its latency is the lease's
            // margin against the store.
            StoreOp::Commit(t) | StoreOp::CommitGet { txn: t, .. }
                if t.writes
                    .iter()
                    .any(|w| w.key() == lease_key(self.me).as_slice()) =>
            {
                "lease"
            }
            StoreOp::Commit(_) | StoreOp::CommitGet { .. } => "commit",
        };
        let outcome = match r {
            StoreReply::Failed(StoreError::Conflict { .. }) => "conflict",
            StoreReply::Failed(_) => "error",
            _ => "ok",
        };
        self.metrics
            .store_call(self.store.backend(), name, outcome, took);
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
        let channel_read = fence.is_some() && matches!(op, StoreOp::Get(_) | StoreOp::Range { .. });
        if channel_read && self.store.batches_reads() {
            let answer = Box::new(move |r| to.post(reply(r)));
            read_batch::submit(self, read_batch::Waiting { op, answer });
            return;
        }
        tokio::spawn(async move {
            // A channel's read waits for a permit; everything else goes
            // at once (see the module's comment).
            let permit = match channel_read {
                true => Arc::clone(&port.channel_reads).acquire_owned().await.ok(),
                false => None,
            };
            let r = port.apply(&op).await;
            drop(permit);
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use actors::store::{Txn, Write};

    use super::*;
    use crate::live::shell::ShellMsg;
    use crate::store::url::StoreUrl;

    const DEMO: &str = include_str!("../../../examples/demo.toml");

    fn mailbox(tx: mpsc::Sender<&'static str>, what: &'static str) -> Mailbox<StoreReply> {
        Mailbox::from_fn(move |m| {
            if let ShellMsg::Input(_) = m {
                let _ = tx.send(what);
            }
        })
    }

    /// With every read permit taken, a channel's read waits; the
    /// membership machine's read and a channel's commit do not.
    #[tokio::test]
    async fn channel_reads_wait_for_a_permit_and_nothing_else_does() {
        let topo = Arc::new(topology::config::parse_topology(DEMO).expect("demo config"));
        let store = AnyStore::open(&StoreUrl::Mem).await.expect("mem store");
        let port = Arc::new(StorePort {
            store: Arc::new(store),
            metrics: Arc::new(Metrics::new("n0", "r0")),
            topo,
            me: NodeId(0),
            name: "n0".into(),
            channel_reads: Arc::new(tokio::sync::Semaphore::new(1)),
            batched_reads: read_batch::Queue::new(),
        });
        let held = Arc::clone(&port.channel_reads)
            .acquire_owned()
            .await
            .expect("the only permit");
        let fence = Fence {
            channel: ChannelId(0),
            epoch: 1,
            incarnation: 1,
        };
        let (tx, rx) = mpsc::channel();
        let get = || StoreOp::Get(vec![actors::store::key(b"k")]);
        port.spawn(
            get(),
            Some(fence),
            mailbox(tx.clone(), "channel read"),
            |r| r,
        );
        port.spawn(get(), None, mailbox(tx.clone(), "membership read"), |r| r);
        let commit = StoreOp::Commit(Txn {
            checks: vec![],
            writes: vec![Write::Put(actors::store::key(b"k"), b"v".to_vec())],
        });
        port.spawn(commit, Some(fence), mailbox(tx, "channel commit"), |r| r);
        let mut answered = Vec::new();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            answered.extend(rx.try_iter());
        }
        answered.sort_unstable();
        assert_eq!(answered, ["channel commit", "membership read"]);
        drop(held);
        let mut late = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            late.extend(rx.try_iter());
            if !late.is_empty() {
                break;
            }
        }
        assert_eq!(
            late,
            ["channel read"],
            "the read goes once a permit is free"
        );
    }
}
