//! Wires watch → harvest → process → output → registry, and stops cleanly on SIGTERM or Ctrl-C.
//!
//! The harvest engine runs on its own thread and hands batches of lines to the delivery task
//! through a bounded channel of [`BATCHES_IN_FLIGHT`] batches (each at most
//! [`crate::harvest::READ_BUDGET`] bytes), so memory stays bounded and a slow output slows the readers. The
//! delivery task turns lines into events and pushes each batch, with its offsets, into the
//! [`crate::queue`], which every output consumes at its own pace; a batch's offsets are
//! committed to the registry once it is safe (acknowledged by every output, or stored in the
//! disk queue). A separate task writes the registry to disk every `registry.flush`.
//!
//! On SIGTERM the engine stops reading, the delivery task drains the batches already read (for
//! at most [`DRAIN_TIMEOUT`], after which the unacknowledged ones are simply read again at the
//! next start), the registry is written, and `run` returns.

use crate::config::{Config, InputConfig};
use crate::harvest::{Engine, EngineOptions, FileInput, Harvested};
use crate::kubernetes::KubernetesInput;
use crate::metrics::{self, FileMetrics};
use crate::output::Output;
use crate::output::console::Console;
use crate::output::elasticsearch::Elasticsearch;
use crate::output::file::FileOutput;
use crate::output::kafka::Kafka;
use crate::output::logstash::Logstash;
use crate::output::metrics::OutputMetrics;
use crate::process::input::{InputSteps, Processing};
use crate::process::{Event, Object, Processors, Source, event_from_line};
use crate::queue::{OnSafe, Queue, QueueMetrics};
use crate::registry::{Checkpoint, Registry};
use crate::watch;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Batches read but not yet delivered: with [`crate::harvest::READ_BUDGET`] bytes each, at most 4 MiB.
pub const BATCHES_IN_FLIGHT: usize = 16;
/// How long SIGTERM waits for the outputs to acknowledge what was read.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often parsers are asked for the multiline groups that timed out.
const PARSER_TICK: Duration = Duration::from_millis(250);

/// Runs the agent until SIGTERM or Ctrl-C, then drains what was read and returns.
pub async fn run(config: Config) -> Result<()> {
    let mut metrics_registry = metrics::new_registry();
    let file_metrics = FileMetrics::register(&mut metrics_registry);
    let queue_metrics = QueueMetrics::default();
    queue_metrics.register(&mut metrics_registry);
    let outputs = outputs(&config, &mut metrics_registry)?;
    let mut inputs = Vec::new();
    let mut steps = HashMap::new();
    for input in &config.inputs {
        let (files, input_steps) = build_input(input)
            .await
            .with_context(|| format!("input {:?}", input.id()))?;
        inputs.push(files);
        steps.insert(Arc::from(input.id()), input_steps);
    }
    let processing = Processing::new(
        steps,
        Processors::build(&config.processors).context("processors")?,
    );
    let registry = Arc::new(Registry::open(&config.registry)?);
    let patterns: Vec<String> = inputs
        .iter()
        .flat_map(|input| input.patterns().iter().cloned())
        .collect();
    let watch = watch::start(&config.watch, &patterns)?;
    let host = nix::unistd::gethostname()?.to_string_lossy().into_owned();

    if let Some(listen) = config.metrics.listen {
        let registry = Arc::new(metrics_registry);
        // Bound here, so a taken port fails the start rather than a background task.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (metrics.listen)"))?;
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(listener, registry).await {
                tracing::error!(%err, "the metrics endpoint failed");
            }
        });
    }

    let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let stop = Arc::new(AtomicBool::new(false));
    let engine = Engine::new(
        inputs,
        EngineOptions {
            rescan: watch.rescan,
            check_interval: watch.check_interval,
            events_on_entry: watch.events_on_entry,
        },
        watch.queue,
        watch.folders,
        Arc::clone(&registry),
        file_metrics,
        tx,
    );
    let harvest = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("skiff-harvest".into())
            .spawn(move || engine.run(&stop))
            .context("cannot start the harvest thread")?
    };
    let queue = Queue::start(
        &config.queue,
        outputs,
        Commit::apply_to(Arc::clone(&registry)),
        queue_metrics,
    )?;
    let mut delivery = tokio::spawn(deliver(rx, queue, processing, host));
    let flusher = tokio::spawn(flush_every(Arc::clone(&registry), config.registry.flush));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = sigterm.recv() => tracing::info!("SIGTERM, stopping"),
        finished = &mut delivery => {
            finished.context("the delivery task panicked")?;
            anyhow::bail!("the harvest engine stopped unexpectedly");
        }
    }
    stop.store(true, Ordering::SeqCst);
    // The engine may wait in `send` for the delivery task, which keeps draining meanwhile.
    let harvest = tokio::task::spawn_blocking(move || harvest.join());
    match tokio::time::timeout(DRAIN_TIMEOUT, async {
        let joined = harvest.await;
        let delivered = (&mut delivery).await;
        (joined, delivered)
    })
    .await
    {
        Ok((joined, delivered)) => {
            joined
                .context("joining the harvest thread")?
                .map_err(|_| anyhow::anyhow!("the harvest thread panicked"))?;
            delivered.context("the delivery task panicked")?;
        }
        Err(_) => tracing::warn!(
            "outputs did not acknowledge everything within {DRAIN_TIMEOUT:?}; the rest is read again at the next start"
        ),
    }
    flusher.abort();
    registry.flush()?;
    tracing::info!("registry written, stopped");
    Ok(())
}

