//! The live node: the machines of `actors/` run by ractor shells, talking
//! over QUIC, keeping state in a real store, with real executors and
//! publishers. See ARCHITECTURE.md ("Live node") for the map.
//!
//! - [`shell`]: the one generic actor that runs any machine;
//! - [`ports`]: what each machine's effects do for real;
//! - [`supervisor`]: the supervision tree and its restart policy;
//! - [`ctx`]: what a node's shells share, and routing;
//! - [`transport`], [`wire`]: QUIC with mutual TLS, and the frames;
//! - [`run_stage`]: stage jobs on the configured executors;
//! - [`runtime`]: starting and stopping a node;
//! - [`config`]: the node config file; [`metrics`]: Prometheus text;
//! - [`clock`]: Unix milliseconds that never run backwards.

pub mod clock;
pub mod config;
pub mod ctx;
pub mod metrics;
pub mod ports;
pub mod run_stage;
pub mod runtime;
pub mod shell;
pub mod supervisor;
pub mod transport;
pub mod wire;

/// Locks `m`, taking the data even if a panicking holder poisoned it: every
/// lock here guards plain tables that a panic cannot leave half-written in
/// a way that matters more than stopping the node would.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
