//! QUIC between nodes: frames arrive between nodes of one cluster, and a
//! peer without a valid certificate cannot join — no certificate at all, a
//! certificate from another cluster's CA, or an admin certificate — and a
//! malformed frame closes the connection that sent it without harming the
//! node.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::node::NodeMsg;
use actors::protocol::JobId;
use reelfleet::certs::{self, Role};
use reelfleet::live::transport::{client_config, OnFrame, Resolve, TlsIdentity, Transport};
use topology::{ChannelId, GpuId};

fn cluster(dir: &std::path::Path, name: &str, nodes: &[&str]) {
    certs::init(dir, name).expect("CA");
    for n in nodes {
        certs::issue(dir, Role::Node, n).expect("node certificate");
    }
}

fn frame(slot: u64) -> NodeMsg {
    NodeMsg::GpuCancel {
        gpu: GpuId(1),
        id: JobId {
            channel: ChannelId(2),
            slot,
            stage: 0,
            attempt: 1,
            epoch: 3,
        },
    }
}

type Inbox = Arc<Mutex<Vec<(String, NodeMsg)>>>;

fn node(
    dir: &std::path::Path,
    folder: &str,
    name: &str,
    peers: Arc<Mutex<Vec<(String, SocketAddr)>>>,
) -> (Arc<Transport>, Inbox) {
    let inbox: Inbox = Arc::new(Mutex::new(Vec::new()));
    let i = Arc::clone(&inbox);
    let on_frame: OnFrame = Arc::new(move |peer: &str, w| {
        i.lock().expect("inbox").push((peer.to_string(), w));
    });
    let resolve: Resolve = Arc::new(move |peer: String| {
        let peers = Arc::clone(&peers);
        Box::pin(async move {
            peers
                .lock()
                .expect("peers")
                .iter()
                .find(|(n, _)| *n == peer)
                .map(|(_, a)| *a)
        })
    });
    let id = TlsIdentity::load(dir, folder, name).expect("identity");
    let t = Transport::start(
        "127.0.0.1:0".parse().expect("addr"),
        &id,
        name,
        on_frame,
        resolve,
    )
    .expect("transport");
    (t, inbox)
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_of_the_cluster_get_through() {
    let dir = tempfile::tempdir().expect("dir");
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    cluster(&ours, "ours", &["n1", "n2"]);
    certs::issue(&ours, Role::Admin, "alice").expect("admin certificate");
    // Another cluster with a node of the same name: the name alone is
    // worth nothing without our CA's signature.
    cluster(&theirs, "theirs", &["n2", "mallory"]);

    let peers = Arc::new(Mutex::new(Vec::new()));
    let (n1, inbox1) = node(&ours, "nodes", "n1", Arc::clone(&peers));
    let (n2, _inbox2) = node(&ours, "nodes", "n2", Arc::clone(&peers));
    let n1_addr = n1.local_addr().expect("addr");
    peers.lock().expect("peers").push(("n1".into(), n1_addr));

    // A node of the cluster: its frames arrive, named by its certificate.
    n2.send("n1", &frame(1));
    wait_for("n2's frame", || !inbox1.lock().expect("inbox").is_empty()).await;
    assert_eq!(
        inbox1.lock().expect("inbox")[0],
        ("n2".to_string(), frame(1))
    );

    // A node of another cluster, even named like one of ours, is refused
    // at the handshake, and nothing it sends arrives.
    let (fake, _) = node(
        &theirs,
        "nodes",
        "n2",
        Arc::new(Mutex::new(vec![("n1".into(), n1_addr)])),
    );
    let refused_before = n1.stats.refused.load(Ordering::Relaxed);
    fake.send("n1", &frame(2));
    wait_for("the foreign node to be refused", || {
        n1.stats.refused.load(Ordering::Relaxed) > refused_before
    })
    .await;

    // No client certificate at all: the handshake fails on both sides.
    let anon = endpoint_without_a_certificate(&ours);
    let refused_before = n1.stats.refused.load(Ordering::Relaxed);
    let r = open_a_stream(&anon, n1_addr).await;
    assert!(r.is_err());
    wait_for("the anonymous peer to be refused", || {
        n1.stats.refused.load(Ordering::Relaxed) > refused_before
    })
    .await;

    // An admin certificate is ours, but it is not a node's: refused too.
    let ep = endpoint_with_an_admin_certificate(&ours);
    let refused_before = n1.stats.refused.load(Ordering::Relaxed);
    send_a_frame_expecting_refusal(&ep, n1_addr).await;
    wait_for("the admin certificate to be refused as a node", || {
        n1.stats.refused.load(Ordering::Relaxed) > refused_before
    })
    .await;

    // Nothing from the refused peers ever arrived.
    let got = inbox1.lock().expect("inbox").clone();
    assert_eq!(got, vec![("n2".to_string(), frame(1))], "{got:?}");
}

/// A client that trusts our CA but shows no certificate of its own.
fn endpoint_without_a_certificate(ours: &Path) -> quinn::Endpoint {
    let ca = TlsIdentity::load(ours, "nodes", "n2").expect("identity");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca[0].clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"reelfleet/1".to_vec()];
    let q = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut anon = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    anon.set_default_client_config(quinn::ClientConfig::new(Arc::new(q)));
    anon
}

