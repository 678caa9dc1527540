//! The live node: the machines of `actors/` run by ractor shells, talking
//! over QUIC, keeping state in a real store, with real executors and
//! publishers. See ARCHITECTURE.md ("Live node") for the map.
//!
//! - [`shell`]: the one generic actor that runs any machine;
//! - [`ports`]: each effect through the node layer's routing, and the
//!   routes carried out;
//! - [`router`]: the view, this node's machines, messages in and out;
//! - [`store_port`], [`jobs`], [`publish_port`]: the store, stage jobs on
//!   the configured executors, uploads and lookups;
//! - [`supervisor`]: the supervision tree and its restart policy;
//! - [`life`]: whether the node should stop, and why;
//! - [`transport`], [`wire`]: QUIC with mutual TLS, and the frames;
//! - [`assemble`]: one node's ports put together (QUIC, or a recorder);
//! - [`runtime`]: starting and stopping a node;
//! - [`config`]: the node config file; [`metrics`]: Prometheus text;
//! - [`clock`]: Unix milliseconds that never run backwards; [`clock_check`]:
//!   whether they agree with the peers' (a node far off refuses to run).

pub mod assemble;
pub mod clock;
pub mod clock_check;
pub mod config;
pub mod fault_points;
pub mod jobs;
pub mod ledger_metrics;
pub mod life;
pub mod metrics;
pub mod pages;
pub mod ports;
pub mod publish_port;
pub mod read_batch;
pub mod report;
pub mod requests;
pub mod router;
pub mod runtime;
pub mod shell;
pub mod store_port;
pub mod supervisor;
pub mod transport;
pub mod wire;
pub mod writer_tag;

/// Locks `m`, taking the data even if a panicking holder poisoned it: every
/// lock here guards plain tables that a panic cannot leave half-written in
/// a way that matters more than stopping the node would.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
