//! The end-of-run audit of the live tests: the product's audit
//! (`reelfleet::audit`, which `reelfleet chaos` runs too), failing the test
//! on any violation with its evidence.

#![allow(dead_code)]

use std::collections::BTreeMap;

use actors::records::VideoRecord;
use reelfleet::audit::AuditInput;
use reelfleet::store::Store;
use topology::{ChannelId, Topology};

pub struct Audit {
    pub videos: usize,
    pub published: usize,
    pub quota_units: u64,
}

/// Every video record of the store, with its channel.
pub fn videos<S: Store>(rt: &tokio::runtime::Runtime, store: &S) -> Vec<(ChannelId, VideoRecord)> {
    rt.block_on(reelfleet::audit::videos(store))
        .expect("read videos")
}

/// `made`: every video the publisher made visible, by idempotency key.
/// `in_flight_ok`: a video the publisher made may still be active in the
/// store (the run ended with SIGKILL, before the owner recorded it).
pub fn audit<S: Store>(
    rt: &tokio::runtime::Runtime,
    store: &S,
    topo: &Topology,
    made: &BTreeMap<String, Vec<String>>,
    in_flight_ok: bool,
) -> Audit {
    let input = AuditInput {
        topo,
        made,
        in_flight_ok,
        must_have_ended: None,
    };
    let r = rt
        .block_on(reelfleet::audit::audit(store, &input))
        .expect("the store could be read");
    assert!(r.violations.is_empty(), "audit: {:#?}", r.violations);
    assert!(!made.is_empty(), "nothing was published at all");
    Audit {
        videos: r.videos,
        published: made.len(),
        quota_units: r.quota_units,
    }
}
