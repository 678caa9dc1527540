//! The fleet as plain data: regions, nodes, GPUs, pipelines, publishing
//! projects and channels. Everything is addressed by dense index ids so that
//! the machines and the simulator can keep per-entity state in `Vec`s.
//!
//! Architecture invariant: nothing here does I/O, reads a clock or draws a
//! random number. A `Topology` is built once (from TOML or by a scenario) and
//! then only read.

use crate::ids::{ChannelId, GpuId, NodeId, PipelineId, ProjectId, RegionId};

/// Money is counted in micro-dollars so that sums are exact integers.
pub type Micros = u64;

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub region: RegionId,
    pub zone: String,
    /// Ids of this node's GPUs, into `Topology::gpus`.
    pub gpus: Vec<GpuId>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub node: NodeId,
    pub model: String,
    pub memory_bytes: u64,
    pub cost_per_hour_micros: Micros,
}

/// How long a stage takes: uniform in `mean_ms ± jitter_ms`.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationModel {
    pub mean_ms: u64,
    pub jitter_ms: u64,
}

impl DurationModel {
    pub fn max_ms(&self) -> u64 {
        self.mean_ms + self.jitter_ms
    }
    /// `unit` is a uniform draw in `[0, 1)` scaled to `u32::MAX`.
    pub fn sample_ms(&self, unit: u32) -> u64 {
        let span = 2 * self.jitter_ms + 1;
        let low = self.mean_ms.saturating_sub(self.jitter_ms);
        low + ((u64::from(unit) * span) >> 32)
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// Runs on the owning node's CPUs.
    Cpu,
    /// Runs on one GPU of the channel's region (or a spill region).
    Gpu,
    /// A call to an outside API. `cheap_provider` is the tier used once a
    /// soft budget limit is reached.
    External {
        provider: String,
        cheap_provider: Option<String>,
    },
    /// Upload to the publishing project's API. Always the last stage.
    Publish,
}

/// What a stage costs. GPU stages also pay the GPU's hourly price for the
/// time they hold it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostModel {
    pub fixed_micros: Micros,
    /// Price of the cheap tier of an external stage; ignored elsewhere.
    pub cheap_fixed_micros: Micros,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub kind: StageKind,
    /// GPU memory the job holds while it runs; 0 for non-GPU stages.
    pub gpu_memory_bytes: u64,
    pub duration: DurationModel,
    pub cost: CostModel,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    pub name: String,
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Most a video of this pipeline can cost with full-price tiers on the
    /// dearest GPU of the fleet.
    pub fn max_cost_micros(&self, gpu_cost_per_hour_max: Micros) -> Micros {
        self.stages
            .iter()
            .map(|s| stage_cost_bound_micros(s, gpu_cost_per_hour_max, false))
            .sum()
    }
}

/// Upper bound of what one run of `stage` costs; budget reservations use it.
pub fn stage_cost_bound_micros(stage: &Stage, gpu_cost_per_hour: Micros, cheap: bool) -> Micros {
    match stage.kind {
        StageKind::Gpu => {
            stage.cost.fixed_micros
                + gpu_cost_per_hour.saturating_mul(stage.duration.max_ms()) / 3_600_000
        }
        StageKind::External { .. } if cheap => stage.cost.cheap_fixed_micros,
        _ => stage.cost.fixed_micros,
    }
}

/// Daily and per-video spending caps. Soft limits switch external stages to
/// their cheap tier; hard limits stop new work.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub daily_soft_micros: Micros,
    pub daily_hard_micros: Micros,
    pub per_video_soft_micros: Micros,
    pub per_video_hard_micros: Micros,
}

impl Budget {
    pub const UNLIMITED: Budget = Budget {
        daily_soft_micros: Micros::MAX,
        daily_hard_micros: Micros::MAX,
        per_video_soft_micros: Micros::MAX,
        per_video_hard_micros: Micros::MAX,
    };
}

/// When in the day a channel publishes: minutes after midnight UTC, half-open
/// `[start_minute, end_minute)`. Videos are planned evenly over the window.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishWindow {
    pub start_minute: u32,
    pub end_minute: u32,
}

impl PublishWindow {
    pub const ALL_DAY: PublishWindow = PublishWindow {
        start_minute: 0,
        end_minute: 24 * 60,
    };
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub home_region: RegionId,
    /// Regions the channel may move to when its home region is down, in
    /// order. Empty: the channel waits for its home region.
    pub failover_regions: Vec<RegionId>,
    pub videos_per_day: u32,
    pub window: PublishWindow,
    pub pipeline: PipelineId,
    /// Higher runs first when GPUs are scarce.
    pub priority: u8,
    pub budget: Budget,
    pub project: ProjectId,
}

impl Channel {
    /// Home region first, then the failover regions in order.
    pub fn allowed_regions(&self) -> impl Iterator<Item = RegionId> + '_ {
        std::iter::once(self.home_region).chain(self.failover_regions.iter().copied())
    }
}

/// A daily allowance of quota units that resets at the project's reset time.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QuotaBucket {
    pub name: String,
    pub units_per_day: u64,
}

