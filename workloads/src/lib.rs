//! Operation generators and the client side of each workload, turning client results into
//! history ops.
//!
//! - [`queue`]: the queue workload's seeded operation generator.
//! - [`client`]: the library-independent [`client::QueueClient`] trait and settings.
//! - [`native`]: the queue client on our own async client (`client` crate).
//! - `rdkafka` (feature `rdkafka`): the queue client on librdkafka.
//! - [`runner`]: the main phase (workers, pacing, history) and the final reads, for any client.
//! - [`stall`]: zombie consumers the nemesis asks for (`zombie-consumer`).

pub mod client;
pub mod native;
pub mod queue;
#[cfg(feature = "rdkafka")]
pub mod rdkafka;
pub mod runner;
pub mod stall;
