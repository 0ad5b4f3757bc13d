//! The queue workload's operation generator, after Jepsen's Kafka queue workload: keys map to
//! topic partitions, values are unique per key (a counter per key), keys retire after a bounded
//! number of writes and are replaced by fresh ones; operations are `send`, `poll`, `txn` (sends
//! and polls in one transaction), `assign`, `subscribe` and `crash`. Everything comes from one
//! seed, so the same seed gives the same operations in the same order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Settings of the generator.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Partitions of the workload topic; key `k<i>` lives in partition `i % partitions`.
    pub partitions: u32,
    /// Keys written concurrently (the active window).
    pub active_keys: usize,
    /// Writes after which a key retires (a fresh key takes its place).
    pub writes_per_key: u64,
    /// Relative weight of `send` operations.
    pub send_weight: u32,
    /// Relative weight of `poll` operations.
    pub poll_weight: u32,
    /// Relative weight of `txn` operations (0 without transactions).
    pub txn_weight: u32,
    /// Relative weight of `assign` (or `subscribe`) operations.
    pub assign_weight: u32,
    /// Relative weight of `crash` operations (drop and reopen the client).
    pub crash_weight: u32,
    /// Subscribe (group protocol) instead of assign.
    pub subscribe: bool,
    /// Largest number of micro-ops in one `txn`.
    pub max_txn_len: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            partitions: 4,
            active_keys: 8,
            writes_per_key: 512,
            send_weight: 10,
            poll_weight: 10,
            txn_weight: 0,
            assign_weight: 1,
            crash_weight: 0,
            subscribe: false,
            max_txn_len: 4,
        }
    }
}

/// One micro-op of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mop {
    /// Send `value` to `key` (in partition `partition`).
    Send {
        /// Key name (`k<i>`).
        key: String,
        /// Partition the key maps to.
        partition: u32,
        /// Value, unique for the key.
        value: u64,
    },
    /// Poll whatever the consumer has.
    Poll,
}

/// One operation to invoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// A single send.
    Send(Mop),
    /// A single poll.
    Poll,
    /// Sends and polls in one transaction.
    Txn(Vec<Mop>),
    /// Assign these partitions to the process's consumer.
    Assign(Vec<u32>),
    /// Subscribe the process's consumer to the topic (group protocol).
    Subscribe,
    /// Drop and reopen the process's client.
    Crash,
}

impl Invocation {
    /// The history's `f` for this operation.
    pub fn f(&self) -> &'static str {
        match self {
            Invocation::Send(_) => "send",
            Invocation::Poll => "poll",
            Invocation::Txn(_) => "txn",
            Invocation::Assign(_) => "assign",
            Invocation::Subscribe => "subscribe",
            Invocation::Crash => "crash",
        }
    }

    /// The history's invoke `value`, as DESIGN.md's JSON with the key's partition as a send's
    /// fourth element (`[["send","k2",41,2]]`, `[["poll"]]`): the checkers build version orders
    /// per partition (older readers ignore the extra element).
    pub fn to_json(&self) -> Value {
        fn mop(m: &Mop) -> Value {
            match m {
                Mop::Send {
                    key,
                    partition,
                    value,
                } => json!(["send", key, value, partition]),
                Mop::Poll => json!(["poll"]),
            }
        }
        match self {
            Invocation::Send(m) => json!([mop(m)]),
            Invocation::Poll => json!([["poll"]]),
            Invocation::Txn(ms) => Value::Array(ms.iter().map(mop).collect()),
            Invocation::Assign(ps) => json!(ps),
            Invocation::Subscribe => json!(["all"]),
            Invocation::Crash => Value::Null,
        }
    }
}

#[derive(Debug, Clone)]
struct KeyState {
    id: u64,
    next_value: u64,
}

/// The seeded generator. One per run; workers draw operations from it in turn.
#[derive(Debug, Clone)]
pub struct QueueGenerator {
    config: QueueConfig,
    rng: ChaCha8Rng,
    active: Vec<KeyState>,
    next_key: u64,
}

impl QueueGenerator {
    /// A generator for `config`, seeded with `seed`.
    pub fn new(config: QueueConfig, seed: u64) -> QueueGenerator {
        let active = (0..config.active_keys.max(1) as u64)
            .map(|id| KeyState { id, next_value: 0 })
            .collect();
        QueueGenerator {
            next_key: config.active_keys.max(1) as u64,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            active,
        }
    }

