//! Local emulators of services no machine here can reach, faithful to
//! their protocols, for rehearsals and tests: `reelfleet emulate youtube`.

pub mod youtube;
