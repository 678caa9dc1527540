//! One live node in-process on the in-memory store: the supervision tree
//! restarts a failed channel actor, which reloads its state from the store
//! and goes on under the same epoch; failures beyond the restart budget
//! escalate and stop the node.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelfleet::certs::{self, Role};
use reelfleet::live::config::Timing;
use reelfleet::live::ports::NodePorts;
use reelfleet::live::runtime::{NodeSpec, RunningNode};
use reelfleet::live::supervisor::RESTARTS_MAX;
use reelfleet::live::transport::TlsIdentity;
use reelfleet::publish::directory::DirectoryPublisher;
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use topology::ChannelId;

const CLUSTER: &str = r#"
[[regions]]
name = "local"
[[nodes]]
name = "solo"
region = "local"
[[nodes.gpus]]
model = "L4"
memory_gib = 24
cost_per_hour = 0.8
[[pipelines]]
name = "quick"
[[pipelines.stages]]
name = "render"
kind = "gpu"
duration_ms = 200
gpu_memory_gib = 2
[[pipelines.stages]]
name = "upload"
kind = "publish"
duration_ms = 100
[[projects]]
name = "p"
[[projects.buckets]]
name = "u"
units_per_day = 1000000
[projects.costs]
upload = { bucket = "u", units = 1 }
[[channels]]
name = "solo-ch"
home_region = "local"
videos_per_day = 10000
pipeline = "quick"
project = "p"
"#;

async fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_channel_actor_is_restarted_and_repeated_failures_escalate() {
    let dir = tempfile::tempdir().expect("dir");
    let node = start_solo_node(dir.path()).await;
    let ctx = Arc::clone(&node.ctx);
    let ch = ChannelId(0);
    let published = || ctx.metrics.videos_published.load(Ordering::Relaxed);
    wait_for("a first video", Duration::from_secs(30), || {
        published() >= 1
    })
    .await;

    fail_once_and_await_the_restart(&ctx, ch).await;
    assert_eq!(ctx.metrics.actor_restarts.load(Ordering::Relaxed), 1);
    // The new actor loaded the channel from the store and goes on.
    let before = published();
    wait_for(
        "progress after the restart",
        Duration::from_secs(45),
        || published() > before,
    )
    .await;
    assert!(!ctx.life.is_stopping());

    // More failures than the budget within the window: escalation.
    for _ in 0..RESTARTS_MAX {
        fail_and_await_a_restart_or_the_escalation(&ctx, ch).await;
    }
    let why = tokio::time::timeout(Duration::from_secs(10), node.stop_requested())
        .await
        .expect("the node asks to stop");
    assert!(
        why.contains("escalated") && why.contains("actor failures"),
        "{why}"
    );
    node.stop().await;
}

/// The one node of `CLUSTER`, on the in-memory store, with certificates
/// and artifacts under `dir`.
async fn start_solo_node(dir: &Path) -> RunningNode {
    let certs_dir = dir.join("certs");
    certs::init(&certs_dir, "solo").expect("CA");
    certs::issue(&certs_dir, Role::Node, "solo").expect("cert");
    let topo = Arc::new(topology::config::parse_topology(CLUSTER).expect("config"));
    let store = Arc::new(AnyStore::open(&StoreUrl::Mem).await.expect("mem store"));
    RunningNode::start(NodeSpec {
        topo,
        name: "solo".into(),
        store,
        listen: "127.0.0.1:0".parse().expect("addr"),
        identity: TlsIdentity::load(&certs_dir, "nodes", "solo").expect("identity"),
        timing: Timing {
            plan_lead_ms: 20_000,
            publish_timeout_ms: 3_000,
            // A job running when its actor fails may be taken as lost by
            // the new actor only after its duration plus this grace: with
            // the default 30 s, a failure during a render could hold the
            // next publish past the wait below (before and after the
            // release-limit change alike: about one run in ten here).
            job_grace_ms: 2_000,
            ..Timing::default()
        },
        executors: Default::default(),
        artifacts: dir.join("artifacts"),
        publisher: Arc::new(DirectoryPublisher::new(dir.join("published")).expect("pub")),
        gpu: Default::default(),
        metrics: None,
        metrics_channels_max: reelfleet::live::config::METRICS_CHANNELS_MAX,
        fault_points: Default::default(),
        recorder: None,
    })
    .await
    .expect("node starts")
}

/// Fails channel `ch`'s actor and waits for its replacement, which must
/// go on under the same epoch.
async fn fail_once_and_await_the_restart(ctx: &NodePorts, ch: ChannelId) {
    let (epoch, first) = ctx
        .router
        .locals()
        .channels
        .get(&ch)
        .cloned()
        .expect("hosted channel");
    first.mailbox.fail("injected");
    wait_for("the restart", Duration::from_secs(10), || {
        ctx.router
            .locals()
            .channels
            .get(&ch)
            .is_some_and(|(e, r)| r.id != first.id && *e == epoch)
    })
    .await;
}

/// Fails channel `ch`'s actor again, and waits until it is replaced or
/// the node starts stopping.
async fn fail_and_await_a_restart_or_the_escalation(ctx: &NodePorts, ch: ChannelId) {
    let (_, r) = ctx
        .router
        .locals()
        .channels
        .get(&ch)
        .cloned()
        .expect("hosted");
    r.mailbox.fail("injected again");
    wait_for(
        "a restart or the escalation",
        Duration::from_secs(10),
        || {
            ctx.life.is_stopping()
                || ctx
                    .router
                    .locals()
                    .channels
                    .get(&ch)
                    .is_some_and(|(_, n)| n.id != r.id)
        },
    )
    .await;
}
