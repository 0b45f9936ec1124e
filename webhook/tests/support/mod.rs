//! A webhook started in-process with a throwaway CA, and clients that trust it; shared by the
//! HTTP tests and the benchmark.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use skiff_webhook::policy::Policy;
use skiff_webhook::server::{self, Running};
use std::time::Duration;

/// A running webhook without cluster access, and its CA.
pub struct Webhook {
    pub running: Running,
    pub ca_pem: String,
    /// Holds the certificate files.
    _dir: tempfile::TempDir,
}

impl Webhook {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
        let running = server::start(server::Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert: dir.path().join("tls.crt"),
            tls_key: dir.path().join("tls.key"),
            policy_path: None,
            policy: Policy::default(),
            client: None,
            namespace: None,
        })
        .await
        .expect("starting the webhook");
        Self {
            running,
            ca_pem,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.running.addr.port())
    }

    /// An HTTP/1.1 keep-alive client trusting the webhook's CA.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .http1_only()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

/// An AdmissionReview of a CREATE of `object`.
pub fn review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "name": "web", "namespace": "shop", "operation": "CREATE",
            "userInfo": { "username": "admin" },
            "object": object, "oldObject": null, "dryRun": false
        }
    })
}

/// A Deployment as users write them: an app and a sidecar, a few labels and annotations.
pub fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop",
            "labels": { "app.kubernetes.io/name": "web", "team": "shop" },
            "annotations": { "skiff.dev/max-replicas": "6", "skiff.dev/log-format": "json" }
        },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [
                    { "name": "app", "image": "registry.example/web:1.4.2",
                      "ports": [{ "containerPort": 8080 }],
                      "resources": { "requests": { "cpu": "250m" } } },
                    { "name": "envoy", "image": "envoyproxy/envoy:v1.31.0" }
                ] }
            }
        }
    })
}
