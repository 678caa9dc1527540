//! The TOML cluster config.
//!
//! [`parse_topology`] turns the text into a [`Topology`]. The text is parsed
//! into a plain `toml::Table` and then walked by hand (with the shared
//! helpers of [`crate::toml_walk`]), so that *every*
//! problem is reported at once, each with the path of the offending field
//! (`channels[3].pipeline.stages[1].gpu_memory_gib: must be > 0`). Unknown
//! keys, missing required keys and values of the wrong type are all errors.
//! Parsing never panics, whatever the input.
//!
//! # Format
//!
//! ```toml
//! [[regions]]
//! name = "us-east"
//! [[regions]]
//! name = "eu-west"
//!
//! # One-way latency in ms, 0..=60000. A pair given once applies both ways;
//! # a missing pair is an error, and so is a pair given twice. A region to
//! # itself defaults to 1 ms unless given.
//! [[latency]]
//! between = ["us-east", "eu-west"]
//! ms = 40
//!
//! [[nodes]]
//! name = "use-1"
//! region = "us-east"
//! zone = "a"              # optional, default "default"
//! count = 2               # optional (1..=10000): with count > 1 the node is
//!                         # stamped into "use-1-0", "use-1-1", ...
//! [[nodes.gpus]]          # optional: a node may have no GPUs
//! model = "L4"
//! memory_gib = 24         # float or integer, > 0
//! cost_per_hour = 0.8     # dollars, >= 0
//! count = 2               # optional (1..=1024), default 1: identical GPUs
//!
//! [[pipelines]]
//! name = "shorts"
//! [[pipelines.stages]]
//! name = "script"
//! kind = "external"       # cpu | gpu | external | publish
//! provider = "llm-a"      # required for external, not allowed otherwise
//! cheap_provider = "llm-b"  # optional, external only
//! duration_ms = 2000      # 1..=604800000 (a week)
//! jitter_ms = 500         # optional, default 0, <= duration_ms
//! cost = 0.01             # dollars, optional, default 0, >= 0
//! cheap_cost = 0.002      # optional, external only, default = cost, <= cost
//! [[pipelines.stages]]
//! name = "render"
//! kind = "gpu"
//! duration_ms = 60000
//! gpu_memory_gib = 8      # required and > 0 for gpu; only 0 allowed otherwise
//! [[pipelines.stages]]
//! name = "upload"
//! kind = "publish"        # exactly one publish stage, and it is the last
//! duration_ms = 5000
//!
//! [[projects]]
//! name = "yt-main"
//! reset_utc_offset = "-08:00"  # optional, default "-08:00"; ±HH:MM within ±14:00
//! # Either nothing (YouTube's current default quota), a preset
//! # ("youtube-default" or "youtube-legacy"), or explicit buckets:
//! [[projects.buckets]]
//! name = "shared"
//! units_per_day = 10000   # >= 1
//! [projects.costs]        # required with buckets; optional otherwise
//! upload = { bucket = "shared", units = 1600 }   # required in `costs`
//! thumbnail = { bucket = "shared", units = 50 }  # optional: none if omitted
//! lookup = { bucket = "shared", units = 1 }      # optional: {first bucket, 1}
//!
//! [[projects]]
//! name = "yt-legacy"
//! preset = "youtube-legacy"
//!
//! [[channels]]
//! name = "cooking"
//! count = 1                        # optional (1..=10000): with count > 1 the
//!                                  # channel is stamped into "cooking-0", ...
//! home_region = "us-east"
//! failover_regions = ["eu-west"]   # optional, default []
//! videos_per_day = 4               # 1..=10000
//! window = "08:00-20:00"           # optional, UTC, default "00:00-24:00"
//! pipeline = "shorts"              # a pipeline name or an inline pipeline
//! priority = 5                     # optional, 0..=255, default 0 (a GPU
//!                                  # queues higher first; a job asked again
//!                                  # ranks one higher per earlier attempt)
//! project = "yt-main"
//! [channels.budget]                # optional; dollars, each >= 0
//! daily_soft = 5.0                 # each soft limit defaults to its hard
//! daily_hard = 8.0                 # limit, each hard limit to unlimited
//! per_video_soft = 1.0             # soft <= hard
//! per_video_hard = 2.0
//!
//! [[channels]]
//! name = "news"
//! home_region = "eu-west"
//! videos_per_day = 2
//! project = "yt-legacy"
//! # An inline pipeline: stages as in [[pipelines]]; `name` is optional
//! # (default "inline") and the pipeline is registered as "news/inline".
//! pipeline = { stages = [
//!     { name = "edit", kind = "cpu", duration_ms = 1000 },
//!     { name = "upload", kind = "publish", duration_ms = 3000 },
//! ] }
//! ```
//!
//! # Rules
//!
//! - At least one region, one node and one channel.
//! - Names are non-empty and unique per kind: regions, nodes (after
//!   stamping), pipelines (including inline ones), projects, channels (after
//!   stamping), stages within a pipeline, buckets within a project.
//! - An inline pipeline of a channel with `count > 1` is one pipeline shared
//!   by all stamped copies.
//! - Ids follow the order of the file. Inline pipelines come after the
//!   `[[pipelines]]`, in channel order. GPUs are numbered node by node.
//! - Dollars become micro-dollars (rounded to the nearest), GiB become bytes
//!   (rounded); values that do not fit in `u64` are reported as "too large".
//! - Errors come in a fixed order: top-level keys, then regions, latency,
//!   nodes, pipelines, projects and channels, each in file order.

use std::collections::{HashMap, HashSet};
use std::fmt;

use toml::{Table, Value};

use crate::ids::{GpuId, NodeId, PipelineId, ProjectId, RegionId};
use crate::model::{
    Budget, Channel, CostModel, DurationModel, Gpu, Micros, Node, Pipeline, PublishWindow,
    PublishingProject, QuotaBucket, QuotaCost, Region, Stage, StageKind, Topology, GIB,
};
use crate::toml_walk::{
    hh_mm_fields, idx_path, key_path, known_list, parse_table, type_error, Errs, Obj,
};

