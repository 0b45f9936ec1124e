//! Slow, silent and greedy clients, as raw TCP and TLS sockets: each is closed by the server in
//! bounded time, bodies are bounded in size, connections in number, and a normal client is
//! still served while many slow ones are held. Regression tests of the review that found idle
//! connections, half-sent handshakes, heads and bodies held forever (3,000 of them took the
//! webhook from 14 to 94 MB).

#[path = "support/raw.rs"]
mod raw;
mod support;

use raw::{HALF_A_BODY, HALF_A_CLIENT_HELLO, HALF_A_HEAD};
use rustls::pki_types::ServerName;
use serde_json::Value;
use skiff_webhook::server::ServerLimits;
use std::time::Duration;
use support::{Webhook, deployment, review};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A generous bound on how long the server may keep a client past its deadline.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

/// Short deadlines, so the tests need not wait for the real ones.
fn quick() -> ServerLimits {
    ServerLimits {
        tls_handshake_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..ServerLimits::default()
    }
}

async fn tcp(webhook: &Webhook) -> TcpStream {
    TcpStream::connect(webhook.running.addr).await.unwrap()
}

fn connector(webhook: &Webhook) -> TlsConnector {
    raw::connector(&webhook.certificates.ca.pem)
}

async fn tls(webhook: &Webhook) -> TlsStream<TcpStream> {
    raw::handshake(&connector(webhook), webhook.running.addr)
        .await
        .expect("a TLS handshake")
}

