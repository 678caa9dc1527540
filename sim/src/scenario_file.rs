//! Scenarios from TOML files.
//!
//! [`load`] turns the text of a scenario file into a [`Scenario`]: a fleet
//! (an inline cluster config or a generated fleet), optional parameter
//! overrides, a timed fault schedule and the bounds the run is held to.
//! Like the cluster config (`topology::config`), the text is read as a plain
//! `toml::Table` and walked by hand, so that *every* problem is reported at
//! once, one per line, each with the path of the offending field
//! (`faults[2].node: unknown node "x"; known: a, b`). Unknown keys, missing
//! required keys and values of the wrong type are all errors. Loading never
//! panics, whatever the input.
//!
//! # Format
//!
//! A file with a generated fleet:
//!
//! ```toml
//! name = "my-failover"            # required, non-empty
//! description = "us-east-1 dies at 10 min"   # optional, default ""
//! duration_s = 3600               # required, 1..=604800: the faults happen
//!                                 # within this, then the heal
//! liveness_s = 1500               # optional, 1..=604800, default 1500: after
//!                                 # the heal, every planned video ends within this
//! start_utc = "09:00"             # optional, "HH:MM" (UTC) on 2027-01-01,
//!                                 # default "09:00"
//! recovery_bound_ms = 6000        # optional, 1..=3600000: enforce invariant 7
//!                                 # (recovery after a failure) with this bound;
//!                                 # absent: recovery is measured only
//! stop_bound_ms = 2000            # optional, 1..=3600000, default 2000: nothing
//!                                 # starts later than this after a kill switch
//!                                 # or a pause (invariant 8)
//!
//! [fleet]                         # every key optional; defaults shown
//! regions = 3                     # 1..=4: us-east, eu-west, us-west, ap-south
//! nodes_per_region = 2            # 1..=1000, named "<region>-<i>" ("us-east-1")
//! gpus_per_node = 2               # 1..=64, alternately L4 and A100-80G
//! channels = 24                   # 1..=10000, named "ch-0000", "ch-0001", ...
//! videos_per_day = 96             # 1..=10000, per channel
//! failover = true                 # every second channel may fail over
//!
//! [params]                        # every key optional; defaults shown
//! lease_ms = 2000                 # 1..=3600000, > renew_ms and > 200 (the
//!                                 # drift margin)
//! renew_ms = 500                  # 10..=600000
//! publish_timeout_ms = 30000      # 1..=86400000
//! plan_lead_ms = 1800000          # 1..=604800000
//! dispatch_timeout_ms = 120000    # 1..=86400000
//! spill_wait_ms = 60000           # 0..=86400000
//! store_service_ms = 2            # 0..=60000
//! api_latency_ms = 40             # 0..=60000
//! upload_ms = 8000                # 0..=86400000
//! jitter_ms = 2                   # 0..=60000
//!
//! [[faults]]
//! at_s = 600                      # seconds after the start, integer or float,
//!                                 # 0..=duration_s
//! kind = "crash-node"
//! node = "us-east-1"              # a node name of the fleet
//!
//! [[faults]]
//! at_s = 900.5
//! kind = "start-node"
//! node = "us-east-1"
//!
//! [[faults]]
//! at_s = 1200
//! kind = "api-faults"
//! error_5xx = 50000               # per million
//! lost_response = 100000
//!
//! [[faults]]
//! at_s = 1800
//! kind = "api-faults"             # all zero (the defaults): the storm ends
//! ```
//!
//! The same with an inline cluster config: the `[topology]` table holds
//! exactly a cluster config in the format of `topology::config` (regions,
//! latency, nodes, pipelines, projects, channels), each key prefixed with
//! `topology.`:
//!
//! ```toml
//! name = "two-regions"
//! duration_s = 1800
//! recovery_bound_ms = 6000
//!
//! [[topology.regions]]
//! name = "us-east"
//! [[topology.regions]]
//! name = "eu-west"
//!
//! [[topology.latency]]
//! between = ["us-east", "eu-west"]
//! ms = 40
//!
//! [[topology.nodes]]
//! name = "use"
//! region = "us-east"
//! count = 2                       # "use-0", "use-1"
//! [[topology.nodes.gpus]]
//! model = "L4"
//! memory_gib = 24
//! cost_per_hour = 0.8
//!
//! [[topology.nodes]]
//! name = "euw-0"
//! region = "eu-west"
//! [[topology.nodes.gpus]]
//! model = "L4"
//! memory_gib = 24
//! cost_per_hour = 0.8
//!
//! [[topology.pipelines]]
//! name = "shorts"
//! [[topology.pipelines.stages]]
//! name = "script"
//! kind = "external"
//! provider = "llm-a"
//! duration_ms = 2000
//! [[topology.pipelines.stages]]
//! name = "render"
//! kind = "gpu"
//! duration_ms = 30000
//! gpu_memory_gib = 8
//! [[topology.pipelines.stages]]
//! name = "upload"
//! kind = "publish"
//! duration_ms = 5000
//!
//! [[topology.projects]]
//! name = "yt-main"
//!
//! [[topology.channels]]
//! name = "cooking"
//! home_region = "us-east"
//! failover_regions = ["eu-west"]
//! videos_per_day = 48
//! pipeline = "shorts"
//! project = "yt-main"
//!
//! [[faults]]
//! at_s = 300
//! kind = "partition-region"
//! region = "us-east"
//!
//! [[faults]]
//! at_s = 600
//! kind = "heal-region"
//! region = "us-east"
//!
//! [[faults]]
//! at_s = 900
//! kind = "provider-outage"
//! provider = "llm-a"
//!
//! [[faults]]
//! at_s = 1200
//! kind = "provider-back"
//! provider = "llm-a"
//! ```
//!
//! # Fault kinds
//!
//! Every fault has `at_s` and `kind`; the other keys depend on the kind.
//! Nodes, regions and channels are given by name, providers by the name a
//! pipeline stage uses (`provider` or `cheap_provider`). "ppm" values are
//! per million, `0..=1000000`.
//!
//! | kind               | keys                                              |
//! |--------------------|---------------------------------------------------|
//! | `crash-node`       | `node`                                            |
//! | `start-node`       | `node` (starts a crashed or drained node)         |
//! | `drain-node`       | `node` (hands its channels away, then stops)      |
//! | `exclude-node`     | `node` (an operator's exclude: it runs and holds nothing) |
//! | `include-node`     | `node` (the exclude undone)                       |
//! | `maintenance-node` | `node`, `duration_s` (1..=86400): it may restart without its channels moving |
//! | `maintenance-zone` | `zone`, `duration_s` (1..=86400): every node of the zone, as above |
//! | `maintenance-off`  | none (the window ends now)                        |
//! | `budget`           | `channel`, `daily_hard_usd` (dollars): the operator's daily hard limit |
//! | `quota`            | `project`, `bucket` (its name), `units_per_day` (0..=10^12): the operator's daily units |
//! | `freeze-node`      | `node` (SIGSTOP: keeps its state, what is sent to it waits) |
//! | `thaw-node`        | `node` (runs again, sees all that waited at once) |
//! | `partition-region` | `region` (cut off from other regions and the store) |
//! | `heal-region`      | `region`                                          |
//! | `one-way`          | `from`, `to`: regions, different; `from` → `to` node messages are dropped |
//! | `heal-one-way`     | `from`, `to`                                      |
//! | `store-outage`     | none                                              |
//! | `store-back`       | none                                              |
//! | `store-slow`       | `ms` (0..=600000): every store call takes this much longer; 0 ends it |
//! | `commit-unknown`   | `ppm` (0 ends the storm)                          |
//! | `gpu-failures`     | `ppm`                                             |
//! | `stragglers`       | `ppm`                                             |
//! | `provider-outage`  | `provider`                                        |
//! | `provider-back`    | `provider`                                        |
//! | `api-faults`       | `error_5xx`, `rate_limited`, `lost_response`: ppm, each optional, default 0 |
//! | `kill-switch`      | none (the fleet-wide kill switch)                 |
//! | `pause`            | `channel`                                         |
//! | `resume`           | `channel`                                         |
//! | `clock-skew`       | `node`, `offset_ms` (integer, may be negative, within ±604800000), `drift_ppm` (optional, default 0, within ±10000). At time 0 it is the node's clock from boot; later it may set a running node's clock ahead, never back (as no step of the wall clock moves a live node's clock): a step back reaches the node at its next start |
//! | `network`          | `loss`, `duplicate`, `reorder`: ppm, each optional, default 0 |
//! | `quota-used-elsewhere` | `units` (1..=1000000000): another client of every project uses them today |
//!
//! The kinds and their keys are defined once, in [`FAULT_KINDS`]; a test
//! checks that this table and the README's list the same, in the same order.
//!
//! # Rules
//!
//! - At most one of `[topology]` and `[fleet]`; with neither, the default
//!   fleet (3 regions, 6 nodes, 12 GPUs, 24 channels) is used. Errors in an
//!   inline cluster config carry its paths prefixed with `topology.`
//!   (`topology.nodes[0].region: unknown region ...`).
//! - Faults are applied in time order (faults at the same time in file
//!   order), whatever their order in the file; a fault after `duration_s`
//!   is an error. Errors name a fault by its position in the file
//!   (`faults[2]`).
//! - `at_s` is rounded to the nearest millisecond.
//! - The machines' and the world's parameters not listed under `[params]`
//!   keep the defaults of the built-in scenarios.