/// Which bucket a kind of API call draws from, and how many units.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaCost {
    pub bucket: usize,
    pub units: u64,
}

/// A publishing API project (for YouTube: a Google Cloud project).
///
/// Today's YouTube default is expressed as buckets `uploads` (100/day) and
/// `shared` (10,000/day) with upload = 1 from `uploads`, thumbnail = 50 from
/// `shared`; an older project has only `shared` with upload = 1,600.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PublishingProject {
    pub name: String,
    /// Offset of the reset time zone from UTC, in minutes (Pacific: -480).
    pub reset_utc_offset_minutes: i32,
    pub buckets: Vec<QuotaBucket>,
    pub upload_cost: QuotaCost,
    /// `None`: videos are published without a thumbnail call.
    pub thumbnail_cost: Option<QuotaCost>,
    /// A lookup of an earlier upload by idempotency key (videos.list).
    pub lookup_cost: QuotaCost,
}

pub const DAY_MS: u64 = 86_400_000;

impl PublishingProject {
    /// The quota day a moment falls in, counted from the epoch in the
    /// project's reset zone.
    pub fn quota_day(&self, utc_ms: u64) -> u64 {
        let shifted = utc_ms as i64 + i64::from(self.reset_utc_offset_minutes) * 60_000;
        (shifted.max(0) as u64) / DAY_MS
    }

    /// YouTube's current default: 100 uploads a day of their own plus 10,000
    /// shared units, thumbnails 50, lookups 1, reset at midnight Pacific.
    pub fn youtube_default(name: &str) -> PublishingProject {
        PublishingProject {
            name: name.to_string(),
            reset_utc_offset_minutes: -480,
            buckets: vec![
                QuotaBucket {
                    name: "uploads".into(),
                    units_per_day: 100,
                },
                QuotaBucket {
                    name: "shared".into(),
                    units_per_day: 10_000,
                },
            ],
            upload_cost: QuotaCost {
                bucket: 0,
                units: 1,
            },
            thumbnail_cost: Some(QuotaCost {
                bucket: 1,
                units: 50,
            }),
            lookup_cost: QuotaCost {
                bucket: 1,
                units: 1,
            },
        }
    }

    /// An older project where an upload costs 1,600 of 10,000 shared units.
    pub fn youtube_legacy(name: &str) -> PublishingProject {
        PublishingProject {
            name: name.to_string(),
            reset_utc_offset_minutes: -480,
            buckets: vec![QuotaBucket {
                name: "shared".into(),
                units_per_day: 10_000,
            }],
            upload_cost: QuotaCost {
                bucket: 0,
                units: 1_600,
            },
            thumbnail_cost: Some(QuotaCost {
                bucket: 0,
                units: 50,
            }),
            lookup_cost: QuotaCost {
                bucket: 0,
                units: 1,
            },
        }
    }

    /// Units one publish (upload plus thumbnail) takes from each bucket.
    pub fn publish_units(&self) -> Vec<u64> {
        let mut units = vec![0; self.buckets.len()];
        units[self.upload_cost.bucket] += self.upload_cost.units;
        if let Some(t) = self.thumbnail_cost {
            units[t.bucket] += t.units;
        }
        units
    }
}

/// The whole fleet. Ids index the vectors.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Topology {
    pub regions: Vec<Region>,
    /// One-way latency in milliseconds, `latency_ms[from][to]`.
    pub latency_ms: Vec<Vec<u32>>,
    pub nodes: Vec<Node>,
    pub gpus: Vec<Gpu>,
    pub pipelines: Vec<Pipeline>,
    pub projects: Vec<PublishingProject>,
    pub channels: Vec<Channel>,
}

impl Topology {
    #[inline]
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[id.index()]
    }
    #[inline]
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }
    #[inline]
    pub fn gpu(&self, id: GpuId) -> &Gpu {
        &self.gpus[id.index()]
    }
    #[inline]
    pub fn channel(&self, id: ChannelId) -> &Channel {
        &self.channels[id.index()]
    }
    #[inline]
    pub fn pipeline(&self, id: PipelineId) -> &Pipeline {
        &self.pipelines[id.index()]
    }
    #[inline]
    pub fn project(&self, id: ProjectId) -> &PublishingProject {
        &self.projects[id.index()]
    }
    #[inline]
    pub fn latency(&self, from: RegionId, to: RegionId) -> u32 {
        self.latency_ms[from.index()][to.index()]
    }
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> {
        (0..self.channels.len() as u32).map(ChannelId)
    }
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }
    pub fn gpu_ids(&self) -> impl Iterator<Item = GpuId> {
        (0..self.gpus.len() as u32).map(GpuId)
    }
    pub fn nodes_in(&self, region: RegionId) -> impl Iterator<Item = NodeId> + '_ {
        self.node_ids()
            .filter(move |n| self.nodes[n.index()].region == region)
    }
    pub fn gpu_cost_per_hour_max(&self) -> Micros {
        self.gpus
            .iter()
            .map(|g| g.cost_per_hour_micros)
            .max()
            .unwrap_or(0)
    }
    pub fn region_by_name(&self, name: &str) -> Option<RegionId> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .map(|i| RegionId(i as u16))
    }
}
