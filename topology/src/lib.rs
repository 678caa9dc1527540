//! reelfleet's fleet description: pure data, no I/O.
//!
//! - [`model`]: regions, nodes, GPUs, pipelines, projects, channels.
//! - [`config`]: the TOML cluster config, parsed and validated with every
//!   error reported at once, each naming its field path.
//! - [`placement`]: rendezvous hashing of channels over live nodes.
//! - [`toml_walk`]: the shared hand-walker over `toml::Value` that both the
//!   cluster config and the simulator's scenario files use, so that errors
//!   read the same everywhere.

pub mod config;
pub mod ids;
pub mod model;
pub mod placement;
pub mod toml_walk;

pub use ids::*;
pub use model::*;
