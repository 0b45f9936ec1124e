//! HTTPS: the AdmissionReview endpoint and probes; plain HTTP on a port of its own: metrics;
//! TLS and policy reloads; the reconciler alongside; one graceful shutdown for all of it.

use crate::cluster::{Cluster, Detached, Stores};
use crate::metrics::{Metrics, ResultLabels, ReviewLabels};
use crate::policy::Policy;
use crate::{mutate, reconcile};
use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

mod connections;

/// How often the certificate and policy files are checked for replacement.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How long in-flight reviews may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What one client may hold of the server: time and memory. The defaults suit the API server,
/// which keeps connections alive between reviews and gives up on a review after the
/// registration's `timeoutSeconds` (10 s unless set, 30 s at most; skiff's registration says 5).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// The TLS handshake must end within this long of the connection's start. Default: 10 s
    /// (what Go's HTTP client, the API server's, allows itself).
    pub tls_handshake_timeout: Duration,
    /// A request's head (request line and headers) must arrive within this long of its first
    /// byte, and the first request within this long of the handshake. Default: 10 s.
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this long of its head; the API server has given up on
    /// the review by then. Default: 10 s.
    pub body_read_timeout: Duration,
    /// A connection without a request in flight is closed after this long. Longer than the 90 s
    /// after which the API server's HTTP client closes an idle connection itself, so the webhook
    /// never closes one under a request the client is about to send. Default: 120 s.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue until one closes. With
    /// ~25 KB per idle TLS connection, 1,024 of them cost about 25 MB. Default: 1,024.
    pub max_connections: usize,
    /// The largest request body, answered 413 above (the API server then applies the
    /// registration's `failurePolicy`: skiff's `Ignore` admits the object as written). The API
    /// server takes at most 3 MB of object from a client and etcd stores at most 1.5 MiB, so
    /// only an UPDATE of an object near etcd's limit comes close. Decoding costs up to ~40 bytes
    /// of memory per byte of body (a review made of 6 MiB of tiny annotations peaked at 244 MB,
    /// `cargo bench --bench memory`), and the pod's limit is 256 MiB. Default: 4 MiB.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, read or being read, across all connections: a
    /// body waits for room before more of it is read (and gets a 408 if it cannot get room in
    /// time). Bounds the memory that many large bodies at once would take. Default: 48 MiB.
    pub body_budget_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            max_body_bytes: 4 << 20,
            body_budget_bytes: 48 << 20,
        }
    }
}

/// What the server needs.
pub struct Options {
    pub listen: SocketAddr,
    /// Where `/metrics` is served, over plain HTTP. Apart from `listen`, so that a
    /// NetworkPolicy can let the scrapers reach the metrics and only them, and the API server
    /// the reviews.
    pub metrics_listen: SocketAddr,
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
    /// Bounds on what clients may hold.
    pub limits: ServerLimits,
}

/// A started server.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The address of `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, closes idle keep-alive connections, lets in-flight reviews finish (for
    /// at most 10 s) and stops the reconciler.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("the server task panicked")
    }

    /// Waits until the server ends by itself (it only does if it panicked).
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("the server task panicked")
    }
}

/// The state of the routes.
#[derive(Clone)]
struct AppState {
    policy: watch::Receiver<Arc<Policy>>,
    cluster: Arc<dyn Cluster>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    /// Room for request bodies, a permit per byte.
    body_budget: Arc<Semaphore>,
    limits: ServerLimits,
}