use std::sync::Arc;

use toml::{Table, Value};

use topology::config::ConfigErrors;
use topology::toml_walk::{
    hh_mm_fields, idx_path, key_path, known_list_at_most, one_line, parse_table, type_error, Errs,
    Obj,
};
use topology::{ChannelId, NodeId, ProjectId, RegionId, StageKind, Topology};

use crate::scenario::{
    Bounds, Fault, MachineParams, Scenario, TimedFault, WorldParams, EPOCH_2027_MS,
};
use crate::scenarios::{build_fleet, FleetShape};

const MIN_MS: u64 = 60_000;
const MAX_DURATION_S: i64 = 7 * 86_400;
const DEFAULT_LIVENESS_S: i64 = 1_500;
const DEFAULT_START_MIN: u64 = 9 * 60;
const MAX_BOUND_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const PPM_MAX: i64 = 1_000_000;
const MAX_OFFSET_MS: i64 = 7 * DAY_MS;
const MAX_DRIFT_PPM: i64 = 10_000;
/// Names listed after "known:" at most.
const KNOWN_LISTED: usize = 20;

const TOP_KEYS: [&str; 11] = [
    "name",
    "description",
    "duration_s",
    "liveness_s",
    "start_utc",
    "recovery_bound_ms",
    "stop_bound_ms",
    "topology",
    "fleet",
    "params",
    "faults",
];

const FLEET_KEYS: [&str; 6] = [
    "regions",
    "nodes_per_region",
    "gpus_per_node",
    "channels",
    "videos_per_day",
    "failover",
];

const PARAM_KEYS: [&str; 10] = [
    "lease_ms",
    "renew_ms",
    "publish_timeout_ms",
    "plan_lead_ms",
    "dispatch_timeout_ms",
    "spill_wait_ms",
    "store_service_ms",
    "api_latency_ms",
    "upload_ms",
    "jitter_ms",
];

/// Parses and validates a scenario file. See the module docs for the format.
/// On failure, the error holds every problem found, one per line.
pub fn load(text: &str) -> Result<Scenario, String> {
    let root = match parse_table(text) {
        Ok(t) => t,
        Err(message) => return Err(format!("<toml>: {message}")),
    };
    let mut e = Errs(Vec::new());
    let scenario = build(&mut e, &root);
    match scenario {
        Some(s) if e.0.is_empty() => Ok(s),
        _ if e.0.is_empty() => Err("<scenario>: invalid scenario".to_string()),
        _ => Err(ConfigErrors(e.0).to_string()),
    }
}

// ---------------------------------------------------------------------------
// Scenario-specific value helpers (the generic ones are in
// `topology::toml_walk`, shared with the cluster config).

/// "a, b, c", at most [`KNOWN_LISTED`] of them, or "(none)".
fn known_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    known_list_at_most(names, KNOWN_LISTED)
}

/// Per-million values.
trait PpmExt {
    /// An optional per-million value.
    fn ppm_opt(&self, e: &mut Errs, key: &str) -> Option<u32>;
    /// A required per-million value.
    fn ppm_req(&self, e: &mut Errs, key: &str) -> Option<u32>;
}

impl PpmExt for Obj<'_> {
    fn ppm_opt(&self, e: &mut Errs, key: &str) -> Option<u32> {
        self.int_range_opt(e, key, 0, PPM_MAX)
            .and_then(|i| u32::try_from(i).ok())
    }

    fn ppm_req(&self, e: &mut Errs, key: &str) -> Option<u32> {
        if self.missing(e, key) {
            return None;
        }
        self.ppm_opt(e, key)
    }
}

/// "HH:MM", hours 0..=23, minutes 0..=59: minutes after midnight.
fn parse_hh_mm(s: &str) -> Option<u64> {
    let (h, m) = hh_mm_fields(s)?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(u64::from(h) * 60 + u64::from(m))
}

// ---------------------------------------------------------------------------
// The scenario.

fn build(e: &mut Errs, root: &Table) -> Option<Scenario> {
    let o = Obj::new(e, root, String::new(), &TOP_KEYS);
    let head = head(e, &o);
    let topology = fleet(e, &o);
    let mut world = WorldParams::default();
    let mut machines = MachineParams::default();
    if let Some(t) = o.table_opt(e, "params") {
        params(e, t, &mut world, &mut machines);
    }
    let names = topology.as_ref().map(Names::new);
    let faults = faults(e, root, names.as_ref(), head.duration_s);

    let duration_ms = head
        .duration_s
        .and_then(|d| u64::try_from(d).ok())
        .map(|d| d * 1_000);
    let liveness_ms = u64::try_from(head.liveness_s).ok()? * 1_000;
    Some(Scenario {
        name: head.name?.to_string(),
        description: head.description.to_string(),
        topology: Arc::new(topology?),
        start_utc_ms: EPOCH_2027_MS + head.start_min * MIN_MS,
        duration_ms: duration_ms?,
        world,
        machines,
        faults,
        bounds: Bounds {
            recovery_ms: head.recovery_ms,
            stop_ms: head.stop_ms,
            liveness_ms,
        },
    })
}

/// The top-level values besides the fleet, the parameters and the faults.
struct Head<'a> {
    name: Option<&'a str>,
    description: &'a str,
    duration_s: Option<i64>,
    liveness_s: i64,
    /// Minutes after midnight UTC.
    start_min: u64,
    recovery_ms: Option<u64>,
    stop_ms: u64,
}

fn head<'a>(e: &mut Errs, o: &Obj<'a>) -> Head<'a> {
    Head {
        name: o.name_req(e, "name"),
        description: o.str_opt(e, "description").unwrap_or(""),
        duration_s: o.int_range_req(e, "duration_s", 1, MAX_DURATION_S),
        liveness_s: o
            .int_range_opt(e, "liveness_s", 1, MAX_DURATION_S)
            .unwrap_or(DEFAULT_LIVENESS_S),
        start_min: start_min(e, o),
        recovery_ms: o
            .int_range_opt(e, "recovery_bound_ms", 1, MAX_BOUND_MS)
            .and_then(|i| u64::try_from(i).ok()),
        stop_ms: o
            .u64_opt(e, "stop_bound_ms", 1, MAX_BOUND_MS)
            .unwrap_or(2_000),
    }
}

/// `start_utc` in minutes after midnight.
fn start_min(e: &mut Errs, o: &Obj) -> u64 {
    match o.str_opt(e, "start_utc") {
        None => DEFAULT_START_MIN,
        Some(s) => parse_hh_mm(s).unwrap_or_else(|| {
            e.push(
                o.p("start_utc"),
                format!("expected \"HH:MM\" between \"00:00\" and \"23:59\", found {s:?}"),
            );
            DEFAULT_START_MIN
        }),
    }
}

/// The fleet: `[topology]`, `[fleet]` or, with neither, the default one.
/// Both are read (and their mistakes reported) even when both are given.
fn fleet(e: &mut Errs, o: &Obj) -> Option<Topology> {
    if o.has("topology") && o.has("fleet") {
        e.push(
            "fleet",
            "give either [topology] or [fleet], not both (the two conflict)",
        );
    }
    let inline = o
        .table_opt(e, "topology")
        .and_then(|t| inline_topology(e, t));
    let fleet = o.table_opt(e, "fleet").and_then(|t| fleet_topology(e, t));
    if o.has("topology") {
        inline
    } else if o.has("fleet") {
        fleet
    } else {
        Some(build_fleet(&FleetShape::default()))
    }
}

