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
use std::sync::{Arc, Condvar, Mutex};
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

/// How often the writer takes what the shells queued. Polling, not a
/// wake-up per record: measured, a channel send that woke the writer for
/// each record cost the node a fifth of its dispatch throughput in futex
/// wake-ups and context switches (BENCHMARKS, "Flight recorder").
const POLL: Duration = Duration::from_millis(10);
/// Bytes queued for the writer beyond which the shells wait for it: the
/// recording is complete or stopped, never silently thinned.
const QUEUE_BYTES_MAX: usize = 64 << 20;

/// Framed records waiting for the writer.
#[derive(Default)]
pub struct Queue {
    buf: Mutex<Vec<u8>>,
    room: Condvar,
    finishing: AtomicBool,
}

impl Queue {
    /// Appends one record, framed. Waits while the queue is full, unless
    /// the recording stopped.
    pub fn push(&self, body: &[u8], stopped: &AtomicBool) {
        let Ok(mut buf) = self.buf.lock() else {
            return;
        };
        while buf.len() > QUEUE_BYTES_MAX && !stopped.load(Ordering::Relaxed) {
            buf = match self.room.wait_timeout(buf, POLL) {
                Ok((b, _)) => b,
                Err(_) => return,
            };
        }
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        buf.extend_from_slice(body);
    }

    /// Swaps what is queued into `chunk`; whether the recorder is finishing
    /// (everything it pushed is in this chunk or an earlier one).
    fn take(&self, chunk: &mut Vec<u8>) -> bool {
        // Read first: a push before `finish` is then in this swap.
        let finishing = self.finishing.load(Ordering::Acquire);
        chunk.clear();
        if let Ok(mut buf) = self.buf.lock() {
            std::mem::swap(&mut *buf, chunk);
        }
        self.room.notify_all();
        finishing
    }

    pub fn finish(&self) {
        self.finishing.store(true, Ordering::Release);
    }
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

    pub fn run(mut self, queue: Arc<Queue>) {
        let interval = Duration::from_millis(self.cfg.fsync_interval_ms);
        if let Err(e) = self.begin_segment() {
            self.stop(&e);
        }
        let mut chunk = Vec::new();
        loop {
            std::thread::sleep(POLL);
            let finishing = queue.take(&mut chunk);
            if let Err(e) = self.take(&chunk, interval) {
                self.stop(&e);
            }
            if finishing {
                break;
            }
        }
        if let Err(e) = self.sync() {
            self.stop(&e);
        }
    }

    /// Writes a chunk of whole frames, syncing and rotating when due.
    fn take(&mut self, chunk: &[u8], interval: Duration) -> Result<(), String> {
        if self.stopped.load(Ordering::Relaxed) {
            // Dropped, so that the shells never wait on a dead recording.
            return Ok(());
        }
        let mut at = 0;
        while at + 8 <= chunk.len() {
            let len = u32::from_le_bytes([chunk[at], chunk[at + 1], chunk[at + 2], chunk[at + 3]]);
            let end = at + 8 + len as usize;
            self.write(&chunk[at..end])?;
            at = end;
            if self.segment_due() {
                self.rotate()?;
            }
        }
        if !chunk.is_empty() {
            metrics::counter!("reelfleet_record_bytes_total", "node" => self.node.clone())
                .increment(chunk.len() as u64);
        }
        if self.dirty && self.last_sync.elapsed() >= interval {
            self.sync()?;
        }
        if self.segment_due() {
            self.rotate()?;
        }
        Ok(())
    }

    fn write(&mut self, frame: &[u8]) -> Result<(), String> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        f.write_all(frame).map_err(|e| self.io_error(&e))?;
        self.segment_bytes += frame.len() as u64;
        self.dirty = true;
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
