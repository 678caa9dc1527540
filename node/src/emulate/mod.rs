//! Local emulators of services no machine here can reach, faithful to
//! their protocols, for rehearsals and tests: `reelfleet emulate youtube`,
//! and a model server the `http` executor can be pointed at (`provider`).

pub mod provider;
pub mod youtube;
