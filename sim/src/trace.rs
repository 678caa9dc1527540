//! The run's fingerprint and memory: a running hash of every event processed
//! (same seed, same build, same hash), the last events kept for the report
//! of a violation, and an optional full trace written to a file.

use std::io::Write as _;

pub const RECENT_EVENTS_MAX: usize = 48;

#[derive(Clone, Debug)]
pub struct TraceItem {
    pub at_ms: u64,
    pub node: u32,
    pub what: &'static str,
    pub a: u64,
    pub b: u64,
}

pub struct Trace {
    hash: u64,
    /// The last events, a ring: once full, `recent[next]` is the oldest and
    /// is overwritten next (a VecDeque's pop and push per event were 0.7 %
    /// of a steady capacity-10m hour's instructions).
    recent: Vec<TraceItem>,
    next: usize,
    file: Option<std::io::BufWriter<std::fs::File>>,
    pub events: u64,
}

const FX_SEED: u64 = 0x517C_C1B7_2722_0A95;

impl Trace {
    pub fn new(file: Option<std::fs::File>) -> Trace {
        Trace {
            hash: 0xCBF2_9CE4_8422_2325,
            recent: Vec::with_capacity(RECENT_EVENTS_MAX),
            next: 0,
            file: file.map(std::io::BufWriter::new),
            events: 0,
        }
    }

    /// FxHash-style word mixing: one multiply per word, not per byte.
    fn mix(&mut self, v: u64) {
        self.hash = (self.hash.rotate_left(5) ^ v).wrapping_mul(FX_SEED);
    }

    /// Records one processed event.
    pub fn event(&mut self, at_ms: u64, node: u32, what: &'static str, a: u64, b: u64) {
        self.events += 1;
        self.mix(at_ms);
        self.mix(u64::from(node));
        // The event's name by content, not address (addresses move with ASLR).
        let bytes = what.as_bytes();
        let name = bytes.len() as u64
            | u64::from(bytes.first().copied().unwrap_or(0)) << 8
            | u64::from(bytes.get(bytes.len() / 2).copied().unwrap_or(0)) << 16
            | u64::from(bytes.last().copied().unwrap_or(0)) << 24;
        self.mix(name);
        self.mix(a);
        self.mix(b);
        let item = TraceItem {
            at_ms,
            node,
            what,
            a,
            b,
        };
        if let Some(f) = &mut self.file {
            // A trace file is a debugging aid: a write error ends the trace,
            // not the run.
            if writeln!(f, "{}", format_item(&item)).is_err() {
                self.file = None;
            }
        }
        if self.recent.len() < RECENT_EVENTS_MAX {
            self.recent.push(item);
        } else {
            self.recent[self.next] = item;
        }
        // A compare, not `% RECENT_EVENTS_MAX`: the remainder by 48 was a
        // multiply and shifts, 11 instructions an event (0.45 % of a
        // steady capacity-10m hour's).
        self.next += 1;
        if self.next == RECENT_EVENTS_MAX {
            self.next = 0;
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The last events, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &TraceItem> {
        let (newer, older) = if self.recent.len() < RECENT_EVENTS_MAX {
            (&self.recent[..], &[][..])
        } else {
            self.recent.split_at(self.next)
        };
        older.iter().chain(newer)
    }

    pub fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}

pub fn format_item(i: &TraceItem) -> String {
    format!(
        "t={}.{:03}s n{} {} {} {}",
        i.at_ms / 1000,
        i.at_ms % 1000,
        i.node,
        i.what,
        i.a,
        i.b
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring gives back the last events, oldest first, before and
    /// after it wraps.
    #[test]
    fn recent_events_oldest_first() {
        let mut t = Trace::new(None);
        for n in 0..(3 * RECENT_EVENTS_MAX as u64 + 5) {
            t.event(n, 0, "tick", n, 0);
            let kept: Vec<u64> = t.recent().map(|i| i.at_ms).collect();
            let first = (n + 1).saturating_sub(RECENT_EVENTS_MAX as u64);
            assert_eq!(kept, (first..=n).collect::<Vec<_>>(), "after event {n}");
        }
    }
}
