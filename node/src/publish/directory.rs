//! The directory publisher: each video becomes `<root>/<key>/` holding the
//! video file and `metadata.json` (with the idempotency key and the remote
//! id). The folder is built under a temporary name and renamed into place,
//! so a reader, a lookup or a crash never sees half a video; publishing a
//! key that is already there returns the existing id and writes nothing.

use std::path::{Path, PathBuf};

use super::PublishError;

pub struct DirectoryPublisher {
    root: PathBuf,
}

const METADATA: &str = "metadata.json";
/// One line per video made visible: `key<TAB>remote id<TAB>pid`.
pub const PUBLISH_LOG: &str = "publish.log";

fn err(reason: String) -> PublishError {
    PublishError {
        reason,
        retryable: true,
    }
}

/// A key as a folder name: letters, digits, `-`, `_` and `.` as they are,
/// everything else as `%XX`, so distinct keys never share a folder.
pub fn folder_name(key: &str) -> String {
    let mut s = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !s.is_empty()) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The remote id of a key: stable, so that a retry reports the same id.
fn remote_id(key: &str) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    format!("dir-{h:016x}")
}

impl DirectoryPublisher {
    pub fn new(root: impl Into<PathBuf>) -> Result<DirectoryPublisher, PublishError> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| err(format!("cannot create {}: {e}", root.display())))?;
        remove_leftovers(&root);
        Ok(DirectoryPublisher { root })
    }

    fn folder(&self, key: &str) -> PathBuf {
        self.root.join(folder_name(key))
    }

    /// Appends `key` to `publish.log`, one line per video made visible
    /// (an audit trail: a key twice there would be a double publish).
    fn log_publish(&self, key: &str, id: &str) {
        use std::io::Write;
        let line = format!("{key}\t{id}\t{}\n", std::process::id());
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(PUBLISH_LOG))
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }

    /// The id of an earlier upload of `key`, if there is one.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, PublishError> {
        let meta = self.folder(key).join(METADATA);
        match std::fs::read(&meta) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| err(format!("{} is not valid JSON: {e}", meta.display())))?;
                if v.get("idempotency_key").and_then(|k| k.as_str()) != Some(key) {
                    return Err(PublishError {
                        reason: format!("{} belongs to another key", meta.display()),
                        retryable: false,
                    });
                }
                Ok(v.get("remote_id")
                    .and_then(|r| r.as_str())
                    .map(str::to_string))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(format!("cannot read {}: {e}", meta.display()))),
        }
    }

    /// Publishes `video` (copied) with `metadata` under `key`; returns the
    /// remote id. Publishing the same key again returns the same id.
    pub fn publish(
        &self,
        key: &str,
        video: &Path,
        metadata: serde_json::Value,
    ) -> Result<String, PublishError> {
        if let Some(id) = self.lookup(key)? {
            return Ok(id);
        }
        let id = remote_id(key);
        let tmp = self.root.join(format!(
            ".incoming-{}-{}",
            folder_name(key),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(|e| err(format!("cannot create {}: {e}", tmp.display())))?;
        let file_name = video
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "video".into());
        std::fs::copy(video, tmp.join(&file_name))
            .map_err(|e| err(format!("cannot copy {}: {e}", video.display())))?;
        let meta = serde_json::json!({
            "idempotency_key": key,
            "remote_id": id,
            "video": file_name.to_string_lossy(),
            "metadata": metadata,
        });
        let written = std::fs::File::create(tmp.join(METADATA)).and_then(|mut f| {
            use std::io::Write;
            f.write_all(meta.to_string().as_bytes())?;
            f.sync_all()
        });
        written.map_err(|e| err(format!("cannot write metadata: {e}")))?;
        match std::fs::rename(&tmp, self.folder(key)) {
            Ok(()) => {
                self.log_publish(key, &id);
                Ok(id)
            }
            Err(_) if self.lookup(key)?.is_some() => {
                // Someone published the same key meanwhile: theirs stands.
                let _ = std::fs::remove_dir_all(&tmp);
                self.lookup(key)?
                    .ok_or_else(|| err(format!("{key} vanished while publishing")))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(err(format!(
                    "cannot move {} into place: {e}",
                    tmp.display()
                )))
            }
        }
    }
}

/// The live shell's view: blocking file work on the blocking pool. The
/// rename is the step that makes a video visible, so `may_finish` is asked
/// right before publishing.
impl super::Publisher for DirectoryPublisher {
    fn publish<'a>(
        &'a self,
        upload: &'a super::Upload,
        may_finish: super::MayFinish,
    ) -> super::BoxFuture<'a, Option<actors::protocol::PublishOutcome>> {
        use actors::protocol::PublishOutcome;
        Box::pin(async move {
            let root = self.root.clone();
            let u = upload.clone();
            let r = tokio::task::spawn_blocking(move || {
                let p = DirectoryPublisher { root };
                if let Some(id) = p.lookup(&u.idempotency_key)? {
                    return Ok(Some(id));
                }
                if !may_finish() {
                    return Ok(None);
                }
                let meta = serde_json::json!({
                    "title": u.title,
                    "description": u.description,
                    "metadata": u.metadata,
                });
                p.publish(&u.idempotency_key, &u.video, meta).map(Some)
            })
            .await;
            match r {
                Ok(Ok(Some(remote_id))) => Some(PublishOutcome::Published { remote_id }),
                // Not allowed to finish: nothing was made visible.
                Ok(Ok(None)) => Some(PublishOutcome::Transient),
                Ok(Err(e)) if e.retryable => Some(PublishOutcome::Transient),
                Ok(Err(_)) | Err(_) => None,
            }
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> super::BoxFuture<'a, actors::protocol::LookupOutcome> {
        use actors::protocol::LookupOutcome;
        Box::pin(async move {
            let root = self.root.clone();
            let key = key.to_string();
            let r =
                tokio::task::spawn_blocking(move || DirectoryPublisher { root }.lookup(&key)).await;
            match r {
                Ok(Ok(Some(remote_id))) => LookupOutcome::Found { remote_id },
                Ok(Ok(None)) => LookupOutcome::NotFound,
                _ => LookupOutcome::Failed,
            }
        })
    }
}

/// Removes `.incoming-<key>-<pid>` folders whose process is gone (a
/// publisher killed mid-copy): nothing in them was made visible, and
/// nothing else would ever remove them. Another live process's are kept.
fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".incoming-") else {
            continue;
        };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid > 0 && !process_alive(pid) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::info!(
                    folder = %e.path().display(),
                    pid,
                    "removed an unfinished publish of a process that is gone"
                ),
                Err(err) => tracing::warn!(
                    folder = %e.path().display(),
                    error = %err,
                    "cannot remove an unfinished publish"
                ),
            }
        }
    }
}

/// Whether process `pid` exists (signal 0 probes without sending).
fn process_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
