//! One chaos run, in order: start the fleet, wait until every channel is
//! owned, run the schedule (one fault at a time, a progress line as it
//! goes), heal everything, wait until every video in progress at the heal
//! has ended, audit, check, and write `report.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::etcd::{etcd_installed, EtcdCluster};
use super::faults::{FaultRecord, Rig};
use super::fleet::{cluster_toml, Fleet, FleetShape, Services, ADMIN};
use super::monitor::{ownership_changes, Monitor};
use super::net::Net;
use super::plant::Plant;
use super::report::{self, Bounds, ChaosReport, Check};
use super::schedule::{draw, Fault, Shape};
use super::ChaosConfig;
use crate::audit::AuditInput;
use crate::emulate::provider::ProviderEmulator;
use crate::emulate::youtube::{EmulatorConfig, YoutubeEmulator};
use crate::live::transport::TlsIdentity;
use crate::store::any::AnyStore;
use crate::store::url::StoreUrl;

/// The publish timeout the chaos fleet's nodes run with.
const PUBLISH_TIMEOUT_MS: u64 = 4_000;
/// How long the fleet may take to own every channel at start.
const STEADY_WITHIN: Duration = Duration::from_secs(90);
/// How long videos in progress at the heal may take to end.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);
/// How long the runner watches after the heal at least: the last fault's
/// recovery is measured in it.
const SETTLE_AT_LEAST: Duration = Duration::from_secs(20);

/// The running parts of a chaos fleet.
struct Started {
    /// First, so that it is dropped last (after every process stopped).
    net: Option<Net>,
    rt: tokio::runtime::Runtime,
    etcd: EtcdCluster,
    store: Arc<AnyStore>,
    emu: Arc<YoutubeEmulator>,
    provider: ProviderEmulator,
    fleet: Fleet,
    admin: TlsIdentity,
    topo: Arc<topology::Topology>,
}

/// The cluster config to break: the operator's (`cfg.cluster`), with the
/// config's node and region counts taken from it, or the generated fleet.
fn resolve_cluster(cfg: &ChaosConfig) -> Result<(ChaosConfig, String), String> {
    let mut cfg = cfg.clone();
    let text = match &cfg.cluster {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cluster = {}: cannot read it: {e}", path.display()))?;
            let topo = topology::config::parse_topology(&text)
                .map_err(|e| format!("cluster = {}: {e}", path.display()))?;
            cfg.nodes = topo.nodes.len();
            cfg.regions = topo.regions.len();
            text
        }
        None => cluster_toml(&FleetShape {
            nodes: cfg.nodes,
            regions: cfg.regions,
            channels_per_node: cfg.channels_per_node,
            lease_ms: cfg.lease_ms,
        }),
    };
    Ok((cfg, text))
}

/// Starts etcd, the emulator and every node, all under `out`.
fn start(cfg: &ChaosConfig, cluster: &str, out: &Path) -> Result<Started, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let topo = topology::config::parse_topology(cluster)
        .map_err(|e| format!("the chaos fleet's cluster config: {e}"))?;
    // Namespaced where this machine allows it (root, ip, nft), so that
    // links can be cut; on loopback otherwise, without network faults.
    let net = match super::net::unavailable() {
        None => Some(Net::create(cfg.nodes)?),
        Some(why) => {
            eprintln!("chaos: the fleet runs on loopback, without network faults: {why}");
            None
        }
    };
    let host: IpAddr = net
        .as_ref()
        .map(|n| IpAddr::from(n.bridge_ip))
        .unwrap_or(Ipv4Addr::LOCALHOST.into());
    let hosts: Vec<(Option<String>, IpAddr)> = (0..cfg.nodes)
        .map(|i| match &net {
            Some(n) => (Some(n.namespaces[i].clone()), n.node_ips[i].into()),
            None => (None, host),
        })
        .collect();
    let etcd = EtcdCluster::start_on(3, &out.join("etcd"), host)?;
    let url = format!("etcd://{}/chaos", etcd.endpoints().join(","));
    let parsed: StoreUrl = url.parse()?;
    let store = Arc::new(
        rt.block_on(AnyStore::open(&parsed))
            .map_err(|e| format!("the chaos store: {e}"))?,
    );
    let emu_cfg = EmulatorConfig {
        project: topo.projects[0].clone(),
        ..EmulatorConfig::default()
    };
    let (emu, _) = YoutubeEmulator::start_on_thread_at(emu_cfg, host)?;
    let emu = Arc::new(emu);
    let provider =
        ProviderEmulator::start_on_thread_at(&super::fleet::provider_stage_times(&topo), host)?;
    let services = Services {
        youtube: &emu.publisher_config(),
        provider: &provider.base_url(),
        hosts,
    };
    let mut fleet = Fleet::prepare(out, cluster, cfg.lease_ms, &url, &services)?;
    for i in 0..fleet.nodes.len() {
        fleet.start(i)?;
    }
    let admin = TlsIdentity::load(&out.join("certs"), "admins", ADMIN)?;
    Ok(Started {
        net,
        rt,
        etcd,
        store,
        emu,
        provider,
        fleet,
        admin,
        topo: Arc::new(topo),
    })
}

