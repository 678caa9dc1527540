//! What nodes say to each other: the node layer's [`NodeMsg`] as frames. Hand-encoded with `actors::codec` (fixed-width little-endian
//! integers, length-prefixed bytes) and decoded strictly: a frame with a
//! wrong tag, a short field or trailing bytes is refused with an error that
//! names the field, and the connection that sent it is closed.

use actors::codec::{DecodeError, Reader, Writer};
use actors::node::NodeMsg;
use actors::protocol::{JobFailure, JobId, JobKind, JobOutcome, JobSpec, LoadReport};
use topology::{ChannelId, DurationModel, GpuId, NodeId, RegionId};

/// Largest frame accepted; anything bigger is a protocol error, not an
/// allocation.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

const TAG_FRAME: u8 = 0xF1;

fn job_id(w: &mut Writer, id: &JobId) {
    w.u32(id.channel.0)
        .u64(id.slot)
        .u32(u32::from(id.stage))
        .u32(id.attempt)
        .u64(id.epoch);
}

fn read_job_id(r: &mut Reader<'_>) -> Result<JobId, DecodeError> {
    Ok(JobId {
        channel: ChannelId(r.u32("job.channel")?),
        slot: r.u64("job.slot")?,
        stage: u16::try_from(r.u32("job.stage")?).map_err(|_| bad("job.stage"))?,
        attempt: r.u32("job.attempt")?,
        epoch: r.u64("job.epoch")?,
    })
}

fn bad(what: &'static str) -> DecodeError {
    DecodeError { what, offset: 0 }
}

const FAILURES: [JobFailure; 6] = [
    JobFailure::GpuFault,
    JobFailure::LeaseExpired,
    JobFailure::ProviderError,
    JobFailure::Cancelled,
    JobFailure::NoCapacity,
    JobFailure::ExecutorError,
];

fn spec(w: &mut Writer, s: &JobSpec) {
    job_id(w, &s.id);
    w.u32(s.owner.0);
    match &s.kind {
        JobKind::Cpu => {
            w.u8(0);
        }
        JobKind::Gpu => {
            w.u8(1);
        }
        JobKind::External { provider } => {
            w.u8(2).bytes(provider.as_bytes());
        }
    }
    w.u64(s.gpu_memory_bytes)
        .u64(s.duration.mean_ms)
        .u64(s.duration.jitter_ms)
        .u64(s.fixed_cost_micros)
        .u8(s.priority)
        .u32(u32::from(s.home_region.0))
        .u64(s.budget_day)
        .u8(s.hops);
}

fn read_spec(r: &mut Reader<'_>) -> Result<JobSpec, DecodeError> {
    let id = read_job_id(r)?;
    let owner = NodeId(r.u32("spec.owner")?);
    let kind = match r.u8("spec.kind")? {
        0 => JobKind::Cpu,
        1 => JobKind::Gpu,
        2 => {
            let p = r.bytes("spec.provider")?;
            JobKind::External {
                provider: String::from_utf8(p.to_vec()).map_err(|_| bad("spec.provider"))?,
            }
        }
        _ => return Err(bad("spec.kind")),
    };
    Ok(JobSpec {
        id,
        owner,
        kind,
        gpu_memory_bytes: r.u64("spec.gpu_memory_bytes")?,
        duration: DurationModel {
            mean_ms: r.u64("spec.duration.mean_ms")?,
            jitter_ms: r.u64("spec.duration.jitter_ms")?,
        },
        fixed_cost_micros: r.u64("spec.fixed_cost_micros")?,
        priority: r.u8("spec.priority")?,
        home_region: region(r, "spec.home_region")?,
        budget_day: r.u64("spec.budget_day")?,
        hops: r.u8("spec.hops")?,
    })
}

fn region(r: &mut Reader<'_>, what: &'static str) -> Result<RegionId, DecodeError> {
    Ok(RegionId(
        u16::try_from(r.u32(what)?).map_err(|_| bad(what))?,
    ))
}

