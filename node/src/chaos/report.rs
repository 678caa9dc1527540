//! The chaos run's verdict: every invariant with pass or fail and its
//! evidence, recovery times per fault against the bound for its kind, and
//! `report.json`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::faults::FaultRecord;
use super::monitor::Sample;
use crate::audit::AuditReport;

/// Slack for a sample's own period and the process start of a restart.
const SLACK_MS: u64 = 1_000;

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub invariant: String,
    pub ok: bool,
    pub evidence: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    pub kind: &'static str,
    pub target: String,
    pub started_ms: u64,
    /// `None`: never recovered within the run.
    pub recovery_ms: Option<u64>,
    pub bound_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub duration_ms: u64,
    pub nodes: usize,
    pub node_names: Vec<String>,
    pub regions: usize,
    pub channels: usize,
    pub lease_ms: u64,
    pub faults: Vec<FaultRecord>,
    pub faults_by_kind: BTreeMap<&'static str, usize>,
    pub recoveries: Vec<Recovery>,
    pub recovery_by_kind: BTreeMap<&'static str, Distribution>,
    pub published: usize,
    pub ownership_changes: usize,
    pub audit: AuditReport,
    pub checks: Vec<Check>,
    pub samples: Vec<Sample>,
}

impl ChaosReport {
    pub fn violations(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }
}

/// What the checks need besides the records and samples.
pub struct Bounds {
    pub lease_ms: u64,
    pub publish_timeout_ms: u64,
    pub node_of: Vec<String>,
}

fn first_at_or_after(samples: &[Sample], t_ms: u64) -> usize {
    samples.partition_point(|s| s.t_ms < t_ms)
}

/// Owners at the last sample before `t_ms` that knew them.
fn owners_before(samples: &[Sample], t_ms: u64) -> Option<&Vec<Option<(u32, u64)>>> {
    samples[..first_at_or_after(samples, t_ms)]
        .iter()
        .rev()
        .find_map(|s| s.owners.as_ref())
}

/// After a node fault: every channel the node owned is owned again under
/// a newer epoch: by another node while the fault lasts, unless the fault
/// restarts the node at once (`comes_back`), which may then claim its
/// channels again itself.
fn node_recovery(samples: &[Sample], f: &FaultRecord, node: u32, comes_back: bool) -> Option<u64> {
    let before = owners_before(samples, f.started_ms)?;
    let affected: Vec<(usize, u64)> = before
        .iter()
        .enumerate()
        .filter_map(|(c, o)| o.filter(|(n, _)| *n == node).map(|(_, e)| (c, e)))
        .collect();
    if affected.is_empty() {
        return Some(0);
    }
    let from = first_at_or_after(samples, f.started_ms);
    samples[from..].iter().find_map(|s| {
        let owners = s.owners.as_ref()?;
        let ended = f.ended_ms.is_some_and(|e| s.t_ms >= e);
        let all = affected.iter().all(|(c, e0)| {
            owners
                .get(*c)
                .copied()
                .flatten()
                .is_some_and(|(n, e)| e > *e0 && (n != node || ended || comes_back))
        });
        all.then(|| s.t_ms - f.started_ms)
    })
}

/// After a store or API fault: publishing goes on again (more published
/// than when it ended).
fn progress_recovery(samples: &[Sample], f: &FaultRecord) -> Option<u64> {
    let end = f.ended_ms?;
    let i = first_at_or_after(samples, end);
    let at_end = samples.get(i)?.published();
    samples[i..]
        .iter()
        .find(|s| s.published() > at_end)
        .map(|s| s.t_ms - end)
}

/// How long a freeze lasted, if it ended.
fn held_ms(f: &FaultRecord) -> Option<u64> {
    f.ended_ms.map(|e| e.saturating_sub(f.started_ms))
}

/// A pause the lease rides out: shorter than the lease less one renewal
/// period (the runner's fleets renew every quarter lease), so the lease
/// record moved less than a lease before the pause and moves again after
/// it. Such a pause (a GC pause, a stalled VM) must move nothing; a pause
/// of a lease or more must move the node's channels. In between, either
/// is right, depending on when the last renewal was.
fn rides_out(f: &FaultRecord, lease_ms: u64) -> bool {
    let renew_ms = (lease_ms / 4).max(100);
    f.kind == "node-freeze" && held_ms(f).is_some_and(|h| h + renew_ms < lease_ms)
}

