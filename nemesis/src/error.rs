//! Typed errors of node backends and of fault application.

use std::path::PathBuf;

use crate::node::FaultKind;

/// An error from a node backend (running commands, managing the service process).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A command could not be started at all.
    #[error("node {node}: could not run `{command}`: {source}")]
    Spawn {
        /// Node name.
        node: String,
        /// The command line.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("node {node}: `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// Node name.
        node: String,
        /// The command line.
        command: String,
        /// Exit status text.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// The service was asked to do something that needs it configured or running.
    #[error("node {node}: {what}")]
    Service {
        /// Node name.
        node: String,
        /// What went wrong.
        what: String,
    },
    /// A file or directory operation failed.
    #[error("node {node}: {path}: {source}")]
    Io {
        /// Node name.
        node: String,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Setting up or tearing down the backend failed.
    #[error("node backend setup: {0}")]
    Setup(String),
}

/// An error applying or healing a fault.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    /// The backend cannot do this fault; the reason says why.
    #[error("fault `{fault}` is not supported on node {node}: {reason}")]
    Unsupported {
        /// Node name.
        node: String,
        /// The refused fault kind.
        fault: FaultKind,
        /// Why.
        reason: String,
    },
    /// A node operation failed while applying a fault.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A target named a node that does not exist.
    #[error("unknown node `{0}` (known nodes are listed in the run's spec)")]
    UnknownNode(String),
    /// Bad parameters for a fault.
    #[error("invalid fault parameters: {0}")]
    Invalid(String),
    /// A file fault or clock file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Several heal steps failed; each is listed.
    #[error("healing failed: {}", .0.join("; "))]
    Heal(Vec<String>),
}