/// One problem in the config, with the path of the field it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config, in a deterministic order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses and validates a cluster config. See the module docs for the format.
pub fn parse_topology(text: &str) -> Result<Topology, ConfigErrors> {
    let table = match parse_table(text) {
        Ok(t) => t,
        Err(message) => {
            return Err(ConfigErrors(vec![ConfigError {
                path: "<toml>".into(),
                message,
            }]));
        }
    };
    let mut e = Errs(Vec::new());
    let topology = build(&mut e, &table);
    if e.0.is_empty() {
        Ok(topology)
    } else {
        Err(ConfigErrors(e.0))
    }
}

// ---------------------------------------------------------------------------
// Limits.

const MAX_REGIONS: usize = 1_000;
const MAX_NODE_COUNT: i64 = 10_000;
const MAX_GPU_COUNT: i64 = 1_024;
const MAX_CHANNEL_COUNT: i64 = 10_000;
const MAX_DURATION_MS: i64 = 7 * 86_400_000;
const MAX_LATENCY_MS: i64 = 60_000;
const MAX_VIDEOS_PER_DAY: i64 = 10_000;
const MAX_OFFSET_MINUTES: i32 = 14 * 60;
const SELF_LATENCY_MS: u32 = 1;
const MAX_MISSING_PAIRS_REPORTED: usize = 10;
const DEFAULT_ZONE: &str = "default";

// ---------------------------------------------------------------------------
// Config-specific value helpers.

/// A number scaled by `scale` into a `u64`: dollars to micros, GiB to
/// bytes. Integers and floats are accepted; floats are rounded.
fn scaled(
    e: &mut Errs,
    path: &str,
    v: &Value,
    what: &str,
    scale: u64,
    positive: bool,
) -> Option<u64> {
    let low_msg = if positive {
        "must be > 0"
    } else {
        "must be >= 0"
    };
    match v {
        Value::Integer(i) => {
            if *i < 0 || (positive && *i == 0) {
                e.push(path, low_msg);
                return None;
            }
            match u64::try_from(*i).ok().and_then(|u| u.checked_mul(scale)) {
                Some(x) => Some(x),
                None => {
                    e.push(path, "too large");
                    None
                }
            }
        }
        Value::Float(f) => {
            if !f.is_finite() {
                e.push(path, "must be a finite number");
                return None;
            }
            if *f < 0.0 || (positive && *f <= 0.0) {
                e.push(path, low_msg);
                return None;
            }
            // `scale` is at most 2^30, exact in an f64.
            let x = (*f * scale as f64).round();
            // 2^64: the first f64 that does not fit in a u64.
            if !x.is_finite() || x >= 18_446_744_073_709_551_616.0 {
                e.push(path, "too large");
                return None;
            }
            if positive && x < 1.0 {
                e.push(path, "too small (rounds to 0)");
                return None;
            }
            Some(x as u64)
        }
        other => {
            e.push(path, type_error(what, other));
            None
        }
    }
}

pub fn dollars(e: &mut Errs, path: &str, v: &Value) -> Option<Micros> {
    scaled(e, path, v, "a number (dollars)", 1_000_000, false)
}

fn gib(e: &mut Errs, path: &str, v: &Value, positive: bool) -> Option<u64> {
    scaled(e, path, v, "a number (GiB)", GIB, positive)
}

/// Records `name` for a uniqueness check; reports a duplicate and returns
/// whether the name is new.
fn unique(
    e: &mut Errs,
    seen: &mut HashMap<String, String>,
    name: &str,
    path: &str,
    kind: &str,
) -> bool {
    match seen.get(name) {
        Some(first) => {
            e.push(
                path,
                format!("duplicate {kind} name `{name}` (first at {first})"),
            );
            false
        }
        None => {
            seen.insert(name.to_string(), path.to_string());
            true
        }
    }
}

/// The `k`-th of `count` copies of `name`: `name-k`, or `name` itself when
/// there is only one.
fn stamped_name(name: &str, k: usize, count: usize) -> String {
    if count > 1 {
        format!("{name}-{k}")
    } else {
        name.to_string()
    }
}

/// "HH:MM" with 2-digit fields, hours 0..=24, minutes 0..=59.
fn parse_hh_mm(s: &str) -> Option<(u32, u32)> {
    let (h, m) = hh_mm_fields(s)?;
    if h > 24 || m > 59 {
        return None;
    }
    Some((h, m))
}

fn parse_offset(s: &str) -> Result<i32, String> {
    let bad = || format!("invalid offset `{s}`; expected ±HH:MM, such as \"-08:00\"");
    let sign = match s.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let rest = s.get(1..).ok_or_else(bad)?;
    let (h, m) = parse_hh_mm(rest).ok_or_else(bad)?;
    // At most 24 * 60 + 59: fits an i32.
    let minutes = (h * 60 + m) as i32;
    if minutes > MAX_OFFSET_MINUTES {
        return Err(format!("offset `{s}` out of range -14:00..+14:00"));
    }
    Ok(sign * minutes)
}

