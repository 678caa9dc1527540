//! Operator requests addressed to one node, through the store: any node's
//! admin RPC writes them (with their audit record, in one transaction) and
//! the node they name acts on them. Today that is `drain`: the node hands
//! every channel to the others and stops, and stays out (it refuses to
//! start) until `undrain` takes the request away.

use std::sync::Arc;
use std::time::Duration;

use actors::membership::MembershipInput;
use actors::node::Local;
use serde::{Deserialize, Serialize};

use super::ports::NodePorts;
use crate::store::any::AnyStore;
use crate::store::Store;

/// Where drain requests live: `x/req/drain/<node>`.
pub const DRAIN_PREFIX: &[u8] = b"x/req/drain/";
/// How often a node looks for a request addressed to it.
pub const REQUEST_POLL_MS: u64 = 1_000;

pub fn drain_key(node: &str) -> actors::store::Key {
    let mut k = actors::store::key(DRAIN_PREFIX);
    k.extend_from_slice(node.as_bytes());
    k
}

/// Who asked for a drain, and when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrainRequest {
    pub by: String,
    pub at_ms: u64,
}

/// The drain request for `node`, if there is one.
pub async fn drain_requested(
    store: &AnyStore,
    node: &str,
) -> Result<Option<DrainRequest>, actors::store::StoreError> {
    let got = store.get(&[drain_key(node)]).await?;
    Ok(got.into_iter().next().flatten().map(|e| {
        serde_json::from_slice(&e.value).unwrap_or(DrainRequest {
            by: "?".into(),
            at_ms: 0,
        })
    }))
}

/// Looks for a drain request every `REQUEST_POLL_MS`; on one, starts the
/// drain (once: the membership machine ends it by asking the node to stop).
pub async fn request_loop(node: Arc<NodePorts>) {
    loop {
        tokio::time::sleep(Duration::from_millis(REQUEST_POLL_MS)).await;
        match drain_requested(&node.store.store, &node.name).await {
            Ok(Some(r)) => {
                tracing::info!(node = %node.name, by = %r.by, "draining (asked through the admin RPC)");
                node.router
                    .deliver(Local::Membership(MembershipInput::Drain));
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(node = %node.name, error = %e, "requests not read"),
        }
    }
}