/// The `[[faults]]` array, in time order (faults at the same time in file
/// order).
fn faults(
    e: &mut Errs,
    root: &Table,
    names: Option<&Names>,
    duration_s: Option<i64>,
) -> Vec<TimedFault> {
    let mut faults = Vec::new();
    let Some(v) = root.get("faults") else {
        return faults;
    };
    let Some(a) = v.as_array() else {
        e.push("faults", type_error("an array of tables", v));
        return faults;
    };
    for (i, f) in a.iter().enumerate() {
        let path = idx_path("faults", i);
        match f.as_table() {
            None => e.push(&path, type_error("a table", f)),
            Some(t) => faults.extend(fault(e, t, path, names, duration_s)),
        }
    }
    // Stable: faults at the same time keep their file order.
    faults.sort_by_key(|f: &TimedFault| f.at_ms);
    faults
}

/// The `[topology]` table, handed to the cluster config parser.
fn inline_topology(e: &mut Errs, t: &Table) -> Option<Topology> {
    let text = match toml::to_string(t) {
        Ok(s) => s,
        Err(err) => {
            e.push(
                "topology",
                format!(
                    "cannot read as a cluster config: {}",
                    one_line(&err.to_string())
                ),
            );
            return None;
        }
    };
    match topology::config::parse_topology(&text) {
        Ok(topo) => Some(topo),
        Err(errs) => {
            for ce in errs.0 {
                let path = if ce.path.is_empty() || ce.path.starts_with('<') {
                    "topology".to_string()
                } else {
                    format!("topology.{}", ce.path)
                };
                e.push(path, ce.message);
            }
            None
        }
    }
}

/// The `[fleet]` table: a generated fleet.
fn fleet_topology(e: &mut Errs, t: &Table) -> Option<Topology> {
    let o = Obj::new(e, t, "fleet".into(), &FLEET_KEYS);
    let d = FleetShape::default();
    // Unknown keys aside, a bad value would build a fleet that is not the
    // one the file describes: then there is none to check names against.
    let before = e.0.len();
    let size = |e: &mut Errs, key: &str, hi: i64, default: usize| -> usize {
        o.int_range_opt(e, key, 1, hi)
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(default)
    };
    let shape = FleetShape {
        regions: size(e, "regions", 4, d.regions),
        nodes_per_region: size(e, "nodes_per_region", 1_000, d.nodes_per_region),
        gpus_per_node: size(e, "gpus_per_node", 64, d.gpus_per_node),
        channels: size(e, "channels", 10_000, d.channels),
        videos_per_day: o
            .int_range_opt(e, "videos_per_day", 1, 10_000)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(d.videos_per_day),
        failover: o.bool_opt(e, "failover").unwrap_or(d.failover),
        ..d
    };
    if e.0.len() > before {
        return None;
    }
    Some(build_fleet(&shape))
}

fn params(e: &mut Errs, t: &Table, world: &mut WorldParams, machines: &mut MachineParams) {
    let o = Obj::new(e, t, "params".into(), &PARAM_KEYS);
    let lease = o.u64_opt(e, "lease_ms", 1, MAX_BOUND_MS);
    let renew = o.u64_opt(e, "renew_ms", 10, 600_000);
    let m = &mut machines.membership;
    if let Some(v) = lease {
        m.lease_ms = v;
    }
    if let Some(v) = renew {
        m.renew_ms = v;
    }
    if (lease.is_some() || renew.is_some()) && m.lease_ms <= m.renew_ms {
        let path = if lease.is_some() {
            "params.lease_ms"
        } else {
            "params.renew_ms"
        };
        e.push(
            path,
            format!(
                "must be greater than renew_ms (lease_ms {}, renew_ms {})",
                m.lease_ms, m.renew_ms
            ),
        );
    }
    if lease.is_some() && m.lease_ms <= m.drift_margin_ms {
        e.push(
            "params.lease_ms",
            format!(
                "must be greater than the lease drift margin ({} ms)",
                m.drift_margin_ms
            ),
        );
    }
    let c = &mut machines.channel;
    let day = DAY_MS;
    if let Some(v) = o.u64_opt(e, "publish_timeout_ms", 1, day) {
        c.publish_timeout_ms = v;
    }
    if let Some(v) = o.u64_opt(e, "plan_lead_ms", 1, 7 * day) {
        c.plan_lead_ms = v;
    }
    if let Some(v) = o.u64_opt(e, "dispatch_timeout_ms", 1, day) {
        c.dispatch_timeout_ms = v;
    }
    if let Some(v) = o.u64_opt(e, "spill_wait_ms", 0, day) {
        machines.dispatch.spill_wait_ms = v;
    }
    if let Some(v) = o.u64_opt(e, "store_service_ms", 0, 60_000) {
        world.store_service_ms = v;
    }
    if let Some(v) = o.u64_opt(e, "api_latency_ms", 0, 60_000) {
        world.api_latency_ms = v;
    }
    if let Some(v) = o.u64_opt(e, "upload_ms", 0, day) {
        world.upload_ms = v;
    }
    if let Some(v) = o.u64_opt(e, "jitter_ms", 0, 60_000) {
        world.jitter_ms = v;
    }
}

// ---------------------------------------------------------------------------
// Faults.

/// The names faults may refer to.
struct Names<'a> {
    topo: &'a Topology,
    providers: Vec<&'a str>,
}

impl<'a> Names<'a> {
    fn new(topo: &'a Topology) -> Names<'a> {
        let mut providers: Vec<&str> = Vec::new();
        for p in &topo.pipelines {
            for s in &p.stages {
                if let StageKind::External {
                    provider,
                    cheap_provider,
                } = &s.kind
                {
                    for name in std::iter::once(provider.as_str()).chain(cheap_provider.as_deref())
                    {
                        if !providers.contains(&name) {
                            providers.push(name);
                        }
                    }
                }
            }
        }
        Names { topo, providers }
    }
}

/// The index of `name` in `list`, or an error listing the known names
/// (the chaos runner's schedule files name their own targets with it).
pub fn find<'a>(
    e: &mut Errs,
    path: &str,
    what: &str,
    name: &str,
    list: impl Iterator<Item = &'a str> + Clone,
) -> Option<usize> {
    match list.clone().position(|n| n == name) {
        Some(i) => Some(i),
        None => {
            e.push(
                path,
                format!("unknown {what} {name:?}; known: {}", known_list(list)),
            );
            None
        }
    }
}

/// Resolving references; without a fleet (it had errors of its own) the
/// names are only type-checked and id 0 stands in.
struct Refs<'a, 'b> {
    o: &'b Obj<'a>,
    names: Option<&'b Names<'b>>,
}

impl Refs<'_, '_> {
    fn node(&self, e: &mut Errs, key: &str) -> Option<NodeId> {
        let name = self.o.name_req(e, key)?;
        let Some(n) = self.names else {
            return Some(NodeId(0));
        };
        let i = find(
            e,
            &self.o.p(key),
            "node",
            name,
            n.topo.nodes.iter().map(|x| x.name.as_str()),
        )?;
        u32::try_from(i).ok().map(NodeId)
    }

    fn region(&self, e: &mut Errs, key: &str) -> Option<RegionId> {
        let name = self.o.name_req(e, key)?;
        let Some(n) = self.names else {
            return Some(RegionId(0));
        };
        let i = find(
            e,
            &self.o.p(key),
            "region",
            name,
            n.topo.regions.iter().map(|x| x.name.as_str()),
        )?;
        u16::try_from(i).ok().map(RegionId)
    }

    fn channel(&self, e: &mut Errs, key: &str) -> Option<ChannelId> {
        let name = self.o.name_req(e, key)?;
        let Some(n) = self.names else {
            return Some(ChannelId(0));
        };
        let i = find(
            e,
            &self.o.p(key),
            "channel",
            name,
            n.topo.channels.iter().map(|x| x.name.as_str()),
        )?;
        u32::try_from(i).ok().map(ChannelId)
    }

    fn provider(&self, e: &mut Errs, key: &str) -> Option<String> {
        let name = self.o.name_req(e, key)?;
        if let Some(n) = self.names {
            find(
                e,
                &self.o.p(key),
                "provider",
                name,
                n.providers.iter().copied(),
            )?;
        }
        Some(name.to_string())
    }
}