fn parse_window(s: &str) -> Result<PublishWindow, String> {
    let bad = || format!("invalid window `{s}`; expected \"HH:MM-HH:MM\", such as \"08:00-20:00\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (ah, am) = parse_hh_mm(a).ok_or_else(bad)?;
    let (bh, bm) = parse_hh_mm(b).ok_or_else(bad)?;
    if (ah == 24 && am != 0) || (bh == 24 && bm != 0) {
        return Err(bad());
    }
    let start = ah * 60 + am;
    let end = bh * 60 + bm;
    if start >= end {
        return Err(format!("window `{s}`: start must be before end"));
    }
    Ok(PublishWindow {
        start_minute: start,
        end_minute: end,
    })
}

// ---------------------------------------------------------------------------
// The walk.

const TOP_KEYS: &[&str] = &[
    "regions",
    "latency",
    "nodes",
    "pipelines",
    "projects",
    "channels",
];

fn build(e: &mut Errs, table: &Table) -> Topology {
    let top = Obj::new(e, table, String::new(), TOP_KEYS);
    let mut topo = Topology::default();

    let regions = top.tables_opt(e, "regions");
    parse_regions(e, regions.as_deref(), &mut topo);
    require_some(e, &top, "regions");
    let region_ix = index_by_name(topo.regions.iter().map(|r| r.name.as_str()), RegionId);
    let region_names = known_list(topo.regions.iter().map(|r| r.name.as_str()));

    let latency = top.tables_opt(e, "latency");
    topo.latency_ms = parse_latency(e, latency.as_deref(), &topo.regions, &region_ix);

    let nodes = top.tables_opt(e, "nodes");
    let mut node_seen = HashMap::new();
    for (path, t) in nodes.iter().flatten() {
        parse_node(
            e,
            path,
            t,
            &region_ix,
            &region_names,
            &mut node_seen,
            &mut topo,
        );
    }
    require_some(e, &top, "nodes");

    let mut pipeline_seen = HashMap::new();
    parse_pipelines(e, &top, &mut pipeline_seen, &mut topo);
    // Pipelines from `[[pipelines]]` only: channels refer to them by name.
    let named_pipelines = index_by_name(topo.pipelines.iter().map(|p| p.name.as_str()), PipelineId);

    parse_projects(e, &top, &mut topo);

    let channels = top.tables_opt(e, "channels");
    let mut ctx = ChannelCtx {
        region_ix: &region_ix,
        region_names: &region_names,
        named_pipelines: &named_pipelines,
        pipeline_seen: &mut pipeline_seen,
        channel_seen: HashMap::new(),
    };
    for (path, t) in channels.iter().flatten() {
        parse_channel(e, path, t, &mut ctx, &mut topo);
    }

    require_some(e, &top, "channels");
    topo
}

/// The id of the first item of each name, for lookups by name. Ids are
/// `u16`: an item past the last id is too many, and reported where it is
/// added, so it gets none here.
fn index_by_name<'a, Id>(
    names: impl Iterator<Item = &'a str>,
    id: impl Fn(u16) -> Id,
) -> HashMap<String, Id> {
    let mut m = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Ok(ix) = u16::try_from(i) {
            m.entry(name.to_string()).or_insert_with(|| id(ix));
        }
    }
    m
}

/// The `[[pipelines]]`; `seen` keeps their names so that inline pipelines
/// (named later, by channel) cannot clash with them.
fn parse_pipelines(
    e: &mut Errs,
    top: &Obj<'_>,
    seen: &mut HashMap<String, String>,
    topo: &mut Topology,
) {
    let Some(ps) = top.tables_opt(e, "pipelines") else {
        return;
    };
    for (path, t) in &ps {
        let obj = Obj::new(e, t, path.clone(), &["name", "stages"]);
        let name = obj.name_req(e, "name");
        if let Some(name) = name {
            unique(e, seen, name, &obj.p("name"), "pipeline");
        }
        let stages = parse_stages(e, &obj);
        if let Some(name) = name {
            push_pipeline(e, path, topo, name.to_string(), stages);
        }
    }
}

fn parse_projects(e: &mut Errs, top: &Obj<'_>, topo: &mut Topology) {
    let Some(ps) = top.tables_opt(e, "projects") else {
        return;
    };
    let mut seen = HashMap::new();
    for (path, t) in &ps {
        let Some(p) = parse_project(e, path, t) else {
            continue;
        };
        unique(e, &mut seen, &p.name, &key_path(path, "name"), "project");
        if u16::try_from(topo.projects.len()).is_err() {
            e.push(path.as_str(), "too many projects");
        } else {
            topo.projects.push(p);
        }
    }
}

/// A top-level array that must be present and non-empty.
fn require_some(e: &mut Errs, top: &Obj<'_>, key: &str) {
    let empty = match top.t.get(key) {
        None => true,
        Some(v) => v.as_array().is_some_and(|a| a.is_empty()),
    };
    if empty {
        e.push(key, "at least one required");
    }
}

const REGION_KEYS: &[&str] = &["name"];

fn parse_regions(e: &mut Errs, regions: Option<&[(String, &Table)]>, topo: &mut Topology) {
    let Some(regions) = regions else { return };
    if regions.len() > MAX_REGIONS {
        e.push("regions", format!("too many regions (max {MAX_REGIONS})"));
        return;
    }
    let mut seen = HashMap::new();
    for (path, t) in regions {
        let obj = Obj::new(e, t, path.clone(), REGION_KEYS);
        if let Some(name) = obj.name_req(e, "name") {
            // A duplicate is left out so that the latency matrix does not
            // report pairs nobody can name.
            if unique(e, &mut seen, name, &obj.p("name"), "region") {
                topo.regions.push(Region {
                    name: name.to_string(),
                });
            }
        }
    }
}

fn resolve_region(
    e: &mut Errs,
    path: &str,
    name: &str,
    region_ix: &HashMap<String, RegionId>,
    known: &str,
) -> Option<RegionId> {
    match region_ix.get(name) {
        Some(id) => Some(*id),
        None => {
            e.push(path, format!("unknown region `{name}`; known: {known}"));
            None
        }
    }
}

