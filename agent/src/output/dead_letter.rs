//! The dead-letter file: events a destination refused for good (a mapping error, an event
//! larger than the broker accepts, a topic that cannot exist), kept with the reason instead of
//! being dropped.
//!
//! One NDJSON line per event, `{"@timestamp", "output", "reason", "event"}`, appended and
//! fsynced before the batch counts as delivered. The file is bounded like a log file: once the
//! next lines would take it past `max_size` it is rotated (`<path>` to `<path>.1`, `.1` to
//! `.2`, …) and the oldest beyond `keep` is deleted, so at most `max_size × (keep + 1)` bytes
//! are kept and the newest refusals always are. Stopping at the bound instead would keep the
//! oldest and drop the refusals of the outage an operator is looking into.
//!
//! [`Refusals`] is how an output (all its workers) hands refused events over. Every refused
//! event is counted by output and reason, and an event that is not kept (no dead-letter file,
//! or a line larger than the file may grow) is counted in `skiff_output_dropped_total` and
//! logged: never silently lost.

use super::OutputError;
use super::metrics::OutputMetrics;
use super::template::lookup;
use crate::process::Event;
use crate::queue::config::byte_size;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// `dead_letter` in an output's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The NDJSON file refused events are appended to (its folder is created).
    pub path: PathBuf,
    /// The size the file is rotated at: lines that would take it past this go to a new file.
    /// A single line larger than this is not kept (it is counted as dropped). Default: 64MiB.
    #[serde(default = "default_max_size", deserialize_with = "byte_size")]
    pub max_size: u64,
    /// Rotated files kept besides the current one (`<path>.1` is the newest); the oldest beyond
    /// them is deleted. With 0 the file starts over when full. Default: 2.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_max_size() -> u64 {
    64 << 20
}
fn default_keep() -> u32 {
    2
}

impl DeadLetterConfig {
    /// A dead-letter file at `path`, with the default bounds.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_size: default_max_size(),
            keep: default_keep(),
        }
    }
}

/// An event an output's destination refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its index in the batch.
    pub index: usize,
    /// Why, as a metric label: `oversized` (larger than the output's own limit),
    /// `message_too_large`, `invalid_topic`, `invalid_record`, `topic_authorization_failed`
    /// (Kafka), `too_large`, `document` (Elasticsearch).
    pub reason: &'static str,
    /// What the destination said, for the log and the dead-letter line.
    pub detail: String,
}

/// An open dead-letter file.
#[derive(Debug)]
pub struct DeadLetter {
    config: DeadLetterConfig,
    file: File,
    /// The current file's size.
    size: u64,
    /// Lines encoded and not yet written.
    pending: Vec<u8>,
    line: Vec<u8>,
}

impl DeadLetter {
    /// Opens (creates) the file for appending.
    pub fn open(config: &DeadLetterConfig) -> io::Result<Self> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = append(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            config: config.clone(),
            file,
            size,
            pending: Vec::new(),
            line: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Appends `refused` (event, reason) pairs, rotating the file as it fills, and fsyncs;
    /// returns once they are on disk, with the positions (in `refused`) of the records that
    /// were not written because one line alone is larger than `max_size`.
    pub fn write<'a>(
        &mut self,
        output: &str,
        refused: impl IntoIterator<Item = (&'a Event, &'a str)>,
    ) -> io::Result<Vec<usize>> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut too_large = Vec::new();
        self.pending.clear();
        for (position, (event, reason)) in refused.into_iter().enumerate() {
            self.line.clear();
            let record =
                json!({ "@timestamp": now, "output": output, "reason": reason, "event": event });
            serde_json::to_writer(&mut self.line, &record)?;
            self.line.push(b'\n');
            let len = self.line.len() as u64;
            if len > self.config.max_size {
                too_large.push(position);
                continue;
            }
            if self.size + self.pending.len() as u64 + len > self.config.max_size {
                self.flush()?;
                self.rotate()?;
            }
            self.pending.extend_from_slice(&self.line);
        }
        self.flush()?;
        self.file.sync_data()?;
        Ok(too_large)
    }

    /// Writes the pending lines to the current file.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.pending)?;
        self.size += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Moves the full file aside (deleting the oldest rotated one) and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        // The lines written so far survive a crash during the renames.
        self.file.sync_data()?;
        let keep = self.config.keep;
        let path = &self.config.path;
        if keep == 0 {
            tracing::warn!(file = %path.display(), "dead-letter file full; starting it over (keep: 0)");
            std::fs::remove_file(path)?;
        } else {
            let oldest = rotated(path, keep);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {
                    tracing::warn!(file = %oldest.display(), "dead-letter file full; deleted the oldest rotated one");
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            for n in (1..keep).rev() {
                match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
            tracing::info!(file = %path.display(), "dead-letter file rotated");
        }
        self.file = append(path)?;
        self.size = 0;
        Ok(())
    }
}

/// `path` opened for appending, created if missing.
fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The `n`th rotated file of `path`: `<path>.<n>`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    name.into()
}

