//! The config admin APIs: DescribeConfigs (v1–4), AlterConfigs (v0–2, whole-set replacement)
//! and IncrementalAlterConfigs (v0–1: SET, DELETE, APPEND, SUBTRACT) for topic and broker
//! resources. Topic configs live in the metadata image (an `AlterTopicConfigs` command through
//! the controller) and are validated as CreateTopics validates them; broker configs are what
//! `server.properties` and the overrides gave, described as static (read-only): dynamic broker
//! configs are refused with INVALID_REQUEST.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use crate::metadata::Command;

/// Kafka's `ConfigResource.Type` codes.
mod resource {
    /// TOPIC
    pub const TOPIC: i8 = 2;
    /// BROKER
    pub const BROKER: i8 = 4;
}

/// Kafka's `ConfigSource` codes.
mod source {
    /// DYNAMIC_TOPIC_CONFIG
    pub const DYNAMIC_TOPIC: i8 = 1;
    /// STATIC_BROKER_CONFIG
    pub const STATIC_BROKER: i8 = 4;
    /// DEFAULT_CONFIG
    pub const DEFAULT: i8 = 5;
}

/// Error codes these APIs answer with.
mod codes {
    /// UNKNOWN_TOPIC_OR_PARTITION
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// INVALID_CONFIG
    pub const INVALID_CONFIG: i16 = 40;
    /// INVALID_REQUEST
    pub const INVALID_REQUEST: i16 = 42;
}

/// Kafka's defaults of the topic configs this broker acts on, described with source
/// DEFAULT_CONFIG when neither the topic nor the broker's properties set them.
const TOPIC_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.insync.replicas", "1"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
];

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn entry(name: &str, value: &str, src: i8, read_only: bool) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = sb(name);
    e.value = Some(sb(value));
    e.config_source = src;
    e.read_only = read_only;
    e
}

/// A resource's answer: its entries, or an error code and message.
type Described = Result<Vec<DescribeConfigsResourceResult>, (i16, String)>;

/// Whether a broker resource name addresses this broker (its id, or "" for the cluster
/// default, which this broker describes with its own static config).
fn is_this_broker(broker: &Broker, name: &str) -> Result<(), (i16, String)> {
    if name.is_empty() || name.parse::<i32>() == Ok(broker.config.node_id) {
        Ok(())
    } else {
        Err((
            codes::INVALID_REQUEST,
            format!(
                "broker resource `{name}` is not this broker ({})",
                broker.config.node_id
            ),
        ))
    }
}

/// A topic's configs as this broker's image has them.
fn topic_configs(broker: &Broker, name: &str) -> Result<BTreeMap<String, String>, (i16, String)> {
    broker
        .image()
        .topics
        .get(name)
        .map(|t| t.configs.clone())
        .ok_or_else(|| {
            (
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic `{name}` does not exist"),
            )
        })
}

fn describe_one(broker: &Broker, kind: i8, name: &str) -> Described {
    match kind {
        resource::TOPIC => {
            let topic_configs = topic_configs(broker, name)?;
            let mut out: BTreeMap<String, DescribeConfigsResourceResult> = BTreeMap::new();
            for (k, v) in TOPIC_DEFAULTS {
                let e = match broker.config.raw.get(*k) {
                    Some(b) => entry(k, b, source::STATIC_BROKER, false),
                    None => entry(k, v, source::DEFAULT, false),
                };
                out.insert(k.to_string(), e);
            }
            for (k, v) in &topic_configs {
                out.insert(k.clone(), entry(k, v, source::DYNAMIC_TOPIC, false));
            }
            Ok(out.into_values().collect())
        }
        resource::BROKER => {
            is_this_broker(broker, name)?;
            Ok(broker
                .config
                .raw
                .iter()
                .map(|(k, v)| entry(k, v, source::STATIC_BROKER, true))
                .collect())
        }
        other => Err((
            codes::INVALID_REQUEST,
            format!("resource type {other} is not supported (topic 2 and broker 4 are)"),
        )),
    }
}

/// DescribeConfigs: every requested resource's configs (all of them, or the named keys).
/// Synonyms and documentation are not returned.
pub fn describe_configs(broker: &Broker, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for r in req.resources {
        let name = r.resource_name.to_string();
        let mut out = DescribeConfigsResult::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        match describe_one(broker, r.resource_type, &name) {
            Ok(mut entries) => {
                // Null or empty (librdkafka sends an empty list): every key.
                if let Some(keys) = r.configuration_keys.as_ref().filter(|k| !k.is_empty()) {
                    entries.retain(|e| keys.contains(&e.name));
                }
                out.configs = entries;
            }
            Err((code, msg)) => {
                out.error_code = code;
                out.error_message = Some(sb(&msg));
            }
        }
        resp.results.push(out);
    }
    tracing::debug!(resources = resp.results.len(), "DescribeConfigs answered");
    resp
}

