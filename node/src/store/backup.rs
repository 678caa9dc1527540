//! Backup and restore: a consistent snapshot streamed to a file, checked
//! whole before anything is restored from it.
//!
//! Format (all integers little endian):
//!
//! ```text
//! header   "RFBACKUP" (8 bytes), format u32 = 1, store version u64
//! record   0x01, key length u32, key, value length u32, value   (repeated,
//!          in key order)
//! trailer  0x00, record count u64, checksum u64
//! ```
//!
//! The checksum is FNV-1a 64 of every byte before it. A record breaking the
//! store's limits, keys out of order, a short file, trailing bytes, a count
//! or checksum that does not match: each is a clear error, found by
//! [`verify`] before [`restore`] writes a single key. Backups stream in
//! pages, so memory stays flat whatever the store's size.

use std::io::{BufReader, BufWriter, Read, Write as _};

use actors::store::{Txn, Write, KEY_BYTES_MAX, VALUE_BYTES_MAX};

use super::Store;

pub const MAGIC: &[u8; 8] = b"RFBACKUP";
pub const FORMAT: u32 = 1;
const PAGE_ENTRIES: usize = 1_000;
/// Restore batches stay well inside the 10 MB transaction limit.
const RESTORE_BATCH_BYTES: usize = 4_000_000;
const RESTORE_BATCH_ENTRIES: usize = 1_000;

#[derive(Debug)]
pub struct BackupError(pub String);

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackupError {}

fn err(s: impl Into<String>) -> BackupError {
    BackupError(s.into())
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xCBF2_9CE4_8422_2325)
    }
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

/// Writes everything in `store` at one version to `out`. Returns the number
/// of records and the store version they were read at.
pub async fn backup<S: Store>(
    store: &S,
    out: impl std::io::Write,
) -> Result<(u64, u64), BackupError> {
    let mut snap = store
        .snapshot()
        .await
        .map_err(|e| err(format!("cannot take a snapshot: {e}")))?;
    let mut w = BufWriter::new(out);
    let mut sum = Fnv::new();
    let mut put = |w: &mut BufWriter<_>, bytes: &[u8]| -> Result<(), BackupError> {
        sum.feed(bytes);
        w.write_all(bytes)
            .map_err(|e| err(format!("cannot write the backup: {e}")))
    };
    let version = snap.version();
    put(&mut w, MAGIC)?;
    put(&mut w, &FORMAT.to_le_bytes())?;
    put(&mut w, &version.to_le_bytes())?;
    let mut count = 0u64;
    let mut start: Vec<u8> = Vec::new();
    loop {
        let page = super::next_page(snap.as_mut(), &mut start, PAGE_ENTRIES)
            .await
            .map_err(|e| err(format!("cannot read the snapshot: {e}")))?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            put(&mut w, &[1])?;
            put(&mut w, &(e.key.len() as u32).to_le_bytes())?;
            put(&mut w, &e.key)?;
            put(&mut w, &(e.value.len() as u32).to_le_bytes())?;
            put(&mut w, &e.value)?;
            count += 1;
        }
        if page.len() < PAGE_ENTRIES {
            break;
        }
    }
    put(&mut w, &[0])?;
    put(&mut w, &count.to_le_bytes())?;
    let checksum = sum.0;
    w.write_all(&checksum.to_le_bytes())
        .and_then(|_| w.flush())
        .map_err(|e| err(format!("cannot write the backup: {e}")))?;
    Ok((count, version))
}

/// One key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Reads a backup record by record, checking as it goes; `finish` checks
/// the trailer, the count and the checksum.
pub struct RecordReader<R: Read> {
    r: BufReader<R>,
    sum: Fnv,
    offset: u64,
    count: u64,
    previous: Option<Vec<u8>>,
    done: bool,
    /// The store version the backup was taken at.
    pub version: u64,
}