/// Where an output's events refused for good go: its dead-letter file when one is configured
/// (one file shared by the output's workers), else nowhere, counted as dropped.
#[derive(Debug, Clone)]
pub struct Refusals {
    output: &'static str,
    file: Option<Arc<Mutex<DeadLetter>>>,
    metrics: OutputMetrics,
}

impl Refusals {
    /// Opens the dead-letter file of `output`, if it has one.
    pub fn open(
        output: &'static str,
        config: Option<&DeadLetterConfig>,
        metrics: OutputMetrics,
    ) -> Result<Self, OutputError> {
        let file = config
            .map(|config| {
                DeadLetter::open(config).map_err(|err| OutputError::Config {
                    output,
                    message: format!("dead letter {}: {err}", config.path.display()),
                })
            })
            .transpose()?;
        if file.is_none() {
            tracing::warn!(
                output,
                "no dead_letter file: events refused for good are dropped (counted in skiff_output_dropped_total)"
            );
        }
        Ok(Self {
            output,
            file: file.map(|file| Arc::new(Mutex::new(file))),
            metrics,
        })
    }

    /// Counts the `refused` events (indexes into `events`) by reason, appends them to the
    /// dead-letter file in batch order and returns once they are on disk, or, for those that
    /// cannot be kept, counts them as dropped; logs one line per reason.
    pub fn keep(&self, events: &[Event], refused: &mut [Refused]) -> Result<(), OutputError> {
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort_unstable_by_key(|r| r.index);
        for r in refused.iter() {
            self.metrics.error(self.output, r.reason);
        }
        let Some(file) = &self.file else {
            self.dropped(events, refused.iter(), "no dead_letter file is configured");
            return Ok(());
        };
        // A poisoned lock only means another worker panicked mid-write: the file is still
        // an append-only log, and its next write starts on a line of its own.
        let mut dead = file.lock().unwrap_or_else(PoisonError::into_inner);
        let too_large = dead
            .write(
                self.output,
                refused
                    .iter()
                    .map(|r| (&events[r.index], r.detail.as_str())),
            )
            .map_err(|source| OutputError::Io {
                output: self.output,
                source,
            })?;
        let (kept, dropped): (Vec<_>, Vec<_>) = refused
            .iter()
            .enumerate()
            .partition(|(position, _)| !too_large.contains(position));
        for (reason, (count, first)) in by_reason(kept.into_iter().map(|(_, r)| r)) {
            self.metrics.outcome(self.output, "dead_lettered", count);
            tracing::warn!(
                output = self.output,
                reason,
                events = count,
                detail = %first.detail,
                file = %dead.path().display(),
                "events refused for good were written to the dead-letter file"
            );
        }
        drop(dead);
        self.dropped(
            events,
            dropped.into_iter().map(|(_, r)| r),
            "its dead-letter line is larger than dead_letter.max_size",
        );
        Ok(())
    }

    /// Counts `dropped` as dropped, by reason, and logs one line per reason naming the first
    /// such event and `why` it was not kept.
    fn dropped<'a>(&self, events: &[Event], dropped: impl Iterator<Item = &'a Refused>, why: &str) {
        for (reason, (count, first)) in by_reason(dropped) {
            self.metrics.dropped(self.output, reason, count);
            self.metrics.outcome(self.output, "dropped", count);
            let event = &events[first.index];
            tracing::error!(
                output = self.output,
                reason,
                events = count,
                detail = %first.detail,
                file = lookup(event, "log.file.path").map(tracing::field::display),
                offset = lookup(event, "log.offset").map(tracing::field::display),
                "events refused for good were dropped: {why}"
            );
        }
    }
}

