//! The epoch fence, audited from the store's own history: every fenced
//! channel commit also wrote its writer's tag (`live::writer_tag`), and
//! etcd keeps every revision. Replaying the owner records and the tags in
//! revision order, each accepted channel write must name the owner (node,
//! epoch, incarnation) that the owner record held at that revision: a tag
//! naming anyone else is a write accepted from a superseded owner.

use std::collections::BTreeMap;

use actors::records::{Key as RecordKey, OwnerRecord};
use actors::store::prefix_end;
use topology::{ChannelId, Topology};

use super::report::Check;
use crate::live::writer_tag::{channel_of_writer_key, WriterTag, WRITER_PREFIX};
use crate::store::any::AnyStore;
use crate::store::etcd_store::Change;

const INVARIANT: &str = "no write accepted from a superseded owner";

/// Most violations listed in the evidence (the count says the rest).
const SHOWN_MAX: usize = 5;

/// The check, from the store's history.
pub async fn check(store: &AnyStore, topo: &Topology) -> Check {
    let AnyStore::Etcd(etcd) = store else {
        return Check {
            invariant: INVARIANT.into(),
            ok: false,
            evidence: "the store keeps no history to check against (etcd does)".into(),
        };
    };
    let owners = etcd.history(b"o/", &prefix_end(b"o/")).await;
    let tags = etcd
        .history(WRITER_PREFIX, &prefix_end(WRITER_PREFIX))
        .await;
    let (owners, tags) = match (owners, tags) {
        (Ok(o), Ok(t)) => (o, t),
        (Err(e), _) | (_, Err(e)) => {
            return Check {
                invariant: INVARIANT.into(),
                ok: false,
                evidence: format!("the store's history could not be read: {e}"),
            }
        }
    };
    judge(&owners, &tags, topo)
}

/// The owner record change `c` applied to `owner` (a delete, or what
/// does not decode, leaves the channel with no owner).
fn apply_owner(owner: &mut BTreeMap<ChannelId, OwnerRecord>, c: &Change) {
    let Some(RecordKey::Owner(ch)) = RecordKey::parse(&c.key) else {
        return;
    };
    match c.value.as_deref().map(OwnerRecord::decode) {
        Some(Ok(rec)) => {
            owner.insert(ch, rec);
        }
        _ => {
            owner.remove(&ch);
        }
    }
}

/// One write that was not the owner's, for a person.
fn violation(topo: &Topology, ch: ChannelId, revision: u64, tag: &WriterTag, now: &str) -> String {
    let channel = topo
        .channels
        .get(ch.index())
        .map(|c| c.name.as_str())
        .unwrap_or("?");
    format!(
        "{channel} at revision {revision}: written by {} at epoch {} (incarnation {}), but the owner record held {now}",
        tag.node, tag.epoch, tag.incarnation
    )
}

/// Replays `owners` and `tags` (each in revision order) together; a tag
/// is judged against the owner records of the revisions before its own.
pub fn judge(owners: &[Change], tags: &[Change], topo: &Topology) -> Check {
    let mut owner: BTreeMap<ChannelId, OwnerRecord> = BTreeMap::new();
    let mut o = owners.iter().peekable();
    let mut bad: Vec<String> = Vec::new();
    let mut checked = 0usize;
    for t in tags {
        // The fence is checked before the transaction's own writes: a tag
        // is judged against the owner record as it stood just before.
        while let Some(c) = o.next_if(|c| c.revision < t.revision) {
            apply_owner(&mut owner, c);
        }
        let (Some(ch), Some(tag)) = (
            channel_of_writer_key(&t.key),
            t.value.as_deref().and_then(WriterTag::decode),
        ) else {
            continue;
        };
        checked += 1;
        let held = owner.get(&ch);
        let name_of = |r: &OwnerRecord| {
            r.node
                .and_then(|n| topo.nodes.get(n.index()))
                .map(|n| n.name.as_str())
        };
        let same = held.is_some_and(|r| {
            name_of(r) == Some(tag.node.as_str())
                && r.epoch == tag.epoch
                && r.incarnation == tag.incarnation
        });
        if !same {
            let now = match held {
                Some(r) => format!(
                    "{} at epoch {} (incarnation {})",
                    name_of(r).unwrap_or("nobody"),
                    r.epoch,
                    r.incarnation
                ),
                None => "no owner".into(),
            };
            bad.push(violation(topo, ch, t.revision, &tag, &now));
        }
    }
    let evidence = if bad.is_empty() {
        format!(
            "{checked} accepted channel writes, each checked against the owner record at its etcd revision: every one by the owner in force"
        )
    } else {
        let more = bad.len().saturating_sub(SHOWN_MAX);
        let mut s = format!("{} of {checked} accepted channel writes: ", bad.len());
        s.push_str(&bad[..bad.len().min(SHOWN_MAX)].join("; "));
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        s
    };
    Check {
        invariant: INVARIANT.into(),
        ok: bad.is_empty(),
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::writer_tag::writer_key;
    use actors::records::owner_key;
    use topology::NodeId;

    fn topo() -> Topology {
        let text = crate::chaos::fleet::cluster_toml(&crate::chaos::fleet::FleetShape {
            nodes: 2,
            regions: 1,
            channels_per_node: 1,
            lease_ms: 2_000,
        });
        topology::config::parse_topology(&text).expect("fleet")
    }

    fn owner(revision: u64, ch: u32, node: u32, epoch: u64) -> Change {
        let rec = OwnerRecord {
            node: Some(NodeId(node)),
            epoch,
            incarnation: 1,
        };
        Change {
            revision,
            key: owner_key(ChannelId(ch)),
            value: Some(rec.encode()),
        }
    }

    fn tag(revision: u64, ch: u32, node: &str, epoch: u64) -> Change {
        let t = WriterTag {
            node: node.into(),
            epoch,
            incarnation: 1,
        };
        Change {
            revision,
            key: writer_key(ChannelId(ch)),
            value: Some(t.encode()),
        }
    }

    #[test]
    fn a_write_by_the_owner_in_force_passes_and_a_superseded_one_is_named() {
        let topo = topo();
        let owners = vec![owner(2, 0, 0, 1), owner(10, 0, 1, 2)];
        // n0's last write at revision 10 also handed the channel over
        // (its checks ran before its writes).
        let good = vec![tag(3, 0, "n0", 1), tag(10, 0, "n0", 1), tag(11, 0, "n1", 2)];
        let c = judge(&owners, &good, &topo);
        assert!(c.ok, "{}", c.evidence);
        assert!(c.evidence.starts_with("3 accepted"), "{}", c.evidence);
        // n0 wrote at revision 12, after n1 took the channel at epoch 2.
        let late = vec![tag(3, 0, "n0", 1), tag(12, 0, "n0", 1)];
        let c = judge(&owners, &late, &topo);
        assert!(!c.ok);
        assert!(
            c.evidence
                .contains("at revision 12: written by n0 at epoch 1")
                && c.evidence.contains("the owner record held n1 at epoch 2"),
            "{}",
            c.evidence
        );
        // A write with no owner record at all is no owner's.
        let c = judge(&[], &[tag(1, 1, "n0", 1)], &topo);
        assert!(
            !c.ok && c.evidence.contains("held no owner"),
            "{}",
            c.evidence
        );
    }
}
