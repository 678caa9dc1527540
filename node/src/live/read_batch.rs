//! Channel reads gathered into batches, on a store where a request costs
//! more than the keys it reads (etcd; `AnyStore::batches_reads`). Every
//! channel read waiting when a batch slot frees goes in the next batch,
//! up to [`READ_BATCH_OPS_MAX`] operations; at most
//! [`READ_BATCHES_IN_FLIGHT_MAX`] batches are in flight. A lone read goes
//! at once, alone: reads are gathered only while the store is busy, and
//! then as many as wait. Each machine gets the reply its read would have
//! had alone (`EtcdStore::read_many`).
//!
//! Why: a survivor that claims 5,000 channels of a killed node starts
//! 5,000 machines, each reading its records with a get and a range; on
//! three etcd members sharing two cores with the nodes, those requests,
//! not the keys, were what held the takeover of 10,000 channels to about
//! 3,000 a second (BENCHMARKS "One live node at scale").

use std::sync::{Arc, Weak};
use std::time::Instant;

use actors::store::{StoreOp, StoreReply};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::store_port::StorePort;
use crate::store::etcd_store::BatchOps;
pub use crate::store::etcd_store::READ_BATCH_OPS_MAX;

/// Batches of channel reads in flight at once, per node: an operation of
/// the membership machine waits behind at most this many.
pub const READ_BATCHES_IN_FLIGHT_MAX: usize = 8;

/// A channel read waiting for its batch, and where its reply goes.
pub struct Waiting {
    pub op: StoreOp,
    pub answer: Box<dyn FnOnce(StoreReply) + Send>,
}

/// The queue of `port`'s batched reads, started on first use.
pub type Queue = std::sync::OnceLock<UnboundedSender<Waiting>>;

/// Puts `w` in the next batch of `port`'s reads.
pub fn submit(port: &Arc<StorePort>, w: Waiting) {
    let queue = port.batched_reads.get_or_init(|| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(gather(Arc::downgrade(port), rx));
        tx
    });
    if let Err(e) = queue.send(w) {
        // The gatherer ended: the port is going away with its node.
        (e.0.answer)(StoreReply::Failed(actors::store::StoreError::Unavailable(
            "the node is stopping".into(),
        )));
    }
}

/// Forms batches from the queue and sends each when a slot is free. Ends
/// when the port (and so the queue's sender) is gone.
async fn gather(port: Weak<StorePort>, mut queue: UnboundedReceiver<Waiting>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(READ_BATCHES_IN_FLIGHT_MAX));
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(w) => w,
            None => match queue.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Everything that queued while the slots were taken.
        let mut size = BatchOps::default();
        size.take(&first.op);
        let mut batch = vec![first];
        while let Ok(w) = queue.try_recv() {
            if !size.take(&w.op) {
                carried = Some(w);
                break;
            }
            batch.push(w);
        }
        let Some(port) = port.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let (ops, answers): (Vec<StoreOp>, Vec<_>) =
                batch.into_iter().map(|w| (w.op, w.answer)).unzip();
            let replies = port.store.read_many(&ops).await;
            drop(slot);
            assert_eq!(replies.len(), ops.len(), "one reply per read");
            let took = started.elapsed();
            for ((op, answer), reply) in ops.iter().zip(answers).zip(replies) {
                port.count(op, &reply, took);
                answer(reply);
            }
        });
    }
}
