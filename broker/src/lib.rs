//! Bundled Kafka-compatible broker.
