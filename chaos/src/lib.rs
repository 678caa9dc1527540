//! The chaos runner: starts a real local cluster, kills and pauses node
//! processes and store members on a schedule, and audits afterwards that
//! nothing was lost or duplicated and how fast service came back.
//!
//! It needs the live `reelfleet node` (issue 4); until then this crate only
//! holds the shape of a chaos schedule, shared with the simulator's faults by
//! name so that one schedule can drive both.

/// What the chaos runner can do to a real process, by the names the
/// simulator's scenario files use.
pub const ACTIONS: [&str; 4] = ["crash-node", "start-node", "freeze-node", "thaw-node"];
