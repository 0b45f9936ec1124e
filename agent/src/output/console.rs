//! `output.console`: events as JSON lines on stdout, for trying things out and debugging.

use super::{Output, OutputError};
use crate::process::Event;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// `output.console`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Indent each event over several lines. Default: false.
    #[serde(default)]
    pub pretty: bool,
}

/// Prints events as NDJSON (or indented JSON) on stdout.
pub struct Console {
    pretty: bool,
    out: io::BufWriter<io::Stdout>,
}

impl Console {
    pub fn new(config: &ConsoleConfig) -> Self {
        Self {
            pretty: config.pretty,
            out: io::BufWriter::new(io::stdout()),
        }
    }

    fn write(&mut self, events: &[Event]) -> io::Result<()> {
        for event in events {
            if self.pretty {
                serde_json::to_writer_pretty(&mut self.out, event)?;
            } else {
                serde_json::to_writer(&mut self.out, event)?;
            }
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

#[async_trait::async_trait]
impl Output for Console {
    fn name(&self) -> &'static str {
        "console"
    }

    /// Delivered once written and flushed to stdout.
    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
        self.write(events).map_err(|source| OutputError::Io {
            output: "console",
            source,
        })
    }
}
