//! The schedule file: a chaos config's `[[faults]]`, written in the
//! simulator's scenario-file style and read against the fleet being broken.
//!
//! Every entry has `at_s` (seconds after the fleet is steady, an integer or
//! a float) and `kind`. Where the fault is the same as a simulator fault,
//! the kind, its keys and its names *are* the simulator's, read by the
//! simulator's own parser ([`sim::scenario_file::read_fault`]): the same
//! file means the same thing in both. The simulator's faults are events
//! (`crash-node` … `start-node`); the runner pairs each beginning with its
//! end into one fault with a duration, and ends what is still open at the
//! heal. Faults only the runner can cause take `for_s` instead. Simulator
//! faults that cannot be caused for real are refused with why, and every
//! mistake is reported at once, each with its path.

use std::collections::BTreeMap;

use sim::scenario::Fault as SimFault;
use sim::scenario_file::{at_ms, find, read_fault, FAULT_KINDS};
use toml::{Table, Value};
use topology::config::ConfigErrors;
use topology::toml_walk::{idx_path, key_path, type_error, Errs, Obj};
use topology::Topology;

use super::schedule::{Fault, FaultKind};

/// What a runner-only kind is aimed at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Aim {
    Nothing,
    /// `node = "name"`.
    Node,
    /// `member = 0..=2`: an etcd member.
    Member,
    /// `region = "name"`.
    Region,
    /// `between = ["a", "b"]`: two regions.
    Between,
}

/// A fault only the runner causes (the simulator has no such fault).
struct OwnKind {
    kind: FaultKind,
    aim: Aim,
}

const OWN_KINDS: &[OwnKind] = &[
    OwnKind {
        kind: FaultKind::StoreMemberKill,
        aim: Aim::Member,
    },
    OwnKind {
        kind: FaultKind::StoreCut,
        aim: Aim::Node,
    },
    OwnKind {
        kind: FaultKind::NodeClockJump,
        aim: Aim::Node,
    },
    OwnKind {
        kind: FaultKind::NodeClockDrift,
        aim: Aim::Node,
    },
    OwnKind {
        kind: FaultKind::PublishStall,
        aim: Aim::Node,
    },
    OwnKind {
        kind: FaultKind::GpuSlow,
        aim: Aim::Nothing,
    },
    OwnKind {
        kind: FaultKind::ProviderErrors,
        aim: Aim::Nothing,
    },
    OwnKind {
        kind: FaultKind::ApiQuota,
        aim: Aim::Nothing,
    },
    OwnKind {
        kind: FaultKind::ApiLostResponse,
        aim: Aim::Nothing,
    },
    OwnKind {
        kind: FaultKind::RegionPause,
        aim: Aim::Region,
    },
    OwnKind {
        kind: FaultKind::RegionPartition,
        aim: Aim::Between,
    },
];

/// The runner's one event of its own: the kill switch off again (the
/// simulator's kill switch stays on).
const KILL_SWITCH_OFF: &str = "kill-switch-off";

/// Simulator kinds the runner cannot cause for real, with why.
const NOT_REAL: &[(&str, &str)] = &[
    (
        "commit-unknown",
        "a commit answered \"unknown\" needs a fault inside the store client; the runner kills etcd members instead (store-member-kill, store-outage)",
    ),
    (
        "gpu-failures",
        "the runner's model server slows the GPU stage (gpu-slow) but does not fail jobs mid-way",
    ),
    (
        "stragglers",
        "the runner slows every GPU job (gpu-slow), not a per-million share of them",
    ),
    (
        "network",
        "loss, duplication and reordering need tc netem, which this kernel does not have",
    ),
    (
        "store-slow",
        "delaying etcd's answers needs tc netem, which this kernel does not have (store-outage and store-member-kill stop them instead)",
    ),
    (
        "clock-skew",
        "libfaketime sets a clock as a process starts, so the runner restarts a node on a wrong clock instead (node-clock-jump, node-clock-drift)",
    ),
    (
        "quota-used-elsewhere",
        "the emulated API has no other clients; api-quota exhausts its quota",
    ),
    (
        "provider-outage",
        "the runner's model server fails stages by name, not providers (provider-errors fails the script stage)",
    ),
    (
        "provider-back",
        "the runner's model server fails stages by name, not providers (provider-errors fails the script stage)",
    ),
    (
        "maintenance-node",
        "an operator's window, not a fault: the runner's checks do not know it",
    ),
    (
        "maintenance-zone",
        "an operator's window, not a fault: the runner's checks do not know it",
    ),
    (
        "maintenance-off",
        "an operator's window, not a fault: the runner's checks do not know it",
    ),
    (
        "budget",
        "an operator's limit: the audit holds the fleet to its cluster config's limits",
    ),
    (
        "quota",
        "an operator's limit: the audit holds the fleet to its cluster config's limits",
    ),
];