/// Connects to `n1` and writes on a stream until the connection closes;
/// `Err` says where it failed (it always does).
async fn open_a_stream(ep: &quinn::Endpoint, n1_addr: SocketAddr) -> Result<(), String> {
    let c = ep
        .connect(n1_addr, "n1")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3 may finish the client side before the server refuses:
    // the first stream then fails.
    let (mut s, _) = c.open_bi().await.map_err(|e| e.to_string())?;
    s.write_all(&[0, 0, 0, 1, 0])
        .await
        .map_err(|e| e.to_string())?;
    c.closed().await;
    Err("closed".into())
}

/// A client showing the admin certificate of our CA.
fn endpoint_with_an_admin_certificate(ours: &Path) -> quinn::Endpoint {
    let admin = TlsIdentity::load(ours, "admins", "alice").expect("admin identity");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(client_config(&admin).expect("client config"));
    ep
}

/// Sends a frame to `n1`; should the connection get that far, it must be
/// closed as "not a node certificate".
async fn send_a_frame_expecting_refusal(ep: &quinn::Endpoint, n1_addr: SocketAddr) {
    if let Ok(connecting) = ep.connect(n1_addr, "n1") {
        if let Ok(c) = connecting.await {
            if let Ok((mut s, _)) = c.open_bi().await {
                let f = reelfleet::live::wire::encode(&frame(3));
                let _ = s.write_all(&(f.len() as u32).to_le_bytes()).await;
                let _ = s.write_all(&f).await;
            }
            let e = c.closed().await;
            assert!(e.to_string().contains("not a node certificate"), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_its_connection_and_the_node_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    cluster(dir.path(), "ours", &["n1", "n2"]);
    let peers = Arc::new(Mutex::new(Vec::new()));
    let (n1, inbox1) = node(dir.path(), "nodes", "n1", Arc::clone(&peers));
    let n1_addr = n1.local_addr().expect("addr");
    peers.lock().expect("peers").push(("n1".into(), n1_addr));

    let id = TlsIdentity::load(dir.path(), "nodes", "n2").expect("identity");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(client_config(&id).expect("client config"));
    let c = ep
        .connect(n1_addr, "n1")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut s, _) = c.open_bi().await.expect("stream");
    let mut bad = reelfleet::live::wire::encode(&frame(9));
    bad.push(0xEE); // a trailing byte
    s.write_all(&(bad.len() as u32).to_le_bytes())
        .await
        .expect("write");
    s.write_all(&bad).await.expect("write");
    let e = c.closed().await.to_string();
    assert!(
        e.contains("malformed frame") && e.contains("frame end"),
        "{e}"
    );
    assert_eq!(n1.stats.bad_frames.load(Ordering::Relaxed), 1);

    // An oversized length is refused before anything is allocated.
    let c = ep
        .connect(n1_addr, "n1")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut s, _) = c.open_bi().await.expect("stream");
    s.write_all(&u32::MAX.to_le_bytes()).await.expect("write");
    let e = c.closed().await.to_string();
    assert!(e.contains("larger than the limit"), "{e}");

    // The node still takes good frames from a good peer.
    let (n2, _) = node(dir.path(), "nodes", "n2", Arc::clone(&peers));
    n2.send("n1", &frame(10));
    wait_for("a good frame after the bad ones", || {
        inbox1
            .lock()
            .expect("inbox")
            .iter()
            .any(|(_, w)| *w == frame(10))
    })
    .await;
    assert!(!inbox1
        .lock()
        .expect("inbox")
        .iter()
        .any(|(_, w)| *w == frame(9)));
}
