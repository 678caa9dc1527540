//! Tests of the TOML cluster config parser.

use proptest::prelude::*;
use topology::config::{parse_topology, ConfigErrors};
use topology::*;

/// The example from the module docs of `topology::config`.
const VALID: &str = r#"
[[regions]]
name = "us-east"
[[regions]]
name = "eu-west"

[[latency]]
between = ["us-east", "eu-west"]
ms = 40

[[nodes]]
name = "use-1"
region = "us-east"
zone = "a"
count = 2
[[nodes.gpus]]
model = "L4"
memory_gib = 24
cost_per_hour = 0.8
count = 2

[[nodes]]
name = "euw-1"
region = "eu-west"
[[nodes.gpus]]
model = "A100"
memory_gib = 79.5
cost_per_hour = 3

[[pipelines]]
name = "shorts"
[[pipelines.stages]]
name = "script"
kind = "external"
provider = "llm-a"
cheap_provider = "llm-b"
duration_ms = 2000
jitter_ms = 500
cost = 0.01
cheap_cost = 0.002
[[pipelines.stages]]
name = "render"
kind = "gpu"
duration_ms = 60000
gpu_memory_gib = 8
[[pipelines.stages]]
name = "upload"
kind = "publish"
duration_ms = 5000

[[projects]]
name = "yt-main"
reset_utc_offset = "-08:00"
[[projects.buckets]]
name = "shared"
units_per_day = 10000
[projects.costs]
upload = { bucket = "shared", units = 1600 }
thumbnail = { bucket = "shared", units = 50 }
lookup = { bucket = "shared", units = 1 }

[[projects]]
name = "yt-legacy"
preset = "youtube-legacy"
reset_utc_offset = "+05:30"

[[channels]]
name = "cooking"
count = 1
home_region = "us-east"
failover_regions = ["eu-west"]
videos_per_day = 4
window = "08:00-20:00"
pipeline = "shorts"
priority = 5
project = "yt-main"
[channels.budget]
daily_soft = 5.0
daily_hard = 8.0
per_video_soft = 1.0
per_video_hard = 2.0

[[channels]]
name = "news"
count = 3
home_region = "eu-west"
videos_per_day = 2
project = "yt-legacy"
pipeline = { stages = [
    { name = "edit", kind = "cpu", duration_ms = 1000 },
    { name = "upload", kind = "publish", duration_ms = 3000 },
] }
"#;

fn paths(errs: &ConfigErrors) -> Vec<&str> {
    errs.0.iter().map(|e| e.path.as_str()).collect()
}

fn err_of(text: &str) -> ConfigErrors {
    match parse_topology(text) {
        Ok(t) => panic!("expected errors, got {t:?}"),
        Err(e) => e,
    }
}

/// Minimal valid prefix: one region, one node, one pipeline, one project.
const BASE: &str = r#"
[[regions]]
name = "r"
[[nodes]]
name = "n"
region = "r"
[[pipelines]]
name = "p"
[[pipelines.stages]]
name = "up"
kind = "publish"
duration_ms = 10
[[projects]]
name = "q"
"#;

const CHANNEL: &str = r#"
[[channels]]
name = "c"
home_region = "r"
videos_per_day = 1
pipeline = "p"
project = "q"
"#;

/// The `VALID` example, parsed.
fn valid() -> Topology {
    parse_topology(VALID).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn valid_example_parses() {
    let t = valid();
    assert_eq!(t.regions.len(), 2);
    assert_eq!(t.latency_ms, vec![vec![1, 40], vec![40, 1]]);

    let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["use-1-0", "use-1-1", "euw-1"]);
    assert_eq!(t.nodes[0].zone, "a");
    assert_eq!(t.nodes[2].zone, "default");
    assert_eq!(t.nodes[2].region, RegionId(1));
    assert_eq!(t.nodes[1].gpus, vec![GpuId(2), GpuId(3)]);
    assert_eq!(t.gpus.len(), 5);
    assert_eq!(t.gpus[3].node, NodeId(1));
    assert_eq!(t.gpus[0].memory_bytes, 24 * GIB);
    assert_eq!(t.gpus[0].cost_per_hour_micros, 800_000);
    assert_eq!(t.gpus[4].memory_bytes, 79 * GIB + GIB / 2);
    assert_eq!(t.gpus[4].cost_per_hour_micros, 3_000_000);
    assert_eq!(t.gpus[4].model, "A100");
}

