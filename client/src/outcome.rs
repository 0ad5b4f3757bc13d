//! How a send's result is classified for a Jepsen history: [`Outcome::Ok`] (written, at this
//! offset), [`Outcome::Definite`] (certainly not written: history `fail`) or
//! [`Outcome::Indeterminate`] (may or may not have been written: history `info`).
//!
//! A send is delivered as one batch in one or more *attempts*; each attempt's result is an
//! [`Attempt`]. The rules:
//!
//! 1. An attempt whose request never reached a socket ([`Attempt::NotSent`]: connect refused,
//!    no leader known, connection already closed, delivery timeout before sending) cannot have
//!    appended anything.
//! 2. An attempt that was written and then got no answer ([`Attempt::Lost`]: connection lost,
//!    request timeout, undecodable response) *may* have appended the records.
//! 3. A broker error code is classified by [`effect`]: codes a broker only returns before it
//!    appends (`INVALID_TOPIC_EXCEPTION`, `UNKNOWN_TOPIC_OR_PARTITION`, `NOT_ENOUGH_REPLICAS`,
//!    `MESSAGE_TOO_LARGE`, `CORRUPT_MESSAGE`, `OUT_OF_ORDER_SEQUENCE_NUMBER`, ...) mean *not
//!    appended*. Codes returned after an append (`NOT_ENOUGH_REPLICAS_AFTER_APPEND`,
//!    `REQUEST_TIMED_OUT`), codes from a storage failure mid-write (`KAFKA_STORAGE_ERROR`),
//!    unknown codes, and `NOT_LEADER_OR_FOLLOWER` **with acks=all** (a leader that appended
//!    and then lost leadership while waiting for followers answers with it) mean *maybe
//!    appended*. With acks=0/1, `NOT_LEADER_OR_FOLLOWER` is a pre-append refusal.
//! 4. `DUPLICATE_SEQUENCE_NUMBER` means an earlier attempt *was* appended but the broker no
//!    longer knows its offset: the outcome is `Indeterminate` (an `ok` needs an offset).
//! 5. acks=0: once the request is written nothing more can be known: `Indeterminate`.
//! 6. Once any attempt may have appended, the batch's final outcome can only be `Ok` or
//!    `Indeterminate`, whatever later attempts say (a later `NOT_LEADER_OR_FOLLOWER` or a
//!    refused connection says nothing about the earlier attempt). Only if *every* attempt was
//!    certainly not appended is the outcome `Definite`.
//! 7. A success response is `Ok(base_offset + index in batch)`.
//!
//! Retries (bounded by `retries` and `delivery.timeout.ms`) follow the broker's retriable
//! codes and connection failures; the classification above does not depend on whether the
//! producer retried.

use kafka_protocol::error::ResponseError;

use crate::config::Acks;
use crate::error::BrokerCode;

/// Why a send failed (in an `Outcome::Definite` or `Outcome::Indeterminate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The request was never written to a socket.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request was written; then the connection was lost or the response was unreadable.
    #[error("lost after sending: {0}")]
    Lost(String),
    /// The broker answered with an error code.
    #[error("broker error {code}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The code.
        code: BrokerCode,
        /// The broker's message, if any.
        message: Option<String>,
    },
    /// acks=0: written, never acknowledged.
    #[error("acks=0: written, no acknowledgement")]
    Unacknowledged,
    /// The broker reported the batch a duplicate of an earlier append whose offset it no
    /// longer knows.
    #[error("duplicate sequence: appended earlier at an unknown offset")]
    DuplicateSequence,
    /// `delivery.timeout.ms` passed; carries the last attempt's failure, if any.
    #[error("delivery timeout{}", .0.as_deref().map(|e| format!(" (last: {e})")).unwrap_or_default())]
    DeliveryTimeout(Option<Box<SendError>>),
    /// The send was refused before any attempt (unknown topic, bad partition, producer closed).
    #[error("refused: {0}")]
    Refused(String),
    /// The producer's sequence state for the partition broke (an earlier send was lost);
    /// this batch was not attempted again.
    #[error("aborted after a sequence failure of an earlier batch: {0}")]
    SequenceBroken(String),
}

/// The final result of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written at this offset.
    Ok(i64),
    /// Certainly not written.
    Definite(SendError),
    /// May or may not have been written.
    Indeterminate(SendError),
}

