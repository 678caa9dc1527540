pub mod audit;
pub mod conformance;
pub mod etcd_cluster;
pub mod youtube_emulator;
