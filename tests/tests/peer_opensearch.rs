//! Smoke test of the OpenSearch peer: the two calls the agent's Elasticsearch output depends on,
//! `_bulk` with NDJSON and `_search`, work against the real node.

use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn bulk_indexed_documents_are_found_by_search() {
    let base = skiff_tests::require_peer!(skiff_tests::env::OPENSEARCH, "opensearch");
    let client = reqwest::Client::new();
    // A fresh index per run, so reruns against a long-lived peer do not see older documents.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let index = format!("skiff-smoke-{nanos}");

    let docs = [
        json!({"@timestamp": "2026-01-01T00:00:00Z", "message": "GET /users/42 200", "service": {"name": "checkout"}}),
        json!({"@timestamp": "2026-01-01T00:00:01Z", "message": "connection reset by peer", "service": {"name": "payments"}}),
    ];
    let mut body = String::new();
    for doc in &docs {
        body.push_str(&json!({"create": {"_index": index}}).to_string());
        body.push('\n');
        body.push_str(&doc.to_string());
        body.push('\n');
    }
    let bulk: Value = client
        .post(format!("{base}/_bulk?refresh=true"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("POST _bulk")
        .json()
        .await
        .expect("_bulk response is JSON");
    assert_eq!(bulk["errors"], false, "_bulk reported errors: {bulk:#}");
    let items = bulk["items"].as_array().expect("_bulk items");
    assert_eq!(items.len(), docs.len());
    for item in items {
        assert_eq!(item["create"]["status"], 201, "item not created: {item:#}");
    }

    let found: Value = client
        .post(format!("{base}/{index}/_search"))
        .json(&json!({"query": {"match": {"message": "reset"}}}))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("POST _search")
        .json()
        .await
        .expect("_search response is JSON");
    let hits = found["hits"]["hits"].as_array().expect("search hits");
    assert_eq!(hits.len(), 1, "expected one hit: {found:#}");
    assert_eq!(hits[0]["_source"], docs[1]);
}
