//! `cargo xtask bench webhook`: what a review costs.
//!
//! 1. In-process (criterion): `mutate` on a typed Deployment, `review` of a decoded request, and
//!    the whole handler's work from request bytes to response bytes.
//! 2. HTTPS (whole run): the release binary in its own process, as in a cluster, and a load
//!    generator on one thread of this process: 64 concurrent HTTP/1.1 keep-alive connections
//!    (what the API server opens to an in-cluster webhook: it speaks HTTP/1.1 to spread load
//!    over replicas, kubernetes#82090), flat out and paced at 2,000 reviews/s, with the
//!    webhook's CPU per review; then the same pace as streams of one HTTP/2 connection (what
//!    the API server uses for a loopback URL, kubernetes#122558, as in part 3): p50/p99
//!    latency and reviews/s. Clients and server share this machine's cores.
//! 3. Through the real kube-apiserver (when `SKIFF_TEST_KUBECONFIG` names one): Deployment
//!    creates in a namespace without the webhook and in one with it, interleaved; the
//!    webhook's added p50/p99.

#[path = "../tests/support/certificates.rs"]
mod certificates;
#[path = "../tests/support/objects.rs"]
mod objects;
#[path = "common/served.rs"]
mod served;

use criterion::{BatchSize, Criterion, Throughput};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use objects::{deployment, review};
use serde_json::json;
use served::Served;
use skiff_tests::bench::cpu_seconds;
use skiff_webhook::cluster::Detached;
use skiff_webhook::mutate::{self, Context};
use skiff_webhook::policy::Policy;
use skiff_webhook::resources::Bounds;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The allocator the webhook's binary has (`src/main.rs`), for the in-process figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent keep-alive clients of the HTTPS run.
const CLIENTS: usize = 64;
/// Length of each HTTPS run, after a warm-up.
const RUN: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);
/// The paced rate of the target.
const PACED_RATE: f64 = 2000.0;
/// Deployment creates per namespace through the API server.
const CREATES: usize = 150;

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    in_process(&mut criterion);
    criterion.final_summary();
    // One thread for the load generator: the webhook's process gets the rest of the machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut figures = runtime.block_on(https());
    figures.extend(runtime.block_on(through_the_api_server()));
    skiff_tests::bench::report(&figures);
}

