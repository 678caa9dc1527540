//! A real 3-member etcd cluster on loopback ports, for tests. Members are
//! real `etcd` processes (Debian's `etcd-server`), killed with real signals.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    pub name: String,
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
    initial_cluster: String,
    /// Unique per cluster, so that members of two clusters never mistake
    /// each other for peers.
    token: String,
}

/// A free loopback port, never the same one twice in this process: tests
/// start clusters in parallel, and a port handed to two members makes one
/// of them fail to bind while its endpoint silently reaches the *other*
/// cluster (a test then sees another cluster's data).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Whether `etcd` can be run here. On CI it must be: `.ci/run` installs it.
pub fn etcd_available() -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "etcd is not installed but CI must run the etcd tests"
        );
        eprintln!("skipped: no `etcd` binary (apt-get install etcd-server)");
    }
    found
}

impl EtcdCluster {
    pub fn start(size: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        static CLUSTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let token = format!(
            "reelfleet-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut c = EtcdCluster {
            members,
            _dir: dir,
            initial_cluster,
            token,
        };
        for i in 0..size {
            c.start_member(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster.clone();
        let token = self.token.clone();
        let m = &mut self.members[i];
        let state = if m.data_dir.exists() {
            "existing"
        } else {
            "new"
        };
        let child = Command::new("etcd")
            .args([
                "--name",
                &m.name,
                "--data-dir",
                &m.data_dir.to_string_lossy(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
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
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every member accepts connections.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for m in &self.members {
            while std::net::TcpStream::connect(("127.0.0.1", m.client_port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} not up within {within:?}",
                    m.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A store on this cluster under `prefix`, once the cluster answers.
    pub async fn store(&self, prefix: &str) -> reelfleet::store::etcd_store::EtcdStore {
        use reelfleet::store::Store;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = reelfleet::store::etcd_store::EtcdStore::connect(
                &self.endpoints(),
                prefix,
                Duration::from_secs(2),
            )
            .await
            {
                if s.get(&[b"ping".to_vec()]).await.is_ok() {
                    return s;
                }
            }
            assert!(Instant::now() < deadline, "etcd cluster does not answer");
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