/// Set by SIGINT (Ctrl-C) or SIGTERM: the run stops where it is, and
/// everything it started (nodes, etcd members, namespaces, the bridge, nft
/// tables) is torn down as `run` returns.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_stop_signals() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// An error if a stop signal came.
fn not_stopped() -> Result<(), String> {
    if STOP.load(Ordering::SeqCst) {
        Err(
            "stopped by a signal (Ctrl-C or SIGTERM): what the run started was torn down; no audit"
                .into(),
        )
    } else {
        Ok(())
    }
}

/// Runs `cfg` with everything under `out` (which must not exist yet or be
/// empty), planting `plants` before the audit; the report, whatever its
/// verdict.
pub fn run(cfg: &ChaosConfig, out: &Path, plants: &[Plant]) -> Result<ChaosReport, String> {
    let (cfg, cluster) = resolve_cluster(cfg)?;
    let cfg = &cfg;
    let file_schedule = read_config(cfg, &cluster)?;
    prepare(out)?;
    let Started {
        net,
        rt,
        mut etcd,
        store,
        emu,
        provider,
        mut fleet,
        admin,
        topo,
    } = start(cfg, &cluster, out)?;
    let t0 = Instant::now();
    let metrics = fleet
        .nodes
        .iter()
        .map(|n| std::net::SocketAddr::new(n.ip, n.metrics_port))
        .collect();
    let monitor = Monitor::start(
        Arc::clone(&store),
        Arc::clone(&topo),
        Arc::clone(&emu),
        metrics,
        t0,
    )?;
    wait_steady(&monitor, topo.channels.len())?;
    let schedule = file_schedule.unwrap_or_else(|| drawn_schedule(cfg, net.is_some(), &topo));
    let mut rig = Rig {
        rt: &rt,
        fleet: &mut fleet,
        etcd: &mut etcd,
        emu: &emu,
        provider: &provider,
        net: net.as_ref(),
        store: &store,
        admin: &admin,
        cuts: Default::default(),
    };
    let records = run_schedule(&mut rig, &schedule, &monitor, t0, cfg.duration_s * 1000);
    not_stopped()?;
    heal(&mut rig)?;
    let heal_keys = rt.block_on(active_at_heal(&store, &topo))?;
    settle(&rt, &store, &topo, &heal_keys, &emu);
    not_stopped()?;
    for p in plants {
        let what = rt.block_on(super::plant::plant(*p, &store, &topo, &emu, out))?;
        eprintln!("chaos: planted {p:?}: {what}");
    }
    // A video the API refused for quota waits for the quota reset (the
    // next quota day): a stated reason not to have ended within the run.
    let waiting: BTreeSet<String> = emu.quota_refused_keys();
    let must_end: BTreeSet<String> = heal_keys.difference(&waiting).cloned().collect();
    let audit = rt.block_on(audit(&store, &topo, &emu, &must_end))?;
    let mut ready = ready_checks(&fleet);
    ready.push(rt.block_on(super::fence_audit::check(&store, &topo)));
    ready.extend(log_checks(&fleet));
    ready.push(exit_check(&mut fleet));
    let samples = monitor.finish();
    ready.push(made_visible_by_owner(
        &samples,
        &emu.completions(),
        &topo,
        t0,
    ));
    fleet.stop_all();
    Ok(verdict(cfg, &topo, records, samples, audit, ready, t0))
}

