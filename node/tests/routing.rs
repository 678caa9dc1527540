//! The simulator and the live node route every effect the same way: the
//! simulator records each routing decision it makes (the node's view, the
//! machine's effect, the routes), and the live node's ports are handed the
//! same effect under the same view. They must carry out exactly the same
//! routes, send the same messages to the same peers (through the wire
//! codec and back), and deliver the same inputs to the same local
//! machines. The ports run without a runtime node, a transport or a
//! network: a recorder stands in for QUIC.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use actors::channel::ChannelInput;
use actors::dispatch::DispatchInput;
use actors::gpu::GpuInput;
use actors::membership::MembershipInput;
use actors::node::{Local, NodeMsg, Route};
use reelfleet::live::assemble::{build_ports, PortsSpec};
use reelfleet::live::config::Timing;
use reelfleet::live::ports::{
    ChannelPorts, DispatchPorts, GpuPorts, MembershipPorts, NodePorts, RouteTap,
};
use reelfleet::live::router::{Hosted, Outbox};
use reelfleet::live::shell::{Mailbox, Ports};
use reelfleet::live::store_port::Fence;
use reelfleet::live::wire;
use reelfleet::publish::directory::DirectoryPublisher;
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use sim::scenarios::builtin;
use sim::trace::Trace;
use sim::world::carry::{AnyEffect, RouteRecord};
use sim::world::World;
use topology::{NodeId, Topology};

/// What one live node sent and delivered.
#[derive(Default)]
struct Seen {
    /// Frames to peers, decoded again from their bytes.
    sent: Vec<(NodeId, NodeMsg)>,
    /// Inputs its local machines received.
    delivered: Vec<Local>,
    /// Routes its ports carried out.
    carried: Vec<Route>,
}

type Shared = Arc<Mutex<Seen>>;

struct Recorder(Shared);

impl Outbox for Recorder {
    fn send(&self, to: NodeId, msg: &NodeMsg) {
        let frame = wire::encode(msg);
        let back = wire::decode(&frame).expect("a frame decodes to what was sent");
        lock(&self.0).sent.push((to, back));
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A mailbox that records what it gets, as `wrap` makes it a `Local`.
fn recording<I: Send + 'static>(seen: &Shared, wrap: fn(I) -> Local) -> Mailbox<I> {
    let seen = Arc::clone(seen);
    Mailbox::from_fn(move |m| {
        if let reelfleet::live::shell::ShellMsg::Input(i) = m {
            lock(&seen).delivered.push(wrap(i));
        }
    })
}

/// A live node's ports for `me`, with recorders everywhere a peer or a
/// local machine would be.
async fn live_node(
    topo: &Arc<Topology>,
    me: NodeId,
    dir: &std::path::Path,
) -> (Arc<NodePorts>, Shared) {
    let seen: Shared = Arc::default();
    let spec = PortsSpec {
        topo: Arc::clone(topo),
        name: topo.node(me).name.clone(),
        store: Arc::new(AnyStore::open(&StoreUrl::Mem).await.expect("mem store")),
        timing: Timing::default(),
        executors: Default::default(),
        artifacts: dir.join("artifacts"),
        publisher: Arc::new(DirectoryPublisher::new(dir.join("published")).expect("publisher")),
        fault_points: Default::default(),
        clock: reelfleet::live::clock::Clock::new(),
        recorder: None,
    };
    let node = build_ports(spec, me, Arc::new(Recorder(Arc::clone(&seen)))).expect("ports");
    let tap: RouteTap = {
        let seen = Arc::clone(&seen);
        Arc::new(move |_, r: &Route| lock(&seen).carried.push(r.clone()))
    };
    let _ = node.tap.set(tap);
    let _ = node.work.set(Mailbox::from_fn(|_| {}));
    register_locals(&node, topo, me, &seen);
    (node, seen)
}

/// Every machine a node could host, as recording mailboxes.
fn register_locals(node: &NodePorts, topo: &Topology, me: NodeId, seen: &Shared) {
    let id = ractor::ActorId::Local(0);
    let mut l = node.router.locals();
    l.membership = Some(Hosted {
        id,
        mailbox: recording::<MembershipInput>(seen, Local::Membership),
    });
    l.dispatcher = Some(Hosted {
        id,
        mailbox: recording::<DispatchInput>(seen, Local::Dispatcher),
    });
    // The recorders cannot tell which GPU or channel got an input (a `fn`
    // pointer captures nothing): the target is erased on both sides.
    for g in topo.node(me).gpus.clone() {
        let wrap: fn(GpuInput) -> Local = |i| Local::Gpu(topology::GpuId(u32::MAX), i);
        l.gpus.insert(
            g,
            Hosted {
                id,
                mailbox: recording(seen, wrap),
            },
        );
    }
    for ch in topo.channel_ids() {
        let wrap: fn(ChannelInput) -> Local = |i| Local::EachChannel(i);
        l.channels.insert(
            ch,
            (
                0,
                Hosted {
                    id,
                    mailbox: recording(seen, wrap),
                },
            ),
        );
    }
}

/// The machine's own mailbox: results of its I/O come back there later,
/// from tasks, and are not routing decisions.
fn results<I: Send + 'static>() -> Mailbox<I> {
    Mailbox::from_fn(|_| {})
}