/// A message as one frame.
pub fn encode(msg: &NodeMsg) -> Vec<u8> {
    let mut w = Writer::with_tag(TAG_FRAME);
    match msg {
        NodeMsg::JobStarted { id, gpu } => {
            w.u8(1);
            job_id(&mut w, id);
            w.u32(gpu.0);
        }
        NodeMsg::JobFinished { id, outcome } => {
            w.u8(2);
            job_id(&mut w, id);
            write_outcome(&mut w, outcome);
        }
        NodeMsg::GpuSubmit { gpu, job } => {
            w.u8(3).u32(gpu.0);
            spec(&mut w, job);
        }
        NodeMsg::GpuCancel { gpu, id } => {
            w.u8(4).u32(gpu.0);
            job_id(&mut w, id);
        }
        NodeMsg::DispatchSubmit { region, job } => {
            w.u8(5).u32(u32::from(region.0));
            spec(&mut w, job);
        }
        NodeMsg::DispatchLoad { region, report } => {
            w.u8(6).u32(u32::from(region.0));
            write_report(&mut w, report);
        }
        NodeMsg::DispatchSummary {
            to,
            region,
            best_wait_ms,
        } => {
            w.u8(7)
                .u32(u32::from(to.0))
                .u32(u32::from(region.0))
                .u64(*best_wait_ms);
        }
        NodeMsg::MembersChanged { version } => {
            w.u8(8).u64(*version);
        }
    }
    w.finish()
}

fn write_outcome(w: &mut Writer, outcome: &JobOutcome) {
    match outcome {
        JobOutcome::Succeeded { cost_micros } => {
            w.u8(0).u64(*cost_micros);
        }
        JobOutcome::Failed {
            failure,
            retryable,
            cost_micros,
        } => {
            let f = FAILURES.iter().position(|x| x == failure).unwrap_or(5);
            w.u8(1)
                .u8(f as u8)
                .u8(u8::from(*retryable))
                .u64(*cost_micros);
        }
    }
}

fn write_report(w: &mut Writer, report: &LoadReport) {
    w.u32(report.gpu.0)
        .u64(report.free_bytes)
        .u64(report.total_bytes)
        .u32(report.running)
        .u32(report.queued)
        .u64(report.est_wait_ms)
        .u8(u8::from(report.draining))
        .u64(report.cost_per_hour_micros);
}

/// A frame as a message; anything malformed is refused with the field.
pub fn decode(buf: &[u8]) -> Result<NodeMsg, DecodeError> {
    if buf.len() > FRAME_BYTES_MAX {
        return Err(bad("frame length"));
    }
    let mut r = Reader::expect_tag(buf, TAG_FRAME, "frame tag")?;
    let msg = match r.u8("frame kind")? {
        1 => NodeMsg::JobStarted {
            id: read_job_id(&mut r)?,
            gpu: GpuId(r.u32("gpu")?),
        },
        2 => NodeMsg::JobFinished {
            id: read_job_id(&mut r)?,
            outcome: read_outcome(&mut r)?,
        },
        3 => NodeMsg::GpuSubmit {
            gpu: GpuId(r.u32("gpu")?),
            job: read_spec(&mut r)?,
        },
        4 => NodeMsg::GpuCancel {
            gpu: GpuId(r.u32("gpu")?),
            id: read_job_id(&mut r)?,
        },
        5 => NodeMsg::DispatchSubmit {
            region: region(&mut r, "region")?,
            job: read_spec(&mut r)?,
        },
        6 => NodeMsg::DispatchLoad {
            region: region(&mut r, "region")?,
            report: read_report(&mut r)?,
        },
        7 => NodeMsg::DispatchSummary {
            to: region(&mut r, "summary.to")?,
            region: region(&mut r, "summary.region")?,
            best_wait_ms: r.u64("summary.best_wait_ms")?,
        },
        8 => NodeMsg::MembersChanged {
            version: r.u64("members.version")?,
        },
        _ => return Err(bad("frame kind")),
    };
    r.end("frame end")?;
    Ok(msg)
}

