//! reelfleet's fleet description: pure data, no I/O.
//!
//! - [`model`]: regions, nodes, GPUs, pipelines, projects, channels.
//! - [`config`]: the TOML cluster config, parsed and validated with every
//!   error reported at once, each naming its field path.
//! - [`placement`]: rendezvous hashing of channels over live nodes.

pub mod config;
pub mod ids;
pub mod model;
pub mod placement;

pub use ids::*;
pub use model::*;
