//! The bundled Kafka-compatible broker: wire protocol, segmented log storage and (later)
//! replication. `broker` knows nothing of the harness.

pub mod clock;
pub mod log;
pub mod replication;
