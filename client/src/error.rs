//! The client's error types: connection-level errors (which say whether a request reached the
//! socket) and the general [`Error`] returned by admin, consumer and metadata calls.

use kafka_protocol::error::ResponseError;

/// A Kafka error code with its name, as returned by a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerCode(pub i16);

impl BrokerCode {
    /// The protocol error this code names (`Unknown(code)` for codes this crate does not know).
    pub fn error(self) -> Option<ResponseError> {
        ResponseError::try_from_code(self.0)
    }
}

impl std::fmt::Display for BrokerCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error() {
            Some(e) => write!(f, "{e:?} ({})", self.0),
            None => write!(f, "NONE (0)"),
        }
    }
}

/// What went wrong with one request on one connection. The variants say whether the request
/// could have reached the broker, which the outcome classification depends on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The request was never written to a socket (connect refused or timed out, connection
    /// already closed, encoding failed): the broker cannot have seen it.
    #[error("request not sent: {0}")]
    NotSent(String),
    /// The request was (possibly partly) written, then the connection failed before a response.
    #[error("connection lost after sending: {0}")]
    Lost(String),
    /// The request was written and no response came within the request timeout.
    #[error("request timed out after sending")]
    TimedOut,
    /// The response could not be decoded or did not match the request.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ConnError {
    /// Whether the broker may have received the request.
    pub fn may_have_been_sent(&self) -> bool {
        !matches!(self, ConnError::NotSent(_))
    }
}

/// Errors of admin, consumer and metadata operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A connection-level failure.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The broker answered with an error code.
    #[error("broker error {code}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The error code.
        code: BrokerCode,
        /// The broker's message, when it sent one.
        message: Option<String>,
    },
    /// No broker could be reached (every bootstrap and known broker failed).
    #[error("no broker reachable: {0}")]
    NoBroker(String),
    /// The topic is not in the cluster metadata.
    #[error("unknown topic or partition {0}")]
    UnknownTopic(String),
    /// The partition has no leader in the current metadata.
    #[error("no leader for {0}")]
    NoLeader(String),
    /// The broker supports no version of an API in the range this client speaks.
    #[error("broker supports no usable version of {0}")]
    UnsupportedVersion(String),
    /// A configuration error (unknown property, bad value).
    #[error("config: {0}")]
    Config(String),
    /// A consumer operation on a partition that is not assigned.
    #[error("partition {0} is not assigned")]
    NotAssigned(String),
    /// A fetch position is out of range and `auto.offset.reset=none`.
    #[error("offset out of range for {0} and auto.offset.reset=none")]
    OffsetOutOfRange(String),
    /// The operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Record batches could not be built or parsed.
    #[error("records: {0}")]
    Records(String),
}

impl Error {
    /// A broker error from a non-zero code and an optional message.
    pub fn broker(code: i16, message: Option<String>) -> Error {
        Error::Broker {
            code: BrokerCode(code),
            message,
        }
    }
}
