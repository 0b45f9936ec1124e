//! Where events go.

use crate::config::ConsoleConfig;
use crate::process::Event;
use std::io::{self, Write};

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

    /// Writes a batch and flushes it: once this returns the batch is delivered.
    pub fn send(&mut self, events: &[Event]) -> io::Result<()> {
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