/// Every kind a schedule file takes, for "expected one of".
pub fn kinds_accepted() -> Vec<&'static str> {
    let mut v: Vec<&str> = FAULT_KINDS
        .iter()
        .map(|k| k.name)
        .filter(|n| !NOT_REAL.iter().any(|(m, _)| m == n))
        .collect();
    v.push(KILL_SWITCH_OFF);
    v.extend(OWN_KINDS.iter().map(|k| k.kind.name()));
    v
}

/// What a simulator event opens or closes: faults on the same thing
/// cannot overlap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Node(usize),
    Store,
    Region(usize),
    OneWay(usize, usize),
    KillSwitch,
    Channel(String),
    Api,
}

/// A fault begun by an event and not yet ended, with the path of the
/// event that began it.
struct Open {
    fault: Fault,
    at: Entry,
}

/// Reads `faults` (the config's `faults` value) against `topo`: the
/// schedule in time order, or every mistake, one per line.
pub fn read(faults: &Value, topo: &Topology, duration_s: u64) -> Result<Vec<Fault>, String> {
    let mut e = Errs(Vec::new());
    let duration_s = i64::try_from(duration_s).unwrap_or(i64::MAX);
    let Some(list) = faults.as_array() else {
        return Err(format!(
            "faults: {}",
            type_error("an array of tables ([[faults]])", faults)
        ));
    };
    let mut events: Vec<(u64, Entry, Event)> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let path = idx_path("faults", i);
        match v.as_table() {
            None => e.push(&path, type_error("a table", v)),
            Some(t) => {
                if let Some((at, ev)) = entry(&mut e, t, &path, topo, duration_s) {
                    events.push((at, Entry { index: i, path }, ev));
                }
            }
        }
    }
    // Stable: events at the same time keep their file order.
    events.sort_by_key(|(at, _, _)| *at);
    let schedule = pair(&mut e, events, topo, duration_s as u64 * 1_000);
    if e.0.is_empty() {
        Ok(schedule)
    } else {
        Err(ConfigErrors(e.0).to_string())
    }
}

/// Where an entry is in the file: its index (faults at one time keep
/// the file's order) and its path.
#[derive(Clone)]
struct Entry {
    index: usize,
    path: String,
}

/// One entry, read: a simulator event, or a runner fault with its length.
enum Event {
    Sim(SimFault),
    KillSwitchOff,
    Own(Fault),
}

fn entry(
    e: &mut Errs,
    t: &Table,
    path: &str,
    topo: &Topology,
    duration_s: i64,
) -> Option<(u64, Event)> {
    let kind_path = key_path(path, "kind");
    let kind = match t.get("kind") {
        None => {
            e.push(&kind_path, "missing required key");
            return None;
        }
        Some(Value::String(k)) => k.as_str(),
        Some(v) => {
            e.push(&kind_path, type_error("a string", v));
            return None;
        }
    };
    if let Some((_, why)) = NOT_REAL.iter().find(|(k, _)| *k == kind) {
        e.push(
            &kind_path,
            format!("{kind:?} is a simulator fault the chaos runner cannot cause for real: {why}"),
        );
        return None;
    }
    if kind == KILL_SWITCH_OFF {
        let o = Obj::new(e, t, path.to_string(), &["at_s", "kind"]);
        return Some((at_ms(e, &o, Some(duration_s))?, Event::KillSwitchOff));
    }
    if let Some(own) = OWN_KINDS.iter().find(|k| k.kind.name() == kind) {
        return own_fault(e, t, path, own, topo, duration_s).map(|f| (f.at_ms, Event::Own(f)));
    }
    if FAULT_KINDS.iter().any(|k| k.name == kind) {
        let tf = read_fault(e, t, path.to_string(), topo, duration_s)?;
        return Some((tf.at_ms, Event::Sim(tf.fault)));
    }
    e.push(
        &kind_path,
        format!(
            "unknown kind {kind:?}; expected one of: {}",
            kinds_accepted().join(", ")
        ),
    );
    None
}

