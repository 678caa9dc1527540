//! Spend, budgets and quota as the store's ledgers hold them, sampled into
//! metrics: each node samples the channels it owns (so a channel's series
//! comes from its owner) and the quota of their projects. Read-only; the
//! machines' own reads decide, never these.
//!
//! Per-channel series cost memory in the exporter (about 3.6 KiB per
//! channel for the three of a channel without a budget: 365 MB of a
//! 100,000-channel node's 1.31 GB, measured) and cardinality in
//! Prometheus. So a node exports them
//! only while it owns at most `metrics_channels_max` channels (and quota
//! series for at most that many projects); the node's totals
//! (`reelfleet_node_spend_*`) are exported always.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actors::records::{channel_key, quota_key, ChannelRecord, QuotaRecord};
use actors::store::Key;
use topology::{Budget, DAY_MS};

use super::ports::NodePorts;
use crate::store::Store;

/// How often the ledgers are sampled.
pub const LEDGER_SAMPLE_MS: u64 = 15_000;
/// Most keys read in one call.
const KEYS_PER_READ: usize = 64;

const MICROS_PER_USD: f64 = 1_000_000.0;

/// Samples forever (the task is aborted with the node).
pub async fn ledger_loop(ctx: Arc<NodePorts>, channels_max: usize) {
    let mut capped = false;
    loop {
        let owned = ctx.router.locals().channels.len();
        if (owned > channels_max) != capped {
            capped = owned > channels_max;
            tracing::info!(
                node = %ctx.name,
                owned,
                metrics_channels_max = channels_max,
                "{}",
                if capped {
                    "per-channel ledger metrics off: more channels owned than metrics_channels_max (node totals go on)"
                } else {
                    "per-channel ledger metrics on again"
                }
            );
        }
        sample(&ctx, channels_max).await;
        tokio::time::sleep(Duration::from_millis(LEDGER_SAMPLE_MS)).await;
    }
}

async fn sample(ctx: &NodePorts, channels_max: usize) {
    let now_ms = ctx.clock.now_ms();
    let owned: Vec<topology::ChannelId> = ctx.router.locals().channels.keys().copied().collect();
    let per_channel = owned.len() <= channels_max;
    let m = &ctx.metrics;
    let (mut node_today, mut node_total) = (0u64, 0u64);
    for chunk in owned.chunks(KEYS_PER_READ) {
        let keys: Vec<Key> = chunk.iter().map(|c| channel_key(*c)).collect();
        let Ok(got) = ctx.store.store.get(&keys).await else {
            return; // the store is away; /ready says so
        };
        for (c, e) in chunk.iter().zip(got) {
            let ch = ctx.topo.channel(*c);
            let l = |extra: Option<(&'static str, String)>| {
                let mut v = vec![("channel", ch.name.clone())];
                v.extend(extra);
                v
            };
            let rec = e.and_then(|e| ChannelRecord::decode(&e.value).ok());
            let (today, total) = rec
                .map(|r| {
                    let today = if r.spend_day == now_ms / DAY_MS {
                        r.spent_day_micros
                    } else {
                        0
                    };
                    (today, r.spent_total_micros)
                })
                .unwrap_or((0, 0));
            node_today = node_today.saturating_add(today);
            node_total = node_total.saturating_add(total);
            if !per_channel {
                continue;
            }
            m.level("reelfleet_channel_spend_today_usd", &l(None), usd(today));
            m.level("reelfleet_channel_spend_usd", &l(None), usd(total));
            m.level(
                "reelfleet_channel_target_videos_per_day",
                &l(None),
                f64::from(ch.videos_per_day),
            );
            for (limit, micros) in budget_limits(&ch.budget) {
                m.level(
                    "reelfleet_channel_budget_daily_usd",
                    &l(Some(("limit", limit.to_string()))),
                    usd(micros),
                );
            }
        }
    }
    m.level("reelfleet_node_spend_today_usd", &[], usd(node_today));
    m.level("reelfleet_node_spend_usd", &[], usd(node_total));
    sample_quota(ctx, &owned, channels_max, now_ms).await;
}

/// The quota ledgers of the owned channels' projects (none above
/// `projects_max` of them).
async fn sample_quota(
    ctx: &NodePorts,
    owned: &[topology::ChannelId],
    projects_max: usize,
    now_ms: u64,
) {
    let m = &ctx.metrics;
    let projects: BTreeSet<topology::ProjectId> =
        owned.iter().map(|c| ctx.topo.channel(*c).project).collect();
    if projects.len() > projects_max {
        return;
    }
    for p in projects {
        let project = &ctx.topo.projects[p.index()];
        let key = [quota_key(p, project.quota_day(now_ms))];
        let Ok(got) = ctx.store.store.get(&key).await else {
            return;
        };
        let used = got
            .into_iter()
            .next()
            .flatten()
            .and_then(|e| QuotaRecord::decode(&e.value).ok())
            .map(|q| q.used)
            .unwrap_or_default();
        for (i, b) in project.buckets.iter().enumerate() {
            let l = [
                ("project", project.name.clone()),
                ("bucket", b.name.clone()),
            ];
            let u = used.get(i).copied().unwrap_or(0);
            m.level("reelfleet_quota_used_units", &l, u as f64);
            m.level("reelfleet_quota_limit_units", &l, b.units_per_day as f64);
        }
    }
}

/// The daily limits a budget sets (an unlimited one sets none).
fn budget_limits(b: &Budget) -> Vec<(&'static str, u64)> {
    let mut v = Vec::new();
    if b.daily_soft_micros != Budget::UNLIMITED.daily_soft_micros {
        v.push(("soft", b.daily_soft_micros));
    }
    if b.daily_hard_micros != Budget::UNLIMITED.daily_hard_micros {
        v.push(("hard", b.daily_hard_micros));
    }
    v
}

fn usd(micros: u64) -> f64 {
    micros as f64 / MICROS_PER_USD
}
