//! The Kafka output against the real broker: every event arrives once in the topic its template
//! (or the webhook's `log-topic`) names, with every codec; refused and undeliverable events give
//! clear errors and metrics while their neighbours still arrive.

mod output_support;

use output_support::{assert_all_delivered, count_offsets, events};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use skiff_agent::output::Output;
use skiff_agent::output::dead_letter::DeadLetterConfig;
use skiff_agent::output::kafka::config::{Compression, SaslConfig};
use skiff_agent::output::kafka::{Kafka, KafkaConfig};
use skiff_agent::output::metrics::OutputMetrics;
use skiff_agent::process::Event;
use skiff_tests::kafka::read_topics;
use skiff_tests::{env, require_peer, unique};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::util::SubscriberInitExt;

/// How long reading a topic back may take before the test fails naming it.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

fn config(brokers: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(vec![brokers.to_string()]);
    config.timeout = Duration::from_secs(30);
    config
}

/// Deletes the test's topics, so reruns do not pile partitions up in the long-lived broker.
async fn delete_topics(brokers: &str, topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_topics(&names, &options)
        .await
        .expect("delete_topics");
    for result in results {
        result.unwrap_or_else(|(topic, err)| panic!("deleting {topic}: {err}"));
    }
}

async fn send_in_batches(output: &mut Kafka, events: &[Event], batch: usize) {
    for chunk in events.chunks(batch) {
        output.send(chunk).await.expect("send");
    }
}

#[tokio::test]
async fn events_reach_their_templated_topic_once_with_the_override_and_fallback() {
    let brokers = require_peer!(env::KAFKA, "kafka");
    let run = unique("skiff-kafka");
    let mut config = config(&brokers);
    config.topic = format!("{run}-%{{[service.name]}}");
    config.fallback_topic = format!("{run}-fallback");
    config.allowed_topics = vec![format!("{run}-*")];
    config.key = Some("%{[service.name]}".into());
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&config, metrics.clone()).expect("build");

    // 20,000 events: services a and b, 300 with the webhook's topic annotation, 200 with no
    // service at all (so the template cannot be rendered).
    let mut all = Vec::new();
    for n in 0..20_000u64 {
        let mut batch = events(&run, n..n + 1, None);
        let event = &mut batch[0];
        match n % 100 {
            0..=1 => {}
            2..=4 => {
                event.insert("service", json!({ "name": "a" }));
                event.insert(
                    "kubernetes",
                    json!({ "annotations": { "skiff_dev/log-topic": format!("{run}-override") } }),
                );
            }
            k if k % 2 == 0 => {
                event.insert("service", json!({ "name": "a" }));
            }
            _ => {
                event.insert("service", json!({ "name": "b" }));
            }
        }
        all.extend(batch);
    }
    send_in_batches(&mut output, &all, 2_000).await;

    let topics: Vec<String> = ["a", "b", "override", "fallback"]
        .iter()
        .map(|suffix| format!("{run}-{suffix}"))
        .collect();
    let records = read_topics(&brokers, &topics, READ_TIMEOUT);
    let duplicates =
        assert_all_delivered(&count_offsets(records.iter().map(|r| &r.event)), 0..20_000);
    assert_eq!(duplicates, 0, "a healthy broker gave duplicates");
    for record in &records {
        let n = record.event["log"]["offset"].as_u64().unwrap();
        let (topic, key) = match n % 100 {
            0..=1 => ("fallback", None),
            2..=4 => ("override", Some("a")),
            k if k % 2 == 0 => ("a", Some("a")),
            _ => ("b", Some("b")),
        };
        assert_eq!(record.topic, format!("{run}-{topic}"), "event {n}");
        assert_eq!(record.key.as_deref(), key, "key of event {n}");
    }
    assert_eq!(metrics.events_of("kafka", "acked"), 20_000);
    assert_eq!(metrics.fallbacks_of("kafka", "topic"), 400);
    assert_eq!(metrics.fallbacks_of("kafka", "key"), 400);
    delete_topics(&brokers, &topics).await;
}

#[tokio::test]
async fn every_codec_delivers() {
    let brokers = require_peer!(env::KAFKA, "kafka");
    let run = unique("skiff-kafka-codec");
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut config = config(&brokers);
        let topic = format!("{run}-{codec:?}").to_lowercase();
        config.topic = topic.clone();
        config.compression = codec;
        let mut output = Kafka::build(&config, OutputMetrics::default()).expect("build");
        send_in_batches(&mut output, &events(&run, 0..1_000, Some("svc")), 250).await;
        let records = read_topics(&brokers, std::slice::from_ref(&topic), READ_TIMEOUT);
        let duplicates =
            assert_all_delivered(&count_offsets(records.iter().map(|r| &r.event)), 0..1_000);
        assert_eq!(duplicates, 0, "{codec:?}");
        delete_topics(&brokers, std::slice::from_ref(&topic)).await;
    }
}

