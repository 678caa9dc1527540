//! `GpuMachine`: one GPU's admission, queue and job leases.
//!
//! How to drive it: feed [`GpuInput::Submit`] for jobs the region dispatcher
//! sends, [`GpuInput::Finished`] when the hardware (or executor) reports a
//! job's end, and `Tick` at `next_deadline()`. Effects: `Run`/`Kill` go to the
//! hardware, `Notify` to the job's owner node, `Report` to the dispatcher.
//! Time only moves forward.
//!
//! Architecture invariant: the memory of the running jobs never exceeds the
//! GPU's memory (checked on every admission with `debug_assert!`, and by the
//! simulator's hardware model).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use topology::{GpuId, Micros, NodeId};

use crate::protocol::{JobFailure, JobId, JobOutcome, JobSpec, LoadReport};
use crate::sabotage::Sabotage;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
pub struct GpuParams {
    /// Least time between two load reports.
    pub report_interval_ms: u64,
    /// A report goes out at least this often, changed or not, so that a new
    /// dispatcher learns of the GPU and a stale one notices it is gone.
    pub heartbeat_ms: u64,
    /// Jobs waiting beyond this many are refused (bounded queue).
    pub queue_jobs_max: usize,
    /// A job queued here longer than this (on this GPU's clock, from its
    /// arrival) is dropped unrun: the channel that asked has given up on it
    /// by then (its dispatch timeout, which this equals, started before the
    /// job arrived) and asked again. Run, such a job would hold the GPU for
    /// nobody while the jobs behind it time out in turn: under a backlog
    /// the queue fills with the abandoned (swarm seed 72283).
    pub queue_wait_max_ms: u64,
    // Never recorded: a replayed machine runs with every switch off.
    #[serde(skip)]
    pub sabotage: Sabotage,
}

