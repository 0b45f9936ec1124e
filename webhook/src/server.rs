//! HTTPS: the AdmissionReview endpoint, health probes, TLS reload and graceful shutdown.

use crate::mutate;
use crate::policy::Policy;
use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the certificate files are checked for replacement (cert-manager renewals).
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// How long in-flight reviews may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the server needs.
pub struct Options {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub policy: Policy,
}

/// Serves until SIGTERM or Ctrl-C, then stops accepting, closes idle keep-alive connections,
/// lets in-flight reviews finish and returns.
pub async fn serve(options: Options) -> Result<()> {
    // One process-wide crypto provider: ring, as kube's client uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = RustlsConfig::from_pem_file(&options.tls_cert, &options.tls_key)
        .await
        .with_context(|| format!("loading TLS from {} and {}", options.tls_cert.display(), options.tls_key.display()))?;
    tokio::spawn(reload_tls_on_change(tls.clone(), options.tls_cert.clone(), options.tls_key.clone()));

    let handle = Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    tracing::info!(listen = %options.listen, "serving AdmissionReviews on /mutate");
    axum_server::bind_rustls(options.listen, tls)
        .handle(handle)
        .serve(router(options.policy).into_make_service())
        .await
        .context("the HTTPS server failed")
}

/// The routes, over a shared policy.
pub fn router(policy: Policy) -> Router {
    Router::new()
        .route("/mutate", post(admit))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(Arc::new(policy))
}

/// `POST /mutate`: a body that is no AdmissionReview gets HTTP 400 with the reason; any
/// review gets an answer, never a failure at the HTTP level.
async fn admit(State(policy): State<Arc<Policy>>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(err) => return bad_request(format!("body is not an AdmissionReview: {err}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(err) => return bad_request(format!("AdmissionReview without a request: {err}")),
    };
    let response = mutate::review(&request, &policy);
    tracing::info!(
        uid = %request.uid,
        operation = ?request.operation,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        allowed = response.allowed,
        patched = response.patch.is_some(),
        "reviewed"
    );
    axum::Json(response.into_review()).into_response()
}

fn bad_request(message: String) -> Response {
    tracing::warn!(%message, "rejected a request");
    (StatusCode::BAD_REQUEST, message).into_response()
}

async fn shutdown_on_signal(handle: Handle<SocketAddr>) {
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = sigterm.recv() => {},
    }
    tracing::info!("stopping: no new connections, finishing in-flight reviews");
    handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
}

/// Reloads the certificate when either file changes; connections already open keep theirs.
async fn reload_tls_on_change(tls: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut seen: (Option<SystemTime>, Option<SystemTime>) = (modified(&cert), modified(&key));
    loop {
        tokio::time::sleep(TLS_RELOAD_INTERVAL).await;
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
