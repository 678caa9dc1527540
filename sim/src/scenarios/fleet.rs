//! Generated fleets: regions with realistic latencies, nodes with a mix
//! of small and large GPUs, channels on the shorts pipeline, and publishing
//! projects, all from a few numbers.

use topology::*;

/// The shape of a generated fleet.
pub struct FleetShape {
    pub regions: usize,
    pub nodes_per_region: usize,
    pub gpus_per_node: usize,
    pub channels: usize,
    pub videos_per_day: u32,
    /// Every second channel may fail over to the other regions.
    pub failover: bool,
    pub budget: Budget,
    pub project: fn(usize) -> PublishingProject,
    /// How many channels share one publishing project.
    pub channels_per_project: usize,
}

impl Default for FleetShape {
    fn default() -> Self {
        FleetShape {
            regions: 3,
            nodes_per_region: 2,
            gpus_per_node: 2,
            channels: 24,
            videos_per_day: 96,
            failover: true,
            budget: Budget {
                daily_soft_micros: 40_000_000,
                daily_hard_micros: 50_000_000,
                per_video_soft_micros: 1_000_000,
                per_video_hard_micros: 2_000_000,
            },
            project: |i| PublishingProject::youtube_default(&format!("yt-{i}")),
            channels_per_project: 1,
        }
    }
}

const REGION_NAMES: [&str; 4] = ["us-east", "eu-west", "us-west", "ap-south"];
/// One-way latency between the regions above, in ms.
const LATENCY_MS: [[u32; 4]; 4] = [
    [1, 40, 35, 110],
    [40, 1, 70, 60],
    [35, 70, 1, 120],
    [110, 60, 120, 1],
];

pub fn shorts_pipeline() -> Pipeline {
    let stage = |name: &str, kind, gib: u64, mean_ms, jitter_ms, fixed, cheap| Stage {
        name: name.into(),
        kind,
        gpu_memory_bytes: gib * GIB,
        duration: DurationModel { mean_ms, jitter_ms },
        cost: CostModel {
            fixed_micros: fixed,
            cheap_fixed_micros: cheap,
        },
    };
    let external = |p: &str, c: Option<&str>| StageKind::External {
        provider: p.into(),
        cheap_provider: c.map(Into::into),
    };
    Pipeline {
        name: "shorts".into(),
        stages: vec![
            stage(
                "script",
                external("llm-main", Some("llm-lite")),
                0,
                3_000,
                1_000,
                20_000,
                5_000,
            ),
            stage(
                "voice",
                external("tts-main", None),
                0,
                5_000,
                2_000,
                10_000,
                10_000,
            ),
            stage("images", StageKind::Gpu, 8, 20_000, 5_000, 0, 0),
            stage("render", StageKind::Gpu, 16, 45_000, 10_000, 0, 0),
            stage("upload", StageKind::Publish, 0, 10_000, 0, 0, 0),
        ],
    }
}

/// The topology of `shape`: regions with their latencies, nodes and
/// GPUs, the shorts pipeline, projects and channels.
pub fn build_fleet(shape: &FleetShape) -> Topology {
    let mut t = Topology::default();
    add_regions(&mut t, shape.regions);
    for r in 0..shape.regions {
        for i in 0..shape.nodes_per_region {
            add_node(&mut t, RegionId(r as u16), i, shape.gpus_per_node);
        }
    }
    t.pipelines.push(shorts_pipeline());
    let projects = shape.channels.div_ceil(shape.channels_per_project);
    for p in 0..projects {
        t.projects.push((shape.project)(p));
    }
    for c in 0..shape.channels {
        t.channels.push(channel(shape, c));
    }
    assert_eq!(t.channels.len(), shape.channels);
    t
}

fn add_regions(t: &mut Topology, regions: usize) {
    for r in 0..regions {
        let suffix = if r >= 4 {
            format!("-{r}")
        } else {
            String::new()
        };
        t.regions.push(Region {
            name: REGION_NAMES[r % 4].to_string() + &suffix,
        });
    }
    t.latency_ms = (0..regions)
        .map(|a| (0..regions).map(|b| LATENCY_MS[a % 4][b % 4]).collect())
        .collect();
}

/// Node `i` of `region`: its GPUs alternate between an L4 and an A100.
fn add_node(t: &mut Topology, region: RegionId, i: usize, gpus_per_node: usize) {
    let node = NodeId(t.nodes.len() as u32);
    let mut gpus = Vec::new();
    for g in 0..gpus_per_node {
        let big = (i + g) % 2 == 1;
        gpus.push(GpuId(t.gpus.len() as u32));
        t.gpus.push(Gpu {
            node,
            model: if big { "A100-80G" } else { "L4" }.into(),
            memory_bytes: if big { 80 * GIB } else { 24 * GIB },
            cost_per_hour_micros: if big { 2_500_000 } else { 800_000 },
        });
    }
    t.nodes.push(Node {
        name: format!("{}-{i}", t.regions[region.index()].name),
        region,
        zone: format!("{}", (b'a' + (i % 3) as u8) as char),
        gpus,
    });
}

/// Channel `c`: homes round the regions; every second one may fail over.
fn channel(shape: &FleetShape, c: usize) -> Channel {
    let home = RegionId((c % shape.regions) as u16);
    let failover_regions = if shape.failover && c.is_multiple_of(2) {
        (1..shape.regions)
            .map(|d| RegionId(((home.index() + d) % shape.regions) as u16))
            .collect()
    } else {
        vec![]
    };
    Channel {
        name: format!("ch-{c:04}"),
        home_region: home,
        failover_regions,
        videos_per_day: shape.videos_per_day,
        window: PublishWindow::ALL_DAY,
        pipeline: PipelineId(0),
        priority: (c % 3) as u8,
        budget: shape.budget,
        project: ProjectId((c / shape.channels_per_project) as u16),
    }
}
