//! Wires watch → harvest → process → output, and stops cleanly on SIGTERM or Ctrl-C.

use crate::config::{Config, InputConfig};
use crate::harvest::{Harvester, Line};
use crate::output::Output;
use crate::output::console::Console;
use crate::process::{Event, Processor, event_from_line};
use crate::watch::{self, FileId};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the loop rests when no file had new bytes.
const IDLE_PAUSE: Duration = Duration::from_millis(100);

/// Runs the agent until SIGTERM or Ctrl-C, then finishes the batch in flight and returns.
pub async fn run(config: Config) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || harvest_loop(&config, &stop))
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = sigterm.recv() => tracing::info!("SIGTERM, stopping"),
    }
    stop.store(true, Ordering::SeqCst);
    worker.await.context("the harvest loop panicked")?
}

fn harvest_loop(config: &Config, stop: &AtomicBool) -> Result<()> {
    let patterns: Vec<String> = config
        .inputs
        .iter()
        .flat_map(|input| match input {
            InputConfig::Filestream { paths, .. } => paths.iter().cloned(),
        })
        .collect();
    let processors: Vec<Processor> = config.processors.iter().map(Processor::build).collect();
    let mut console = config.console.as_ref().map(Console::new);
    let runtime = tokio::runtime::Handle::current();
    let host = nix::unistd::gethostname()?.to_string_lossy().into_owned();
    let mut harvesters: BTreeMap<FileId, Harvester> = BTreeMap::new();
    let mut lines: Vec<Line> = Vec::new();
    let mut events: Vec<Event> = Vec::new();

    while !stop.load(Ordering::SeqCst) {
        let found = watch::scan(&patterns);
        for (id, path) in &found {
            if !harvesters.contains_key(id) {
                match Harvester::open(path) {
                    Ok(harvester) => {
                        tracing::info!(path = %path.display(), "harvesting");
                        harvesters.insert(*id, harvester);
                    }
                    Err(err) => tracing::warn!(path = %path.display(), %err, "cannot open"),
                }
            }
        }
        let mut any_read = false;
        let mut drained = Vec::new();
        for (id, harvester) in &mut harvesters {
            lines.clear();
            let read = match harvester.read_lines(&mut lines) {
                Ok(read) => read,
                Err(err) => {
                    tracing::warn!(path = %harvester.path().display(), %err, "read failed");
                    0
                }
            };
            any_read |= read > 0;
            // A file no pattern matches any more (renamed away or deleted) is read to its end first.
            if read == 0 && !found.contains_key(id) {
                drained.push(*id);
            }
            events.clear();
            events.extend(lines.iter().map(|line| {
                let mut event = event_from_line(line, harvester.path(), &host);
                for processor in &processors {
                    processor.apply(&mut event);
                }
                event
            }));
            if let Some(console) = &mut console {
                runtime
                    .block_on(console.send(&events))
                    .context("writing to the console")?;
            }
        }
        for id in drained {
            if let Some(harvester) = harvesters.remove(&id) {
                tracing::info!(path = %harvester.path().display(), "closed: renamed away or deleted, read to its end");
            }
        }
        if !any_read {
            std::thread::sleep(IDLE_PAUSE);
        }
    }
    Ok(())
}
