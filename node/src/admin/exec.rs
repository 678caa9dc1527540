//! What each admin command does, on the store any node reaches: reads for
//! the cluster's state, and control writes that the machines pick up (the
//! membership machine watches the control generation and tells the
//! channels). Every change is written with its audit record in one
//! transaction: no change without its record, no record without its change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use actors::records::{
    budget_key, control_key, decode_budget, encode_budget, owner_key, quota_limits_key,
    ControlRecord, Key, MaintenanceRecord, MembersRecord, OwnerRecord, QuotaLimitsRecord,
    CONTROL_ALL_KEY, CONTROL_GEN_KEY, MAINTENANCE_KEY, MAINTENANCE_MS_MAX, MEMBERS_KEY,
};
use actors::store::{prefix_end, Check, StoreError, Txn, Write};
use serde_json::{json, Value};
use topology::{ChannelId, NodeId};

use super::proto::{Command, Target};
use super::server::Caller;
use crate::live::ports::NodePorts;
use crate::store::Store;

/// Where audit records live: `x/audit/<ms><node><seq>` (big-endian, so a
/// range reads them in time order).
pub const AUDIT_PREFIX: &[u8] = b"x/audit/";
/// Most audit records one `audit` answer carries.
const AUDIT_LIMIT: usize = 1_000;
/// Conflicts on the control generation retried before giving up.
const CONTROL_RETRIES: usize = 5;

static AUDIT_SEQ: AtomicU32 = AtomicU32::new(0);

fn audit_key(now_ms: u64, node: u32) -> actors::store::Key {
    let mut k = actors::store::key(AUDIT_PREFIX);
    k.extend_from_slice(&now_ms.to_be_bytes());
    k.extend_from_slice(&node.to_be_bytes());
    k.extend_from_slice(&AUDIT_SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    k
}

fn failed(e: StoreError) -> String {
    format!("the store: {e}")
}

/// Runs `cmd` for `caller` (already allowed).
pub async fn run(node: &NodePorts, caller: &Caller, cmd: &Command) -> Result<Value, String> {
    match cmd {
        Command::Status => status(node).await,
        Command::Nodes => Ok(json!(nodes(node).await?)),
        Command::Channels { region } => channels(node, region.as_deref()).await,
        Command::Regions => regions(node).await,
        Command::Channel { name } => channel(node, name).await,
        Command::Audit { since_ms } => audit(node, since_ms.unwrap_or(0)).await,
        Command::Gpus => gpus(node).await,
        Command::Jobs => jobs(node).await,
        _ => change(node, caller, cmd).await,
    }
}

/// The commands that change something (each with its audit record).
async fn change(node: &NodePorts, caller: &Caller, cmd: &Command) -> Result<Value, String> {
    match cmd {
        Command::Kill { channel } => kill(node, caller, cmd, channel).await,
        Command::Drain { node: name } | Command::Undrain { node: name } => {
            drain(node, caller, cmd, name).await
        }
        Command::Exclude { node: name } | Command::Include { node: name } => {
            exclude(node, caller, cmd, name).await
        }
        Command::Budget { .. } => budget(node, caller, cmd).await,
        Command::Quota {
            project,
            bucket,
            units_per_day,
        } => quota(node, caller, cmd, project, bucket, *units_per_day).await,
        Command::Pause { target } | Command::Resume { target } => {
            let paused = matches!(cmd, Command::Pause { .. });
            let chans = resolve(node, target)?;
            let record = ControlRecord {
                paused,
                killed: false,
            };
            let writes = chans
                .iter()
                .map(|c| Write::Put(control_key(*c), record.encode()))
                .collect();
            control_change(node, caller, cmd, writes).await?;
            let names: Vec<&str> = chans
                .iter()
                .map(|c| node.topo.channel(*c).name.as_str())
                .collect();
            Ok(json!({ if paused { "paused" } else { "resumed" }: names }))
        }
        Command::Killswitch { on, reason } => {
            if reason.trim().is_empty() {
                return Err("killswitch needs --reason TEXT (it goes to the audit log)".into());
            }
            let record = ControlRecord {
                paused: false,
                killed: *on,
            };
            let writes = vec![Write::Put(
                actors::store::key(CONTROL_ALL_KEY),
                record.encode(),
            )];
            let version = control_change(node, caller, cmd, writes).await?;
            let held = super::reports::wait_applied(node, version).await?;
            Ok(json!({
                "killswitch": if *on { "on" } else { "off" },
                "reason": reason,
                "nodes": held,
            }))
        }
        Command::Maintenance { .. } | Command::MaintenanceOff => {
            maintenance_change(node, caller, cmd).await
        }
        other => Err(format!(
            "{} is not served by this version of the admin RPC yet",
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.get("cmd").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| "this command".into())
        )),
    }
}

