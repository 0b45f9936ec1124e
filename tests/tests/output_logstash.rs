//! The Logstash output against go-lumber's Beats server: windows of plain and compressed
//! frames acknowledged once, load balancing over two servers, reconnection after a server is
//! killed mid-stream, TLS with the right and the wrong CA.

mod output_support;

use output_support::{BeatsServer, assert_all_delivered, count_offsets, events, pki, read_ndjson};
use skiff_agent::output::Output;
use skiff_agent::output::logstash::{Logstash, LogstashConfig};
use skiff_agent::output::metrics::OutputMetrics;
use skiff_agent::output::tls::TlsConfig;
use skiff_agent::process::Event;
use skiff_tests::{env, require_peer, unique};
use std::time::{Duration, Instant};

fn config(hosts: &[&str]) -> LogstashConfig {
    let mut config = LogstashConfig::new(hosts.iter().map(|h| h.to_string()).collect());
    config.timeout = Duration::from_secs(20);
    config
}

/// Sends `events` in batches as the pipeline does: a failed batch is sent again until it is
/// acknowledged. Returns how many sends failed.
async fn send_until_acked(output: &mut Logstash, events: &[Event], batch: usize) -> u32 {
    let mut failures = 0;
    for chunk in events.chunks(batch) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Err(err) = output.send(chunk).await {
            failures += 1;
            assert!(
                Instant::now() < deadline,
                "a batch never got through: {err}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    failures
}

#[tokio::test]
async fn plain_and_compressed_windows_are_acknowledged_once() {
    let addr = require_peer!(env::BEATS, "beats");
    let output_file = require_peer!(env::BEATS_OUTPUT, "beats");
    for compression_level in [0, 3] {
        let run = unique("skiff-logstash");
        let mut config = config(&[&addr]);
        config.compression_level = compression_level;
        config.bulk_max_size = 512;
        let metrics = OutputMetrics::default();
        let mut output = Logstash::build(&config, metrics.clone()).expect("build");
        let all = events(&run, 0..5_000, Some("svc"));
        for chunk in all.chunks(2_000) {
            output.send(chunk).await.expect("send");
        }
        let acked = read_ndjson(std::path::Path::new(&output_file), &run);
        assert_eq!(assert_all_delivered(&count_offsets(&acked), 0..5_000), 0);
        assert_eq!(acked[0]["@metadata"]["beat"], "skiff");
        assert_eq!(acked[0]["service"]["name"], "svc");
        assert_eq!(metrics.events_of("logstash", "acked"), 5_000);
    }
}

#[tokio::test]
async fn load_balancing_spreads_windows_over_every_host() {
    require_peer!(env::BEATS, "beats");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        BeatsServer::start(dir_a.path(), None),
        BeatsServer::start(dir_b.path(), None),
    );
    let run = unique("skiff-logstash-lb");
    let mut config = config(&[&a.addr, &b.addr]);
    config.loadbalance = true;
    config.bulk_max_size = 100;
    let mut output = Logstash::build(&config, OutputMetrics::default()).expect("build");
    output
        .send(&events(&run, 0..1_000, None))
        .await
        .expect("send");
    let (on_a, on_b) = (a.events(&run), b.events(&run));
    assert_eq!(
        (on_a.len(), on_b.len()),
        (500, 500),
        "windows alternate between the hosts"
    );
    let all: Vec<_> = on_a.iter().chain(&on_b).collect();
    assert_eq!(assert_all_delivered(&count_offsets(all), 0..1_000), 0);
}

#[tokio::test]
async fn a_server_killed_mid_stream_loses_nothing() {
    require_peer!(env::BEATS, "beats");
    let dir = tempfile::tempdir().unwrap();
    let mut server = BeatsServer::start(dir.path(), None);
    let run = unique("skiff-logstash-restart");
    let mut config = config(&[&server.addr]);
    config.bulk_max_size = 200;
    let metrics = OutputMetrics::default();
    let mut output = Logstash::build(&config, metrics.clone()).expect("build");
    let all = events(&run, 0..20_000, None);
    let sender = {
        let all = all.clone();
        tokio::spawn(async move { send_until_acked(&mut output, &all, 1_000).await })
    };
    // Kill the server twice while batches are in flight.
    for wanted in [5_000, 12_000] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.events(&run).len() < wanted {
            assert!(
                Instant::now() < deadline,
                "fewer than {wanted} events arrived in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.restart();
    }
    let failures = tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("the sender hung after the restarts")
        .expect("the sender panicked");
    let duplicates = assert_all_delivered(&count_offsets(&server.events(&run)), 0..20_000);
    let broken = metrics.errors_of("logstash", "unreachable");
    eprintln!(
        "server killed twice: {broken} broken connections, {failures} failed sends, {duplicates} duplicates"
    );
    assert!(broken >= 2, "each kill must break the connection in use");
}

#[tokio::test]
async fn tls_with_the_right_ca_delivers_and_the_wrong_ca_fails_clearly() {
    require_peer!(env::BEATS, "beats");
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = BeatsServer::start(dir.path(), Some((&pki.cert, &pki.key)));
    let run = unique("skiff-logstash-tls");
    let tls = |ca: &std::path::Path| TlsConfig {
        enabled: true,
        certificate_authorities: vec![ca.to_path_buf()],
        ..TlsConfig::default()
    };

    let mut config = config(&[&server.addr]);
    config.ssl = Some(tls(&pki.ca));
    let mut output = Logstash::build(&config, OutputMetrics::default()).expect("build");
    output
        .send(&events(&run, 0..100, None))
        .await
        .expect("send over TLS");
    assert_eq!(
        assert_all_delivered(&count_offsets(&server.events(&run)), 0..100),
        0
    );

    config.ssl = Some(tls(&pki.other_ca));
    let metrics = OutputMetrics::default();
    let mut output = Logstash::build(&config, metrics.clone()).expect("build");
    let err =
        output_support::send_fails_with(&mut output, &events(&run, 100..200, None), "tls").await;
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(metrics.errors_of("logstash", "tls") >= 1);
}

#[tokio::test]
async fn an_unreachable_host_fails_the_batch_with_a_clear_error() {
    let metrics = OutputMetrics::default();
    let mut output = Logstash::build(&config(&["127.0.0.1:9"]), metrics.clone()).expect("build");
    let err = output_support::send_fails_with(
        &mut output,
        &events("nowhere", 0..10, None),
        "unreachable",
    )
    .await;
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}