/// Binds, starts serving, and starts the reloads and (with a client) the caches and the
/// reconciler.
pub async fn start(options: Options) -> Result<Running> {
    let limits = &options.limits;
    let timeouts = [
        limits.tls_handshake_timeout,
        limits.header_read_timeout,
        limits.body_read_timeout,
        limits.idle_timeout,
    ];
    if timeouts.contains(&Duration::ZERO)
        || !(1..=u32::MAX as usize).contains(&limits.max_connections)
        || limits.max_body_bytes > limits.body_budget_bytes
        || limits.body_budget_bytes > Semaphore::MAX_PERMITS
    {
        anyhow::bail!(
            "need timeouts above zero, 1 to 2^32-1 connections, and a body budget of at least \
             the largest body (and at most {} bytes), got {limits:?}",
            Semaphore::MAX_PERMITS
        );
    }
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
    let limits = options.limits;
    let state = AppState {
        policy,
        cluster,
        metrics: metrics.clone(),
        ready,
        body_budget: Arc::new(Semaphore::new(limits.body_budget_bytes)),
        limits: limits.clone(),
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::bind(options.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let reviews = tokio::spawn(connections::serve(
        listener,
        tls,
        router(state.clone()),
        limits,
        stop.subscribe(),
        SHUTDOWN_GRACE,
    ));
    // Plain HTTP for the scrapers, whom the NetworkPolicy alone lets in; it stops with the
    // reviews.
    let scrapes = axum::serve(metrics_listener, metrics_router(state))
        .with_graceful_shutdown(shutdown())
        .into_future();
    let task = tokio::spawn(async move {
        if let Err(err) = scrapes.await {
            tracing::error!(%err, "the metrics server failed");
        }
        let _ = reviews.await;
    });
    tracing::info!(%addr, %metrics_addr, "serving AdmissionReviews on /mutate, metrics on /metrics");
    Ok(Running {
        addr,
        metrics_addr,
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
        .with_state(state)
}

fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
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

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive within {0:?}")]
    TooSlow(Duration),
    #[error("reading the body: {0}")]
    Read(axum::Error),
}

impl BodyError {
    /// The metric label, and the answer.
    fn result(&self) -> (&'static str, StatusCode) {
        match self {
            Self::TooLarge(_) => ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
            Self::TooSlow(_) => ("too_slow", StatusCode::REQUEST_TIMEOUT),
            Self::Read(_) => ("bad_request", StatusCode::BAD_REQUEST),
        }
    }
}

/// A body read whole, and its room in the body budget, held until the review is answered.
struct ReadBody {
    bytes: Vec<u8>,
    _room: Option<OwnedSemaphorePermit>,
}

/// Reads a body of at most `max_body_bytes` within `body_read_timeout`, taking room in the
/// budget for each piece as it arrives: a slow client holds only the bytes it sent.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<ReadBody, BodyError> {
    let limits = &state.limits;
    let max = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge(max));
    }
    let read = async {
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        let mut room: Option<OwnedSemaphorePermit> = None;
        let mut stream = body.into_data_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(BodyError::Read)?;
            if bytes.len() + piece.len() > max {
                return Err(BodyError::TooLarge(max));
            }
            // `piece.len() <= max <= budget`, so the budget can always grant it eventually.
            let wanted = u32::try_from(piece.len()).map_err(|_| BodyError::TooLarge(max))?;
            let more = state
                .body_budget
                .clone()
                .acquire_many_owned(wanted)
                .await
                .map_err(|_| BodyError::TooSlow(limits.body_read_timeout))?;
            match &mut room {
                Some(room) => room.merge(more),
                None => room = Some(more),
            }
            bytes.extend_from_slice(&piece);
        }
        Ok(ReadBody { bytes, _room: room })
    };
    tokio::time::timeout(limits.body_read_timeout, read)
        .await
        .unwrap_or(Err(BodyError::TooSlow(limits.body_read_timeout)))
}

/// `POST /mutate`: a body that is no AdmissionReview gets HTTP 400 with the reason, one too
/// large a 413, one too slow a 408; any review gets an answer, never a failure at the HTTP level.
async fn admit(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let count = |result: &'static str| {
        state
            .metrics
            .reviews
            .get_or_create(&ReviewLabels {
                operation: "none",
                result,
            })
            .inc();
    };
    let body = match read_body(&state, &headers, body).await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!(%err, "rejected a request");
            let (result, status) = err.result();
            count(result);
            // The rest of the body is not read: the connection cannot serve another request.
            return (status, [(header::CONNECTION, "close")], err.to_string()).into_response();
        }
    };
    let started = Instant::now();
    let bad_request = |message: String| {
        tracing::warn!(%message, "rejected a request");
        count("bad_request");
        (StatusCode::BAD_REQUEST, message).into_response()
    };
    let request = match decode_review(&body.bytes) {
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
