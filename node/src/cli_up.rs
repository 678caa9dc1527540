//! `reelfleet up`: the embedded default a new user runs first. One process,
//! the demo fleet (three regions, two nodes each: six live nodes, each with
//! its own QUIC endpoint on loopback and mutual TLS between them), redb
//! under `./data`, the directory publisher under `./data/published`, and a
//! live one-line summary until Ctrl-C, which drains every node and stops.
//! Run again, it resumes from the store: videos published stay published,
//! and none is published twice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use reelfleet::certs::{self, Role};
use reelfleet::live::config::Timing;
use reelfleet::live::runtime::{NodeSpec, RunningNode};
use reelfleet::live::transport::TlsIdentity;
use reelfleet::publish::directory::DirectoryPublisher;
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use topology::Topology;

use crate::cli_node::load_topology;

const DEMO: &str = include_str!("../../examples/demo.toml");

#[derive(clap::Args)]
pub struct UpArgs {
    /// A cluster config to run instead of the built-in demo fleet.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store, certificates, artifacts and published videos live.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// HTTP for every node: /metrics, /health, /ready, /status [default:
    /// 127.0.0.1:9464, or any free port when that one is taken; an address
    /// given here must be free].
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The admin RPC (QUIC, UDP): the first node's endpoint, which
    /// `reelfleet console` and `reelfleet ctl` reach [default:
    /// 127.0.0.1:9465, or any free port when taken; a given one must be free].
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Stop by itself after this many seconds, as Ctrl-C would.
    #[arg(long)]
    run_s: Option<u64>,
    /// Record what every machine of every node is fed into DIR/<node>/
    /// (the flight recorder; `reelfleet replay DIR` replays it).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
}

