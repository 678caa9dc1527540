//! The nodes' own reports (`x/node/<name>`, see `live/report.rs`) as the
//! admin RPC reads them: GPUs and jobs of every node through any node, and
//! the wait that tells an operator when the kill switch holds everywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use actors::records::{MembersRecord, MEMBERS_KEY};
use actors::store::prefix_end;
use serde_json::{json, Value};

use crate::live::ports::NodePorts;
use crate::live::report::{NodeReport, REPORT_PREFIX};
use crate::store::Store;

/// How often `wait_applied` looks at the reports again.
const POLL_MS: u64 = 50;

/// Every node's last report, by node name (unreadable ones skipped).
pub async fn read_all(node: &NodePorts) -> Result<BTreeMap<String, NodeReport>, String> {
    let es = node
        .store
        .store
        .range(
            REPORT_PREFIX,
            &prefix_end(REPORT_PREFIX),
            node.topo.nodes.len() + 1,
        )
        .await
        .map_err(|e| format!("the store: {e}"))?;
    Ok(es
        .into_iter()
        .filter_map(|e| serde_json::from_slice::<NodeReport>(&e.value).ok())
        .filter(|r| node.topo.nodes.iter().any(|n| n.name == r.node))
        .map(|r| (r.node.clone(), r))
        .collect())
}

async fn members(node: &NodePorts) -> Result<MembersRecord, String> {
    let got = node
        .store
        .store
        .get(&[actors::store::key(MEMBERS_KEY)])
        .await
        .map_err(|e| format!("the store: {e}"))?;
    Ok(got
        .into_iter()
        .next()
        .flatten()
        .and_then(|e| MembersRecord::decode(&e.value).ok())
        .unwrap_or_default())
}

/// Waits until every member node reports that the fleet control record at
/// `version` (or later) reached all its channels, at most three leases
/// plus 5 s, and says per node when that was seen, in milliseconds after
/// the change committed (as this node saw it: an upper bound, to within
/// one poll). A member that never confirms is named, with its report's
/// age: it is down or cut off, and its lease will lapse.
pub async fn wait_applied(node: &NodePorts, version: u64) -> Result<Value, String> {
    let t0 = node.clock.now_ms();
    let deadline_ms = t0 + node.timing.lease_ms * 3 + 5_000;
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let now_ms = node.clock.now_ms();
        let m = members(node).await?;
        let reports = read_all(node).await?;
        let mut waiting = Vec::new();
        for n in &m.nodes {
            let name = &node.topo.node(*n).name;
            if held.contains_key(name) {
                continue;
            }
            let report = reports.get(name);
            if report
                .and_then(|r| r.fleet_control)
                .is_some_and(|c| c.version >= version)
            {
                held.insert(name.clone(), now_ms.saturating_sub(t0));
            } else {
                waiting.push((name.clone(), report.map(|r| now_ms.saturating_sub(r.at_ms))));
            }
        }
        if waiting.is_empty() || now_ms >= deadline_ms {
            let all_ms = held.values().copied().max().unwrap_or(0);
            return Ok(json!({
                "held_on_every_node": waiting.is_empty(),
                "held_after_ms": if waiting.is_empty() { Some(all_ms) } else { None },
                "held": held.iter().map(|(n, ms)| json!({"node": n, "after_ms": ms})).collect::<Vec<_>>(),
                "not_confirmed": waiting.iter().map(|(n, age)| json!({"node": n, "report_age_ms": age})).collect::<Vec<_>>(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}