/// Every mistake of the config and of its schedule at once, before
/// anything starts; the schedule the config gives, if any.
fn read_config(cfg: &ChaosConfig, cluster: &str) -> Result<Option<Vec<Fault>>, String> {
    let checked = cfg.check();
    let read = match (&cfg.faults, topology::config::parse_topology(cluster)) {
        (None, _) => Ok(None),
        (Some(f), Ok(topo)) => super::schedule_file::read(f, &topo, cfg.duration_s).map(Some),
        // The config's own mistakes (no nodes) say why there is no fleet.
        (Some(_), Err(_)) if checked.is_err() => Ok(None),
        (Some(_), Err(e)) => Err(format!("the chaos fleet's cluster config: {e}")),
    };
    match (checked, read) {
        (Ok(()), Ok(s)) => Ok(s),
        (Err(a), Err(b)) => Err(format!("{a}\n{b}")),
        (Err(a), _) | (_, Err(a)) => Err(a),
    }
}

/// A schedule drawn from the config's seed for what this machine can
/// break.
fn drawn_schedule(cfg: &ChaosConfig, namespaced: bool, topo: &topology::Topology) -> Vec<Fault> {
    let stages = super::fleet::provider_stages(topo);
    draw(
        cfg.seed,
        &Shape {
            clocks: super::fleet::libfaketime().is_some(),
            net: namespaced,
            provider_stages: stages,
            nodes: cfg.nodes,
            regions: cfg.regions,
            store_members: 3,
            lease_ms: cfg.lease_ms,
            duration_ms: cfg.duration_s * 1000,
        },
    )
}

/// What must hold before anything starts: etcd installed, `out` empty;
/// Ctrl-C and SIGTERM caught from here on.
fn prepare(out: &Path) -> Result<(), String> {
    catch_stop_signals();
    if !etcd_installed() {
        return Err("reelfleet chaos runs a real etcd cluster: no `etcd` on PATH (apt-get install etcd-server)".into());
    }
    prepare_out(out)
}

fn prepare_out(out: &Path) -> Result<(), String> {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!(
            "{} exists and is not empty: give another --out, or remove it",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))
}