pub fn run(args: UpArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub(crate) fn ensure_certs(dir: &std::path::Path, nodes: &[String]) -> Result<(), String> {
    if !dir.join("ca.pem").exists() {
        certs::init(dir, "reelfleet-up").map_err(|e| e.to_string())?;
    }
    for n in nodes {
        if !dir.join("nodes").join(format!("{n}.pem")).exists() {
            certs::issue(dir, Role::Node, n).map_err(|e| e.to_string())?;
        }
    }
    // The admin RPC's certificate for whoever runs `up`.
    if !dir.join("admins").join(format!("{UP_ADMIN}.pem")).exists() {
        certs::issue(dir, Role::Admin, UP_ADMIN).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The name of the admin certificate `up` makes for its operator.
const UP_ADMIN: &str = "admin";

/// The most nodes `up` runs in one process: each is a full node (QUIC
/// endpoint, actors, store sessions), meant for trying a fleet on one
/// machine.
pub const MAX_UP_NODES: usize = 64;

const DEFAULT_METRICS: &str = "127.0.0.1:9464";
const DEFAULT_ADMIN: &str = "127.0.0.1:9465";

/// Binds the address asked for with `--flag` (which must be free), or the
/// default, falling back to any free port only for the default. Bound
/// before anything is written, so that a busy port leaves no trace.
fn bind_listener(
    flag: &str,
    asked: Option<SocketAddr>,
    default: &str,
) -> Result<std::net::TcpListener, String> {
    let l = match asked {
        Some(addr) => std::net::TcpListener::bind(addr)
            .map_err(|e| format!("--{flag} {addr}: cannot listen there: {e}"))?,
        None => {
            let addr: SocketAddr = default
                .parse()
                .map_err(|e| format!("default --{flag} {default}: {e}"))?;
            match std::net::TcpListener::bind(addr) {
                Ok(l) => l,
                Err(_) => std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                    .map_err(|e| format!("--{flag}: cannot listen on {addr} or any port: {e}"))?,
            }
        }
    };
    l.set_nonblocking(true)
        .map_err(|e| format!("--{flag}: {e}"))?;
    Ok(l)
}

/// The address for the first node's QUIC endpoint (the admin RPC): the one
/// asked for with `--admin` (which must be free), or the default, falling
/// back to any free port only for the default. Checked before anything is
/// written; the node binds it a moment later.
fn admin_addr(asked: Option<SocketAddr>) -> Result<SocketAddr, String> {
    let free = |a: SocketAddr| std::net::UdpSocket::bind(a).map(|_| a);
    match asked {
        Some(addr) => {
            free(addr).map_err(|e| format!("--admin {addr}: cannot listen there (UDP): {e}"))
        }
        None => {
            let addr: SocketAddr = DEFAULT_ADMIN
                .parse()
                .map_err(|e| format!("default --admin {DEFAULT_ADMIN}: {e}"))?;
            Ok(free(addr).unwrap_or(SocketAddr::new(addr.ip(), 0)))
        }
    }
}

fn run_inner(args: UpArgs) -> Result<(), String> {
    let (topo, cluster_text) = fleet_topology(args.config.as_deref())?;
    let topo = Arc::new(topo);
    if topo.nodes.len() > MAX_UP_NODES {
        return Err(format!(
            "reelfleet up runs every node in this one process: at most {MAX_UP_NODES} nodes, \
             and the config has {} (run `reelfleet node` on each machine for more)",
            topo.nodes.len()
        ));
    }
    let metrics = bind_listener("metrics", args.metrics, DEFAULT_METRICS)?;
    let admin = admin_addr(args.admin)?;
    std::fs::create_dir_all(&args.data)
        .map_err(|e| format!("cannot create {}: {e}", args.data.display()))?;
    let data = args
        .data
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.data.display()))?;
    let names: Vec<String> = topo.nodes.iter().map(|n| n.name.clone()).collect();
    ensure_certs(&data.join("certs"), &names)?;
    let publisher: Arc<dyn reelfleet::publish::Publisher> =
        Arc::new(DirectoryPublisher::new(data.join("published")).map_err(|e| e.reason)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async move {
        let record = args.record.as_deref().map(|d| (d, cluster_text.as_str()));
        let nodes = start_nodes(&topo, &names, &data, &publisher, admin, record).await?;
        let metrics_addr = serve_http(metrics, &nodes)?;
        println!(
            "reelfleet up: {} nodes in {} regions, store {}, videos in {}",
            nodes.len(),
            topo.regions.len(),
            data.join("store.redb").display(),
            data.join("published").display()
        );
        println!("metrics: http://{metrics_addr}/metrics");
        if let Some(first) = nodes.first() {
            println!(
                "admin: reelfleet console --node {} --cert {} --as {UP_ADMIN}",
                first.quic_addr,
                data.join("certs").display()
            );
        }
        println!("Ctrl-C stops (drains every node); run again to resume.");
        show_summary_until_stopped(&nodes, args.run_s).await;
        drain_and_stop(nodes).await;
        Ok(())
    })
}

/// The cluster config given with `--config`, or the built-in demo fleet.
/// The cluster config given with `--config`, or the built-in demo fleet,
/// with its text (a recording keeps it).
fn fleet_topology(config: Option<&std::path::Path>) -> Result<(Topology, String), String> {
    match config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Ok((load_topology(p)?, text))
        }
        None => topology::config::parse_topology(DEMO)
            .map(|t| (t, DEMO.to_string()))
            .map_err(|e| format!("the built-in demo config: {e}")),
    }
}

/// Opens the redb store under `data` and starts one live node per name,
/// all sharing the store and the publisher.
async fn start_nodes(
    topo: &Arc<Topology>,
    names: &[String],
    data: &std::path::Path,
    publisher: &Arc<dyn reelfleet::publish::Publisher>,
    admin: SocketAddr,
    record: Option<(&std::path::Path, &str)>,
) -> Result<Vec<Arc<RunningNode>>, String> {
    let url = StoreUrl::Redb(data.join("store.redb"));
    let store = Arc::new(
        AnyStore::open(&url)
            .await
            .map_err(|e| format!("cannot open {}: {e:?}", data.join("store.redb").display()))?,
    );
    let timing = Timing {
        plan_lead_ms: 120_000,
        publish_timeout_ms: 10_000,
        dispatch_timeout_ms: 30_000,
        job_grace_ms: 10_000,
        // The nodes of one process share its clock: nothing to compare.
        clock_offset_max_ms: 0,
        ..Timing::default()
    };
    let mut nodes = Vec::new();
    for (i, n) in names.iter().enumerate() {
        // The first node's endpoint is the admin address; the others any.
        let listen = if i == 0 {
            admin
        } else {
            SocketAddr::new(admin.ip(), 0)
        };
        let recorder = match record {
            Some((dir, text)) => Some(reelfleet::record::Recorder::start(
                &reelfleet::record::RecordConfig::in_dir(dir),
                n,
                i as u32,
                text,
            )?),
            None => None,
        };
        let started = RunningNode::start(NodeSpec {
            topo: Arc::clone(topo),
            name: n.clone(),
            store: Arc::clone(&store),
            listen,
            identity: TlsIdentity::load(&data.join("certs"), "nodes", n)?,
            timing: timing.clone(),
            executors: Default::default(),
            artifacts: data.join("artifacts"),
            publisher: Arc::clone(publisher),
            gpu: Default::default(),
            metrics: None,
            metrics_channels_max: reelfleet::live::config::METRICS_CHANNELS_MAX,
            fault_points: Default::default(),
            recorder,
        })
        .await;
        let node = match started {
            // Drained through the admin RPC: it stays out until undrained.
            Err(e) if e.starts_with(reelfleet::live::runtime::DRAINED_PREFIX) => {
                println!("{e}");
                continue;
            }
            other => other?,
        };
        nodes.push(Arc::new(node));
    }
    Ok(nodes)
}

