//! `reelfleet node --config FILE`: one live node until SIGINT or SIGTERM,
//! which drain it (its channels move to other nodes) before it exits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reelfleet::live::config::{NodeConfig, PublisherConfig};
use reelfleet::live::fault_points::FaultPoints;
use reelfleet::live::runtime::{NodeSpec, RunningNode};
use reelfleet::live::transport::TlsIdentity;
use reelfleet::publish::directory::DirectoryPublisher;
use reelfleet::publish::youtube::{YoutubeConfig, YoutubePublisher};
use reelfleet::publish::Publisher;
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use reelfleet::store::Store;
use topology::Topology;

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The node config (see README, "Running nodes").
    #[arg(long)]
    config: PathBuf,
    /// Enable the fault points (testing only): a point armed by a file in
    /// <data_dir>/faults/ stops this process there (SIGSTOP) once. Known
    /// points: publish-after-guard.
    #[arg(long)]
    allow_faults: bool,
    /// Record what every machine is fed into DIR/<node>/ (the flight
    /// recorder; `reelfleet replay DIR` replays it). Overrides the
    /// config's `[record]` dir; its limits still apply.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
}

pub fn load_topology(path: &Path) -> Result<Topology, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    topology::config::parse_topology(&text).map_err(|e| format!("{}:\n{e}", path.display()))
}

pub fn build_publisher(
    cfg: Option<&PublisherConfig>,
    data_dir: &Path,
    topo: &Topology,
) -> Result<Arc<dyn Publisher>, String> {
    match cfg {
        None => Ok(Arc::new(
            DirectoryPublisher::new(data_dir.join("published")).map_err(|e| e.reason)?,
        )),
        Some(PublisherConfig::Directory { path }) => Ok(Arc::new(
            DirectoryPublisher::new(path).map_err(|e| e.reason)?,
        )),
        Some(PublisherConfig::Youtube {
            api_base,
            upload_base,
            token_url,
            client_id,
            client_secret,
            refresh_token_file,
            chunk_bytes,
            project,
        }) => {
            let refresh_token = std::fs::read_to_string(refresh_token_file)
                .map_err(|e| format!("cannot read {}: {e}", refresh_token_file.display()))?
                .trim()
                .to_string();
            let d = YoutubeConfig::default();
            let cfg = YoutubeConfig {
                api_base: api_base.clone().unwrap_or(d.api_base.clone()),
                upload_base: upload_base.clone().unwrap_or(d.upload_base.clone()),
                token_url: token_url.clone().unwrap_or(d.token_url.clone()),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                refresh_token,
                chunk_bytes: chunk_bytes.unwrap_or(d.chunk_bytes),
                ..d
            };
            let project = match project {
                Some(name) => Some(topo.projects.iter().find(|p| &p.name == name).ok_or_else(
                    || format!("publisher.project: no project {name:?} in the cluster config"),
                )?),
                None => None,
            };
            Ok(Arc::new(
                YoutubePublisher::new(cfg, project).map_err(|e| e.reason)?,
            ))
        }
    }
}

