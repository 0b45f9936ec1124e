//! A webhook started in-process with a throwaway CA, and the reviews the tests send it.
#![allow(dead_code)] // each test file uses part of it

mod certificates;
mod objects;

pub use certificates::Certificates;
pub use objects::{deployment, review};
use skiff_webhook::policy::Policy;
use skiff_webhook::server::{self, Running, ServerLimits};

/// What the tests start: a webhook on a free loopback port, without cluster access, with the
/// default policy and `limits`.
pub fn options(certificates: &Certificates, limits: ServerLimits) -> server::Options {
    server::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: certificates.cert(),
        tls_key: certificates.key(),
        policy_path: None,
        policy: Policy::default(),
        client: None,
        namespace: None,
        limits,
    }
}

/// A running webhook without cluster access, and its certificates.
pub struct Webhook {
    pub running: Running,
    pub certificates: Certificates,
}

impl Webhook {
    pub async fn start() -> Self {
        Self::start_with(ServerLimits::default()).await
    }

    /// A webhook with these bounds on its clients.
    pub async fn start_with(limits: ServerLimits) -> Self {
        let certificates = Certificates::new();
        let running = server::start(options(&certificates, limits))
            .await
            .expect("starting the webhook");
        Self {
            running,
            certificates,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.running.addr.port())
    }

    /// The text of `/metrics`, served over plain HTTP on a port of its own.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.running.metrics_addr);
        reqwest::get(&url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|err| panic!("GET {url}: {err}"))
            .text()
            .await
            .unwrap()
    }

    /// An HTTP/1.1 keep-alive client trusting the webhook's CA.
    pub fn client(&self) -> reqwest::Client {
        self.certificates.client()
    }
}