impl Outcome {
    /// The offset, if the send succeeded.
    pub fn offset(&self) -> Option<i64> {
        match self {
            Outcome::Ok(o) => Some(*o),
            _ => None,
        }
    }

    /// The history completion type: `"ok"`, `"fail"` or `"info"`.
    pub fn history_type(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Definite(_) => "fail",
            Outcome::Indeterminate(_) => "info",
        }
    }
}

/// The result of one produce attempt of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Never written to a socket.
    NotSent(String),
    /// Written, then no usable response (connection lost, timeout, bad response).
    Lost(String),
    /// acks=0: written.
    Unacknowledged,
    /// The broker answered with a non-zero code.
    Broker {
        /// The code.
        code: i16,
        /// The broker's message.
        message: Option<String>,
    },
    /// The broker appended the batch at this base offset.
    Appended(i64),
}

/// What an attempt says about whether the batch is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Certainly not appended by this attempt.
    NotAppended,
    /// Maybe appended.
    MaybeAppended,
    /// Appended (by this or an earlier attempt).
    Appended,
}

/// Codes a broker returns to a Produce only before appending anything of the batch.
fn pre_append_code(code: i16, acks: Acks) -> bool {
    use ResponseError as E;
    let Some(e) = ResponseError::try_from_code(code) else {
        return false;
    };
    match e {
        E::NotLeaderOrFollower => acks != Acks::All,
        E::CorruptMessage
        | E::UnknownTopicOrPartition
        | E::LeaderNotAvailable
        | E::MessageTooLarge
        | E::InvalidTopicException
        | E::RecordListTooLarge
        | E::NotEnoughReplicas
        | E::InvalidRequiredAcks
        | E::TopicAuthorizationFailed
        | E::ClusterAuthorizationFailed
        | E::InvalidTimestamp
        | E::UnsupportedVersion
        | E::UnsupportedForMessageFormat
        | E::PolicyViolation
        | E::OutOfOrderSequenceNumber
        | E::InvalidProducerEpoch
        | E::InvalidTxnState
        | E::ConcurrentTransactions
        | E::TransactionalIdAuthorizationFailed
        | E::UnknownProducerId
        | E::FencedLeaderEpoch
        | E::UnknownLeaderEpoch
        | E::InvalidRecord
        | E::ProducerFenced
        | E::InvalidProducerIdMapping
        | E::TransactionCoordinatorFenced => true,
        _ => false,
    }
}

/// What one attempt says about the batch being in the log (rules 1-5 of the module doc).
pub fn effect(attempt: &Attempt, acks: Acks) -> Effect {
    match attempt {
        Attempt::NotSent(_) => Effect::NotAppended,
        Attempt::Lost(_) | Attempt::Unacknowledged => Effect::MaybeAppended,
        Attempt::Appended(_) => Effect::Appended,
        Attempt::Broker { code, .. } => {
            if *code == ResponseError::DuplicateSequenceNumber.code() {
                Effect::Appended
            } else if pre_append_code(*code, acks) {
                Effect::NotAppended
            } else {
                Effect::MaybeAppended
            }
        }
    }
}

/// Whether an attempt's failure is worth retrying. `sequence_gap_expected`: an earlier batch
/// of the same partition is unfinished, so an idempotence sequence error is the expected
/// consequence of that batch's failure rather than lost broker state.
pub fn retriable(attempt: &Attempt, sequence_gap_expected: bool) -> bool {
    match attempt {
        Attempt::NotSent(_) | Attempt::Lost(_) => true,
        Attempt::Unacknowledged | Attempt::Appended(_) => false,
        Attempt::Broker { code, .. } => match ResponseError::try_from_code(*code) {
            Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId) => {
                sequence_gap_expected
            }
            Some(e) => e.is_retriable(),
            None => false,
        },
    }
}

/// The delivery state of one batch across its attempts.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Whether any attempt so far may have appended the batch.
    pub maybe_appended: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's failure.
    pub last: Option<SendError>,
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Final.
    Done(Outcome),
    /// Try again (after backoff and, usually, a metadata refresh).
    Retry,
}