#[tokio::test]
async fn an_oversized_event_is_dead_lettered_and_its_neighbours_arrive() {
    let brokers = require_peer!(env::KAFKA, "kafka");
    let run = unique("skiff-kafka-big");
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("dead.ndjson");
    let mut config = config(&brokers);
    config.topic = run.clone();
    config.max_message_bytes = 10_000;
    config.dead_letter = Some(DeadLetterConfig::new(&dead_letter));
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&config, metrics.clone()).expect("build");
    let mut batch = events(&run, 0..100, Some("svc"));
    batch[50].insert("message", "x".repeat(50_000));
    output.send(&batch).await.expect("send");

    let records = read_topics(&brokers, std::slice::from_ref(&run), READ_TIMEOUT);
    let expected = (0..100).filter(|&n| n != 50);
    assert_eq!(
        assert_all_delivered(&count_offsets(records.iter().map(|r| &r.event)), expected),
        0
    );
    let text = std::fs::read_to_string(&dead_letter).expect("the dead-letter file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["event"]["log"]["offset"], 50);
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(reason.contains("oversized"), "{reason}");
    assert_eq!(metrics.errors_of("kafka", "oversized"), 1);
    assert_eq!(metrics.events_of("kafka", "dead_lettered"), 1);
    assert_eq!(metrics.events_of("kafka", "acked"), 99);
    delete_topics(&brokers, std::slice::from_ref(&run)).await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_the_batch_with_a_clear_error() {
    // Needs no peer: nothing listens on port 9 of the loopback.
    let mut config = config("127.0.0.1:9");
    config.topic = unique("skiff-kafka-nowhere");
    config.timeout = Duration::from_secs(3);
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&config, metrics.clone()).expect("build");
    let err = output_support::send_fails_with(
        &mut output,
        &events("nowhere", 0..10, None),
        "unreachable",
    )
    .await;
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:9"), "{message}");
    assert_eq!(metrics.errors_of("kafka", "unreachable"), 1);
    assert_eq!(metrics.events_of("kafka", "acked"), 0);
}

#[tokio::test]
async fn a_broker_certificate_from_another_ca_fails_with_a_tls_error() {
    // The broker's TLS listener, and a CA that did not sign its certificate.
    let addr = require_peer!(env::KAFKA_TLS, "kafka (TLS listener)");
    let dir = tempfile::tempdir().unwrap();
    let pki = output_support::pki(dir.path());
    let mut config = config(&addr);
    config.topic = unique("skiff-kafka-tls");
    config.timeout = Duration::from_secs(5);
    config.ssl = Some(skiff_agent::output::tls::TlsConfig {
        enabled: true,
        certificate_authorities: vec![pki.other_ca.clone()],
        ..Default::default()
    });
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&config, metrics.clone()).expect("build");
    let err =
        output_support::send_fails_with(&mut output, &events("tls", 0..10, None), "tls").await;
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(metrics.errors_of("kafka", "tls"), 1);
}

/// The peer's SASL listener, its user, `mechanism` and the given password.
fn sasl_config(mechanism: &str, password: &str) -> Option<KafkaConfig> {
    let addr = skiff_tests::peer(env::KAFKA_SASL, "kafka (SASL listener)")?;
    let username = skiff_tests::peer(env::KAFKA_SASL_USERNAME, "kafka (SASL user)")?;
    let mut config = config(&addr);
    config.sasl = Some(SaslConfig {
        mechanism: mechanism.into(),
        username,
        password: password.to_string(),
    });
    Some(config)
}

/// Sends 2,000 events through `config` into a new topic and reads them back over the plain
/// listener (the same broker): each arrives once, and each was acknowledged.
async fn every_event_arrives_once_through(mut config: KafkaConfig, run: &str) {
    let brokers = require_peer!(env::KAFKA, "kafka");
    config.topic = run.to_string();
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&config, metrics.clone()).expect("build");
    send_in_batches(&mut output, &events(run, 0..2_000, Some("svc")), 500).await;
    let run = run.to_string();
    let records = read_topics(&brokers, std::slice::from_ref(&run), READ_TIMEOUT);
    let duplicates =
        assert_all_delivered(&count_offsets(records.iter().map(|r| &r.event)), 0..2_000);
    assert_eq!(duplicates, 0);
    assert_eq!(metrics.events_of("kafka", "acked"), 2_000);
    delete_topics(&brokers, std::slice::from_ref(&run)).await;
}