#[test]
fn valid_example_pipelines() {
    let t = valid();
    assert_eq!(t.pipelines.len(), 2);
    let shorts = &t.pipelines[0];
    assert_eq!(shorts.name, "shorts");
    assert_eq!(
        shorts.stages[0].kind,
        StageKind::External {
            provider: "llm-a".into(),
            cheap_provider: Some("llm-b".into())
        }
    );
    assert_eq!(
        shorts.stages[0].duration,
        DurationModel {
            mean_ms: 2000,
            jitter_ms: 500
        }
    );
    assert_eq!(
        shorts.stages[0].cost,
        CostModel {
            fixed_micros: 10_000,
            cheap_fixed_micros: 2_000
        }
    );
    assert_eq!(shorts.stages[1].kind, StageKind::Gpu);
    assert_eq!(shorts.stages[1].gpu_memory_bytes, 8 * GIB);
    assert_eq!(shorts.stages[2].kind, StageKind::Publish);
    assert_eq!(shorts.stages[2].gpu_memory_bytes, 0);
    assert_eq!(t.pipelines[1].name, "news/inline");
    assert_eq!(t.pipelines[1].stages.len(), 2);
}

#[test]
fn valid_example_projects() {
    let t = valid();
    let main = &t.projects[0];
    assert_eq!(main.reset_utc_offset_minutes, -480);
    assert_eq!(main.buckets.len(), 1);
    assert_eq!(
        main.upload_cost,
        QuotaCost {
            bucket: 0,
            units: 1600
        }
    );
    let mut legacy = PublishingProject::youtube_legacy("yt-legacy");
    legacy.reset_utc_offset_minutes = 330;
    assert_eq!(t.projects[1], legacy);
}

#[test]
fn valid_example_channels() {
    let t = valid();
    let names: Vec<&str> = t.channels.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cooking", "news-0", "news-1", "news-2"]);
    let cooking = &t.channels[0];
    assert_eq!(cooking.home_region, RegionId(0));
    assert_eq!(cooking.failover_regions, vec![RegionId(1)]);
    assert_eq!(cooking.videos_per_day, 4);
    assert_eq!(
        cooking.window,
        PublishWindow {
            start_minute: 480,
            end_minute: 1200
        }
    );
    assert_eq!(cooking.pipeline, PipelineId(0));
    assert_eq!(cooking.priority, 5);
    assert_eq!(cooking.project, ProjectId(0));
    assert_eq!(
        cooking.budget,
        Budget {
            daily_soft_micros: 5_000_000,
            daily_hard_micros: 8_000_000,
            per_video_soft_micros: 1_000_000,
            per_video_hard_micros: 2_000_000,
        }
    );
    for c in &t.channels[1..] {
        assert_eq!(c.pipeline, PipelineId(1));
        assert_eq!(c.project, ProjectId(1));
        assert_eq!(c.window, PublishWindow::ALL_DAY);
        assert_eq!(c.budget, Budget::UNLIMITED);
        assert_eq!(c.priority, 0);
        assert!(c.failover_regions.is_empty());
    }
}

#[test]
fn many_mistakes_are_all_reported() {
    let text = r#"
[[regions]]
name = "us-east"

[[nodes]]
name = "a"
region = "us-east"
zoen = "b"

[[nodes]]
name = "b"
region = "eu-x"

[[pipelines]]
name = "p"
[[pipelines.stages]]
name = "go"
kind = "publish"
duration_ms = "2000"

[[projects]]
name = "q"

[[channels]]
name = "c0"
home_region = "us-east"
pipeline = "p"
project = "q"

[[channels]]
name = "c1"
home_region = "us-east"
videos_per_day = 1
project = "q"
pipeline = { stages = [
    { name = "render", kind = "gpu", duration_ms = 10, gpu_memory_gib = 0 },
    { name = "up", kind = "publish", duration_ms = 10 },
] }
"#;
    let errs = err_of(text);
    assert_eq!(
        paths(&errs),
        [
            "nodes[0].zoen",
            "nodes[1].region",
            "pipelines[0].stages[0].duration_ms",
            "channels[0].videos_per_day",
            "channels[1].pipeline.stages[0].gpu_memory_gib",
        ],
        "{errs}"
    );
    let msgs: Vec<&str> = errs.0.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        msgs[0],
        "unknown key `zoen`; expected one of: name, region, zone, count, gpus"
    );
    assert_eq!(msgs[1], "unknown region `eu-x`; known: us-east");
    assert_eq!(msgs[2], "expected an integer, found string");
    assert_eq!(msgs[3], "missing required key");
    assert_eq!(msgs[4], "must be > 0");
    // Display: one error per line.
    let shown = errs.to_string();
    assert_eq!(shown.lines().count(), 5);
    assert_eq!(
        shown.lines().nth(4),
        Some("channels[1].pipeline.stages[0].gpu_memory_gib: must be > 0")
    );
}

