//! Client configuration: one [`Config`] for producer, consumer and admin, with fields named
//! after the Kafka client properties they mirror, and [`Config::from_properties`], which
//! parses `name=value` pairs and rejects unknown names and bad values.

use std::time::Duration;

use crate::error::Error;

/// How many replicas must acknowledge a produce (`acks`): the one type a run's setting travels
/// in, from a spec file (`"0"`, `"1"`, `"all"`) to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Acks {
    /// `acks=0`: no response at all; a send's outcome is never known.
    #[serde(rename = "0")]
    None,
    /// `acks=1`: the leader appended the records.
    #[serde(rename = "1")]
    Leader,
    /// `acks=all` (`-1`): every in-sync replica has them (the high watermark passed them).
    #[serde(rename = "all")]
    All,
}

impl std::str::FromStr for Acks {
    type Err = String;
    /// `0`, `1`, `all` or `-1`, as Kafka's `acks` property.
    fn from_str(s: &str) -> Result<Acks, String> {
        match s.trim() {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("`{other}` is not one of 0, 1, all")),
        }
    }
}

impl std::fmt::Display for Acks {
    /// The property's value: `0`, `1` or `all`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

impl Acks {
    /// The value of the Produce request's `acks` field.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Where a consumer starts when it has no valid position (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start offset.
    Earliest,
    /// The log end offset (high watermark, or last stable offset for read_committed).
    Latest,
    /// Return [`Error::OffsetOutOfRange`] from `poll`.
    None,
}

/// Which records a consumer may read (`isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Everything below the high watermark.
    ReadUncommitted,
    /// Only below the last stable offset, and no records of aborted transactions.
    ReadCommitted,
}

