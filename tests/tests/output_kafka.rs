//! The Kafka output against the real broker: every event arrives once in the topic its template
//! (or the webhook's `log-topic`) names, with every codec; refused and undeliverable events give
//! clear errors and metrics while their neighbours still arrive.

mod output_support;

use output_support::{assert_all_delivered, count_offsets, events};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use skiff_agent::output::Output;
use skiff_agent::output::kafka::config::{Compression, SaslConfig};
use skiff_agent::output::kafka::{Kafka, KafkaConfig};
use skiff_agent::output::metrics::OutputMetrics;
use skiff_agent::process::Event;
use skiff_tests::kafka::read_topics;
use skiff_tests::{env, require_peer, unique};
use std::time::Duration;

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
    config.dead_letter = Some(skiff_agent::output::dead_letter::DeadLetterConfig {
        path: dead_letter.clone(),
    });
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
