//! skiff-webhook: admits Deployments and makes them production-ready.

use anyhow::{Context, Result};
use clap::Parser;
use skiff_webhook::policy::Policy;
use skiff_webhook::server::{self, ServerLimits};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// A review decodes, copies and encodes trees of small maps and strings: with glibc's malloc,
/// allocation was a quarter of the webhook's CPU under load (perf); mimalloc is far faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The policy file (a mounted ConfigMap), reloaded when it changes; the embedded default
    /// policy when absent.
    #[arg(long, env = "SKIFF_POLICY")]
    policy: Option<PathBuf>,
    /// PEM certificate chain served to the API server, reloaded when it changes.
    #[arg(long, env = "SKIFF_TLS_CERT", requires = "tls_key")]
    tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "SKIFF_TLS_KEY", requires = "tls_cert")]
    tls_key: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SKIFF_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Address of `/metrics` (plain HTTP), apart from the reviews' port.
    #[arg(long, env = "SKIFF_METRICS_LISTEN", default_value = "0.0.0.0:9478")]
    metrics_listen: SocketAddr,
    /// Admit only: no API server access, so no LimitRange or VPA lookups and no HPA reconciler.
    /// Without it, the in-cluster service account or $KUBECONFIG is used.
    #[arg(long, env = "SKIFF_NO_CLUSTER")]
    no_cluster: bool,
    /// Watch this namespace only (a namespaced install); all namespaces by default.
    #[arg(long, env = "SKIFF_NAMESPACE")]
    namespace: Option<String>,
    /// Log as JSON lines (for log shippers) instead of text.
    #[arg(long, env = "SKIFF_LOG_JSON")]
    log_json: bool,
    /// Seconds a TLS handshake may take.
    #[arg(long, env = "SKIFF_TLS_HANDSHAKE_TIMEOUT", default_value_t = ServerLimits::default().tls_handshake_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    tls_handshake_timeout: u64,
    /// Seconds a request's head may take to arrive, from its first byte (the first request's:
    /// from the handshake).
    #[arg(long, env = "SKIFF_HEADER_READ_TIMEOUT", default_value_t = ServerLimits::default().header_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout: u64,
    /// Seconds a request's body may take to arrive, from its head.
    #[arg(long, env = "SKIFF_BODY_READ_TIMEOUT", default_value_t = ServerLimits::default().body_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout: u64,
    /// Seconds a connection may stay open without a request; longer than the API server's own
    /// 90 s.
    #[arg(long, env = "SKIFF_IDLE_TIMEOUT", default_value_t = ServerLimits::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Connections open at once; more wait to be accepted.
    #[arg(long, env = "SKIFF_MAX_CONNECTIONS", default_value_t = ServerLimits::default().max_connections)]
    max_connections: usize,
    /// The largest request body, in bytes.
    #[arg(long, env = "SKIFF_MAX_BODY_BYTES", default_value_t = ServerLimits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Bytes of request bodies held at once across all connections.
    #[arg(long, env = "SKIFF_BODY_BUDGET_BYTES", default_value_t = ServerLimits::default().body_budget_bytes)]
    body_budget_bytes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    // Fail fast on a broken policy, naming the file and the place.
    let policy = match &args.policy {
        Some(path) => Policy::load(path).context("the policy is invalid")?,
        None => Policy::default(),
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = if args.no_cluster {
            None
        } else {
            match kube::Client::try_default().await {
                Ok(client) => Some(client),
                // `cargo xtask run` starts the webhook on a machine without a cluster.
                Err(err) => {
                    tracing::warn!(%err, "no API server access: admitting only (no LimitRanges, VPAs or HPAs)");
                    None
                }
            }
        };
        server::serve(server::Options {
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            policy_path: args.policy,
            policy,
            client,
            namespace: args.namespace,
            limits: ServerLimits {
                tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout),
                header_read_timeout: Duration::from_secs(args.header_read_timeout),
                body_read_timeout: Duration::from_secs(args.body_read_timeout),
                idle_timeout: Duration::from_secs(args.idle_timeout),
                max_connections: args.max_connections,
                max_body_bytes: args.max_body_bytes,
                body_budget_bytes: args.body_budget_bytes,
            },
        })
        .await
    })
}
