//! A node's metrics: counters and gauges the shells bump, rendered in the
//! Prometheus text format on `GET /metrics` by a small HTTP/1.1 listener
//! (one request per connection; anything but `GET /metrics` is a 404).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One GPU's telemetry: (gpu name, used bytes, total bytes, utilisation %,
/// temperature °C, healthy).
pub type GpuRow = (String, u64, u64, u32, u32, bool);

#[derive(Default)]
pub struct Metrics {
    pub videos_published: AtomicU64,
    pub videos_failed: AtomicU64,
    pub jobs_started: AtomicU64,
    pub jobs_running: AtomicU64,
    pub uploads_started: AtomicU64,
    pub uploads_unknown: AtomicU64,
    pub lookups: AtomicU64,
    pub store_ops: AtomicU64,
    pub store_errors: AtomicU64,
    pub fenced: AtomicU64,
    /// Channel commits the store refused (the epoch fence).
    pub fence_rejections: AtomicU64,
    pub channels_owned: AtomicU64,
    pub node_removals: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub gpus: Mutex<Vec<GpuRow>>,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Every metric in the Prometheus text format, labelled with `node`.
    pub fn render(
        &self,
        node: &str,
        net: &super::transport::TransportStats,
        quota: &[(String, u64)],
    ) -> String {
        let mut s = String::new();
        render_quota(&mut s, node, quota);
        for (name, kind, v) in self.counters() {
            let _ = writeln!(s, "# TYPE {name} {kind}");
            let _ = writeln!(s, "{name}{{node=\"{node}\"}} {}", v.load(Ordering::Relaxed));
        }
        render_net(&mut s, node, net);
        // A copy, so the lock is not held while the text is written.
        let gpus = super::lock(&self.gpus).clone();
        render_gpus(&mut s, node, &gpus);
        s
    }

    /// The node's own counters and gauges: (metric name, Prometheus type,
    /// value).
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 13] {
        [
            (
                "reelfleet_videos_published_total",
                "counter",
                &self.videos_published,
            ),
            (
                "reelfleet_videos_failed_total",
                "counter",
                &self.videos_failed,
            ),
            (
                "reelfleet_jobs_started_total",
                "counter",
                &self.jobs_started,
            ),
            ("reelfleet_jobs_running", "gauge", &self.jobs_running),
            (
                "reelfleet_uploads_started_total",
                "counter",
                &self.uploads_started,
            ),
            (
                "reelfleet_uploads_unknown_total",
                "counter",
                &self.uploads_unknown,
            ),
            ("reelfleet_lookups_total", "counter", &self.lookups),
            ("reelfleet_store_ops_total", "counter", &self.store_ops),
            (
                "reelfleet_store_errors_total",
                "counter",
                &self.store_errors,
            ),
            ("reelfleet_fenced_total", "counter", &self.fenced),
            (
                "reelfleet_fence_rejections_total",
                "counter",
                &self.fence_rejections,
            ),
            ("reelfleet_channels_owned", "gauge", &self.channels_owned),
            (
                "reelfleet_actor_restarts_total",
                "counter",
                &self.actor_restarts,
            ),
        ]
    }
}

/// The publisher's quota spent per bucket; nothing at all when it has none.
fn render_quota(s: &mut String, node: &str, quota: &[(String, u64)]) {
    if quota.is_empty() {
        return;
    }
    let _ = writeln!(s, "# TYPE reelfleet_publisher_quota_units_total counter");
    for (bucket, units) in quota {
        let _ = writeln!(
            s,
            "reelfleet_publisher_quota_units_total{{node=\"{node}\",bucket=\"{bucket}\"}} {units}"
        );
    }
}

/// The transport's frame and peer counters.
fn render_net(s: &mut String, node: &str, net: &super::transport::TransportStats) {
    let net_rows: [(&str, &AtomicU64); 5] = [
        ("reelfleet_frames_in_total", &net.frames_in),
        ("reelfleet_frames_out_total", &net.frames_out),
        ("reelfleet_frames_dropped_total", &net.frames_dropped),
        ("reelfleet_peers_refused_total", &net.refused),
        ("reelfleet_bad_frames_total", &net.bad_frames),
    ];
    for (name, v) in net_rows {
        let _ = writeln!(s, "# TYPE {name} counter");
        let _ = writeln!(s, "{name}{{node=\"{node}\"}} {}", v.load(Ordering::Relaxed));
    }
}

/// One set of gauges per GPU; nothing at all on a node without GPUs.
fn render_gpus(s: &mut String, node: &str, gpus: &[GpuRow]) {
    if gpus.is_empty() {
        return;
    }
    let _ = writeln!(s, "# TYPE reelfleet_gpu_memory_used_bytes gauge");
    let _ = writeln!(s, "# TYPE reelfleet_gpu_memory_total_bytes gauge");
    let _ = writeln!(s, "# TYPE reelfleet_gpu_utilization_percent gauge");
    let _ = writeln!(s, "# TYPE reelfleet_gpu_temperature_celsius gauge");
    let _ = writeln!(s, "# TYPE reelfleet_gpu_healthy gauge");
    for (g, used, total, util, temp, ok) in gpus {
        let l = format!("{{node=\"{node}\",gpu=\"{g}\"}}");
        let _ = writeln!(s, "reelfleet_gpu_memory_used_bytes{l} {used}");
        let _ = writeln!(s, "reelfleet_gpu_memory_total_bytes{l} {total}");
        let _ = writeln!(s, "reelfleet_gpu_utilization_percent{l} {util}");
        let _ = writeln!(s, "reelfleet_gpu_temperature_celsius{l} {temp}");
        let _ = writeln!(s, "reelfleet_gpu_healthy{l} {}", u8::from(*ok));
    }
}

/// Serves `render()` on `addr`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("metrics: {e}"))?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let render = Arc::clone(&render);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                // Read the request head (bounded); the body is ignored.
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /metrics ") {
                    ("200 OK", render())
                } else {
                    (
                        "404 Not Found",
                        "only GET /metrics is served here\n".to_string(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(bound)
}