/// A runner-only fault: `at_s`, `for_s` and what it is aimed at.
fn own_fault(
    e: &mut Errs,
    t: &Table,
    path: &str,
    own: &OwnKind,
    topo: &Topology,
    duration_s: i64,
) -> Option<Fault> {
    let aim_key = match own.aim {
        Aim::Nothing => None,
        Aim::Node => Some("node"),
        Aim::Member => Some("member"),
        Aim::Region => Some("region"),
        Aim::Between => Some("between"),
    };
    let mut allowed = vec!["at_s", "kind", "for_s"];
    allowed.extend(aim_key);
    let o = Obj::new(e, t, path.to_string(), &allowed);
    let at = at_ms(e, &o, Some(duration_s));
    let for_ms = for_ms(e, &o, duration_s);
    let (target, to) = aim(e, &o, own.aim, topo)?;
    let (at, for_ms, target) = (at?, for_ms?, target?);
    if at + for_ms > duration_s as u64 * 1_000 {
        e.push(
            o.p("for_s"),
            format!(
                "ends at {} s, after duration_s ({duration_s})",
                (at + for_ms) / 1_000
            ),
        );
        return None;
    }
    let mut f = Fault::new(own.kind, at, for_ms, target);
    f.to = to;
    Some(f)
}

/// What a runner-only fault is aimed at: its target's index (0 for
/// none), and the other region of a partition between two. `None`: a
/// mistake that makes the fault meaningless (both regions the same).
fn aim(e: &mut Errs, o: &Obj, aim: Aim, topo: &Topology) -> Option<(Option<usize>, Option<usize>)> {
    let region = |e: &mut Errs, name: &str, p: &str| {
        find(
            e,
            p,
            "region",
            name,
            topo.regions.iter().map(|r| r.name.as_str()),
        )
    };
    Some(match aim {
        Aim::Nothing => (Some(0), None),
        Aim::Node => {
            let name = o.name_req(e, "node");
            let nodes = topo.nodes.iter().map(|x| x.name.as_str());
            (
                name.and_then(|n| find(e, &o.p("node"), "node", n, nodes)),
                None,
            )
        }
        Aim::Member => {
            let m = o.u64_opt(e, "member", 0, 2).map(|m| m as usize);
            if m.is_none() {
                o.missing(e, "member");
            }
            (m, None)
        }
        Aim::Region => {
            let name = o.name_req(e, "region");
            (name.and_then(|n| region(e, n, &o.p("region"))), None)
        }
        Aim::Between => match between(e, o) {
            Some([a, b]) => {
                let p = o.p("between");
                let (ra, rb) = (region(e, a, &p), region(e, b, &p));
                if ra.is_some() && ra == rb {
                    e.push(&p, "two different regions");
                    return None;
                }
                (ra, rb)
            }
            None => (None, None),
        },
    })
}

/// `for_s`: how long a runner-only fault lasts, more than 0.
fn for_ms(e: &mut Errs, o: &Obj, duration_s: i64) -> Option<u64> {
    if o.missing(e, "for_s") {
        return None;
    }
    let path = o.p("for_s");
    let secs = match o.t.get("for_s")? {
        Value::Integer(i) => *i as f64,
        Value::Float(f) => *f,
        other => {
            e.push(&path, type_error("a number (seconds)", other));
            return None;
        }
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= duration_s as f64) {
        e.push(
            &path,
            format!("must be > 0 and <= duration_s ({duration_s})"),
        );
        return None;
    }
    Some((secs * 1_000.0).round() as u64)
}

