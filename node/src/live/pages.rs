//! What the HTTP listener shows of the nodes of this process: their
//! metrics, whether each is ready, and a JSON status. One process (`node`)
//! has one node; `reelfleet up` has several and is ready when all are.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::metrics;
use super::ports::NodePorts;
use super::transport::Transport;
use crate::http::Pages;
use crate::store::Store;

/// How long `/ready` waits for the store before calling it unreachable.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A node as the pages see it.
#[derive(Clone)]
pub struct Shown {
    pub ports: Arc<NodePorts>,
    pub net: Arc<Transport>,
}

/// Copies the transport's and the publisher's counters into the node's
/// metrics at each render.
pub fn register_collectors(node: &Shown) {
    let weak_net = Arc::downgrade(&node.net);
    let weak_ports = Arc::downgrade(&node.ports);
    let collect = move |m: &metrics::Metrics| {
        if let Some(net) = weak_net.upgrade() {
            let s = &net.stats;
            use std::sync::atomic::Ordering::Relaxed;
            m.absolute("reelfleet_quic_frames_in_total", s.frames_in.load(Relaxed));
            m.absolute(
                "reelfleet_quic_frames_out_total",
                s.frames_out.load(Relaxed),
            );
            m.absolute(
                "reelfleet_quic_frames_dropped_total",
                s.frames_dropped.load(Relaxed),
            );
            m.absolute(
                "reelfleet_quic_bad_frames_total",
                s.bad_frames.load(Relaxed),
            );
            m.absolute(
                "reelfleet_quic_refused_peers_total",
                s.refused.load(Relaxed),
            );
            m.absolute("reelfleet_quic_connects_total", s.connects.load(Relaxed));
            let rtts = s.peer_rtts();
            let open = rtts.iter().filter(|(_, r)| r.is_some()).count();
            m.level("reelfleet_quic_peers", &[], open as f64);
            for (peer, rtt) in rtts {
                if let Some(rtt) = rtt {
                    m.level(
                        "reelfleet_quic_rtt_seconds",
                        &[("peer", peer)],
                        rtt.as_secs_f64(),
                    );
                }
            }
        }
        if let Some(ports) = weak_ports.upgrade() {
            for (bucket, units) in ports.publish.publisher.quota_units_spent() {
                m.level(
                    "reelfleet_publisher_quota_units",
                    &[("bucket", bucket)],
                    units as f64,
                );
            }
            m.set_ready(lease_held(&ports));
        }
    };
    super::lock(&node.ports.metrics.collectors).push(Box::new(collect));
}

fn lease_held(p: &NodePorts) -> bool {
    p.router.view().lease_valid_until_ms > p.clock.now_ms()
}

/// Ready: the store answers a read within `STORE_PROBE_TIMEOUT` and the
/// node's lease is held (it renewed within a lease).
async fn ready(p: &NodePorts) -> Result<String, String> {
    let key = [super::runtime::addr_key(&p.name)];
    let probe = p.store.store.get(&key);
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe).await {
        Err(_) => {
            return Err(format!(
                "{}: the store did not answer within {STORE_PROBE_TIMEOUT:?}",
                p.name
            ))
        }
        Ok(Err(e)) => return Err(format!("{}: the store is unreachable: {e}", p.name)),
        Ok(Ok(_)) => {}
    }
    if !lease_held(p) {
        return Err(format!("{}: its lease is not held", p.name));
    }
    Ok(format!("{}: store reachable, lease held", p.name))
}

fn status(n: &Shown) -> serde_json::Value {
    let p = &n.ports;
    let now = p.clock.now_ms();
    let view = p.router.view();
    let channels: Vec<serde_json::Value> = p
        .router
        .locals()
        .channels
        .iter()
        .map(|(c, (epoch, _))| json!({"channel": p.topo.channel(*c).name, "epoch": epoch}))
        .collect();
    let gpus: Vec<serde_json::Value> = super::lock(&p.metrics.gpus)
        .iter()
        .map(|g| {
            json!({
                "index": g.index,
                "name": g.name,
                "uuid": g.uuid,
                "memory_total_bytes": g.memory_total_bytes,
                "memory_used_bytes": (!g.uuid.is_empty()).then_some(g.memory_used_bytes),
                "utilization_percent": (!g.uuid.is_empty()).then_some(g.utilization_percent),
                "temperature_c": (!g.uuid.is_empty()).then_some(g.temperature_c),
                "healthy": g.healthy,
                "reason": g.reason,
            })
        })
        .collect();
    let peers: Vec<serde_json::Value> = n
        .net
        .stats
        .peer_rtts()
        .into_iter()
        .map(|(peer, rtt)| {
            json!({
                "peer": peer,
                "connected": rtt.is_some(),
                "rtt_ms": rtt.map(|r| r.as_secs_f64() * 1000.0),
            })
        })
        .collect();
    json!({
        "node": p.name,
        "region": p.region(),
        "lease": {
            "held": view.lease_valid_until_ms > now,
            "valid_for_ms": view.lease_valid_until_ms.saturating_sub(now),
        },
        "stopping": p.life.is_stopping(),
        "owned_channels": channels,
        "jobs_running": p.metrics.jobs_running.load(std::sync::atomic::Ordering::Relaxed),
        "gpus": gpus,
        "peers": peers,
    })
}

/// The pages for `nodes` (one, or all of `up`'s).
pub fn pages(nodes: Vec<Shown>) -> Pages {
    let nodes = Arc::new(nodes);
    let for_metrics = Arc::clone(&nodes);
    let for_ready = Arc::clone(&nodes);
    let for_status = Arc::clone(&nodes);
    Pages {
        metrics: Arc::new(move || {
            let ms: Vec<&metrics::Metrics> =
                for_metrics.iter().map(|n| &*n.ports.metrics).collect();
            metrics::render(&ms)
        }),
        ready: Arc::new(move || {
            let nodes = Arc::clone(&for_ready);
            Box::pin(async move {
                let mut ok = Vec::new();
                let mut bad = Vec::new();
                for n in nodes.iter() {
                    match ready(&n.ports).await {
                        Ok(s) => ok.push(s),
                        Err(s) => bad.push(s),
                    }
                }
                if bad.is_empty() {
                    Ok(ok.join("; "))
                } else {
                    Err(bad.join("; "))
                }
            })
        }),
        status: Arc::new(move || {
            let nodes = Arc::clone(&for_status);
            Box::pin(async move {
                let all: Vec<serde_json::Value> = nodes.iter().map(status).collect();
                if all.len() == 1 {
                    all.into_iter().next().unwrap_or_default()
                } else {
                    json!({ "nodes": all })
                }
            })
        }),
    }
}
