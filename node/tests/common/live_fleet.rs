//! Three real `reelfleet node` processes on a real 3-member etcd cluster,
//! all on loopback, publishing to the YouTube emulator: the harness of the
//! live-cluster and admin tests. Skips (with a printed reason) where etcd
//! is not installed, except on CI (`CI` set), where `.ci/run` installs it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actors::records::{owner_key, OwnerRecord, VideoRecord, VideoStatus};
use reelfleet::certs::{self, Role};
use reelfleet::publish::youtube::YoutubeConfig;
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use reelfleet::store::Store;
use topology::{ChannelId, NodeId, Topology};

use super::etcd_cluster::{etcd_available, EtcdCluster};
use super::youtube_emulator::{EmulatorConfig, YoutubeEmulator};

/// One test at a time: each runs three nodes and three etcd members.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub const NODES: [&str; 3] = ["n1", "n2", "n3"];
pub const CHANNELS: usize = 9;
pub const TAKEOVER_BOUND: Duration = Duration::from_secs(5);

pub fn cluster_toml() -> String {
    let mut s = format!(
        "\n[[regions]]\nname = \"local\"\n\n{}\n[[channels]]\nname = \"ch\"\n",
        reelfleet::chaos::fleet::QUICK_PIPELINE
    );
    s.push_str(&format!("count = {CHANNELS}\n"));
    s.push_str(
        r#"home_region = "local"
videos_per_day = 10000
pipeline = "quick"
project = "p"
[channels.budget]
daily_hard = 1000.0
"#,
    );
    for n in NODES {
        s.push_str(&format!(
            "\n[[nodes]]\nname = \"{n}\"\nregion = \"local\"\n[[nodes.gpus]]\nmodel = \"L4\"\nmemory_gib = 24\ncost_per_hour = 0.8\n"
        ));
    }
    s
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct NodeProc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl NodeProc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }
    pub fn signal(&self, sig: i32) {
        if self.child.is_some() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// The node's whole `/metrics` text (with the HTTP head).
    pub fn metrics_text(&self) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }
    pub fn metric(&self, name: &str) -> Option<u64> {
        let body = self.metrics_text()?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Fleet {
    pub _dir: tempfile::TempDir,
    pub topo: Topology,
    pub nodes: Vec<NodeProc>,
    pub rt: tokio::runtime::Runtime,
    pub store: AnyStore,
    pub youtube: YoutubeEmulator,
    pub _etcd: EtcdCluster,
}

pub fn start_fleet() -> Option<Fleet> {
    start_fleet_with(&|_, cfg| cfg)
}

/// As [`start_fleet`], each node's config passed through `tweak` (the
/// node's name, its config) first.
pub fn start_fleet_with(tweak: &dyn Fn(&str, String) -> String) -> Option<Fleet> {
    if !etcd_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd is not installed, and CI must run this test (.ci/run installs etcd-server)"
        );
        eprintln!("skipping: etcd is not installed (apt install etcd-server)");
        return None;
    }
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    issue_certs(&root.join("certs"));
    let cluster = cluster_toml();
    std::fs::write(root.join("cluster.toml"), &cluster).expect("cluster config");
    let topo = topology::config::parse_topology(&cluster).expect("the test's cluster config");
    let store_url = format!("etcd://{}/live", etcd.endpoints().join(","));
    let project = topo.projects[0].clone();
    let (youtube, yt) = YoutubeEmulator::start_on_thread_with(EmulatorConfig {
        project,
        ..EmulatorConfig::default()
    })
    .expect("emulator");
    let ycfg = youtube.publisher_config();
    std::fs::write(root.join("refresh-token"), &ycfg.refresh_token).expect("token file");
    let nodes = NODES
        .iter()
        .map(|n| {
            let metrics_port = free_port();
            let cfg = tweak(n, node_toml(n, &store_url, metrics_port, &yt, &ycfg));
            spawn_node(root, n, &cfg, metrics_port)
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url: StoreUrl = store_url.parse().expect("store URL");
    let store = rt
        .block_on(AnyStore::open(&url))
        .expect("the test's own store client");
    Some(Fleet {
        _dir: dir,
        topo,
        nodes,

        rt,
        store,
        youtube,
        _etcd: etcd,
    })
}

/// A CA, and a certificate from it for every node.
pub fn issue_certs(certs_dir: &Path) {
    certs::init(certs_dir, "live-test").expect("CA");
    for n in NODES {
        certs::issue(certs_dir, Role::Node, n).expect("node certificate");
    }
}

/// Node `n`'s config: the shared store, short leases so that a takeover
/// fits the test's bound, and the YouTube emulator at `yt` as publisher.
pub fn node_toml(
    n: &str,
    store_url: &str,
    metrics_port: u16,
    yt: &str,
    ycfg: &YoutubeConfig,
) -> String {
    let (client_id, client_secret) = (&ycfg.client_id, &ycfg.client_secret);
    format!(
        r#"node = "{n}"
cluster = "cluster.toml"
store = "{store_url}"
listen = "127.0.0.1:0"
certs = "certs"
data_dir = "data/{n}"
artifacts = "artifacts"
metrics = "127.0.0.1:{metrics_port}"
[timing]
lease_ms = 2000
renew_ms = 500
plan_lead_ms = 20000
publish_timeout_ms = 4000
dispatch_timeout_ms = 8000
job_grace_ms = 3000
retry_base_ms = 300
[publisher]
kind = "youtube"
api_base = "{yt}"
upload_base = "{yt}/upload"
token_url = "{yt}/token"
client_id = "{client_id}"
client_secret = "{client_secret}"
refresh_token_file = "refresh-token"
chunk_bytes = 262144
project = "p"
[gpu]
probe = false
"#
    )
}

/// Starts `reelfleet node` with config `cfg`, its stdout and stderr both
/// in `<root>/<n>.log`.
pub fn spawn_node(root: &Path, n: &str, cfg: &str, metrics_port: u16) -> NodeProc {
    let cfg_path = root.join(format!("{n}.toml"));
    std::fs::write(&cfg_path, cfg).expect("node config");
    let log = root.join(format!("{n}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .arg("node")
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start reelfleet node");
    NodeProc {
        name: n.to_string(),
        child: Some(child),
        log,
        metrics_port,
    }
}

impl Fleet {
    /// The fleet's folder: configs, certificates, logs.
    pub fn root(&self) -> &Path {
        self._dir.path()
    }

    pub fn owners(&self) -> BTreeMap<ChannelId, OwnerRecord> {
        let keys: Vec<actors::store::Key> = (0..CHANNELS)
            .map(|c| owner_key(ChannelId(c as u32)))
            .collect();
        let got = match self.rt.block_on(self.store.get(&keys)) {
            Ok(g) => g,
            Err(_) => return BTreeMap::new(),
        };
        got.into_iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let e = e?;
                let r = OwnerRecord::decode(&e.value).ok()?;
                Some((ChannelId(i as u32), r))
            })
            .collect()
    }

    pub fn node_id(&self, name: &str) -> NodeId {
        NodeId(
            self.topo
                .nodes
                .iter()
                .position(|n| n.name == name)
                .expect("node in topology") as u32,
        )
    }

    pub fn videos(&self) -> Vec<(ChannelId, VideoRecord)> {
        super::audit::videos(&self.rt, &self.store)
    }

    pub fn published_count(&self) -> BTreeMap<ChannelId, usize> {
        let mut m = BTreeMap::new();
        for (ch, v) in self.videos() {
            if matches!(v.status, VideoStatus::Published { .. }) {
                *m.entry(ch).or_default() += 1;
            }
        }
        m
    }

    /// Waits until every channel is owned and `min_published` videos are out.
    pub fn wait_steady(&self, min_published: usize) {
        let t0 = Instant::now();
        loop {
            let owned = self.owners().values().filter(|o| o.node.is_some()).count();
            let published: usize = self.published_count().values().sum();
            if owned == CHANNELS && published >= min_published {
                eprintln!(
                    "steady after {:.1} s: {owned} channels owned, {published} published",
                    t0.elapsed().as_secs_f64()
                );
                return;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                self.dump_logs();
                panic!("not steady after 60 s: {owned} owned, {published} published");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let t = n.log_text();
            let tail: Vec<&str> = t.lines().rev().take(30).collect();
            eprintln!("----- {} (last lines) -----", n.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    /// The node owning the most channels, and those channels.
    pub fn busiest(&self) -> (usize, Vec<ChannelId>, BTreeMap<ChannelId, OwnerRecord>) {
        let owners = self.owners();
        let mut best = (0, Vec::new());
        for (i, n) in NODES.iter().enumerate() {
            let id = self.node_id(n);
            let chans: Vec<ChannelId> = owners
                .iter()
                .filter(|(_, o)| o.node == Some(id))
                .map(|(c, _)| *c)
                .collect();
            if chans.len() > best.1.len() {
                best = (i, chans);
            }
        }
        (best.0, best.1, owners)
    }

    /// Waits until every channel in `chans` is owned by a node other than
    /// `victim` under a newer epoch; returns how long it took.
    pub fn wait_takeover(
        &self,
        victim: usize,
        chans: &[ChannelId],
        before: &BTreeMap<ChannelId, OwnerRecord>,
        since: Instant,
    ) -> Duration {
        let vid = self.node_id(NODES[victim]);
        loop {
            let owners = self.owners();
            let moved = chans.iter().all(|c| {
                owners.get(c).is_some_and(|o| {
                    o.node.is_some_and(|n| n != vid)
                        && o.epoch > before.get(c).map(|b| b.epoch).unwrap_or(0)
                })
            });
            if moved {
                return since.elapsed();
            }
            if since.elapsed() > Duration::from_secs(30) {
                self.dump_logs();
                panic!(
                    "channels {chans:?} of {} not taken over after 30 s: {owners:?}",
                    NODES[victim]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until each channel in `chans` has published more than `before`.
    pub fn wait_progress(&self, chans: &[ChannelId], before: &BTreeMap<ChannelId, usize>) {
        let t0 = Instant::now();
        loop {
            let now = self.published_count();
            let behind: Vec<_> = chans
                .iter()
                .filter(|c| now.get(c).copied().unwrap_or(0) <= before.get(c).copied().unwrap_or(0))
                .collect();
            if behind.is_empty() {
                eprintln!(
                    "every taken-over channel published again within {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                return;
            }
            if t0.elapsed() > Duration::from_secs(40) {
                self.dump_logs();
                panic!("channels {behind:?} made no progress in 40 s after the takeover");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.signal(libc::SIGCONT);
            n.signal(libc::SIGKILL);
            if let Some(mut c) = n.child.take() {
                let _ = c.wait();
            }
        }
    }

    /// No video lost, none published twice, ledgers consistent.
    pub fn audit(&self) {
        // Every upload the API completed, by the key in its description.
        let mut made: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in self.youtube.videos() {
            let key = v
                .description
                .lines()
                .find_map(|l| l.strip_prefix("reelfleet-key: "))
                .unwrap_or_else(|| panic!("video {} has no key line: {:?}", v.id, v.description));
            made.entry(key.to_string()).or_default().push(v.id.clone());
        }
        // The nodes were SIGKILLed: a finished upload may not be recorded yet.
        let a = super::audit::audit(&self.rt, &self.store, &self.topo, &made, true);
        eprintln!(
            "audit: {} videos recorded, {} published once each, budget and quota ledgers agree ({} units)",
            a.videos, a.published, a.quota_units
        );
    }
}