/// `between = ["a", "b"]`.
fn between<'a>(e: &mut Errs, o: &Obj<'a>) -> Option<[&'a str; 2]> {
    let v = o.get_req(e, "between")?;
    let names: Option<Vec<&str>> = v
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_str()).collect());
    match names.as_deref() {
        Some([a, b]) => Some([a, b]),
        _ => {
            e.push(o.p("between"), type_error("two region names", v));
            None
        }
    }
}

/// Pairs the simulator's events into faults with a duration (what is
/// still open ends at the heal), merged with the runner's own faults;
/// overlapping faults on one node are refused.
fn pair(
    e: &mut Errs,
    events: Vec<(u64, Entry, Event)>,
    topo: &Topology,
    end_ms: u64,
) -> Vec<Fault> {
    let mut open: BTreeMap<Slot, Open> = BTreeMap::new();
    let mut out: Vec<(Fault, Entry)> = Vec::new();
    for (at, entry, ev) in events {
        let path = entry.path.clone();
        let sim = match ev {
            Event::Own(f) => {
                out.push((f, entry));
                continue;
            }
            Event::KillSwitchOff => {
                close(e, &mut open, &mut out, Slot::KillSwitch, at, &entry, topo);
                continue;
            }
            Event::Sim(s) => s,
        };
        if matches!(sim, SimFault::ApiFaults { .. }) && open.contains_key(&Slot::Api) {
            close(e, &mut open, &mut out, Slot::Api, at, &entry, topo);
        }
        let (slot, begins, ends) = match effect(sim, at, topo) {
            Ok(x) => x,
            Err(why) => {
                e.push(&path, why);
                continue;
            }
        };
        if ends {
            close(e, &mut open, &mut out, slot, at, &entry, topo);
        } else if let Some(fault) = begins {
            if let Some(o) = open.get(&slot) {
                e.push(
                    &path,
                    format!(
                        "{} is already under {} since {} (end that first)",
                        what(&slot, topo),
                        o.fault.kind.name(),
                        o.at.path
                    ),
                );
            } else {
                open.insert(slot, Open { fault, at: entry });
            }
        }
    }
    for (_, o) in open {
        let mut f = o.fault;
        f.for_ms = end_ms.saturating_sub(f.at_ms);
        out.push((f, o.at));
    }
    out.sort_by_key(|(f, at)| (f.at_ms, at.index));
    node_overlaps(e, &out, topo);
    out.into_iter().map(|(f, _)| f).collect()
}

/// What a simulator event does to the slot it is about: begins a fault
/// there (the fault, its length still 0) or ends the one there (`true`).
#[allow(clippy::type_complexity)]
fn effect(sim: SimFault, at: u64, topo: &Topology) -> Result<(Slot, Option<Fault>, bool), String> {
    let begin = |kind, target| Some(Fault::new(kind, at, 0, target));
    let on_node =
        |kind, n: topology::NodeId| (Slot::Node(n.index()), begin(kind, n.index()), false);
    Ok(match sim {
        SimFault::CrashNode(n) => on_node(FaultKind::NodeKill, n),
        SimFault::DrainNode(n) => on_node(FaultKind::NodeRestart, n),
        SimFault::FreezeNode(n) => on_node(FaultKind::NodeFreeze, n),
        SimFault::Exclude(n) => on_node(FaultKind::ExcludeNode, n),
        SimFault::StartNode(n) | SimFault::ThawNode(n) | SimFault::Include(n) => {
            (Slot::Node(n.index()), None, true)
        }
        SimFault::StoreOutage(true) => (Slot::Store, begin(FaultKind::StoreOutage, 0), false),
        SimFault::StoreOutage(false) => (Slot::Store, None, true),
        SimFault::PartitionRegion(r) => (
            Slot::Region(r.index()),
            begin(FaultKind::PartitionRegion, r.index()),
            false,
        ),
        SimFault::HealRegion(r) => (Slot::Region(r.index()), None, true),
        SimFault::OneWay { from, to } => {
            let mut f = Fault::new(FaultKind::OneWayPartition, at, 0, from.index());
            f.to = Some(to.index());
            (Slot::OneWay(from.index(), to.index()), Some(f), false)
        }
        SimFault::HealOneWay { from, to } => (Slot::OneWay(from.index(), to.index()), None, true),
        SimFault::KillSwitch => (Slot::KillSwitch, begin(FaultKind::KillSwitch, 0), false),
        SimFault::Pause(c) | SimFault::Resume(c) => {
            let name = topo.channels[c.index()].name.clone();
            let pause = matches!(sim, SimFault::Pause(_));
            let f = pause.then(|| {
                let mut f = Fault::new(FaultKind::ChannelPause, at, 0, 0);
                f.channel = Some(name.clone());
                f
            });
            (Slot::Channel(name), f, !pause)
        }
        SimFault::ApiFaults {
            error_5xx,
            rate_limited,
            lost_response,
        } => {
            // Each `api-faults` replaces the last (closed by the
            // caller); all zero ends it.
            let rates = [error_5xx, rate_limited, lost_response];
            let f = (rates != [0; 3]).then(|| {
                let mut f = Fault::new(FaultKind::ApiFaults, at, 0, 0);
                f.rates_ppm = Some(rates);
                f
            });
            (Slot::Api, f, false)
        }
        // The kinds of NOT_REAL were refused as they were read.
        other => return Err(format!("{other:?} cannot be caused for real")),
    })
}