/// `at_s` in milliseconds, within the duration (the chaos runner's
/// schedule files read their times with it too).
pub fn at_ms(e: &mut Errs, o: &Obj, duration_s: Option<i64>) -> Option<u64> {
    let path = o.p("at_s");
    if o.missing(e, "at_s") {
        return None;
    }
    let v = o.t.get("at_s")?;
    let (secs, shown) = match v {
        Value::Integer(i) => (*i as f64, i.to_string()),
        Value::Float(f) => (*f, f.to_string()),
        other => {
            e.push(&path, type_error("a number (seconds)", other));
            return None;
        }
    };
    if !secs.is_finite() {
        e.push(&path, "must be a finite number");
        return None;
    }
    if secs < 0.0 {
        e.push(&path, "must be >= 0");
        return None;
    }
    let limit = duration_s.unwrap_or(MAX_DURATION_S);
    if secs > limit as f64 {
        if duration_s.is_some() {
            e.push(&path, format!("{shown} is beyond duration_s ({limit})"));
        } else {
            e.push(&path, format!("must be <= {limit}"));
        }
        return None;
    }
    // Within 0..=604800 s: the product fits a u64 exactly enough.
    Some((secs * 1_000.0).round() as u64)
}

/// How a fault kind reads its keys into a [`Fault`]. The table's unknown
/// keys (those not in [`FaultKind::keys`]) are already reported.
type ReadFault = fn(&mut Errs, &Refs<'_, '_>) -> Option<Fault>;

/// A fault kind of scenario files: the value of `kind` and what it takes.
pub struct FaultKind {
    /// The value of `kind` (`"crash-node"`).
    pub name: &'static str,
    /// The keys it takes besides `at_s` and `kind`, in the order the module
    /// docs and the README list them; any other key is an error.
    pub keys: &'static [&'static str],
    /// What it does, in one line.
    pub about: &'static str,
    read: ReadFault,
}

impl std::fmt::Debug for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultKind")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("about", &self.about)
            .finish_non_exhaustive()
    }
}

/// Every fault kind of scenario files: the one definition the parser reads
/// kinds and their keys from (a test checks the module docs' table and the
/// README's against it).
pub const FAULT_KINDS: &[FaultKind] = &[
    FaultKind {
        name: "crash-node",
        keys: &["node"],
        about: "the node's process dies; what it held in memory is lost",
        read: |e, r| Some(Fault::CrashNode(r.node(e, "node")?)),
    },
    FaultKind {
        name: "start-node",
        keys: &["node"],
        about: "starts a crashed or drained node",
        read: |e, r| Some(Fault::StartNode(r.node(e, "node")?)),
    },
    FaultKind {
        name: "drain-node",
        keys: &["node"],
        about: "the node hands its channels away, then stops",
        read: |e, r| Some(Fault::DrainNode(r.node(e, "node")?)),
    },
    FaultKind {
        name: "exclude-node",
        keys: &["node"],
        about: "an operator excludes the node: it keeps running and holds nothing",
        read: |e, r| Some(Fault::Exclude(r.node(e, "node")?)),
    },
    FaultKind {
        name: "include-node",
        keys: &["node"],
        about: "the operator includes the excluded node again",
        read: |e, r| Some(Fault::Include(r.node(e, "node")?)),
    },
    FaultKind {
        name: "maintenance-node",
        keys: &["node", "duration_s"],
        about: "a maintenance window for a node",
        read: |e, r| {
            let node = r.node(e, "node");
            let duration_ms = window_ms(e, r);
            Some(Fault::Maintenance {
                nodes: vec![node?],
                duration_ms: duration_ms?,
            })
        },
    },
    FaultKind {
        name: "maintenance-zone",
        keys: &["zone", "duration_s"],
        about: "a maintenance window for every node of a zone",
        read: maintenance_zone,
    },
    FaultKind {
        name: "maintenance-off",
        keys: &[],
        about: "the maintenance window ends now",
        read: |_, _| Some(Fault::MaintenanceOff),
    },
    FaultKind {
        name: "budget",
        keys: &["channel", "daily_hard_usd"],
        about: "an operator sets a channel's daily hard budget (its soft limit no higher)",
        read: |e, r| {
            let channel = r.channel(e, "channel");
            let usd = if r.o.missing(e, "daily_hard_usd") {
                None
            } else {
                let v = r.o.t.get("daily_hard_usd")?;
                topology::config::dollars(e, &r.o.p("daily_hard_usd"), v)
            };
            Some(Fault::Budget {
                channel: channel?,
                daily_hard_micros: usd?,
            })
        },
    },
    FaultKind {
        name: "quota",
        keys: &["project", "bucket", "units_per_day"],
        about: "an operator sets a project's daily units of a bucket (the API grants them)",
        read: quota_limit,
    },
    FaultKind {
        name: "freeze-node",
        keys: &["node"],
        about: "SIGSTOP: the node keeps its state, what is sent to it waits",
        read: |e, r| Some(Fault::FreezeNode(r.node(e, "node")?)),
    },
    FaultKind {
        name: "thaw-node",
        keys: &["node"],
        about: "a frozen node runs again and sees all that waited at once",
        read: |e, r| Some(Fault::ThawNode(r.node(e, "node")?)),
    },
    FaultKind {
        name: "partition-region",
        keys: &["region"],
        about: "cuts the region off from the other regions and the store",
        read: |e, r| Some(Fault::PartitionRegion(r.region(e, "region")?)),
    },
    FaultKind {
        name: "heal-region",
        keys: &["region"],
        about: "ends the region's partition",
        read: |e, r| Some(Fault::HealRegion(r.region(e, "region")?)),
    },
    FaultKind {
        name: "one-way",
        keys: &["from", "to"],
        about: "node messages from region `from` to region `to` are dropped",
        read: |e, r| {
            let (from, to) = r.two_regions(e)?;
            Some(Fault::OneWay { from, to })
        },
    },
    FaultKind {
        name: "heal-one-way",
        keys: &["from", "to"],
        about: "ends a one-way partition",
        read: |e, r| {
            let (from, to) = r.two_regions(e)?;
            Some(Fault::HealOneWay { from, to })
        },
    },
    FaultKind {
        name: "store-outage",
        keys: &[],
        about: "the store answers nothing",
        read: |_, _| Some(Fault::StoreOutage(true)),
    },
    FaultKind {
        name: "store-back",
        keys: &[],
        about: "the store answers again",
        read: |_, _| Some(Fault::StoreOutage(false)),
    },
    FaultKind {
        name: "store-slow",
        keys: &["ms"],
        about: "every store call takes this much longer; 0 ends it",
        read: |e, r| {
            let ms = r.o.int_range_req(e, "ms", 0, 600_000)?;
            Some(Fault::StoreSlow(u32::try_from(ms).ok()?))
        },
    },
    FaultKind {
        name: "commit-unknown",
        keys: &["ppm"],
        about: "commits answer \"result unknown\" at this rate; 0 ends the storm",
        read: |e, r| Some(Fault::CommitUnknown(r.o.ppm_req(e, "ppm")?)),
    },
    FaultKind {
        name: "gpu-failures",
        keys: &["ppm"],
        about: "GPU jobs fault mid-way at this rate",
        read: |e, r| Some(Fault::GpuFailures(r.o.ppm_req(e, "ppm")?)),
    },
    FaultKind {
        name: "stragglers",
        keys: &["ppm"],
        about: "GPU jobs run several times longer at this rate",
        read: |e, r| Some(Fault::Stragglers(r.o.ppm_req(e, "ppm")?)),
    },
    FaultKind {
        name: "provider-outage",
        keys: &["provider"],
        about: "an external provider of a pipeline stage is down",
        read: |e, r| {
            let provider = r.provider(e, "provider")?;
            Some(Fault::ProviderOutage {
                provider,
                down: true,
            })
        },
    },
    FaultKind {
        name: "provider-back",
        keys: &["provider"],
        about: "the provider is up again",
        read: |e, r| {
            let provider = r.provider(e, "provider")?;
            Some(Fault::ProviderOutage {
                provider,
                down: false,
            })
        },
    },
    FaultKind {
        name: "api-faults",
        keys: &["error_5xx", "rate_limited", "lost_response"],
        about: "the publishing API answers 5xx, 429 or loses responses at these rates",
        read: |e, r| {
            let [error_5xx, rate_limited, lost_response] =
                r.rates(e, ["error_5xx", "rate_limited", "lost_response"])?;
            Some(Fault::ApiFaults {
                error_5xx,
                rate_limited,
                lost_response,
            })
        },
    },
    FaultKind {
        name: "kill-switch",
        keys: &[],
        about: "the fleet-wide kill switch",
        read: |_, _| Some(Fault::KillSwitch),
    },
    FaultKind {
        name: "pause",
        keys: &["channel"],
        about: "pauses a channel",
        read: |e, r| Some(Fault::Pause(r.channel(e, "channel")?)),
    },
    FaultKind {
        name: "resume",
        keys: &["channel"],
        about: "resumes a paused channel",
        read: |e, r| Some(Fault::Resume(r.channel(e, "channel")?)),
    },
    FaultKind {
        name: "clock-skew",
        keys: &["node", "offset_ms", "drift_ppm"],
        about: "sets a node's clock offset from true time and its rate error",
        read: clock_skew,
    },
    FaultKind {
        name: "network",
        keys: &["loss", "duplicate", "reorder"],
        about: "node messages are lost, duplicated or reordered at these rates",
        read: |e, r| {
            let [loss, duplicate, reorder] = r.rates(e, ["loss", "duplicate", "reorder"])?;
            Some(Fault::Network {
                loss,
                duplicate,
                reorder,
            })
        },
    },
    FaultKind {
        name: "quota-used-elsewhere",
        keys: &["units"],
        about: "another client of every project uses this many units of each bucket today",
        read: |e, r| {
            let units = r.o.int_range_req(e, "units", 1, 1_000_000_000)?;
            Some(Fault::QuotaUsedElsewhere {
                units: u32::try_from(units).ok()?,
            })
        },
    },
];