/// A freeze too short for the lease to lapse moved none of the node's
/// channels (their owner and epoch as before, from the pause until two
/// leases after it): the no-false-removal check of a short lease.
pub fn pause_checks(samples: &[Sample], faults: &[FaultRecord], b: &Bounds) -> Vec<Check> {
    let mut out = Vec::new();
    for f in faults
        .iter()
        .filter(|f| f.error.is_none() && rides_out(f, b.lease_ms))
    {
        let Some(node) = b.node_of.iter().position(|n| *n == f.target) else {
            continue;
        };
        let node = node as u32;
        let Some(before) = owners_before(samples, f.started_ms) else {
            continue;
        };
        let until = f.ended_ms.unwrap_or(f.started_ms) + 2 * b.lease_ms + SLACK_MS;
        let (a, z) = (
            first_at_or_after(samples, f.started_ms),
            first_at_or_after(samples, until),
        );
        let mut moved = None;
        for s in &samples[a..z] {
            let Some(owners) = s.owners.as_ref() else {
                continue;
            };
            moved = before.iter().enumerate().find_map(|(c, o)| {
                let (n0, e0) = (*o)?;
                let now = owners.get(c).copied().flatten();
                (n0 == node && now != Some((n0, e0))).then_some((s.t_ms, c, e0, now))
            });
            if moved.is_some() {
                break;
            }
        }
        out.push(Check {
            invariant: "a pause shorter than the lease moves nothing".into(),
            ok: moved.is_none(),
            evidence: match moved {
                None => format!(
                    "{} frozen at {} ms for {} ms (lease {} ms): its channels kept their owner and epoch",
                    f.target,
                    f.started_ms,
                    held_ms(f).unwrap_or(0),
                    b.lease_ms
                ),
                Some((t, c, e0, now)) => format!(
                    "{} frozen at {} ms for {} ms (lease {} ms): channel #{c} (epoch {e0}) had owner {now:?} at {t} ms",
                    f.target,
                    f.started_ms,
                    held_ms(f).unwrap_or(0),
                    b.lease_ms
                ),
            },
        });
    }
    out
}

/// Recovery of every fault that has one, with its bound. A freeze
/// shorter than the lease has none: one the lease rides out is judged by
/// `pause_checks`, and one between that and the lease by neither (whether
/// the lease lapsed depends on when it was last renewed).
pub fn recoveries(samples: &[Sample], faults: &[FaultRecord], b: &Bounds) -> Vec<Recovery> {
    let mut out = Vec::new();
    for f in faults.iter().filter(|f| f.error.is_none()) {
        if f.kind == "node-freeze" && held_ms(f).is_some_and(|h| h < b.lease_ms) {
            continue;
        }
        let (recovery_ms, bound_ms) = match f.kind {
            "node-kill" | "node-freeze" | "node-restart" | "node-clock-jump"
            | "node-clock-drift" | "publish-stall" | "store-cut" | "exclude-node" => {
                let Some(node) = b.node_of.iter().position(|n| *n == f.target) else {
                    continue;
                };
                let bound = if f.kind == "node-restart" {
                    5_000
                } else {
                    b.lease_ms + 3_000
                };
                let comes_back = matches!(f.kind, "node-clock-jump" | "node-clock-drift");
                (
                    node_recovery(samples, f, node as u32, comes_back),
                    bound + SLACK_MS,
                )
            }
            "store-member-kill" | "store-outage" | "api-errors" | "api-lost-response"
            | "api-quota" | "provider-errors" | "gpu-slow" | "region-partition"
            | "one-way-partition" | "partition-region" | "api-faults" => {
                (progress_recovery(samples, f), 30_000)
            }
            _ => continue,
        };
        out.push(Recovery {
            kind: f.kind,
            target: f.target.clone(),
            started_ms: f.started_ms,
            recovery_ms,
            bound_ms,
        });
    }
    out
}

pub fn distribution(mut ms: Vec<u64>) -> Distribution {
    ms.sort_unstable();
    let at = |q: f64| {
        let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms.get(i).copied().unwrap_or(0)
    };
    Distribution {
        count: ms.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(0),
    }
}

