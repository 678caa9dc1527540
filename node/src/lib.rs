//! The parts of the `reelfleet` binary that tests drive directly: the store
//! backends and backup/restore, stage executors, and publishers.

pub mod exec;
pub mod publish;
pub mod store;
