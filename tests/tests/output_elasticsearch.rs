//! The Elasticsearch output against the real OpenSearch node: every event indexed once, a
//! replay answered with conflicts instead of duplicates, mapping errors in the dead-letter file
//! with their reason, and an index that answers 429 retried until nothing is lost.

mod output_support;

use output_support::{assert_all_delivered, count_offsets, events};
use serde_json::{Value, json};
use skiff_agent::output::Output;
use skiff_agent::output::dead_letter::DeadLetterConfig;
use skiff_agent::output::elasticsearch::{Elasticsearch, ElasticsearchConfig};
use skiff_agent::output::metrics::OutputMetrics;
use skiff_agent::queue::{Queue, QueueConfig, QueueMetrics};
use skiff_tests::{env, require_peer, unique};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(base: &str, index: &str) -> ElasticsearchConfig {
    let mut config = ElasticsearchConfig::new(vec![base.to_string()]);
    config.index = index.to_string();
    config.timeout = Duration::from_secs(60);
    config
}

/// Every document of `index` (after a refresh), up to 10,000.
async fn documents(base: &str, index: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/{index}/_refresh"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|err| panic!("refreshing {index}: {err}"));
    let found: Value = client
        .post(format!("{base}/{index}/_search"))
        .json(&json!({ "size": 10_000, "track_total_hits": true, "query": { "match_all": {} } }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|err| panic!("searching {index}: {err}"))
        .json()
        .await
        .expect("_search answers JSON");
    found["hits"]["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["_source"].clone())
        .collect()
}

async fn put(base: &str, path: &str, body: Value) {
    reqwest::Client::new()
        .put(format!("{base}/{path}"))
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|err| panic!("PUT {path}: {err}"));
}

#[tokio::test]
async fn every_event_is_indexed_once_and_a_replay_only_conflicts() {
    let base = require_peer!(env::OPENSEARCH, "opensearch");
    for compression_level in [0, 1] {
        let run = unique("skiff-es");
        let metrics = OutputMetrics::default();
        let mut config = config(&base, &format!("{run}-%{{[service.name]}}"));
        config.compression_level = compression_level;
        config.bulk_max_size = 700;
        let mut output = Elasticsearch::build(&config, metrics.clone()).expect("build");
        let all = events(&run, 0..5_000, Some("svc"));
        for chunk in all.chunks(2_000) {
            output.send(chunk).await.expect("send");
        }
        // The same lines again, as after a crash before the offsets were committed.
        for chunk in all.chunks(2_000) {
            output.send(chunk).await.expect("replay");
        }
        let docs = documents(&base, &format!("{run}-svc")).await;
        let duplicates = assert_all_delivered(&count_offsets(&docs), 0..5_000);
        assert_eq!(duplicates, 0, "a replay created duplicates");
        assert_eq!(metrics.events_of("elasticsearch", "acked"), 5_000);
        assert_eq!(metrics.events_of("elasticsearch", "duplicate"), 5_000);
    }
}

#[tokio::test]
async fn workers_behind_the_queue_index_every_event_once_and_commit_in_order() {
    let base = require_peer!(env::OPENSEARCH, "opensearch");
    let run = unique("skiff-es-workers");
    let metrics = OutputMetrics::default();
    let mut config = config(&base, &run);
    config.worker = 4;
    let output = Elasticsearch::build(&config, metrics.clone()).expect("build");
    let committed = Arc::new(Mutex::new(Vec::new()));
    let on_safe = {
        let committed = Arc::clone(&committed);
        Box::new(move |batch: u64| committed.lock().unwrap().push(batch))
    };
    let queue = Queue::start(
        &QueueConfig::default(),
        vec![Box::new(output)],
        on_safe,
        QueueMetrics::default(),
    )
    .expect("queue");
    // Small batches, as from files that grow slowly: several requests in flight at once.
    for batch in 0..40 {
        queue
            .push(events(&run, batch * 100..(batch + 1) * 100, None), batch)
            .await
            .expect("push");
    }
    assert!(
        queue.close(Duration::from_secs(120)).await,
        "the workers did not deliver 40 batches within 120 s"
    );
    assert_eq!(*committed.lock().unwrap(), (0..40).collect::<Vec<u64>>());
    let docs = documents(&base, &run).await;
    assert_eq!(assert_all_delivered(&count_offsets(&docs), 0..4_000), 0);
    assert_eq!(metrics.events_of("elasticsearch", "acked"), 4_000);
}

#[tokio::test]
async fn mapping_errors_go_to_the_dead_letter_file_and_the_rest_is_indexed() {
    let base = require_peer!(env::OPENSEARCH, "opensearch");
    let run = unique("skiff-es-mapping");
    put(
        &base,
        &run,
        json!({ "mappings": { "properties": { "status_code": { "type": "integer" } } } }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("dead.ndjson");
    let mut config = config(&base, &run);
    config.dead_letter = Some(DeadLetterConfig::new(&dead_letter));
    let metrics = OutputMetrics::default();
    let mut output = Elasticsearch::build(&config, metrics.clone()).expect("build");
    let mut batch = events(&run, 0..1_000, Some("svc"));
    for (n, event) in batch.iter_mut().enumerate() {
        let status = if n % 10 == 3 {
            json!("not-a-number")
        } else {
            json!(200)
        };
        event.insert("status_code", status);
    }
    output.send(&batch).await.expect("send");

    let docs = documents(&base, &run).await;
    let bad = |n: &u64| n % 10 == 3;
    assert_eq!(
        assert_all_delivered(&count_offsets(&docs), (0..1_000).filter(|n| !bad(n))),
        0
    );
    let text = std::fs::read_to_string(&dead_letter).expect("the dead-letter file");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        assert_all_delivered(
            &count_offsets(records.iter().map(|r| &r["event"])),
            (0..1_000).filter(bad)
        ),
        0
    );
    for record in &records {
        let reason = record["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("400 ") && reason.contains("status_code"),
            "reason: {reason}"
        );
    }
    assert_eq!(metrics.events_of("elasticsearch", "dead_lettered"), 100);
    assert_eq!(metrics.events_of("elasticsearch", "acked"), 900);
}

#[tokio::test]
async fn an_index_answering_429_is_retried_until_everything_is_in() {
    let base = require_peer!(env::OPENSEARCH, "opensearch");
    let run = unique("skiff-es-429");
    put(&base, &run, json!({})).await;
    // The flood-stage block: OpenSearch answers every write with 429 until it is lifted.
    put(
        &base,
        &format!("{run}/_settings"),
        json!({ "index.blocks.read_only_allow_delete": true }),
    )
    .await;
    let mut config = config(&base, &run);
    config.backoff_init = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(500);
    config.max_retries = 1_000;
    let metrics = OutputMetrics::default();
    let mut output = Elasticsearch::build(&config, metrics.clone()).expect("build");
    let batch = events(&run, 0..2_000, Some("svc"));
    let sender = tokio::spawn(async move { output.send(&batch).await });

    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.retries_of("elasticsearch", "overloaded") == 0 {
        assert!(Instant::now() < deadline, "the output never retried a 429");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put(
        &base,
        &format!("{run}/_settings"),
        json!({ "index.blocks.read_only_allow_delete": null }),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("send did not finish after the block was lifted")
        .expect("the send task panicked")
        .expect("send");
    let docs = documents(&base, &run).await;
    assert_eq!(assert_all_delivered(&count_offsets(&docs), 0..2_000), 0);
    assert_eq!(metrics.events_of("elasticsearch", "acked"), 2_000);
}

#[tokio::test]
async fn an_unreachable_host_fails_the_batch_with_a_clear_error() {
    // Needs no peer: nothing listens on port 9 of the loopback.
    let metrics = OutputMetrics::default();
    let mut output =
        Elasticsearch::build(&config("http://127.0.0.1:9", "x"), metrics.clone()).expect("build");
    let err = output_support::send_fails_with(
        &mut output,
        &events("nowhere", 0..10, None),
        "unreachable",
    )
    .await;
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    assert_eq!(metrics.errors_of("elasticsearch", "unreachable"), 1);
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_fails_with_a_tls_error() {
    // Any TLS server shows the handshake failing; the Beats peer's binary serves one.
    require_peer!(env::BEATS, "beats");
    let dir = tempfile::tempdir().unwrap();
    let pki = output_support::pki(dir.path());
    let server = output_support::BeatsServer::start(dir.path(), Some((&pki.cert, &pki.key)));
    let mut config = config(&format!("https://{}", server.addr), "x");
    config.ssl = Some(skiff_agent::output::tls::TlsConfig {
        enabled: true,
        certificate_authorities: vec![pki.other_ca.clone()],
        ..Default::default()
    });
    let metrics = OutputMetrics::default();
    let mut output = Elasticsearch::build(&config, metrics.clone()).expect("build");
    let err =
        output_support::send_fails_with(&mut output, &events("tls", 0..10, None), "tls").await;
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(metrics.errors_of("elasticsearch", "tls"), 1);
}

#[tokio::test]
async fn a_data_stream_takes_the_documents() {
    let base = require_peer!(env::OPENSEARCH, "opensearch");
    let run = unique("skiff-es-ds");
    put(
        &base,
        &format!("_index_template/{run}"),
        json!({ "index_patterns": [format!("{run}-*")], "data_stream": {} }),
    )
    .await;
    let stream = format!("{run}-logs");
    let mut output =
        Elasticsearch::build(&config(&base, &stream), OutputMetrics::default()).expect("build");
    let batch = events(&run, 0..500, Some("svc"));
    output.send(&batch).await.expect("send");
    output.send(&batch).await.expect("replay");
    let docs = documents(&base, &stream).await;
    assert_eq!(assert_all_delivered(&count_offsets(&docs), 0..500), 0);
    let info: Value = reqwest::Client::new()
        .get(format!("{base}/_data_stream/{stream}"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("GET _data_stream")
        .json()
        .await
        .expect("JSON");
    assert_eq!(info["data_streams"][0]["name"], stream.as_str(), "{info}");
}
