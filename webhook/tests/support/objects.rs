//! The objects a review carries; shared by the tests and the benchmark.

use serde_json::{Value, json};

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
