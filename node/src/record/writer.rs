//! The writer thread of one node's recording: appends framed records to
//! the current segment, makes them durable at most `fsync_interval_ms`
//! apart (one fsync for many records: a busy node does not fsync per
//! input), begins a new segment by size or age, deletes the oldest
//! segments to stay under the cap, and on any write error stops the
//! recording with one log line and a metric (the node goes on).

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{self, SegmentHeader};
use super::RecordConfig;

/// The run after the last one recorded in `node_dir`.
pub fn next_run(node_dir: &Path) -> Result<u64, String> {
    let last = segments(node_dir)?
        .iter()
        .map(|(run, _, _)| *run)
        .max()
        .unwrap_or(0);
    // A run whose cluster file was written but no segment (a node that
    // failed to start) is skipped too.
    let mut run = last + 1;
    while node_dir.join(format::cluster_name(run)).exists() {
        run += 1;
    }
    Ok(run)
}

/// The node's segment files as `(run, segment, path)`, oldest first.
pub fn segments(node_dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, String> {
    let entries = std::fs::read_dir(node_dir)
        .map_err(|e| format!("cannot list {}: {e}", node_dir.display()))?;
    let mut out: Vec<(u64, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (run, seg) = format::parse_segment_name(name.to_str()?)?;
            Some((run, seg, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Whether the writer goes on after a batch.
enum Taken {
    More,
    /// The recorder asked to finish (the empty marker).
    Finish,
}

pub struct Writer {
    cfg: RecordConfig,
    node_dir: PathBuf,
    node: String,
    node_id: u32,
    run: u64,
    stopped: Arc<AtomicBool>,
    segment: u64,
    file: Option<BufWriter<File>>,
    segment_bytes: u64,
    segment_started: Instant,
    last_sync: Instant,
    dirty: bool,
}

impl Writer {
    pub fn new(
        cfg: RecordConfig,
        node_dir: PathBuf,
        node: String,
        node_id: u32,
        run: u64,
        stopped: Arc<AtomicBool>,
    ) -> Writer {
        Writer {
            cfg,
            node_dir,
            node,
            node_id,
            run,
            stopped,
            segment: 0,
            file: None,
            segment_bytes: 0,
            segment_started: Instant::now(),
            last_sync: Instant::now(),
            dirty: false,
        }
    }

    pub fn run(mut self, rx: Receiver<Vec<u8>>) {
        let interval = Duration::from_millis(self.cfg.fsync_interval_ms);
        if let Err(e) = self.begin_segment() {
            self.stop(&e);
        }
        loop {
            let frame = match rx.recv_timeout(interval) {
                Ok(f) => Some(f),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if frame.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
            match self.take(frame, &rx, interval) {
                Ok(Taken::More) => {}
                Ok(Taken::Finish) => break,
                Err(e) => self.stop(&e),
            }
        }
        if let Err(e) = self.sync() {
            self.stop(&e);
        }
    }

    /// Writes `first` and whatever else is queued, then syncs and rotates
    /// when due.
    fn take(
        &mut self,
        first: Option<Vec<u8>>,
        rx: &Receiver<Vec<u8>>,
        interval: Duration,
    ) -> Result<Taken, String> {
        if self.stopped.load(Ordering::Relaxed) {
            // Drained so that the shells never wait on a dead recording.
            while let Ok(f) = rx.try_recv() {
                if f.is_empty() {
                    return Ok(Taken::Finish);
                }
            }
            return Ok(Taken::More);
        }
        if let Some(f) = first {
            self.write(&f)?;
            while let Ok(f) = rx.try_recv() {
                if f.is_empty() {
                    return Ok(Taken::Finish);
                }
                self.write(&f)?;
                if self.segment_due() {
                    self.rotate()?;
                }
            }
        }
        if self.dirty && self.last_sync.elapsed() >= interval {
            self.sync()?;
        }
        if self.segment_due() {
            self.rotate()?;
        }
        Ok(Taken::More)
    }

    fn write(&mut self, frame: &[u8]) -> Result<(), String> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        f.write_all(frame).map_err(|e| self.io_error(&e))?;
        self.segment_bytes += frame.len() as u64;
        self.dirty = true;
        metrics::counter!("reelfleet_record_bytes_total", "node" => self.node.clone())
            .increment(frame.len() as u64);
        Ok(())
    }

    fn segment_due(&self) -> bool {
        self.segment_bytes >= self.cfg.segment_bytes
            || self.segment_started.elapsed() >= Duration::from_millis(self.cfg.segment_age_ms)
    }

    fn io_error(&self, e: &std::io::Error) -> String {
        format!(
            "{}: {e}",
            self.node_dir
                .join(format::segment_name(self.run, self.segment))
                .display()
        )
    }

    fn sync(&mut self) -> Result<(), String> {
        if let Some(f) = self.file.as_mut() {
            f.flush().map_err(|e| format!("flush: {e}"))?;
            f.get_ref().sync_data().map_err(|e| format!("fsync: {e}"))?;
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), String> {
        self.sync()?;
        self.begin_segment()
    }

    /// Makes room under the cap for a whole new segment, then opens it.
    fn begin_segment(&mut self) -> Result<(), String> {
        self.file = None;
        self.enforce_cap()?;
        self.segment += 1;
        let path = self
            .node_dir
            .join(format::segment_name(self.run, self.segment));
        let header = format::encode_header(
            &SegmentHeader {
                node: self.node.clone(),
                node_id: self.node_id,
                run: self.run,
                segment: self.segment,
                started_unix_ms: unix_ms(),
            },
            actors::MACHINES_VERSION,
        );
        let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = BufWriter::with_capacity(256 << 10, file);
        w.write_all(&header)
            .and_then(|()| w.flush())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.segment_bytes = header.len() as u64;
        self.segment_started = Instant::now();
        self.file = Some(w);
        Ok(())
    }

    /// Deletes the oldest segments (of any run) until the others and a
    /// full new segment fit under `total_bytes_max`.
    fn enforce_cap(&self) -> Result<(), String> {
        let all = segments(&self.node_dir)?;
        let sizes: Vec<u64> = all
            .iter()
            .map(|(_, _, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .collect();
        let mut total: u64 = sizes.iter().sum();
        for ((_, _, p), size) in all.iter().zip(&sizes) {
            if total + self.cfg.segment_bytes <= self.cfg.total_bytes_max {
                break;
            }
            std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display()))?;
            total -= size;
            metrics::counter!("reelfleet_record_segments_dropped_total", "node" => self.node.clone())
                .increment(1);
        }
        Ok(())
    }

    fn stop(&mut self, why: &str) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            tracing::error!(%why, "recording stopped: a write failed; the node goes on without it");
            metrics::gauge!("reelfleet_record_stopped", "node" => self.node.clone()).set(1.0);
        }
        self.file = None;
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