    /// The partition key `k<id>` lives in.
    pub fn partition_of(&self, key_id: u64) -> u32 {
        (key_id % u64::from(self.config.partitions.max(1))) as u32
    }

    fn next_send(&mut self) -> Mop {
        let slot = self.rng.random_range(0..self.active.len());
        let k = &mut self.active[slot];
        let (id, value) = (k.id, k.next_value);
        k.next_value += 1;
        if k.next_value >= self.config.writes_per_key {
            // Retire the key: a fresh one takes its slot.
            self.active[slot] = KeyState {
                id: self.next_key,
                next_value: 0,
            };
            self.next_key += 1;
        }
        Mop::Send {
            key: format!("k{id}"),
            partition: self.partition_of(id),
            value,
        }
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Invocation {
        let c = &self.config;
        let weights = [
            c.send_weight,
            c.poll_weight,
            c.txn_weight,
            c.assign_weight,
            c.crash_weight,
        ];
        let total: u32 = weights.iter().sum();
        let mut pick = self.rng.random_range(0..total.max(1));
        let mut kind = 0;
        for (i, w) in weights.iter().enumerate() {
            if pick < *w {
                kind = i;
                break;
            }
            pick -= w;
        }
        match kind {
            0 => Invocation::Send(self.next_send()),
            1 => Invocation::Poll,
            2 => {
                let n = self.rng.random_range(1..=self.config.max_txn_len.max(1));
                let ms = (0..n)
                    .map(|_| {
                        if self.rng.random_bool(0.5) {
                            self.next_send()
                        } else {
                            Mop::Poll
                        }
                    })
                    .collect();
                Invocation::Txn(ms)
            }
            3 if self.config.subscribe => Invocation::Subscribe,
            3 => {
                let parts: Vec<u32> = (0..self.config.partitions.max(1))
                    .filter(|_| self.rng.random_bool(0.5))
                    .collect();
                if parts.is_empty() {
                    Invocation::Assign((0..self.config.partitions.max(1)).collect())
                } else {
                    Invocation::Assign(parts)
                }
            }
            _ => Invocation::Crash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn same_seed_same_ops_and_different_seed_differs() {
        let a: Vec<_> = {
            let mut g = QueueGenerator::new(QueueConfig::default(), 7);
            (0..500).map(|_| g.next_op()).collect()
        };
        let b: Vec<_> = {
            let mut g = QueueGenerator::new(QueueConfig::default(), 7);
            (0..500).map(|_| g.next_op()).collect()
        };
        let c: Vec<_> = {
            let mut g = QueueGenerator::new(QueueConfig::default(), 8);
            (0..500).map(|_| g.next_op()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn values_are_unique_per_key_and_keys_retire() {
        let cfg = QueueConfig {
            writes_per_key: 10,
            txn_weight: 3,
            ..QueueConfig::default()
        };
        let mut g = QueueGenerator::new(cfg, 1);
        let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for _ in 0..5000 {
            let sends: Vec<Mop> = match g.next_op() {
                Invocation::Send(m) => vec![m],
                Invocation::Txn(ms) => ms,
                _ => vec![],
            };
            for m in sends {
                if let Mop::Send {
                    key,
                    value,
                    partition,
                } = m
                {
                    let id: u64 = key[1..].parse().expect("k<id>");
                    assert_eq!(partition, (id % 4) as u32);
                    assert!(seen.entry(key).or_default().insert(value), "value reused");
                }
            }
        }
        assert!(
            seen.len() > 8,
            "keys retired and were replaced ({})",
            seen.len()
        );
        assert!(seen.values().all(|vs| vs.len() <= 10));
    }

    #[test]
    fn invocations_render_as_the_design_history_format() {
        let send = Invocation::Send(Mop::Send {
            key: "k2".into(),
            partition: 2,
            value: 41,
        });
        assert_eq!(send.to_json().to_string(), r#"[["send","k2",41,2]]"#);
        assert_eq!(Invocation::Poll.to_json().to_string(), r#"[["poll"]]"#);
        assert_eq!(send.f(), "send");
    }
}
