//! skiff-webhook: admits Deployments and makes them production-ready.

use anyhow::{Context, Result};
use clap::Parser;
use skiff_webhook::{policy::Policy, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The policy file (a mounted ConfigMap); the embedded default policy when absent.
    #[arg(long, env = "SKIFF_POLICY")]
    policy: Option<PathBuf>,
    /// PEM certificate chain served to the API server.
    #[arg(long, env = "SKIFF_TLS_CERT", requires = "tls_key")]
    tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "SKIFF_TLS_KEY", requires = "tls_cert")]
    tls_key: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SKIFF_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let policy = match &args.policy {
        Some(path) => Policy::load(path).with_context(|| format!("policy {}", path.display()))?,
        None => Policy::default(),
    };
    tokio::runtime::Runtime::new()?.block_on(server::serve(server::Options {
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        policy,
    }))
}
