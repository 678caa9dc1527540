//! `reelfleet chaos`: a real fleet of processes on this machine, broken on
//! a schedule and audited afterwards.

pub mod etcd;
