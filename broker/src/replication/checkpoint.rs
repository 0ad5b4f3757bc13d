//! Versioned text checkpoint files in Kafka's `CheckpointFile` layout (a version line, an entry
//! count line, then one entry per line), replaced atomically: written to `<name>.tmp`, fsynced,
//! renamed over the old file, and the directory fsynced, so a crash leaves the old or the new
//! file, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a checkpoint file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system refused a read, write, fsync or rename.
    #[error("checkpoint file {path}: {source}")]
    Io {
        /// The file (or its temporary sibling) being accessed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists but is not a well-formed checkpoint.
    #[error("malformed checkpoint file {path} at line {line}: {reason} (delete the file to have it rebuilt)")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `entries` (one line each) under `version`, replacing `path` atomically.
pub fn write_atomically(
    path: &Path,
    version: u32,
    entries: &[String],
) -> Result<(), CheckpointError> {
    let mut text = format!("{version}\n{}\n", entries.len());
    for entry in entries {
        text.push_str(entry);
        text.push('\n');
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
        crate::storage::sync_all(&file).map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        // Make the rename durable. Directories can be opened read-only and fsynced on Linux.
        if let Ok(d) = File::open(dir) {
            crate::storage::sync_all(&d).map_err(io_err(dir))?;
        }
    }
    Ok(())
}

/// Reads the entry lines of a checkpoint written with `version`; `Ok(None)` if the file does not
/// exist. The version and the entry count are checked.
pub fn read_entries(path: &Path, version: u32) -> Result<Option<Vec<String>>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let malformed = |line: usize, reason: String| CheckpointError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = text.lines();
    let got_version = lines
        .next()
        .ok_or_else(|| malformed(1, "empty file".into()))?;
    if got_version.trim() != version.to_string() {
        return Err(malformed(
            1,
            format!("unsupported version {got_version:?}, expected {version}"),
        ));
    }
    let count_line = lines
        .next()
        .ok_or_else(|| malformed(2, "missing entry count".into()))?;
    let count: usize = count_line
        .trim()
        .parse()
        .map_err(|_| malformed(2, format!("entry count {count_line:?} is not a number")))?;
    let entries: Vec<String> = lines.map(str::to_owned).collect();
    if entries.len() != count {
        return Err(malformed(
            3 + entries.len().min(count),
            format!("expected {count} entries, found {}", entries.len()),
        ));
    }
    Ok(Some(entries))
}

/// Parses the whitespace-separated fields of entry line `index` (0-based) of `path`.
pub fn parse_fields<T: std::str::FromStr, const N: usize>(
    path: &Path,
    index: usize,
    entry: &str,
) -> Result<[T; N], CheckpointError> {
    let fields: Vec<&str> = entry.split_whitespace().collect();
    let malformed = |reason: String| CheckpointError::Malformed {
        path: path.to_path_buf(),
        line: index + 3,
        reason,
    };
    if fields.len() != N {
        return Err(malformed(format!(
            "expected {N} fields, found {} in {entry:?}",
            fields.len()
        )));
    }
    let mut parsed = Vec::with_capacity(N);
    for f in fields {
        parsed.push(
            f.parse::<T>()
                .map_err(|_| malformed(format!("field {f:?} is not a number")))?,
        );
    }
    parsed
        .try_into()
        .map_err(|_| malformed("field count changed while parsing".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        assert!(read_entries(&path, 0).unwrap().is_none());
        write_atomically(&path, 0, &["1 5".into(), "3 9".into()]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0\n2\n1 5\n3 9\n");
        let entries = read_entries(&path, 0).unwrap().unwrap();
        assert_eq!(entries, vec!["1 5", "3 9"]);
        let f: [i64; 2] = parse_fields(&path, 1, &entries[1]).unwrap();
        assert_eq!(f, [3, 9]);
        assert!(!dir.path().join("cp.tmp").exists());
    }

    #[test]
    fn malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        for (text, needle) in [
            ("", "empty file"),
            ("7\n0\n", "unsupported version"),
            ("0\nx\n", "not a number"),
            ("0\n3\n1 2\n", "expected 3 entries"),
        ] {
            fs::write(&path, text).unwrap();
            let err = read_entries(&path, 0).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("cp"), "{err}");
        }
        let bad: Result<[i64; 2], _> = parse_fields(&path, 0, "1 x");
        assert!(bad.unwrap_err().to_string().contains("\"x\""));
        let bad: Result<[i64; 2], _> = parse_fields(&path, 0, "1");
        assert!(bad.unwrap_err().to_string().contains("expected 2 fields"));
    }
}
