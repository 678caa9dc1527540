//! reelfleet's functional core: the decisions of every actor as pure state
//! machines, the node layer that decides where their effects go, and the
//! store interface with its in-memory reference model.
//!
//! Each machine is driven the same way ([`machine::Machine`]):
//! `handle(now_ms, input, &mut effects)` and `next_deadline()`. A machine
//! never reads a clock, draws entropy or does I/O: time arrives as
//! `now_ms`, randomness from a [`rng::SeededRng`] handed in at
//! construction, and the world through inputs. Its effects go through
//! [`node::route`], which the simulator and the live node both call.
//!
//! Architecture invariant: no `std::time`, no `HashMap` iteration, no thread
//! RNG anywhere in this crate; `BTreeMap`/`Vec` keep every iteration order a
//! function of the inputs.

// First, so that every machine can mark its rare branches.
#[macro_use]
pub mod probe;

pub mod breaker;
pub mod channel;
pub mod codec;
pub mod dispatch;
pub mod gpu;
pub mod machine;
pub mod membership;
pub mod node;
pub mod packed_key;
pub mod protocol;
pub mod records;
pub mod rng;
pub mod sabotage;
pub mod store;

/// A digest of this crate's source (`build.rs`): a flight recording's
/// header carries it, so that a recording is never replayed through
/// machines that may decide differently from the ones that made it.
pub const MACHINES_VERSION: u64 = include!(concat!(env!("OUT_DIR"), "/machines_version.rs"));