#[test]
fn youtube_quota_forms_via_explicit_buckets() {
    let default = r#"
[[projects]]
name = "new"
[[projects.buckets]]
name = "uploads"
units_per_day = 100
[[projects.buckets]]
name = "shared"
units_per_day = 10000
[projects.costs]
upload = { bucket = "uploads", units = 1 }
thumbnail = { bucket = "shared", units = 50 }
lookup = { bucket = "shared", units = 1 }

[[projects]]
name = "old"
[[projects.buckets]]
name = "shared"
units_per_day = 10000
[projects.costs]
upload = { bucket = "shared", units = 1600 }
thumbnail = { bucket = "shared", units = 50 }

[[projects]]
name = "implicit"

[[projects]]
name = "preset"
preset = "youtube-default"
"#;
    let base = BASE.replace("[[projects]]\nname = \"q\"\n", "");
    let text = format!("{base}{default}{}", CHANNEL.replace("\"q\"", "\"old\""));
    let t = parse_topology(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.projects[0], PublishingProject::youtube_default("new"));
    assert_eq!(t.projects[1], PublishingProject::youtube_legacy("old"));
    assert_eq!(t.projects[1].publish_units(), vec![1650]);
    assert_eq!(
        t.projects[2],
        PublishingProject::youtube_default("implicit")
    );
    assert_eq!(t.projects[3], PublishingProject::youtube_default("preset"));
    assert_eq!(t.channels[0].project, ProjectId(1));
}

#[test]
fn project_errors() {
    let text = format!(
        "{BASE}{}",
        r#"
[[projects]]
name = "a"
preset = "youtube-legacy"
[[projects.buckets]]
name = "x"
units_per_day = 5

[[projects]]
name = "b"
reset_utc_offset = "+15:00"
[[projects.buckets]]
name = "x"
units_per_day = 5

[[projects]]
name = "c"
preset = "nope"
reset_utc_offset = "8"
[projects.costs]
upload = { bucket = "missing", units = 1 }
thumbnail = { bucket = "shared", units = -1 }

[[projects]]
name = "d"
[[projects.buckets]]
name = "x"
units_per_day = 5
[projects.costs]
upload = { bucket = "x", units = 6 }

[[projects]]
name = "q"
"#
    ) + CHANNEL;
    let errs = err_of(&text);
    assert_eq!(
        paths(&errs),
        [
            "projects[1].buckets",
            "projects[1].costs",
            "projects[2].reset_utc_offset",
            "projects[2].costs",
            "projects[3].preset",
            "projects[3].reset_utc_offset",
            "projects[3].costs.upload.bucket",
            "projects[3].costs.thumbnail.units",
            "projects[4].costs",
            "projects[5].name",
        ],
        "{errs}"
    );
}

#[test]
fn toml_syntax_error_is_one_error() {
    let errs = err_of("[[regions]]\nname = \"x\nfoo");
    assert_eq!(paths(&errs), ["<toml>"]);
    assert!(errs.0[0].message.starts_with("line 2, column"), "{errs}");
    assert!(!errs.to_string().contains('\n'));
}

#[test]
fn empty_config_requires_regions_nodes_channels() {
    let errs = err_of("");
    assert_eq!(paths(&errs), ["regions", "nodes", "channels"]);
    assert!(errs.0.iter().all(|e| e.message == "at least one required"));
    let errs = err_of("regions = []\nnodes = []\nchannels = []\nbogus = 1");
    assert_eq!(paths(&errs), ["bogus", "regions", "nodes", "channels"]);
}

