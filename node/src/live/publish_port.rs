//! Uploads and lookups, for real: the publisher (a directory, YouTube)
//! behind the machine's own timeout, with a guard asked right before the
//! step that makes a video visible.

use std::sync::Arc;

use actors::channel::ChannelInput;
use topology::{ChannelId, Topology};

use super::clock::Clock;
use super::fault_points::{FaultPoints, PUBLISH_AFTER_GUARD};
use super::jobs::JobPort;
use super::life::Life;
use super::metrics::Metrics;
use super::router::Router;
use super::shell::Mailbox;
use crate::publish::{MayFinish, Publisher, Upload};

/// An upload may finish only if this much of its time is left (the last
/// request must leave the node and be answered inside the machine's
/// timeout).
pub const FINISH_MARGIN_MS: u64 = 200;

pub struct PublishPort {
    pub topo: Arc<Topology>,
    pub name: String,
    pub clock: Clock,
    pub publisher: Arc<dyn Publisher>,
    pub metrics: Arc<Metrics>,
    pub router: Arc<Router>,
    pub jobs: Arc<JobPort>,
    pub life: Arc<Life>,
    pub faults: FaultPoints,
}

/// One upload a channel machine asked for.
pub struct UploadOrder {
    pub channel: ChannelId,
    pub epoch: u64,
    pub slot: u64,
    pub attempt: u32,
    pub key: String,
    pub timeout_ms: u64,
}

impl PublishPort {
    /// Uploads in a task; the outcome goes to `to`, unless it is unknown
    /// (the machine's own timeout then makes it look the key up).
    pub fn publish(self: &Arc<Self>, order: UploadOrder, to: Mailbox<ChannelInput>) {
        self.metrics.publish_attempt();
        let port = Arc::clone(self);
        tokio::spawn(async move {
            let deadline = port.clock.now_ms() + order.timeout_ms;
            let upload = port.upload_of(&order);
            let may_finish = port.guard(order.channel, order.epoch, deadline);
            let wait = port.clock.until(deadline);
            let r = tokio::time::timeout(wait, port.publisher.publish(&upload, may_finish)).await;
            match r {
                Ok(Some(outcome)) => to.post(ChannelInput::PublishResult {
                    slot: order.slot,
                    attempt: order.attempt,
                    outcome,
                }),
                _ => port.metrics.publish_unknown(),
            }
        });
    }

    fn upload_of(&self, o: &UploadOrder) -> Upload {
        let chan = self.topo.channel(o.channel);
        Upload {
            idempotency_key: o.key.clone(),
            video: self.jobs.video_for(o.channel, o.slot),
            title: format!("{} #{}", chan.name, o.slot),
            description: format!("Made by reelfleet for {} (slot {}).", chan.name, o.slot),
            metadata: serde_json::json!({
                "channel": chan.name,
                "slot": o.slot,
                "attempt": o.attempt,
                "node": self.name,
                "epoch": o.epoch,
            }),
        }
    }

    /// Asked right before the step that makes the upload visible: the
    /// lease, the ownership and the machine's own timeout must all still
    /// hold (a process frozen mid-upload fails this when it thaws, because
    /// the monotonic clock kept counting).
    fn guard(self: &Arc<Self>, channel: ChannelId, epoch: u64, deadline_ms: u64) -> MayFinish {
        let port = Arc::clone(self);
        Arc::new(move || {
            let now = port.clock.now_ms();
            let may = now + FINISH_MARGIN_MS < deadline_ms
                && port.router.view().lease_valid_until_ms > now
                && !port.life.is_stopping()
                && port.router.hosts(channel, epoch);
            if may {
                // The residual window of a time-based guard: everything held
                // a moment ago; a freeze here outlasts all of it.
                port.faults.hit(PUBLISH_AFTER_GUARD);
            }
            may
        })
    }

    /// Looks an idempotency key up in a task; the outcome goes to `to`.
    pub fn lookup(self: &Arc<Self>, slot: u64, key: String, to: Mailbox<ChannelInput>) {
        self.metrics.publish_lookup();
        let port = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = port.publisher.lookup(&key).await;
            to.post(ChannelInput::LookupResult { slot, outcome });
        });
    }
}