fn parse_latency(
    e: &mut Errs,
    entries: Option<&[(String, &Table)]>,
    regions: &[Region],
    region_ix: &HashMap<String, RegionId>,
) -> Vec<Vec<u32>> {
    let n = regions.len();
    let mut given: Vec<Vec<Option<u32>>> = vec![vec![None; n]; n];
    let known = known_list(regions.iter().map(|r| r.name.as_str()));
    for (path, t) in entries.unwrap_or(&[]) {
        let obj = Obj::new(e, t, path.clone(), &["between", "ms"]);
        let ms = obj
            .int_range_req(e, "ms", 0, MAX_LATENCY_MS)
            .and_then(|v| u32::try_from(v).ok());
        if let Some(pair) = latency_pair(e, &obj, region_ix, &known) {
            give_latency(e, &obj.p("between"), &mut given, regions, pair, ms);
        }
    }
    latency_matrix(e, &given, regions)
}

/// The two regions of a `[[latency]]` entry's `between`, when both resolve.
fn latency_pair(
    e: &mut Errs,
    obj: &Obj<'_>,
    region_ix: &HashMap<String, RegionId>,
    known: &str,
) -> Option<(RegionId, RegionId)> {
    match obj.get_req(e, "between")? {
        Value::Array(a) if a.len() == 2 => {
            let bp = obj.p("between");
            let mut ids = [None, None];
            for (i, v) in a.iter().enumerate() {
                let p = idx_path(&bp, i);
                match v.as_str() {
                    Some(s) => {
                        if let Some(slot) = ids.get_mut(i) {
                            *slot = resolve_region(e, &p, s, region_ix, known);
                        }
                    }
                    None => e.push(p, type_error("a string (region name)", v)),
                }
            }
            match ids {
                [Some(a), Some(b)] => Some((a, b)),
                _ => None,
            }
        }
        Value::Array(a) => {
            e.push(
                obj.p("between"),
                format!("expected two region names, found {}", a.len()),
            );
            None
        }
        v => {
            e.push(
                obj.p("between"),
                type_error("an array of two region names", v),
            );
            None
        }
    }
}

/// Records the latency of a pair both ways, unless the pair (in either
/// order) was given before.
fn give_latency(
    e: &mut Errs,
    between_path: &str,
    given: &mut [Vec<Option<u32>>],
    regions: &[Region],
    (a, b): (RegionId, RegionId),
    ms: Option<u32>,
) {
    let (ai, bi) = (a.index(), b.index());
    let already = given
        .get(ai)
        .and_then(|row| row.get(bi))
        .is_some_and(|v| v.is_some());
    if already {
        e.push(
            between_path,
            format!(
                "duplicate latency pair `{}`/`{}`",
                region_name(regions, ai),
                region_name(regions, bi)
            ),
        );
        return;
    }
    // An invalid `ms` still marks the pair as given.
    let v = Some(ms.unwrap_or(0));
    for (x, y) in [(ai, bi), (bi, ai)] {
        if let Some(cell) = given.get_mut(x).and_then(|row| row.get_mut(y)) {
            *cell = v;
        }
    }
}

/// The full matrix: each region to itself defaults to
/// [`SELF_LATENCY_MS`]; every other pair must have been given. Only the
/// first few missing pairs are named, so that a config with many regions
/// and no latency does not drown the other errors.
fn latency_matrix(e: &mut Errs, given: &[Vec<Option<u32>>], regions: &[Region]) -> Vec<Vec<u32>> {
    let n = regions.len();
    let mut missing = 0usize;
    let mut out = vec![vec![0u32; n]; n];
    for i in 0..n {
        for j in i..n {
            let cell = given.get(i).and_then(|row| row.get(j)).copied().flatten();
            let v = match cell {
                Some(v) => v,
                None if i == j => SELF_LATENCY_MS,
                None => {
                    missing += 1;
                    if missing <= MAX_MISSING_PAIRS_REPORTED {
                        e.push(
                            "latency",
                            format!(
                                "missing latency between `{}` and `{}`",
                                region_name(regions, i),
                                region_name(regions, j)
                            ),
                        );
                    }
                    0
                }
            };
            for (x, y) in [(i, j), (j, i)] {
                if let Some(cell) = out.get_mut(x).and_then(|row| row.get_mut(y)) {
                    *cell = v;
                }
            }
        }
    }
    if missing > MAX_MISSING_PAIRS_REPORTED {
        e.push(
            "latency",
            format!(
                "... and {} more missing region pairs",
                missing - MAX_MISSING_PAIRS_REPORTED
            ),
        );
    }
    out
}

/// The name of region `i`, or "" for an index out of range.
fn region_name(regions: &[Region], i: usize) -> &str {
    regions.get(i).map_or("", |r| r.name.as_str())
}

const NODE_KEYS: &[&str] = &["name", "region", "zone", "count", "gpus"];
const GPU_KEYS: &[&str] = &["model", "memory_gib", "cost_per_hour", "count"];

struct GpuSpec {
    model: String,
    memory_bytes: u64,
    cost_per_hour_micros: Micros,
    count: usize,
}