fn read_outcome(r: &mut Reader<'_>) -> Result<JobOutcome, DecodeError> {
    Ok(match r.u8("outcome")? {
        0 => JobOutcome::Succeeded {
            cost_micros: r.u64("outcome.cost_micros")?,
        },
        1 => {
            let f = r.u8("outcome.failure")?;
            let failure = *FAILURES
                .get(usize::from(f))
                .ok_or_else(|| bad("outcome.failure"))?;
            let retryable = match r.u8("outcome.retryable")? {
                0 => false,
                1 => true,
                _ => return Err(bad("outcome.retryable")),
            };
            JobOutcome::Failed {
                failure,
                retryable,
                cost_micros: r.u64("outcome.cost_micros")?,
            }
        }
        _ => return Err(bad("outcome")),
    })
}

fn read_report(r: &mut Reader<'_>) -> Result<LoadReport, DecodeError> {
    Ok(LoadReport {
        gpu: GpuId(r.u32("load.gpu")?),
        free_bytes: r.u64("load.free_bytes")?,
        total_bytes: r.u64("load.total_bytes")?,
        running: r.u32("load.running")?,
        queued: r.u32("load.queued")?,
        est_wait_ms: r.u64("load.est_wait_ms")?,
        draining: r.u8("load.draining")? != 0,
        cost_per_hour_micros: r.u64("load.cost_per_hour_micros")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobSpec {
        JobSpec {
            id: JobId {
                channel: ChannelId(7),
                slot: 99,
                stage: 2,
                attempt: 1,
                epoch: 4,
            },
            owner: NodeId(2),
            kind: JobKind::External {
                provider: "llm-a".into(),
            },
            gpu_memory_bytes: 8 << 30,
            duration: DurationModel {
                mean_ms: 1000,
                jitter_ms: 10,
            },
            fixed_cost_micros: 5,
            priority: 3,
            home_region: RegionId(1),
            budget_day: 20_000,
            hops: 1,
        }
    }

    #[test]
    fn every_frame_round_trips_and_truncation_is_named() {
        let j = job();
        let frames = vec![
            NodeMsg::JobStarted {
                id: j.id,
                gpu: GpuId(3),
            },
            NodeMsg::JobFinished {
                id: j.id,
                outcome: JobOutcome::Failed {
                    failure: JobFailure::NoCapacity,
                    retryable: true,
                    cost_micros: 9,
                },
            },
            NodeMsg::JobFinished {
                id: j.id,
                outcome: JobOutcome::Succeeded { cost_micros: 1 },
            },
            NodeMsg::GpuSubmit {
                gpu: GpuId(1),
                job: j.clone(),
            },
            NodeMsg::GpuCancel {
                gpu: GpuId(1),
                id: j.id,
            },
            NodeMsg::DispatchSubmit {
                region: RegionId(0),
                job: j.clone(),
            },
            NodeMsg::DispatchLoad {
                region: RegionId(0),
                report: LoadReport {
                    gpu: GpuId(1),
                    free_bytes: 1,
                    total_bytes: 2,
                    running: 3,
                    queued: 4,
                    est_wait_ms: 5,
                    draining: true,
                    cost_per_hour_micros: 6,
                },
            },
            NodeMsg::DispatchSummary {
                to: RegionId(1),
                region: RegionId(0),
                best_wait_ms: 77,
            },
            NodeMsg::MembersChanged { version: 12 },
        ];
        for f in frames {
            let bytes = encode(&f);
            assert_eq!(decode(&bytes).expect("decode"), f);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{f:?} cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            let e = decode(&long).expect_err("trailing byte");
            assert_eq!(e.what, "frame end");
        }
        assert_eq!(
            decode(&[TAG_FRAME, 42]).expect_err("kind").what,
            "frame kind"
        );
    }
}
