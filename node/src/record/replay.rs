//! Replay: each recorded machine rebuilt from its construction and fed
//! its recorded inputs in order, through the same `actors/` code the node
//! ran; the effects of each input are compared with the recorded digest.
//! Identical digests all the way mean the machine decided exactly as it
//! did live; the first that differs is named with its input.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use actors::machine::Machine;
use topology::Topology;

use super::format::{self, Built, Rebuilt};
use super::read::{Fed, MachineTape, NodeRecording};

/// What to replay and how.
#[derive(Debug, Default, Clone)]
pub struct ReplayOptions {
    /// Only this node's recording.
    pub node: Option<String>,
    /// Only machines with this name (`channel:NAME`, `gpu:gN`,
    /// `dispatch:REGION`, `membership:NODE`).
    pub machine: Option<String>,
    /// Only inputs at or before this `now_ms`.
    pub until_ms: Option<u64>,
    /// Parameters changed from the recorded ones (`channel.retry_base_ms`
    /// and the like, see [`PARAMS`]): "what if" — the replay then shows
    /// where the machines would have decided otherwise.
    pub set: Vec<(String, u64)>,
}

/// The parameters `--set` may change.
pub const PARAMS: &[&str] = &[
    "channel.retry_base_ms",
    "channel.retry_max_ms",
    "channel.stage_attempts_max",
    "channel.dispatch_timeout_ms",
    "channel.job_grace_ms",
    "channel.publish_timeout_ms",
    "channel.plan_lead_ms",
    "membership.lease_ms",
    "membership.renew_ms",
    "membership.monitors",
];

/// How one machine's replay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Identical {
        inputs: usize,
    },
    Diverged(Divergence),
    /// Not replayable: why.
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// 1-based, counting the machine's first input (its start) as 1.
    pub input_no: usize,
    pub now_ms: u64,
    pub input: String,
    pub expected_effects: u32,
    pub expected_digest: u64,
    pub actual_digest: u64,
    pub actual: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct MachineReport {
    pub node: String,
    pub run: u64,
    pub id: u64,
    pub name: String,
    pub verdict: Verdict,
}

impl std::fmt::Display for MachineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} run {} {} (#{}): ",
            self.node, self.run, self.name, self.id
        )?;
        match &self.verdict {
            Verdict::Identical { inputs } => write!(f, "identical ({inputs} inputs)"),
            Verdict::Skipped(why) => write!(f, "skipped: {why}"),
            Verdict::Diverged(d) => {
                writeln!(
                    f,
                    "DIVERGES at input {} (now_ms {}):\n  input:    {}\n  recorded: {} effects (digest {:016x})\n  replayed: {} effects (digest {:016x}):",
                    d.input_no,
                    d.now_ms,
                    d.input,
                    d.expected_effects,
                    d.expected_digest,
                    d.actual.len(),
                    d.actual_digest
                )?;
                for e in &d.actual {
                    writeln!(f, "    {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// Where the replayed inputs and effects go, in the simulator's trace
/// line format (`t=S.mmms nNODE what a b`).
pub struct TraceOut<'a> {
    pub out: &'a mut dyn std::io::Write,
}

fn variant(debug: &str) -> &str {
    let end = debug
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(debug.len());
    &debug[..end]
}

fn trace_line(t: &mut Option<TraceOut<'_>>, now_ms: u64, node: u32, what: &str, a: u64, b: u64) {
    if let Some(t) = t {
        let _ = writeln!(
            t.out,
            "t={}.{:03}s n{} {} {} {}",
            now_ms / 1000,
            now_ms % 1000,
            node,
            what,
            a,
            b
        );
    }
}

/// Feeds `fed` to `m` and compares each input's effects with the record.
fn run_machine<M>(
    mut m: M,
    fed: &[Fed],
    until_ms: Option<u64>,
    name: &str,
    node: u32,
    trace: &mut Option<TraceOut<'_>>,
) -> Verdict
where
    M: Machine,
    M::Input: DeserializeOwned + std::fmt::Debug,
    M::Effect: Serialize + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let mut n = 0;
    for (i, f) in fed.iter().enumerate() {
        if until_ms.is_some_and(|u| f.now_ms > u) {
            break;
        }
        let input: M::Input = match postcard::from_bytes(&f.input) {
            Ok(x) => x,
            Err(e) => return Verdict::Skipped(format!("input {} does not decode: {e}", i + 1)),
        };
        let shown = format!("{input:?}");
        out.clear();
        // A machine that panicked live panics here too: the replay names it.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.handle(f.now_ms, input, &mut out);
        }));
        if handled.is_err() {
            return Verdict::Skipped(format!("the machine panicked on input {} ({shown})", i + 1));
        }
        let d = format::digest(&out, &mut scratch);
        let what = format!("{name}:{}", variant(&shown));
        trace_line(
            trace,
            f.now_ms,
            node,
            &what,
            (i + 1) as u64,
            out.len() as u64,
        );
        for (k, e) in out.iter().enumerate() {
            let shown = format!("{e:?}");
            let what = format!("{name}>{}", variant(&shown));
            trace_line(trace, f.now_ms, node, &what, (i + 1) as u64, k as u64);
        }
        if d != f.digest || out.len() as u32 != f.effects {
            return Verdict::Diverged(Divergence {
                input_no: i + 1,
                now_ms: f.now_ms,
                input: shown,
                expected_effects: f.effects,
                expected_digest: f.digest,
                actual_digest: d,
                actual: out.iter().map(|e| format!("{e:?}")).collect(),
            });
        }
        n += 1;
    }
    Verdict::Identical { inputs: n }
}

