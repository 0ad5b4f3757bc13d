//! The bundled Kafka-compatible broker: wire protocol, segmented log storage and replication
//! logic. `broker` knows nothing of the harness.

pub mod alloc;
pub mod clock;
pub mod config;
pub mod dirlock;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod release;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod topics;
pub mod transport;