/// `kill CHANNEL`: paused and killed.
async fn kill(
    node: &NodePorts,
    caller: &Caller,
    cmd: &Command,
    channel: &str,
) -> Result<Value, String> {
    let chans = resolve(node, &Target::Channel(channel.to_string()))?;
    // Paused and killed: nothing new starts, running jobs are
    // cancelled and its videos in progress fail as killed.
    let record = ControlRecord {
        paused: true,
        killed: true,
    };
    let writes = chans
        .iter()
        .map(|c| Write::Put(control_key(*c), record.encode()))
        .collect();
    control_change(node, caller, cmd, writes).await?;
    Ok(json!({ "killed": channel }))
}

/// `maintenance NODE|ZONE SECONDS` and `maintenance off`: the window
/// record, read by every node with the control records.
async fn maintenance_change(
    node: &NodePorts,
    caller: &Caller,
    cmd: &Command,
) -> Result<Value, String> {
    match cmd {
        Command::Maintenance { target, seconds } => {
            let nodes = maintenance_nodes(node, target)?;
            if *seconds == 0 || seconds.saturating_mul(1000) > MAINTENANCE_MS_MAX {
                return Err(format!(
                    "maintenance of {seconds} s: between 1 and {} s",
                    MAINTENANCE_MS_MAX / 1000
                ));
            }
            let record = MaintenanceRecord {
                nodes: nodes.clone(),
                duration_ms: seconds * 1000,
            };
            let writes = vec![Write::Put(
                actors::store::key(MAINTENANCE_KEY),
                record.encode(),
            )];
            control_change(node, caller, cmd, writes).await?;
            let names: Vec<&str> = nodes
                .iter()
                .map(|n| node.topo.node(*n).name.as_str())
                .collect();
            Ok(json!({
                "maintenance": names,
                "seconds": seconds,
                "note": "these nodes may stop and restart without their channels moving until the window ends (counted by each node from when it reads it, within a second or two); one still down then fails over as usual. It replaces any window set before.",
            }))
        }
        Command::MaintenanceOff => {
            let writes = vec![Write::Delete(actors::store::key(MAINTENANCE_KEY))];
            control_change(node, caller, cmd, writes).await?;
            Ok(json!({
                "maintenance": "off",
                "note": "a node of the window that is down now fails over as usual",
            }))
        }
        _ => Err("not a maintenance command".into()),
    }
}

/// `drain NODE` / `undrain NODE`: the request the named node acts on.
async fn drain(
    node: &NodePorts,
    caller: &Caller,
    cmd: &Command,
    name: &str,
) -> Result<Value, String> {
    if !node.topo.nodes.iter().any(|n| n.name == name) {
        return Err(format!("no node {name:?}"));
    }
    let key = crate::live::requests::drain_key(name);
    let drain = matches!(cmd, Command::Drain { .. });
    let write = if drain {
        let r = crate::live::requests::DrainRequest {
            by: caller.name.clone(),
            at_ms: node.clock.now_ms(),
        };
        Write::Put(key, serde_json::to_vec(&r).map_err(|e| e.to_string())?)
    } else {
        Write::Delete(key)
    };
    control_change(node, caller, cmd, vec![write]).await?;
    Ok(if drain {
        json!({
            "draining": name,
            "note": "the node hands its channels to the others within a second or two and stops; it stays out until undrain",
        })
    } else {
        json!({
            "undrained": name,
            "note": "the node may start again (a drain it already began still ends with it stopped)",
        })
    })
}

