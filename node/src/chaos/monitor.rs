//! What the runner sees of the fleet while it breaks it, four times a
//! second: who owns each channel under which epoch (from the store; not
//! known while the store does not answer) and how many videos each region
//! has made visible (from the publisher's own record). Recovery times and
//! the stop checks are read off these samples afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::records::{owner_key, OwnerRecord};
use serde::Serialize;
use topology::Topology;

use crate::emulate::youtube::YoutubeEmulator;
use crate::store::any::AnyStore;
use crate::store::Store;

pub const SAMPLE_MS: u64 = 250;

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    /// Per channel: (owner node index, epoch); `None` for the whole sample
    /// when the store did not answer.
    pub owners: Option<Vec<Option<(u32, u64)>>>,
    pub published_by_region: Vec<usize>,
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

async fn owners(store: &AnyStore, topo: &Topology) -> Option<Vec<Option<(u32, u64)>>> {
    let keys: Vec<Vec<u8>> = topo.channel_ids().map(owner_key).collect();
    let got = tokio::time::timeout(Duration::from_secs(1), store.get(&keys))
        .await
        .ok()?
        .ok()?;
    Some(
        got.into_iter()
            .map(|e| {
                let o = OwnerRecord::decode(&e?.value).ok()?;
                Some((o.node?.0, o.epoch))
            })
            .collect(),
    )
}

impl Monitor {
    pub fn start(
        store: Arc<AnyStore>,
        topo: Arc<Topology>,
        emu: Arc<YoutubeEmulator>,
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
                while !st.load(Ordering::Relaxed) {
                    let owners = rt.block_on(owners(&store, &topo));
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
