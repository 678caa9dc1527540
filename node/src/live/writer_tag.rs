//! Who wrote a channel's records: every fenced channel commit also writes
//! `x/w/<channel>` = "<node>/<epoch>/<incarnation>" in the same
//! transaction. The machines never read it; it is evidence. On a store
//! that keeps its history (etcd's revisions), an audit can then check
//! every accepted channel write against the owner record in force at that
//! revision: a write accepted from a superseded owner (a broken epoch
//! fence) shows as a tag whose epoch is not the owner's. `reelfleet chaos`
//! does exactly that (`chaos::fence_audit`).

use actors::store::{Txn, Write};
use topology::ChannelId;

/// The key prefix of writer tags (`x/`: the node layer's keys, outside
/// the machines' layout).
pub const WRITER_PREFIX: &[u8] = b"x/w/";

/// Channel `ch`'s writer tag key: the prefix and the channel's id, big
/// endian (as the machines' own keys).
pub fn writer_key(ch: ChannelId) -> actors::store::Key {
    let mut k = actors::store::key(WRITER_PREFIX);
    k.extend_from_slice(&ch.0.to_be_bytes());
    k
}

/// The channel of a writer tag key.
pub fn channel_of_writer_key(k: &[u8]) -> Option<ChannelId> {
    let id: [u8; 4] = k.strip_prefix(WRITER_PREFIX)?.try_into().ok()?;
    Some(ChannelId(u32::from_be_bytes(id)))
}

/// Who wrote: a node by name, at an epoch and incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterTag {
    pub node: String,
    pub epoch: u64,
    pub incarnation: u64,
}

impl WriterTag {
    pub fn encode(&self) -> Vec<u8> {
        format!("{}/{}/{}", self.node, self.epoch, self.incarnation).into_bytes()
    }

    /// `None` for anything that is not a tag (node names hold no `/`).
    pub fn decode(v: &[u8]) -> Option<WriterTag> {
        let s = std::str::from_utf8(v).ok()?;
        let mut parts = s.rsplitn(3, '/');
        let incarnation = parts.next()?.parse().ok()?;
        let epoch = parts.next()?.parse().ok()?;
        let node = parts.next()?.to_string();
        (!node.is_empty()).then_some(WriterTag {
            node,
            epoch,
            incarnation,
        })
    }
}

/// `txn` with the tag written too, when it writes anything (a check-only
/// commit writes nothing, and still writes nothing).
pub fn tagged(mut txn: Txn, ch: ChannelId, tag: &WriterTag) -> Txn {
    if !txn.writes.is_empty() {
        txn.writes.push(Write::Put(writer_key(ch), tag.encode()));
    }
    txn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_keys_read_back() {
        let t = WriterTag {
            node: "us-east-1".into(),
            epoch: 7,
            incarnation: 1_733_000_000_123,
        };
        assert_eq!(WriterTag::decode(&t.encode()), Some(t.clone()));
        assert_eq!(WriterTag::decode(b"7/1"), None);
        assert_eq!(WriterTag::decode(b"/7/1"), None);
        assert_eq!(WriterTag::decode(b"n0/x/1"), None);
        let k = writer_key(ChannelId(258));
        assert_eq!(channel_of_writer_key(&k), Some(ChannelId(258)));
        assert_eq!(channel_of_writer_key(b"x/w/ab"), None);
        let check_only = Txn {
            checks: vec![],
            writes: vec![],
        };
        assert!(tagged(check_only, ChannelId(1), &t).writes.is_empty());
        let one = Txn {
            checks: vec![],
            writes: vec![Write::Delete(actors::store::key(b"a"))],
        };
        let w = tagged(one, ChannelId(1), &t).writes;
        assert_eq!(w.len(), 2);
        assert_eq!(w[1], Write::Put(writer_key(ChannelId(1)), t.encode()));
    }
}
