//! `/ready` of a real `reelfleet node` on a real etcd: 200 while its store
//! answers and its lease is held; 503 within one lease of the store going
//! away (with the reason), and 200 again once it is back.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd_cluster::{etcd_available, EtcdCluster};
use reelfleet::certs::{self, Role};

const LEASE_MS: u64 = 2_000;

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/ready`'s status and body, or `None` if nothing answered.
fn ready(port: u16) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// Polls `/ready` until it answers `code`; how long that took.
fn wait_for(port: u16, code: u16, within: Duration) -> (Duration, String) {
    let t0 = Instant::now();
    loop {
        let got = ready(port);
        if let Some((c, body)) = &got {
            if *c == code {
                return (t0.elapsed(), body.clone());
            }
        }
        assert!(
            t0.elapsed() < within,
            "/ready did not answer {code} within {within:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ready_follows_the_store_and_the_lease() {
    if !etcd_available() {
        return;
    }
    let mut etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();
    let cluster = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ffmpeg.toml"),
    )
    .expect("example cluster");
    std::fs::write(root.join("cluster.toml"), cluster).expect("write");
    certs::init(&root.join("certs"), "ready").expect("CA");
    certs::issue(&root.join("certs"), Role::Node, "workstation").expect("cert");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    std::fs::write(
        root.join("node.toml"),
        format!(
            "node = \"workstation\"\ncluster = \"cluster.toml\"\nstore = \"etcd://{}/ready\"\n\
             listen = \"127.0.0.1:0\"\ncerts = \"certs\"\ndata_dir = \"data\"\n\
             metrics = \"127.0.0.1:{port}\"\n[timing]\nlease_ms = {LEASE_MS}\nrenew_ms = 500\n\
             [gpu]\nprobe = false\n",
            etcd.endpoints().join(",")
        ),
    )
    .expect("write");
    let _node = Node(
        Command::new(env!("CARGO_BIN_EXE_reelfleet"))
            .args(["node", "--config", "node.toml"])
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the node"),
    );
    let (took, body) = wait_for(port, 200, Duration::from_secs(30));
    eprintln!("ready after {took:?}: {body}");

    // The store goes away: not ready within one lease (plus the 1 s probe).
    etcd.kill_member(0);
    let bound = Duration::from_millis(LEASE_MS) + Duration::from_secs(2);
    let (took, body) = wait_for(port, 503, bound);
    eprintln!("503 after {took:?}: {body}");
    assert!(body.contains("store"), "{body}");
    assert!(!body.contains("MetadataMap"), "Rust debug output: {body}");

    // It comes back: ready again.
    etcd.start_member(0);
    let (took, body) = wait_for(port, 200, Duration::from_secs(30));
    eprintln!("ready again after {took:?}: {body}");
}
