//! `reelfleet bench-dispatch`: how many durable job transitions one live
//! node makes per second. One node in this process, the real runtime
//! (channel actors, the store port with its group commit, the synthetic
//! executor, the directory publisher), N channels whose pipeline is
//! `--stages` CPU stages of 1 ms and an upload. The plan lead is an hour,
//! so at start every channel has a backlog of up to `active_videos_max`
//! videos to run at once: the stages run as fast as the node can commit
//! their starts and ends, and the uploads wait for their slots.
//!
//! Measured over `--seconds` after every channel is owned: stage jobs
//! ended per second (each is two durable transitions of its video: the
//! start and the end, each committed before it takes effect) and store
//! commits per second (the store's version: one per commit that wrote).
//! A benchmark, never a test: it reports, it does not judge.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use reelfleet::live::config::Timing;
use reelfleet::live::runtime::{NodeSpec, RunningNode};
use reelfleet::live::transport::TlsIdentity;
use reelfleet::publish::directory::DirectoryPublisher;
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use reelfleet::store::Store;

#[derive(Args, Debug)]
pub struct DispatchArgs {
    /// The store [default: a new redb file under --data].
    #[arg(long)]
    store: Option<String>,
    /// Where certificates, artifacts, published files (and the default
    /// store) go; must not exist yet, or be empty.
    #[arg(long, default_value = "bench-dispatch")]
    data: PathBuf,
    /// Channels hosted by the node.
    #[arg(long, default_value_t = 2_000)]
    channels: u32,
    /// CPU stages (1 ms each) before the upload.
    #[arg(long, default_value_t = 2)]
    stages: u32,
    /// Channels sharing one project (its quota ledger: one record that
    /// every upload reservation of those channels writes).
    #[arg(long, default_value_t = 10)]
    channels_per_project: u32,
    /// How long to measure, after every channel is owned.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Run the node with the flight recorder on (into <data>/record), and
    /// report the bytes it wrote.
    #[arg(long)]
    record: bool,
}

/// At most this many channels (one node's supported bound, README).
const CHANNELS_MAX: u32 = 100_000;
const STAGES_MAX: u32 = 16;

pub fn run(args: DispatchArgs) -> i32 {
    crate::cli_bench::report(run_inner(&args))
}

/// The bench fleet: one region, one node without GPUs, `channels` channels
/// at the highest rate a channel may have, `per_project` to a project.
fn cluster_toml(channels: u32, stages: u32, per_project: u32) -> String {
    let mut t = String::from("[[regions]]\nname = \"r0\"\n\n[[pipelines]]\nname = \"bench\"\n");
    for s in 0..stages {
        t.push_str(&format!(
            "[[pipelines.stages]]\nname = \"s{s}\"\nkind = \"cpu\"\nduration_ms = 1\n"
        ));
    }
    t.push_str("[[pipelines.stages]]\nname = \"upload\"\nkind = \"publish\"\nduration_ms = 1\n\n");
    let projects = channels.div_ceil(per_project);
    for p in 0..projects {
        let count = per_project.min(channels - p * per_project);
        t.push_str(&format!(
            "[[projects]]\nname = \"p{p}\"\n[[projects.buckets]]\nname = \"units\"\n\
             units_per_day = 1000000000000\n[projects.costs]\n\
             upload = {{ bucket = \"units\", units = 1 }}\n\n\
             [[channels]]\nname = \"p{p}-ch\"\ncount = {count}\nhome_region = \"r0\"\n\
             videos_per_day = 10000\npipeline = \"bench\"\nproject = \"p{p}\"\n\n"
        ));
    }
    t.push_str("[[nodes]]\nname = \"n0\"\nregion = \"r0\"\n");
    t
}

fn check(args: &DispatchArgs) -> Result<(), String> {
    if args.channels == 0 || args.channels > CHANNELS_MAX {
        return Err(format!(
            "--channels {}: from 1 to {CHANNELS_MAX}",
            args.channels
        ));
    }
    if args.stages == 0 || args.stages > STAGES_MAX {
        return Err(format!("--stages {}: from 1 to {STAGES_MAX}", args.stages));
    }
    if args.channels_per_project == 0 {
        return Err("--channels-per-project 0: at least 1".into());
    }
    if args.seconds == 0 || args.seconds > 3_600 {
        return Err(format!("--seconds {}: from 1 to 3600", args.seconds));
    }
    crate::cli_bench::fresh_data_dir(&args.data)?;
    Ok(())
}

/// With `--record`, the node's recorder, into `<data>/record`.
fn bench_recorder(
    args: &DispatchArgs,
    data: &std::path::Path,
) -> Result<Option<Arc<reelfleet::record::Recorder>>, String> {
    if !args.record {
        return Ok(None);
    }
    let cfg = reelfleet::record::RecordConfig {
        // Sized for a long run: nothing is deleted while measuring.
        total_bytes_max: 64 << 30,
        ..reelfleet::record::RecordConfig::in_dir(&data.join("record"))
    };
    let text = cluster_toml(args.channels, args.stages, args.channels_per_project);
    reelfleet::record::Recorder::start(&cfg, "n0", 0, &text).map(Some)
}

