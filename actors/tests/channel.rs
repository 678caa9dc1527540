//! `ChannelMachine` driven directly, with explicit time and a `MemStore`
//! answering its store operations at once. Each test reads as a script.

use std::sync::Arc;

use actors::channel::{ChannelEffect, ChannelInput, ChannelMachine, ChannelParams};
use actors::protocol::{JobOutcome, LookupOutcome, PublishOutcome};
use actors::records::*;
use actors::store::{MemStore, Txn, Write};
use topology::*;

const T0: u64 = 1_798_761_600_000 + 9 * 3_600_000; // 2027-01-01 09:00 UTC

fn topology() -> Arc<Topology> {
    let mut t = Topology::default();
    t.regions.push(Region { name: "r".into() });
    t.latency_ms = vec![vec![1]];
    t.gpus.push(Gpu {
        node: NodeId(0),
        model: "L4".into(),
        memory_bytes: 24 * GIB,
        cost_per_hour_micros: 3_600_000, // $1 per 1,000 s
    });
    t.nodes.push(Node {
        name: "n0".into(),
        region: RegionId(0),
        zone: "a".into(),
        gpus: vec![GpuId(0)],
    });
    t.pipelines.push(Pipeline {
        name: "p".into(),
        stages: vec![
            Stage {
                name: "render".into(),
                kind: StageKind::Gpu,
                gpu_memory_bytes: 8 * GIB,
                duration: DurationModel {
                    mean_ms: 10_000,
                    jitter_ms: 0,
                },
                cost: CostModel {
                    fixed_micros: 0,
                    cheap_fixed_micros: 0,
                },
            },
            Stage {
                name: "upload".into(),
                kind: StageKind::Publish,
                gpu_memory_bytes: 0,
                duration: DurationModel {
                    mean_ms: 1_000,
                    jitter_ms: 0,
                },
                cost: CostModel {
                    fixed_micros: 0,
                    cheap_fixed_micros: 0,
                },
            },
        ],
    });
    t.projects.push(PublishingProject::youtube_default("yt"));
    t.channels.push(Channel {
        name: "ch".into(),
        home_region: RegionId(0),
        failover_regions: vec![],
        videos_per_day: 24,
        window: PublishWindow::ALL_DAY,
        pipeline: PipelineId(0),
        priority: 0,
        budget: Budget::UNLIMITED,
        project: ProjectId(0),
    });
    Arc::new(t)
}

struct Harness {
    m: ChannelMachine,
    store: MemStore,
    now: u64,
    /// Every non-store effect, in order.
    log: Vec<ChannelEffect>,
    /// Store ops to leave unanswered (a lost reply).
    answer_store: bool,
    /// Commits are applied but their replies held back (a slow reply).
    hold_commit_replies: bool,
    held_replies: Vec<(u64, actors::store::StoreReply)>,
    /// What the node layer answers a lease ask with.
    lease_valid_until_ms: u64,
    /// Lease asks go unanswered (an answer lost with a restart).
    ignore_lease_asks: bool,
}

const CH: ChannelId = ChannelId(0);

impl Harness {
    fn new() -> Harness {
        let mut store = MemStore::new();
        let owner = OwnerRecord {
            node: Some(NodeId(0)),
            epoch: 1,
            incarnation: 1,
        };
        store
            .commit(&Txn {
                checks: vec![],
                writes: vec![Write::Put(owner_key(CH), owner.encode())],
            })
            .expect("seed the owner");
        let m = ChannelMachine::new(topology(), CH, NodeId(0), 1, 1, ChannelParams::default(), 7);
        Harness {
            m,
            store,
            now: T0,
            log: Vec::new(),
            answer_store: true,
            hold_commit_replies: false,
            held_replies: Vec::new(),
            lease_valid_until_ms: u64::MAX / 2,
            ignore_lease_asks: false,
        }
    }

    fn start(&mut self) {
        self.input(ChannelInput::Start);
    }