impl Delivery {
    /// Records one attempt. `may_retry`: the retry budget (count and delivery deadline) allows
    /// another attempt; `sequence_gap_expected` as in [`retriable`].
    pub fn record(
        &mut self,
        attempt: Attempt,
        acks: Acks,
        may_retry: bool,
        sequence_gap_expected: bool,
    ) -> Step {
        self.attempts += 1;
        let eff = effect(&attempt, acks);
        match attempt {
            Attempt::Appended(base) => return Step::Done(Outcome::Ok(base)),
            Attempt::Unacknowledged => {
                return Step::Done(Outcome::Indeterminate(SendError::Unacknowledged))
            }
            Attempt::Broker { code, .. } if eff == Effect::Appended => {
                let _ = code;
                return Step::Done(Outcome::Indeterminate(SendError::DuplicateSequence));
            }
            _ => {}
        }
        if eff == Effect::MaybeAppended {
            self.maybe_appended = true;
        }
        let again = may_retry && retriable(&attempt, sequence_gap_expected);
        self.last = Some(match attempt {
            Attempt::NotSent(m) => SendError::NotSent(m),
            Attempt::Lost(m) => SendError::Lost(m),
            Attempt::Broker { code, message } => SendError::Broker {
                code: BrokerCode(code),
                message,
            },
            Attempt::Appended(_) | Attempt::Unacknowledged => SendError::Unacknowledged,
        });
        if again {
            Step::Retry
        } else {
            Step::Done(self.finish(None))
        }
    }