/// Ends the fault open on `slot` at `at`, or says that none was.
fn close(
    e: &mut Errs,
    open: &mut BTreeMap<Slot, Open>,
    out: &mut Vec<(Fault, Entry)>,
    slot: Slot,
    at: u64,
    entry: &Entry,
    topo: &Topology,
) {
    match open.remove(&slot) {
        Some(o) => {
            let mut f = o.fault;
            f.for_ms = at - f.at_ms;
            out.push((f, o.at));
        }
        None => e.push(
            &entry.path,
            format!(
                "ends a fault on {} that is not under way",
                what(&slot, topo)
            ),
        ),
    }
}

/// What a slot is, for a person.
fn what(slot: &Slot, topo: &Topology) -> String {
    let region = |r: &usize| format!("{:?}", topo.regions[*r].name);
    match slot {
        Slot::Node(n) => format!("node {:?}", topo.nodes[*n].name),
        Slot::Region(r) => format!("region {}", region(r)),
        Slot::OneWay(a, b) => format!("the link {} -> {}", region(a), region(b)),
        Slot::Channel(c) => format!("channel {c:?}"),
        Slot::Store => "the store".into(),
        Slot::KillSwitch => "the kill switch".into(),
        Slot::Api => "the API".into(),
    }
}

/// Two faults on one node at once (a node killed while its clock is
/// wrong) cannot both be caused and ended: refused.
fn node_overlaps(e: &mut Errs, faults: &[(Fault, Entry)], topo: &Topology) {
    for (i, (a, Entry { path: pa, .. })) in faults.iter().enumerate() {
        for (b, Entry { path: pb, .. }) in &faults[i + 1..] {
            let same = a.kind.on_node() && b.kind.on_node() && a.target == b.target;
            if same && b.at_ms < a.at_ms + a.for_ms {
                e.push(
                    pb,
                    format!(
                        "{} on node {:?} overlaps {} from {pa}",
                        b.kind.name(),
                        topo.nodes[b.target].name,
                        a.kind.name()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::fleet::{cluster_toml, FleetShape};

    /// The generated fleet: nodes n0..n5, regions r0..r2, channels
    /// "r0-ch-0"...
    fn fleet() -> (String, Topology) {
        let text = cluster_toml(&FleetShape {
            nodes: 6,
            regions: 3,
            channels_per_node: 1,
            lease_ms: 2_000,
        });
        let topo = topology::config::parse_topology(&text).expect("the chaos fleet");
        (text, topo)
    }

    fn faults_of(text: &str) -> Value {
        let t: Table = text.parse().expect("TOML");
        t.get("faults").cloned().expect("[[faults]]")
    }

    const SHARED: &str = r#"
[[faults]]
at_s = 10
kind = "crash-node"
node = "n1"

[[faults]]
at_s = 5.5
kind = "one-way"
from = "r0"
to = "r2"

[[faults]]
at_s = 20
kind = "start-node"
node = "n1"

[[faults]]
at_s = 12
kind = "heal-one-way"
from = "r0"
to = "r2"

[[faults]]
at_s = 30
kind = "api-faults"
error_5xx = 50000
lost_response = 1000

[[faults]]
at_s = 40
kind = "api-faults"

[[faults]]
at_s = 50
kind = "freeze-node"
node = "n4"
"#;

    #[test]
    fn simulator_events_pair_into_faults_and_open_ones_end_at_the_heal() {
        let (channel, topo) = (fleet().1.channels[0].name.clone(), fleet().1);
        let text = format!(
            "{SHARED}
[[faults]]
at_s = 60
kind = \"store-cut\"
node = \"n2\"
for_s = 4

[[faults]]
at_s = 61
kind = \"region-partition\"
between = [\"r1\", \"r2\"]
for_s = 2.5

[[faults]]
at_s = 70
kind = \"pause\"
channel = \"{channel}\"

[[faults]]
at_s = 70
kind = \"kill-switch\"

[[faults]]
at_s = 80
kind = \"kill-switch-off\"
"
        );
        let s = read(&faults_of(&text), &topo, 90).expect("reads");
        let got: Vec<(&str, u64, u64, usize)> = s
            .iter()
            .map(|f| (f.kind.name(), f.at_ms, f.for_ms, f.target))
            .collect();
        assert_eq!(
            got,
            vec![
                ("one-way-partition", 5_500, 6_500, 0),
                ("node-kill", 10_000, 10_000, 1),
                ("api-faults", 30_000, 10_000, 0),
                ("node-freeze", 50_000, 40_000, 4),
                ("store-cut", 60_000, 4_000, 2),
                ("region-partition", 61_000, 2_500, 1),
                ("pause", 70_000, 20_000, 0),
                ("kill-switch", 70_000, 10_000, 0),
            ]
        );
        assert_eq!(s[0].to, Some(2));
        assert_eq!(s[2].rates_ppm, Some([50_000, 0, 1_000]));
        assert_eq!(s[5].to, Some(2));
        assert_eq!(s[6].channel.as_deref(), Some(channel.as_str()));
    }

    #[test]
    fn every_mistake_is_named_at_once_with_its_path() {
        let (_, topo) = fleet();
        let text = r#"
[[faults]]
at_s = 1
kind = "start-node"
node = "n0"

[[faults]]
at_s = 2
kind = "crash-node"
node = "nine"

[[faults]]
at_s = 3
kind = "network"
loss = 1000

[[faults]]
at_s = 4
kind = "store-member-kill"
for_s = 2

[[faults]]
at_s = 5
kind = "gpu-slow"
for_s = 500

[[faults]]
at_s = 6
kind = "meteor"

[[faults]]
at_s = 7
kind = "crash-node"
node = "n3"

[[faults]]
at_s = 8
kind = "freeze-node"
node = "n3"

[[faults]]
at_s = 9
kind = "store-cut"
node = "n3"
for_s = 1

[[faults]]
at_s = 10
kind = "region-partition"
between = ["r1", "r1"]
for_s = 1
colour = "red"

[[faults]]
at_s = 11.5
kind = "node-clock-jump"
"#;
        let err = read(&faults_of(text), &topo, 100).expect_err("refused");
        for want in [
            "faults[0]: ends a fault on node \"n0\" that is not under way",
            "faults[1].node: unknown node \"nine\"; known: n0, n1",
            "faults[2].kind: \"network\" is a simulator fault the chaos runner cannot cause for real: loss, duplication and reordering need tc netem",
            "faults[3].member: missing required key",
            "faults[4].for_s: must be > 0 and <= duration_s (100)",
            "faults[5].kind: unknown kind \"meteor\"; expected one of: crash-node, start-node",
            "faults[7]: node \"n3\" is already under node-kill since faults[6]",
            "faults[8]: store-cut on node \"n3\" overlaps node-kill from faults[6]",
            "faults[9].colour: unknown key `colour`",
            "faults[9].between: two different regions",
            "faults[10].node: missing required key",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }

    /// The faults both can cause, written once: the simulator reads them
    /// (with the chaos fleet as its `[topology]`) as the events the runner
    /// pairs into faults on the same nodes and regions, at the same times.
    #[test]
    fn a_schedule_means_the_same_in_the_simulator() {
        let (cluster, topo) = fleet();
        let chaos = read(&faults_of(SHARED), &topo, 90).expect("the runner reads it");
        let mut scenario = Table::new();
        scenario.insert("name".into(), Value::String("from-chaos".into()));
        scenario.insert("duration_s".into(), Value::Integer(90));
        let cluster: Table = cluster.parse().expect("cluster TOML");
        scenario.insert("topology".into(), Value::Table(cluster));
        scenario.insert("faults".into(), faults_of(SHARED));
        let text = toml::to_string(&scenario).expect("TOML");
        let sim = sim::scenario_file::load(&text).expect("the simulator reads it");
        let name = |n: topology::NodeId| sim.topology.nodes[n.index()].name.clone();
        let region = |r: topology::RegionId| sim.topology.regions[r.index()].name.clone();
        let events: Vec<(u64, String)> = sim
            .faults
            .iter()
            .map(|tf| {
                let what = match &tf.fault {
                    SimFault::CrashNode(n) => format!("crash {}", name(*n)),
                    SimFault::StartNode(n) => format!("start {}", name(*n)),
                    SimFault::FreezeNode(n) => format!("freeze {}", name(*n)),
                    SimFault::OneWay { from, to } => {
                        format!("one-way {} {}", region(*from), region(*to))
                    }
                    SimFault::HealOneWay { from, to } => {
                        format!("heal {} {}", region(*from), region(*to))
                    }
                    SimFault::ApiFaults { error_5xx, .. } => format!("api {error_5xx}"),
                    other => format!("{other:?}"),
                };
                (tf.at_ms, what)
            })
            .collect();
        let mut from_chaos: Vec<(u64, String)> = Vec::new();
        for f in &chaos {
            let node = &topo.nodes[f.target].name;
            let (a, b) = match f.kind {
                FaultKind::NodeKill => (format!("crash {node}"), Some(format!("start {node}"))),
                FaultKind::NodeFreeze => (format!("freeze {node}"), None),
                FaultKind::OneWayPartition => {
                    let (r0, r1) = (
                        &topo.regions[f.target].name,
                        &topo.regions[f.to.unwrap_or(0)].name,
                    );
                    (
                        format!("one-way {r0} {r1}"),
                        Some(format!("heal {r0} {r1}")),
                    )
                }
                FaultKind::ApiFaults => (
                    format!("api {}", f.rates_ppm.unwrap_or_default()[0]),
                    Some("api 0".into()),
                ),
                other => panic!("not in the shared schedule: {other:?}"),
            };
            from_chaos.push((f.at_ms, a));
            from_chaos.extend(b.map(|b| (f.at_ms + f.for_ms, b)));
        }
        from_chaos.sort();
        let mut events = events;
        events.sort();
        assert_eq!(events, from_chaos);
    }
}

#[cfg(test)]
mod readme_tests {
    use super::*;

    /// README's section on schedule files names every kind a schedule
    /// takes and every simulator kind it refuses.
    #[test]
    fn the_readme_names_every_kind() {
        let readme = include_str!("../../../README.md");
        let at = readme
            .find("**The schedule file**")
            .expect("README has the schedule file's section");
        let section = &readme[at..at + 4_000.min(readme.len() - at)];
        let mut missing: Vec<&str> = kinds_accepted()
            .into_iter()
            .chain(NOT_REAL.iter().map(|(k, _)| *k))
            .filter(|k| !section.contains(&format!("`{k}`")))
            .collect();
        // The refused operator kinds are named as a family.
        missing.retain(|k| !k.starts_with("maintenance-") && *k != "provider-back");
        assert!(missing.is_empty(), "README does not name: {missing:?}");
    }
}
