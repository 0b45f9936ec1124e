//! `output.file`: events appended as JSON lines to a file, each batch fsynced before `send`
//! returns, so an acknowledged event survives a crash of the agent or of the machine.

use super::{Output, OutputError};
use crate::process::Event;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

/// `output.file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file events are appended to (created if missing, with its folder).
    pub path: PathBuf,
}

/// Appends events as NDJSON to a file.
pub struct FileOutput {
    path: PathBuf,
    out: BufWriter<File>,
}

impl FileOutput {
    /// Opens (creates) the file for appending.
    pub fn open(config: &FileConfig) -> io::Result<Self> {
        if let Some(folder) = config.path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        Ok(Self {
            path: config.path.clone(),
            out: BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn write(&mut self, events: &[Event]) -> io::Result<()> {
        for event in events {
            serde_json::to_writer(&mut self.out, event)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

#[async_trait::async_trait]
impl Output for FileOutput {
    fn name(&self) -> &'static str {
        "file"
    }

    /// Delivered once written and fsynced. A failed write may leave part of the batch in the
    /// file; the batch is then sent again (at-least-once).
    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
        if events.is_empty() {
            return Ok(());
        }
        // Writing and fsync block: off the async workers.
        tokio::task::block_in_place(|| self.write(events)).map_err(|source| OutputError::Io {
            output: "file",
            source: io::Error::new(source.kind(), format!("{}: {source}", self.path.display())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn appends_one_json_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/events.ndjson");
        let mut output = FileOutput::open(&FileConfig { path: path.clone() }).unwrap();
        let mut event = Event::new();
        event.insert("message", "hello");
        output.send(&[event.clone(), event]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"message\":\"hello\"}\n{\"message\":\"hello\"}\n");
    }
}
