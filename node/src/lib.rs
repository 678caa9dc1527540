//! The parts of the `reelfleet` binary that tests drive directly: the store
//! backends and backup/restore, stage executors, publishers, and the
//! cluster's certificates, and the live node (`live`).

pub mod admin;
pub mod allocator;
pub mod audit;
pub mod certs;
pub mod chaos;
pub mod emulate;
pub mod exec;
pub mod gpu_probe;
pub mod http;
pub mod live;
pub mod logs;
pub mod publish;
pub mod record;
pub mod store;
