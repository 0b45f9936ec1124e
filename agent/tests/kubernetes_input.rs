//! The real agent with a `kubernetes` input against the real kube-apiserver peer: pods are
//! created bound to a test node (`spec.nodeName`; no scheduler or kubelet runs, the test plays
//! the kubelet and writes CRI log files under a temporary pods folder), and what the agent
//! delivers to its file output is checked: exactly the annotated pods' lines, parsed by their
//! log format and enriched with their metadata before the global processors; a pod annotated
//! or created later is picked up; a kubelet rotation loses nothing; a deleted pod's files are
//! drained and closed (checked in `/proc/<pid>/fd`) and not read any more.

#[path = "harvest_support/mod.rs"]
mod support;

use flate2::Compression;
use flate2::write::GzEncoder;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skiff_tests::{env, kube_client, require_peer, unique};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use support::{Agent, delivered, wait_until};

/// The test's own corner of the API server: a fresh namespace (one cannot be deleted for good
/// without a controller-manager) and a node name no other test uses.
struct Cluster {
    runtime: tokio::runtime::Runtime,
    pods: Api<Pod>,
    node: String,
}

impl Cluster {
    fn new(kubeconfig: &str, backend: &str) -> Self {
        // kube's rustls needs a process-wide crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let namespace = unique(&format!("skiff-input-{backend}"));
        let pods = runtime.block_on(async {
            let client = kube_client(kubeconfig).await;
            Api::<Namespace>::all(client.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap(),
                )
                .await
                .expect("creating the namespace");
            // No controller-manager creates the `default` service account pod admission wants.
            Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap(),
                )
                .await
                .expect("creating the default service account");
            Api::namespaced(client, &namespace)
        });
        Self {
            runtime,
            pods,
            node: unique(&format!("skiff-input-node-{backend}")),
        }
    }

    /// Creates a pod with one container `app` on the test node.
    fn create(&self, name: &str, annotations: Value) -> Pod {
        let pod = serde_json::from_value(json!({
            "metadata": { "name": name, "annotations": annotations },
            "spec": {
                "nodeName": self.node,
                "automountServiceAccountToken": false,
                "containers": [{ "name": "app", "image": "registry.invalid/app:1" }],
            },
        }))
        .unwrap();
        self.runtime
            .block_on(self.pods.create(&PostParams::default(), &pod))
            .unwrap_or_else(|err| panic!("creating pod {name}: {err}"))
    }

    fn annotate(&self, name: &str, annotations: Value) {
        let patch = json!({ "metadata": { "annotations": annotations } });
        self.runtime
            .block_on(
                self.pods
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .unwrap_or_else(|err| panic!("annotating pod {name}: {err}"));
    }

    /// Deletes at once: no kubelet would confirm a graceful deletion.
    fn delete(&self, name: &str) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        self.runtime
            .block_on(self.pods.delete(name, &params))
            .unwrap_or_else(|err| panic!("deleting pod {name}: {err}"));
    }
}

/// The container `app`'s log folder of `pod` under `root`, as the kubelet names it.
fn log_dir(root: &Path, pod: &Pod) -> PathBuf {
    let meta = &pod.metadata;
    root.join(format!(
        "{}_{}_{}",
        meta.namespace.as_deref().unwrap(),
        meta.name.as_deref().unwrap(),
        meta.uid.as_deref().unwrap()
    ))
    .join("app")
}

/// Appends `lines` to `path` as the container runtime does: one CRI line each.
fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = lines
        .into_iter()
        .map(|line| format!("2026-11-28T16:45:00.000000001Z stdout F {line}\n"))
        .collect();
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// nginx access lines of the `web` pod, numbered by their path.
fn access_lines(range: std::ops::Range<u64>) -> impl Iterator<Item = String> {
    range.map(|n| {
        format!(r#"203.0.113.7 - - [28/Nov/2026:16:45:00 +0000] "GET /orders/{n}?page=2 HTTP/1.1" 200 {n} "-" "curl/8.5.0""#)
    })
}

/// Plain lines `<stream> <n>`.
fn plain_lines(stream: &str, range: std::ops::Range<u64>) -> impl Iterator<Item = String> {
    range.map(move |n| format!("{stream} {n}"))
}

/// The delivered events of pod `name`.
fn of_pod<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kubernetes"]["pod"]["name"] == name)
        .collect()
}