#[test]
fn numbers_out_of_range_are_errors() {
    let text = format!(
        "{BASE}{}{CHANNEL}",
        r#"
[[nodes]]
name = "big"
region = "r"
count = 0
[[nodes.gpus]]
model = "X"
memory_gib = 1e300
cost_per_hour = 1e14
[[nodes.gpus]]
model = "Y"
memory_gib = nan
cost_per_hour = -1
count = 100000
[[nodes.gpus]]
model = "Z"
memory_gib = 9223372036854775807
cost_per_hour = 9223372036854775807
[[nodes.gpus]]
model = "W"
memory_gib = -inf
cost_per_hour = true
"#
    );
    let errs = err_of(&text);
    let got: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "nodes[1].count: must be > 0",
            "nodes[1].gpus[0].memory_gib: too large",
            "nodes[1].gpus[0].cost_per_hour: too large",
            "nodes[1].gpus[1].memory_gib: must be a finite number",
            "nodes[1].gpus[1].cost_per_hour: must be >= 0",
            "nodes[1].gpus[1].count: must be <= 1024",
            "nodes[1].gpus[2].memory_gib: too large",
            "nodes[1].gpus[2].cost_per_hour: too large",
            "nodes[1].gpus[3].memory_gib: must be a finite number",
            "nodes[1].gpus[3].cost_per_hour: expected a number (dollars), found boolean",
        ]
    );
}

/// Pipelines, after the valid one of `BASE`, that break the stage rules.
const BAD_STAGES: &str = r#"
[[pipelines]]
name = "bad"
[[pipelines.stages]]
name = "a"
kind = "cpu"
provider = "x"
duration_ms = 0
gpu_memory_gib = 2
[[pipelines.stages]]
name = "a"
kind = "external"
duration_ms = 10
jitter_ms = 11
cost = 1
cheap_cost = 2
[[pipelines.stages]]
name = "up"
kind = "publish"
duration_ms = 10
[[pipelines.stages]]
name = "g"
kind = "gpu"
duration_ms = 10

[[pipelines]]
name = "none"
stages = []

[[pipelines]]
name = "nopub"
[[pipelines.stages]]
name = "x"
kind = "weird"
duration_ms = 1
[[pipelines.stages]]
name = "y"
kind = "cpu"
duration_ms = 1

[[pipelines]]
name = "p"
[[pipelines.stages]]
name = "a"
kind = "publish"
duration_ms = 1
[[pipelines.stages]]
name = "b"
kind = "publish"
duration_ms = 1
"#;

#[test]
fn stage_rules() {
    let text = format!("{BASE}{BAD_STAGES}{CHANNEL}");
    let errs = err_of(&text);
    assert_eq!(
        paths(&errs),
        [
            "pipelines[1].stages[0].provider",
            "pipelines[1].stages[0].duration_ms",
            "pipelines[1].stages[0].gpu_memory_gib",
            "pipelines[1].stages[1].name",
            "pipelines[1].stages[1].provider",
            "pipelines[1].stages[1].jitter_ms",
            "pipelines[1].stages[1].cheap_cost",
            "pipelines[1].stages[3].gpu_memory_gib",
            "pipelines[1].stages[2].kind",
            "pipelines[2].stages",
            "pipelines[3].stages[0].kind",
            "pipelines[4].name",
            "pipelines[4].stages[1].kind",
        ],
        "{errs}"
    );
}

#[test]
fn channel_rules() {
    let text = format!(
        "{BASE}{}",
        r#"
[[regions]]
name = "r2"
[[latency]]
between = ["r", "r2"]
ms = 5

[[channels]]
name = "c"
count = 2
home_region = "r"
failover_regions = ["r", "r2", "r2", "zz", 3]
videos_per_day = 10001
window = "20:00-08:00"
pipeline = "nope"
priority = 256
project = "nope"
[channels.budget]
daily_soft = 3
daily_hard = 2
per_video_soft = 1
extra = 1

[[channels]]
name = "c-1"
home_region = "r2"
videos_per_day = 1
window = "00:00-24:00"
pipeline = "p"
project = "q"

[[channels]]
name = "d"
home_region = "r2"
videos_per_day = 1
pipeline = 7
project = "q"
"#
    );
    let errs = err_of(&text);
    assert_eq!(
        paths(&errs),
        [
            "channels[0].failover_regions[0]",
            "channels[0].failover_regions[2]",
            "channels[0].failover_regions[3]",
            "channels[0].failover_regions[4]",
            "channels[0].videos_per_day",
            "channels[0].window",
            "channels[0].priority",
            "channels[0].project",
            "channels[0].budget.extra",
            "channels[0].budget.daily_soft",
            "channels[0].pipeline",
            "channels[1].name",
            "channels[2].pipeline",
        ],
        "{errs}"
    );
}

