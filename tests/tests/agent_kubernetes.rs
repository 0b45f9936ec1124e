//! The agent's `kubernetes` input and pod metadata against the real kube-apiserver peer: pods
//! are created bound to a test node (`spec.nodeName`; no scheduler or kubelet runs), their CRI
//! log files written under a temporary pods folder, and what the agent would harvest checked.
//! (agent/tests/kubernetes_input.rs runs the whole agent with this input.)

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use skiff_agent::harvest::Line;
use skiff_agent::kubernetes::{ContainerLog, KubernetesInput, KubernetesInputConfig};
use skiff_agent::process::parse::Parsers;
use skiff_agent::process::{Event, ProcessorConfig, Processors, Source, event_from_line};
use skiff_tests::{env, kube_client, require_peer, unique};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Generous: the first list and each watch event arrive in milliseconds on loopback.
const WAIT: Duration = Duration::from_secs(60);

fn pod(name: &str, node: &str, annotations: Value, containers: &[&str]) -> Pod {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({ "name": c, "image": "registry.invalid/app:1" }))
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations, "labels": { "app.kubernetes.io/name": name } },
        "spec": { "nodeName": node, "automountServiceAccountToken": false, "containers": containers },
    }))
    .unwrap()
}

/// The kubelet's path of the container's first log file.
fn log_path(root: &Path, pod: &Pod, container: &str) -> PathBuf {
    let meta = &pod.metadata;
    root.join(format!(
        "{}_{}_{}",
        meta.namespace.as_deref().unwrap(),
        meta.name.as_deref().unwrap(),
        meta.uid.as_deref().unwrap()
    ))
    .join(container)
    .join("0.log")
}