/// One config change of an alter request.
enum Change {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Applies `changes` to `configs` (list values are comma-separated, as Kafka's).
fn apply_changes(configs: &mut BTreeMap<String, String>, changes: Vec<Change>) {
    let split = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    for c in changes {
        match c {
            Change::Set(k, v) => {
                configs.insert(k, v);
            }
            Change::Delete(k) => {
                configs.remove(&k);
            }
            Change::Append(k, v) => {
                let mut items = configs.get(&k).map(|s| split(s)).unwrap_or_default();
                for i in split(&v) {
                    if !items.contains(&i) {
                        items.push(i);
                    }
                }
                configs.insert(k, items.join(","));
            }
            Change::Subtract(k, v) => {
                let remove = split(&v);
                let items: Vec<String> = configs
                    .get(&k)
                    .map(|s| split(s))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|i| !remove.contains(i))
                    .collect();
                configs.insert(k, items.join(","));
            }
        }
    }
}

/// Alters one resource: `replace` (AlterConfigs) starts from no topic configs, else from the
/// current ones. Returns the error to answer, if any.
async fn alter_one(
    broker: &Arc<Broker>,
    kind: i8,
    name: &str,
    replace: bool,
    changes: Vec<Change>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    match kind {
        resource::TOPIC => {
            let topic_configs = topic_configs(broker, name)?;
            let mut configs = if replace {
                BTreeMap::new()
            } else {
                topic_configs
            };
            apply_changes(&mut configs, changes);
            broker
                .config
                .validate_topic_configs(&configs)
                .map_err(|e| (codes::INVALID_CONFIG, e.to_string()))?;
            if validate_only {
                return Ok(());
            }
            let r = broker
                .propose(Command::AlterTopicConfigs {
                    name: name.to_string(),
                    configs,
                })
                .await;
            if r.error_code != 0 {
                return Err((r.error_code, r.message));
            }
            tracing::info!(topic = name, "topic configs altered");
            Ok(())
        }
        resource::BROKER => {
            is_this_broker(broker, name)?;
            Err((
                codes::INVALID_REQUEST,
                "dynamic broker configs are not supported: set them in server.properties".into(),
            ))
        }
        other => Err((
            codes::INVALID_REQUEST,
            format!("resource type {other} is not supported (topic 2 and broker 4 are)"),
        )),
    }
}

macro_rules! answer {
    ($out:ty, $kind:expr, $name:expr, $result:expr) => {{
        let mut out = <$out>::default();
        out.resource_type = $kind;
        out.resource_name = $name;
        if let Err((code, msg)) = $result {
            out.error_code = code;
            out.error_message = Some(sb(&msg));
        }
        out
    }};
}

/// IncrementalAlterConfigs: SET / DELETE / APPEND / SUBTRACT per key.
pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for r in req.resources {
        let name = r.resource_name.to_string();
        let mut changes = Vec::new();
        let mut bad = None;
        for c in r.configs {
            let k = c.name.to_string();
            let v = c.value.map(|v| v.to_string()).unwrap_or_default();
            changes.push(match c.config_operation {
                0 => Change::Set(k, v),
                1 => Change::Delete(k),
                2 => Change::Append(k, v),
                3 => Change::Subtract(k, v),
                op => {
                    bad = Some((
                        codes::INVALID_REQUEST,
                        format!("unknown config operation {op}"),
                    ));
                    continue;
                }
            });
        }
        let result = match bad {
            Some(e) => Err(e),
            None => {
                alter_one(
                    broker,
                    r.resource_type,
                    &name,
                    false,
                    changes,
                    req.validate_only,
                )
                .await
            }
        };
        resp.responses.push(answer!(
            incremental_alter_configs_response::AlterConfigsResourceResponse,
            r.resource_type,
            r.resource_name,
            result
        ));
    }
    resp
}

/// AlterConfigs (legacy): the given entries replace the resource's whole config set.
pub async fn alter_configs(broker: &Arc<Broker>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for r in req.resources {
        let name = r.resource_name.to_string();
        let changes = r
            .configs
            .into_iter()
            .map(|c| match c.value {
                Some(v) => Change::Set(c.name.to_string(), v.to_string()),
                None => Change::Delete(c.name.to_string()),
            })
            .collect();
        let result = alter_one(
            broker,
            r.resource_type,
            &name,
            true,
            changes,
            req.validate_only,
        )
        .await;
        resp.responses.push(answer!(
            alter_configs_response::AlterConfigsResourceResponse,
            r.resource_type,
            r.resource_name,
            result
        ));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_changes_set_delete_append_and_subtract() {
        let mut c: BTreeMap<String, String> = [
            ("retention.ms".to_string(), "1000".to_string()),
            ("cleanup.policy".to_string(), "delete".to_string()),
        ]
        .into_iter()
        .collect();
        apply_changes(
            &mut c,
            vec![
                Change::Set("min.insync.replicas".into(), "2".into()),
                Change::Delete("retention.ms".into()),
                Change::Append("cleanup.policy".into(), "compact,delete".into()),
            ],
        );
        assert_eq!(c["min.insync.replicas"], "2");
        assert!(!c.contains_key("retention.ms"));
        assert_eq!(c["cleanup.policy"], "delete,compact");
        apply_changes(
            &mut c,
            vec![Change::Subtract("cleanup.policy".into(), "delete".into())],
        );
        assert_eq!(c["cleanup.policy"], "compact");
    }

    #[test]
    fn answers_encode_at_every_served_version() {
        use kafka_protocol::protocol::Encodable;
        let mut res = DescribeConfigsResult::default();
        res.resource_type = resource::TOPIC;
        res.resource_name = sb("t");
        res.configs = vec![entry("retention.ms", "1", source::DYNAMIC_TOPIC, false)];
        let mut resp = DescribeConfigsResponse::default();
        resp.results = vec![res];
        for v in 1..=4 {
            let mut buf = bytes::BytesMut::new();
            resp.encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("v{v}: {e}"));
        }
    }
}
