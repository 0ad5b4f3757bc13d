//! The async Kafka client of the harness, on `kafka-protocol` and Tokio.
//!
//! - [`Producer`]: sends with acks 0/1/all, retries, idempotence; every send ends in an
//!   [`Outcome`]: `Ok(offset)`, `Definite` (did not happen) or `Indeterminate` (may have
//!   happened). The rules are in [`outcome`].
//! - [`Consumer`]: assign-mode consumer with seek, poll, auto.offset.reset and isolation level.
//! - [`GroupConsumer`]: subscribe-mode consumer (classic group protocol, range and
//!   round-robin assignors, committed offsets, heartbeats from `poll`).
//! - [`TransactionalProducer`]: Kafka transactions (`transactional.id`, begin, send, send
//!   offsets, commit/abort); a transaction ends [`TxnOutcome::Committed`], `NotCommitted` or
//!   `Unknown`. The rules are in [`transactions`].
//! - [`Admin`]: create, delete and describe topics.
//! - [`Config`]: one configuration for all three, parsed from Kafka client property names.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use client::{Admin, Config, Consumer, NewTopic, Outcome, Producer, Seek, TopicPartition};
//!
//! # async fn demo() -> Result<(), client::Error> {
//! let config = Config::from_properties([
//!     ("bootstrap.servers", "10.0.0.1:9092,10.0.0.2:9092"),
//!     ("acks", "all"),
//!     ("enable.idempotence", "true"),
//! ])?;
//! let admin = Admin::new(config.clone())?;
//! admin
//!     .create_topic(NewTopic::new("queue", 4, 3).config("min.insync.replicas", "2"), Duration::from_secs(10))
//!     .await?;
//!
//! let producer = Producer::new(config.clone())?;
//! match producer.send("queue", None, Some(Bytes::from("k1")), Some(Bytes::from("41"))).await {
//!     Outcome::Ok(offset) => println!("ok at {offset}"),   // history: ok
//!     Outcome::Definite(e) => println!("fail: {e}"),       // history: fail
//!     Outcome::Indeterminate(e) => println!("info: {e}"),  // history: info
//! }
//!
//! let mut consumer = Consumer::new(config)?;
//! let tp = TopicPartition::new("queue", 0);
//! consumer.assign([tp.clone()]);
//! consumer.seek(&tp, Seek::Earliest).await?;
//! for part in consumer.poll(Duration::from_secs(1)).await? {
//!     for r in part.records {
//!         println!("{} {} {:?}", part.tp, r.offset, r.value);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Lower layers: [`conn`] (one pipelined connection with ApiVersions negotiation), [`cluster`]
//! (metadata and connection pool), [`records`] (record batches), [`partitioner`].

pub mod admin;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod group;
pub mod outcome;
pub mod partitioner;
pub mod producer;
pub mod records;
pub mod transactions;

pub use admin::{Admin, NewTopic};
pub use cluster::{ClusterInfo, PartitionInfo, TopicInfo};
pub use config::{Acks, Config, IsolationLevel, OffsetReset};
pub use consumer::{Consumer, PartitionRecords, Seek, TopicPartition};
pub use error::{BrokerCode, ConnError, Error};
pub use group::{Assignor, GroupConsumer, GroupSettings};
pub use outcome::{Outcome, SendError};
pub use producer::Producer;
pub use records::{ConsumerRecord, ProducerIdentity};
pub use transactions::{TransactionalProducer, TxnError, TxnOutcome};