/// Hands one recorded effect to the live ports of its node.
fn replay(node: &Arc<NodePorts>, rec: &RouteRecord) {
    node.router.update_view(|v| *v = rec.view.clone());
    let node = Arc::clone(node);
    match rec.effect.clone() {
        AnyEffect::Membership(e) => MembershipPorts { node }.execute(&results(), e),
        AnyEffect::Channel {
            channel,
            epoch,
            incarnation,
            effect,
        } => {
            let fence = Fence {
                channel,
                epoch,
                incarnation,
            };
            ChannelPorts { node, fence }.execute(&results(), effect)
        }
        AnyEffect::Gpu(g, e) => GpuPorts::new(node, g).execute(&results(), e),
        AnyEffect::Dispatch(e) => DispatchPorts { node }.execute(&results(), e),
    }
}

/// What a local delivery looks like once recorded (the recorders cannot
/// tell a channel or GPU apart, so the target is erased on both sides).
fn erased(l: &Local) -> Local {
    match l.clone() {
        Local::Channel(_, i) | Local::EachChannel(i) => Local::EachChannel(i),
        Local::Gpu(_, i) => Local::Gpu(topology::GpuId(u32::MAX), i),
        other => other,
    }
}

/// The kind of a route, for the coverage check.
fn kind(r: &Route) -> &'static str {
    match r {
        Route::Local(_) => "local",
        Route::Remote { .. } => "remote",
        Route::Store { .. } => "store",
        Route::RunLocal(_) => "run-local",
        Route::CancelLocal(_) => "cancel-local",
        Route::RunGpu { .. } => "run-gpu",
        Route::KillGpu { .. } => "kill-gpu",
        Route::Publish { .. } => "publish",
        Route::Lookup { .. } => "lookup",
        Route::StartChannel { .. } => "start-channel",
        Route::ChannelStopped { .. } => "channel-stopped",
        Route::DropAllChannels => "drop-all-channels",
        Route::HostDispatcher(_) => "host-dispatcher",
        Route::Drained => "drained",
        Route::Observe(_) => "observe",
    }
}

/// Checks one decision: the live ports carried the same routes, sent the
/// same messages, delivered the same inputs.
fn check(rec: &RouteRecord, seen: &Seen, i: usize) {
    assert_eq!(seen.carried, rec.routes, "decision {i}: {:?}", rec.effect);
    let sent: Vec<(NodeId, NodeMsg)> = rec
        .routes
        .iter()
        .filter_map(|r| match r {
            Route::Remote { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(seen.sent, sent, "decision {i}: messages to peers");
    let delivered: Vec<Local> = rec
        .routes
        .iter()
        .filter_map(|r| match r {
            Route::Local(l) => Some(erased(l)),
            _ => None,
        })
        .collect();
    let got: Vec<Local> = seen.delivered.iter().map(erased).collect();
    assert_eq!(got, delivered, "decision {i}: local deliveries");
}

async fn same_routes_as_the_simulator(
    scenario: &str,
    seed: u64,
    kinds: &mut BTreeSet<&'static str>,
) {
    let mut w = World::new(
        builtin(scenario, seed).expect("built-in"),
        seed,
        Trace::new(None),
    );
    w.record_routes(250_000);
    w.run();
    assert!(w.violation.is_none(), "{scenario}: {:?}", w.violation);
    let log = w.route_log().to_vec();
    assert!(
        log.len() > 1_000,
        "{scenario}: only {} decisions",
        log.len()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = Arc::clone(&w.topo);
    let mut nodes = Vec::new();
    for n in topo.node_ids() {
        nodes.push(live_node(&topo, n, &dir.path().join(n.to_string())).await);
    }
    for (i, rec) in log.iter().enumerate() {
        let (node, seen) = &nodes[rec.node.index()];
        *lock(seen) = Seen::default();
        replay(node, rec);
        check(rec, &lock(seen), i);
        kinds.extend(rec.routes.iter().map(kind));
    }
    eprintln!(
        "{scenario} seed {seed}: {} decisions routed alike",
        log.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_node_routes_every_effect_as_the_simulator_does() {
    let mut kinds = BTreeSet::new();
    for (scenario, seed) in [("node-freeze", 1), ("rolling-restart", 1), ("swarm", 14)] {
        same_routes_as_the_simulator(scenario, seed, &mut kinds).await;
    }
    let all = [
        "local",
        "remote",
        "store",
        "run-local",
        "cancel-local",
        "run-gpu",
        "kill-gpu",
        "publish",
        "lookup",
        "start-channel",
        "channel-stopped",
        "drop-all-channels",
        "host-dispatcher",
        "drained",
        "observe",
    ];
    let missing: Vec<&str> = all.iter().copied().filter(|k| !kinds.contains(k)).collect();
    assert!(missing.is_empty(), "routes never exercised: {missing:?}");
}