/// Serves every node's metrics, readiness and status on one listener.
fn serve_http(
    listener: std::net::TcpListener,
    nodes: &[Arc<RunningNode>],
) -> Result<SocketAddr, String> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| format!("--metrics: {e}"))?;
    let shown = nodes
        .iter()
        .map(|n| reelfleet::live::pages::Shown {
            ports: Arc::clone(&n.ctx),
            net: Arc::clone(&n.net),
        })
        .collect();
    reelfleet::http::serve_on(listener, reelfleet::live::pages::pages(shown))
}

/// Shows the one-line summary every second (every five, into a pipe or a
/// file, where it cannot be redrawn) until Ctrl-C or `run_s` seconds.
async fn show_summary_until_stopped(nodes: &[Arc<RunningNode>], run_s: Option<u64>) {
    let tty = unsafe { libc::isatty(1) } == 1;
    let stop_at = run_s.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let deadline = async {
            match stop_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = deadline => break,
            _ = tick.tick() => {
                ticks += 1;
                let line = summary(nodes);
                if tty {
                    print!("\r\x1b[K{line}");
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                } else if ticks.is_multiple_of(5) {
                    println!("{line}");
                }
            }
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM (a service manager's stop): both stop `up`
/// the same way, by draining.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Drains every node at once (a second Ctrl-C cuts that short), then stops
/// them.
async fn drain_and_stop(nodes: Vec<Arc<RunningNode>>) {
    println!();
    println!(
        "stopping: draining {} nodes (Ctrl-C again to stop at once)",
        nodes.len()
    );
    let drains = nodes.iter().map(|n| {
        let n = Arc::clone(n);
        async move { n.drain(Duration::from_secs(15)).await }
    });
    let drained = tokio::select! {
        r = futures_join_all(drains.collect()) => r.iter().filter(|d| **d).count(),
        _ = stop_signal() => 0,
    };
    println!("{}", summary(&nodes));
    println!("drained {drained} of {} nodes; stopped", nodes.len());
    for n in nodes {
        if let Ok(n) = Arc::try_unwrap(n) {
            n.stop().await;
        }
    }
}

/// Awaits every future (no extra dependency for one join).
async fn futures_join_all(
    fs: Vec<impl std::future::Future<Output = bool> + Send + 'static>,
) -> Vec<bool> {
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or(false));
    }
    out
}

fn summary(nodes: &[Arc<RunningNode>]) -> String {
    let m = |f: fn(&reelfleet::live::metrics::Metrics) -> &std::sync::atomic::AtomicU64| -> u64 {
        nodes
            .iter()
            .map(|n| f(&n.ctx.metrics).load(Ordering::Relaxed))
            .sum()
    };
    let owners: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "{}:{}",
                n.ctx.name,
                n.ctx.metrics.channels_owned.load(Ordering::Relaxed)
            )
        })
        .collect();
    format!(
        "published {} · failed {} · running {} jobs · owners {}",
        m(|x| &x.videos_published),
        m(|x| &x.videos_failed),
        m(|x| &x.jobs_running),
        owners.join(" ")
    )
}
