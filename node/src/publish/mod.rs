//! Publishers: where a finished video goes. Every publisher is idempotent
//! by the video's idempotency key and can look an earlier upload up by it,
//! which is what lets a new owner reconcile after a takeover.
//!
//! - [`directory`]: writes the video and its metadata into a folder,
//!   atomically.

pub mod directory;

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
