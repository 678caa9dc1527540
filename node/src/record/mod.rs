//! The flight recorder: what every machine of a live node was made from
//! and fed, so that `reelfleet replay` can run the same machines through
//! the same inputs later and show they decide the same (or where not).
//!
//! The shell ([`crate::live::shell`]) holds one [`Tape`] per machine: it
//! encodes each input before the machine takes it and a digest of the
//! effects after, and hands the framed record to one writer thread per
//! node ([`writer`]), which batches fsyncs, rotates segments by size and
//! age and keeps the whole recording under its cap. A write that fails (a
//! full disk) stops the recording, never the node. [`read`] turns a
//! recording folder back into machines and inputs; [`replay`] runs them.

pub mod format;
pub mod read;
pub mod replay;
pub mod state;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use format::{Built, BuiltEntry};

/// The `[record]` table of a node config (or `--record DIR`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// The recording folder; each node records into `<dir>/<node>/`, so
    /// several nodes may share one.
    pub dir: PathBuf,
    /// A segment is closed and a new one begun at this size ...
    pub segment_bytes: u64,
    /// ... or this age.
    pub segment_age_ms: u64,
    /// The node's whole recording stays under this: the oldest segments
    /// are deleted first.
    pub total_bytes_max: u64,
    /// Written records are made durable (fsync) at most this far apart.
    pub fsync_interval_ms: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            dir: PathBuf::new(),
            segment_bytes: 64 << 20,
            segment_age_ms: 3_600_000,
            total_bytes_max: 1 << 30,
            fsync_interval_ms: 200,
        }
    }
}

impl RecordConfig {
    pub fn in_dir(dir: &Path) -> RecordConfig {
        RecordConfig {
            dir: dir.to_path_buf(),
            ..RecordConfig::default()
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.dir.as_os_str().is_empty() {
            return Err("record.dir: a folder is needed".into());
        }
        if self.segment_bytes < 4096 {
            return Err(format!(
                "record.segment_bytes ({}) must be at least 4096",
                self.segment_bytes
            ));
        }
        if self.total_bytes_max < 2 * self.segment_bytes {
            return Err(format!(
                "record.total_bytes_max ({}) must be at least twice record.segment_bytes ({}): \
                 the segment being written counts toward it",
                self.total_bytes_max, self.segment_bytes
            ));
        }
        if self.segment_age_ms == 0 || self.fsync_interval_ms == 0 {
            return Err("record.segment_age_ms and record.fsync_interval_ms must be > 0".into());
        }
        Ok(())
    }
}

/// One node's recorder, shared by its shells.
pub struct Recorder {
    queue: Arc<writer::Queue>,
    stopped: Arc<AtomicBool>,
    next_machine: AtomicU64,
    pub run: u64,
    pub node_dir: PathBuf,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Recorder {
    /// Begins a new run in `<cfg.dir>/<node>/`, keeping `cluster_text`
    /// (the cluster config the machines are built against) beside it.
    pub fn start(
        cfg: &RecordConfig,
        node: &str,
        node_id: u32,
        cluster_text: &str,
    ) -> Result<Arc<Recorder>, String> {
        cfg.check()?;
        let node_dir = cfg.dir.join(node);
        std::fs::create_dir_all(&node_dir)
            .map_err(|e| format!("record: cannot create {}: {e}", node_dir.display()))?;
        let run = writer::next_run(&node_dir)?;
        let cluster = node_dir.join(format::cluster_name(run));
        std::fs::write(&cluster, cluster_text)
            .map_err(|e| format!("record: cannot write {}: {e}", cluster.display()))?;
        let stopped = Arc::new(AtomicBool::new(false));
        let queue = Arc::new(writer::Queue::default());
        let rx = Arc::clone(&queue);
        let w = writer::Writer::new(
            cfg.clone(),
            node_dir.clone(),
            node.to_string(),
            node_id,
            run,
            Arc::clone(&stopped),
        );
        let handle = std::thread::Builder::new()
            .name(format!("record-{node}"))
            .spawn(move || w.run(rx))
            .map_err(|e| format!("record: cannot start the writer thread: {e}"))?;
        tracing::info!(dir = %node_dir.display(), run, "recording every machine's inputs");
        Ok(Arc::new(Recorder {
            queue,
            stopped,
            next_machine: AtomicU64::new(1),
            run,
            node_dir,
            writer: std::sync::Mutex::new(Some(handle)),
        }))
    }

    /// Whether the recording stopped (a write failed).
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn send(&self, body: &[u8]) {
        if !self.stopped() {
            self.queue.push(body, &self.stopped);
        }
    }

    /// A tape for a machine just made from `built`.
    pub fn tape(self: &Arc<Self>, built: Built) -> Tape {
        let machine = self.next_machine.fetch_add(1, Ordering::Relaxed);
        self.send(&format::built_body(&BuiltEntry { machine, built }));
        Tape {
            rec: Arc::clone(self),
            machine,
            body: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Writes what is queued and waits for the writer (a node stopping).
    pub fn finish(&self) {
        self.queue.finish();
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }
}

/// One machine's part of the recording, held by its shell.
pub struct Tape {
    rec: Arc<Recorder>,
    machine: u64,
    body: Vec<u8>,
    scratch: Vec<u8>,
}

impl Tape {
    /// Encodes `input` before the machine takes it.
    pub fn before<I: Serialize>(&mut self, now_ms: u64, input: &I) {
        self.body.clear();
        if self.rec.stopped() {
            return;
        }
        self.body.push(format::TAG_FED);
        self.body.extend_from_slice(&self.machine.to_le_bytes());
        self.body.extend_from_slice(&now_ms.to_le_bytes());
        // effects and digest, filled in by `after`.
        self.body.extend_from_slice(&[0; 12]);
        let body = std::mem::take(&mut self.body);
        self.body = postcard::to_extend(input, body).unwrap_or_default();
    }

    /// Records the input encoded by `before` with the effects it produced.
    pub fn after<E: Serialize>(&mut self, effects: &[E]) {
        if self.body.len() < format::FED_FIXED_BYTES {
            return;
        }
        let d = format::digest(effects, &mut self.scratch);
        self.body[17..21].copy_from_slice(&(effects.len() as u32).to_le_bytes());
        self.body[21..29].copy_from_slice(&d.to_le_bytes());
        self.rec.send(&self.body);
    }
}

impl Drop for Tape {
    fn drop(&mut self) {
        self.rec.send(&format::stopped_body(self.machine));
    }
}
