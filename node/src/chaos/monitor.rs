//! What the runner sees of the fleet while it breaks it, four times a
//! second: who owns each channel under which epoch (from the store; not
//! known while the store does not answer) and how many videos each region
//! has made visible (from the publisher's own record). Recovery times and
//! the stop checks are read off these samples afterwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::records::{Key as RecordKey, OwnerRecord};

/// The prefix of the owner records (`actors::records::owner_key`).
const OWNER_PREFIX: &[u8] = b"o/";
use serde::Serialize;
use topology::Topology;

use crate::emulate::youtube::YoutubeEmulator;
use crate::store::any::AnyStore;

pub const SAMPLE_MS: u64 = 250;

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    /// Per channel: (owner node index, epoch); `None` for the whole sample
    /// when the store did not answer.
    pub owners: Option<Vec<Option<(u32, u64)>>>,
    pub published_by_region: Vec<usize>,
    /// Per node: jobs waiting in its GPUs' queues (`None`: its /metrics
    /// did not answer); taken every fourth sample, empty in between.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queued_by_node: Vec<Option<u64>>,
}

impl Sample {
    pub fn published(&self) -> usize {
        self.published_by_region.iter().sum()
    }
}

pub struct Monitor {
    pub samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The region of the channel a key (`<channel>/<slot>`) names.
pub fn region_of_key(topo: &Topology, key: &str) -> Option<usize> {
    let name = key.rsplit_once('/').map(|(c, _)| c)?;
    topo.channels
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.home_region.index())
}

/// Every channel's owner, read as ranges over the owner records (a fleet
/// of any size: one point read of every key would pass the store's
/// transaction limits at a few ten thousand channels); `None` if the
/// store did not answer within a second per 10,000 channels.
async fn owners(store: &AnyStore, topo: &Topology) -> Option<Vec<Option<(u32, u64)>>> {
    let within = Duration::from_secs(1 + topo.channels.len() as u64 / 10_000);
    let rows = tokio::time::timeout(within, crate::audit::range_all(store, OWNER_PREFIX))
        .await
        .ok()?
        .ok()?;
    let mut out: Vec<Option<(u32, u64)>> = vec![None; topo.channels.len()];
    for e in &rows {
        let Some(RecordKey::Owner(ch)) = RecordKey::parse(&e.key) else {
            continue;
        };
        let o = OwnerRecord::decode(&e.value).ok();
        if let (Some(slot), Some(o)) = (out.get_mut(ch.index()), o) {
            *slot = o.node.map(|n| (n.0, o.epoch));
        }
    }
    Some(out)
}

/// The sum of `reelfleet_gpu_queued_jobs` in a node's /metrics; `None` if
/// it does not answer within a short while (a frozen or dead node).
fn queued_jobs(addr: SocketAddr) -> Option<u64> {
    use std::io::{Read, Write};
    let limit = Duration::from_millis(300);
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.take(4 << 20).read_to_string(&mut text).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(
        text.lines()
            .filter(|l| l.starts_with("reelfleet_gpu_queued_jobs{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum(),
    )
}

impl Monitor {
    pub fn start(
        store: Arc<AnyStore>,
        topo: Arc<Topology>,
        emu: Arc<YoutubeEmulator>,
        metrics: Vec<SocketAddr>,
        t0: Instant,
    ) -> Result<Monitor, String> {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("monitor runtime: {e}"))?;
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("chaos-monitor".into())
            .spawn(move || {
                let mut n = 0u64;
                while !st.load(Ordering::Relaxed) {
                    n += 1;
                    let owners = rt.block_on(owners(&store, &topo));
                    let queued_by_node = if n.is_multiple_of(4) {
                        metrics.iter().map(|a| queued_jobs(*a)).collect()
                    } else {
                        Vec::new()
                    };
                    let mut published_by_region = vec![0; topo.regions.len()];
                    for v in emu.videos() {
                        let key = v
                            .description
                            .lines()
                            .find_map(|l| l.strip_prefix("reelfleet-key: "))
                            .unwrap_or_default();
                        if let Some(r) = region_of_key(&topo, key.trim_end()) {
                            published_by_region[r] += 1;
                        }
                    }
                    let sample = Sample {
                        t_ms: t0.elapsed().as_millis() as u64,
                        owners,
                        published_by_region,
                        queued_by_node,
                    };
                    s.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                    std::thread::sleep(Duration::from_millis(SAMPLE_MS));
                }
            })
            .map_err(|e| format!("monitor thread: {e}"))?;
        Ok(Monitor {
            samples,
            stop,
            thread: Some(thread),
        })
    }

    /// Owner changes seen so far (takeovers and moves).
    pub fn ownership_changes(&self) -> usize {
        ownership_changes(&self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The last sample taken, if any.
    pub fn last(&self) -> Option<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
    }

    /// Stops sampling; every sample taken.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Owner changes seen between consecutive samples (takeovers and moves).
pub fn ownership_changes(samples: &[Sample]) -> usize {
    let known: Vec<&Vec<Option<(u32, u64)>>> =
        samples.iter().filter_map(|s| s.owners.as_ref()).collect();
    known
        .windows(2)
        .map(|w| {
            w[0].iter()
                .zip(w[1].iter())
                .filter(|(a, b)| a.map(|x| x.1) != b.map(|x| x.1) && b.is_some())
                .count()
        })
        .sum()
}