/// Everything the server sends until it closes the connection; panics if it does not close it
/// within [`CLOSED_WITHIN`].
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin), what: &str) -> String {
    let read_all = async {
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match stream.read(&mut buf).await {
                // A TLS stream cut without close_notify is an error to rustls: closed all the
                // same.
                Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(CLOSED_WITHIN, read_all)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {CLOSED_WITHIN:?}"))
}

#[tokio::test]
async fn silent_and_half_sent_handshakes_are_closed() {
    let webhook = Webhook::start_with(quick()).await;
    let mut silent = tcp(&webhook).await;
    let mut half = tcp(&webhook).await;
    half.write_all(HALF_A_CLIENT_HELLO).await.unwrap();
    closed_by_server(&mut silent, "a connection without a handshake").await;
    closed_by_server(&mut half, "half a ClientHello").await;
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn silent_clients_and_half_sent_heads_are_closed() {
    let webhook = Webhook::start_with(quick()).await;
    let mut silent = tls(&webhook).await;
    let mut half = tls(&webhook).await;
    half.write_all(HALF_A_HEAD).await.unwrap();
    half.flush().await.unwrap();
    closed_by_server(&mut silent, "a TLS connection without a request").await;
    closed_by_server(&mut half, "half a request head").await;

    // A head trickled a byte at a time is held to its deadline from its first byte.
    let mut trickle = tls(&webhook).await;
    let trickling = async {
        for byte in b"POST /mutate HTTP/1.1\r\nHost: webhook\r\n".iter().cycle() {
            if trickle.write_all(&[*byte]).await.is_err() || trickle.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(CLOSED_WITHIN, trickling)
        .await
        .expect("a trickled head is cut off");
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn half_sent_bodies_get_a_408_and_are_closed() {
    let webhook = Webhook::start_with(quick()).await;
    let mut half = tls(&webhook).await;
    half.write_all(HALF_A_BODY).await.unwrap();
    half.flush().await.unwrap();
    let answer = closed_by_server(&mut half, "half a body").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 300ms"), "{answer}");
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let webhook = Webhook::start_with(quick()).await;
    let mut idle = tls(&webhook).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: webhook\r\n\r\n")
        .await
        .unwrap();
    idle.flush().await.unwrap();
    let answer = closed_by_server(&mut idle, "an idle keep-alive connection").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_idle_timeout_leaves_busy_keep_alive_connections_alone() {
    let webhook = Webhook::start_with(quick()).await;
    let client = webhook.client();
    // Requests 100 ms apart, for 4 times the idle timeout and 6 times the head deadline, all on
    // one keep-alive connection: none is refused.
    for _ in 0..24 {
        let response = client.get(webhook.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_above_the_limit_get_a_413() {
    let webhook = Webhook::start_with(ServerLimits {
        max_body_bytes: 64 << 10,
        ..ServerLimits::default()
    })
    .await;
    let client = webhook.client();
    let post = |body: reqwest::Body| {
        client
            .post(webhook.url("/mutate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Declared by its Content-Length.
    let response = post(vec![b' '; (64 << 10) + 1].into()).await.unwrap();
    assert_eq!(response.status(), 413);
    // Chunked, without a length.
    let chunks = (0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1 << 10]));
    let stream = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = post(stream).await.unwrap();
    assert_eq!(response.status(), 413);
    // Below the limit: answered.
    let response = post(review(deployment()).to_string().into()).await.unwrap();
    assert_eq!(response.status(), 200);
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn http2_clients_are_served_within_the_smaller_windows() {
    let webhook = Webhook::start_with(quick()).await;
    let client = webhook
        .certificates
        .ca
        .client_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut big = deployment();
    big["metadata"]["annotations"]["blob"] = "x".repeat(3 << 20).into();
    for _ in 0..2 {
        let response = client
            .post(webhook.url("/mutate"))
            .header("content-type", "application/json")
            .body(review(big.clone()).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
    }
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn limits_that_cannot_work_are_refused_at_start() {
    let certificates = support::Certificates::new();
    let defaults = ServerLimits::default;
    for limits in [
        ServerLimits {
            idle_timeout: Duration::ZERO,
            ..defaults()
        },
        ServerLimits {
            max_connections: 0,
            ..defaults()
        },
        ServerLimits {
            max_body_bytes: 2 << 20,
            body_budget_bytes: 1 << 20,
            ..defaults()
        },
    ] {
        let started = skiff_webhook::server::start(support::options(&certificates, limits)).await;
        let err = started.err().expect("refused").to_string();
        assert!(err.contains("need timeouts above zero"), "{err}");
    }
}

#[tokio::test]
async fn beyond_the_connection_cap_a_connection_waits_until_one_closes() {
    let webhook = Webhook::start_with(ServerLimits {
        max_connections: 3,
        ..ServerLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tls(&webhook).await);
    }
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let fourth = tokio::spawn(connector(&webhook).connect(name, tcp(&webhook).await));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fourth.is_finished(), "a fourth connection was served");
    held.pop();
    let fourth = tokio::time::timeout(CLOSED_WITHIN, fourth)
        .await
        .expect("the fourth connection is served once another closes")
        .unwrap();
    assert!(fourth.is_ok(), "{fourth:?}");
    drop(held);
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_normal_client_is_served_while_many_slow_clients_are_held() {
    // The real deadlines: the slow clients stay for the whole test.
    let webhook = Webhook::start().await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut tcp = tcp(&webhook).await;
        tcp.write_all(HALF_A_CLIENT_HELLO).await.unwrap();
        slow.push(tokio::spawn(async move {
            let _ = tcp.read(&mut [0; 16]).await;
        }));
    }
    let mut streams = Vec::new();
    for i in 0..200 {
        let mut stream = tls(&webhook).await;
        let request = if i % 2 == 0 { HALF_A_HEAD } else { HALF_A_BODY };
        stream.write_all(request).await.unwrap();
        stream.flush().await.unwrap();
        streams.push(stream);
    }
    let response = webhook
        .client()
        .post(webhook.url("/mutate"))
        .header("content-type", "application/json")
        .body(review(deployment()).to_string())
        .send()
        .await
        .expect("served while 300 slow clients are held");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(
        slow.iter().all(|task| !task.is_finished()),
        "the slow handshakes were still held"
    );
    drop(streams);
    webhook.running.stop().await.unwrap();
}
