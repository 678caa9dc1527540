//! What a simulation run is: a topology, the parameters of the world and of
//! the machines, a duration, a timed fault schedule, and the bounds the
//! invariant checks hold the run to.

use std::sync::Arc;

use actors::channel::ChannelParams;
use actors::dispatch::DispatchParams;
use actors::gpu::GpuParams;
use actors::membership::MembershipParams;
use topology::{ChannelId, NodeId, ProjectId, RegionId, Topology};

/// 2027-01-01T00:00:00Z: runs start on a real calendar so that quota days
/// and budget days fall where an operator expects.
pub const EPOCH_2027_MS: u64 = 1_798_761_600_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    CrashNode(NodeId),
    /// Starts a node that was crashed, or was never started.
    StartNode(NodeId),
    /// Graceful: hand channels away, then stop.
    DrainNode(NodeId),
    /// The process stops running (SIGSTOP, a long GC pause) but keeps its
    /// state; everything sent to it waits. Its clock keeps going.
    FreezeNode(NodeId),
    /// It runs again and sees everything that waited, at once.
    ThawNode(NodeId),
    /// Cuts a region off from every other region and from the store.
    PartitionRegion(RegionId),
    HealRegion(RegionId),
    /// Node-to-node messages from `from` to `to` are dropped; the reverse
    /// direction and store traffic still flow.
    OneWay {
        from: RegionId,
        to: RegionId,
    },
    HealOneWay {
        from: RegionId,
        to: RegionId,
    },
    StoreOutage(bool),
    /// Every store call takes this many milliseconds longer (a latency
    /// spike: a busy or compacting store, a slow disk); 0 ends it.
    StoreSlow(u32),
    /// Per-million chance that a commit answers "result unknown" (it is
    /// applied or not with equal odds); 0 ends the storm.
    CommitUnknown(u32),
    /// Per-million chance a GPU job faults mid-way.
    GpuFailures(u32),
    /// Per-million chance a GPU job runs `straggler_factor` times longer.
    Stragglers(u32),
    ProviderOutage {
        provider: String,
        down: bool,
    },
    /// Per-million chances the publishing API answers 5xx, 429, or loses the
    /// response of a successful upload.
    ApiFaults {
        error_5xx: u32,
        rate_limited: u32,
        lost_response: u32,
    },
    /// The fleet-wide kill switch.
    KillSwitch,
    /// An operator's `exclude NODE`: placement gives the node nothing
    /// while it runs, until `Include`.
    Exclude(NodeId),
    Include(NodeId),
    /// An operator's `maintenance ZONE|NODE SECONDS`: the nodes may stop
    /// and restart without their channels moving for `duration_ms`.
    Maintenance {
        nodes: Vec<NodeId>,
        duration_ms: u64,
    },
    MaintenanceOff,
    /// An operator's `budget CHANNEL --daily-hard USD`: the channel's
    /// daily hard limit (its soft limit no higher) from now on.
    Budget {
        channel: ChannelId,
        daily_hard_micros: u64,
    },
    /// An operator's `quota PROJECT BUCKET --units-per-day N`: the API
    /// grants that much, and reelfleet's ledger holds to it.
    QuotaLimit {
        project: ProjectId,
        bucket: usize,
        units_per_day: u64,
    },
    Pause(ChannelId),
    Resume(ChannelId),
    /// Sets a node's clock offset from true time, and its rate error.
    ClockSkew {
        node: NodeId,
        offset_ms: i64,
        drift_ppm: i32,
    },
    /// Another client of every publishing project uses this many units of
    /// each of its buckets today (a manual upload, another tool): the API
    /// refuses what reelfleet's ledger thought it had room for.
    QuotaUsedElsewhere {
        units: u32,
    },
    /// Per-million loss, duplication and reordering of node messages.
    Network {
        loss: u32,
        duplicate: u32,
        reorder: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedFault {
    /// Milliseconds after the run's start.
    pub at_ms: u64,
    pub fault: Fault,
}

/// The simulated world's behaviour when no fault is active.
#[derive(Clone, Debug)]
pub struct WorldParams {
    /// Base time for the store to answer, on top of the network latency to
    /// the store's region.
    pub store_service_ms: u64,
    pub store_region: RegionId,
    /// Per-million spurious conflicts (as an optimistic store may report).
    pub store_conflict_ppm: u32,
    pub jitter_ms: u64,
    /// One-way latency from any node to the publishing API.
    pub api_latency_ms: u64,
    /// How long an upload takes once the API has it.
    pub upload_ms: u64,
    pub provider_error_ppm: u32,
    pub straggler_factor: u64,
    /// Nodes that are not started when the run begins (scale-out).
    pub late_nodes: Vec<NodeId>,
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            store_service_ms: 2,
            store_region: RegionId(0),
            store_conflict_ppm: 0,
            jitter_ms: 2,
            api_latency_ms: 40,
            upload_ms: 8_000,
            provider_error_ppm: 2_000,
            straggler_factor: 4,
            late_nodes: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct MachineParams {
    pub channel: ChannelParams,
    pub membership: MembershipParams,
    pub gpu: GpuParams,
    pub dispatch: DispatchParams,
}

/// The bounds the checks hold a run to.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// After a node or region failure, every channel that may move is owned
    /// and running again within this (invariant 7). `None`: measured only.
    pub recovery_ms: Option<u64>,
    /// After the kill switch or a pause, no job of the channel starts later
    /// than this (invariant 8).
    pub stop_ms: u64,
    /// After the heal, every video planned before it ends within this.
    pub liveness_ms: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            recovery_ms: None,
            stop_ms: 2_000,
            liveness_ms: 45 * 60_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub topology: Arc<Topology>,
    /// True (UTC) time at which the run starts.
    pub start_utc_ms: u64,
    /// Faults happen within this; then the heal and the liveness phase.
    pub duration_ms: u64,
    pub world: WorldParams,
    pub machines: MachineParams,
    pub faults: Vec<TimedFault>,
    pub bounds: Bounds,
}
