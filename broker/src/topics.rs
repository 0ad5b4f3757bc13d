//! Topic naming rules and partition directory layout (`<log.dir>/<topic>-<partition>`, as
//! Kafka's). Which topics exist is metadata (`metadata::MetadataImage`).

use std::path::{Path, PathBuf};

/// Whether a topic name is legal in Kafka (1..249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`).
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// Path of a partition's directory.
pub fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}