/// The node is in the cluster config, and every `[executors.NAME]` names
/// a stage of one of its pipelines (a misspelt stage would otherwise run
/// the synthetic stand-in and publish it).
fn check_against_cluster(cfg: &NodeConfig, topo: &Topology) -> Result<(), String> {
    if !topo.nodes.iter().any(|n| n.name == cfg.node) {
        let known: Vec<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(format!(
            "node = {:?} is not a node of the cluster config {} (nodes: {})",
            cfg.node,
            cfg.cluster.display(),
            known.join(", ")
        ));
    }
    let stages: std::collections::BTreeSet<&str> = topo
        .pipelines
        .iter()
        .flat_map(|p| p.stages.iter().map(|s| s.name.as_str()))
        .collect();
    for name in cfg.executors.keys() {
        if !stages.contains(name.as_str()) {
            return Err(format!(
                "[executors.{name}]: no pipeline of the cluster has a stage {name:?} (stages: {})",
                stages.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    Ok(())
}

/// The QUIC (UDP) and HTTP (TCP) ports are free. A check, then a release:
/// another process could take one in between, and the real bind then
/// fails with the same clear message; what this spares is a store and
/// folders written for a node that could never start.
fn check_ports_free(cfg: &NodeConfig) -> Result<(), String> {
    std::net::UdpSocket::bind(cfg.listen)
        .map_err(|e| format!("listen = {}: cannot listen there (UDP): {e}", cfg.listen))?;
    if let Some(m) = cfg.metrics {
        std::net::TcpListener::bind(m)
            .map_err(|e| format!("metrics = {m}: cannot listen there: {e}"))?;
    }
    Ok(())
}

/// The node's fault points: off unless `--allow-faults` (tests only).
fn fault_points(cfg: &NodeConfig, allow: bool) -> Result<FaultPoints, String> {
    if !allow {
        return Ok(FaultPoints::off());
    }
    let dir = cfg.data_dir.join("faults");
    eprintln!(
        "{}: fault points enabled (--allow-faults, armed through {}): for tests only",
        cfg.node,
        dir.display()
    );
    FaultPoints::allowed(&dir)
}

/// The flight recorder, if `--record` or `[record]` asks for one.
fn start_recorder(
    cfg: &NodeConfig,
    dir: Option<&Path>,
    topo: &Topology,
) -> Result<Option<Arc<reelfleet::record::Recorder>>, String> {
    let rc = match (dir, &cfg.record) {
        (None, None) => return Ok(None),
        (Some(d), c) => reelfleet::record::RecordConfig {
            dir: d.to_path_buf(),
            ..c.clone().unwrap_or_default()
        },
        (None, Some(c)) => c.clone(),
    };
    let text = std::fs::read_to_string(&cfg.cluster)
        .map_err(|e| format!("cannot read {}: {e}", cfg.cluster.display()))?;
    let id = topo
        .nodes
        .iter()
        .position(|n| n.name == cfg.node)
        .unwrap_or(0) as u32;
    reelfleet::record::Recorder::start(&rc, &cfg.node, id, &text).map(Some)
}

pub fn run(args: NodeArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        // Drained on purpose: not a failure to restart on.
        Err(e) if e.starts_with(reelfleet::live::runtime::DRAINED_PREFIX) => {
            eprintln!("{e}");
            0
        }
        // Too far from the peers' clocks: a service manager may be told
        // not to restart on this status (it would be refused again).
        Err(e) if e.contains(reelfleet::live::runtime::CLOCK_PREFIX) => {
            eprintln!("error: {e}");
            3
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Opens the store and has it answer a read (etcd: one that needs a
/// quorum), waiting out unavailability: a node started while the store is
/// briefly down starts once it is back instead of exiting.
async fn open_store(url: &StoreUrl) -> Result<AnyStore, actors::store::StoreError> {
    reelfleet::live::runtime::waiting_out_unavailable("opening the store", || async {
        let store = AnyStore::open(url).await?;
        store.get(&[actors::store::key(b"x/probe")]).await?;
        Ok(store)
    })
    .await
}

fn run_inner(args: NodeArgs) -> Result<(), String> {
    let cfg = NodeConfig::load(&args.config)?;
    let topo = Arc::new(load_topology(&cfg.cluster)?);
    // Everything is checked before anything is written (the store, the
    // data folder, published/): a bad config leaves no trace.
    check_against_cluster(&cfg, &topo).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let url: StoreUrl = cfg.store.parse()?;
    let identity = TlsIdentity::load(&cfg.certs, "nodes", &cfg.node)?;
    check_ports_free(&cfg)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.data_dir.display()))?;
    let publisher = build_publisher(cfg.publisher.as_ref(), &cfg.data_dir, &topo)?;
    let fault_points = fault_points(&cfg, args.allow_faults)?;
    let recorder = start_recorder(&cfg, args.record.as_deref(), &topo)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async move {
        let store = Arc::new(
            open_store(&url)
                .await
                .map_err(|e| format!("cannot open the store {}: {e}", cfg.store))?,
        );
        let lease_ms = cfg.timing.lease_ms;
        let node = RunningNode::start(NodeSpec {
            topo,
            name: cfg.node.clone(),
            store,
            listen: cfg.listen,
            identity,
            timing: cfg.timing.clone(),
            executors: cfg.executors.clone(),
            artifacts: cfg.artifacts_dir(),
            publisher,
            gpu: cfg.gpu.clone(),
            metrics: cfg.metrics,
            metrics_channels_max: cfg.metrics_channels_max,
            fault_points,
            recorder,
        })
        .await?;
        println!(
            "{}: up; QUIC on {}{}",
            cfg.node,
            node.quic_addr,
            node.metrics_addr
                .map(|a| format!(", metrics on http://{a}/metrics"))
                .unwrap_or_default()
        );
        let result = until_stopped(&node, &cfg.node, lease_ms).await;
        node.stop().await;
        result
    })
}

/// Serves until SIGINT or SIGTERM (then drains) or the node stops itself.
async fn until_stopped(node: &RunningNode, name: &str, lease_ms: u64) -> Result<(), String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let why = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        r = node.stop_requested() => Some(r),
    };
    match why {
        None => {
            tracing::info!(node = %name, "draining (signal)");
            let drained = node
                .drain(Duration::from_millis(lease_ms * 5 + 10_000))
                .await;
            if !drained {
                tracing::warn!(
                    node = %name,
                    "drain did not finish; stopping anyway (the lease will lapse)"
                );
            }
            Ok(())
        }
        Some(r) if r == "drained" => Ok(()),
        Some(r) => Err(format!("node stopped: {r}")),
    }
}
