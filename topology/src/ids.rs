//! Dense numeric ids. Each indexes a `Vec` in [`crate::Topology`]; the
//! ordering of ids is the ordering of the config file, which keeps every
//! iteration over them deterministic.

macro_rules! id {
    ($(#[$doc:meta])* $name:ident($int:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub $int);

        impl $name {
            // Called on every event; without LTO a call across crates.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id!(/// A region, such as `us-east`.
    RegionId(u16), "r");
id!(/// A `reelfleet node` process.
    NodeId(u32), "n");
id!(/// One GPU of one node.
    GpuId(u32), "g");
id!(/// A publishing channel.
    ChannelId(u32), "c");
id!(/// A pipeline definition.
    PipelineId(u16), "p");
id!(/// A publishing API project with its quota.
    ProjectId(u16), "q");