/// Builds every configured output.
fn outputs(
    config: &Config,
    metrics_registry: &mut prometheus_client::registry::Registry,
) -> Result<Vec<Box<dyn Output>>> {
    let mut outputs: Vec<Box<dyn Output>> = Vec::new();
    if let Some(console) = &config.console {
        outputs.push(Box::new(Console::new(console)));
    }
    if let Some(file) = &config.file {
        outputs.push(Box::new(FileOutput::open(file).with_context(|| {
            format!("cannot open {} (output.file)", file.path.display())
        })?));
    }
    let output_metrics = OutputMetrics::default();
    output_metrics.register(metrics_registry);
    if let Some(kafka) = &config.kafka {
        outputs.push(Box::new(Kafka::build(kafka, output_metrics.clone())?));
    }
    if let Some(elasticsearch) = &config.elasticsearch {
        outputs.push(Box::new(Elasticsearch::build(
            elasticsearch,
            output_metrics.clone(),
        )?));
    }
    if let Some(logstash) = &config.logstash {
        outputs.push(Box::new(Logstash::build(logstash, output_metrics)?));
    }
    Ok(outputs)
}

/// The delivery task: events from lines, every output acknowledges, then the registry commits.
/// Ends when the engine has stopped and every batch it sent was delivered.
async fn deliver(
    mut batches: mpsc::Receiver<Harvested>,
    queue: Queue<Commit>,
    mut processing: Processing<Checkpoint>,
    host: String,
) {
    let mut events: Vec<Event> = Vec::new();
    let mut tick = tokio::time::interval(PARSER_TICK);
    loop {
        let harvested = tokio::select! {
            harvested = batches.recv() => match harvested {
                Some(harvested) => harvested,
                None => break,
            },
            _ = tick.tick() => {
                events.clear();
                let done = processing.flush_expired(Instant::now(), &mut events);
                if !done.is_empty() && !enqueue(&queue, &mut events, Commit::Offsets(done)).await {
                    return;
                }
                continue;
            }
        };
        match harvested {
            Harvested::Lines(batch) => {
                events.clear();
                // Made once per batch: every line of it comes from the same file.
                let source = Source::new(&batch.path, &host)
                    .with_file_fields(file_identity(&batch.checkpoint));
                let lines = batch
                    .lines
                    .iter()
                    .map(|line| event_from_line(line, &source));
                let mut checkpoint = batch.checkpoint.clone();
                // Lines a parser still holds (an open multiline group) are not committed.
                checkpoint.offset = processing.push(
                    &batch.input,
                    &batch.path,
                    lines,
                    checkpoint.offset,
                    checkpoint.clone(),
                    &mut events,
                );
                if !enqueue(&queue, &mut events, Commit::Offsets(vec![checkpoint])).await {
                    return;
                }
            }
            Harvested::Deleted(checkpoint) => {
                events.clear();
                processing.close(&checkpoint.path, &mut events);
                if !enqueue(&queue, &mut events, Commit::Forget(checkpoint)).await {
                    return;
                }
            }
        }
    }
    if !queue.close(DRAIN_TIMEOUT).await {
        tracing::warn!(
            "outputs did not acknowledge everything within {DRAIN_TIMEOUT:?}; the rest is read again at the next start"
        );
    }
}