fn parse_node(
    e: &mut Errs,
    path: &str,
    t: &Table,
    region_ix: &HashMap<String, RegionId>,
    region_names: &str,
    seen: &mut HashMap<String, String>,
    topo: &mut Topology,
) {
    let obj = Obj::new(e, t, path.to_string(), NODE_KEYS);
    let name = obj.name_req(e, "name");
    let region = obj
        .str_req(e, "region")
        .and_then(|r| resolve_region(e, &obj.p("region"), r, region_ix, region_names));
    let zone = obj.str_opt(e, "zone").unwrap_or(DEFAULT_ZONE);
    let count = obj
        .int_range_opt(e, "count", 1, MAX_NODE_COUNT)
        .unwrap_or(1);
    let mut gpus = Vec::new();
    for (gpath, gt) in obj.tables_opt(e, "gpus").iter().flatten() {
        let g = Obj::new(e, gt, gpath.clone(), GPU_KEYS);
        let model = g.name_req(e, "model");
        let mem = g
            .get_req(e, "memory_gib")
            .and_then(|v| gib(e, &g.p("memory_gib"), v, true));
        let cost = g
            .get_req(e, "cost_per_hour")
            .and_then(|v| dollars(e, &g.p("cost_per_hour"), v));
        let gcount = g.int_range_opt(e, "count", 1, MAX_GPU_COUNT).unwrap_or(1);
        if let (Some(model), Some(mem), Some(cost)) = (model, mem, cost) {
            gpus.push(GpuSpec {
                model: model.to_string(),
                memory_bytes: mem,
                cost_per_hour_micros: cost,
                count: usize::try_from(gcount).unwrap_or(1),
            });
        }
    }
    let Some(name) = name else { return };
    let name_path = obj.p("name");
    let count = usize::try_from(count).unwrap_or(1);
    for k in 0..count {
        let stamped = stamped_name(name, k, count);
        unique(e, seen, &stamped, &name_path, "node");
        let Ok(node_id) = u32::try_from(topo.nodes.len()) else {
            e.push(path, "too many nodes");
            return;
        };
        let mut ids = Vec::new();
        for spec in &gpus {
            for _ in 0..spec.count {
                let Ok(gid) = u32::try_from(topo.gpus.len()) else {
                    e.push(path, "too many GPUs");
                    return;
                };
                ids.push(GpuId(gid));
                topo.gpus.push(Gpu {
                    node: NodeId(node_id),
                    model: spec.model.clone(),
                    memory_bytes: spec.memory_bytes,
                    cost_per_hour_micros: spec.cost_per_hour_micros,
                });
            }
        }
        topo.nodes.push(Node {
            name: stamped,
            region: region.unwrap_or_default(),
            zone: zone.to_string(),
            gpus: ids,
        });
    }
}

const STAGE_KEYS: &[&str] = &[
    "name",
    "kind",
    "provider",
    "cheap_provider",
    "duration_ms",
    "jitter_ms",
    "cost",
    "cheap_cost",
    "gpu_memory_gib",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpu,
    Gpu,
    External,
    Publish,
}

/// Parses `stages` of a pipeline table (named or inline) with all rules.
fn parse_stages(e: &mut Errs, obj: &Obj<'_>) -> Vec<Stage> {
    let stages_path = obj.p("stages");
    let Some(list) = stage_list(e, obj, &stages_path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    let mut publish_at: Vec<usize> = Vec::new();
    // A stage of unknown kind (not a table, or its kind missing or invalid)
    // may be the `publish` stage: its absence is then not reported as well.
    let mut kinds_known = true;
    for (i, v) in list.iter().enumerate() {
        let path = idx_path(&stages_path, i);
        let Some(t) = v.as_table() else {
            e.push(path, type_error("a table", v));
            kinds_known = false;
            continue;
        };
        let (kind, stage) = parse_stage(e, path, t, &mut seen);
        if kind.is_none() {
            kinds_known = false;
        }
        if kind == Some(Kind::Publish) {
            publish_at.push(i);
        }
        out.push(stage);
    }
    check_publish_stage(e, &stages_path, &publish_at, kinds_known, list.len() - 1);
    out
}

/// The `stages` array of a pipeline table, or `None` (reported) when it is
/// missing, not an array or empty.
fn stage_list<'a>(e: &mut Errs, obj: &Obj<'a>, stages_path: &str) -> Option<&'a Vec<Value>> {
    let list = obj.get_req(e, "stages")?;
    let Some(list) = list.as_array() else {
        e.push(stages_path, type_error("an array of tables", list));
        return None;
    };
    if list.is_empty() {
        e.push(stages_path, "at least one stage required");
        return None;
    }
    Some(list)
}

/// One stage, with its kind as written (`None` when missing or unknown)
/// for the rules on the pipeline as a whole. Errors in the stage still
/// yield a stage, with defaults in place of the bad values.
fn parse_stage(
    e: &mut Errs,
    path: String,
    t: &Table,
    seen: &mut HashMap<String, String>,
) -> (Option<Kind>, Stage) {
    let s = Obj::new(e, t, path, STAGE_KEYS);
    let name = s.name_req(e, "name");
    if let Some(n) = name {
        unique(e, seen, n, &s.p("name"), "stage");
    }
    let kind = parse_kind(e, &s);
    let stage_kind = stage_kind_and_providers(e, &s, kind);
    let duration = stage_duration(e, &s);
    let cost = stage_cost(e, &s);
    let gpu_memory_bytes = stage_gpu_memory(e, &s, kind);
    let stage = Stage {
        name: name.unwrap_or_default().to_string(),
        kind: stage_kind,
        gpu_memory_bytes,
        duration,
        cost,
    };
    (kind, stage)
}

fn parse_kind(e: &mut Errs, s: &Obj<'_>) -> Option<Kind> {
    match s.str_req(e, "kind")? {
        "cpu" => Some(Kind::Cpu),
        "gpu" => Some(Kind::Gpu),
        "external" => Some(Kind::External),
        "publish" => Some(Kind::Publish),
        other => {
            e.push(
                s.p("kind"),
                format!("unknown kind `{other}`; expected one of: cpu, gpu, external, publish"),
            );
            None
        }
    }
}

/// The stage's kind with its providers. The provider keys belong to
/// external stages only; with the kind unknown they are not judged.
fn stage_kind_and_providers(e: &mut Errs, s: &Obj<'_>, kind: Option<Kind>) -> StageKind {
    let external = kind == Some(Kind::External);
    for key in ["provider", "cheap_provider", "cheap_cost"] {
        if kind.is_some() && !external && s.has(key) {
            e.push(s.p(key), "only allowed for kind `external`");
        }
    }
    let provider = if external {
        s.name_req(e, "provider")
    } else {
        s.str_opt(e, "provider")
    };
    let cheap_provider = s.str_opt(e, "cheap_provider");
    match kind {
        Some(Kind::Cpu) | None => StageKind::Cpu,
        Some(Kind::Gpu) => StageKind::Gpu,
        Some(Kind::Publish) => StageKind::Publish,
        Some(Kind::External) => StageKind::External {
            provider: provider.unwrap_or_default().to_string(),
            cheap_provider: cheap_provider.map(str::to_string),
        },
    }
}