/// Dollars from the console as micros: finite, not negative, at most a
/// billion dollars.
fn usd_micros(what: &str, usd: f64) -> Result<u64, String> {
    if !usd.is_finite() || !(0.0..=1e9).contains(&usd) {
        return Err(format!("{what} = {usd}: a number of dollars from 0 to 1e9"));
    }
    Ok((usd * 1e6).round() as u64)
}

/// `budget CHANNEL --daily-hard USD [...]`: the channel's budget from now
/// on, in place of the config's. Every write of the channel checks this
/// record's version, so nothing charged under the old budget commits
/// after it.
async fn budget(node: &NodePorts, caller: &Caller, cmd: &Command) -> Result<Value, String> {
    let Command::Budget {
        channel,
        daily_hard_usd,
        daily_soft_usd,
        per_video_hard_usd,
        per_video_soft_usd,
    } = cmd
    else {
        return Err("not a budget command".into());
    };
    let ch = resolve(node, &Target::Channel(channel.clone()))?[0];
    let mut b = read_record(node, budget_key(ch), decode_budget)
        .await?
        .unwrap_or(node.topo.channel(ch).budget);
    b.daily_hard_micros = usd_micros("daily-hard", *daily_hard_usd)?;
    b.daily_soft_micros = match daily_soft_usd {
        Some(s) => usd_micros("daily-soft", *s)?,
        None => b.daily_soft_micros.min(b.daily_hard_micros),
    };
    if let Some(h) = per_video_hard_usd {
        b.per_video_hard_micros = usd_micros("per-video-hard", *h)?;
    }
    b.per_video_soft_micros = match per_video_soft_usd {
        Some(s) => usd_micros("per-video-soft", *s)?,
        None => b.per_video_soft_micros.min(b.per_video_hard_micros),
    };
    if b.daily_soft_micros > b.daily_hard_micros
        || b.per_video_soft_micros > b.per_video_hard_micros
    {
        return Err("a soft limit above its hard limit".into());
    }
    control_change(
        node,
        caller,
        cmd,
        vec![Write::Put(budget_key(ch), encode_budget(&b))],
    )
    .await?;
    let usd = |m: u64| {
        if m == u64::MAX {
            json!("unlimited")
        } else {
            json!(m as f64 / 1e6)
        }
    };
    Ok(json!({
        "channel": channel,
        "daily_soft_usd": usd(b.daily_soft_micros),
        "daily_hard_usd": usd(b.daily_hard_micros),
        "per_video_soft_usd": usd(b.per_video_soft_micros),
        "per_video_hard_usd": usd(b.per_video_hard_micros),
        "note": "in force for every charge from now on; what is already charged stays",
    }))
}

/// `quota PROJECT BUCKET --units-per-day N`: what the API grants the
/// project from now on (tell reelfleet after the API's quota changed), in
/// place of the config's.
async fn quota(
    node: &NodePorts,
    caller: &Caller,
    cmd: &Command,
    project: &str,
    bucket: &str,
    units_per_day: u64,
) -> Result<Value, String> {
    let topo = &node.topo;
    let p = topo
        .projects
        .iter()
        .position(|x| x.name == project)
        .ok_or_else(|| {
            let known: Vec<&str> = topo.projects.iter().map(|x| x.name.as_str()).collect();
            format!("no project {project:?} (projects: {})", known.join(", "))
        })?;
    let spec = &topo.projects[p];
    let b = spec
        .buckets
        .iter()
        .position(|x| x.name == bucket)
        .ok_or_else(|| {
            let known: Vec<&str> = spec.buckets.iter().map(|x| x.name.as_str()).collect();
            format!(
                "project {project:?} has no bucket {bucket:?} (buckets: {})",
                known.join(", ")
            )
        })?;
    if units_per_day > 1_000_000_000_000 {
        return Err(format!("units-per-day {units_per_day}: at most 10^12"));
    }
    let pid = topology::ProjectId(u16::try_from(p).map_err(|_| "too many projects")?);
    let key = quota_limits_key(pid);
    let mut q = read_record(node, key.clone(), QuotaLimitsRecord::decode)
        .await?
        .unwrap_or_else(|| QuotaLimitsRecord {
            units_per_day: spec.buckets.iter().map(|x| x.units_per_day).collect(),
        });
    q.units_per_day.resize(spec.buckets.len(), 0);
    q.units_per_day[b] = units_per_day;
    control_change(node, caller, cmd, vec![Write::Put(key, q.encode())]).await?;
    Ok(json!({
        "project": project,
        "bucket": bucket,
        "units_per_day": units_per_day,
        "note": "in force for every reservation from now on; what is already reserved today stays",
    }))
}