    /// The final outcome when giving up: `why` (delivery timeout, sequence failure) or the
    /// last attempt's error. Definite only if no attempt may have appended (rule 6).
    pub fn finish(&self, why: Option<SendError>) -> Outcome {
        let err = why
            .or_else(|| self.last.clone())
            .unwrap_or_else(|| SendError::NotSent("no attempt made".into()));
        if self.maybe_appended {
            Outcome::Indeterminate(err)
        } else {
            Outcome::Definite(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(e: ResponseError) -> Attempt {
        Attempt::Broker {
            code: e.code(),
            message: None,
        }
    }

    #[test]
    fn single_attempt_effects() {
        use ResponseError as E;
        let cases = [
            (
                broker(E::InvalidTopicException),
                Acks::All,
                Effect::NotAppended,
            ),
            (broker(E::NotEnoughReplicas), Acks::All, Effect::NotAppended),
            (
                broker(E::NotEnoughReplicasAfterAppend),
                Acks::All,
                Effect::MaybeAppended,
            ),
            (broker(E::RequestTimedOut), Acks::All, Effect::MaybeAppended),
            (
                broker(E::NotLeaderOrFollower),
                Acks::All,
                Effect::MaybeAppended,
            ),
            (
                broker(E::NotLeaderOrFollower),
                Acks::Leader,
                Effect::NotAppended,
            ),
            (
                broker(E::KafkaStorageError),
                Acks::Leader,
                Effect::MaybeAppended,
            ),
            (
                broker(E::UnknownServerError),
                Acks::Leader,
                Effect::MaybeAppended,
            ),
            (
                Attempt::Broker {
                    code: 9999,
                    message: None,
                },
                Acks::Leader,
                Effect::MaybeAppended,
            ),
            (
                broker(E::DuplicateSequenceNumber),
                Acks::All,
                Effect::Appended,
            ),
            (
                Attempt::NotSent("refused".into()),
                Acks::All,
                Effect::NotAppended,
            ),
            (
                Attempt::Lost("reset".into()),
                Acks::Leader,
                Effect::MaybeAppended,
            ),
            (Attempt::Unacknowledged, Acks::None, Effect::MaybeAppended),
            (Attempt::Appended(7), Acks::All, Effect::Appended),
        ];
        for (a, acks, want) in cases {
            assert_eq!(effect(&a, acks), want, "{a:?} with {acks:?}");
        }
    }

    #[test]
    fn definite_only_if_every_attempt_was_definite() {
        // Refused connection, then a definite broker refusal: Definite.
        let mut d = Delivery::default();
        assert_eq!(
            d.record(Attempt::NotSent("refused".into()), Acks::All, true, false),
            Step::Retry
        );
        let s = d.record(
            broker(ResponseError::NotEnoughReplicas),
            Acks::All,
            false,
            false,
        );
        assert!(matches!(
            s,
            Step::Done(Outcome::Definite(SendError::Broker { .. }))
        ));

        // A lost attempt, then NOT_ENOUGH_REPLICAS: Indeterminate (rule 6).
        let mut d = Delivery::default();
        assert_eq!(
            d.record(Attempt::Lost("reset".into()), Acks::All, true, false),
            Step::Retry
        );
        let s = d.record(
            broker(ResponseError::NotEnoughReplicas),
            Acks::All,
            false,
            false,
        );
        assert!(matches!(s, Step::Done(Outcome::Indeterminate(_))), "{s:?}");

        // acks=1: NOT_LEADER (pre-append), then retries exhausted by refusals: Definite.
        let mut d = Delivery::default();
        assert_eq!(
            d.record(
                broker(ResponseError::NotLeaderOrFollower),
                Acks::Leader,
                true,
                false
            ),
            Step::Retry
        );
        let s = d.record(
            Attempt::NotSent("refused".into()),
            Acks::Leader,
            false,
            false,
        );
        assert!(matches!(s, Step::Done(Outcome::Definite(_))), "{s:?}");

        // acks=all: NOT_LEADER may follow an append: Indeterminate.
        let mut d = Delivery::default();
        let s = d.record(
            broker(ResponseError::NotLeaderOrFollower),
            Acks::All,
            false,
            false,
        );
        assert!(matches!(s, Step::Done(Outcome::Indeterminate(_))), "{s:?}");

        // NOT_ENOUGH_REPLICAS_AFTER_APPEND is never definite.
        let mut d = Delivery::default();
        let s = d.record(
            broker(ResponseError::NotEnoughReplicasAfterAppend),
            Acks::All,
            false,
            false,
        );
        assert!(matches!(s, Step::Done(Outcome::Indeterminate(_))), "{s:?}");
    }

    #[test]
    fn success_after_uncertain_attempts_is_ok() {
        let mut d = Delivery::default();
        assert_eq!(
            d.record(Attempt::Lost("timeout".into()), Acks::All, true, false),
            Step::Retry
        );
        assert_eq!(
            d.record(Attempt::Appended(41), Acks::All, true, false),
            Step::Done(Outcome::Ok(41))
        );
    }

    #[test]
    fn delivery_timeout_keeps_uncertainty() {
        let mut d = Delivery::default();
        d.record(Attempt::NotSent("refused".into()), Acks::All, true, false);
        assert!(matches!(
            d.finish(Some(SendError::DeliveryTimeout(None))),
            Outcome::Definite(SendError::DeliveryTimeout(_))
        ));
        d.record(Attempt::Lost("reset".into()), Acks::All, true, false);
        d.record(Attempt::NotSent("refused".into()), Acks::All, true, false);
        assert!(matches!(
            d.finish(Some(SendError::DeliveryTimeout(None))),
            Outcome::Indeterminate(_)
        ));
    }

    #[test]
    fn non_retriable_and_special_codes() {
        // INVALID_TOPIC is final at once, and definite.
        let mut d = Delivery::default();
        let s = d.record(
            broker(ResponseError::InvalidTopicException),
            Acks::All,
            true,
            false,
        );
        assert!(matches!(s, Step::Done(Outcome::Definite(_))));
        // Duplicate sequence: appended, offset unknown.
        let mut d = Delivery::default();
        let s = d.record(
            broker(ResponseError::DuplicateSequenceNumber),
            Acks::All,
            true,
            false,
        );
        assert_eq!(
            s,
            Step::Done(Outcome::Indeterminate(SendError::DuplicateSequence))
        );
        // acks=0.
        let mut d = Delivery::default();
        let s = d.record(Attempt::Unacknowledged, Acks::None, true, false);
        assert_eq!(
            s,
            Step::Done(Outcome::Indeterminate(SendError::Unacknowledged))
        );
        // Out-of-order sequence: retried only behind an unfinished earlier batch.
        let ooo = broker(ResponseError::OutOfOrderSequenceNumber);
        assert!(retriable(&ooo, true));
        assert!(!retriable(&ooo, false));
        let mut d = Delivery::default();
        let s = d.record(ooo, Acks::All, true, false);
        assert!(matches!(s, Step::Done(Outcome::Definite(_))));
    }
}
