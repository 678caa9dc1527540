//! The simulated publishing API: quota enforced by the API itself, 5xx,
//! 429, responses lost after success, lookup by idempotency key. An upload
//! dies if its client's own clock passes the client's timeout before the
//! last byte (the live publisher abandons an upload at its timeout), which
//! is how clock jumps and frozen processes meet uploads.

use actors::channel::ChannelInput;
use actors::node::Local;
use actors::protocol::{LookupOutcome, PublishOutcome};
use topology::{ChannelId, NodeId};

use super::events::{Ev, ForInc, Msg};
use super::World;
use crate::checks::{Invariant, Violation};

/// An upload request on its way to the API.
#[derive(Clone, Debug)]
pub(super) struct Upload {
    node: NodeId,
    ch: ChannelId,
    slot: u64,
    attempt: u32,
    key: String,
    /// The client's clock when it sent, and its timeout.
    sent_ms: u64,
    timeout_ms: u64,
}

/// An upload the API accepted, finishing.
#[derive(Clone, Debug)]
pub(super) struct UploadDone {
    pub node: NodeId,
    up: Upload,
    /// The API will complete it but its answer is lost.
    lost: bool,
    charged: Vec<u64>,
    day: u64,
}

impl World {
    pub(super) fn send_upload(
        &mut self,
        node: NodeId,
        ch: ChannelId,
        slot: u64,
        attempt: u32,
        key: String,
        timeout_ms: u64,
    ) {
        let at = self.now_ms + self.sc.world.api_latency_ms;
        let sent_ms = self.local_now(node);
        let up = Upload {
            node,
            ch,
            slot,
            attempt,
            key,
            sent_ms,
            timeout_ms,
        };
        self.push(at, Ev::UploadArrive(Box::new(up)));
    }

    pub(super) fn send_lookup(&mut self, node: NodeId, ch: ChannelId, slot: u64, key: String) {
        let at = self.now_ms + self.sc.world.api_latency_ms;
        self.push(
            at,
            Ev::LookupArrive {
                node,
                ch,
                slot,
                key,
            },
        );
    }

    /// Answers `node`'s channel `ch` after the API's latency.
    fn answer(&mut self, node: NodeId, ch: ChannelId, input: ChannelInput) {
        let at = self.now_ms + self.sc.world.api_latency_ms;
        let msg = Msg::Local(Local::Channel(ch, input));
        self.push(
            at,
            Ev::Deliver {
                node,
                inc: ForInc::ANY,
                msg,
            },
        );
    }

    pub(super) fn upload_arrive(&mut self, up: Upload) {
        let rel = self.rel_ms();
        self.trace
            .event(rel, up.node.0, "upload-arrive", u64::from(up.ch.0), up.slot);
        self.api.upload_calls += 1;
        let project = self.topo.channel(up.ch).project;
        let spec = self.topo.project(project).clone();
        let refused = if self.rng.chance(self.api.faults.error_5xx_ppm) {
            if let Some(stage) = self.publish_stage_of(up.ch) {
                self.truth.stage_failed(up.ch, up.slot, stage);
            }
            Some(PublishOutcome::Transient)
        } else if self.rng.chance(self.api.faults.rate_limited_ppm) {
            Some(PublishOutcome::RateLimited {
                retry_after_ms: 5_000,
            })
        } else {
            None
        };
        let day = spec.quota_day(self.now_ms);
        let charged = spec.publish_units();
        let refused = refused.or_else(|| {
            (!self.api.try_take(project, &spec, day, &charged))
                .then_some(PublishOutcome::QuotaExceeded)
        });
        if let Some(outcome) = refused {
            let (slot, attempt) = (up.slot, up.attempt);
            let input = ChannelInput::PublishResult {
                slot,
                attempt,
                outcome,
            };
            self.answer(up.node, up.ch, input);
            return;
        }
        let lost = self.rng.chance(self.api.faults.lost_response_ppm);
        let done_at = self.now_ms + self.sc.world.upload_ms;
        let done = UploadDone {
            node: up.node,
            up,
            lost,
            charged,
            day,
        };
        self.push(done_at, Ev::UploadDone(Box::new(done)));
    }

