//! A real 3-member etcd cluster on loopback ports, for tests: the
//! product's (`reelfleet::chaos::etcd`, which `reelfleet chaos` runs its
//! fleet on) in a temporary folder, failing the test where it cannot run.

#![allow(dead_code)]

use std::time::Duration;

use reelfleet::chaos::etcd;

pub struct EtcdCluster {
    inner: etcd::EtcdCluster,
    _dir: tempfile::TempDir,
}

/// Whether `etcd` can be run here. On CI it must be: `.ci/run` installs it.
pub fn etcd_available() -> bool {
    let found = etcd::etcd_installed();
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
        let inner = etcd::EtcdCluster::start(size, dir.path()).expect("an etcd cluster");
        EtcdCluster { inner, _dir: dir }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints()
    }

    pub fn start_member(&mut self, i: usize) {
        self.inner.start_member(i).expect("start etcd");
    }

    /// SIGKILL, as a crash would.
    pub fn kill_member(&mut self, i: usize) {
        self.inner.kill_member(i);
    }

    /// Waits until every member accepts connections.
    pub fn wait_healthy(&self, within: Duration) {
        self.inner.wait_healthy(within).expect("etcd healthy");
    }

    /// A store on this cluster under `prefix`, once the cluster answers.
    pub async fn store(&self, prefix: &str) -> reelfleet::store::etcd_store::EtcdStore {
        self.inner
            .store(prefix, Duration::from_secs(30))
            .await
            .expect("etcd cluster answers")
    }
}
