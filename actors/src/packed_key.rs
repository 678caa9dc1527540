//! A key of up to 16 bytes packed into two words, as the in-memory store
//! indexes it.
//!
//! Why: the store's hashed index and its B-tree hold hundreds of
//! thousands of keys in a fleet-size simulation (375,201 at the end of a
//! capacity-10m day), and every point read, check and write hashes a key
//! and compares it with the one it finds; every new key is compared with
//! about 19 others (log2 of that) on its way into the B-tree. As byte slices,
//! each comparison was a call to `memcmp` and each hash a loop over the
//! bytes (BENCHMARKS.md, capacity-10m, twelfth session). Packed, a hash is
//! three words and a comparison is integer comparison.
//!
//! Invariant: the order of packed keys is the lexicographic order of their
//! bytes. The bytes are big-endian in `hi` then `lo`, zero-padded, and the
//! length breaks ties: a key that is a prefix of another pads with zeros
//! where the other has bytes (greater or equal), and where the two pad to
//! the same words the shorter is the prefix, so it sorts first.

use std::ops::Bound;

/// The longest key that packs.
pub const PACKED_BYTES_MAX: usize = 16;

/// A key of at most [`PACKED_BYTES_MAX`] bytes. Field order is the order
/// of comparison (`derive(Ord)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackedKey {
    hi: u64,
    lo: u64,
    len: u8,
}

impl PackedKey {
    /// `bytes` packed, or `None` if longer than [`PACKED_BYTES_MAX`].
    /// Loads words, not a copy into a buffer: a copy of a variable length
    /// is a call to `memcpy` (0.8 % of a steady capacity-10m hour).
    #[inline]
    pub fn of(bytes: &[u8]) -> Option<PackedKey> {
        let len = bytes.len();
        if len > PACKED_BYTES_MAX {
            return None;
        }
        let (hi, lo) = match bytes.split_first_chunk::<8>() {
            Some((first, rest)) => (u64::from_be_bytes(*first), word_of(rest)),
            None => (word_of(bytes), 0),
        };
        Some(PackedKey {
            hi,
            lo,
            len: len as u8,
        })
    }

    /// The key's bytes (held inline: no allocation).
    #[inline]
    pub fn bytes(&self) -> crate::store::Key {
        let mut buf = [0u8; PACKED_BYTES_MAX];
        buf[..8].copy_from_slice(&self.hi.to_be_bytes());
        buf[8..].copy_from_slice(&self.lo.to_be_bytes());
        crate::store::Key::from_buf_and_len(buf, usize::from(self.len))
    }

    /// The packed keys at or after `start` in byte order, whatever
    /// `start`'s length.
    pub fn lower_bound(start: &[u8]) -> Bound<PackedKey> {
        match PackedKey::of(start) {
            Some(k) => Bound::Included(k),
            // A packed key k is >= a longer `start` exactly when k is
            // greater than `start`'s first 16 bytes: if k equals them or
            // is a prefix of them, it is a prefix of `start`, so smaller.
            None => Bound::Excluded(PackedKey::of(&start[..PACKED_BYTES_MAX]).unwrap_or(MAX)),
        }
    }

    /// The packed keys before `end` in byte order (empty: no end).
    pub fn upper_bound(end: &[u8]) -> Bound<PackedKey> {
        if end.is_empty() {
            return Bound::Unbounded;
        }
        match PackedKey::of(end) {
            Some(k) => Bound::Excluded(k),
            // k < a longer `end` exactly when k <= its first 16 bytes.
            None => Bound::Included(PackedKey::of(&end[..PACKED_BYTES_MAX]).unwrap_or(MAX)),
        }
    }
}

/// Up to 8 bytes, big-endian and zero-padded on the right. From 4 bytes
/// on, two overlapping 4-byte loads (the bytes they share are the same,
/// so or-ing them is exact).
#[inline]
fn word_of(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    debug_assert!(n <= 8);
    match (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        (Some(first), Some(last)) => {
            u64::from(u32::from_be_bytes(*first)) << 32
                | u64::from(u32::from_be_bytes(*last)) << (8 * (8 - n))
        }
        _ => bytes
            .iter()
            .enumerate()
            .fold(0, |w, (i, b)| w | u64::from(*b) << (56 - 8 * i)),
    }
}

/// Sixteen 0xff bytes: the greatest packed key.
const MAX: PackedKey = PackedKey {
    hi: u64::MAX,
    lo: u64::MAX,
    len: PACKED_BYTES_MAX as u8,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    /// Short random keys over a small alphabet (so that prefixes, zero
    /// bytes and equal words are common), up to 20 bytes.
    fn random_key(rng: &mut SeededRng) -> Vec<u8> {
        let len = rng.below(21) as usize;
        let alphabet = [0u8, 1, b'a', b'b', 0xfe, 0xff];
        (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn packed_order_is_byte_order_and_bytes_round_trip() {
        let mut rng = SeededRng::new(3);
        for _ in 0..100_000 {
            let (a, b) = (random_key(&mut rng), random_key(&mut rng));
            if let (Some(pa), Some(pb)) = (PackedKey::of(&a), PackedKey::of(&b)) {
                assert_eq!(pa.cmp(&pb), a.cmp(&b), "{a:?} against {b:?}");
                assert_eq!(pa == pb, a == b);
                assert_eq!(pa.bytes().as_slice(), &a[..]);
            } else {
                assert!(a.len() > PACKED_BYTES_MAX || b.len() > PACKED_BYTES_MAX);
            }
        }
    }

    /// A bound made from a key of any length admits exactly the packed
    /// keys that the bytes' own comparison admits.
    #[test]
    fn bounds_of_any_length_admit_what_byte_order_admits() {
        let mut rng = SeededRng::new(5);
        for _ in 0..100_000 {
            let edge = random_key(&mut rng);
            // Often a prefix of the edge (up to its first 16 bytes): where
            // a bound of a long edge has to be exact.
            let k = if rng.below(3) == 0 {
                let n = rng.below(edge.len().min(PACKED_BYTES_MAX) as u64 + 1) as usize;
                edge[..n].to_vec()
            } else {
                random_key(&mut rng)
            };
            let Some(pk) = PackedKey::of(&k) else {
                continue;
            };
            let at_or_after = match PackedKey::lower_bound(&edge) {
                Bound::Included(b) => pk >= b,
                Bound::Excluded(b) => pk > b,
                Bound::Unbounded => true,
            };
            assert_eq!(at_or_after, k[..] >= edge[..], "{k:?} from {edge:?}");
            let before = match PackedKey::upper_bound(&edge) {
                Bound::Included(b) => pk <= b,
                Bound::Excluded(b) => pk < b,
                Bound::Unbounded => true,
            };
            let want = edge.is_empty() || k[..] < edge[..];
            assert_eq!(before, want, "{k:?} before {edge:?}");
        }
    }
}