    pub(super) fn upload_done(&mut self, d: UploadDone) {
        let rel = self.rel_ms();
        let up = &d.up;
        self.trace
            .event(rel, d.node.0, "upload-done", u64::from(up.ch.0), up.slot);
        let project = self.topo.channel(up.ch).project;
        let give_up_local_ms = up.sent_ms + up.timeout_ms;
        if self.nodes[d.node.index()].alive && self.local_now(d.node) >= give_up_local_ms {
            // The client gave up before the last byte: no video.
            self.api.refund(project, d.day, &d.charged);
            return;
        }
        self.api.settle(project, &d.charged);
        let duplicates_before = self.api.duplicates.len();
        let remote_id = self
            .api
            .complete(up.key.clone(), up.ch, up.slot, project, self.now_ms);
        if self.api.duplicates.len() > duplicates_before {
            let detail = format!("video {} uploaded twice", up.key);
            self.fail(Violation::new(Invariant::NoDoublePublish, detail, rel));
            return;
        }
        self.stats.published += 1;
        // Published once (a second would have failed the run above): the
        // video's plan time is not needed again, and 355,000 of them held to
        // the end of a capacity-10m day were 12 MiB of its peak memory.
        if let Some(planned) = self.watch.planned_at.remove(&(up.ch, up.slot)) {
            self.stats.publish_latency_ms.push(self.now_ms - planned);
        }
        if !self.quota_within_ledger(project, "upload") {
            return;
        }
        if !d.lost {
            let input = ChannelInput::PublishResult {
                slot: up.slot,
                attempt: up.attempt,
                outcome: PublishOutcome::Published { remote_id },
            };
            self.answer(d.node, up.ch, input);
        }
    }

    /// Invariant 3: the API never charged more than the ledger reserved.
    fn quota_within_ledger(&mut self, project: topology::ProjectId, what: &str) -> bool {
        let charged = self.api.charged_total.get(&project).copied().unwrap_or(0);
        let reserved = self.watch.ledger_units.get(&project).copied().unwrap_or(0);
        if charged > reserved {
            let detail = format!(
                "project {} charged {charged} units by the API but only {reserved} reserved in the ledger ({what})",
                self.topo.project(project).name
            );
            let rel = self.rel_ms();
            self.fail(Violation::new(Invariant::QuotaNeverExceeded, detail, rel));
            return false;
        }
        true
    }

    pub(super) fn lookup_arrive(&mut self, node: NodeId, ch: ChannelId, slot: u64, key: String) {
        let rel = self.rel_ms();
        self.trace
            .event(rel, node.0, "lookup-arrive", u64::from(ch.0), slot);
        self.api.lookup_calls += 1;
        let project = self.topo.channel(ch).project;
        let spec = self.topo.project(project).clone();
        let outcome = if self.rng.chance(self.api.faults.error_5xx_ppm) {
            LookupOutcome::Failed
        } else {
            let mut units = vec![0; spec.buckets.len()];
            units[spec.lookup_cost.bucket] += spec.lookup_cost.units;
            let day = spec.quota_day(self.now_ms);
            if !self.api.try_take(project, &spec, day, &units) {
                LookupOutcome::Failed
            } else {
                self.api.settle(project, &units);
                if !self.quota_within_ledger(project, "lookup") {
                    return;
                }
                match self.api.uploads.get(&key) {
                    Some(u) => LookupOutcome::Found {
                        remote_id: u.remote_id.clone(),
                    },
                    None => LookupOutcome::NotFound,
                }
            }
        };
        if self.rng.chance(self.api.faults.lost_response_ppm) {
            return;
        }
        self.answer(node, ch, ChannelInput::LookupResult { slot, outcome });
    }
}