#[test]
fn budget_soft_defaults_to_hard() {
    let text = format!("{BASE}{CHANNEL}[channels.budget]\ndaily_hard = 2\nper_video_soft = 0.5\n");
    let t = parse_topology(&text).unwrap_or_else(|e| panic!("{e}"));
    let b = t.channels[0].budget;
    assert_eq!(b.daily_soft_micros, 2_000_000);
    assert_eq!(b.daily_hard_micros, 2_000_000);
    assert_eq!(b.per_video_soft_micros, 500_000);
    assert_eq!(b.per_video_hard_micros, u64::MAX);
}

#[test]
fn latency_rules() {
    let text = format!(
        "{BASE}{CHANNEL}{}",
        r#"
[[regions]]
name = "r2"
[[regions]]
name = "r3"
[[regions]]
name = "r"
[[latency]]
between = ["r", "r2"]
ms = 5
[[latency]]
between = ["r2", "r"]
ms = 6
[[latency]]
between = ["r3", "r3"]
ms = 60001
[[latency]]
between = ["r3"]
ms = 1
"#
    );
    let errs = err_of(&text);
    let got: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "regions[3].name: duplicate region name `r` (first at regions[0].name)",
            "latency[1].between: duplicate latency pair `r2`/`r`",
            "latency[2].ms: must be <= 60000",
            "latency[3].between: expected two region names, found 1",
            "latency: missing latency between `r` and `r3`",
            "latency: missing latency between `r2` and `r3`",
        ]
    );
}

#[test]
fn inline_pipeline_shared_by_stamped_channels() {
    let text = format!(
        "{BASE}{}",
        r#"
[[channels]]
name = "s"
count = 2
home_region = "r"
videos_per_day = 1
project = "q"
pipeline = { name = "mine", stages = [{ name = "up", kind = "publish", duration_ms = 1 }] }
"#
    );
    let t = parse_topology(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.pipelines.len(), 2);
    assert_eq!(t.pipelines[1].name, "s/mine");
    assert_eq!(t.channels.len(), 2);
    assert!(t.channels.iter().all(|c| c.pipeline == PipelineId(1)));
}

const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    ",",
    "{",
    "}",
    ".",
    "\n",
    "#",
    " ",
    "-1",
    "0",
    "1",
    "1e400",
    "1e300",
    "nan",
    "inf",
    "-inf",
    "-0.0",
    "99999999999999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "true",
    "1.5",
    "\"eu-x\"",
    "\"\"",
    "count = 3\n",
    "count = 10000\n",
    "[[nodes]]\n",
    "[[channels]]\n",
    "[[pipelines.stages]]\n",
    "[channels.budget]\n",
    "kind = \"gpu\"\n",
    "kind = \"publish\"\n",
    "name = \"a\"\n",
    "preset = \"youtube-default\"\n",
    "24:00",
    "-14:00",
    "+99:99",
    "\u{e9}",
    "1979-05-27",
];

#[derive(Clone, Debug)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, usize),
    Replace(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(a, t)| Edit::Insert(a, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Replace(a, b)),
    ]
}

