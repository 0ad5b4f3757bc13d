//! Node backends implementing the nemesis [`Node`](nemesis::Node) trait: `netns` (network
//! namespaces on a bridge, root), `docker` (one container per node from a locally built image),
//! `ssh` (real machines over SSH, like Jepsen's control node) and `local` (processes on
//! 127.0.0.x, no root), plus [`cleanup_leftovers`] which removes what a killed harness left
//! behind.

pub mod docker;
pub mod local;
pub mod netns;
pub mod ssh;

pub use docker::{DockerCluster, DockerOptions};
pub use local::LocalCluster;
pub use netns::{NetnsCluster, NetnsOptions};
pub use ssh::{SshCluster, SshOptions};

/// Removes what killed runs left behind: on this host netns namespaces, links, mounts and
/// processes ([`netns::cleanup_leftovers`]) and Docker containers, networks and images
/// ([`docker::cleanup_leftovers`]); on ssh hosts, brokers and nft rules
/// ([`ssh::cleanup_leftovers`]). Returns one line per cleaned-up run or thing.
pub fn cleanup_leftovers() -> Result<Vec<String>, nemesis::NodeError> {
    let mut removed = netns::cleanup_leftovers()?;
    removed.extend(docker::cleanup_leftovers()?);
    removed.extend(ssh::cleanup_leftovers());
    Ok(removed)
}