/// Nothing published in `region` (or anywhere: `None`) from `from_ms` to
/// `to_ms`; the evidence if something was.
fn quiet(
    samples: &[Sample],
    region: Option<usize>,
    from_ms: u64,
    to_ms: u64,
) -> Result<(), String> {
    let count = |s: &Sample| match region {
        Some(r) => s.published_by_region.get(r).copied().unwrap_or(0),
        None => s.published(),
    };
    let a = first_at_or_after(samples, from_ms);
    let z = first_at_or_after(samples, to_ms).saturating_sub(1);
    if a >= z {
        return Ok(());
    }
    let (ca, cz) = (count(&samples[a]), count(&samples[z]));
    if cz > ca {
        return Err(format!(
            "{} videos made visible between {} ms and {} ms",
            cz - ca,
            samples[a].t_ms,
            samples[z].t_ms
        ));
    }
    Ok(())
}

/// The stop checks: after the kill switch (everywhere) or a region's
/// pause (there), nothing made visible later than the stop bound.
pub fn stop_checks(samples: &[Sample], faults: &[FaultRecord], b: &Bounds) -> Vec<Check> {
    let mut out = Vec::new();
    for f in faults.iter().filter(|f| f.error.is_none()) {
        let (region, held_ms) = match f.kind {
            "kill-switch" => (None, f.held_after_ms.unwrap_or(b.lease_ms * 2)),
            "region-pause" => (f.region, b.lease_ms * 2),
            _ => continue,
        };
        let Some(end) = f.ended_ms else { continue };
        let bound = f.started_ms + held_ms + b.publish_timeout_ms + SLACK_MS;
        let r = quiet(samples, region, bound, end);
        out.push(Check {
            invariant: format!("nothing published after the {} stop bound", f.kind),
            ok: r.is_ok(),
            evidence: match r {
                Ok(()) => format!(
                    "{} at {} ms: quiet from {bound} ms to {end} ms",
                    f.target, f.started_ms
                ),
                Err(e) => format!("{} at {} ms: {e}", f.target, f.started_ms),
            },
        });
        if f.kind == "kill-switch" {
            let held = f.held_after_ms;
            out.push(Check {
                invariant: "the kill switch holds on every node within two leases".into(),
                ok: held.is_some_and(|ms| ms <= b.lease_ms * 2),
                evidence: match held {
                    Some(ms) => format!("held on every node after {ms} ms"),
                    None => "the admin RPC did not say that every node held".into(),
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, owners: &[(u32, u64)]) -> Sample {
        Sample {
            t_ms,
            owners: Some(owners.iter().map(|o| Some(*o)).collect()),
            published_by_region: vec![0],
            queued_by_node: Vec::new(),
        }
    }

    fn freeze(started_ms: u64, held_ms: u64) -> FaultRecord {
        FaultRecord {
            kind: "node-freeze",
            target: "n1".into(),
            started_ms,
            ended_ms: Some(started_ms + held_ms),
            held_after_ms: None,
            error: None,
            outcome: None,
            outcome_ok: None,
            region: None,
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            lease_ms: 1_000,
            publish_timeout_ms: 5_000,
            node_of: vec!["n0".into(), "n1".into()],
        }
    }

    /// A 600 ms pause at a 1 s lease: channels that stay are a pass, a
    /// channel taken by another node is named; neither is a recovery. A
    /// 1.2 s pause is a recovery to measure, and no pause check.
    #[test]
    fn a_pause_the_lease_rides_out_must_move_nothing() {
        let kept: Vec<Sample> = (0..40)
            .map(|i| sample(i * 100, &[(0, 1), (1, 1)]))
            .collect();
        let short = [freeze(1_000, 600)];
        let checks = pause_checks(&kept, &short, &bounds());
        assert_eq!(checks.len(), 1);
        assert!(checks[0].ok, "{}", checks[0].evidence);
        assert!(recoveries(&kept, &short, &bounds()).is_empty());

        let mut moved = kept.clone();
        for s in &mut moved[20..] {
            s.owners = Some(vec![Some((0, 1)), Some((0, 2))]);
        }
        let checks = pause_checks(&moved, &short, &bounds());
        assert!(!checks[0].ok);
        assert!(
            checks[0]
                .evidence
                .contains("channel #1 (epoch 1) had owner Some((0, 2)) at 2000 ms"),
            "{}",
            checks[0].evidence
        );

        let long = [freeze(1_000, 1_200)];
        assert!(pause_checks(&moved, &long, &bounds()).is_empty());
        let r = recoveries(&moved, &long, &bounds());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].recovery_ms, Some(1_000));
    }
}
