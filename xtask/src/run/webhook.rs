//! The webhook's half of the demo: sample Deployments admitted through its real HTTPS
//! endpoint, as the API server would send them (AdmissionReview v1, a dry run so the answer
//! says which HPA the reconciler would create), and what it changed, printed readably.

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The samples: what a team might apply on its first day.
fn samples() -> [(&'static str, Value); 3] {
    let container = |resources: Value| {
        json!({
            "name": "app",
            "image": "nginx:1.27",
            "ports": [{ "containerPort": 8080 }],
            "resources": resources,
        })
    };
    let deployment = |name: &str, annotations: Value, resources: Value| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name, "namespace": "shop", "annotations": annotations },
            "spec": {
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": { "containers": [container(resources)] },
                },
            },
        })
    };
    [
        (
            "a bare Deployment",
            deployment("checkout", json!({}), json!({})),
        ),
        (
            "one with limits only",
            deployment(
                "catalog",
                json!({}),
                json!({ "limits": { "cpu": "2", "memory": "1Gi" } }),
            ),
        ),
        (
            "one opted out (skiff.dev/inject: \"false\")",
            deployment("legacy", json!({ "skiff.dev/inject": "false" }), json!({})),
        ),
    ]
}

/// Waits for the webhook at `url`, then admits each sample and prints what it changed.
pub fn admit_samples(url: &str, ca_bundle: &str) -> Result<()> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle.trim())
        .context("the CA bundle is not base64")?;
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{url}/readyz")).send().is_err() {
        if Instant::now() > deadline {
            bail!("the webhook did not answer on {url} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("\nwebhook: admitting sample Deployments through POST {url}/mutate");
    for (n, (what, deployment)) in samples().into_iter().enumerate() {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": format!("demo-{n}"),
                "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
                "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
                "name": deployment["metadata"]["name"],
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": { "username": "demo" },
                "object": deployment,
                "dryRun": true,
            },
        });
        let answer: Value = client
            .post(format!("{url}/mutate"))
            .json(&review)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .with_context(|| format!("admitting {what}"))?;
        eprintln!(
            "\n  {what}, shop/{}:",
            deployment["metadata"]["name"].as_str().unwrap_or("?")
        );
        for line in describe(&answer["response"])? {
            eprintln!("    {line}");
        }
    }
    eprintln!();
    Ok(())
}

/// The answer as lines: allowed or not, each patch operation, each warning.
fn describe(response: &Value) -> Result<Vec<String>> {
    let mut lines = vec![if response["allowed"] == true {
        "allowed".to_string()
    } else {
        format!("denied: {}", response["status"]["message"])
    }];
    // Base64 as Kubernetes writes `[]byte`, or the bytes as an array (which its decoder
    // takes as well).
    let patch = match &response["patch"] {
        Value::String(text) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .context("the patch is not base64")?,
        ),
        Value::Array(_) => Some(serde_json::from_value::<Vec<u8>>(
            response["patch"].clone(),
        )?),
        _ => None,
    };
    match patch {
        None => lines.push("unchanged (no patch)".into()),
        Some(patch) => {
            let operations: Vec<Value> = serde_json::from_slice(&patch)?;
            for op in operations {
                lines.push(format!(
                    "{:<7} {} = {}",
                    op["op"].as_str().unwrap_or("?"),
                    op["path"].as_str().unwrap_or("?"),
                    op.get("value").map(Value::to_string).unwrap_or_default()
                ));
            }
        }
    }
    for warning in response["warnings"].as_array().into_iter().flatten() {
        lines.push(format!("warning: {}", warning.as_str().unwrap_or("?")));
    }
    Ok(lines)
}