fn stage_duration(e: &mut Errs, s: &Obj<'_>) -> DurationModel {
    let duration = s.int_range_req(e, "duration_ms", 1, MAX_DURATION_MS);
    let jitter = s
        .int_range_opt(e, "jitter_ms", 0, MAX_DURATION_MS)
        .unwrap_or(0);
    if let Some(d) = duration {
        if jitter > d {
            e.push(s.p("jitter_ms"), "must be <= duration_ms");
        }
    }
    let d = u64::try_from(duration.unwrap_or(1)).unwrap_or(1);
    let j = u64::try_from(jitter).unwrap_or(0).min(d);
    DurationModel {
        mean_ms: d,
        jitter_ms: j,
    }
}

/// `cost` defaults to 0 and `cheap_cost` to `cost`, which it may not
/// exceed.
fn stage_cost(e: &mut Errs, s: &Obj<'_>) -> CostModel {
    let cost = match s.t.get("cost") {
        Some(v) => dollars(e, &s.p("cost"), v),
        None => Some(0),
    };
    let cheap_cost = match s.t.get("cheap_cost") {
        Some(v) => dollars(e, &s.p("cheap_cost"), v),
        None => cost,
    };
    if let (Some(c), Some(cc)) = (cost, cheap_cost) {
        if cc > c && s.has("cheap_cost") {
            e.push(s.p("cheap_cost"), "must be <= cost");
        }
    }
    CostModel {
        fixed_micros: cost.unwrap_or(0),
        cheap_fixed_micros: cheap_cost.unwrap_or(0),
    }
}

/// `gpu_memory_gib` is required (and > 0) for a GPU stage; any other stage
/// may only give 0.
fn stage_gpu_memory(e: &mut Errs, s: &Obj<'_>, kind: Option<Kind>) -> u64 {
    let mem_path = s.p("gpu_memory_gib");
    match (kind, s.t.get("gpu_memory_gib")) {
        (Some(Kind::Gpu), None) => {
            e.push(mem_path, "missing required key (kind `gpu`)");
            0
        }
        (Some(Kind::Gpu), Some(v)) => gib(e, &mem_path, v, true).unwrap_or(0),
        (_, None) => 0,
        (k, Some(v)) => {
            let b = gib(e, &mem_path, v, false);
            if k.is_some() && b.is_some_and(|b| b > 0) {
                e.push(mem_path, "only allowed for kind `gpu`");
            }
            0
        }
    }
}

/// Exactly one `publish` stage, and it is the last (`last` is the index of
/// the last stage).
fn check_publish_stage(
    e: &mut Errs,
    stages_path: &str,
    publish_at: &[usize],
    kinds_known: bool,
    last: usize,
) {
    match publish_at {
        [] if kinds_known => e.push(
            stages_path,
            "exactly one `publish` stage required, found none",
        ),
        [] => {}
        [first, rest @ ..] => {
            for i in rest {
                e.push(
                    key_path(&idx_path(stages_path, *i), "kind"),
                    "only one `publish` stage allowed",
                );
            }
            if rest.is_empty() && *first != last {
                e.push(
                    key_path(&idx_path(stages_path, *first), "kind"),
                    "the `publish` stage must be the last stage",
                );
            }
        }
    }
}

fn push_pipeline(
    e: &mut Errs,
    path: &str,
    topo: &mut Topology,
    name: String,
    stages: Vec<Stage>,
) -> Option<PipelineId> {
    match u16::try_from(topo.pipelines.len()) {
        Ok(id) => {
            topo.pipelines.push(Pipeline { name, stages });
            Some(PipelineId(id))
        }
        Err(_) => {
            e.push(path, "too many pipelines");
            None
        }
    }
}

const PROJECT_KEYS: &[&str] = &["name", "reset_utc_offset", "preset", "buckets", "costs"];
const PRESETS: &str = "youtube-default, youtube-legacy";

fn parse_project(e: &mut Errs, path: &str, t: &Table) -> Option<PublishingProject> {
    let obj = Obj::new(e, t, path.to_string(), PROJECT_KEYS);
    let name = obj.name_req(e, "name");
    let mut p = project_from_preset(e, &obj, name.unwrap_or_default());
    if let Some(off) = obj.str_opt(e, "reset_utc_offset") {
        match parse_offset(off) {
            Ok(m) => p.reset_utc_offset_minutes = m,
            Err(msg) => e.push(obj.p("reset_utc_offset"), msg),
        }
    }
    let buckets = obj.tables_opt(e, "buckets");
    if let Some(bs) = &buckets {
        p.buckets = parse_buckets(e, &obj, bs);
    }
    match obj.table_opt(e, "costs") {
        None => {
            if buckets.is_some() && !obj.has("costs") {
                e.push(
                    obj.p("costs"),
                    "missing required key (needed with `buckets`)",
                );
            }
        }
        Some(ct) => parse_costs(e, obj.p("costs"), ct, &mut p),
    }
    name?;
    Some(p)
}

/// The project named `name` with the quota of its preset (YouTube's
/// current default when none is given).
fn project_from_preset(e: &mut Errs, obj: &Obj<'_>, name: &str) -> PublishingProject {
    match obj.str_opt(e, "preset") {
        None | Some("youtube-default") => PublishingProject::youtube_default(name),
        Some("youtube-legacy") => PublishingProject::youtube_legacy(name),
        Some(other) => {
            e.push(
                obj.p("preset"),
                format!("unknown preset `{other}`; known: {PRESETS}"),
            );
            PublishingProject::youtube_default(name)
        }
    }
}