/// The numbers of the `web` pod's delivered access lines.
fn web_numbers(events: &[Value]) -> BTreeSet<u64> {
    of_pod(events, "web")
        .iter()
        .filter_map(|e| e["http"]["response"]["body"]["bytes"].as_u64())
        .collect()
}

/// The numbers of `stream`'s delivered plain lines.
fn plain_numbers(events: &[Value], stream: &str) -> BTreeSet<u64> {
    events
        .iter()
        .filter_map(|e| {
            e["message"]
                .as_str()?
                .strip_prefix(stream)?
                .strip_prefix(' ')
        })
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The files under `dir` that process `pid` holds open.
fn open_under(pid: i32, dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .collect()
}

fn kubernetes_input(backend: &str) {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let cluster = Cluster::new(&kubeconfig, backend);
    let dir = tempfile::tempdir().unwrap();
    let pods_root = dir.path().join("pods");
    fs::create_dir(&pods_root).unwrap();

    let web = cluster.create(
        "web",
        json!({ "skiff.dev/logs": "true", "skiff.dev/log-format": "nginx",
                "skiff.dev/service": "checkout", "skiff.dev/environment": "production" }),
    );
    let quiet = cluster.create("quiet", json!({}));
    let late = cluster.create("late", json!({ "skiff.dev/service": "late-svc" }));
    let web_log = log_dir(&pods_root, &web).join("0.log");
    let quiet_log = log_dir(&pods_root, &quiet).join("0.log");
    let late_log = log_dir(&pods_root, &late).join("0.log");
    append(&web_log, access_lines(0..100));
    append(&quiet_log, plain_lines("quiet", 0..10));
    append(&late_log, plain_lines("late", 0..10));

    let input = format!(
        "  - {{ type: kubernetes, node: {}, logs_path: {}, kube_config: {kubeconfig} }}",
        cluster.node,
        pods_root.display()
    );
    // A global processor that sees the pod's fields: it runs after the enrichment.
    let processors = "processors:\n  - add_fields: { target: '', fields: { tier: shop }, when: { equals: { service.name: checkout } } }";
    let agent = Agent::start(&dir.path().join("state"), backend, &input, processors);
    let events = || delivered(&agent.output).0;
    let tail = || {
        let log = agent.log();
        let lines: Vec<&str> = log.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    };

    wait_until(
        || format!("the 100 lines of the annotated pod `web`; log:\n{}", tail()),
        || web_numbers(&events()).len() == 100,
    );
    let all = events();
    let event = of_pod(&all, "web")[0];
    assert_eq!(
        event["http"]["request"]["method"], "GET",
        "nginx-parsed: {event}"
    );
    assert_eq!(event["url"]["original"], "/orders/0?page=2");
    assert_eq!(event["http"]["response"]["status_code"], 200);
    assert_eq!(event["client"]["ip"], "203.0.113.7");
    assert_eq!(
        event["kubernetes"]["namespace"],
        web.metadata.namespace.as_deref().unwrap()
    );
    assert_eq!(
        event["kubernetes"]["pod"]["uid"],
        web.metadata.uid.as_deref().unwrap()
    );
    assert_eq!(event["kubernetes"]["container"]["name"], "app");
    assert_eq!(event["kubernetes"]["node"]["name"], cluster.node.as_str());
    assert_eq!(
        event["service"],
        json!({ "name": "checkout", "environment": "production" })
    );
    assert_eq!(
        event["tier"], "shop",
        "the global processors ran after the enrichment"
    );
    assert_eq!(event["log"]["file"]["path"], web_log.to_str().unwrap());

    // Annotated after the start: picked up from the pod watch, from the file's first line.
    cluster.annotate("late", json!({ "skiff.dev/logs": "true" }));
    wait_until(
        || {
            format!(
                "the lines of `late`, annotated after the start; log:\n{}",
                tail()
            )
        },
        || plain_numbers(&events(), "late").len() == 10,
    );
    append(&late_log, plain_lines("late", 10..20));
    wait_until(
        || {
            format!(
                "the lines `late` wrote after its annotation; log:\n{}",
                tail()
            )
        },
        || plain_numbers(&events(), "late").len() == 20,
    );
    let all = events();
    assert_eq!(
        of_pod(&all, "late")[0]["service"]["name"],
        "late-svc",
        "{:?}",
        of_pod(&all, "late")[0]
    );

    // A pod created while the agent runs, its folder made by the kubelet afterwards.
    let fresh = cluster.create(
        "fresh",
        json!({ "skiff.dev/logs": "true", "skiff.dev/log-format": "json" }),
    );
    let fresh_log = log_dir(&pods_root, &fresh).join("0.log");
    append(
        &fresh_log,
        (0..10).map(|n| format!(r#"{{"message":"fresh {n}","order":{{"id":{n}}}}}"#)),
    );
    wait_until(
        || format!("the lines of the new pod `fresh`; log:\n{}", tail()),
        || plain_numbers(&events(), "fresh").len() == 10,
    );
    let all = events();
    let event = of_pod(&all, "fresh")[0];
    assert_eq!(event["order"]["id"], 0, "json-parsed: {event}");

    // A kubelet rotation: the runtime writes on through its descriptor after the rename,
    // then the kubelet reopens 0.log; later it compresses the rotated file.
    append(&web_log, access_lines(100..200));
    let rotated = web_log.with_file_name("0.log.20261128-164500");
    fs::rename(&web_log, &rotated).unwrap();
    append(&rotated, access_lines(200..300));
    append(&web_log, access_lines(300..400));
    wait_until(
        || {
            let missing: Vec<u64> = (0..400)
                .filter(|n| !web_numbers(&events()).contains(n))
                .take(10)
                .collect();
            format!(
                "every line across the rotation, missing {missing:?}…; log:\n{}",
                tail()
            )
        },
        || web_numbers(&events()).len() == 400,
    );
    let mut gz = GzEncoder::new(
        File::create(web_log.with_file_name("0.log.20261128-164500.gz")).unwrap(),
        Compression::fast(),
    );
    gz.write_all(&fs::read(&rotated).unwrap()).unwrap();
    gz.finish().unwrap();
    fs::remove_file(&rotated).unwrap();

    // Deleted: what it wrote last is drained, then its file is closed and not read again.
    append(&web_log, access_lines(400..450));
    cluster.delete("web");
    let web_dir = log_dir(&pods_root, &web);
    wait_until(
        || {
            format!(
                "the deleted pod's files to be closed: still open {:?}; log:\n{}",
                open_under(agent.pid(), &web_dir),
                tail()
            )
        },
        || open_under(agent.pid(), &web_dir).is_empty(),
    );
    append(&web_log, access_lines(450..460));
    // Lines of a live pod after it: by then a file of `web` would have been read too.
    append(&late_log, plain_lines("late", 20..30));
    wait_until(
        || format!("the last lines of `late`; log:\n{}", tail()),
        || plain_numbers(&events(), "late").len() == 30,
    );
    let status = agent.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");

    let (all, torn) = delivered(&dir.path().join("state/events.ndjson"));
    assert_eq!(torn, 0);
    assert_eq!(
        web_numbers(&all),
        (0..450).collect(),
        "`web`: everything written before its deletion, nothing after"
    );
    assert_eq!(
        of_pod(&all, "web").len(),
        450,
        "no line twice: the compressed rotated file is not read"
    );
    assert!(
        plain_numbers(&all, "quiet").is_empty() && of_pod(&all, "quiet").is_empty(),
        "a pod without skiff.dev/logs is not harvested"
    );
    assert_eq!(all.len(), 450 + 30 + 10, "only `web`, `late` and `fresh`");
}

#[test]
fn kubernetes_input_inotify() {
    kubernetes_input("inotify");
}

#[test]
fn kubernetes_input_poll() {
    kubernetes_input("poll");
}

#[test]
fn kubernetes_input_ebpf() {
    if skiff_tests::ebpf_sandbox() {
        kubernetes_input("ebpf");
    }
}
