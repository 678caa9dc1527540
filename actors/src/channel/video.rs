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

/// The videos whose records changed since the last commit, each once, in
/// slot order (the order their writes take). A sorted `Vec`, not a
/// `BTreeSet`: it holds a slot or two between commits, and the B-tree
/// allocated a node for each commit and was walked and freed to hand its
/// slots over (0.8 % of a steady capacity-10m hour's instructions).
#[derive(Clone, Debug, Default)]
pub(super) struct SlotSet(Vec<u64>);

impl SlotSet {
    pub fn insert(&mut self, slot: u64) {
        if let Err(at) = self.0.binary_search(&slot) {
            self.0.insert(at, slot);
        }
        debug_assert!(self.0.windows(2).all(|w| w[0] < w[1]));
    }

    pub fn contains(&self, slot: &u64) -> bool {
        self.0.binary_search(slot).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend(&mut self, slots: impl IntoIterator<Item = u64>) {
        for slot in slots {
            self.insert(slot);
        }
    }

    /// Every slot, in order, leaving the set empty.
    pub fn take(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.0)
    }
}
