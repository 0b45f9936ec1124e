//! The HTTPS surface with bad and good input: every body gets a clear answer (an
//! AdmissionResponse, or HTTP 400 when it is no review at all), never a hang; probes, metrics
//! and a prompt graceful shutdown.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Webhook, deployment, review};

async fn post(webhook: &Webhook, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = webhook
        .client()
        .post(webhook.url("/mutate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer");
    (response.status().as_u16(), response.text().await.unwrap())
}

fn response(text: &str) -> Value {
    let review: Value = serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}"));
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

#[tokio::test]
async fn a_deployment_gets_a_patch() {
    let webhook = Webhook::start().await;
    let (status, text) = post(&webhook, review(deployment()).to_string()).await;
    assert_eq!(status, 200);
    let response = response(&text);
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_that_are_no_review_get_a_400_with_the_reason() {
    let webhook = Webhook::start().await;
    for (body, reason) in [
        ("{ not json".to_string(), "not an AdmissionReview"),
        ("".to_string(), "not an AdmissionReview"),
        ("\u{0}\u{1}binary".to_string(), "not an AdmissionReview"),
        (
            json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" }).to_string(),
            "without a request",
        ),
        (
            {
                let mut old = review(deployment());
                old["apiVersion"] = json!("admission.k8s.io/v1beta1");
                old.to_string()
            },
            "expected admission.k8s.io/v1 AdmissionReview",
        ),
        (
            {
                let mut broken = review(deployment());
                broken["request"]["uid"] = json!(42);
                broken.to_string()
            },
            "not an AdmissionReview",
        ),
    ] {
        let (status, text) = post(&webhook, body.clone()).await;
        assert_eq!(status, 400, "{body:.80}: {text}");
        assert!(text.contains(reason), "{body:.80}: {text}");
    }
    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains(r#"skiff_webhook_reviews_total{operation="none",result="bad_request"} 6"#),
        "{metrics}"
    );
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn odd_reviews_get_a_clear_admission_response() {
    let webhook = Webhook::start().await;
    // Another kind passes untouched.
    let mut pod = review(json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" } }));
    pod["request"]["kind"] = json!({ "group": "", "version": "v1", "kind": "Pod" });
    let r = response(&post(&webhook, pod.to_string()).await.1);
    assert_eq!((r["allowed"].clone(), r.get("patch")), (json!(true), None));

    // A missing required field decodes as its default; the API server's validation, which
    // runs after admission, names it to the user.
    let mut missing = deployment();
    missing["spec"].as_object_mut().unwrap().remove("selector");
    let r = response(&post(&webhook, review(missing).to_string()).await.1);
    assert_eq!(r["allowed"], true);

    // A field of the wrong type is denied with the decoder's reason.
    let mut wrong = deployment();
    wrong["spec"]["replicas"] = json!("three");
    let r = response(&post(&webhook, review(wrong).to_string()).await.1);
    assert_eq!(r["allowed"], false);
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("not a valid apps/v1 Deployment") && message.contains("three"),
        "{r}"
    );

    // Unknown fields are carried along, not fatal.
    let mut unknown = review(deployment());
    unknown["request"]["object"]["spec"]["fromTheFuture"] = json!({ "x": 1 });
    unknown["request"]["somethingNew"] = json!(true);
    let r = response(&post(&webhook, unknown.to_string()).await.1);
    assert_eq!(r["allowed"], true);

    // A 3 MiB object is answered like any other.
    let mut big = deployment();
    big["metadata"]["annotations"]["blob"] = json!("x".repeat(3 << 20));
    let started = Instant::now();
    let (status, text) = post(&webhook, review(big).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(response(&text)["patchType"], "JSONPatch");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn probes_and_metrics() {
    let webhook = Webhook::start().await;
    let client = webhook.client();
    for path in ["/healthz", "/readyz"] {
        let response = client.get(webhook.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    post(&webhook, review(deployment()).to_string()).await;
    let text = webhook.metrics().await;
    // Not on the reviews' port, which a NetworkPolicy opens to the API server.
    let on_https = client.get(webhook.url("/metrics")).send().await.unwrap();
    assert_eq!(on_https.status(), 404);
    for expected in [
        r#"skiff_webhook_reviews_total{operation="CREATE",result="patched"} 1"#,
        "skiff_webhook_review_duration_seconds_count 1",
        "skiff_webhook_patch_operations_total",
        "skiff_webhook_policy_valid 1",
    ] {
        assert!(text.contains(expected), "{expected} missing in\n{text}");
    }
    webhook.running.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let webhook = Webhook::start().await;
    let client = webhook.client();
    // Leaves an idle keep-alive connection in the client's pool.
    let url = webhook.url("/healthz");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let started = Instant::now();
    webhook.running.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an idle keep-alive connection held the shutdown for {:?}",
        started.elapsed()
    );
    assert!(
        client.get(&url).send().await.is_err(),
        "no longer accepting"
    );
}