impl Refs<'_, '_> {
    /// `from` and `to`: two different regions.
    fn two_regions(&self, e: &mut Errs) -> Option<(RegionId, RegionId)> {
        let from = self.region(e, "from");
        let to = self.region(e, "to");
        let (from, to) = (from?, to?);
        if self.names.is_some() && from == to {
            e.push(self.o.p("to"), "must differ from `from`");
            return None;
        }
        Some((from, to))
    }

    /// Optional per-million rates, 0 when absent; `None` if any is wrong.
    fn rates(&self, e: &mut Errs, keys: [&str; 3]) -> Option<[u32; 3]> {
        let before = e.0.len();
        let rates = keys.map(|key| self.o.ppm_opt(e, key).unwrap_or(0));
        if e.0.len() > before {
            return None;
        }
        Some(rates)
    }
}

/// `clock-skew`: a node, its offset (required) and drift (default 0).
fn clock_skew(e: &mut Errs, r: &Refs) -> Option<Fault> {
    let o = r.o;
    let node = r.node(e, "node");
    let offset_ms = if o.missing(e, "offset_ms") {
        None
    } else {
        o.int_range_opt(e, "offset_ms", -MAX_OFFSET_MS, MAX_OFFSET_MS)
    };
    let drift_ppm = match o.t.get("drift_ppm") {
        None => Some(0),
        Some(_) => o
            .int_range_opt(e, "drift_ppm", -MAX_DRIFT_PPM, MAX_DRIFT_PPM)
            .and_then(|i| i32::try_from(i).ok()),
    };
    Some(Fault::ClockSkew {
        node: node?,
        offset_ms: offset_ms?,
        drift_ppm: drift_ppm?,
    })
}

/// `quota`: a `project`, one of its `bucket`s by name, `units_per_day`.
fn quota_limit(e: &mut Errs, r: &Refs) -> Option<Fault> {
    let o = r.o;
    let units = o.int_range_req(e, "units_per_day", 0, 1_000_000_000_000);
    let project = o.name_req(e, "project");
    let bucket = o.name_req(e, "bucket");
    let (project, bucket) = (project?, bucket?);
    let Some(n) = r.names else {
        return Some(Fault::QuotaLimit {
            project: ProjectId(0),
            bucket: 0,
            units_per_day: u64::try_from(units?).ok()?,
        });
    };
    let p = find(
        e,
        &o.p("project"),
        "project",
        project,
        n.topo.projects.iter().map(|x| x.name.as_str()),
    )?;
    let b = find(
        e,
        &o.p("bucket"),
        "bucket",
        bucket,
        n.topo.projects[p].buckets.iter().map(|x| x.name.as_str()),
    )?;
    Some(Fault::QuotaLimit {
        project: ProjectId(u16::try_from(p).ok()?),
        bucket: b,
        units_per_day: u64::try_from(units?).ok()?,
    })
}

/// A maintenance window's `duration_s` (1..=86400), in milliseconds.
fn window_ms(e: &mut Errs, r: &Refs) -> Option<u64> {
    let s = r.o.int_range_req(e, "duration_s", 1, 86_400)?;
    u64::try_from(s).ok().map(|s| s * 1000)
}

/// `maintenance-zone`: every node whose zone is `zone`.
fn maintenance_zone(e: &mut Errs, r: &Refs) -> Option<Fault> {
    let o = r.o;
    let duration_ms = window_ms(e, r);
    let zone = o.name_req(e, "zone")?;
    let nodes = match r.names {
        None => vec![NodeId(0)],
        Some(n) => {
            let nodes: Vec<NodeId> = n
                .topo
                .node_ids()
                .filter(|x| n.topo.node(*x).zone == zone)
                .collect();
            if nodes.is_empty() {
                let mut zones: Vec<&str> = n.topo.nodes.iter().map(|x| x.zone.as_str()).collect();
                zones.sort_unstable();
                zones.dedup();
                e.push(
                    o.p("zone"),
                    format!("no node is in zone {zone:?}; zones: {}", zones.join(", ")),
                );
                return None;
            }
            nodes
        }
    };
    Some(Fault::Maintenance {
        nodes,
        duration_ms: duration_ms?,
    })
}

/// The entry of the fault's `kind`; a missing, mistyped or unknown kind is
/// reported.
fn fault_kind(e: &mut Errs, t: &Table, path: &str) -> Option<&'static FaultKind> {
    let kind_path = key_path(path, "kind");
    let Some(v) = t.get("kind") else {
        e.push(&kind_path, "missing required key");
        return None;
    };
    let Some(k) = v.as_str() else {
        e.push(&kind_path, type_error("a string", v));
        return None;
    };
    let found = FAULT_KINDS.iter().find(|fk| fk.name == k);
    if found.is_none() {
        let known: Vec<&str> = FAULT_KINDS.iter().map(|fk| fk.name).collect();
        e.push(
            &kind_path,
            format!("unknown kind {k:?}; expected one of: {}", known.join(", ")),
        );
    }
    found
}

/// One `[[faults]]` table read exactly as a scenario file's, against
/// `topo` and within `duration_s`: the chaos runner reads the faults its
/// schedule files share with the simulator through this, so that a fault
/// written once means the same in both (same kinds, keys, names, checks
/// and messages). Problems go to `e`, each with its path under `path`.
pub fn read_fault(
    e: &mut Errs,
    t: &Table,
    path: String,
    topo: &Topology,
    duration_s: i64,
) -> Option<TimedFault> {
    let names = Names::new(topo);
    fault(e, t, path, Some(&names), Some(duration_s))
}

