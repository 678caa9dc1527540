//! Publishers: where a finished video goes. Every publisher can look an
//! earlier upload up by the video's idempotency key, which is what lets a new
//! owner reconcile after a takeover.
//!
//! - [`directory`]: writes the video and its metadata into a folder,
//!   atomically; idempotent by key.
//! - [`youtube`]: the YouTube Data API v3 (OAuth refresh, resumable upload,
//!   quota errors, lookup by the key kept in the description).
//!
//! The live shell reaches every publisher through [`Publisher`]; the answer
//! is the machine's own `PublishOutcome`, or `None` when the outcome is
//! unknown (the machine then looks the key up before anything else).

pub mod directory;
pub mod youtube;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use actors::protocol::{LookupOutcome, PublishOutcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    pub reason: String,
    /// A definite failure that may be retried (the video was not published).
    pub retryable: bool,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for PublishError {}

/// One upload as the shell hands it to a publisher.
#[derive(Clone, Debug)]
pub struct Upload {
    /// Unique per video for ever (`<channel>/<slot>`).
    pub idempotency_key: String,
    pub video: PathBuf,
    pub title: String,
    pub description: String,
    pub metadata: serde_json::Value,
}

/// Asked right before the step that would make an upload visible (the
/// final chunk, the rename): false means this node may no longer publish
/// (its lease lapsed, its channel was fenced, the upload timed out while
/// the process was frozen), and the publisher must stop without finishing.
pub type MayFinish = Arc<dyn Fn() -> bool + Send + Sync>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Publisher: Send + Sync {
    /// One upload attempt. `None`: the outcome is unknown (a response was
    /// lost after the last byte left); the caller must look the key up.
    fn publish<'a>(
        &'a self,
        upload: &'a Upload,
        may_finish: MayFinish,
    ) -> BoxFuture<'a, Option<PublishOutcome>>;
    /// An earlier upload of `key`, if there is one.
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, LookupOutcome>;
    /// Quota units this publisher's calls cost, per bucket of its project
    /// (for metrics; the machines' own ledger is what limits uploads).
    fn quota_units_spent(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}