#[tokio::test]
async fn sasl_plain_credentials_deliver_every_event() {
    let password = require_peer!(env::KAFKA_SASL_PASSWORD, "kafka (SASL password)");
    let Some(config) = sasl_config("PLAIN", &password) else {
        return;
    };
    every_event_arrives_once_through(config, &unique("skiff-kafka-plain")).await;
}

#[tokio::test]
async fn sasl_scram_credentials_deliver_every_event() {
    let password = require_peer!(env::KAFKA_SASL_PASSWORD, "kafka (SASL password)");
    let Some(config) = sasl_config("SCRAM-SHA-512", &password) else {
        return;
    };
    every_event_arrives_once_through(config, &unique("skiff-kafka-scram")).await;
}

#[tokio::test]
async fn tls_with_the_brokers_ca_delivers_every_event() {
    let addr = require_peer!(env::KAFKA_TLS, "kafka (TLS listener)");
    let ca = require_peer!(env::KAFKA_TLS_CA, "kafka (TLS listener's CA)");
    let mut config = config(&addr);
    config.ssl = Some(skiff_agent::output::tls::TlsConfig {
        enabled: true,
        certificate_authorities: vec![ca.into()],
        ..Default::default()
    });
    every_event_arrives_once_through(config, &unique("skiff-kafka-tls-ok")).await;
}

#[tokio::test]
async fn wrong_sasl_credentials_fail_with_an_auth_error_and_lose_nothing() {
    let brokers = require_peer!(env::KAFKA, "kafka");
    let password = require_peer!(env::KAFKA_SASL_PASSWORD, "kafka (SASL password)");
    let Some(mut wrong) = sasl_config("PLAIN", "not-the-password") else {
        return;
    };
    let run = unique("skiff-kafka-sasl-wrong");
    wrong.topic = run.clone();
    wrong.timeout = Duration::from_secs(5);
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&wrong, metrics.clone()).expect("build");
    let batch = events(&run, 0..100, Some("svc"));
    let err = output_support::send_fails_with(&mut output, &batch, "auth").await;
    let message = err.to_string().to_lowercase();
    assert!(
        message.contains("sasl authentication") && message.contains("invalid username or password"),
        "the error must say the credentials were refused: {err}"
    );
    assert_eq!(metrics.errors_of("kafka", "auth"), 1);
    assert_eq!(metrics.events_of("kafka", "acked"), 0);
    assert_eq!(metrics.events_of("kafka", "dropped"), 0);
    assert_eq!(metrics.events_of("kafka", "dead_lettered"), 0);

    // The failed batch is still the caller's: sent again with the right password, every
    // event arrives once, and nothing came through before.
    let mut right = sasl_config("PLAIN", &password).expect("the SASL listener");
    right.topic = run.clone();
    Kafka::build(&right, OutputMetrics::default())
        .expect("build")
        .send(&batch)
        .await
        .expect("the right password delivers");
    let records = read_topics(&brokers, std::slice::from_ref(&run), READ_TIMEOUT);
    let duplicates = assert_all_delivered(&count_offsets(records.iter().map(|r| &r.event)), 0..100);
    assert_eq!(duplicates, 0, "the refused attempt wrote nothing");
    delete_topics(&brokers, std::slice::from_ref(&run)).await;
}

/// A topic name Kafka refuses (spaces and `!`), as a Deployment's `skiff.dev/log-topic`
/// annotation can set it.
const INVALID_TOPIC: &str = "not a valid topic!";

/// Creates `topic` with a `max.message.bytes` of `max_bytes`: the broker refuses larger
/// records with MESSAGE_TOO_LARGE, whatever the output's own limit.
async fn create_topic_with_max_bytes(brokers: &str, topic: &str, max_bytes: u32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let max_bytes = max_bytes.to_string();
    let new =
        NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", &max_bytes);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics([&new], &options)
        .await
        .expect("create_topics")
    {
        result.unwrap_or_else(|(topic, err)| panic!("creating {topic}: {err}"));
    }
}

