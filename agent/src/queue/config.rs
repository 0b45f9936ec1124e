//! `queue`: bounds of the memory queue, and the optional disk queue.

use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

/// `queue`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The memory queue's bounds (used when there is no disk queue).
    #[serde(default)]
    pub mem: MemQueueConfig,
    /// A disk queue instead of the memory one. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskQueueConfig>,
}

/// `queue.mem`: the queue waits (and so do the readers) once either bound is reached.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemQueueConfig {
    /// Most events held. Default: 8192.
    #[serde(default = "default_events")]
    pub events: usize,
    /// Most bytes held (events' estimated size). Default: 64MiB.
    #[serde(default = "default_bytes", deserialize_with = "byte_size")]
    pub bytes: u64,
}

/// `queue.disk`: batches are appended to segment files and fsynced, which is when their
/// offsets are committed; each output reads them from its own durable cursor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiskQueueConfig {
    /// The folder of segment files and cursors (created).
    pub path: PathBuf,
    /// Most bytes on disk; then the readers wait. Default: 1GiB.
    #[serde(default = "default_max_size", deserialize_with = "byte_size")]
    pub max_size: u64,
    /// A segment file is closed at this size (or an eighth of `max_size`, if smaller), and
    /// deleted once every output is past it. Default: 64MiB.
    #[serde(default = "default_segment_size", deserialize_with = "byte_size")]
    pub segment_size: u64,
}

impl Default for MemQueueConfig {
    fn default() -> Self {
        Self {
            events: default_events(),
            bytes: default_bytes(),
        }
    }
}

fn default_events() -> usize {
    8192
}
fn default_bytes() -> u64 {
    64 << 20
}
fn default_max_size() -> u64 {
    1 << 30
}
fn default_segment_size() -> u64 {
    64 << 20
}

/// A size as a number of bytes or a string with a unit: `1GiB`, `64MiB`, `500KB`, `4096`.
pub(crate) fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(text) => parse_size(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a size (write e.g. 1GiB, 64MiB, 500KB or a number of bytes)"
            ))
        }),
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example() {
        let yaml = "mem: { events: 8192 }\ndisk: { path: /var/lib/skiff/queue, max_size: 1GiB }\n";
        let config: QueueConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(
            config,
            QueueConfig {
                mem: MemQueueConfig::default(),
                disk: Some(DiskQueueConfig {
                    path: "/var/lib/skiff/queue".into(),
                    max_size: 1 << 30,
                    segment_size: 64 << 20,
                }),
            }
        );
    }

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("500KB"), Some(500_000));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("1TB"), None);
        assert!(serde_yaml::from_str::<MemQueueConfig>("bytes: lots").is_err());
    }
}
