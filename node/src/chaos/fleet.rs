//! The fleet the chaos runner breaks: a cluster config (regions, nodes
//! with one GPU each, channels on a quick synthetic pipeline, one
//! publishing project), certificates, one node config per node and the
//! `reelfleet node` processes themselves, each logging to its own file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use topology::Topology;

use crate::certs::{self, Role};
use crate::publish::youtube::YoutubeConfig;

/// The admin certificate the runner uses for the kill switch and pauses.
pub const ADMIN: &str = "chaos";

pub struct FleetShape {
    pub nodes: usize,
    pub regions: usize,
    pub channels_per_node: usize,
    pub lease_ms: u64,
}

/// Where Debian's `faketime` package puts libfaketime (the MT build, for
/// multi-threaded programs).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// libfaketime, if installed.
pub fn libfaketime() -> Option<PathBuf> {
    let p = PathBuf::from(LIBFAKETIME);
    p.exists().then_some(p)
}

pub struct NodeProc {
    pub name: String,
    /// The node's libfaketime timestamp file (`+0`: true time).
    pub clock_file: PathBuf,
    /// A clock rate the node runs with (restarted to take effect).
    pub drift: Option<f64>,
    pub region: usize,
    pub cfg: PathBuf,
    pub log: PathBuf,
    pub metrics_port: u16,
    /// The network namespace it runs in (a namespaced fleet), and its
    /// address there (or loopback).
    pub netns: Option<String>,
    pub ip: std::net::IpAddr,
    child: Option<Child>,
    pub frozen: bool,
}

impl NodeProc {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a child of this process.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }
}

pub struct Fleet {
    pub dir: PathBuf,
    pub topo: Topology,
    pub nodes: Vec<NodeProc>,
    exe: PathBuf,
    /// Every time a node's process ended by itself: its name and status.
    pub exits: Vec<(String, i32)>,
}

/// The synthetic "quick" pipeline (script, render on a GPU, upload) and
/// the project `p` its channels publish under: the chaos fleet's, and the
/// live tests' fleets'.
pub const QUICK_PIPELINE: &str = r#"[[pipelines]]
name = "quick"
[[pipelines.stages]]
name = "script"
kind = "cpu"
duration_ms = 300
jitter_ms = 100
cost = 0.001
[[pipelines.stages]]
name = "render"
kind = "gpu"
duration_ms = 700
jitter_ms = 200
gpu_memory_gib = 2
[[pipelines.stages]]
name = "upload"
kind = "publish"
duration_ms = 200

[[projects]]
name = "p"
[[projects.buckets]]
name = "units"
units_per_day = 10000000
[projects.costs]
upload = { bucket = "units", units = 16 }
lookup = { bucket = "units", units = 1 }
"#;

/// The cluster config of a chaos fleet.
pub fn cluster_toml(shape: &FleetShape) -> String {
    let mut s = String::new();
    for r in 0..shape.regions {
        s.push_str(&format!("[[regions]]\nname = \"r{r}\"\n\n"));
    }
    // Every region on one machine: the latency is loopback's.
    for a in 0..shape.regions {
        for b in a + 1..shape.regions {
            s.push_str(&format!(
                "[[latency]]\nbetween = [\"r{a}\", \"r{b}\"]\nms = 1\n\n"
            ));
        }
    }
    s.push_str(QUICK_PIPELINE);
    for r in 0..shape.regions {
        let in_region = (0..shape.nodes).filter(|i| i % shape.regions == r).count();
        let count = (in_region * shape.channels_per_node).max(1);
        s.push_str(&format!(
            "\n[[channels]]\nname = \"r{r}-ch\"\ncount = {count}\nhome_region = \"r{r}\"\n\
             videos_per_day = 10000\npipeline = \"quick\"\nproject = \"p\"\n\
             [channels.budget]\ndaily_hard = 1000.0\n"
        ));
    }
    for i in 0..shape.nodes {
        s.push_str(&format!(
            "\n[[nodes]]\nname = \"n{i}\"\nregion = \"r{}\"\n[[nodes.gpus]]\nmodel = \"L4\"\nmemory_gib = 6\ncost_per_hour = 0.8\n",
            i % shape.regions
        ));
    }
    s
}

/// The stages the nodes run through the `http` executor against the
/// provider emulator, with their healthy time (the pipeline's durations).
pub const PROVIDER_STAGES: [(&str, u64); 2] = [("script", 300), ("render", 700)];

/// What the nodes publish to and run their stages on.
pub struct Services<'a> {
    pub youtube: &'a YoutubeConfig,
    /// The provider emulator's base URL.
    pub provider: &'a str,
    /// Per node: its network namespace, if the fleet is namespaced, and
    /// the address it listens on there.
    pub hosts: Vec<(Option<String>, std::net::IpAddr)>,
}