    fn input(&mut self, input: ChannelInput) {
        let mut out = Vec::new();
        self.m.handle(self.now, input, &mut out);
        self.run_effects(out);
    }

    fn run_effects(&mut self, mut pending: Vec<ChannelEffect>) {
        while !pending.is_empty() {
            let mut next = Vec::new();
            for e in pending {
                match e {
                    ChannelEffect::Store {
                        op_id,
                        op: op @ actors::store::StoreOp::Commit(_),
                    } if self.answer_store && self.hold_commit_replies => {
                        let reply = self.store.apply(&op);
                        self.held_replies.push((op_id, reply));
                    }
                    ChannelEffect::Store { op_id, op } if self.answer_store => {
                        let reply = self.store.apply(&op);
                        self.m.handle(
                            self.now,
                            ChannelInput::StoreReply { op_id, reply },
                            &mut next,
                        );
                    }
                    ChannelEffect::Store { .. } => {}
                    ChannelEffect::AskLease if self.ignore_lease_asks => {}
                    // As the node layer answers (by default: the lease is good).
                    ChannelEffect::AskLease => self.m.handle(
                        self.now,
                        ChannelInput::Lease {
                            valid_until_ms: self.lease_valid_until_ms,
                        },
                        &mut next,
                    ),
                    other => self.log.push(other),
                }
            }
            pending = next;
        }
    }

    /// Moves time to `t`, delivering every tick due on the way.
    fn advance_to(&mut self, t: u64) {
        while let Some(d) = self.m.next_deadline() {
            if d > t {
                break;
            }
            self.now = d.max(self.now);
            self.input(ChannelInput::Tick);
        }
        self.now = t;
    }

    fn video(&self, slot: u64) -> Option<VideoRecord> {
        self.store
            .value(&active_key(CH, slot))
            .or_else(|| self.store.value(&done_key(CH, slot)))
            .and_then(|v| VideoRecord::decode(v).ok())
    }

    fn quota_used(&self) -> u64 {
        let p = self.store.scan(
            &quota_prefix(ProjectId(0)),
            &actors::store::prefix_end(&quota_prefix(ProjectId(0))),
        );
        p.filter_map(|(_, v, _)| QuotaRecord::decode(v).ok())
            .map(|q| q.used.iter().sum::<u64>())
            .sum()
    }

    fn take_log(&mut self) -> Vec<ChannelEffect> {
        std::mem::take(&mut self.log)
    }

    /// The operator's fleet-wide kill switch: durable first, then the
    /// input arrives.
    fn kill_switch(&mut self) {
        let killed = ControlRecord {
            paused: false,
            killed: true,
        };
        let version = self
            .store
            .commit(&Txn {
                checks: vec![],
                writes: vec![Write::Put(
                    actors::store::key(CONTROL_ALL_KEY),
                    killed.encode(),
                )],
            })
            .expect("switch");
        self.input(ChannelInput::ControlAll {
            record: killed,
            version,
        });
    }

    /// Starts the channel and runs its first video's render, which
    /// succeeds: its upload goes out. The render's job.
    /// Starts the channel with a lease that runs out 5 s in, and runs its
    /// first video's render to 9 s: past the lease it knows. The render's
    /// job, not finished yet.
    fn render_past_the_known_lease(&mut self) -> actors::protocol::JobSpec {
        self.lease_valid_until_ms = T0 + 5_000;
        self.start();
        self.advance_to(T0 + 1);
        let job = started_jobs(&self.take_log()).remove(0);
        self.now += 9_000;
        job
    }

    fn render_first_video(&mut self) -> actors::protocol::JobSpec {
        self.start();
        self.advance_to(T0 + 1);
        let job = started_jobs(&self.take_log()).remove(0);
        self.input(ChannelInput::JobFinished {
            id: job.id,
            outcome: JobOutcome::Succeeded { cost_micros: 9_000 },
        });
        job
    }
}

