//! Admin operations: create and delete topics (CreateTopics/DeleteTopics to the controller
//! when the metadata names one, else any broker; `NOT_CONTROLLER` refreshes and retries),
//! describe the cluster and topics (Metadata), and wait until a topic's partitions all have
//! leaders.

use std::sync::Arc;
use std::time::Duration;
// tokio's Instant: the real clock in production, virtual time under `harness sim`.
use tokio::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{Cluster, ClusterInfo, TopicInfo};
use crate::config::Config;
use crate::conn::Connection;
use crate::error::Error;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count (-1: the broker's default).
    pub partitions: i32,
    /// Replication factor (-1: the broker's default).
    pub replication_factor: i16,
    /// Topic configs (`min.insync.replicas`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with no configs.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// Adds a config.
    pub fn config(mut self, k: impl Into<String>, v: impl Into<String>) -> NewTopic {
        self.configs.push((k.into(), v.into()));
        self
    }
}

/// The admin client.
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Admin {
    /// An admin client; nothing is contacted until used.
    pub fn new(config: Config) -> Result<Admin, Error> {
        Ok(Admin {
            cluster: Cluster::new(Arc::new(config)),
        })
    }

    /// The admin client's metadata and connections.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// A connection to the controller if the metadata names a reachable one, else any broker.
    async fn controller_conn(&self) -> Result<Arc<Connection>, Error> {
        self.cluster.refresh().await?;
        let c = self.cluster.snapshot().controller;
        if c >= 0 {
            if let Ok(conn) = self.cluster.conn_to_node(c).await {
                return Ok(conn);
            }
        }
        self.cluster.any_conn().await
    }

    /// Creates topics; one result per topic (errors mapped from the broker's codes, e.g.
    /// `TOPIC_ALREADY_EXISTS`, `INVALID_REPLICATION_FACTOR`, `INVALID_TOPIC_EXCEPTION`).
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        timeout: Duration,
    ) -> Result<Vec<(String, Result<(), Error>)>, Error> {
        let mut req = CreateTopicsRequest::default();
        req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        req.topics = topics
            .iter()
            .map(|t| {
                let mut ct = CreatableTopic::default();
                ct.name = TopicName(sb(&t.name));
                ct.num_partitions = t.partitions;
                ct.replication_factor = t.replication_factor;
                ct.configs = t
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        let mut c = CreatableTopicConfig::default();
                        c.name = sb(k);
                        c.value = Some(sb(v));
                        c
                    })
                    .collect();
                ct
            })
            .collect();
        for round in 0..3 {
            let conn = self.controller_conn().await?;
            let v = conn
                .version(ApiKey::CreateTopics)
                .ok_or_else(|| Error::UnsupportedVersion("CreateTopics".into()))?;
            let resp: CreateTopicsResponse = conn
                .call(v, &req, timeout + self.cluster.config().request_timeout)
                .await?;
            let not_controller = resp
                .topics
                .iter()
                .any(|t| t.error_code == ResponseError::NotController.code());
            if not_controller && round < 2 {
                continue;
            }
            let out = resp
                .topics
                .into_iter()
                .map(|t| {
                    let r = if t.error_code == 0 {
                        Ok(())
                    } else {
                        Err(Error::broker(
                            t.error_code,
                            t.error_message.map(|m| m.to_string()),
                        ))
                    };
                    (t.name.0.to_string(), r)
                })
                .collect();
            return Ok(out);
        }
        Err(Error::NoBroker(
            "no controller accepted CreateTopics".into(),
        ))
    }

    /// Creates one topic and waits (up to `timeout`) until every partition has a leader.
    pub async fn create_topic(
        &self,
        topic: NewTopic,
        timeout: Duration,
    ) -> Result<TopicInfo, Error> {
        let name = topic.name.clone();
        let expected = topic.partitions;
        let mut rs = self.create_topics(&[topic], timeout).await?;
        match rs.pop() {
            Some((_, Ok(()))) => {}
            Some((_, Err(e))) => return Err(e),
            None => {
                return Err(Error::Records(
                    "CreateTopics response without the topic".into(),
                ))
            }
        }
        self.wait_for_leaders(&name, expected, timeout).await
    }

    /// Deletes topics; one result per topic.
    pub async fn delete_topics(
        &self,
        names: &[&str],
        timeout: Duration,
    ) -> Result<Vec<(String, Result<(), Error>)>, Error> {
        for round in 0..3 {
            let conn = self.controller_conn().await?;
            let v = conn
                .version(ApiKey::DeleteTopics)
                .ok_or_else(|| Error::UnsupportedVersion("DeleteTopics".into()))?;
            let mut req = DeleteTopicsRequest::default();
            req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            if v >= 6 {
                req.topics = names
                    .iter()
                    .map(|n| {
                        let mut s = DeleteTopicState::default();
                        s.name = Some(TopicName(sb(n)));
                        s
                    })
                    .collect();
            } else {
                req.topic_names = names.iter().map(|n| TopicName(sb(n))).collect();
            }
            let resp: DeleteTopicsResponse = conn
                .call(v, &req, timeout + self.cluster.config().request_timeout)
                .await?;
            if round < 2
                && resp
                    .responses
                    .iter()
                    .any(|t| t.error_code == ResponseError::NotController.code())
            {
                continue;
            }
            return Ok(resp
                .responses
                .into_iter()
                .map(|t| {
                    let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                    let r = if t.error_code == 0 {
                        Ok(())
                    } else {
                        Err(Error::broker(
                            t.error_code,
                            t.error_message.map(|m| m.to_string()),
                        ))
                    };
                    (name, r)
                })
                .collect());
        }
        Err(Error::NoBroker(
            "no controller accepted DeleteTopics".into(),
        ))
    }

    /// Fresh cluster metadata: brokers, controller, every topic.
    pub async fn describe_cluster(&self) -> Result<ClusterInfo, Error> {
        self.cluster.refresh().await?;
        Ok(self.cluster.snapshot())
    }

    /// Fresh metadata of one topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, Error> {
        self.cluster.refresh().await?;
        self.cluster
            .snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    /// Waits until the topic has `partitions` partitions (any, if negative) each with a leader.
    pub async fn wait_for_leaders(
        &self,
        name: &str,
        partitions: i32,
        timeout: Duration,
    ) -> Result<TopicInfo, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.describe_topic(name).await {
                Ok(t) => {
                    let enough = partitions < 0 || t.partitions.len() as i32 == partitions;
                    if enough && t.partitions.iter().all(|p| p.leader >= 0) {
                        return Ok(t);
                    }
                    format!("{name}: not every partition has a leader yet")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout(last));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