/// One `[[faults]]` table.
fn fault(
    e: &mut Errs,
    t: &Table,
    path: String,
    names: Option<&Names>,
    duration_s: Option<i64>,
) -> Option<TimedFault> {
    let Some(kind) = fault_kind(e, t, &path) else {
        // Without a kind the other keys cannot be judged; the time still can.
        at_ms(e, &Obj { t, path }, duration_s);
        return None;
    };
    let mut allowed = vec!["at_s", "kind"];
    allowed.extend_from_slice(kind.keys);
    let o = Obj::new(e, t, path, &allowed);
    let at = at_ms(e, &o, duration_s);
    let fault = (kind.read)(e, &Refs { o: &o, names })?;
    Some(TimedFault { at_ms: at?, fault })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::rng::SeededRng;

    const EXAMPLE: &str = r#"
name = "two-region-drill"
description = "a node dies, a region is cut off, the API misbehaves"
duration_s = 1800
liveness_s = 1200
start_utc = "10:30"
recovery_bound_ms = 6000
stop_bound_ms = 2500

[topology]
[[topology.regions]]
name = "us-east"
[[topology.regions]]
name = "eu-west"

[[topology.latency]]
between = ["us-east", "eu-west"]
ms = 40

[[topology.nodes]]
name = "use-1"
region = "us-east"
[[topology.nodes.gpus]]
model = "L4"
memory_gib = 24
cost_per_hour = 0.8
count = 2

[[topology.nodes]]
name = "euw-1"
region = "eu-west"
zone = "b"
[[topology.nodes.gpus]]
model = "A100-80G"
memory_gib = 80
cost_per_hour = 2.5

[[topology.pipelines]]
name = "shorts"
[[topology.pipelines.stages]]
name = "script"
kind = "external"
provider = "llm-a"
cheap_provider = "llm-b"
duration_ms = 2000
cost = 0.01
[[topology.pipelines.stages]]
name = "render"
kind = "gpu"
duration_ms = 30000
gpu_memory_gib = 8
[[topology.pipelines.stages]]
name = "upload"
kind = "publish"
duration_ms = 5000

[[topology.projects]]
name = "yt-main"

[[topology.channels]]
name = "cooking"
home_region = "us-east"
failover_regions = ["eu-west"]
videos_per_day = 48
pipeline = "shorts"
project = "yt-main"

[[topology.channels]]
name = "news"
home_region = "eu-west"
videos_per_day = 24
pipeline = "shorts"
project = "yt-main"

[params]
lease_ms = 3000
renew_ms = 750
publish_timeout_ms = 45000
spill_wait_ms = 30000
upload_ms = 6000
jitter_ms = 5

[[faults]]
at_s = 600
kind = "crash-node"
node = "use-1"

[[faults]]
at_s = 300.5
kind = "partition-region"
region = "eu-west"

[[faults]]
at_s = 420
kind = "heal-region"
region = "eu-west"

[[faults]]
at_s = 720
kind = "start-node"
node = "use-1"

[[faults]]
at_s = 0
kind = "clock-skew"
node = "euw-1"
offset_ms = -120000
drift_ppm = -300

[[faults]]
at_s = 900
kind = "api-faults"
error_5xx = 50000
lost_response = 100000

[[faults]]
at_s = 900
kind = "one-way"
from = "us-east"
to = "eu-west"

[[faults]]
at_s = 1000
kind = "pause"
channel = "news"

[[faults]]
at_s = 1100
kind = "resume"
channel = "news"

[[faults]]
at_s = 1200
kind = "provider-outage"
provider = "llm-b"

[[faults]]
at_s = 1300
kind = "freeze-node"
node = "euw-1"

[[faults]]
at_s = 1350
kind = "thaw-node"
node = "euw-1"

[[faults]]
at_s = 1400
kind = "network"
loss = 1000

[[faults]]
at_s = 1500
kind = "store-outage"

[[faults]]
at_s = 1530
kind = "store-back"

[[faults]]
at_s = 1800
kind = "kill-switch"
"#;

    #[test]
    fn full_example_loads_as_written() {
        let s = load(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.name, "two-region-drill");
        assert!(s.description.starts_with("a node dies"));
        assert_eq!(s.duration_ms, 1_800_000);
        assert_eq!(s.bounds.liveness_ms, 1_200_000);
        assert_eq!(s.bounds.recovery_ms, Some(6_000));
        assert_eq!(s.bounds.stop_ms, 2_500);
        assert_eq!(s.start_utc_ms, EPOCH_2027_MS + (10 * 60 + 30) * MIN_MS);

        let t = &s.topology;
        assert_eq!(t.regions.len(), 2);
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.gpus.len(), 3);
        assert_eq!(t.pipelines.len(), 1);
        assert_eq!(t.projects.len(), 1);
        assert_eq!(t.channels.len(), 2);
        assert_eq!(t.nodes[1].name, "euw-1");
        assert_eq!(t.latency(RegionId(0), RegionId(1)), 40);

        assert_eq!(s.machines.membership.lease_ms, 3_000);
        assert_eq!(s.machines.membership.renew_ms, 750);
        assert_eq!(s.machines.channel.publish_timeout_ms, 45_000);
        assert_eq!(s.machines.dispatch.spill_wait_ms, 30_000);
        assert_eq!(s.world.upload_ms, 6_000);
        assert_eq!(s.world.jitter_ms, 5);
        // Not overridden: the defaults.
        assert_eq!(s.world.api_latency_ms, 40);
        assert_eq!(s.machines.channel.plan_lead_ms, 30 * MIN_MS);
    }

    #[test]
    fn full_example_faults_come_in_time_order() {
        let s = load(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        let (use1, euw1) = (NodeId(0), NodeId(1));
        let (east, west) = (RegionId(0), RegionId(1));
        let tf = |at_ms, fault| TimedFault { at_ms, fault };
        let expected = vec![
            tf(
                0,
                Fault::ClockSkew {
                    node: euw1,
                    offset_ms: -120_000,
                    drift_ppm: -300,
                },
            ),
            tf(300_500, Fault::PartitionRegion(west)),
            tf(420_000, Fault::HealRegion(west)),
            tf(600_000, Fault::CrashNode(use1)),
            tf(720_000, Fault::StartNode(use1)),
            tf(
                900_000,
                Fault::ApiFaults {
                    error_5xx: 50_000,
                    rate_limited: 0,
                    lost_response: 100_000,
                },
            ),
            tf(
                900_000,
                Fault::OneWay {
                    from: east,
                    to: west,
                },
            ),
            tf(1_000_000, Fault::Pause(ChannelId(1))),
            tf(1_100_000, Fault::Resume(ChannelId(1))),
            tf(
                1_200_000,
                Fault::ProviderOutage {
                    provider: "llm-b".into(),
                    down: true,
                },
            ),
            tf(1_300_000, Fault::FreezeNode(euw1)),
            tf(1_350_000, Fault::ThawNode(euw1)),
            tf(
                1_400_000,
                Fault::Network {
                    loss: 1_000,
                    duplicate: 0,
                    reorder: 0,
                },
            ),
            tf(1_500_000, Fault::StoreOutage(true)),
            tf(1_530_000, Fault::StoreOutage(false)),
            tf(1_800_000, Fault::KillSwitch),
        ];
        assert_eq!(s.faults, expected);
    }

    #[test]
    fn fleet_form_loads() {
        let text = r#"
name = "fleet"
duration_s = 3600

[fleet]
regions = 2
nodes_per_region = 3
gpus_per_node = 1
channels = 10
videos_per_day = 12
failover = false

[[faults]]
at_s = 60
kind = "drain-node"
node = "eu-west-2"

[[faults]]
at_s = 30
kind = "commit-unknown"
ppm = 200000

[[faults]]
at_s = 90
kind = "pause"
channel = "ch-0007"
"#;
        let s = load(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.topology.regions.len(), 2);
        assert_eq!(s.topology.nodes.len(), 6);
        assert_eq!(s.topology.gpus.len(), 6);
        assert_eq!(s.topology.channels.len(), 10);
        assert!(s
            .topology
            .channels
            .iter()
            .all(|c| c.failover_regions.is_empty()));
        assert!(s.topology.channels.iter().all(|c| c.videos_per_day == 12));
        // Defaults of the built-ins.
        assert_eq!(s.start_utc_ms, EPOCH_2027_MS + 9 * 60 * MIN_MS);
        assert_eq!(s.bounds.liveness_ms, 1_500_000);
        assert_eq!(s.bounds.recovery_ms, None);
        assert_eq!(s.bounds.stop_ms, 2_000);
        assert_eq!(s.description, "");
        assert_eq!(
            s.faults,
            vec![
                TimedFault {
                    at_ms: 30_000,
                    fault: Fault::CommitUnknown(200_000)
                },
                TimedFault {
                    at_ms: 60_000,
                    fault: Fault::DrainNode(NodeId(5))
                },
                TimedFault {
                    at_ms: 90_000,
                    fault: Fault::Pause(ChannelId(7))
                },
            ]
        );
    }

    #[test]
    fn no_fleet_means_the_default_fleet() {
        let s = load("name = \"x\"\nduration_s = 60\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.topology.nodes.len(), 6);
        assert_eq!(s.topology.channels.len(), 24);
        assert!(s.faults.is_empty());
    }

    /// The examples in the module docs (which the README copies) load.
    #[test]
    fn doc_examples_load() {
        let src = include_str!("scenario_file.rs");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in src.lines() {
            let Some(doc) = line.strip_prefix("//!") else {
                continue;
            };
            let doc = doc.strip_prefix(' ').unwrap_or(doc);
            match current.as_mut() {
                None if doc.trim() == "```toml" => current = Some(String::new()),
                Some(_) if doc.trim() == "```" => blocks.extend(current.take()),
                Some(b) => {
                    b.push_str(doc);
                    b.push('\n');
                }
                None => {}
            }
        }
        assert_eq!(blocks.len(), 2);
        for b in blocks {
            if let Err(e) = load(&b) {
                panic!("{e}\n---\n{b}");
            }
        }
    }

    /// A value that is valid in a fleet of 2 regions for a fault key.
    fn valid_value(key: &str) -> &'static str {
        match key {
            "node" => "\"us-east-0\"",
            "region" | "from" => "\"us-east\"",
            "to" => "\"eu-west\"",
            "provider" => "\"llm-main\"",
            "channel" => "\"ch-0000\"",
            "offset_ms" => "-5",
            "ms" => "250",
            "units" => "40",
            "zone" => "\"a\"",
            "duration_s" => "60",
            "daily_hard_usd" => "2.5",
            "project" => "\"yt-0\"",
            "bucket" => "\"uploads\"",
            "units_per_day" => "100",
            "drift_ppm" => "7",
            "ppm" | "error_5xx" | "rate_limited" | "lost_response" | "loss" | "duplicate"
            | "reorder" => "1000",
            other => panic!("no test value for the fault key {other:?}"),
        }
    }

    /// A file with one fault of every kind, each with every key of its kind,
    /// and `extra` added to each fault.
    fn every_kind_file(extra: &str) -> String {
        let mut text = String::from("name = \"x\"\nduration_s = 600\n[fleet]\nregions = 2\n");
        for (i, k) in FAULT_KINDS.iter().enumerate() {
            text.push_str(&format!("[[faults]]\nat_s = {i}\nkind = \"{}\"\n", k.name));
            for key in k.keys {
                text.push_str(&format!("{key} = {}\n", valid_value(key)));
            }
            text.push_str(extra);
        }
        text
    }

    #[test]
    fn every_fault_kind_reads_every_key_it_lists() {
        let s = load(&every_kind_file("")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.faults.len(), FAULT_KINDS.len());
        let skew = Fault::ClockSkew {
            node: NodeId(0),
            offset_ms: -5,
            drift_ppm: 7,
        };
        assert!(s.faults.iter().any(|f| f.fault == skew), "{:?}", s.faults);
        let err = load(&every_kind_file("bogus = 1\n")).expect_err("must fail");
        for (i, k) in FAULT_KINDS.iter().enumerate() {
            let mut allowed = vec!["at_s", "kind"];
            allowed.extend_from_slice(k.keys);
            let want = format!(
                "faults[{i}].bogus: unknown key `bogus`; expected one of: {}",
                allowed.join(", ")
            );
            assert!(err.contains(&want), "missing {want:?} in:\n{err}");
        }
        assert_eq!(err.lines().count(), FAULT_KINDS.len(), "{err}");
    }

    #[test]
    fn unknown_kinds_list_every_kind() {
        let err = load("name = \"x\"\nduration_s = 60\n[[faults]]\nat_s = 1\nkind = \"nope\"\n")
            .expect_err("must fail");
        let known: Vec<&str> = FAULT_KINDS.iter().map(|k| k.name).collect();
        let want = format!(
            "faults[0].kind: unknown kind \"nope\"; expected one of: {}",
            known.join(", ")
        );
        assert_eq!(err, want);
    }

    /// A fault-kinds table of the docs: each row's kind and its keys.
    type DocTable = Vec<(String, Vec<String>)>;

    /// The backticked spans of `cell` in order, each once (`` `from`, `to`:
    /// ... `from` → `to` `` is `from`, `to`); descriptive text is skipped.
    fn backticked(cell: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, span) in cell.split('`').enumerate() {
            if i % 2 == 1 && !out.iter().any(|s| s == span) {
                out.push(span.to_string());
            }
        }
        out
    }

    /// The trimmed cells of a markdown table row; `None` for other lines.
    fn table_cells(line: &str) -> Option<Vec<&str>> {
        let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
        Some(inner.split('|').map(str::trim).collect())
    }

    /// The rows of the table headed `| kind | keys |` in the section of
    /// `text` that starts with the line `heading`.
    fn fault_kinds_table(text: &str, heading: &str) -> Result<DocTable, String> {
        let mut lines = text.lines().map(str::trim_end);
        if !lines.by_ref().any(|l| l == heading) {
            return Err(format!("no line {heading:?}"));
        }
        let mut in_code = false;
        loop {
            let Some(line) = lines.next() else {
                return Err(format!("no table `| kind | keys |` after {heading:?}"));
            };
            in_code ^= line.starts_with("```");
            if !in_code && line.starts_with('#') {
                return Err(format!("no table `| kind | keys |` in {heading:?}"));
            }
            if table_cells(line).is_some_and(|c| c == ["kind", "keys"]) {
                break;
            }
        }
        let dashes = |c: &&str| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':');
        match lines.next().and_then(table_cells) {
            Some(c) if c.iter().all(dashes) => {}
            _ => return Err("the `| kind | keys |` header has no `|---|---|` row".into()),
        }
        let mut rows = Vec::new();
        for line in lines.map_while(|l| table_cells(l).map(|c| (l, c))) {
            let (line, cells) = line;
            let [kind, keys] = cells[..] else {
                return Err(format!("{line:?}: expected 2 cells"));
            };
            let [kind] = &backticked(kind)[..] else {
                return Err(format!("{line:?}: the kind cell is not one `name`"));
            };
            rows.push((kind.clone(), backticked(keys)));
        }
        Ok(rows)
    }

    /// How a docs table differs from [`FAULT_KINDS`], one line each.
    fn fault_table_differences(doc: &DocTable) -> Vec<String> {
        let mut out = Vec::new();
        for (i, (kind, keys)) in doc.iter().enumerate() {
            if doc[..i].iter().any(|(k, _)| k == kind) {
                out.push(format!("`{kind}`: listed twice in the table"));
                continue;
            }
            match FAULT_KINDS.iter().find(|k| k.name == kind) {
                None => out.push(format!("`{kind}`: in the table, not in FAULT_KINDS")),
                Some(k) if k.keys != keys.as_slice() => out.push(format!(
                    "`{kind}`: the table lists keys {keys:?}, FAULT_KINDS has {:?}",
                    k.keys
                )),
                Some(_) => {}
            }
        }
        for k in FAULT_KINDS {
            if !doc.iter().any(|(kind, _)| kind == k.name) {
                out.push(format!("`{}`: in FAULT_KINDS, not in the table", k.name));
            }
        }
        if out.is_empty() {
            for (i, ((kind, _), k)) in doc.iter().zip(FAULT_KINDS).enumerate() {
                if kind != k.name {
                    out.push(format!(
                        "row {}: the table has `{kind}` where FAULT_KINDS has `{}` \
                         (same kinds, another order)",
                        i + 1,
                        k.name
                    ));
                }
            }
        }
        out
    }

    /// Panics, naming every difference, unless the table in `text` under
    /// `heading` lists exactly the kinds and keys of [`FAULT_KINDS`].
    fn assert_table_matches(what: &str, text: &str, heading: &str) {
        let table = fault_kinds_table(text, heading).unwrap_or_else(|e| panic!("{what}: {e}"));
        let diffs = fault_table_differences(&table);
        assert!(
            diffs.is_empty(),
            "{what}: the fault-kinds table under {heading:?} differs from FAULT_KINDS:\n{}",
            diffs.join("\n")
        );
    }

    #[test]
    fn readme_fault_table_matches_fault_kinds() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_table_matches("README.md", &readme, "### Scenario files");
    }

    #[test]
    fn module_docs_fault_table_matches_fault_kinds() {
        let docs: Vec<&str> = include_str!("scenario_file.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        assert_table_matches("the module docs", &docs.join("\n"), "# Fault kinds");
    }

    /// `rows` as a [`DocTable`].
    fn doc_table<'a>(rows: impl IntoIterator<Item = (&'a str, &'a [&'a str])>) -> DocTable {
        rows.into_iter()
            .map(|(kind, keys)| {
                (
                    kind.to_string(),
                    keys.iter().map(|k| k.to_string()).collect(),
                )
            })
            .collect()
    }

    /// The rows of [`FAULT_KINDS`] as a [`DocTable`].
    fn fault_kinds_as_doc_table() -> DocTable {
        doc_table(FAULT_KINDS.iter().map(|k| (k.name, k.keys)))
    }

    #[test]
    fn doc_tables_are_read_by_their_backticks() {
        let text = "# T\n\n| kind | keys |\n|---|---|\n\
                    | `one-way` | `from`, `to`: regions; `from` → `to` |\n\
                    | `clock-skew` | `node`, `offset_ms` (integer, ±1), `drift_ppm` (optional) |\n\
                    | `kill-switch` | none (the fleet-wide kill switch) |\n\nafter\n";
        let t = fault_kinds_table(text, "# T").unwrap_or_else(|e| panic!("{e}"));
        let want = doc_table([
            ("one-way", &["from", "to"][..]),
            ("clock-skew", &["node", "offset_ms", "drift_ppm"][..]),
            ("kill-switch", &[][..]),
        ]);
        assert_eq!(t, want);
        let err = fault_kinds_table("# T\n| a | b |\n# U\n| kind | keys |\n", "# T").unwrap_err();
        assert_eq!(err, "no table `| kind | keys |` in \"# T\"");
    }

    /// The table check names what differs.
    #[test]
    fn fault_table_differences_are_named() {
        let exact = fault_kinds_as_doc_table();
        assert_eq!(fault_table_differences(&exact), Vec::<String>::new());
        let mut changed = exact.clone();
        changed[0].1 = vec!["nodes".into()];
        changed.pop();
        changed.push(("explode".into(), vec![]));
        let diffs = fault_table_differences(&changed).join("\n");
        let last = FAULT_KINDS[FAULT_KINDS.len() - 1].name;
        for want in [
            "`crash-node`: the table lists keys [\"nodes\"], FAULT_KINDS has [\"node\"]"
                .to_string(),
            "`explode`: in the table, not in FAULT_KINDS".to_string(),
            format!("`{last}`: in FAULT_KINDS, not in the table"),
        ] {
            assert!(diffs.contains(&want), "missing {want:?} in:\n{diffs}");
        }
        let mut reordered = exact;
        reordered.swap(1, 2);
        let diffs = fault_table_differences(&reordered).join("\n");
        assert!(
            diffs.contains("row 2: the table has `drain-node` where FAULT_KINDS has `start-node`"),
            "{diffs}"
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        let text = r#"
description = 5
duration_s = 0
start_utc = "25:00"
colour = "blue"

[topology]
[[topology.regions]]
name = "us-east"
[[topology.nodes]]
name = "n1"
region = "mars"
[[topology.channels]]
name = "c"
home_region = "us-east"
videos_per_day = 1
pipeline = "p"
project = "q"

[fleet]
regions = 9

[params]
lease_ms = 400
renew_ms = 500
warp = 1

[[faults]]
at_s = -1
kind = "crash-node"
node = "x"

[[faults]]
at_s = 10
kind = "explode"

[[faults]]
at_s = 10
kind = "gpu-failures"
ppm = 2000000
extra = true

[[faults]]
at_s = "soon"
kind = "kill-switch"
"#;
        let err = load(text).expect_err("must fail");
        for want in [
            "name: missing required key",
            "description: expected a string, found integer",
            "duration_s: must be > 0",
            "start_utc: expected \"HH:MM\"",
            "colour: unknown key `colour`",
            "fleet: give either [topology] or [fleet], not both",
            "topology.nodes[0].region: unknown region `mars`",
            "fleet.regions: must be <= 4",
            "params.lease_ms: must be greater than renew_ms",
            "params.warp: unknown key `warp`",
            "faults[0].at_s: must be >= 0",
            "faults[1].kind: unknown kind \"explode\"; expected one of: crash-node",
            "faults[2].ppm: must be <= 1000000",
            "faults[2].extra: unknown key `extra`",
            "faults[3].at_s: expected a number (seconds), found string",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        // One problem per line, each with a path.
        assert!(err.lines().count() >= 16, "{err}");
        assert!(err.lines().all(|l| l.contains(": ")), "{err}");
    }

    #[test]
    fn names_and_times_are_checked_against_the_fleet() {
        let text = r#"
name = "x"
duration_s = 600
[fleet]
regions = 2
[[faults]]
at_s = 601
kind = "crash-node"
node = "us-east-0"
[[faults]]
at_s = 1
kind = "one-way"
from = "us-east"
to = "us-east"
[[faults]]
at_s = 1
kind = "provider-outage"
provider = "nope"
[[faults]]
at_s = 1
kind = "resume"
channel = "ch-9999"
[[faults]]
at_s = 1
kind = "clock-skew"
node = "eu-west-1"
drift_ppm = 20000
[[faults]]
at_s = 1
kind = "heal-region"
region = "ap-south"
[[faults]]
at_s = 2
kind = "freeze-node"
node = "x"
"#;
        let err = load(text).expect_err("must fail");
        for want in [
            "faults[0].at_s: 601 is beyond duration_s (600)",
            "faults[1].to: must differ from `from`",
            "faults[2].provider: unknown provider \"nope\"; known: llm-main, llm-lite, tts-main",
            "faults[3].channel: unknown channel \"ch-9999\"; known: ch-0000",
            "faults[4].offset_ms: missing required key",
            "faults[4].drift_ppm: must be <= 10000",
            "faults[5].region: unknown region \"ap-south\"; known: us-east, eu-west",
            "faults[6].node: unknown node \"x\"; known: us-east-0, us-east-1, eu-west-0, eu-west-1",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        assert!(load("name = \"x\"\nduration_s = 60\n[[faults]\n")
            .unwrap_err()
            .starts_with("<toml>: line 3"));
    }

    #[test]
    fn end_to_end_crash_in_a_small_fleet() {
        let text = r#"
name = "small-crash"
duration_s = 600
liveness_s = 1500
recovery_bound_ms = 6000
[fleet]
regions = 2
nodes_per_region = 2
channels = 8
[[faults]]
at_s = 120
kind = "crash-node"
node = "us-east-1"
"#;
        let s = load(text).unwrap_or_else(|e| panic!("{e}"));
        let summary = crate::run(s, 1, None);
        assert!(summary.ok, "{:?}", summary.violation);
        assert!(summary.videos_published > 0);
    }

    /// What [`mutate`] inserts or puts in place of a value.
    const MUTATION_TOKENS: [&str; 24] = [
        "0",
        "-1",
        "1",
        "2",
        "99999999999999999",
        "-9223372036854775808",
        "1.5",
        "-0.0",
        "nan",
        "inf",
        "1e300",
        "\"\"",
        "\"x\"",
        "true",
        "[]",
        "{}",
        "[[faults]]\n",
        "[topology]\n",
        "[fleet]\n",
        "[params]\n",
        "\"25:99\"",
        "=",
        "\n",
        "\u{e9}",
    ];

    /// The start and end (exclusive, before its newline) of the line
    /// around `at`.
    fn line_around(text: &[char], at: usize) -> (usize, usize) {
        let line_start = text[..at]
            .iter()
            .rposition(|c| *c == '\n')
            .map_or(0, |i| i + 1);
        let line_end = text[at..]
            .iter()
            .position(|c| *c == '\n')
            .map_or(text.len(), |i| at + i);
        (line_start, line_end)
    }

    /// A random token of [`MUTATION_TOKENS`].
    fn token(rng: &mut SeededRng) -> &'static str {
        MUTATION_TOKENS[rng.below(MUTATION_TOKENS.len() as u64) as usize]
    }

    /// One random mutation of `text`.
    fn mutate(text: &mut Vec<char>, rng: &mut SeededRng) {
        let len = text.len() as u64;
        let at = rng.below(len + 1) as usize;
        match rng.below(5) {
            // Delete a short run.
            0 => {
                let end = (at + 1 + rng.below(8) as usize).min(text.len());
                text.drain(at.min(end)..end);
            }
            // Insert a token.
            1 => {
                let tok = token(rng);
                text.splice(at..at, tok.chars());
            }
            // Replace the value of a line with a token.
            2 => {
                let (line_start, line_end) = line_around(text, at);
                if let Some(eq) = text[line_start..line_end].iter().position(|c| *c == '=') {
                    let tok = token(rng);
                    let mut v: Vec<char> = " ".chars().chain(tok.chars()).collect();
                    v.retain(|c| *c != '\n');
                    text.splice(line_start + eq + 1..line_end, v);
                }
            }
            // Duplicate a line.
            3 => {
                let (line_start, line_end) = line_around(text, at);
                let line: Vec<char> = text[line_start..line_end].to_vec();
                text.splice(line_end..line_end, std::iter::once('\n').chain(line));
            }
            // Flip one character to a random printable one.
            _ => {
                if at < text.len() {
                    text[at] = char::from(b' ' + rng.below(95) as u8);
                }
            }
        }
    }

    /// ~2,000 deterministic mutations of the example: `load` always returns.
    #[test]
    fn mutated_files_never_panic() {
        let mut rng = SeededRng::new(0x5CE4_A210);
        let base: Vec<char> = EXAMPLE.chars().collect();
        let mut errors = 0;
        for _ in 0..2_000 {
            let mut text = base.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut text, &mut rng);
            }
            let text: String = text.into_iter().collect();
            if load(&text).is_err() {
                errors += 1;
            }
        }
        // The mutations do reach the validation (not only the TOML parser
        // or nothing at all).
        assert!(errors > 100 && errors < 2_000, "{errors} errors");
    }
}
