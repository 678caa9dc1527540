pub mod conformance;
pub mod etcd_cluster;
