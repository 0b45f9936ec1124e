//! HTTPS: the AdmissionReview endpoint, probes and metrics; TLS and policy reloads; the
//! reconciler alongside; one graceful shutdown for all of it.

use crate::cluster::{Cluster, Detached, Stores};
use crate::metrics::{Metrics, ResultLabels, ReviewLabels};
use crate::policy::Policy;
use crate::{mutate, reconcile};
use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the certificate and policy files are checked for replacement.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How long in-flight reviews may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The API server sends at most 3 MiB of object; leave room for the review around it (and the
/// old object of an UPDATE), so a large object gets an answer rather than a 413.
const BODY_LIMIT: usize = 16 << 20;

/// What the server needs.
pub struct Options {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The policy file, watched for changes; `None` for the policy given as is.
    pub policy_path: Option<PathBuf>,
    pub policy: Policy,
    /// API server access for LimitRanges, VPAs and the HPA reconciler; `None` to admit only.
    pub client: Option<kube::Client>,
    /// Watch Deployments, HPAs and LimitRanges of this namespace only (a namespaced install,
    /// or tests sharing one API server); all namespaces when `None`.
    pub namespace: Option<String>,
}

/// A started server.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl Running {
    /// Stops accepting, closes idle keep-alive connections, lets in-flight reviews finish (for
    /// at most 10 s) and stops the reconciler.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("the server task panicked")?
    }

    /// Waits until the server ends by itself (it only does on failure).
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("the server task panicked")?
    }
}

/// The state of the routes.
#[derive(Clone)]
struct AppState {
    policy: watch::Receiver<Arc<Policy>>,
    cluster: Arc<dyn Cluster>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// Binds, starts serving, and starts the reloads and (with a client) the caches and the
/// reconciler.
pub async fn start(options: Options) -> Result<Running> {
    // One process-wide crypto provider: ring, as kube's client uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // rustls speaks TLS 1.2 and 1.3 only; the default config offers h2 and http/1.1.
    let tls = RustlsConfig::from_pem_file(&options.tls_cert, &options.tls_key)
        .await
        .with_context(|| {
            format!(
                "loading TLS from {} and {}",
                options.tls_cert.display(),
                options.tls_key.display()
            )
        })?;
    let (stop, stopped) = watch::channel(false);
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(reload_tls_on_change(
        tls.clone(),
        options.tls_cert.clone(),
        options.tls_key.clone(),
    ));
    let metrics = Arc::new(Metrics::default());
    let (policy_tx, policy) = watch::channel(Arc::new(options.policy));
    if let Some(path) = options.policy_path {
        tokio::spawn(reload_policy_on_change(path, policy_tx, metrics.clone()));
    }
    let ready = Arc::new(AtomicBool::new(false));
    let cluster: Arc<dyn Cluster> = match options.client {
        Some(client) => {
            let stores = Stores::start(&client, options.namespace.as_deref()).await?;
            let (ready, caches) = (ready.clone(), stores.clone());
            tokio::spawn(async move {
                match caches.ready().await {
                    Ok(()) => {
                        tracing::info!("caches synced: ready");
                        ready.store(true, Ordering::Release);
                    }
                    Err(err) => tracing::error!(%err, "caches never synced"),
                }
            });
            let cluster: Arc<dyn Cluster> = Arc::new(stores);
            tokio::spawn(reconcile::run(
                client,
                options.namespace.clone(),
                policy.clone(),
                cluster.clone(),
                metrics.clone(),
                shutdown(),
            ));
            cluster
        }
        None => {
            ready.store(true, Ordering::Release);
            Arc::new(Detached)
        }
    };
    let state = AppState {
        policy,
        cluster,
        metrics: metrics.clone(),
        ready,
    };

    let handle = Handle::new();
    // TCP_NODELAY, as Go's net/http sets it on the API server's side: a review's response must
    // not wait for the ACK of the previous segment (Nagle) on a keep-alive connection.
    let acceptor = RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new());
    let server = axum_server::bind(options.listen)
        .acceptor(acceptor)
        .handle(handle.clone())
        .serve(router(state).into_make_service());
    let graceful = {
        let handle = handle.clone();
        let stopped = shutdown();
        async move {
            stopped.await;
            tracing::info!("stopping: no new connections, finishing in-flight reviews");
            handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        }
    };
    tokio::spawn(graceful);
    let task = tokio::spawn(async move { server.await.context("the HTTPS server failed") });
    let addr = handle
        .listening()
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    tracing::info!(%addr, "serving AdmissionReviews on /mutate");
    Ok(Running {
        addr,
        metrics,
        stop,
        task,
    })
}

/// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve(options: Options) -> Result<()> {
    let running = start(options).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = sigterm.recv() => {},
    }
    running.stop().await
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(admit))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Ready once the policy is loaded (it is, or the process would not run) and the caches a
/// review reads are filled.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// `POST /mutate`: a body that is no AdmissionReview gets HTTP 400 with the reason; any
/// review gets an answer, never a failure at the HTTP level.
async fn admit(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let bad_request = |message: String| {
        tracing::warn!(%message, "rejected a request");
        state
            .metrics
            .reviews
            .get_or_create(&ReviewLabels {
                operation: "none",
                result: "bad_request",
            })
            .inc();
        (StatusCode::BAD_REQUEST, message).into_response()
    };
    let request = match decode_review(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let policy = state.policy.borrow().clone();
    let reviewed = mutate::review(&request, &policy, state.cluster.as_ref());
    let operation = match request.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    };
    let m = &state.metrics;
    m.reviews
        .get_or_create(&ReviewLabels {
            operation,
            result: reviewed.outcome.as_str(),
        })
        .inc();
    m.patch_operations.inc_by(reviewed.operations as u64);
    m.review_seconds.observe(started.elapsed().as_secs_f64());
    tracing::info!(
        uid = %request.uid,
        operation,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        dry_run = request.dry_run,
        result = reviewed.outcome.as_str(),
        patch_operations = reviewed.operations,
        warnings = reviewed.response.warnings.as_ref().map_or(0, Vec::len),
        "reviewed"
    );
    axum::Json(reviewed.response.into_review()).into_response()
}

/// The request of an `admission.k8s.io/v1` AdmissionReview body; the error, the reason of the
/// HTTP 400 that answers a body that is none. Public for the fuzz targets (`fuzz/`), which feed
/// it arbitrary bodies.
pub fn decode_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|err| format!("body is not an AdmissionReview: {err}"))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(format!(
            "expected admission.k8s.io/v1 AdmissionReview, got {} {}",
            review.types.api_version, review.types.kind
        ));
    }
    review
        .try_into()
        .map_err(|err| format!("AdmissionReview without a request: {err}"))
}

/// The modification time of a file, following symlinks (a mounted Secret or ConfigMap swaps
/// a symlink).
fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the certificate when either file changes; connections already open keep theirs.
async fn reload_tls_on_change(tls: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let mut seen = (modified(&cert), modified(&key));
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        let now = (modified(&cert), modified(&key));
        if now == seen {
            continue;
        }
        match tls.reload_from_pem_file(&cert, &key).await {
            Ok(()) => {
                tracing::info!(cert = %cert.display(), "reloaded the TLS certificate");
                seen = now;
            }
            // A half-written pair during a rotation: try again next round.
            Err(err) => tracing::warn!(%err, "cannot reload the TLS certificate yet"),
        }
    }
}

/// Reloads the policy when the file's content changes. A broken file is logged with its
/// location and counted; the last good policy stays in force.
async fn reload_policy_on_change(
    path: PathBuf,
    policy: watch::Sender<Arc<Policy>>,
    metrics: Arc<Metrics>,
) {
    let mut seen = std::fs::read(&path).ok();
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        let now = std::fs::read(&path).ok();
        if now == seen {
            continue;
        }
        seen = now;
        let (result, valid) = match Policy::load(&path) {
            Ok(new) => {
                tracing::info!(path = %path.display(), "reloaded the policy");
                policy.send_if_modified(|current| {
                    let changed = **current != new;
                    *current = Arc::new(new);
                    changed
                });
                ("success", 1)
            }
            Err(err) => {
                tracing::error!(%err, "invalid policy: keeping the last good one");
                (err.kind(), 0)
            }
        };
        metrics
            .policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        metrics.policy_valid.set(valid);
    }
}
