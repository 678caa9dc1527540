pub mod audit;
pub mod conformance;
pub mod etcd_cluster;
pub mod promtool;
pub mod youtube_emulator;