fn started_jobs(log: &[ChannelEffect]) -> Vec<actors::protocol::JobSpec> {
    log.iter()
        .filter_map(|e| match e {
            ChannelEffect::StartJob(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_job_starts_only_after_its_charge_is_durable() {
    let mut h = Harness::new();
    // The first slot (09:00) is planned at once, with the 30 min lead.
    h.start();
    h.advance_to(T0 + 1);
    let jobs = started_jobs(&h.take_log());
    assert_eq!(jobs.len(), 1, "one render starts");
    let job = &jobs[0];
    // When the start went out, the store already held the charge.
    let rec = h.video(job.id.slot).expect("the video is recorded");
    assert_eq!(rec.held_micros, 10_000, "10 s at $3.6/h, charged up front");
    let chan = ChannelRecord::decode(h.store.value(&channel_key(CH)).expect("channel record"))
        .expect("decodes");
    assert_eq!(chan.spent_total_micros, 10_000);
}

#[test]
fn an_upload_starts_only_with_quota_reserved_and_intent_recorded() {
    let mut h = Harness::new();
    h.start();
    h.advance_to(T0 + 1);
    let job = started_jobs(&h.take_log()).remove(0);
    h.now += 9_000;
    h.input(ChannelInput::JobFinished {
        id: job.id,
        outcome: JobOutcome::Succeeded { cost_micros: 9_000 },
    });
    let log = h.take_log();
    assert!(log
        .iter()
        .any(|e| matches!(e, ChannelEffect::Publish { attempt: 1, .. })));
    let rec = h.video(job.id.slot).expect("recorded");
    assert!(rec.publish_intent, "intent recorded before the upload");
    assert_eq!(rec.cost_micros, 9_000, "the charge settled to what it cost");
    assert_eq!(h.quota_used(), 51, "upload 1 + thumbnail 50 reserved");
}

/// The lease known from the last answer ran out while the render ran, and
/// the node renewed it meanwhile. The finished render asks again; its
/// record waits for the answer, and goes in the commit that reserves the
/// upload: one commit, not one for the render and one for the reservation.
#[test]
fn the_last_stage_and_the_upload_reservation_commit_together() {
    let mut h = Harness::new();
    let job = h.render_past_the_known_lease();
    h.lease_valid_until_ms = u64::MAX / 2; // renewed
    let before = h.store.version();
    h.input(ChannelInput::JobFinished {
        id: job.id,
        outcome: JobOutcome::Succeeded { cost_micros: 9_000 },
    });
    assert!(h
        .take_log()
        .iter()
        .any(|e| matches!(e, ChannelEffect::Publish { attempt: 1, .. })));
    assert_eq!(h.store.version(), before + 1, "one commit");
    let rec = h.video(job.id.slot).expect("recorded");
    assert_eq!(rec.stage, 1, "the render's result is durable");
    assert!(rec.publish_intent, "and the intent with it");
    assert_eq!(h.quota_used(), 51);
}

/// With no answer to the ask, the finished render is committed alone at
/// the ask's interval, and the machine sleeps until then.
#[test]
fn an_unanswered_lease_ask_holds_a_commit_for_its_interval_only() {
    let mut h = Harness::new();
    let job = h.render_past_the_known_lease();
    h.ignore_lease_asks = true;
    let before = h.store.version();
    h.input(ChannelInput::JobFinished {
        id: job.id,
        outcome: JobOutcome::Succeeded { cost_micros: 9_000 },
    });
    assert_eq!(h.store.version(), before, "held for the answer");
    let asked = h.now;
    assert!(
        h.m.next_deadline().is_some_and(|d| d >= asked + 250),
        "asleep, not polling: {:?}",
        h.m.next_deadline()
    );
    h.advance_to(asked + actors::channel::LEASE_ASK_INTERVAL_MS - 1);
    assert_eq!(h.store.version(), before, "held until the ask's interval");
    h.advance_to(asked + actors::channel::LEASE_ASK_INTERVAL_MS);
    assert_eq!(h.store.version(), before + 1, "committed alone");
    let rec = h.video(job.id.slot).expect("recorded");
    assert_eq!(rec.stage, 1, "the render's result is durable");
    assert!(!rec.publish_intent, "no reservation on an unknown lease");
}

#[test]
fn a_lost_upload_response_is_looked_up_before_any_retry() {
    let mut h = Harness::new();
    let job = h.render_first_video();
    h.take_log();
    // No answer to the upload: after its timeout the outcome is unknown.
    h.advance_to(h.now + 31_000);
    let log = h.take_log();
    assert!(
        !log.iter()
            .any(|e| matches!(e, ChannelEffect::Publish { .. })),
        "no blind retry"
    );
    assert!(
        log.iter()
            .any(|e| matches!(e, ChannelEffect::Lookup { .. })),
        "{log:?}"
    );
    assert_eq!(h.quota_used(), 52, "the lookup's unit is reserved too");
    // The API never got it: the reservation comes back and it uploads again.
    h.input(ChannelInput::LookupResult {
        slot: job.id.slot,
        outcome: LookupOutcome::NotFound,
    });
    h.advance_to(h.now + 1_000);
    let log = h.take_log();
    assert!(
        log.iter()
            .any(|e| matches!(e, ChannelEffect::Publish { attempt: 2, .. })),
        "{log:?}"
    );
    assert_eq!(h.quota_used(), 52, "refunded 51, reserved 51 again");
    h.input(ChannelInput::PublishResult {
        slot: job.id.slot,
        attempt: 2,
        outcome: PublishOutcome::Published {
            remote_id: "yt-1".into(),
        },
    });
    let rec = h.video(job.id.slot).expect("recorded");
    assert_eq!(
        rec.status,
        VideoStatus::Published {
            remote_id: "yt-1".into()
        }
    );
    assert!(
        h.store.value(&active_key(CH, job.id.slot)).is_none(),
        "moved to done"
    );
}

#[test]
fn a_definite_upload_failure_refunds_and_retries_with_backoff() {
    let mut h = Harness::new();
    let job = h.render_first_video();
    h.take_log();
    h.input(ChannelInput::PublishResult {
        slot: job.id.slot,
        attempt: 1,
        outcome: PublishOutcome::Transient,
    });
    assert_eq!(h.quota_used(), 0, "a 5xx gives the quota back");
    assert!(
        !h.take_log()
            .iter()
            .any(|e| matches!(e, ChannelEffect::Publish { .. })),
        "not at once"
    );
    h.advance_to(h.now + 2_000);
    assert!(h
        .take_log()
        .iter()
        .any(|e| matches!(e, ChannelEffect::Publish { attempt: 2, .. })));
}

#[test]
fn after_losing_ownership_nothing_more_is_written_or_started() {
    let mut h = Harness::new();
    h.start();
    h.advance_to(T0 + 1);
    let job = started_jobs(&h.take_log()).remove(0);
    // Another node claims the channel (the fence moves on).
    let theirs = OwnerRecord {
        node: Some(NodeId(9)),
        epoch: 2,
        incarnation: 1,
    };
    h.store
        .commit(&Txn {
            checks: vec![],
            writes: vec![Write::Put(owner_key(CH), theirs.encode())],
        })
        .expect("claim");
    let before = h.video(job.id.slot).expect("recorded");
    h.input(ChannelInput::JobFinished {
        id: job.id,
        outcome: JobOutcome::Succeeded { cost_micros: 9_000 },
    });
    let log = h.take_log();
    assert!(
        log.iter().any(|e| matches!(e, ChannelEffect::Fenced)),
        "{log:?}"
    );
    assert!(!log
        .iter()
        .any(|e| matches!(e, ChannelEffect::Publish { .. })));
    assert_eq!(
        h.video(job.id.slot),
        Some(before),
        "the record is untouched"
    );
    h.advance_to(h.now + 3_600_000);
    assert!(started_jobs(&h.take_log()).is_empty());
}

#[test]
fn the_kill_switch_cancels_running_work_and_fails_the_video() {
    let mut h = Harness::new();
    h.start();
    h.advance_to(T0 + 1);
    let job = started_jobs(&h.take_log()).remove(0);
    h.kill_switch();
    let log = h.take_log();
    assert!(
        log.iter()
            .any(|e| matches!(e, ChannelEffect::CancelJob { id, .. } if *id == job.id)),
        "{log:?}"
    );
    assert_eq!(
        h.video(job.id.slot).map(|r| r.status),
        Some(VideoStatus::Failed(FailReason::Killed))
    );
    h.advance_to(h.now + 3_600_000);
    assert!(
        started_jobs(&h.take_log()).is_empty(),
        "nothing starts after the kill"
    );
}

#[test]
fn a_commit_written_before_a_pause_it_did_not_know_about_is_refused() {
    let mut h = Harness::new();
    // Loaded at 09:00:01: the next slot is 10:00, planned at 09:30.
    h.now = T0 + 1;
    h.start();
    assert!(started_jobs(&h.take_log()).is_empty());
    // A pause is durable but this node has not heard of it yet.
    h.store
        .commit(&Txn {
            checks: vec![],
            writes: vec![Write::Put(
                control_key(CH),
                ControlRecord {
                    paused: true,
                    killed: false,
                }
                .encode(),
            )],
        })
        .expect("pause");
    h.advance_to(T0 + 40 * 60_000);
    // Its write fails the control check, it reads the pause, and starts nothing.
    assert!(started_jobs(&h.take_log()).is_empty());
    assert!(h.m.control().paused);
    // The plan itself went through on the retry: planned, not started.
    let prefix = active_prefix(CH);
    let planned: Vec<VideoRecord> = h
        .store
        .scan(&prefix, &actors::store::prefix_end(&prefix))
        .filter_map(|(_, v, _)| VideoRecord::decode(v).ok())
        .collect();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].attempt, 0);
}

#[test]
fn a_stored_video_past_the_stored_next_slot_is_not_planned_twice() {
    let mut h = Harness::new();
    h.start();
    h.advance_to(T0 + 1);
    let stored = h.store.value(&channel_key(CH)).expect("channel record");
    let mut chan = ChannelRecord::decode(stored).expect("decodes");
    let slot = chan.next_slot - 1;
    assert!(h.video(slot).is_some(), "the 09:00 video is stored");
    // The channel record says the 09:00 slot was never planned (a restore
    // from a backup taken between two writes, say), yet its video exists.
    chan.next_slot = slot;
    let owner = OwnerRecord {
        node: Some(NodeId(0)),
        epoch: 2,
        incarnation: 1,
    };
    h.store
        .commit(&Txn {
            checks: vec![],
            writes: vec![
                Write::Put(channel_key(CH), chan.encode()),
                Write::Put(owner_key(CH), owner.encode()),
            ],
        })
        .expect("rewind the channel record");
    // A new owner loads both: it plans past the stored video, not over it.
    h.m = ChannelMachine::new(topology(), CH, NodeId(0), 2, 1, ChannelParams::default(), 7);
    h.take_log();
    h.start();
    h.advance_to(T0 + 2);
    let after =
        ChannelRecord::decode(h.store.value(&channel_key(CH)).expect("record")).expect("decodes");
    assert_eq!(
        after.next_slot,
        slot + 1,
        "next_slot moves past the stored video"
    );
    assert_eq!(h.video(slot).map(|v| v.slot), Some(slot));
}

#[test]
fn a_start_committed_as_the_kill_arrives_gives_its_charge_back() {
    let mut h = Harness::new();
    // The start's commit is durable, but its reply is slow.
    h.hold_commit_replies = true;
    h.start();
    h.advance_to(T0 + 1);
    assert_eq!(h.held_replies.len(), 1, "the plan-and-start commit");
    let spent = |h: &Harness| {
        let v = h.store.value(&channel_key(CH)).expect("channel record");
        ChannelRecord::decode(v).expect("decodes").spent_day_micros
    };
    assert!(spent(&h) > 0, "the start's charge is durable");
    h.kill_switch();
    // The reply arrives after the kill: the job never starts, its charge
    // goes back, and the video fails as killed.
    h.hold_commit_replies = false;
    for (op_id, reply) in std::mem::take(&mut h.held_replies) {
        h.input(ChannelInput::StoreReply { op_id, reply });
    }
    h.advance_to(h.now + 60_000);
    assert!(started_jobs(&h.take_log()).is_empty());
    let slot = ChannelRecord::decode(h.store.value(&channel_key(CH)).expect("record"))
        .expect("decodes")
        .next_slot
        - 1;
    let video = h.video(slot).expect("the video");
    assert_eq!(video.status, VideoStatus::Failed(FailReason::Killed));
    assert_eq!(video.held_micros, 0);
    assert_eq!(spent(&h), 0, "nothing ran, so nothing is spent");
}

#[test]
fn a_start_answered_after_the_lease_ran_out_waits_for_a_good_lease() {
    let mut h = Harness::new();
    h.lease_valid_until_ms = T0 + 500;
    // The start's commit is durable, but its reply comes after the lease
    // ran out (a frozen or cut-off process; swarm seed 17376).
    h.hold_commit_replies = true;
    h.start();
    h.advance_to(T0 + 1);
    assert_eq!(h.held_replies.len(), 1, "the plan-and-start commit");
    h.advance_to(T0 + 60_000);
    h.hold_commit_replies = false;
    for (op_id, reply) in std::mem::take(&mut h.held_replies) {
        h.input(ChannelInput::StoreReply { op_id, reply });
    }
    h.advance_to(h.now + 1_000);
    assert!(
        started_jobs(&h.take_log()).is_empty(),
        "a job started on a lapsed lease"
    );
    // The lease comes back (the node was not removed): the committed start
    // runs, as its first attempt, without being committed again.
    h.lease_valid_until_ms = u64::MAX / 2;
    h.advance_to(h.now + 60_000);
    let started = started_jobs(&h.take_log());
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(
        started[0].id.attempt, 1,
        "the held start gave its attempt back"
    );
}

/// A release asked while an upload is in flight waits for the upload, and
/// waits asleep: the machine's next tick is the upload's deadline, not the
/// next millisecond (a node draining while uploads ran ticked each of
/// their channels every millisecond until they settled).
#[test]
fn a_release_waiting_for_an_upload_sleeps_until_the_upload_settles() {
    let mut h = Harness::new();
    let job = h.render_first_video();
    let log = h.take_log();
    assert!(log
        .iter()
        .any(|e| matches!(e, ChannelEffect::Publish { attempt: 1, .. })));
    let sent = h.now;
    h.input(ChannelInput::Release);
    let deadline = h.m.next_deadline().expect("the upload's deadline");
    let timeout = ChannelParams::default().publish_timeout_ms;
    assert!(
        deadline >= sent + timeout,
        "woken {} ms after the release, before the upload's timeout of {timeout} ms",
        deadline - sent
    );
    let mut ticks = 0;
    while h.m.next_deadline().is_some_and(|d| d < sent + timeout / 2) {
        h.advance_to(h.m.next_deadline().unwrap_or(sent));
        ticks += 1;
        assert!(ticks < 100, "ticked {ticks} times while the upload ran");
    }
    assert!(
        !h.take_log()
            .iter()
            .any(|e| matches!(e, ChannelEffect::Released)),
        "released with the upload in flight"
    );
    h.now = sent + timeout / 2;
    h.input(ChannelInput::PublishResult {
        slot: job.id.slot,
        attempt: 1,
        outcome: PublishOutcome::Published {
            remote_id: "yt-1".into(),
        },
    });
    let log = h.take_log();
    assert!(
        log.iter().any(|e| matches!(e, ChannelEffect::Released)),
        "released once the upload settled: {log:?}"
    );
    let rec = h.video(job.id.slot).expect("recorded");
    assert!(matches!(rec.status, VideoStatus::Published { .. }));
}

impl Harness {
    /// Runs the first video's render; its upload's reservation is built
    /// while the lease known here is good for 450 ms, and committed, but
    /// its answer comes 400 ms later, when that lease has 50 ms left (a
    /// store slower than the reserve window; swarm seed 351293). Returns
    /// the video's slot.
    fn reserve_upload_answered_as_the_lease_ends(&mut self) -> u64 {
        self.start();
        self.advance_to(T0 + 1);
        let job = started_jobs(&self.take_log()).remove(0);
        self.now = T0 + 9_000;
        self.lease_valid_until_ms = self.now + 450;
        self.hold_commit_replies = true;
        self.input(ChannelInput::JobFinished {
            id: job.id,
            outcome: JobOutcome::Succeeded { cost_micros: 9_000 },
        });
        // The settle's commit, then the reservation's (its reply held).
        for _ in 0..3 {
            if self.quota_used() > 0 {
                break;
            }
            for (op_id, reply) in std::mem::take(&mut self.held_replies) {
                self.input(ChannelInput::StoreReply { op_id, reply });
            }
        }
        assert_eq!(self.held_replies.len(), 1, "the reservation's commit");
        assert_eq!(self.quota_used(), 51, "the reservation is durable");
        self.now += 400;
        self.hold_commit_replies = false;
        for (op_id, reply) in std::mem::take(&mut self.held_replies) {
            self.input(ChannelInput::StoreReply { op_id, reply });
        }
        job.id.slot
    }
}

fn uploads(log: &[ChannelEffect]) -> Vec<u32> {
    log.iter()
        .filter_map(|e| match e {
            ChannelEffect::Publish { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

/// A reservation answered when the lease known here is about to run out is
/// held, durable, for a lease known good now, and uploads then without
/// being reserved again. (Giving it back and reserving again livelocked
/// where every commit took longer than the reserve window.)
#[test]
fn a_reservation_answered_as_the_lease_ends_is_held_for_a_good_lease() {
    let mut h = Harness::new();
    let slot = h.reserve_upload_answered_as_the_lease_ends();
    h.advance_to(h.now + 2_000);
    assert!(
        uploads(&h.take_log()).is_empty(),
        "uploaded on a lapsed lease"
    );
    assert_eq!(h.quota_used(), 51, "the reservation is kept, not refunded");
    assert!(h.video(slot).expect("recorded").publish_intent);
    // The node's renewed lease arrives: the upload goes, as its first
    // attempt, on the reservation already durable.
    h.lease_valid_until_ms = u64::MAX / 2;
    h.input(ChannelInput::Lease {
        valid_until_ms: h.lease_valid_until_ms,
    });
    assert_eq!(uploads(&h.take_log()), vec![1]);
    assert_eq!(h.quota_used(), 51);
}

/// A held upload sent nothing: the kill switch gives its reservation back
/// and fails the video, and a release gives it back for the next owner.
#[test]
fn a_held_upload_is_given_back_at_a_kill_or_a_release() {
    let mut h = Harness::new();
    let slot = h.reserve_upload_answered_as_the_lease_ends();
    h.kill_switch();
    h.lease_valid_until_ms = u64::MAX / 2;
    h.advance_to(h.now + 2_000);
    assert!(uploads(&h.take_log()).is_empty(), "uploaded after the kill");
    assert_eq!(h.quota_used(), 0, "the reservation came back");
    let rec = h.video(slot).expect("recorded");
    assert_eq!(rec.status, VideoStatus::Failed(FailReason::Killed));
    assert!(!rec.publish_intent);

    let mut h = Harness::new();
    let slot = h.reserve_upload_answered_as_the_lease_ends();
    h.input(ChannelInput::Release);
    h.advance_to(h.now + 2_000);
    let log = h.take_log();
    assert!(uploads(&log).is_empty(), "uploaded while releasing");
    assert!(log.iter().any(|e| matches!(e, ChannelEffect::Released)));
    assert_eq!(h.quota_used(), 0, "the reservation came back");
    let rec = h.video(slot).expect("recorded");
    assert!(!rec.publish_intent);
    assert_eq!(rec.status, VideoStatus::Active, "left for the next owner");
}
