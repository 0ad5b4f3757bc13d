//! The async Kafka client.