/// Explicit buckets, which replace those of any preset (and so may not
/// come with one).
fn parse_buckets(e: &mut Errs, obj: &Obj<'_>, bs: &[(String, &Table)]) -> Vec<QuotaBucket> {
    if obj.has("preset") {
        e.push(obj.p("buckets"), "not allowed together with `preset`");
    }
    if obj
        .t
        .get("buckets")
        .and_then(Value::as_array)
        .is_some_and(|a| a.is_empty())
    {
        e.push(obj.p("buckets"), "at least one bucket required");
    }
    let mut seen = HashMap::new();
    let mut list = Vec::new();
    for (bpath, bt) in bs {
        let b = Obj::new(e, bt, bpath.clone(), &["name", "units_per_day"]);
        let bname = b.name_req(e, "name");
        let units = b.int_range_req(e, "units_per_day", 1, i64::MAX);
        if let Some(bn) = bname {
            unique(e, &mut seen, bn, &b.p("name"), "bucket");
            list.push(QuotaBucket {
                name: bn.to_string(),
                units_per_day: units.and_then(|u| u64::try_from(u).ok()).unwrap_or(0),
            });
        }
    }
    list
}

/// Sets the costs of `p` from its `costs` table at `path`, naming the
/// buckets already in `p`, and checks that one publish fits in a day.
fn parse_costs(e: &mut Errs, path: String, ct: &Table, p: &mut PublishingProject) {
    let c = Obj::new(e, ct, path, &["upload", "thumbnail", "lookup"]);
    let bucket_names: Vec<&str> = p.buckets.iter().map(|b| b.name.as_str()).collect();
    let upload = c
        .get_req(e, "upload")
        .and_then(|v| parse_cost(e, &c.p("upload"), v, &bucket_names));
    let thumbnail =
        c.t.get("thumbnail")
            .and_then(|v| parse_cost(e, &c.p("thumbnail"), v, &bucket_names));
    let lookup = match c.t.get("lookup") {
        Some(v) => parse_cost(e, &c.p("lookup"), v, &bucket_names),
        None => Some(QuotaCost {
            bucket: 0,
            units: 1,
        }),
    };
    if let (Some(u), Some(l)) = (upload, lookup) {
        p.upload_cost = u;
        p.thumbnail_cost = thumbnail;
        p.lookup_cost = l;
        check_capacity(e, &c.path, p);
    }
}

fn parse_cost(e: &mut Errs, path: &str, v: &Value, buckets: &[&str]) -> Option<QuotaCost> {
    let Some(t) = v.as_table() else {
        e.push(path, type_error("a table { bucket, units }", v));
        return None;
    };
    let c = Obj::new(e, t, path.to_string(), &["bucket", "units"]);
    let bucket = c.str_req(e, "bucket").and_then(|b| {
        let ix = buckets.iter().position(|x| *x == b);
        if ix.is_none() {
            e.push(
                c.p("bucket"),
                format!(
                    "unknown bucket `{b}`; known: {}",
                    known_list(buckets.iter().copied())
                ),
            );
        }
        ix
    });
    let units = c
        .int_range_req(e, "units", 0, i64::MAX)
        .and_then(|u| u64::try_from(u).ok());
    Some(QuotaCost {
        bucket: bucket?,
        units: units?,
    })
}

/// One publish (upload plus thumbnail) must fit in a day's quota.
fn check_capacity(e: &mut Errs, path: &str, p: &PublishingProject) {
    for (i, b) in p.buckets.iter().enumerate() {
        let mut need: u64 = 0;
        if p.upload_cost.bucket == i {
            need = need.saturating_add(p.upload_cost.units);
        }
        if let Some(t) = p.thumbnail_cost {
            if t.bucket == i {
                need = need.saturating_add(t.units);
            }
        }
        if b.units_per_day > 0 && need > b.units_per_day {
            e.push(
                path,
                format!(
                    "one publish needs {need} units of bucket `{}`, which has only {} a day",
                    b.name, b.units_per_day
                ),
            );
        }
    }
}

const CHANNEL_KEYS: &[&str] = &[
    "name",
    "count",
    "home_region",
    "failover_regions",
    "videos_per_day",
    "window",
    "pipeline",
    "priority",
    "project",
    "budget",
];
const BUDGET_KEYS: &[&str] = &[
    "daily_soft",
    "daily_hard",
    "per_video_soft",
    "per_video_hard",
];

struct ChannelCtx<'a> {
    region_ix: &'a HashMap<String, RegionId>,
    region_names: &'a str,
    named_pipelines: &'a HashMap<String, PipelineId>,
    pipeline_seen: &'a mut HashMap<String, String>,
    channel_seen: HashMap<String, String>,
}

fn parse_channel(
    e: &mut Errs,
    path: &str,
    t: &Table,
    ctx: &mut ChannelCtx<'_>,
    topo: &mut Topology,
) {
    let obj = Obj::new(e, t, path.to_string(), CHANNEL_KEYS);
    let name = obj.name_req(e, "name");
    let count = obj
        .int_range_opt(e, "count", 1, MAX_CHANNEL_COUNT)
        .unwrap_or(1);
    let home = obj
        .str_req(e, "home_region")
        .and_then(|r| resolve_region(e, &obj.p("home_region"), r, ctx.region_ix, ctx.region_names));
    let failover = parse_failover(e, &obj, ctx, home);
    let videos = obj
        .int_range_req(e, "videos_per_day", 1, MAX_VIDEOS_PER_DAY)
        .and_then(|v| u32::try_from(v).ok());
    let window = match obj.str_opt(e, "window") {
        None => PublishWindow::ALL_DAY,
        Some(w) => parse_window(w).unwrap_or_else(|msg| {
            e.push(obj.p("window"), msg);
            PublishWindow::ALL_DAY
        }),
    };
    let priority = obj
        .int_range_opt(e, "priority", 0, 255)
        .and_then(|v| u8::try_from(v).ok())
        .unwrap_or(0);
    let project = resolve_project(e, &obj, &topo.projects);
    let budget = match obj.table_opt(e, "budget") {
        None => Budget::UNLIMITED,
        Some(bt) => parse_budget(e, &obj.p("budget"), bt),
    };
    let pipeline = channel_pipeline(e, &obj, name, ctx, topo);
    let Some(name) = name else { return };
    let count = usize::try_from(count).unwrap_or(1);
    let name_path = obj.p("name");
    for k in 0..count {
        let stamped = stamped_name(name, k, count);
        unique(e, &mut ctx.channel_seen, &stamped, &name_path, "channel");
        if u32::try_from(topo.channels.len()).is_err() {
            e.push(path, "too many channels");
            return;
        }
        topo.channels.push(Channel {
            name: stamped,
            home_region: home.unwrap_or_default(),
            failover_regions: failover.clone(),
            videos_per_day: videos.unwrap_or(1),
            window,
            pipeline: pipeline.unwrap_or_default(),
            priority,
            budget,
            project: project.unwrap_or_default(),
        });
    }
}