fn in_process(c: &mut Criterion) {
    let policy = Policy::default();
    let bounds = Bounds::default();
    let typed: Deployment = serde_json::from_value(deployment()).unwrap();
    let body = serde_json::to_vec(&review(deployment())).unwrap();
    let request: AdmissionRequest<DynamicObject> =
        serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
            .unwrap()
            .try_into()
            .unwrap();
    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Elements(1));
    group.bench_function("mutate", |b| {
        let context = Context {
            namespace: "shop",
            old: None,
            policy: &policy,
            bounds: &bounds,
            vpa: None,
        };
        b.iter_batched(
            || typed.clone(),
            |d| mutate::mutate(d, &context),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("review", |b| {
        b.iter(|| mutate::review(black_box(&request), &policy, &Detached))
    });
    group.bench_function("bytes_to_bytes", |b| {
        b.iter(|| {
            let review: AdmissionReview<DynamicObject> =
                serde_json::from_slice(black_box(&body)).unwrap();
            let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
            let reviewed = mutate::review(&request, &policy, &Detached);
            serde_json::to_vec(&reviewed.response.into_review()).unwrap()
        })
    });
    group.finish();
}

/// Latencies of one HTTPS run with [`CLIENTS`] concurrent requesters sharing `clients`
/// round-robin, each paced to `rate / CLIENTS` per second, or flat out without a rate.
async fn load(url: &str, clients: &[reqwest::Client], rate: Option<f64>) -> (Vec<Duration>, f64) {
    let body = bytes(review(deployment()));
    let url = format!("{url}/mutate");
    let warm_up = Instant::now() + WARM_UP;
    let end = warm_up + RUN;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (client, url, body) = (
                clients[i % clients.len()].clone(),
                url.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                let mut pace = rate.map(|rate| {
                    let period = Duration::from_secs_f64(CLIENTS as f64 / rate);
                    // Spread the clients' ticks over one period.
                    let start =
                        tokio::time::Instant::now() + period.mul_f64(i as f64 / CLIENTS as f64);
                    let mut interval = tokio::time::interval_at(start, period);
                    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    interval
                });
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    if let Some(pace) = pace.as_mut() {
                        pace.tick().await;
                    }
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("a review answered");
                    assert!(response.status().is_success());
                    response.bytes().await.expect("a response body");
                    if sent >= warm_up && sent < end {
                        latencies.push(sent.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a client task"));
    }
    let rate = latencies.len() as f64 / RUN.as_secs_f64();
    latencies.sort();
    (latencies, rate)
}

async fn https() -> Vec<(&'static str, f64)> {
    let served = Served::start(Path::new(env!("CARGO_BIN_EXE_skiff-webhook"))).await;
    let pid = served.child.id();
    // One client each: a connection each, as many API server goroutines would open.
    let http1: Vec<_> = (0..CLIENTS).map(|_| served.certificates.client()).collect();
    let (flat_out, max_rate) = load(&served.url, &http1, None).await;
    // The webhook's own CPU per review, TLS and HTTP included (warm-up reviews count too).
    let cpu_before = cpu_seconds(pid);
    let (paced, paced_rate) = load(&served.url, &http1, Some(PACED_RATE)).await;
    let cpu_per_review =
        (cpu_seconds(pid) - cpu_before) / (paced_rate * (RUN + WARM_UP).as_secs_f64());
    let http2 = served
        .certificates
        .ca
        .client_builder()
        .http2_prior_knowledge()
        .build()
        .expect("an HTTP/2 client");
    let (paced_h2, paced_h2_rate) = load(&served.url, &[http2], Some(PACED_RATE)).await;
    vec![
        ("https_clients", CLIENTS as f64),
        ("https_max_reviews_per_s", max_rate),
        ("https_max_p50_ms", ms(percentile(&flat_out, 0.50))),
        ("https_max_p99_ms", ms(percentile(&flat_out, 0.99))),
        ("https_paced_reviews_per_s", paced_rate),
        ("https_paced_p50_ms", ms(percentile(&paced, 0.50))),
        ("https_paced_p99_ms", ms(percentile(&paced, 0.99))),
        (
            "https_paced_webhook_cpu_us_per_review",
            cpu_per_review * 1e6,
        ),
        ("https_h2_paced_reviews_per_s", paced_h2_rate),
        ("https_h2_paced_p50_ms", ms(percentile(&paced_h2, 0.50))),
        ("https_h2_paced_p99_ms", ms(percentile(&paced_h2, 0.99))),
    ]
}

async fn through_the_api_server() -> Vec<(&'static str, f64)> {
    let Ok(path) = std::env::var("SKIFF_TEST_KUBECONFIG") else {
        eprintln!(
            "SKIFF_TEST_KUBECONFIG unset: no API server figures \
             (eval $(cargo xtask peers up --only kube) first)"
        );
        return Vec::new();
    };
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    let client = kube::Client::try_from(config).expect("a client");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    let plain = format!("bench-plain-{nanos}");
    let hooked = format!("bench-webhook-{nanos}");
    let namespaces = Api::<Namespace>::all(client.clone());
    for name in [&plain, &hooked] {
        let ns = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("a namespace");
    }
    let served = Served::start(Path::new(env!("CARGO_BIN_EXE_skiff-webhook"))).await;
    skiff_tests::webhook::register(
        &client,
        &hooked,
        &format!("{}/mutate", served.url),
        &served.certificates.ca.pem,
        "Fail",
    )
    .await;
    let plain_api: Api<Deployment> = Api::namespaced(client.clone(), &plain);
    let hooked_api: Api<Deployment> = Api::namespaced(client.clone(), &hooked);
    // Wait for the API server to call the webhook.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let probe = hooked_api.create(&dry, &named(0)).await;
        if probe.is_ok_and(|d| {
            d.metadata
                .annotations
                .is_some_and(|a| a.contains_key(mutate::POLICY_HASH))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API server never called the webhook"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for i in 0..CREATES {
        for (api, latencies) in [(&plain_api, &mut without), (&hooked_api, &mut with)] {
            let started = Instant::now();
            api.create(&PostParams::default(), &named(i))
                .await
                .expect("a create");
            latencies.push(started.elapsed());
        }
    }
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(&hooked, &DeleteParams::default())
        .await;
    for name in [&plain, &hooked] {
        let _ = namespaces.delete(name, &DeleteParams::default()).await;
    }
    drop(served);
    without.sort();
    with.sort();
    let p = |l: &[Duration], q| ms(percentile(l, q));
    vec![
        ("apiserver_creates", CREATES as f64),
        ("apiserver_without_p50_ms", p(&without, 0.50)),
        ("apiserver_without_p99_ms", p(&without, 0.99)),
        ("apiserver_with_p50_ms", p(&with, 0.50)),
        ("apiserver_with_p99_ms", p(&with, 0.99)),
        ("apiserver_added_p50_ms", p(&with, 0.50) - p(&without, 0.50)),
        ("apiserver_added_p99_ms", p(&with, 0.99) - p(&without, 0.99)),
    ]
}

fn named(i: usize) -> Deployment {
    let mut d = deployment();
    d["metadata"] = json!({ "name": format!("web-{i}") });
    serde_json::from_value(d).unwrap()
}

fn bytes(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