/// Each stage of [`provider_stages`] with its healthy time on the
/// model-server emulator: the stage's mean duration in `topo` (within the
/// time a job of it is given).
pub fn provider_stage_times(topo: &Topology) -> Vec<(&'static str, u64)> {
    provider_stages(topo)
        .into_iter()
        .filter_map(|s| {
            topo.pipelines
                .iter()
                .flat_map(|p| p.stages.iter())
                .find(|st| st.name == s)
                .map(|st| (s, st.duration.mean_ms))
        })
        .collect()
}

/// The stages of [`PROVIDER_STAGES`] that `topo`'s pipelines have: they
/// run on the model-server emulator (the others on the synthetic executor).
pub fn provider_stages(topo: &Topology) -> Vec<&'static str> {
    PROVIDER_STAGES
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| {
            topo.pipelines
                .iter()
                .any(|p| p.stages.iter().any(|st| st.name == *s))
        })
        .collect()
}

fn node_toml(
    n: &str,
    ip: std::net::IpAddr,
    store_url: &str,
    metrics_port: u16,
    lease_ms: u64,
    svc: &Services,
    topo: &Topology,
) -> String {
    let yt = svc.youtube;
    let executors: String = provider_stages(topo)
        .iter()
        .map(|s| {
            format!(
                "[executors.{s}]\nkind = \"http\"\nurl = \"{}/{s}\"\ntimeout_ms = 5000\n",
                svc.provider
            )
        })
        .collect();
    let project = topo
        .projects
        .first()
        .map(|p| p.name.as_str())
        .unwrap_or("p");
    format!(
        r#"node = "{n}"
cluster = "cluster.toml"
store = "{store_url}"
listen = "{ip}:0"
certs = "certs"
data_dir = "data/{n}"
artifacts = "artifacts"
metrics = "{ip}:{metrics_port}"
[timing]
lease_ms = {lease_ms}
renew_ms = {renew_ms}
plan_lead_ms = 20000
publish_timeout_ms = 4000
dispatch_timeout_ms = 8000
job_grace_ms = 3000
retry_base_ms = 300
[publisher]
kind = "youtube"
api_base = "{api}"
upload_base = "{upload}"
token_url = "{token}"
client_id = "{id}"
client_secret = "{secret}"
refresh_token_file = "refresh-token"
chunk_bytes = 262144
project = "{project}"
[gpu]
probe = false
{executors}"#,
        renew_ms = (lease_ms / 4).max(100),
        api = yt.api_base,
        upload = yt.upload_base,
        token = yt.token_url,
        id = yt.client_id,
        secret = yt.client_secret,
    )
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl Fleet {
    /// Writes the fleet's configs (for the cluster config `cluster`) and
    /// certificates under `dir`; starts nothing.
    pub fn prepare(
        dir: &Path,
        cluster: &str,
        lease_ms: u64,
        store_url: &str,
        svc: &Services,
    ) -> Result<Fleet, String> {
        let yt = svc.youtube;
        write(&dir.join("cluster.toml"), cluster)?;
        let topo = topology::config::parse_topology(cluster)
            .map_err(|e| format!("the chaos fleet's cluster config: {e}"))?;
        let certs_dir = dir.join("certs");
        certs::init(&certs_dir, "reelfleet-chaos").map_err(|e| e.to_string())?;
        certs::issue(&certs_dir, Role::Admin, ADMIN).map_err(|e| e.to_string())?;
        write(&dir.join("refresh-token"), &yt.refresh_token)?;
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(|e| format!("cannot create {}: {e}", dir.join("logs").display()))?;
        let mut nodes = Vec::new();
        for (i, n) in topo.nodes.iter().enumerate() {
            certs::issue(&certs_dir, Role::Node, &n.name).map_err(|e| e.to_string())?;
            let metrics_port = super::etcd::free_port()?;
            let cfg = dir.join(format!("{}.toml", n.name));
            let (netns, ip) = svc
                .hosts
                .get(i)
                .cloned()
                .unwrap_or((None, std::net::Ipv4Addr::LOCALHOST.into()));
            write(
                &cfg,
                &node_toml(&n.name, ip, store_url, metrics_port, lease_ms, svc, &topo),
            )?;
            let clock_file = dir.join("logs").join(format!("{}.clock", n.name));
            write(&clock_file, "+0\n")?;
            nodes.push(NodeProc {
                name: n.name.clone(),
                clock_file,
                drift: None,
                region: n.region.index(),
                cfg,
                log: dir.join("logs").join(format!("{}.log", n.name)),
                metrics_port,
                netns,
                ip,
                child: None,
                frozen: false,
            });
        }
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the reelfleet binary to start nodes with: {e}"))?;
        Ok(Fleet {
            dir: dir.to_path_buf(),
            topo,
            nodes,
            exe,
            exits: Vec::new(),
        })
    }

    /// Starts node `i` (its log appended to).
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        // A node that exited by itself (a clock refusal) is started again.
        let _ = self.exit_code(i);
        let n = &mut self.nodes[i];
        if n.child.is_some() {
            return Ok(());
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(|e| format!("cannot open {}: {e}", n.log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", n.log.display()))?;
        // In its namespace, `ip netns exec` becomes the node (exec, same
        // pid): signals reach the node itself.
        let mut cmd = match &n.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        // A chaos fleet is a test fleet: its fault points may be armed.
        cmd.args(["node", "--allow-faults", "--config"])
            .arg(&n.cfg)
            .env("RUST_LOG", "info");
        // Under libfaketime (when installed) every node's wall clock can be
        // moved while it runs, through its timestamp file, re-read once a
        // second; only a drifting node has its monotonic clock faked too.
        if let Some(lib) = libfaketime() {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &n.clock_file)
                .env("FAKETIME_CACHE_DURATION", "1");
            match n.drift {
                Some(rate) => {
                    write(&n.clock_file, &format!("+0 x{rate}\n"))?;
                }
                None => {
                    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                }
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", n.name))?;
        n.child = Some(child);
        n.frozen = false;
        Ok(())
    }

    /// Node `i`'s exit status if its process has ended by itself (it is
    /// then forgotten: `start` starts it again).
    pub fn exit_code(&mut self, i: usize) -> Option<i32> {
        let n = &mut self.nodes[i];
        let status = n.child.as_mut()?.try_wait().ok()??;
        n.child = None;
        n.frozen = false;
        let code = status.code().unwrap_or(-1);
        self.exits.push((n.name.clone(), code));
        Some(code)
    }

    /// Waits (at most `within`) for node `i` to exit by itself.
    pub fn wait_exit(&mut self, i: usize, within: Duration) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Some(code) = self.exit_code(i) {
                return Some(code);
            }
            if t0.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last line of node `i`'s log that says `error:`.
    pub fn last_error(&self, i: usize) -> Option<String> {
        let log = std::fs::read_to_string(&self.nodes[i].log).ok()?;
        log.lines()
            .rev()
            .find(|l| l.starts_with("error: "))
            .map(|l| l.trim_start_matches("error: ").to_string())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.signal(libc::SIGCONT);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        n.frozen = false;
    }

    pub fn freeze(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
        self.nodes[i].frozen = true;
    }

    /// Arms fault point `point` of node `i` and waits until the node has
    /// stopped itself there (`--allow-faults`); it stays stopped until
    /// [`Fleet::thaw`].
    pub fn stall_at(&mut self, i: usize, point: &str, wait_max: Duration) -> Result<(), String> {
        let dir = self
            .dir
            .join("data")
            .join(&self.nodes[i].name)
            .join("faults");
        crate::live::fault_points::arm(&dir, point)?;
        let Some(pid) = self.nodes[i].child.as_ref().map(|c| c.id()) else {
            return Err(format!("{} is not running", self.nodes[i].name));
        };
        let deadline = std::time::Instant::now() + wait_max;
        while std::time::Instant::now() < deadline {
            if process_stopped(pid) {
                self.nodes[i].frozen = true;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Disarm, so that it cannot fire later, unasked.
        let _ = std::fs::remove_file(dir.join(point));
        Err(format!(
            "{}: no upload reached {point} within {} s",
            self.nodes[i].name,
            wait_max.as_secs()
        ))
    }

    pub fn thaw(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
        self.nodes[i].frozen = false;
    }

    /// SIGTERM (the node drains and exits); SIGKILL after `within`.
    pub fn terminate(&mut self, i: usize, within: Duration) -> bool {
        let n = &mut self.nodes[i];
        n.signal(libc::SIGCONT);
        n.signal(libc::SIGTERM);
        let Some(mut c) = n.child.take() else {
            return true;
        };
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Whether node `i` answers `/ready` with 200.
    pub fn ready(&self, i: usize) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) =
            std::net::TcpStream::connect((self.nodes[i].ip, self.nodes[i].metrics_port))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
    }

    /// Sets node `i`'s wall clock `offset_s` seconds off true time (it
    /// takes effect within a second, without a restart).
    pub fn set_clock_offset(&mut self, i: usize, offset_s: i64) -> Result<(), String> {
        let n = &self.nodes[i];
        write(&n.clock_file, &format!("{offset_s:+}\n"))
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Whether process `pid` is stopped (state `T` in `/proc/<pid>/stat`).
fn process_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|c| c == 'T')
}