impl Default for GpuParams {
    fn default() -> Self {
        GpuParams {
            report_interval_ms: 1_000,
            heartbeat_ms: 60_000,
            queue_jobs_max: 256,
            queue_wait_max_ms: 120_000,
            sabotage: Sabotage::default(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum GpuInput {
    Submit(JobSpec),
    Cancel(JobId),
    Finished {
        id: JobId,
        ok: bool,
    },
    Drain,
    /// Report now, whatever changed: a new dispatcher is listening.
    ReportNow,
    Tick,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum GpuNotice {
    Started { id: JobId, gpu: GpuId },
    Finished { id: JobId, outcome: JobOutcome },
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum GpuEffect {
    /// Start the job on the hardware; it must end by `lease_until_ms`.
    Run {
        job: JobSpec,
        lease_until_ms: u64,
    },
    Kill {
        id: JobId,
    },
    Notify {
        to: NodeId,
        notice: GpuNotice,
    },
    Report(LoadReport),
}

#[derive(Clone, Debug)]
struct Running {
    spec: JobSpec,
    started_ms: u64,
    lease_until_ms: u64,
}

pub struct GpuMachine {
    id: GpuId,
    memory_bytes: u64,
    cost_per_hour_micros: Micros,
    params: GpuParams,
    free_bytes: u64,
    running: BTreeMap<JobId, Running>,
    /// Waiting jobs in admission order: priority first, then arrival;
    /// with the time each arrived.
    queue: Vec<(u8, u64, JobSpec, u64)>,
    arrivals: u64,
    draining: bool,
    /// Jobs that ended here lately: a duplicate delivery must not run twice.
    recent: BTreeSet<JobId>,
    recent_order: VecDeque<JobId>,
    report_due: bool,
    last_report_ms: Option<u64>,
    deadline: Option<u64>,
    /// Time only moves forward.
    clock: crate::machine::Monotonic,
}

impl GpuMachine {
    pub fn new(
        id: GpuId,
        memory_bytes: u64,
        cost_per_hour_micros: Micros,
        params: GpuParams,
    ) -> GpuMachine {
        assert!(memory_bytes > 0, "{id} has no memory");
        assert!(params.queue_jobs_max > 0 && params.report_interval_ms > 0);
        assert!(
            params.queue_wait_max_ms > 0,
            "{id}: a queued job must be allowed to wait"
        );
        GpuMachine {
            id,
            memory_bytes,
            cost_per_hour_micros,
            params,
            free_bytes: memory_bytes,
            running: BTreeMap::new(),
            queue: Vec::new(),
            arrivals: 0,
            draining: false,
            recent: BTreeSet::new(),
            recent_order: VecDeque::new(),
            report_due: true,
            last_report_ms: None,
            deadline: None,
            clock: crate::machine::Monotonic::default(),
        }
    }

    pub fn id(&self) -> GpuId {
        self.id
    }

    /// Running and queued jobs, for people debugging a seed.
    pub fn describe(&self) -> String {
        format!(
            "{}: free {} of {} B, draining {}, running {:?}, queued {:?}",
            self.id,
            self.free_bytes,
            self.memory_bytes,
            self.draining,
            self.running.keys().collect::<Vec<_>>(),
            self.queue
                .iter()
                .map(|(_, _, j, _)| j.id)
                .collect::<Vec<_>>()
        )
    }
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }
    pub fn running_jobs(&self) -> usize {
        self.running.len()
    }
    pub fn queued_jobs(&self) -> usize {
        self.queue.len()
    }
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    pub fn handle(&mut self, now_ms: u64, input: GpuInput, out: &mut Vec<GpuEffect>) {
        self.clock.advance(now_ms, "GPU machine");
        match input {
            GpuInput::Submit(job) => self.submit(now_ms, job, out),
            GpuInput::Cancel(id) => {
                if let Some(r) = self.running.remove(&id) {
                    probe!(GpuCancelRunning);
                    self.free_bytes += r.spec.gpu_memory_bytes;
                    out.push(GpuEffect::Kill { id });
                }
                self.queue.retain(|(_, _, j, _)| j.id != id);
                self.remember(id);
                self.report_due = true;
            }
            GpuInput::Finished { id, ok } => {
                if let Some(r) = self.running.remove(&id) {
                    self.free_bytes += r.spec.gpu_memory_bytes;
                    let cost_micros = self.cost_of(&r, now_ms);
                    let outcome = if ok {
                        JobOutcome::Succeeded { cost_micros }
                    } else {
                        JobOutcome::Failed {
                            failure: JobFailure::GpuFault,
                            retryable: true,
                            cost_micros,
                        }
                    };
                    out.push(GpuEffect::Notify {
                        to: r.spec.owner,
                        notice: GpuNotice::Finished { id, outcome },
                    });
                    self.report_due = true;
                }
            }
            GpuInput::Drain => {
                self.draining = true;
                // Queued work goes back to its owners to be placed elsewhere.
                for (_, _, job, _) in std::mem::take(&mut self.queue) {
                    out.push(GpuEffect::Notify {
                        to: job.owner,
                        notice: GpuNotice::Finished {
                            id: job.id,
                            outcome: JobOutcome::Failed {
                                failure: JobFailure::Cancelled,
                                retryable: true,
                                cost_micros: 0,
                            },
                        },
                    });
                }
                self.report_due = true;
            }
            GpuInput::ReportNow => {
                self.report_due = true;
                self.last_report_ms = None;
            }
            GpuInput::Tick => {}
        }
        self.expire_queued(now_ms);
        self.expire_leases(now_ms, out);
        self.admit(now_ms, out);
        self.report(now_ms, out);
        self.deadline = self.compute_deadline();
        self.assert_memory_accounting();
    }

    /// The free memory is the memory less what the running jobs hold.
    fn assert_memory_accounting(&self) {
        if self.params.sabotage.no_vram_admission {
            return;
        }
        let held: u64 = self.running.values().map(|r| r.spec.gpu_memory_bytes).sum();
        assert_eq!(
            self.free_bytes + held,
            self.memory_bytes,
            "{}: free memory and the running jobs disagree",
            self.id
        );
        assert!(
            self.queue.len() <= self.params.queue_jobs_max,
            "{}: queue over its limit",
            self.id
        );
    }

    /// What the job cost: the tier's fixed price plus GPU time, counted at
    /// most to the lease (a job is never billed past its lease).
    fn cost_of(&self, r: &Running, now_ms: u64) -> u64 {
        assert!(
            r.lease_until_ms >= r.started_ms,
            "a lease ends after its start"
        );
        let held_ms = now_ms
            .saturating_sub(r.started_ms)
            .min(r.lease_until_ms - r.started_ms);
        r.spec.fixed_cost_micros + self.cost_per_hour_micros * held_ms / 3_600_000
    }

    fn submit(&mut self, now_ms: u64, job: JobSpec, out: &mut Vec<GpuEffect>) {
        let refuse = |failure, retryable| GpuEffect::Notify {
            to: job.owner,
            notice: GpuNotice::Finished {
                id: job.id,
                outcome: JobOutcome::Failed {
                    failure,
                    retryable,
                    cost_micros: 0,
                },
            },
        };
        if self.running.contains_key(&job.id)
            || self.recent.contains(&job.id)
            || self.queue.iter().any(|(_, _, j, _)| j.id == job.id)
        {
            probe!(GpuDuplicateSubmit);
            return; // a duplicate delivery
        }
        if job.gpu_memory_bytes > self.memory_bytes {
            out.push(refuse(JobFailure::NoCapacity, true));
            return;
        }
        if self.draining || self.queue.len() >= self.params.queue_jobs_max {
            probe!(GpuQueueFull);
            out.push(refuse(JobFailure::Cancelled, true));
            return;
        }
        self.arrivals += 1;
        let key = (u8::MAX - queue_rank(&job), self.arrivals);
        let at = self.queue.partition_point(|(p, a, _, _)| (*p, *a) <= key);
        self.queue.insert(at, (key.0, key.1, job, now_ms));
        self.report_due = true;
    }

    fn remember(&mut self, id: JobId) {
        const RECENT_JOBS_MAX: usize = 4096;
        if self.recent.insert(id) {
            self.recent_order.push_back(id);
        }
        while self.recent_order.len() > RECENT_JOBS_MAX {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    fn admit(&mut self, now_ms: u64, out: &mut Vec<GpuEffect>) {
        if self.draining {
            return;
        }
        // Strict order: the head waits for room rather than be overtaken,
        // so large jobs never starve.
        while let Some((_, _, head, _)) = self.queue.first() {
            let fits = head.gpu_memory_bytes <= self.free_bytes;
            if !fits && !self.params.sabotage.no_vram_admission {
                break;
            }
            let (_, _, job, _) = self.queue.remove(0);
            self.remember(job.id);
            self.free_bytes = self.free_bytes.wrapping_sub(job.gpu_memory_bytes);
            if !self.params.sabotage.no_vram_admission {
                debug_assert!(self.free_bytes <= self.memory_bytes, "over-committed");
            } else if self.free_bytes > self.memory_bytes {
                self.free_bytes = 0;
            }
            let lease_until_ms = now_ms + job.duration.max_ms();
            assert!(
                !self.running.contains_key(&job.id),
                "{}: {:?} admitted twice",
                self.id,
                job.id
            );
            out.push(GpuEffect::Notify {
                to: job.owner,
                notice: GpuNotice::Started {
                    id: job.id,
                    gpu: self.id,
                },
            });
            out.push(GpuEffect::Run {
                job: job.clone(),
                lease_until_ms,
            });
            self.running.insert(
                job.id,
                Running {
                    spec: job,
                    started_ms: now_ms,
                    lease_until_ms,
                },
            );
            self.report_due = true;
        }
    }

    /// Drops the queued jobs whose owners have given up on them (see
    /// `GpuParams::queue_wait_max_ms`); each is remembered, so that a late
    /// duplicate of its submit is not queued again.
    fn expire_queued(&mut self, now_ms: u64) {
        let max = self.params.queue_wait_max_ms;
        let before = self.queue.len();
        let mut expired = Vec::new();
        self.queue.retain(|(_, _, j, at)| {
            let keep = now_ms.saturating_sub(*at) <= max;
            if !keep {
                expired.push(j.id);
            }
            keep
        });
        for id in expired {
            probe!(GpuQueuedJobExpired);
            self.remember(id);
            self.report_due = true;
        }
        assert!(self.queue.len() <= before);
        assert!(self
            .queue
            .iter()
            .all(|(_, _, _, at)| now_ms.saturating_sub(*at) <= max));
    }

    fn expire_leases(&mut self, now_ms: u64, out: &mut Vec<GpuEffect>) {
        let before = self.running.len();
        let expired: Vec<JobId> = self
            .running
            .iter()
            .filter(|(_, r)| r.lease_until_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(r) = self.running.remove(&id) {
                probe!(GpuLeaseExpired);
                self.free_bytes += r.spec.gpu_memory_bytes;
                out.push(GpuEffect::Kill { id });
                let cost_micros = self.cost_of(&r, now_ms);
                out.push(GpuEffect::Notify {
                    to: r.spec.owner,
                    notice: GpuNotice::Finished {
                        id,
                        outcome: JobOutcome::Failed {
                            failure: JobFailure::LeaseExpired,
                            retryable: true,
                            cost_micros,
                        },
                    },
                });
                self.report_due = true;
            }
        }
        assert!(self.running.len() <= before);
        assert!(self.running.values().all(|r| r.lease_until_ms > now_ms));
    }

    fn est_wait_ms(&self, now_ms: u64) -> u64 {
        if self.queue.is_empty() {
            return 0;
        }
        let soonest_free = self
            .running
            .values()
            .map(|r| r.started_ms + r.spec.duration.mean_ms)
            .min()
            .map(|t| t.saturating_sub(now_ms))
            .unwrap_or(0);
        let queued: u64 = self
            .queue
            .iter()
            .map(|(_, _, j, _)| j.duration.mean_ms)
            .sum();
        let parallel = (self.running.len() as u64).max(1);
        soonest_free + queued / parallel
    }

    fn report(&mut self, now_ms: u64, out: &mut Vec<GpuEffect>) {
        let due_at = self
            .last_report_ms
            .map(|t| t + self.params.report_interval_ms)
            .unwrap_or(0);
        let heartbeat_at = self
            .last_report_ms
            .map(|t| t + self.params.heartbeat_ms)
            .unwrap_or(0);
        if (!self.report_due || now_ms < due_at) && now_ms < heartbeat_at {
            return;
        }
        self.report_due = false;
        self.last_report_ms = Some(now_ms);
        out.push(GpuEffect::Report(LoadReport {
            gpu: self.id,
            free_bytes: self.free_bytes,
            total_bytes: self.memory_bytes,
            running: self.running.len() as u32,
            queued: self.queue.len() as u32,
            est_wait_ms: self.est_wait_ms(now_ms),
            draining: self.draining,
            cost_per_hour_micros: self.cost_per_hour_micros,
        }));
    }

    fn compute_deadline(&self) -> Option<u64> {
        // The earliest of: a running job's lease, a queued job's expiry.
        let expiry = self
            .queue
            .iter()
            .map(|(_, _, _, at)| at + self.params.queue_wait_max_ms + 1)
            .min();
        let lease = self
            .running
            .values()
            .map(|r| r.lease_until_ms)
            .chain(expiry)
            .min();
        let last = self.last_report_ms.unwrap_or(0);
        let report = if self.report_due {
            last + self.params.report_interval_ms
        } else {
            last + self.params.heartbeat_ms
        };
        Some(lease.map_or(report, |l| l.min(report)))
    }
}

/// Where a job queues: by its priority raised by one for each earlier
/// attempt of its stage (aging), then by arrival. Without the raise, a
/// low-priority job under a backlog is overtaken until its queue wait
/// runs out (`queue_wait_max_ms`), is asked again at the back, and can be
/// overtaken again for as long as higher-priority work keeps coming
/// (swarm seed 72283: a priority-0 video lost its render eight times,
/// at least five of them after the heal, while the priority-1 and -2
/// channels' jobs went ahead). With it, a job that waited in vain moves up a level each time, so
/// none waits for ever behind work that came later.
fn queue_rank(job: &JobSpec) -> u8 {
    let earlier = job.id.attempt.saturating_sub(1);
    job.priority
        .saturating_add(u8::try_from(earlier).unwrap_or(u8::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use topology::{ChannelId, DurationModel, RegionId, GIB};

    fn job(slot: u64, gib: u64) -> JobSpec {
        JobSpec {
            id: JobId {
                channel: ChannelId(0),
                slot,
                stage: 0,
                attempt: 1,
                epoch: 1,
            },
            owner: NodeId(0),
            kind: crate::protocol::JobKind::Gpu,
            gpu_memory_bytes: gib * GIB,
            duration: DurationModel {
                mean_ms: 1000,
                jitter_ms: 0,
            },
            fixed_cost_micros: 0,
            priority: 0,
            home_region: RegionId(0),
            budget_day: 0,
            hops: 0,
        }
    }

    fn runs(out: &[GpuEffect]) -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                GpuEffect::Run { job, .. } => Some(job.id.slot),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn admits_while_memory_allows_and_queues_the_rest() {
        let mut g = GpuMachine::new(GpuId(0), 24 * GIB, 0, GpuParams::default());
        let mut out = Vec::new();
        g.handle(0, GpuInput::Submit(job(1, 16)), &mut out);
        g.handle(0, GpuInput::Submit(job(2, 16)), &mut out);
        g.handle(0, GpuInput::Submit(job(3, 4)), &mut out);
        // Job 2 does not fit; job 3 waits behind it rather than overtake.
        assert_eq!(runs(&out), vec![1]);
        assert_eq!(g.queued_jobs(), 2);
        out.clear();
        g.handle(
            900,
            GpuInput::Finished {
                id: job(1, 16).id,
                ok: true,
            },
            &mut out,
        );
        assert_eq!(runs(&out), vec![2, 3]);
        assert_eq!(g.free_bytes(), 4 * GIB);
    }

    /// Higher priority first; a job asked again after waiting in vain
    /// moves up a level per earlier attempt, so it is not overtaken for
    /// ever by later work of a higher priority.
    #[test]
    fn a_job_asked_again_moves_up_the_queue() {
        let mut g = GpuMachine::new(GpuId(0), 24 * GIB, 0, GpuParams::default());
        let mut out = Vec::new();
        let with = |slot, priority, attempt| {
            let mut j = job(slot, 16);
            j.priority = priority;
            j.id.attempt = attempt;
            j
        };
        g.handle(0, GpuInput::Submit(with(1, 0, 1)), &mut out);
        // Queued behind the running job 1, in the order they go.
        g.handle(0, GpuInput::Submit(with(2, 0, 1)), &mut out);
        g.handle(0, GpuInput::Submit(with(3, 1, 1)), &mut out);
        g.handle(0, GpuInput::Submit(with(4, 0, 3)), &mut out);
        g.handle(0, GpuInput::Submit(with(5, 2, 1)), &mut out);
        // Each job runs alone (16 of 24 GiB): finish the running one,
        // see which goes next.
        let mut order = vec![1];
        while order.len() < 5 {
            let (slot, attempt) = match order.last() {
                Some(4) => (4, 3),
                Some(s) => (*s, 1),
                None => unreachable!(),
            };
            out.clear();
            let id = with(slot, 0, attempt).id;
            g.handle(1, GpuInput::Finished { id, ok: true }, &mut out);
            let next = runs(&out);
            assert_eq!(next.len(), 1, "one job at a time: {next:?}");
            order.extend(next);
        }
        // Job 4 (priority 0, third attempt) ranks as priority 2 and came
        // before job 5 (priority 2); the first attempts keep strict
        // priority: 3 (priority 1) before 2 (priority 0).
        assert_eq!(order, vec![1, 4, 5, 3, 2]);
    }

    #[test]
    fn a_job_past_its_lease_is_killed_and_reported() {
        let mut g = GpuMachine::new(GpuId(0), 24 * GIB, 3_600_000, GpuParams::default());
        let mut out = Vec::new();
        g.handle(0, GpuInput::Submit(job(1, 8)), &mut out);
        assert_eq!(g.next_deadline(), Some(1000));
        assert_eq!(g.queued_jobs(), 0);
        out.clear();
        g.handle(1000, GpuInput::Tick, &mut out);
        assert!(out.iter().any(|e| matches!(e, GpuEffect::Kill { .. })));
        assert!(out.iter().any(|e| matches!(
            e,
            GpuEffect::Notify {
                notice: GpuNotice::Finished {
                    outcome: JobOutcome::Failed {
                        failure: JobFailure::LeaseExpired,
                        cost_micros: 1000,
                        ..
                    },
                    ..
                },
                ..
            }
        )));
        assert_eq!(g.free_bytes(), 24 * GIB);
    }

    #[test]
    fn a_job_queued_past_the_dispatch_timeout_is_dropped_unrun() {
        let params = GpuParams {
            queue_wait_max_ms: 10_000,
            ..GpuParams::default()
        };
        // Jobs long enough that no lease runs out in the test.
        let long = |slot| {
            let mut j = job(slot, 20);
            j.duration.mean_ms = 100_000;
            j
        };
        let mut g = GpuMachine::new(GpuId(0), 24 * GIB, 800_000, params);
        let mut out = Vec::new();
        g.handle(0, GpuInput::Submit(long(1)), &mut out);
        g.handle(1_000, GpuInput::Submit(long(2)), &mut out);
        g.handle(9_000, GpuInput::Submit(long(3)), &mut out);
        assert_eq!(g.queued_jobs(), 2);
        // Job 2 waited 10 s: still wanted. At 11.001 s it is not.
        g.handle(11_000, GpuInput::Tick, &mut out);
        assert_eq!(g.queued_jobs(), 2);
        assert!(g.next_deadline().is_some_and(|d| d <= 11_001));
        g.handle(11_001, GpuInput::Tick, &mut out);
        assert_eq!(g.queued_jobs(), 1);
        out.clear();
        // Job 1 ends: job 3 (waited 2 s) runs, job 2 never does, and a late
        // duplicate of job 2's submit is not queued again.
        let done = GpuInput::Finished {
            id: long(1).id,
            ok: true,
        };
        g.handle(11_002, done, &mut out);
        assert_eq!(runs(&out), vec![3]);
        g.handle(11_003, GpuInput::Submit(long(2)), &mut out);
        assert_eq!(g.queued_jobs(), 0);
    }

    #[test]
    fn drain_returns_queued_jobs_and_admits_nothing() {
        let mut g = GpuMachine::new(GpuId(0), 8 * GIB, 0, GpuParams::default());
        let mut out = Vec::new();
        g.handle(0, GpuInput::Submit(job(1, 8)), &mut out);
        g.handle(0, GpuInput::Submit(job(2, 8)), &mut out);
        out.clear();
        g.handle(1, GpuInput::Drain, &mut out);
        assert_eq!(g.queued_jobs(), 0);
        g.handle(
            2,
            GpuInput::Finished {
                id: job(1, 8).id,
                ok: true,
            },
            &mut out,
        );
        assert!(runs(&out).is_empty());
    }
}