/// `failover_regions`: known regions, each once, other than `home`.
fn parse_failover(
    e: &mut Errs,
    obj: &Obj<'_>,
    ctx: &ChannelCtx<'_>,
    home: Option<RegionId>,
) -> Vec<RegionId> {
    let mut failover = Vec::new();
    let Some(list) = obj.array_opt(e, "failover_regions") else {
        return failover;
    };
    let base = obj.p("failover_regions");
    let mut seen = HashSet::new();
    for (i, v) in list.iter().enumerate() {
        let p = idx_path(&base, i);
        let Some(s) = v.as_str() else {
            e.push(p, type_error("a string (region name)", v));
            continue;
        };
        let Some(id) = resolve_region(e, &p, s, ctx.region_ix, ctx.region_names) else {
            continue;
        };
        if Some(id) == home {
            e.push(p, format!("`{s}` is the home region"));
        } else if !seen.insert(id) {
            e.push(p, format!("duplicate region `{s}`"));
        } else {
            failover.push(id);
        }
    }
    failover
}

fn resolve_project(
    e: &mut Errs,
    obj: &Obj<'_>,
    projects: &[PublishingProject],
) -> Option<ProjectId> {
    let p = obj.str_req(e, "project")?;
    let ix = projects.iter().position(|x| x.name == p);
    if ix.is_none() {
        e.push(
            obj.p("project"),
            format!(
                "unknown project `{p}`; known: {}",
                known_list(projects.iter().map(|x| x.name.as_str()))
            ),
        );
    }
    ix.and_then(|i| u16::try_from(i).ok()).map(ProjectId)
}

/// The channel's `pipeline`: the name of one of the `[[pipelines]]`, or an
/// inline pipeline, registered here under the channel's name.
fn channel_pipeline(
    e: &mut Errs,
    obj: &Obj<'_>,
    channel: Option<&str>,
    ctx: &mut ChannelCtx<'_>,
    topo: &mut Topology,
) -> Option<PipelineId> {
    match obj.get_req(e, "pipeline")? {
        Value::String(pname) => resolve_pipeline(e, &obj.p("pipeline"), pname, ctx.named_pipelines),
        Value::Table(pt) => {
            let ppath = obj.p("pipeline");
            let inline = Obj::new(e, pt, ppath.clone(), &["name", "stages"]);
            let local = inline.name_opt(e, "name").unwrap_or("inline");
            let stages = parse_stages(e, &inline);
            // Without the channel's name the pipeline has none either; its
            // stages were still checked above.
            let full = format!("{}/{local}", channel?);
            unique(e, ctx.pipeline_seen, &full, &ppath, "pipeline");
            push_pipeline(e, &ppath, topo, full, stages)
        }
        v => {
            e.push(
                obj.p("pipeline"),
                type_error("a string (pipeline name) or a table (inline pipeline)", v),
            );
            None
        }
    }
}

fn resolve_pipeline(
    e: &mut Errs,
    path: &str,
    pname: &str,
    named: &HashMap<String, PipelineId>,
) -> Option<PipelineId> {
    let id = named.get(pname).copied();
    if id.is_none() {
        // Known names in id order, that is in file order.
        let known: Vec<&str> = named
            .iter()
            .map(|(k, v)| (v, k.as_str()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        e.push(
            path,
            format!(
                "unknown pipeline `{pname}`; known: {}",
                known_list(known.into_iter())
            ),
        );
    }
    id
}

fn parse_budget(e: &mut Errs, path: &str, t: &Table) -> Budget {
    let b = Obj::new(e, t, path.to_string(), BUDGET_KEYS);
    let get = |e: &mut Errs, key: &str| -> Option<Option<Micros>> {
        match b.t.get(key) {
            None => Some(None),
            Some(v) => dollars(e, &b.p(key), v).map(Some),
        }
    };
    let pair = |e: &mut Errs, soft_key: &str, hard_key: &str| -> (Micros, Micros) {
        let soft = get(e, soft_key);
        let hard = get(e, hard_key);
        let hard_v = hard.flatten().unwrap_or(Micros::MAX);
        let soft_v = soft.flatten().unwrap_or(hard_v);
        if let (Some(Some(s)), Some(h)) = (soft, hard) {
            if s > h.unwrap_or(Micros::MAX) {
                e.push(b.p(soft_key), format!("must be <= {hard_key}"));
            }
        }
        (soft_v, hard_v)
    };
    let (daily_soft, daily_hard) = pair(e, "daily_soft", "daily_hard");
    let (pv_soft, pv_hard) = pair(e, "per_video_soft", "per_video_hard");
    Budget {
        daily_soft_micros: daily_soft,
        daily_hard_micros: daily_hard,
        per_video_soft_micros: pv_soft,
        per_video_hard_micros: pv_hard,
    }
}