fn run_inner(args: &DispatchArgs) -> Result<String, String> {
    check(args)?;
    let topo = Arc::new(
        topology::config::parse_topology(&cluster_toml(
            args.channels,
            args.stages,
            args.channels_per_project,
        ))
        .map_err(|e| format!("the bench fleet: {e}"))?,
    );
    std::fs::create_dir_all(&args.data)
        .map_err(|e| format!("cannot create {}: {e}", args.data.display()))?;
    let data = args
        .data
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.data.display()))?;
    let url: StoreUrl = match &args.store {
        Some(s) => s.parse().map_err(|e| format!("--store {s}: {e}"))?,
        None => StoreUrl::Redb(data.join("store.redb")),
    };
    crate::cli_up::ensure_certs(&data.join("certs"), &["n0".to_string()])?;
    let publisher: Arc<dyn reelfleet::publish::Publisher> =
        Arc::new(DirectoryPublisher::new(data.join("published")).map_err(|e| e.reason)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let recorder = bench_recorder(args, &data)?;
    rt.block_on(async move {
        let store = Arc::new(
            AnyStore::open(&url)
                .await
                .map_err(|e| format!("cannot open the store: {e}"))?,
        );
        let node = RunningNode::start(NodeSpec {
            topo: Arc::clone(&topo),
            name: "n0".into(),
            store: Arc::clone(&store),
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            identity: TlsIdentity::load(&data.join("certs"), "nodes", "n0")?,
            timing: Timing {
                plan_lead_ms: 3_600_000,
                clock_offset_max_ms: 0,
                ..Timing::default()
            },
            executors: Default::default(),
            artifacts: data.join("artifacts"),
            publisher,
            gpu: Default::default(),
            metrics: None,
            metrics_channels_max: reelfleet::live::config::METRICS_CHANNELS_MAX,
            fault_points: Default::default(),
            recorder,
        })
        .await?;
        let line = measure(&node, &store, args).await;
        node.stop().await;
        line
    })
}

/// The bytes of a recording folder's files.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn version(store: &AnyStore) -> Result<u64, String> {
    let snap = store
        .snapshot()
        .await
        .map_err(|e| format!("cannot read the store's version: {e}"))?;
    Ok(snap.version())
}

/// Waits until the node owns all `channels`; how long that took, in s.
async fn wait_owned(node: &RunningNode, channels: u32) -> Result<f64, String> {
    let m = &node.ctx.metrics;
    let started = Instant::now();
    while m.channels_owned.load(Ordering::Relaxed) < u64::from(channels) {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "only {} of {channels} channels owned after 300 s",
                m.channels_owned.load(Ordering::Relaxed),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn measure(
    node: &RunningNode,
    store: &AnyStore,
    args: &DispatchArgs,
) -> Result<String, String> {
    let m = &node.ctx.metrics;
    let claimed_s = wait_owned(node, args.channels).await?;
    let rec_dir = node.ctx.recorder.as_ref().map(|r| r.node_dir.clone());
    let bytes = || rec_dir.as_deref().map(dir_bytes).unwrap_or(0);
    let b0 = bytes();
    let (d0, n0) = (
        m.publish_delay_ms_sum.load(Ordering::Relaxed),
        m.publish_delay_count.load(Ordering::Relaxed),
    );
    m.publish_delay_ms_max.store(0, Ordering::Relaxed);
    let (v0, j0, p0) = (
        version(store).await?,
        m.jobs_ended.load(Ordering::Relaxed),
        m.videos_published.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let mut ended_per_s = Vec::new();
    let mut last = j0;
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = m.jobs_ended.load(Ordering::Relaxed);
        ended_per_s.push(now - last);
        last = now;
    }
    let secs = t0.elapsed().as_secs_f64();
    let b1 = bytes();
    let delays = m.publish_delay_count.load(Ordering::Relaxed) - n0;
    let delay_mean_ms =
        (m.publish_delay_ms_sum.load(Ordering::Relaxed) - d0) as f64 / delays.max(1) as f64;
    let delay_max_ms = m.publish_delay_ms_max.load(Ordering::Relaxed);
    let (v1, j1, p1) = (
        version(store).await?,
        m.jobs_ended.load(Ordering::Relaxed),
        m.videos_published.load(Ordering::Relaxed),
    );
    let jobs = (j1 - j0) as f64 / secs;
    let commits = v1.saturating_sub(v0) as f64 / secs;
    ended_per_s.sort_unstable();
    let min = ended_per_s.first().copied().unwrap_or(0);
    let recorded = match rec_dir {
        Some(_) => format!(
            "; recording: {:.2} MB/s, {:.0} bytes per stage job",
            (b1 - b0) as f64 / secs / 1e6,
            (b1 - b0) as f64 / ((j1 - j0).max(1)) as f64
        ),
        None => String::new(),
    };
    Ok(format!(
        "{} channels ({} to a project) claimed in {claimed_s:.1} s; over {secs:.1} s: {jobs:.0} stage jobs ended/s \
         ({:.0} durable job transitions/s: start and end; slowest second {min} jobs), \
         {commits:.0} store commits/s ({:.2} jobs per commit), {:.0} videos published/s \
         (after their slots' instants: mean {delay_mean_ms:.0} ms, max {delay_max_ms} ms){recorded}",
        args.channels,
        args.channels_per_project,
        2.0 * jobs,
        if commits > 0.0 { jobs / commits } else { 0.0 },
        (p1 - p0) as f64 / secs,
    ))
}
