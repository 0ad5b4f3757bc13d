//! Fault kinds, fault schedules and the node trait faults are applied through (issue "Nemesis").
//!
//! - [`node`]: the small, object-safe [`Node`] trait every backend (netns, local, docker, ssh)
//!   implements, plus [`Capabilities`] saying which faults a backend can do.
//! - [`process`]: a supervisor for a node's service process (start, signals, kill, reap).
//! - [`net`]: partition topologies (grudges) and their nft rules; packet loss; latency probing.
//! - [`clock`]: per-process libfaketime clock offsets (bump, strobe, reset).
//! - [`disk`]: a FUSE passthrough filesystem with latency, stall, EIO and lose-unfsynced faults,
//!   plus offline file faults (truncate, bit flips).
//! - [`schedule`]: a seeded schedule of fault start/stop actions and the final heal.
//! - [`nemesis`]: the [`Nemesis`] guard that applies actions, records what is active and heals
//!   everything on `heal_all` and on drop.
//! - [`op`]: the nemesis op values the harness writes into the history.

pub mod clock;
pub mod disk;
pub mod error;
pub mod nemesis;
pub mod net;
pub mod node;
pub mod op;
pub mod process;
pub mod schedule;

pub use error::{NemesisError, NodeError};
pub use nemesis::Nemesis;
pub use node::{Capabilities, CommandOutput, FaultKind, Node, ServiceSpec, Signal, StopMode};
pub use op::NemesisOp;
pub use schedule::{Action, Schedule, ScheduledAction, Targets};

/// The prefix of every nft table the nemesis creates (so leftovers can be found and removed).
pub const NFT_TABLE_PREFIX: &str = "jepsen_nemesis";