fn wait_steady(monitor: &Monitor, channels: usize) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let owned = monitor
            .last()
            .and_then(|s| s.owners)
            .map(|o| o.iter().filter(|x| x.is_some()).count())
            .unwrap_or(0);
        if owned == channels {
            return Ok(());
        }
        not_stopped()?;
        if t.elapsed() > STEADY_WITHIN {
            return Err(format!(
                "the fleet owned {owned} of {channels} channels after {STEADY_WITHIN:?}: see the node logs under logs/"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs the faults, each from its time for its length (a drawn schedule
/// has one at a time; a file's may overlap); what came of each.
fn run_schedule(
    rig: &mut Rig<'_>,
    schedule: &[Fault],
    monitor: &Monitor,
    t0: Instant,
    duration_ms: u64,
) -> Vec<FaultRecord> {
    let start_ms = t0.elapsed().as_millis() as u64;
    let tty = std::io::stderr().is_terminal();
    let mut records: Vec<FaultRecord> = Vec::new();
    let mut next = 0;
    let mut active: Vec<(&Fault, usize)> = Vec::new();
    let mut last_line = Instant::now();
    loop {
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        let now_ms = t0.elapsed().as_millis() as u64;
        let rel = now_ms - start_ms;
        active.retain(|(f, i)| {
            if rel < f.at_ms + f.for_ms {
                return true;
            }
            if let Err(e) = rig.end(f, &mut records[*i]) {
                records[*i].error.get_or_insert(format!("ending it: {e}"));
            }
            records[*i].ended_ms = Some(t0.elapsed().as_millis() as u64);
            false
        });
        while let Some(f) = schedule.get(next).filter(|f| rel >= f.at_ms) {
            records.push(rig.begin(f, now_ms));
            active.push((f, records.len() - 1));
            next += 1;
        }
        // The whole duration asked for, even after the last fault (a
        // config's schedule may end early): the fleet is watched throughout.
        if active.is_empty() && rel >= duration_ms {
            break;
        }
        if last_line.elapsed() >= Duration::from_secs(if tty { 1 } else { 10 }) {
            last_line = Instant::now();
            progress(
                tty,
                rel,
                duration_ms,
                &records,
                active.last().map(|(_, i)| &records[*i]),
                monitor,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if tty {
        eprintln!();
    }
    records
}

fn progress(
    tty: bool,
    rel_ms: u64,
    duration_ms: u64,
    records: &[FaultRecord],
    now: Option<&FaultRecord>,
    monitor: &Monitor,
) {
    let published = monitor.last().map(|s| s.published()).unwrap_or(0);
    let takeovers = monitor.ownership_changes();
    let mmss = |ms: u64| format!("{}:{:02}", ms / 60_000, ms / 1000 % 60);
    let line = format!(
        "chaos {}/{} · faults {} · now: {} · published {published} · ownership changes {takeovers}",
        mmss(rel_ms),
        mmss(duration_ms),
        records.len(),
        now.map(|r| format!("{} {}", r.kind, r.target))
            .unwrap_or_else(|| "—".into()),
    );
    if tty {
        eprint!("\r{line:<100}");
    } else {
        eprintln!("{line}");
    }
}

/// Every node running and thawed, every etcd member up, the API clear.
fn heal(rig: &mut Rig<'_>) -> Result<(), String> {
    for i in 0..rig.fleet.nodes.len() {
        rig.fleet.thaw(i);
        rig.fleet.start(i)?;
    }
    for i in 0..rig.etcd.members.len() {
        rig.etcd.start_member(i)?;
    }
    rig.etcd.wait_healthy(Duration::from_secs(30))?;
    rig.emu.clear_faults();
    rig.emu.set_quota_exhausted(false);
    rig.provider.clear_faults();
    if let Some(net) = rig.net {
        net.heal()?;
    }
    Ok(())
}

async fn active_at_heal(
    store: &AnyStore,
    topo: &topology::Topology,
) -> Result<BTreeSet<String>, String> {
    let t = Instant::now();
    loop {
        match crate::audit::active_keys(store, topo).await {
            Ok(k) => return Ok(k),
            Err(e) if t.elapsed() > Duration::from_secs(30) => {
                return Err(format!("after the heal, the store: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Waits (at most `SETTLE_WITHIN`) until every video in progress at the
/// heal has ended; the audit names any that did not.
fn settle(
    rt: &tokio::runtime::Runtime,
    store: &AnyStore,
    topo: &topology::Topology,
    heal: &BTreeSet<String>,
    emu: &YoutubeEmulator,
) {
    let t = Instant::now();
    while t.elapsed() < SETTLE_WITHIN && !STOP.load(Ordering::SeqCst) {
        if let Ok(now) = rt.block_on(crate::audit::active_keys(store, topo)) {
            let waiting = emu.quota_refused_keys();
            let open = now
                .intersection(heal)
                .filter(|k| !waiting.contains(*k))
                .count();
            if open == 0 && t.elapsed() >= SETTLE_AT_LEAST {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

async fn audit(
    store: &AnyStore,
    topo: &topology::Topology,
    emu: &YoutubeEmulator,
    heal: &BTreeSet<String>,
) -> Result<crate::audit::AuditReport, String> {
    let mut made: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in emu.videos() {
        let key = v
            .description
            .lines()
            .find_map(|l| l.strip_prefix("reelfleet-key: "))
            .map(|k| k.trim_end().to_string())
            .unwrap_or_else(|| format!("(no key: video {})", v.id));
        made.entry(key).or_default().push(v.id.clone());
    }
    let input = AuditInput {
        topo,
        made: &made,
        in_flight_ok: true,
        must_have_ended: Some(heal),
    };
    crate::audit::audit(store, &input).await
}

/// Every node answers `/ready` (within 30 s of the heal).
fn ready_checks(fleet: &Fleet) -> Vec<Check> {
    let t = Instant::now();
    let mut out = Vec::new();
    for (i, n) in fleet.nodes.iter().enumerate() {
        while !fleet.ready(i) && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(250));
        }
        let ok = fleet.ready(i);
        out.push(Check {
            invariant: "every node is ready after the heal".into(),
            ok,
            evidence: format!("{}: /ready {}", n.name, if ok { "200" } else { "not 200" }),
        });
    }
    out
}

/// No node's process ended by itself, except a node refusing to run on
/// a clock too far from its peers' (status 3): any other exit is a crash
/// the heal would otherwise hide by starting it again.
fn exit_check(fleet: &mut Fleet) -> Check {
    for i in 0..fleet.nodes.len() {
        let _ = fleet.exit_code(i);
    }
    let (clock, other): (Vec<_>, Vec<_>) = fleet.exits.iter().partition(|(_, code)| *code == 3);
    Check {
        invariant: "no node exits by itself, except for its clock".into(),
        ok: other.is_empty(),
        evidence: if other.is_empty() {
            format!("{} exits, each a clock refusal (status 3)", clock.len())
        } else {
            other
                .iter()
                .map(|(n, code)| format!("{n} exited with status {code}"))
                .collect::<Vec<_>>()
                .join("; ")
        },
    }
}

/// Every node's log, read for what must never be in one: a panic (a bug,
/// whatever the fault), and the fence counted (refusals are the fence
/// working, shown as evidence).
fn log_checks(fleet: &Fleet) -> Vec<Check> {
    let mut panics = Vec::new();
    let mut fenced = 0usize;
    for n in &fleet.nodes {
        let Ok(text) = std::fs::read_to_string(&n.log) else {
            panics.push(format!("{}: cannot read {}", n.name, n.log.display()));
            continue;
        };
        for (no, line) in text.lines().enumerate() {
            if line.contains("panicked at") {
                panics.push(format!(
                    "{} line {}: {}",
                    n.log.display(),
                    no + 1,
                    line.trim()
                ));
            }
            fenced +=
                usize::from(line.contains("the store refused a channel write: the epoch fence"));
        }
    }
    vec![Check {
        invariant: "no process panicked".into(),
        ok: panics.is_empty(),
        evidence: if panics.is_empty() {
            format!(
                "{} node logs read; the store's epoch fence refused {fenced} writes of superseded owners",
                fleet.nodes.len()
            )
        } else {
            panics.join("; ")
        },
    }]
}

/// Every video was made visible by its channel's owner of the time: each
/// completing request names its writer (`<node>/<epoch>` in the
/// publisher's `X-Reelfleet-Writer` header, recorded by the emulator as an
/// API's access log would), and no owner record the store showed before
/// that moment may carry a newer epoch. A sample is taken after its read,
/// so one stamped before the completion shows the store as it was before
/// it: a newer epoch there means the writer had been superseded.
fn made_visible_by_owner(
    samples: &[super::monitor::Sample],
    completions: &[crate::emulate::youtube::Completion],
    topo: &topology::Topology,
    t0: Instant,
) -> Check {
    let mut bad = Vec::new();
    let mut checked = 0usize;
    for c in completions {
        let key = c
            .description
            .lines()
            .find_map(|l| l.strip_prefix("reelfleet-key: "))
            .map(str::trim_end);
        let channel = key.and_then(|k| k.rsplit_once('/')).map(|(ch, _)| ch);
        let ch = channel.and_then(|name| topo.channels.iter().position(|x| x.name == name));
        let writer = c.writer.as_deref().and_then(|w| w.rsplit_once('/'));
        let epoch = writer.and_then(|(_, e)| e.parse::<u64>().ok());
        let (Some(key), Some(ch), Some((node, _)), Some(epoch)) = (key, ch, writer, epoch) else {
            continue; // planted, or from a client that does not say
        };
        let t_ms = c.at.saturating_duration_since(t0).as_millis() as u64;
        let before = samples.partition_point(|s| s.t_ms <= t_ms);
        let known = samples[..before]
            .iter()
            .rev()
            .find_map(|s| Some((s.t_ms, (*s.owners.as_ref()?.get(ch)?)?)));
        checked += 1;
        if let Some((seen_ms, (owner, newer))) = known.filter(|(_, (_, e))| *e > epoch) {
            let owner = topo.nodes.get(owner as usize).map(|n| n.name.as_str());
            bad.push(format!(
                "{key} ({}) made visible at {t_ms} ms by {node} at epoch {epoch}; the store named {} at epoch {newer} by {seen_ms} ms",
                c.video_id,
                owner.unwrap_or("?")
            ));
        }
    }
    Check {
        invariant: "no video made visible by a superseded owner".into(),
        ok: bad.is_empty(),
        evidence: if bad.is_empty() {
            format!("{checked} uploads: each writer's epoch was current when it completed")
        } else {
            bad.join("; ")
        },
    }
}

/// A recovery against its bound, as a check.
fn recovery_check(r: &report::Recovery) -> Check {
    Check {
        invariant: format!("{} recovers within its bound", r.kind),
        ok: r.recovery_ms.is_some_and(|ms| ms <= r.bound_ms),
        evidence: match r.recovery_ms {
            Some(ms) => format!(
                "{} at {} ms: recovered after {ms} ms (bound {} ms)",
                r.target, r.started_ms, r.bound_ms
            ),
            None => format!(
                "{} at {} ms: not recovered by the end of the run (bound {} ms)",
                r.target, r.started_ms, r.bound_ms
            ),
        },
    }
}

fn verdict(
    cfg: &ChaosConfig,
    topo: &topology::Topology,
    faults: Vec<FaultRecord>,
    samples: Vec<super::monitor::Sample>,
    audit: crate::audit::AuditReport,
    ready: Vec<Check>,
    t0: Instant,
) -> ChaosReport {
    let bounds = Bounds {
        lease_ms: cfg.lease_ms,
        publish_timeout_ms: PUBLISH_TIMEOUT_MS,
        node_of: topo.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    let recoveries = report::recoveries(&samples, &faults, &bounds);
    let mut checks: Vec<Check> = audit
        .violations
        .iter()
        .map(|v| Check {
            invariant: v.invariant.to_string(),
            ok: false,
            evidence: v.evidence.clone(),
        })
        .collect();
    checks.extend(recoveries.iter().map(recovery_check));
    checks.extend(report::stop_checks(&samples, &faults, &bounds));
    checks.extend(report::pause_checks(&samples, &faults, &bounds));
    checks.extend(ready);
    for f in faults.iter().filter(|f| f.outcome_ok.is_some()) {
        checks.push(Check {
            invariant: format!("{}: the fleet answers as it must", f.kind),
            ok: f.outcome_ok == Some(true),
            evidence: f.outcome.clone().unwrap_or_default(),
        });
    }
    for f in faults.iter().filter(|f| f.error.is_some()) {
        checks.push(Check {
            invariant: "every scheduled fault was caused".into(),
            ok: false,
            evidence: format!(
                "{} {}: {}",
                f.kind,
                f.target,
                f.error.clone().unwrap_or_default()
            ),
        });
    }
    let mut faults_by_kind = BTreeMap::new();
    for f in &faults {
        *faults_by_kind.entry(f.kind).or_insert(0) += 1;
    }
    let mut by_kind: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for r in &recoveries {
        if let Some(ms) = r.recovery_ms {
            by_kind.entry(r.kind).or_default().push(ms);
        }
    }
    ChaosReport {
        seed: cfg.seed,
        duration_ms: t0.elapsed().as_millis() as u64,
        nodes: cfg.nodes,
        node_names: topo.nodes.iter().map(|n| n.name.clone()).collect(),
        regions: cfg.regions,
        channels: topo.channels.len(),
        lease_ms: cfg.lease_ms,
        faults,
        faults_by_kind,
        recovery_by_kind: by_kind
            .into_iter()
            .map(|(k, v)| (k, report::distribution(v)))
            .collect(),
        recoveries,
        published: samples.last().map(|s| s.published()).unwrap_or(0),
        ownership_changes: ownership_changes(&samples),
        audit,
        checks,
        samples,
    }
}
