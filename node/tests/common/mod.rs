pub mod admin_ctl;
pub mod audit;
pub mod conformance;
pub mod etcd_cluster;
pub mod live_fleet;
pub mod promtool;
pub mod youtube_emulator;
