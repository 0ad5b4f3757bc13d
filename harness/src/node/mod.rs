//! Node backends implementing the nemesis [`Node`](nemesis::Node) trait: `netns` (network
//! namespaces on a bridge, root) and `local` (processes on 127.0.0.x, no root), plus
//! [`cleanup_leftovers`] which removes what a killed harness left behind.

pub mod local;
pub mod netns;

pub use local::LocalCluster;
pub use netns::{cleanup_leftovers, NetnsCluster, NetnsOptions};
