//! `cargo xtask bench output`: file → Kafka and file → OpenSearch through the real outputs,
//! against the peers (`eval $(cargo xtask peers up --only kafka,opensearch)` first).
//!
//! The same generated file (200-byte lines) is read with the harvester in the pipeline's
//! batches ([`READ_BUDGET`] bytes each), turned into events with `event_from_line`, and pushed
//! through the agent's [`Queue`] (default bounds) to the output, which acknowledges each batch
//! as the agent's does; every delivered event is then counted at the destination (topic
//! watermarks, `_count`) before the figure counts. A run to an output that discards
//! everything, in the same process, is the baseline the others are reported against
//! (`*_ratio_to_null`). OpenSearch runs twice: with one `_bulk` request in flight (`worker:
//! 1`, how the output worked before it had workers) and with the default. An absent peer skips
//! its part, with a note.

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use skiff_agent::harvest::Harvester;
use skiff_agent::harvest::READ_BUDGET;
use skiff_agent::output::elasticsearch::{Elasticsearch, ElasticsearchConfig};
use skiff_agent::output::kafka::{Kafka, KafkaConfig};
use skiff_agent::output::metrics::OutputMetrics;
use skiff_agent::output::{Output, OutputError};
use skiff_agent::process::{Event, Source, event_from_line};
use skiff_agent::queue::{Queue, QueueConfig, QueueMetrics};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines in the generated file.
const LINES: u64 = 200_000;
/// Bytes per line, newline included.
const LINE_BYTES: usize = 200;

/// Discards everything: the baseline.
struct Null;

#[async_trait::async_trait]
impl Output for Null {
    fn name(&self) -> &'static str {
        "null"
    }
    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
        std::hint::black_box(events);
        Ok(())
    }
}

/// Reads `path` with the harvester and sends its events through the queue to `output`;
/// returns the seconds until the output acknowledged the last batch.
async fn file_to(output: Box<dyn Output>, path: &Path) -> f64 {
    let started = Instant::now();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let on_safe = {
        let acknowledged = Arc::clone(&acknowledged);
        Box::new(move |lines: u64| {
            acknowledged.fetch_add(lines, Ordering::Relaxed);
        })
    };
    let queue = Queue::start(
        &QueueConfig::default(),
        vec![output],
        on_safe,
        QueueMetrics::default(),
    )
    .expect("queue");
    let mut harvester = Harvester::open(path).expect("open the generated file");
    let mut lines = Vec::new();
    loop {
        let read = harvester.read_lines(&mut lines, READ_BUDGET).expect("read");
        let source = Source::new(path, "bench-node");
        let events: Vec<Event> = lines
            .drain(..)
            .map(|line| event_from_line(&line, &source))
            .collect();
        let count = events.len() as u64;
        queue.push(events, count).await.expect("push");
        if read == 0 {
            break;
        }
    }
    assert!(
        queue.close(Duration::from_secs(600)).await,
        "the output did not acknowledge every batch within 10 minutes"
    );
    assert_eq!(
        acknowledged.load(Ordering::Relaxed),
        LINES,
        "every line acknowledged"
    );
    started.elapsed().as_secs_f64()
}

fn write_file(path: &Path) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for n in 0..LINES {
        let head = format!("2026-03-04T05:06:07Z GET /users/{n} 200 ");
        let pad = LINE_BYTES - 1 - head.len();
        writeln!(file, "{head}{}", "x".repeat(pad)).expect("write");
    }
    file.flush().expect("flush");
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{prefix}-{nanos}")
}

/// Records in `topic` (sum of its partitions' high watermarks).
fn kafka_count(brokers: &str, topic: &str) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .expect("watermarks");
            (high - low) as u64
        })
        .sum()
}

async fn opensearch_count(base: &str, index: &str) -> u64 {
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/{index}/_refresh"))
        .send()
        .await
        .expect("refresh");
    let count: serde_json::Value = client
        .get(format!("{base}/{index}/_count"))
        .send()
        .await
        .expect("_count")
        .json()
        .await
        .expect("_count answers JSON");
    count["count"].as_u64().expect("a count")
}

fn figures(name: &str, seconds: f64, null_seconds: f64) -> Vec<(String, f64)> {
    let mb = (LINES as usize * LINE_BYTES) as f64 / 1e6;
    vec![
        (
            format!("file_to_{name}_events_per_s"),
            LINES as f64 / seconds,
        ),
        (format!("file_to_{name}_mb_per_s"), mb / seconds),
        (
            format!("file_to_{name}_ratio_to_null"),
            null_seconds / seconds,
        ),
    ]
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.log");
    write_file(&path);
    let mut report: Vec<(String, f64)> = Vec::new();
    runtime.block_on(async {
        let null_seconds = file_to(Box::new(Null), &path).await;
        report.extend(
            figures("null", null_seconds, null_seconds)
                .into_iter()
                .take(2),
        );

        match std::env::var(skiff_tests::env::KAFKA) {
            Ok(brokers) => {
                let topic = unique("skiff-bench");
                let mut config = KafkaConfig::new(vec![brokers.clone()]);
                config.topic = topic.clone();
                let kafka = Kafka::build(&config, OutputMetrics::default()).expect("kafka");
                let seconds = file_to(Box::new(kafka), &path).await;
                assert_eq!(kafka_count(&brokers, &topic), LINES, "records in {topic}");
                report.extend(figures("kafka", seconds, null_seconds));
            }
            Err(_) => eprintln!("skipping file → kafka: SKIFF_TEST_KAFKA is unset"),
        }

        match std::env::var(skiff_tests::env::OPENSEARCH) {
            Ok(base) => {
                let default_worker = ElasticsearchConfig::new(Vec::new()).worker;
                for (name, worker) in [
                    ("opensearch_one_request", 1),
                    ("opensearch", default_worker),
                ] {
                    let index = unique("skiff-bench");
                    let mut config = ElasticsearchConfig::new(vec![base.clone()]);
                    config.index = index.clone();
                    config.worker = worker;
                    let es = Elasticsearch::build(&config, OutputMetrics::default())
                        .expect("elasticsearch");
                    let seconds = file_to(Box::new(es), &path).await;
                    assert_eq!(
                        opensearch_count(&base, &index).await,
                        LINES,
                        "documents in {index}"
                    );
                    report.extend(figures(name, seconds, null_seconds));
                    reqwest::Client::new()
                        .delete(format!("{base}/{index}"))
                        .send()
                        .await
                        .ok();
                }
            }
            Err(_) => eprintln!("skipping file → opensearch: SKIFF_TEST_OPENSEARCH is unset"),
        }
    });
    let borrowed: Vec<(&str, f64)> = report.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    skiff_tests::bench::report(&borrowed);
}