fn apply_set(built: &mut Built, set: &[(String, u64)]) -> Result<(), String> {
    for (k, v) in set {
        if !PARAMS.contains(&k.as_str()) {
            return Err(format!("--set {k}: unknown (known: {})", PARAMS.join(", ")));
        }
        let v32 = u32::try_from(*v).map_err(|_| format!("--set {k}={v}: too large"))?;
        match built {
            Built::Channel { params, .. } => match k.as_str() {
                "channel.retry_base_ms" => params.retry_base_ms = *v,
                "channel.retry_max_ms" => params.retry_max_ms = *v,
                "channel.stage_attempts_max" => params.stage_attempts_max = v32,
                "channel.dispatch_timeout_ms" => params.dispatch_timeout_ms = *v,
                "channel.job_grace_ms" => params.job_grace_ms = *v,
                "channel.publish_timeout_ms" => params.publish_timeout_ms = *v,
                "channel.plan_lead_ms" => params.plan_lead_ms = *v,
                _ => {}
            },
            Built::Membership { params, .. } => match k.as_str() {
                "membership.lease_ms" => params.lease_ms = *v,
                "membership.renew_ms" => params.renew_ms = *v,
                "membership.monitors" => params.monitors = v32 as usize,
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}

/// The name a machine goes by in reports and `--machine`.
pub fn machine_name(topo: &Topology, built: &Built) -> String {
    let by = |v: &str| v.to_string();
    match built {
        Built::Channel { channel, .. } => format!("channel:{}", by(&topo.channel(*channel).name)),
        Built::Gpu { gpu, .. } => format!("gpu:{gpu}"),
        Built::Dispatch { region, .. } => format!("dispatch:{}", by(&topo.region(*region).name)),
        Built::Membership { node, .. } => format!("membership:{}", by(&topo.node(*node).name)),
    }
}

/// Replays one machine's tape against `topo`.
pub fn replay_tape(
    topo: &Arc<Topology>,
    tape: &MachineTape,
    opts: &ReplayOptions,
    name: &str,
    node_no: u32,
    trace: &mut Option<TraceOut<'_>>,
) -> Result<Verdict, String> {
    let Some(built) = &tape.built else {
        return Ok(Verdict::Skipped(
            "made in a segment deleted by the cap".into(),
        ));
    };
    let mut built = built.clone();
    apply_set(&mut built, &opts.set)?;
    let (fed, until) = (&tape.fed, opts.until_ms);
    Ok(match built.build(topo) {
        Rebuilt::Channel(m) => run_machine(m, fed, until, name, node_no, trace),
        Rebuilt::Gpu(m) => run_machine(m, fed, until, name, node_no, trace),
        Rebuilt::Dispatch(m) => run_machine(m, fed, until, name, node_no, trace),
        Rebuilt::Membership(m) => run_machine(m, fed, until, name, node_no, trace),
    })
}

/// Replays every selected machine of one node's recording.
pub fn replay_node(
    rec: &NodeRecording,
    opts: &ReplayOptions,
    trace: &mut Option<TraceOut<'_>>,
) -> Result<Vec<MachineReport>, String> {
    let mut reports = Vec::new();
    for (run, r) in &rec.runs {
        let text = r.cluster_text.as_deref().ok_or_else(|| {
            format!(
                "{} run {run}: its cluster config ({}) is missing",
                rec.node,
                format::cluster_name(*run)
            )
        })?;
        let topo = Arc::new(
            topology::config::parse_topology(text)
                .map_err(|e| format!("{} run {run}: its cluster config: {e}", rec.node))?,
        );
        for (id, tape) in &r.machines {
            let name = match &tape.built {
                Some(b) => machine_name(&topo, b),
                None => "unknown".into(),
            };
            if opts.machine.as_ref().is_some_and(|m| *m != name) {
                continue;
            }
            let verdict = replay_tape(&topo, tape, opts, &name, rec.node_id, trace)?;
            reports.push(MachineReport {
                node: rec.node.clone(),
                run: *run,
                id: *id,
                name,
                verdict,
            });
        }
    }
    Ok(reports)
}
