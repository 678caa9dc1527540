//! A real etcd cluster on loopback ports: `reelfleet chaos` runs its fleet
//! on one, and the etcd tests use it. Members are real `etcd` processes
//! (Debian's `etcd-server`), killed and restarted with real signals; their
//! data stays under the folder given, so a restarted member rejoins.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::store::etcd_store::EtcdStore;
use crate::store::Store;

pub struct Member {
    pub name: String,
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    initial_cluster: String,
    /// Unique per cluster, so that members of two clusters never mistake
    /// each other for peers.
    token: String,
    /// The address members listen on (loopback, or a chaos fleet's bridge).
    pub host: std::net::IpAddr,
}

/// A free loopback port, never the same one twice in this process: two
/// clusters started at once must not share one (a member that cannot bind
/// leaves its endpoint reaching the *other* cluster).
pub fn free_port() -> Result<u16, String> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free loopback port: {e}"))?;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// Whether an `etcd` binary runs here.
pub fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl EtcdCluster {
    /// Starts `size` members with their data under `dir` and waits until
    /// every one accepts connections.
    pub fn start(size: usize, dir: &Path) -> Result<EtcdCluster, String> {
        Self::start_on(size, dir, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// As [`EtcdCluster::start`], listening on `host` (its ports are found
    /// free on loopback; a fresh bridge address has none in use).
    pub fn start_on(
        size: usize,
        dir: &Path,
        host: std::net::IpAddr,
    ) -> Result<EtcdCluster, String> {
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir: dir.join(format!("m{i}")),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{host}:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        static CLUSTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let token = format!(
            "reelfleet-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut c = EtcdCluster {
            members,
            initial_cluster,
            token,
            host,
        };
        for i in 0..size {
            c.start_member(i)?;
        }
        c.wait_healthy(Duration::from_secs(30))?;
        Ok(c)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}:{}", self.host, m.client_port))
            .collect()
    }

    /// Starts member `i` (again: it rejoins with its data).
    pub fn start_member(&mut self, i: usize) -> Result<(), String> {
        let initial = self.initial_cluster.clone();
        let token = self.token.clone();
        let host = self.host;
        let m = self
            .members
            .get_mut(i)
            .ok_or_else(|| format!("no etcd member {i}"))?;
        if m.child.is_some() {
            return Ok(());
        }
        let state = if m.data_dir.exists() {
            "existing"
        } else {
            "new"
        };
        // etcd logs to stderr: kept beside its data (`<member>.log`, appended
        // across restarts), so that a stalled store can be read about.
        let log_path = m.data_dir.with_extension("log");
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let child = Command::new("etcd")
            .args([
                "--name",
                &m.name,
                "--data-dir",
                &m.data_dir.to_string_lossy(),
                "--listen-client-urls",
                &format!("http://{host}:{}", m.client_port),
                "--advertise-client-urls",
                &format!("http://{host}:{}", m.client_port),
                "--listen-peer-urls",
                &format!("http://{host}:{}", m.peer_port),
                "--initial-advertise-peer-urls",
                &format!("http://{host}:{}", m.peer_port),
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                &token,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                // FoundationDB's limits, which every backend must take.
                "--max-txn-ops",
                "20000",
                "--max-request-bytes",
                "11000000",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start etcd (apt-get install etcd-server): {e}"))?;
        m.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every running member accepts connections.
    pub fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        for m in self.members.iter().filter(|m| m.running()) {
            while std::net::TcpStream::connect((self.host, m.client_port)).is_err() {
                if Instant::now() >= deadline {
                    return Err(format!("etcd member {} not up within {within:?}", m.name));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// A store on this cluster under `prefix`, once the cluster answers
    /// (at most `within`).
    pub async fn store(&self, prefix: &str, within: Duration) -> Result<EtcdStore, String> {
        let deadline = Instant::now() + within;
        loop {
            let s = EtcdStore::connect(&self.endpoints(), prefix, Duration::from_secs(2)).await;
            if let Ok(s) = s {
                if s.get(&[actors::store::key(b"ping")]).await.is_ok() {
                    return Ok(s);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the etcd cluster does not answer within {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
