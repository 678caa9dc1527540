//! The parts of the `reelfleet` binary that tests drive directly: today the
//! store backends and backup/restore.

pub mod store;