/// What both refusal tests send: 50 events to `run`, of which event 10 names the invalid topic,
/// then event 50 alone, larger than the topic's `max.message.bytes`. Alone, because the broker
/// refuses a whole record batch that is too large, neighbours included.
async fn send_two_permanent_refusals(output: &mut Kafka, run: &str) {
    let mut batch = events(run, 0..50, Some("svc"));
    batch[10].insert(
        "kubernetes",
        json!({ "annotations": { "skiff_dev/log-topic": INVALID_TOPIC } }),
    );
    output.send(&batch).await.expect("send");
    let mut large = events(run, 50..51, Some("svc"));
    large[0].insert("message", "x".repeat(50_000));
    output.send(&large).await.expect("send");
}

/// A config for `run`: its own topic, no compression (so the broker sees the record's real
/// size), the output's own limit far above the topic's, and the invalid topic allowed from the
/// annotation, so that the broker is the one to refuse it.
async fn refusing_config(brokers: &str, run: &str) -> KafkaConfig {
    create_topic_with_max_bytes(brokers, run, 20_000).await;
    let mut config = config(brokers);
    config.topic = run.to_string();
    config.allowed_topics = vec![INVALID_TOPIC.to_string()];
    config.compression = Compression::None;
    config.max_message_bytes = 1_000_000;
    config
}

#[tokio::test]
async fn records_the_broker_refuses_for_good_land_in_the_dead_letter_file() {
    let brokers = require_peer!(env::KAFKA, "kafka");
    let run = unique("skiff-kafka-refused");
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("dead.ndjson");
    let mut config = refusing_config(&brokers, &run).await;
    config.dead_letter = Some(DeadLetterConfig::new(&dead_letter));
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&config, metrics.clone()).expect("build");
    send_two_permanent_refusals(&mut output, &run).await;

    let records = read_topics(&brokers, std::slice::from_ref(&run), READ_TIMEOUT);
    let expected = (0..50).filter(|&n| n != 10);
    assert_eq!(
        assert_all_delivered(&count_offsets(records.iter().map(|r| &r.event)), expected),
        0
    );
    let text = std::fs::read_to_string(&dead_letter).expect("the dead-letter file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let offsets: Vec<&Value> = lines.iter().map(|l| &l["event"]["log"]["offset"]).collect();
    assert_eq!(offsets, [&json!(10), &json!(50)], "{text}");
    for line in &lines {
        assert_eq!(line["output"], "kafka");
    }
    let invalid = lines[0]["reason"].as_str().unwrap().to_lowercase();
    assert!(invalid.contains("invalid topic"), "{invalid}");
    let large = lines[1]["reason"].as_str().unwrap().to_lowercase();
    assert!(large.contains("too large"), "{large}");
    assert_eq!(metrics.errors_of("kafka", "invalid_topic"), 1);
    assert_eq!(metrics.errors_of("kafka", "message_too_large"), 1);
    assert_eq!(metrics.events_of("kafka", "dead_lettered"), 2);
    assert_eq!(metrics.events_of("kafka", "dropped"), 0);
    assert_eq!(metrics.events_of("kafka", "acked"), 49);
    delete_topics(&brokers, std::slice::from_ref(&run)).await;
}

/// What the output logs, captured for the test's thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test]
async fn without_a_dead_letter_file_refused_records_are_counted_and_logged_by_reason() {
    let brokers = require_peer!(env::KAFKA, "kafka");
    let run = unique("skiff-kafka-dropped");
    let config = refusing_config(&brokers, &run).await;
    let logs = Logs::default();
    let writer = logs.clone();
    // The current-thread runtime runs the output on this thread, where the logs are captured.
    let _capture = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .set_default();
    let metrics = OutputMetrics::default();
    let mut output = Kafka::build(&config, metrics.clone()).expect("build");
    send_two_permanent_refusals(&mut output, &run).await;

    assert_eq!(metrics.dropped_of("kafka", "invalid_topic"), 1);
    assert_eq!(metrics.dropped_of("kafka", "message_too_large"), 1);
    assert_eq!(metrics.events_of("kafka", "dropped"), 2);
    assert_eq!(metrics.events_of("kafka", "acked"), 49);
    let lines = logs.lines();
    for (reason, offset) in [("invalid_topic", 10), ("message_too_large", 50)] {
        let line = lines
            .iter()
            .find(|l| l.contains("dropped") && l.contains(&format!("reason=\"{reason}\"")))
            .unwrap_or_else(|| {
                panic!("no log line names the {reason} drop:\n{}", lines.join("\n"))
            });
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains(&format!("offset={offset}")), "{line}");
    }
    delete_topics(&brokers, std::slice::from_ref(&run)).await;
}
