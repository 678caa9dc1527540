//! The admin RPC: operators' commands to a running fleet over each node's
//! QUIC endpoint, under their own ALPN. `proto.rs` is the versioned wire
//! format and who may do what; the server and the console come next (see
//! ARCHITECTURE.md, "Deliberately absent").

pub mod backup;
pub mod client;
pub mod exec;
pub mod proto;
pub mod reports;
pub mod server;