/// The nodes `maintenance TARGET` names: a node by name, or every node
/// of a zone.
fn maintenance_nodes(node: &NodePorts, target: &str) -> Result<Vec<NodeId>, String> {
    let topo = &node.topo;
    if let Some(n) = topo.node_ids().find(|n| topo.node(*n).name == target) {
        return Ok(vec![n]);
    }
    let in_zone: Vec<NodeId> = topo
        .node_ids()
        .filter(|n| topo.node(*n).zone == target)
        .collect();
    if in_zone.is_empty() {
        let mut zones: Vec<&str> = topo.nodes.iter().map(|n| n.zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        return Err(format!(
            "{target:?} is neither a node nor a zone (zones: {})",
            zones.join(", ")
        ));
    }
    Ok(in_zone)
}

/// The record under `key`, if there is one that decodes.
async fn read_record<T, E>(
    node: &NodePorts,
    key: actors::store::Key,
    decode: fn(&[u8]) -> Result<T, E>,
) -> Result<Option<T>, String> {
    let got = node.store.store.get(&[key]).await.map_err(failed)?;
    Ok(got
        .into_iter()
        .next()
        .flatten()
        .and_then(|e| decode(&e.value).ok()))
}

/// The maintenance window in the store, if any.
async fn maintenance(node: &NodePorts) -> Result<Option<MaintenanceRecord>, String> {
    read_record(
        node,
        actors::store::key(MAINTENANCE_KEY),
        MaintenanceRecord::decode,
    )
    .await
}

/// The channels a target names.
fn resolve(node: &NodePorts, target: &Target) -> Result<Vec<ChannelId>, String> {
    let topo = &node.topo;
    match target {
        Target::Channel(name) => topo
            .channel_ids()
            .find(|c| &topo.channel(*c).name == name)
            .map(|c| vec![c])
            .ok_or_else(|| format!("no channel {name:?}")),
        Target::Region(name) => {
            let r = topo
                .regions
                .iter()
                .position(|r| &r.name == name)
                .ok_or_else(|| format!("no region {name:?}"))?;
            Ok(topo
                .channel_ids()
                .filter(|c| topo.channel(*c).home_region.index() == r)
                .collect())
        }
    }
}

/// Writes `writes`, a bump of the control generation (which makes every
/// node's membership machine read the control records again) and the
/// audit record, in one transaction.
async fn control_change(
    node: &NodePorts,
    caller: &Caller,
    cmd: &Command,
    writes: Vec<Write>,
) -> Result<u64, String> {
    let store = &node.store.store;
    for _ in 0..CONTROL_RETRIES {
        let got = store
            .get(&[actors::store::key(CONTROL_GEN_KEY)])
            .await
            .map_err(failed)?;
        let current = got.into_iter().next().flatten();
        let (gen, version) = current
            .map(|e| {
                let bytes: [u8; 8] = e.value.as_slice().try_into().unwrap_or([0; 8]);
                (u64::from_le_bytes(bytes), e.version)
            })
            .unwrap_or((0, 0));
        let mut all = writes.clone();
        all.push(Write::Put(
            actors::store::key(CONTROL_GEN_KEY),
            (gen + 1).to_le_bytes().to_vec(),
        ));
        all.push(audit_write(node, caller, cmd));
        let txn = Txn {
            checks: vec![Check::VersionIs(
                actors::store::key(CONTROL_GEN_KEY),
                version,
            )],
            writes: all,
        };
        match store.commit(&txn).await {
            Ok(version) => {
                tracing::info!(node = %node.name, who = %caller.name, role = caller.role.name(), command = ?cmd, "admin change");
                return Ok(version);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err("the control generation kept changing under this command; try again".into())
}

/// The audit record of `cmd`, as a write in the change's transaction.
fn audit_write(node: &NodePorts, caller: &Caller, cmd: &Command) -> Write {
    let now_ms = node.clock.now_ms();
    let record = json!({
        "at_ms": now_ms,
        "who": caller.name,
        "role": caller.role.name(),
        "via": node.name,
        "command": cmd,
        "result": "ok",
    });
    Write::Put(
        audit_key(now_ms, node.me.0),
        record.to_string().into_bytes(),
    )
}

/// `exclude NODE` / `include NODE`: the node's place in the members
/// record's excluded list, written against the record's version (the
/// nodes' membership machines write it too) with the audit record.
async fn exclude(
    node: &NodePorts,
    caller: &Caller,
    cmd: &Command,
    name: &str,
) -> Result<Value, String> {
    let on = matches!(cmd, Command::Exclude { .. });
    let n = node
        .topo
        .node_ids()
        .find(|n| node.topo.node(*n).name == name)
        .ok_or_else(|| format!("no node {name:?}"))?;
    let store = &node.store.store;
    for _ in 0..CONTROL_RETRIES {
        let got = store
            .get(&[actors::store::key(MEMBERS_KEY)])
            .await
            .map_err(failed)?;
        let current = got.into_iter().next().flatten();
        let version = current.as_ref().map(|e| e.version).unwrap_or(0);
        let mut m = match &current {
            Some(e) => MembersRecord::decode(&e.value).map_err(|e| {
                format!("the members record does not decode ({e:?}): not changing it")
            })?,
            None => MembersRecord::default(),
        };
        if !m.set_excluded(n, on) {
            return Ok(json!({
                if on { "excluded" } else { "included" }: name,
                "note": "it already was",
            }));
        }
        m.generation += 1;
        let txn = Txn {
            checks: vec![Check::VersionIs(actors::store::key(MEMBERS_KEY), version)],
            writes: vec![
                Write::Put(actors::store::key(MEMBERS_KEY), m.encode()),
                audit_write(node, caller, cmd),
            ],
        };
        match store.commit(&txn).await {
            Ok(_) => {
                tracing::info!(node = %node.name, who = %caller.name, role = caller.role.name(), command = ?cmd, "admin change");
                let left = node.topo.node_ids().filter(|x| m.placeable(*x)).count();
                return Ok(if on {
                    json!({
                        "excluded": name,
                        "note": "its channels move to the other nodes within a refresh or two; it keeps running and holds nothing until `include`",
                        "placeable_nodes_left": left,
                    })
                } else {
                    json!({ "included": name, "placeable_nodes_left": left })
                });
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err("the members record kept changing under this command; try again".into())
}

async fn members(node: &NodePorts) -> Result<Option<MembersRecord>, String> {
    read_record(node, actors::store::key(MEMBERS_KEY), MembersRecord::decode).await
}

/// Every owner record, by channel.
async fn owners(node: &NodePorts) -> Result<BTreeMap<ChannelId, OwnerRecord>, String> {
    let start = owner_key(ChannelId(0));
    let prefix = &start[..2];
    let es = node
        .store
        .store
        .range(prefix, &prefix_end(prefix), node.topo.channels.len() + 1)
        .await
        .map_err(failed)?;
    Ok(es
        .into_iter()
        .filter_map(|e| match Key::parse(&e.key) {
            Some(Key::Owner(c)) => OwnerRecord::decode(&e.value).ok().map(|o| (c, o)),
            _ => None,
        })
        .collect())
}

/// Control records: the fleet's, and each paused or killed channel's.
async fn controls(
    node: &NodePorts,
) -> Result<(ControlRecord, BTreeMap<ChannelId, ControlRecord>), String> {
    let store = &node.store.store;
    let all = store
        .get(&[actors::store::key(CONTROL_ALL_KEY)])
        .await
        .map_err(failed)?
        .into_iter()
        .next()
        .flatten()
        .and_then(|e| ControlRecord::decode(&e.value).ok())
        .unwrap_or_default();
    let start = control_key(ChannelId(0));
    let prefix = &start[..4];
    let es = store
        .range(prefix, &prefix_end(prefix), node.topo.channels.len() + 1)
        .await
        .map_err(failed)?;
    let each = es
        .into_iter()
        .filter_map(|e| match Key::parse(&e.key) {
            Some(Key::Control(c)) => ControlRecord::decode(&e.value).ok().map(|r| (c, r)),
            _ => None,
        })
        .filter(|(_, r)| r.paused || r.killed)
        .collect();
    Ok((all, each))
}

async fn nodes(node: &NodePorts) -> Result<Vec<Value>, String> {
    let m = members(node).await?.unwrap_or_default();
    let owners = owners(node).await?;
    let prefix = crate::live::requests::DRAIN_PREFIX;
    let drains: Vec<Vec<u8>> = node
        .store
        .store
        .range(prefix, &prefix_end(prefix), node.topo.nodes.len() + 1)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|e| e.key[prefix.len()..].to_vec())
        .collect();
    Ok(node
        .topo
        .node_ids()
        .map(|n| {
            let owned = owners.values().filter(|o| o.node == Some(n)).count();
            let t = node.topo.node(n);
            json!({
                "node": t.name,
                "region": node.topo.region(t.region).name,
                "member": m.nodes.contains(&n),
                "draining": m.draining.contains(&n),
                "excluded": m.excluded.contains(&n),
                "drain_requested": drains.iter().any(|d| d == t.name.as_bytes()),
                "channels": owned,
            })
        })
        .collect())
}

async fn status(node: &NodePorts) -> Result<Value, String> {
    let mut nodes = nodes(node).await?;
    let reports = super::reports::read_all(node).await?;
    let now_ms = node.clock.now_ms();
    let (mut gpus, mut gpus_healthy, mut jobs) = (0, 0, 0);
    for row in &mut nodes {
        let Some(r) = row["node"].as_str().and_then(|n| reports.get(n)) else {
            continue;
        };
        gpus += r.gpus.len();
        gpus_healthy += r.gpus.iter().filter(|g| g.healthy).count();
        jobs += r.jobs_running;
        row["report_age_ms"] = json!(now_ms.saturating_sub(r.at_ms));
        row["jobs_running"] = json!(r.jobs_running);
        row["gpus"] = json!(r.gpus.len());
    }
    let (all, each) = controls(node).await?;
    let owners = owners(node).await?;
    let unowned = node
        .topo
        .channel_ids()
        .filter(|c| owners.get(c).and_then(|o| o.node).is_none())
        .count();
    let paused: Vec<&str> = each
        .iter()
        .filter(|(_, r)| r.paused)
        .map(|(c, _)| node.topo.channel(*c).name.as_str())
        .collect();
    let window = maintenance(node).await?.map(|w| {
        json!({
            "nodes": w.nodes.iter().map(|n| node.topo.node(*n).name.clone()).collect::<Vec<_>>(),
            "seconds": w.duration_ms / 1000,
        })
    });
    Ok(json!({
        "answered_by": node.name,
        "nodes": nodes,
        "maintenance": window,
        "channels": node.topo.channels.len(),
        "channels_unowned": unowned,
        "gpus": gpus,
        "gpus_healthy": gpus_healthy,
        "jobs_running": jobs,
        "killswitch": all.killed,
        "paused": paused,
    }))
}

async fn channels(node: &NodePorts, region: Option<&str>) -> Result<Value, String> {
    let owners = owners(node).await?;
    let (_, each) = controls(node).await?;
    let topo = &node.topo;
    if let Some(r) = region {
        if !topo.regions.iter().any(|x| x.name == r) {
            return Err(format!("no region {r:?}"));
        }
    }
    let rows: Vec<Value> = topo
        .channel_ids()
        .filter(|c| region.is_none_or(|r| topo.region(topo.channel(*c).home_region).name == r))
        .map(|c| {
            let ch = topo.channel(c);
            let o = owners.get(&c);
            json!({
                "channel": ch.name,
                "region": topo.region(ch.home_region).name,
                "owner": o.and_then(|o| o.node).map(|n| topo.node(n).name.clone()),
                "epoch": o.map(|o| o.epoch),
                "paused": each.get(&c).is_some_and(|r| r.paused),
            })
        })
        .collect();
    Ok(json!(rows))
}

async fn audit(node: &NodePorts, since_ms: u64) -> Result<Value, String> {
    let mut start = AUDIT_PREFIX.to_vec();
    start.extend_from_slice(&since_ms.to_be_bytes());
    let es = node
        .store
        .store
        .range(&start, &prefix_end(AUDIT_PREFIX), AUDIT_LIMIT)
        .await
        .map_err(failed)?;
    Ok(json!(es
        .into_iter()
        .filter_map(|e| serde_json::from_slice::<Value>(&e.value).ok())
        .collect::<Vec<_>>()))
}

async fn regions(node: &NodePorts) -> Result<Value, String> {
    let rows = nodes(node).await?;
    let topo = &node.topo;
    Ok(json!(topo
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let in_region = |x: &&Value| x["region"] == r.name.as_str();
            json!({
                "region": r.name,
                "nodes": rows.iter().filter(in_region).count(),
                "members": rows.iter().filter(in_region).filter(|x| x["member"] == true).count(),
                "channels_home": topo.channel_ids().filter(|c| topo.channel(*c).home_region.index() == i).count(),
            })
        })
        .collect::<Vec<_>>()))
}

/// One channel: its owner, control and videos in progress (stage,
/// attempts, spend).
async fn channel(node: &NodePorts, name: &str) -> Result<Value, String> {
    let c = resolve(node, &Target::Channel(name.to_string()))?[0];
    let owners = owners(node).await?;
    let (all, each) = controls(node).await?;
    let prefix = actors::records::active_prefix(c);
    let es = node
        .store
        .store
        .range(&prefix, &prefix_end(&prefix), AUDIT_LIMIT)
        .await
        .map_err(failed)?;
    let stages: Vec<String> = node
        .topo
        .pipeline(node.topo.channel(c).pipeline)
        .stages
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let videos: Vec<Value> = es
        .into_iter()
        .filter_map(|e| actors::records::VideoRecord::decode(&e.value).ok())
        .map(|v| {
            json!({
                "slot": v.slot,
                "stage": stages.get(usize::from(v.stage)).cloned().unwrap_or_else(|| "done".into()),
                "attempt": v.attempt,
                "stage_failures": v.stage_failures,
                "cost_usd": v.cost_micros as f64 / 1e6,
            })
        })
        .collect();
    let o = owners.get(&c);
    Ok(json!({
        "channel": name,
        "owner": o.and_then(|o| o.node).map(|n| node.topo.node(n).name.clone()),
        "epoch": o.map(|o| o.epoch),
        "paused": each.get(&c).is_some_and(|r| r.paused) || all.paused,
        "killed": each.get(&c).is_some_and(|r| r.killed) || all.killed,
        "videos": videos,
    }))
}

/// Every GPU of every node, as the nodes last reported them.
async fn gpus(node: &NodePorts) -> Result<Value, String> {
    let reports = super::reports::read_all(node).await?;
    let now_ms = node.clock.now_ms();
    let mut rows = Vec::new();
    for r in reports.values() {
        for g in &r.gpus {
            rows.push(json!({
                "node": r.node,
                "gpu": g.index,
                "model": g.model,
                "memory_used_gib": format!("{:.1}", g.memory_used_bytes as f64 / (1u64 << 30) as f64),
                "memory_total_gib": format!("{:.1}", g.memory_total_bytes as f64 / (1u64 << 30) as f64),
                "utilization_percent": g.utilization_percent,
                "temperature_c": g.temperature_c,
                "healthy": g.healthy,
                "reason": g.reason,
                "jobs": g.jobs_running,
                "report_age_ms": now_ms.saturating_sub(r.at_ms),
            }));
        }
    }
    Ok(json!(rows))
}

/// Every job running on every node, as the nodes last reported them.
async fn jobs(node: &NodePorts) -> Result<Value, String> {
    let reports = super::reports::read_all(node).await?;
    let mut rows = Vec::new();
    for r in reports.values() {
        for j in &r.jobs {
            rows.push(json!({
                "node": r.node,
                "channel": j.channel,
                "slot": j.slot,
                "stage": j.stage,
                "attempt": j.attempt,
                "on": j.on,
                "running_ms": j.running_ms,
            }));
        }
    }
    Ok(json!(rows))
}