/// What the registry does once a batch is safe (acknowledged by every output, or stored in
/// the disk queue).
enum Commit {
    /// Commit these offsets.
    Offsets(Vec<Checkpoint>),
    /// The file was deleted: drop its entry.
    Forget(Checkpoint),
}

impl Commit {
    /// The queue's callback: applies a commit to the registry.
    fn apply_to(registry: Arc<Registry>) -> OnSafe<Commit> {
        Box::new(move |commit| match commit {
            Commit::Offsets(checkpoints) => {
                for checkpoint in checkpoints {
                    registry.commit(checkpoint);
                }
            }
            Commit::Forget(checkpoint) => registry.forget(checkpoint.id, &checkpoint.generation),
        })
    }
}

/// The file's identity as Filebeat names it, for `log.file`:, `log.file.device_id` and `log.file.inode`
/// (strings), and `log.file.birth`, its birth time where the file system records one (an
/// inode reused by a new file is born again).
/// The Elasticsearch output derives idempotent `_id`s from them and `log.offset`.
fn file_identity(checkpoint: &Checkpoint) -> Object {
    let mut file = Object::with_capacity(3);
    file.insert("device_id", checkpoint.id.dev.to_string());
    file.insert("inode", checkpoint.id.ino.to_string());
    if let Some((seconds, nanos)) = checkpoint.generation.birth {
        file.insert("birth", format!("{seconds}.{nanos:09}"));
    }
    file
}

/// Hands `events` (taken, leaving the vector empty) and their commit to the queue, waiting
/// while it is full. Returns false when the queue failed, which ends the delivery task.
async fn enqueue(queue: &Queue<Commit>, events: &mut Vec<Event>, commit: Commit) -> bool {
    match queue.push(std::mem::take(events), commit).await {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(%err, "the queue failed; stopping");
            false
        }
    }
}

/// An input's two halves: which files the engine harvests, and what happens to their lines
/// (before the global processors). The `kubernetes` input starts its pod watch here.
async fn build_input(input: &InputConfig) -> Result<(FileInput, InputSteps)> {
    match input {
        InputConfig::Filestream(filestream) => Ok((
            FileInput::build(filestream)?,
            InputSteps::build(&filestream.parsers, &filestream.processors)?,
        )),
        InputConfig::Kubernetes(kubernetes) => {
            let config = kubernetes.clone();
            // Blocks until the first list of pods arrived (at most `sync_timeout`).
            let pods = tokio::task::spawn_blocking(move || KubernetesInput::start(&config))
                .await
                .context("starting the pod watch panicked")??;
            let files =
                FileInput::build(&kubernetes.filestream())?.admitting(Arc::new(pods.clone()));
            Ok((files, InputSteps::kubernetes(pods)?))
        }
    }
}

/// Writes the registry every `period`.
async fn flush_every(registry: Arc<Registry>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let registry = Arc::clone(&registry);
        match tokio::task::spawn_blocking(move || registry.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "cannot write the registry"),
            Err(err) => tracing::error!(%err, "the registry flush panicked"),
        }
    }
}
