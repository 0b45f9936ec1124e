//! The dead-letter file: events a destination refused for good (a mapping error, an event
//! larger than the broker accepts), kept with the reason instead of being dropped.
//!
//! One NDJSON line per event, `{"@timestamp", "output", "reason", "event"}`, appended and
//! fsynced before the batch counts as delivered, so a refused event is never lost silently.
//! [`Refusals`] is how an output (all its workers) hands refused events over.

use super::OutputError;
use super::metrics::OutputMetrics;
use crate::process::Event;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `dead_letter` in an output's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The NDJSON file refused events are appended to (its folder is created).
    pub path: PathBuf,
}

/// An open dead-letter file.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: File,
    line: Vec<u8>,
}

impl DeadLetter {
    /// Opens (creates) the file for appending.
    pub fn open(config: &DeadLetterConfig) -> io::Result<Self> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        Ok(Self {
            path: config.path.clone(),
            file,
            line: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `refused` (event, reason) pairs and fsyncs; returns once they are on disk.
    pub fn write<'a>(
        &mut self,
        output: &str,
        refused: impl IntoIterator<Item = (&'a Event, &'a str)>,
    ) -> io::Result<()> {
        self.line.clear();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (event, reason) in refused {
            let record =
                json!({ "@timestamp": now, "output": output, "reason": reason, "event": event });
            serde_json::to_writer(&mut self.line, &record)?;
            self.line.push(b'\n');
        }
        if self.line.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.line)?;
        self.file.sync_data()
    }
}

/// Where an output's events refused for good go: its dead-letter file when one is configured
/// (one file shared by the output's workers), else nowhere, counted as `dropped`.
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
        Ok(Self {
            output,
            file: file.map(|file| Arc::new(Mutex::new(file))),
            metrics,
        })
    }

    /// Logs the `refused` events (index into `events`, reason), then appends them to the
    /// dead-letter file, in batch order, and returns once they are on disk — or counts them
    /// as dropped when there is no such file.
    pub fn keep(
        &self,
        events: &[Event],
        refused: &mut [(usize, String)],
    ) -> Result<(), OutputError> {
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort_unstable_by_key(|(i, _)| *i);
        for (i, reason) in refused.iter() {
            tracing::error!(output = self.output, event = i, %reason, "an event was refused for good");
        }
        let count = refused.len() as u64;
        let Some(file) = &self.file else {
            self.metrics.outcome(self.output, "dropped", count);
            return Ok(());
        };
        file.lock()
            .expect("not poisoned")
            .write(
                self.output,
                refused
                    .iter()
                    .map(|(i, reason)| (&events[*i], reason.as_str())),
            )
            .map_err(|source| OutputError::Io {
                output: self.output,
                source,
            })?;
        self.metrics.outcome(self.output, "dead_lettered", count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_the_reason_and_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let config = DeadLetterConfig {
            path: dir.path().join("sub/dead.ndjson"),
        };
        let mut dead = DeadLetter::open(&config).unwrap();
        let event: Event = json!({ "message": "x" })
            .as_object()
            .unwrap()
            .clone()
            .into();
        dead.write("elasticsearch", [(&event, "mapper_parsing_exception: bad")])
            .unwrap();
        let text = std::fs::read_to_string(&config.path).unwrap();
        let record: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(record["reason"], "mapper_parsing_exception: bad");
        assert_eq!(record["output"], "elasticsearch");
        assert_eq!(record["event"]["message"], "x");
    }
}
