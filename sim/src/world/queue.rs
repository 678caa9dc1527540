//! The event queue: a timing wheel of 1 ms buckets over the next
//! [`WHEEL_MS`], and a heap for the few events beyond it.
//!
//! Why not one binary heap: a fleet-size run keeps ~13,000 events queued,
//! and each pop of a heap that size walks 14 levels, each load depending on
//! the last comparison; with the rest of the world's state around it those
//! loads miss the cache one after another (BENCHMARKS.md: capacity-10m).
//! A bucket's events are a list threaded through the slab's slots, so a
//! push or a pop touches one bucket and one slot.
//!
//! Order is exactly the heap's, (time, sequence): a bucket holds one
//! millisecond, in the order its events were queued, and an event from the
//! far heap joins its bucket as soon as the bucket's millisecond comes
//! within the wheel -- before anything can be queued for that millisecond
//! directly, since direct pushes only reach as far as the wheel does.

use std::cell::Cell;
use std::collections::BinaryHeap;

use super::events::Scheduled;

/// Milliseconds the wheel covers from the present moment.
const WHEEL_MS: u64 = 1 << 16;
const BUCKETS: usize = WHEEL_MS as usize;
const WORDS: usize = BUCKETS / 64;
/// No slot: an empty bucket, the end of a bucket's list.
const NIL: u32 = u32::MAX;

pub(super) struct EventQueue {
    /// No queued event is earlier; the wheel holds `[base_ms, base_ms +
    /// WHEEL_MS)`, the far heap the rest.
    base_ms: u64,
    head: Vec<u32>,
    tail: Vec<u32>,
    /// Per slab slot: the next slot in its bucket.
    next: Vec<u32>,
    /// One bit per bucket: it holds an event.
    occupied: Vec<u64>,
    in_wheel: usize,
    far: BinaryHeap<Scheduled>,
    /// The first occupied bucket's millisecond, once a scan has found it
    /// (`None`: not known). The run loop asks when the next event is due
    /// and then pops it: without this, both scanned the wheel's bits.
    first_ms: Cell<Option<u64>>,
}