fn mutate(edits: &[Edit]) -> String {
    let mut bytes = VALID.as_bytes().to_vec();
    for ed in edits {
        if bytes.is_empty() {
            break;
        }
        match *ed {
            Edit::Delete(at, n) => {
                let at = at % bytes.len();
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Insert(at, t) => {
                let at = at % (bytes.len() + 1);
                let tok = TOKENS[t].as_bytes();
                bytes.splice(at..at, tok.iter().copied());
            }
            Edit::Replace(at, b) => {
                let at = at % bytes.len();
                bytes[at] = b;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in ".*") {
        let _ = parse_topology(&s);
    }

    #[test]
    fn mutated_example_never_panics(edits in prop::collection::vec(edit(), 1..6)) {
        let text = mutate(&edits);
        match parse_topology(&text) {
            Ok(_) => {}
            Err(errs) => prop_assert!(!errs.0.is_empty()),
        }
    }
}

/// A value to put somewhere in the parsed example.
fn odd_value(i: usize) -> Option<toml::Value> {
    use toml::Value as V;
    Some(match i % 24 {
        0 => V::Integer(-1),
        1 => V::Integer(0),
        2 => V::Integer(i64::MAX),
        3 => V::Integer(i64::MIN),
        4 => V::Integer(70_000),
        5 => V::Float(f64::NAN),
        6 => V::Float(f64::INFINITY),
        7 => V::Float(1e300),
        8 => V::Float(-0.5),
        9 => V::Float(1e-300),
        10 => V::String(String::new()),
        11 => V::String("eu-x".into()),
        12 => V::String("gpu".into()),
        13 => V::String("publish".into()),
        14 => V::String("24:00-00:00".into()),
        15 => V::String("+14:00".into()),
        16 => V::Boolean(true),
        17 => V::Array(vec![]),
        18 => V::Table(toml::Table::new()),
        19 => V::Array(vec![V::String("us-east".into()), V::Integer(1)]),
        20 => V::String("us-east".into()),
        21 => V::String("shorts".into()),
        22 => V::Integer(10_000),
        _ => return None, // remove the key or element
    })
}

/// Number of values in the tree (every table entry and array element).
fn count_slots(v: &toml::Value) -> usize {
    match v {
        toml::Value::Table(t) => t.values().map(|c| 1 + count_slots(c)).sum(),
        toml::Value::Array(a) => a.iter().map(|c| 1 + count_slots(c)).sum(),
        _ => 0,
    }
}

/// Replaces (or removes) the `n`-th slot in depth-first order.
fn replace_slot(v: &mut toml::Value, n: &mut usize, with: &Option<toml::Value>) -> bool {
    match v {
        toml::Value::Table(t) => {
            let keys: Vec<String> = t.keys().cloned().collect();
            for k in keys {
                if *n == 0 {
                    match with {
                        Some(w) => t.insert(k, w.clone()),
                        None => t.remove(&k),
                    };
                    return true;
                }
                *n -= 1;
                if let Some(c) = t.get_mut(&k) {
                    if replace_slot(c, n, with) {
                        return true;
                    }
                }
            }
            false
        }
        toml::Value::Array(a) => {
            for i in 0..a.len() {
                if *n == 0 {
                    match with {
                        Some(w) => a[i] = w.clone(),
                        None => {
                            a.remove(i);
                        }
                    }
                    return true;
                }
                *n -= 1;
                if replace_slot(&mut a[i], n, with) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

proptest! {
    /// Structural mutations reach the validator rather than the TOML parser.
    #[test]
    fn value_mutations_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<usize>()), 1..5)
    ) {
        let mut root = toml::Value::Table(VALID.parse::<toml::Table>().unwrap());
        for (slot, val) in edits {
            let slots = count_slots(&root);
            if slots == 0 {
                break;
            }
            let mut n = slot % slots;
            replace_slot(&mut root, &mut n, &odd_value(val));
        }
        if let Ok(text) = toml::to_string(&root) {
            if let Err(errs) = parse_topology(&text) {
                prop_assert!(!errs.0.is_empty());
                prop_assert!(errs.0.iter().all(|e| e.path != "<toml>"), "{}", errs);
            }
        }
    }
}

#[test]
fn module_doc_example_parses() {
    let src = include_str!("../src/config.rs");
    let mut text = String::new();
    let mut inside = false;
    for line in src.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if doc.starts_with("```") {
            if inside {
                break;
            }
            inside = true;
            continue;
        }
        if inside {
            text.push_str(doc);
            text.push('\n');
        }
    }
    let t = parse_topology(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.gpus.len(), 4);
    assert_eq!(t.pipelines[1].name, "news/inline");
    assert_eq!(t.channels.len(), 2);
}