/// `refused` counted by reason, each with its first event: one log line per reason and batch
/// keeps a broker that refuses everything from flooding the log, while the counters count all.
fn by_reason<'a>(
    refused: impl Iterator<Item = &'a Refused>,
) -> BTreeMap<&'static str, (u64, &'a Refused)> {
    let mut by_reason = BTreeMap::new();
    for r in refused {
        by_reason.entry(r.reason).or_insert((0, r)).0 += 1;
    }
    by_reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: &str) -> Event {
        json!({ "message": message })
            .as_object()
            .unwrap()
            .clone()
            .into()
    }

    #[test]
    fn records_carry_the_reason_and_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let config = DeadLetterConfig::new(dir.path().join("sub/dead.ndjson"));
        let mut dead = DeadLetter::open(&config).unwrap();
        let too_large = dead
            .write(
                "elasticsearch",
                [(&event("x"), "mapper_parsing_exception: bad")],
            )
            .unwrap();
        assert!(too_large.is_empty());
        let text = std::fs::read_to_string(&config.path).unwrap();
        let record: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(record["reason"], "mapper_parsing_exception: bad");
        assert_eq!(record["output"], "elasticsearch");
        assert_eq!(record["event"]["message"], "x");
    }

    #[test]
    fn parses_the_bounds_with_defaults() {
        let config: DeadLetterConfig =
            serde_yaml::from_str("{ path: /var/lib/skiff/dead.ndjson, max_size: 16MiB }").unwrap();
        let mut expected = DeadLetterConfig::new("/var/lib/skiff/dead.ndjson");
        expected.max_size = 16 << 20;
        assert_eq!(config, expected);
        assert_eq!(expected.keep, 2);
    }

    /// Every line of `path`'s file, `<path>.1` and `<path>.2` (missing ones are empty), and
    /// each file's size.
    fn files(path: &Path) -> Vec<(Vec<String>, u64)> {
        (0..=3)
            .map(|n| {
                let file = if n == 0 {
                    path.to_path_buf()
                } else {
                    rotated(path, n)
                };
                let text = std::fs::read_to_string(file).unwrap_or_default();
                let messages = text
                    .lines()
                    .map(|line| {
                        let record: serde_json::Value = serde_json::from_str(line).unwrap();
                        record["event"]["message"].as_str().unwrap().to_string()
                    })
                    .collect();
                (messages, text.len() as u64)
            })
            .collect()
    }

    #[test]
    fn the_file_rotates_at_its_bound_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DeadLetterConfig::new(dir.path().join("dead.ndjson"));
        let line_len = {
            let mut probe =
                DeadLetter::open(&DeadLetterConfig::new(dir.path().join("probe"))).unwrap();
            probe.write("kafka", [(&event("m00"), "r")]).unwrap();
            std::fs::metadata(probe.path()).unwrap().len()
        };
        // Three lines per file.
        config.max_size = line_len * 3 + line_len / 2;
        let mut dead = DeadLetter::open(&config).unwrap();
        let events: Vec<Event> = (0..20).map(|n| event(&format!("m{n:02}"))).collect();
        // Batches of 4, so a rotation falls inside a batch.
        for batch in events.chunks(4) {
            let too_large = dead.write("kafka", batch.iter().map(|e| (e, "r"))).unwrap();
            assert!(too_large.is_empty());
        }
        let files = files(&config.path);
        for (messages, size) in &files {
            assert!(*size <= config.max_size, "{messages:?}: {size} bytes");
        }
        let names = |file: &(Vec<String>, u64)| file.0.join(" ");
        // 20 lines, 3 a file: 18 in 6 full files, the last 2 in the current one.
        assert_eq!(names(&files[0]), "m18 m19");
        assert_eq!(names(&files[1]), "m15 m16 m17");
        assert_eq!(names(&files[2]), "m12 m13 m14");
        assert!(files[3].0.is_empty(), "more than `keep` rotated files");
    }

    #[test]
    fn a_line_larger_than_the_bound_is_reported_and_the_others_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DeadLetterConfig::new(dir.path().join("dead.ndjson"));
        config.max_size = 1_000;
        let mut dead = DeadLetter::open(&config).unwrap();
        let (small, large) = (event("small"), event(&"x".repeat(2_000)));
        let too_large = dead
            .write("kafka", [(&small, "r"), (&large, "r"), (&small, "r")])
            .unwrap();
        assert_eq!(too_large, [1]);
        assert_eq!(files(&config.path)[0].0, ["small", "small"]);
    }

    #[test]
    fn a_refusal_too_large_for_the_file_is_counted_as_dropped_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DeadLetterConfig::new(dir.path().join("dead.ndjson"));
        config.max_size = 1_000;
        let metrics = OutputMetrics::default();
        let refusals = Refusals::open("kafka", Some(&config), metrics.clone()).unwrap();
        let events = [event("small"), event(&"x".repeat(2_000))];
        let refused = |index| Refused {
            index,
            reason: "message_too_large",
            detail: "too large".into(),
        };
        refusals
            .keep(&events, &mut [refused(1), refused(0)])
            .unwrap();
        assert_eq!(metrics.events_of("kafka", "dead_lettered"), 1);
        assert_eq!(metrics.dropped_of("kafka", "message_too_large"), 1);
        assert_eq!(files(&config.path)[0].0, ["small"]);
    }

    #[test]
    fn refusals_without_a_file_are_counted_as_dropped_by_reason() {
        let metrics = OutputMetrics::default();
        let refusals = Refusals::open("kafka", None, metrics.clone()).unwrap();
        let events = [event("a"), event("b"), event("c")];
        let refused = |index, reason: &'static str| Refused {
            index,
            reason,
            detail: format!("{reason} detail"),
        };
        refusals
            .keep(
                &events,
                &mut [
                    refused(2, "invalid_topic"),
                    refused(0, "message_too_large"),
                    refused(1, "invalid_topic"),
                ],
            )
            .unwrap();
        assert_eq!(metrics.dropped_of("kafka", "invalid_topic"), 2);
        assert_eq!(metrics.dropped_of("kafka", "message_too_large"), 1);
        assert_eq!(metrics.errors_of("kafka", "invalid_topic"), 2);
        assert_eq!(metrics.events_of("kafka", "dropped"), 3);
    }
}