impl<R: Read> RecordReader<R> {
    pub fn new(input: R) -> Result<RecordReader<R>, BackupError> {
        let mut rr = RecordReader {
            r: BufReader::new(input),
            sum: Fnv::new(),
            offset: 0,
            count: 0,
            previous: None,
            done: false,
            version: 0,
        };
        if rr.take(8, "header")? != MAGIC {
            return Err(err(
                "not a reelfleet backup: the file does not start with RFBACKUP",
            ));
        }
        let format = rr.u32("format")?;
        if format != FORMAT {
            return Err(err(format!(
                "backup format {format} is not supported (this build reads {FORMAT})"
            )));
        }
        rr.version = rr.u64("store version")?;
        Ok(rr)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<Vec<u8>, BackupError> {
        let mut buf = vec![0u8; n];
        self.r.read_exact(&mut buf).map_err(|_| {
            err(format!(
                "backup is truncated: {what} missing at byte {}",
                self.offset
            ))
        })?;
        self.offset += n as u64;
        self.sum.feed(&buf);
        Ok(buf)
    }
    fn u32(&mut self, what: &str) -> Result<u32, BackupError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, BackupError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    /// The next record, or `None` at the trailer.
    pub fn next_record(&mut self) -> Result<Option<Record>, BackupError> {
        if self.done {
            return Ok(None);
        }
        let count = self.count;
        match self.take(1, "record tag")?[0] {
            1 => {
                let klen = self.u32("key length")? as usize;
                if klen > KEY_BYTES_MAX {
                    return Err(err(format!("record {count}: key of {klen} bytes is over the {KEY_BYTES_MAX}-byte limit")));
                }
                let key = self.take(klen, "key")?;
                let vlen = self.u32("value length")? as usize;
                if vlen > VALUE_BYTES_MAX {
                    return Err(err(format!(
                        "record {count}: value of {vlen} bytes is over the {VALUE_BYTES_MAX}-byte limit"
                    )));
                }
                let value = self.take(vlen, "value")?;
                if self.previous.as_ref().is_some_and(|p| *p >= key) {
                    return Err(err(format!(
                        "record {count}: keys out of order (corrupt backup)"
                    )));
                }
                self.previous = Some(key.clone());
                self.count += 1;
                Ok(Some((key, value)))
            }
            0 => {
                self.done = true;
                Ok(None)
            }
            other => Err(err(format!(
                "record {count}: unknown tag {other} (corrupt backup)"
            ))),
        }
    }

    /// Checks the trailer after the last record; the record count.
    pub fn finish(mut self) -> Result<u64, BackupError> {
        while self.next_record()?.is_some() {}
        let declared = self.u64("record count")?;
        if declared != self.count {
            return Err(err(format!(
                "backup says {declared} records but holds {}",
                self.count
            )));
        }
        let expected = self.sum.0;
        let mut tail = [0u8; 8];
        self.r
            .read_exact(&mut tail)
            .map_err(|_| err("backup is truncated: checksum missing"))?;
        if u64::from_le_bytes(tail) != expected {
            return Err(err("backup checksum does not match: the file is corrupt"));
        }
        let mut extra = [0u8; 1];
        if self
            .r
            .read(&mut extra)
            .map_err(|e| err(format!("cannot read the backup: {e}")))?
            != 0
        {
            return Err(err(
                "backup has bytes after its checksum: the file is corrupt",
            ));
        }
        Ok(self.count)
    }
}

/// Checks a backup file completely; returns its record count and the store
/// version it was taken at.
pub fn verify(input: impl Read) -> Result<(u64, u64), BackupError> {
    let reader = RecordReader::new(input)?;
    let version = reader.version;
    Ok((reader.finish()?, version))
}

/// Loads a backup into `store`. `open` is called twice: once to verify the
/// whole file, once to load it, so nothing is written from a bad file. A
/// non-empty store is refused unless `force`.
pub async fn restore<S: Store, R: Read>(
    store: &S,
    mut open: impl FnMut() -> std::io::Result<R>,
    force: bool,
) -> Result<u64, BackupError> {
    let input = open().map_err(|e| err(format!("cannot open the backup: {e}")))?;
    let (count, _) = verify(input)?;
    let existing = store
        .range(b"", b"", 1)
        .await
        .map_err(|e| err(format!("cannot read the target store: {e}")))?;
    if !existing.is_empty() && !force {
        return Err(err(
            "the target store is not empty; restore with --force to write over it",
        ));
    }
    let input = open().map_err(|e| err(format!("cannot open the backup: {e}")))?;
    let mut reader = RecordReader::new(input)?;
    let mut batch: Vec<Write> = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        let next = reader.next_record()?;
        let end = next.is_none();
        if let Some((k, v)) = next {
            batch_bytes += k.len() + v.len();
            batch.push(Write::Put(actors::store::Key::from_vec(k), v));
        }
        let full = batch.len() >= RESTORE_BATCH_ENTRIES || batch_bytes >= RESTORE_BATCH_BYTES;
        if (full || end) && !batch.is_empty() {
            store
                .commit(&Txn {
                    checks: vec![],
                    writes: std::mem::take(&mut batch),
                })
                .await
                .map_err(|e| err(format!("restore failed part-way (rerun with --force): {e}")))?;
            batch_bytes = 0;
        }
        if end {
            break;
        }
    }
    reader.finish()?;
    Ok(count)
}
