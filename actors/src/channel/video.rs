//! A video as the machine tracks it: its durable record, what it is doing
//! now (which the store does not know), and the work that waits for the
//! next commit.

use topology::GpuId;

use crate::protocol::{JobId, JobSpec};
use crate::records::VideoRecord;

/// What a video is doing besides its durable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Run {
    /// Ready for its next step at `wake_ms`.
    Idle,
    /// Its next step waits for the commit in flight (or the next one).
    AwaitCommit,
    Job {
        id: JobId,
        gpu: Option<GpuId>,
        started: bool,
        deadline_ms: u64,
    },
    Publishing {
        attempt: u32,
        deadline_ms: u64,
    },
    LookingUp {
        deadline_ms: u64,
    },
    /// Its publish reservation committed, but the answer came when the
    /// lease known here was about to run out: nothing is sent until the
    /// lease is known good now (see `held_uploads`).
    UploadHeld,
}

#[derive(Clone, Debug)]
pub(super) struct Video {
    pub rec: VideoRecord,
    pub run: Run,
    pub wake_ms: u64,
    pub upload_attempt: u32,
    /// An upload's outcome is unknown: look it up before anything else.
    pub needs_lookup: bool,
    /// Loaded with a publish intent of a previous owner.
    pub taken_over_intent: bool,
    /// Asleep until the quota resets (the ledger or the API had no room):
    /// woken at once when an operator sets the project's quota.
    pub quota_wait: bool,
}

impl Video {
    /// A video as it starts here: `rec` as planned or loaded, ready now.
    pub fn new(rec: VideoRecord, now_ms: u64) -> Video {
        Video {
            rec,
            run: Run::Idle,
            wake_ms: now_ms,
            upload_attempt: 0,
            needs_lookup: false,
            taken_over_intent: false,
            quota_wait: false,
        }
    }
}

/// A step that becomes an effect once the commit carrying it succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Action {
    StartJob(JobSpec),
    Publish { slot: u64 },
    Lookup { slot: u64 },
}

/// A change to a quota ledger, resolved against the cached ledger when the
/// transaction is built (reservations must fit; refunds always do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum QuotaChange {
    ReservePublish { slot: u64 },
    ReserveLookup { slot: u64 },
    Refund { slot: u64 },
}

impl QuotaChange {
    pub fn slot(self) -> u64 {
        match self {
            QuotaChange::ReservePublish { slot }
            | QuotaChange::ReserveLookup { slot }
            | QuotaChange::Refund { slot } => slot,
        }
    }
}