impl EventQueue {
    pub(super) fn new() -> EventQueue {
        EventQueue {
            base_ms: 0,
            head: vec![NIL; BUCKETS],
            tail: vec![NIL; BUCKETS],
            next: Vec::new(),
            occupied: vec![0; WORDS],
            in_wheel: 0,
            far: BinaryHeap::new(),
            first_ms: Cell::new(None),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_wheel + self.far.len()
    }

    pub(super) fn push(&mut self, s: Scheduled) {
        assert!(s.at_ms >= self.base_ms, "nothing is queued in the past");
        if s.at_ms - self.base_ms < WHEEL_MS {
            self.link(s.at_ms, s.slot);
        } else {
            self.far.push(s);
        }
    }

    /// When the next event is due.
    pub(super) fn peek_at(&self) -> Option<u64> {
        self.first_in_wheel()
            .or_else(|| self.far.peek().map(|s| s.at_ms))
    }

    /// The next event: the earliest, and of those the first queued; when
    /// it is due and its slab slot.
    pub(super) fn pop(&mut self) -> Option<(u64, u32)> {
        let at_ms = match self.first_in_wheel() {
            Some(t) => t,
            None => self.far.peek()?.at_ms,
        };
        self.advance(at_ms);
        let b = bucket(at_ms);
        let slot = self.head[b];
        assert_ne!(slot, NIL, "the bucket found occupied holds an event");
        let next = self.next[slot as usize];
        self.head[b] = next;
        if next == NIL {
            self.tail[b] = NIL;
            self.occupied[b / 64] &= !(1u64 << (b % 64));
            self.first_ms.set(None);
        }
        self.in_wheel -= 1;
        Some((at_ms, slot))
    }

    fn link(&mut self, at_ms: u64, slot: u32) {
        // Into an empty wheel, or before the first bucket known: the new
        // first. Otherwise the first is as it was, known or not.
        if self.in_wheel == 0 || self.first_ms.get().is_some_and(|first| at_ms < first) {
            self.first_ms.set(Some(at_ms));
        }
        let b = bucket(at_ms);
        let i = slot as usize;
        if self.next.len() <= i {
            self.next.resize(i + 1, NIL);
        }
        self.next[i] = NIL;
        match self.tail[b] {
            NIL => {
                self.head[b] = slot;
                self.occupied[b / 64] |= 1u64 << (b % 64);
            }
            last => self.next[last as usize] = slot,
        }
        self.tail[b] = slot;
        self.in_wheel += 1;
    }

    /// Moves the present to `to_ms` and brings into the wheel the far
    /// events it now covers, in (time, sequence) order. Their buckets are
    /// empty: the wheel never reached their milliseconds before.
    fn advance(&mut self, to_ms: u64) {
        assert!(to_ms >= self.base_ms, "time only moves forward");
        self.base_ms = to_ms;
        while self.far.peek().is_some_and(|s| s.at_ms - to_ms < WHEEL_MS) {
            if let Some(s) = self.far.pop() {
                self.link(s.at_ms, s.slot);
            }
        }
    }

    /// The millisecond of the first occupied bucket from the present on.
    fn first_in_wheel(&self) -> Option<u64> {
        if self.in_wheel == 0 {
            return None;
        }
        if let Some(first) = self.first_ms.get() {
            debug_assert_eq!(Some(first), self.scan_wheel(), "a stale first bucket");
            return Some(first);
        }
        let first = self.scan_wheel();
        self.first_ms.set(first);
        first
    }

    /// The millisecond of the first occupied bucket, found from the bits.
    fn scan_wheel(&self) -> Option<u64> {
        let start = bucket(self.base_ms);
        let mut w = start / 64;
        let mut word = self.occupied[w] & (!0u64 << (start % 64));
        // One more word than the wheel has: the start word again, for the
        // buckets below `start` (the latest milliseconds of the wheel).
        for _ in 0..=WORDS {
            if word != 0 {
                let b = w * 64 + word.trailing_zeros() as usize;
                let ahead = (b + BUCKETS - start) % BUCKETS;
                return Some(self.base_ms + ahead as u64);
            }
            w = (w + 1) % WORDS;
            word = self.occupied[w];
        }
        unreachable!(
            "{} events in the wheel and no bucket occupied",
            self.in_wheel
        )
    }
}

fn bucket(at_ms: u64) -> usize {
    (at_ms % WHEEL_MS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wheel pops exactly what a binary heap of (time, sequence) pops,
    /// for pushes near and far, at the present moment and at wrap-arounds,
    /// with looks at the next event between them.
    #[test]
    fn pops_in_the_heap_order() {
        let mut rng = actors::rng::SeededRng::new(7);
        let mut wheel = EventQueue::new();
        let mut heap = BinaryHeap::new();
        let mut seq = 0u64;
        let mut now = 1_800_000_000_000u64;
        let mut popped = 0;
        for _ in 0..200_000u32 {
            let pushes = if wheel.len() < 50 { 3 } else { rng.below(3) };
            for _ in 0..pushes {
                seq += 1;
                let ahead = match rng.below(10) {
                    0 => 0,
                    1..=6 => rng.below(5_000),
                    7 | 8 => rng.below(WHEEL_MS + 10),
                    _ => rng.below(10 * WHEEL_MS),
                };
                // Slots are unique, as the slab's are while queued.
                let s = || Scheduled {
                    at_ms: now + ahead,
                    seq,
                    slot: seq as u32,
                };
                wheel.push(s());
                heap.push(s());
                // A look between pushes: the next push may come before
                // what the look found first.
                if rng.below(2) == 0 {
                    assert_eq!(wheel.peek_at(), heap.peek().map(|s| s.at_ms));
                }
            }
            assert_eq!(wheel.peek_at(), heap.peek().map(|s| s.at_ms));
            if let (Some(a), Some(b)) = (wheel.pop(), heap.pop()) {
                assert_eq!(a, (b.at_ms, b.slot), "pop {popped}");
                now = a.0;
                popped += 1;
            }
            assert_eq!(wheel.len(), heap.len());
        }
        while let Some(b) = heap.pop() {
            let a = wheel.pop().expect("as many events as the heap");
            assert_eq!(a, (b.at_ms, b.slot));
        }
        assert!(wheel.pop().is_none());
        assert!(popped > 100_000);
    }
}