impl IsolationLevel {
    /// The value of Fetch's and ListOffsets' `isolation_level` field.
    pub fn wire(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

/// Client configuration. Defaults follow the Java client's where they matter for behaviour
/// (acks=all, idempotence on, 5 in flight), with shorter timeouts suited to fault-injection runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `bootstrap.servers`: `host:port` of brokers to get metadata from first.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`, sent in every request header.
    pub client_id: String,
    /// `request.timeout.ms`: how long to wait for one response once a request is written.
    pub request_timeout: Duration,
    /// `socket.connection.setup.timeout.ms`: how long a TCP connect may take.
    pub connect_timeout: Duration,
    /// `metadata.max.age.ms`: metadata older than this is refreshed before use.
    pub metadata_max_age: Duration,
    /// `retry.backoff.ms`: pause before a retry.
    pub retry_backoff: Duration,
    /// `acks`.
    pub acks: Acks,
    /// `retries`: how many times a batch is re-sent after a retriable failure.
    pub retries: u32,
    /// `delivery.timeout.ms`: upper bound on a send from call to outcome (retries included).
    pub delivery_timeout: Duration,
    /// `max.in.flight.requests.per.connection`: produce requests in flight per partition.
    pub max_in_flight: usize,
    /// `enable.idempotence`: producer id, epoch and sequence numbers (needs `acks=all`).
    pub enable_idempotence: bool,
    /// `linger.ms`: how long a partition's sender waits to fill a batch.
    pub linger: Duration,
    /// `batch.size`: the most value+key bytes in one batch.
    pub batch_size: usize,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// `isolation.level`.
    pub isolation_level: IsolationLevel,
    /// `fetch.max.wait.ms`: how long a broker may hold a Fetch for `fetch.min.bytes`.
    pub fetch_max_wait: Duration,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`: per Fetch response.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            client_id: "jepsen-client".into(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            metadata_max_age: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            acks: Acks::All,
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(30),
            max_in_flight: 5,
            enable_idempotence: true,
            linger: Duration::from_millis(0),
            batch_size: 16384,
            auto_offset_reset: OffsetReset::Latest,
            isolation_level: IsolationLevel::ReadUncommitted,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            max_partition_fetch_bytes: 1 << 20,
        }
    }
}

fn ms(name: &str, v: &str) -> Result<Duration, Error> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| Error::Config(format!("{name}={v}: expected milliseconds")))
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, Error> {
    v.trim()
        .parse::<T>()
        .map_err(|_| Error::Config(format!("{name}={v}: expected a number")))
}

fn boolean(name: &str, v: &str) -> Result<bool, Error> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::Config(format!("{name}={v}: expected true or false"))),
    }
}

impl Config {
    /// A default config with `bootstrap.servers` set.
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>) -> Config {
        Config {
            bootstrap_servers: bootstrap.into_iter().map(Into::into).collect(),
            ..Config::default()
        }
    }

    /// Applies Kafka client properties on top of the defaults. Unknown names, bad values and
    /// inconsistent combinations (idempotence without acks=all) are errors naming the property.
    pub fn from_properties<K: AsRef<str>, V: AsRef<str>>(
        props: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Config, Error> {
        let mut c = Config::default();
        let mut idempotence_set = false;
        for (k, v) in props {
            let (k, v) = (k.as_ref().trim(), v.as_ref().trim());
            match k {
                "bootstrap.servers" => {
                    c.bootstrap_servers = v
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if c.bootstrap_servers.is_empty() {
                        return Err(Error::Config("bootstrap.servers is empty".into()));
                    }
                }
                "client.id" => c.client_id = v.to_string(),
                "request.timeout.ms" => c.request_timeout = ms(k, v)?,
                "socket.connection.setup.timeout.ms" => c.connect_timeout = ms(k, v)?,
                "metadata.max.age.ms" => c.metadata_max_age = ms(k, v)?,
                "retry.backoff.ms" => c.retry_backoff = ms(k, v)?,
                "acks" => {
                    c.acks = match v {
                        "0" => Acks::None,
                        "1" => Acks::Leader,
                        "all" | "-1" => Acks::All,
                        _ => return Err(Error::Config(format!("acks={v}: expected 0, 1 or all"))),
                    }
                }
                "retries" => c.retries = num(k, v)?,
                "delivery.timeout.ms" => c.delivery_timeout = ms(k, v)?,
                "max.in.flight.requests.per.connection" => {
                    c.max_in_flight = num(k, v)?;
                    if c.max_in_flight == 0 {
                        return Err(Error::Config(format!("{k}={v}: must be at least 1")));
                    }
                }
                "enable.idempotence" => {
                    c.enable_idempotence = boolean(k, v)?;
                    idempotence_set = true;
                }
                "linger.ms" => c.linger = ms(k, v)?,
                "batch.size" => c.batch_size = num(k, v)?,
                "auto.offset.reset" => {
                    c.auto_offset_reset = match v {
                        "earliest" => OffsetReset::Earliest,
                        "latest" => OffsetReset::Latest,
                        "none" => OffsetReset::None,
                        _ => {
                            return Err(Error::Config(format!(
                                "auto.offset.reset={v}: expected earliest, latest or none"
                            )))
                        }
                    }
                }
                "isolation.level" => {
                    c.isolation_level = match v {
                        "read_uncommitted" => IsolationLevel::ReadUncommitted,
                        "read_committed" => IsolationLevel::ReadCommitted,
                        _ => {
                            return Err(Error::Config(format!(
                                "isolation.level={v}: expected read_uncommitted or read_committed"
                            )))
                        }
                    }
                }
                "fetch.max.wait.ms" => c.fetch_max_wait = ms(k, v)?,
                "fetch.min.bytes" => c.fetch_min_bytes = num(k, v)?,
                "fetch.max.bytes" => c.fetch_max_bytes = num(k, v)?,
                "max.partition.fetch.bytes" => c.max_partition_fetch_bytes = num(k, v)?,
                _ => return Err(Error::Config(format!("unknown property `{k}`"))),
            }
        }
        // As in the Java client: idempotence defaults on, but is turned off silently by acks
        // other than all unless it was asked for explicitly.
        if c.enable_idempotence && c.acks != Acks::All {
            if idempotence_set {
                return Err(Error::Config(
                    "enable.idempotence=true requires acks=all".into(),
                ));
            }
            c.enable_idempotence = false;
        }
        if c.enable_idempotence && c.max_in_flight > 5 {
            return Err(Error::Config(
                "enable.idempotence=true requires max.in.flight.requests.per.connection <= 5"
                    .into(),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_properties() {
        let c = Config::from_properties([
            ("bootstrap.servers", "a:1, b:2"),
            ("acks", "1"),
            ("retries", "3"),
            ("linger.ms", "5"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
        ])
        .expect("valid");
        assert_eq!(c.bootstrap_servers, vec!["a:1", "b:2"]);
        assert_eq!(c.acks, Acks::Leader);
        assert_eq!(c.retries, 3);
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.isolation_level, IsolationLevel::ReadCommitted);
        assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
        // acks=1 silently turns the default idempotence off.
        assert!(!c.enable_idempotence);
    }

    #[test]
    fn rejects_unknown_and_bad_values() {
        assert!(matches!(
            Config::from_properties([("no.such.thing", "1")]),
            Err(Error::Config(m)) if m.contains("no.such.thing")
        ));
        assert!(Config::from_properties([("acks", "2")]).is_err());
        assert!(Config::from_properties([("linger.ms", "soon")]).is_err());
        assert!(Config::from_properties([("acks", "1"), ("enable.idempotence", "true")]).is_err());
        assert!(Config::from_properties([("max.in.flight.requests.per.connection", "0")]).is_err());
    }
}
