//! The node layer: what one node does with its machines' effects, as pure
//! functions shared by every executor. The simulator's world and the live
//! node both hand each effect to [`route`] and carry out the [`Route`]s it
//! returns; only the I/O itself (a simulated or a real network, store,
//! executor, publisher) differs between them. So every rule of where an
//! effect goes (which dispatcher takes a GPU job, where a refusal or a GPU
//! notice is sent, who hears of a control record, what a new view starts
//! and stops) exists once, and the simulator proves the rule production
//! runs.
//!
//! - [`msg`]: [`NodeMsg`], the one message type that crosses between nodes;
//! - [`view`]: [`NodeView`], what a node knows of the cluster (placeable
//!   members, region dispatchers, its lease);
//! - [`route`]: [`Route`] and the routing functions.
//!
//! Architecture invariant: nothing here does I/O, reads a clock or keeps
//! state besides the view; a route is a function of (view, effect).

pub mod msg;
pub mod route;
pub mod view;

pub use msg::NodeMsg;
pub use route::{Local, LocalJobResult, Observation, Route};
pub use view::NodeView;