/// Writes `lines` as the container's CRI log file and returns its path.
fn write_log(root: &Path, pod: &Pod, container: &str, lines: &[&str]) -> PathBuf {
    let path = log_path(root, pod, container);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = lines
        .iter()
        .map(|line| format!("2026-05-06T07:08:09.000000001Z stdout F {line}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// What the agent makes of a container's file: its parsers, then the pod's fields.
fn harvest(container: &ContainerLog, path: &Path) -> Vec<Event> {
    let mut parsers = Parsers::build(&container.parsers).unwrap();
    let mut events = Vec::new();
    let mut offset = 0;
    for text in std::fs::read_to_string(path).unwrap().lines() {
        let line = Line {
            offset,
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        };
        offset += text.len() as u64 + 1;
        parsers.push(
            event_from_line(&line, &Source::new(path, "test-node")),
            &mut events,
        );
    }
    for event in &mut events {
        container.enrich(event);
    }
    events
}

/// Waits until `check` holds for the input, woken by the pod watch's changes.
fn wait_for(input: &KubernetesInput, what: &str, check: impl Fn(&KubernetesInput) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut seen = input.index().version();
    while !check(input) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("the pod watch did not show {what} within {WAIT:?}"));
        seen = input.index().wait_changed(seen, left);
    }
}

/// `pod/container` of the file, if the input harvests it.
fn harvested(input: &KubernetesInput, path: &Path) -> Option<String> {
    input
        .container_of(path)
        .map(|c| format!("{}/{}", c.pod.name, c.container))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvests_exactly_the_annotated_pods_of_this_node() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let client = kube_client(&kubeconfig).await;
    // Fresh names per run: a namespace cannot be deleted for good without a controller-manager.
    let namespace = unique("skiff-k8s-input");
    let node = unique("skiff-test-node");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap(),
        )
        .await
        .expect("creating the namespace");
    // No controller-manager creates the `default` service account that pod admission wants.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap(),
        )
        .await
        .expect("creating the default service account");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let logs = json!({ "skiff.dev/logs": "true" });
    let create = |pod: Pod| {
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("creating a pod")
        }
    };
    let web = create(pod(
        "web",
        &node,
        json!({ "skiff.dev/logs": "true", "skiff.dev/service": "checkout", "skiff.dev/environment": "production",
                "skiff.dev/log-format": "nginx", "skiff.dev/log-fields": "{\"team\":\"payments\"}" }),
        &["nginx"],
    ))
    .await;
    let quiet = create(pod("quiet", &node, json!({}), &["app"])).await;
    let elsewhere = create(pod(
        "elsewhere",
        &format!("{node}-other"),
        logs.clone(),
        &["app"],
    ))
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config: KubernetesInputConfig = serde_json::from_value(json!({
        "node": node,
        "kube_config": kubeconfig,
        "logs_path": dir.path(),
    }))
    .unwrap();
    let input = tokio::task::spawn_blocking(move || KubernetesInput::start(&config))
        .await
        .unwrap()
        .expect("the kubernetes input starts");
    assert!(
        input.index().wait_synced(WAIT),
        "no first list of pods within {WAIT:?}"
    );
    let web_log = log_path(dir.path(), &web, "nginx");
    assert_eq!(harvested(&input, &web_log).as_deref(), Some("web/nginx"));
    assert_eq!(
        harvested(&input, &log_path(dir.path(), &web, "other")),
        None,
        "only the pod's own containers"
    );

    // A pod that appears later is picked up from the watch.
    let api = create(pod(
        "api",
        &node,
        json!({ "skiff.dev/logs": "true", "skiff.dev/environment": "staging", "skiff.dev/log-format": "json" }),
        &["app", "proxy"],
    ))
    .await;
    let proxy_log = log_path(dir.path(), &api, "proxy");
    wait_for(&input, "the new pod `api`", |input| {
        harvested(input, &proxy_log).is_some()
    });
    assert_eq!(harvested(&input, &proxy_log).as_deref(), Some("api/proxy"));

    write_log(
        dir.path(),
        &web,
        "nginx",
        &[
            r#"8.8.8.8 - - [06/May/2026:07:08:09 +0000] "GET /users/42 HTTP/1.1" 200 512 "-" "curl/8.5.0""#,
        ],
    );
    let api_log = write_log(
        dir.path(),
        &api,
        "app",
        &[r#"{"message":"order placed","order":{"id":7}}"#, "{broken"],
    );
    let quiet_log = write_log(dir.path(), &quiet, "app", &["not shipped"]);
    let elsewhere_log = write_log(dir.path(), &elsewhere, "app", &["not on this node"]);
    assert!(
        input.container_of(&quiet_log).is_none(),
        "a pod without skiff.dev/logs is not harvested"
    );
    assert!(
        input.container_of(&elsewhere_log).is_none(),
        "another node's pod is not harvested"
    );

    let web_events = harvest(
        &input.container_of(&web_log).expect("web is harvested"),
        &web_log,
    );
    let event = &web_events[0];
    assert_eq!(event["kubernetes"]["namespace"], namespace.as_str());
    assert_eq!(event["kubernetes"]["pod"]["name"], "web");
    assert_eq!(
        event["kubernetes"]["pod"]["uid"],
        web.metadata.uid.as_deref().unwrap()
    );
    assert_eq!(event["kubernetes"]["container"]["name"], "nginx");
    assert_eq!(event["kubernetes"]["node"]["name"], node.as_str());
    assert_eq!(
        event["kubernetes"]["labels"]["app_kubernetes_io/name"],
        "web"
    );
    assert_eq!(
        event["service"],
        json!({ "name": "checkout", "environment": "production" })
    );
    assert_eq!(event["team"], "payments");
    assert_eq!(
        event["http"]["request"]["method"], "GET",
        "parsed as nginx: {event:?}"
    );
    assert_eq!(event["client"]["ip"], "8.8.8.8");

    let api_events = harvest(
        &input.container_of(&api_log).expect("api is harvested"),
        &api_log,
    );
    assert_eq!(api_events[0]["message"], "order placed");
    assert_eq!(api_events[0]["order"]["id"], 7, "parsed as json");
    assert_eq!(
        api_events[0]["service"],
        json!({ "name": "api", "environment": "staging" })
    );
    assert_eq!(
        api_events[1]["message"], "{broken",
        "broken JSON keeps the raw line"
    );
    assert!(api_events[1]["error"]["message"].is_string());

    // Deleting the pod ends its harvest. Grace period 0: no kubelet confirms a graceful one.
    pods.delete(
        "api",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("deleting the pod");
    wait_for(&input, "the deletion of `api`", |input| {
        harvested(input, &api_log).is_none()
    });
    assert!(
        harvested(&input, &proxy_log).is_none(),
        "a deleted pod's files are not harvested"
    );
    assert_eq!(harvested(&input, &web_log).as_deref(), Some("web/nginx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_kubernetes_metadata_enriches_any_pod_log_of_this_node() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let client = kube_client(&kubeconfig).await;
    let namespace = unique("skiff-k8s-meta");
    let node = unique("skiff-meta-node");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap(),
        )
        .await
        .expect("creating the namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap(),
        )
        .await
        .expect("creating the default service account");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let created = pods
        .create(
            &PostParams::default(),
            &pod("billing", &node, json!({ "skiff.dev/environment": "production", "skiff.dev/log-topic": "billing-logs" }), &["app"]),
        )
        .await
        .expect("creating a pod");

    let config: ProcessorConfig = serde_json::from_value(json!({
        "add_kubernetes_metadata": { "node": node, "kube_config": kubeconfig }
    }))
    .unwrap();
    let processors = tokio::task::spawn_blocking(move || Processors::build(&[config]))
        .await
        .unwrap()
        .expect("add_kubernetes_metadata builds");
    let path = format!(
        "/var/log/pods/{namespace}_billing_{}/app/0.log",
        created.metadata.uid.as_deref().unwrap()
    );
    let line = Line {
        offset: 0,
        bytes: b"hello".to_vec(),
        truncated: false,
    };
    let mut event = event_from_line(&line, &Source::new(Path::new(&path), "test-node"));
    assert!(processors.run(&mut event));
    assert_eq!(event["kubernetes"]["pod"]["name"], "billing", "{event:?}");
    assert_eq!(event["kubernetes"]["container"]["name"], "app");
    assert_eq!(
        event["service"],
        json!({ "name": "billing", "environment": "production" })
    );
    assert_eq!(
        event["kubernetes"]["annotations"]["skiff_dev/log-topic"], "billing-logs",
        "where the Kafka output looks for a topic override"
    );

    let other = event_from_line(
        &line,
        &Source::new(Path::new("/var/log/syslog"), "test-node"),
    );
    let mut unchanged = other.clone();
    assert!(processors.run(&mut unchanged));
    assert_eq!(
        unchanged, other,
        "files outside /var/log/pods pass unchanged"
    );
}
