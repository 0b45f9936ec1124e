//! The whole system on a real control plane: kube-apiserver + etcd, skiff-webhook (with its HPA
//! reconciler) called by the API server over TLS, skiff-agent with the `kubernetes` input and the
//! Kafka output, the GeoLite2 database. Both programs run as processes, from their current
//! builds, with the shipped configuration (`manifests/`) adapted to loopback.
//!
//! Deployments are applied without resources; the test checks what the API server stored and
//! that the reconciler made their HPAs, then plays the kubelet: it creates a Pod from each
//! stored template, bound to the test node, and writes CRI log files of nginx access lines under
//! a pods folder, rotating one the kubelet's way (rename `0.log` to `0.log.<time>`, new `0.log`)
//! while the agent reads. Every line must arrive in Kafka, in its service's topic, enriched with
//! service, environment, pod, node, geo, user agent and route.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;
use skiff_tests::kafka::{Record, read_topics};
use skiff_tests::pki::Ca;
use skiff_tests::{binary, eventually, free_port, kube_client, unique, workspace_root};
use skiff_tests::{env, require_peer};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the API server, the webhook or the reconciler may take for one step.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long every line may take to reach Kafka.
const DELIVERY: Duration = Duration::from_secs(180);
/// How long the agent may take to drain and exit after SIGTERM (its own drain is 30 s).
const SHUTDOWN: Duration = Duration::from_secs(60);

/// Clients: (address, country), public addresses of the GeoLite2 database.
const CLIENTS: [(&str, &str); 4] = [
    ("8.8.8.8", "US"),
    ("1.1.1.1", "AU"),
    ("81.2.69.142", "GB"),
    ("89.160.20.128", "SE"),
];
/// User agents as browsers and tools send them, with the name the agent must find (Project
/// Woothee's names: an iPhone's browser is `Safari`, curl an `HTTP Library`).
const USER_AGENTS: [(&str, &str); 4] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Chrome",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Firefox",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Safari",
    ),
    ("curl/8.5.0", "HTTP Library"),
];

/// A program of the system, running as a process with its output in a log file; killed when
/// dropped (a failing test must not leave it behind).
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &'static str, mut command: Command, log: PathBuf) -> Self {
        let file = File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {name}: {err}"));
        Self { name, child, log }
    }

    /// Fails naming the process and its log when it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + SHUTDOWN;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {SHUTDOWN:?} of SIGTERM (log {})",
                self.name,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM (log {})",
            self.name,
            self.log.display()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The shipped webhook policy (the ConfigMap in `manifests/base`), with `environment` for
/// the test's namespace.
fn shipped_policy(namespace: &str, environment: &str) -> String {
    let path = workspace_root().join("manifests/base/webhook-policy.yaml");
    let config_map: Yaml = serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let mut policy: Yaml =
        serde_yaml::from_str(config_map["data"]["policy.yml"].as_str().unwrap()).unwrap();
    policy["namespaces"] =
        serde_yaml::from_str(&format!("{namespace}: {{ environment: {environment} }}")).unwrap();
    serde_yaml::to_string(&policy).unwrap()
}

/// The shipped agent configuration (`manifests/base/agent.yml`), pointed at the peers, the
/// test's pods folder and node, and the test's own topics and state folders.
struct AgentSetup<'a> {
    kubeconfig: &'a str,
    node: &'a str,
    pods: &'a Path,
    geoip_city: &'a str,
    kafka: &'a str,
    topic_prefix: &'a str,
    state: &'a Path,
    metrics_port: u16,
}

fn shipped_agent_config(setup: &AgentSetup) -> String {
    let path = workspace_root().join("manifests/base/agent.yml");
    let mut config: Yaml = serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let set = |value: &mut Yaml, key: &str, to: &str| {
        value[key] = Yaml::from(to);
    };
    let input = &mut config["inputs"][0];
    assert_eq!(
        input["type"],
        Yaml::from("kubernetes"),
        "{}",
        path.display()
    );
    set(input, "logs_path", &setup.pods.display().to_string());
    set(input, "node", setup.node);
    set(input, "kube_config", setup.kubeconfig);
    let geoip = config["processors"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find_map(|p| p.get_mut("geoip"))
        .expect("the shipped agent.yml geolocates");
    set(geoip, "database", setup.geoip_city);
    let kafka = &mut config["output.kafka"];
    kafka["hosts"] = serde_yaml::from_str(&format!("[\"{}\"]", setup.kafka)).unwrap();
    let topic = kafka["topic"].as_str().unwrap().to_string();
    set(kafka, "topic", &format!("{}-{topic}", setup.topic_prefix));
    // The test's topics, the annotation's included, all start with its prefix.
    kafka["allowed_topics"] =
        serde_yaml::from_str(&format!("[\"{}-*\"]", setup.topic_prefix)).unwrap();
    set(
        &mut config["queue"]["disk"],
        "path",
        &setup.state.join("queue").display().to_string(),
    );
    set(
        &mut config["registry"],
        "path",
        &setup.state.join("registry").display().to_string(),
    );
    set(
        &mut config["metrics"],
        "listen",
        &format!("127.0.0.1:{}", setup.metrics_port),
    );
    serde_yaml::to_string(&config).unwrap()
}

/// A Deployment as a user writes it: an nginx container, no resources.
fn user_deployment(name: &str, annotations: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": { "containers": [{ "name": "nginx", "image": "nginx:1.27" }] }
            }
        }
    }))
    .unwrap()
}

/// Plays the kubelet: a Pod from the Deployment's stored template, bound to `node`.
fn pod_of(deployment: &Deployment, node: &str) -> Pod {
    let template = deployment.spec.template.clone();
    let mut pod = json!({
        "metadata": serde_json::to_value(template.metadata.unwrap_or_default()).unwrap(),
        "spec": serde_json::to_value(template.spec.unwrap()).unwrap(),
    });
    pod["metadata"]["name"] = json!(format!("{}-7d9f8c6b5-x2k4q", deployment.name_any()));
    pod["spec"]["nodeName"] = json!(node);
    pod["spec"]["automountServiceAccountToken"] = json!(false);
    serde_json::from_value(pod).unwrap()
}

/// The folder where the kubelet writes a container's logs.
fn container_dir(pods: &Path, pod: &Pod, container: &str) -> PathBuf {
    let dir = pods
        .join(format!(
            "{}_{}_{}",
            pod.namespace().unwrap(),
            pod.name_any(),
            pod.uid().unwrap()
        ))
        .join(container);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Line `n` of a service: an nginx access line, numbered in its path, in CRI format.
fn access_line(n: usize) -> String {
    let (ip, _) = CLIENTS[n % CLIENTS.len()];
    let (agent, _) = USER_AGENTS[n % USER_AGENTS.len()];
    format!(
        "2026-11-28T17:00:00.{n:09}Z stdout F {ip} - - [28/Nov/2026:17:00:00 +0000] \"GET /orders/{n}/items?page=2 HTTP/1.1\" 200 {} \"-\" \"{agent}\"\n",
        512 + n
    )
}

/// Appends lines `range` to `path`, flushed, as a container's stdout does.
fn append(path: &Path, range: std::ops::Range<usize>) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let text: String = range.map(access_line).collect();
    file.write_all(text.as_bytes()).unwrap();
}

/// The line number of a delivered event, from its URL path (`/orders/<n>/items`).
fn line_number(event: &Value) -> usize {
    event["url"]["path"]
        .as_str()
        .and_then(|p| {
            p.strip_prefix("/orders/")?
                .strip_suffix("/items")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("an event without its line's URL path: {event}"))
}

/// What one service expects: its topic, its pod, and how many lines it wrote.
struct Service {
    name: &'static str,
    topic: String,
    pod: String,
    lines: usize,
}

/// Counts every service's lines in Kafka: (line number → times delivered) per service.
fn deliveries(brokers: &str, services: &[Service]) -> Vec<BTreeMap<usize, usize>> {
    let topics: Vec<String> = services.iter().map(|s| s.topic.clone()).collect();
    let records = read_topics(brokers, &topics, PATIENCE);
    services
        .iter()
        .map(|service| {
            let mut counts = BTreeMap::new();
            for event in records
                .iter()
                .filter(|r| r.topic == service.topic)
                .map(|r| &r.event)
            {
                *counts.entry(line_number(event)).or_insert(0) += 1;
            }
            counts
        })
        .collect()
}

/// Polls `check` (which may block, as Kafka reads do) every 500 ms until it yields a value;
/// panics after [`DELIVERY`], naming `what`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DELIVERY;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DELIVERY:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_made_production_ready_and_every_log_line_reaches_kafka_enriched() {
    // The agent's default backend is eBPF as root, which may mount tracefs; the test's body
    // (where the agent is started) runs on this thread.
    skiff_tests::own_mounts();
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let brokers = require_peer!(env::KAFKA, "kafka");
    let geoip_city = require_peer!(env::GEOIP_CITY, "GeoLite2 City database");
    // The programs as they are now, built before anything waits on them.
    let webhook_binary = binary("skiff-webhook", "skiff-webhook");
    let agent_binary = binary("skiff-agent", "skiff-agent");
    let client = kube_client(&kubeconfig).await;
    let namespace = unique("sys");
    let node = format!("{namespace}-node");
    let environment = "staging";
    // Under target/tmp, kept: the programs' logs are there when a step fails.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&namespace);
    fs::create_dir_all(&dir).unwrap();

    // The namespace, with the ServiceAccount pod admission wants (no controller-manager here).
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap(),
        )
        .await
        .expect("creating the namespace");
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap(),
        )
        .await
        .expect("creating the default ServiceAccount");

    // skiff-webhook with the shipped policy, its reconciler watching the test's namespace.
    let ca = Ca::new();
    ca.issue(&["127.0.0.1"], &dir.join("tls.crt"), &dir.join("tls.key"));
    let policy = dir.join("policy.yml");
    fs::write(&policy, shipped_policy(&namespace, environment)).unwrap();
    let port = free_port();
    let mut webhook_command = Command::new(&webhook_binary);
    webhook_command
        .arg(format!("--policy={}", policy.display()))
        .arg(format!("--tls-cert={}", dir.join("tls.crt").display()))
        .arg(format!("--tls-key={}", dir.join("tls.key").display()))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--metrics-listen=127.0.0.1:{}", free_port()))
        .arg(format!("--namespace={namespace}"))
        .env("KUBECONFIG", &kubeconfig);
    let mut webhook = Process::start("skiff-webhook", webhook_command, dir.join("webhook.log"));
    let https = ca.client();
    let readyz = format!("https://127.0.0.1:{port}/readyz");
    eventually(
        &format!(
            "skiff-webhook to answer {readyz} (log {})",
            webhook.log.display()
        ),
        PATIENCE,
        || async {
            let response = https.get(&readyz).send().await.ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;
    // `Fail`: a webhook that is not called fails the test instead of admitting Deployments unmutated.
    skiff_tests::webhook::register(
        &client,
        &namespace,
        &format!("https://127.0.0.1:{port}/mutate"),
        &ca.pem,
        "Fail",
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    // The API server picks a webhook configuration up asynchronously.
    eventually("the API server to call the webhook", PATIENCE, || async {
        let probe = deployments
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &user_deployment("probe", json!({})),
            )
            .await
            .ok()?;
        probe
            .annotations()
            .contains_key("skiff.dev/policy-hash")
            .then_some(())
    })
    .await;

    // Two services: `checkout` goes to the topic template's topic, `billing` to the topic its
    // Deployment names.
    let run = unique("skiff-sys");
    let template_topic = |service: &str| format!("{run}-logs-{service}");
    let billing_topic = format!("{run}-billing-audit");
    let stored_checkout = deployments
        .create(
            &PostParams::default(),
            &user_deployment("checkout", json!({ "skiff.dev/log-format": "nginx" })),
        )
        .await
        .expect("creating the checkout Deployment");
    let stored_billing = deployments
        .create(
            &PostParams::default(),
            &user_deployment(
                "billing",
                json!({ "skiff.dev/log-format": "nginx", "skiff.dev/log-topic": billing_topic }),
            ),
        )
        .await
        .expect("creating the billing Deployment");
    for stored in [&stored_checkout, &stored_billing] {
        let name = stored.name_any();
        let template = &stored.spec.template;
        let container = &template.spec.as_ref().unwrap().containers[0];
        let resources = container
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("{name} stored without resources"));
        let requests = resources.requests.as_ref().expect("requests");
        let limits = resources.limits.as_ref().expect("limits");
        assert!(
            requests.contains_key("cpu") && requests.contains_key("memory"),
            "{name}: {requests:?}"
        );
        assert!(limits.contains_key("memory"), "{name}: {limits:?}");
        let annotations = template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(annotations["skiff.dev/logs"], "true", "{name}");
        assert_eq!(annotations["skiff.dev/service"], name);
        assert_eq!(annotations["skiff.dev/environment"], environment, "{name}");
        assert_eq!(annotations["skiff.dev/log-format"], "nginx", "{name}");
    }
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &namespace);
    for name in ["checkout", "billing"] {
        let hpa = eventually(
            &format!(
                "the reconciler's HPA for {name} (webhook log {})",
                webhook.log.display()
            ),
            PATIENCE,
            || async { hpas.get_opt(name).await.ok().flatten() },
        )
        .await;
        assert_eq!(hpa.spec.scale_target_ref.name, name);
        // The shipped policy's bounds.
        assert_eq!(
            (hpa.spec.min_replicas, hpa.spec.max_replicas),
            (Some(2), 10),
            "{name}"
        );
    }
    webhook.assert_running();

    // The kubelet's part: the Pods, and their log files under the pods folder.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods_dir = dir.join("pods");
    let mut pods = Vec::new();
    for stored in [&stored_checkout, &stored_billing] {
        let pod = pods_api
            .create(&PostParams::default(), &pod_of(stored, &node))
            .await
            .expect("creating a Pod of the Deployment");
        pods.push(pod);
    }
    let checkout_dir = container_dir(&pods_dir, &pods[0], "nginx");
    let billing_dir = container_dir(&pods_dir, &pods[1], "nginx");

    // skiff-agent with the shipped configuration.
    let agent_config = dir.join("agent.yml");
    let metrics_port = free_port();
    fs::write(
        &agent_config,
        shipped_agent_config(&AgentSetup {
            kubeconfig: &kubeconfig,
            node: &node,
            pods: &pods_dir,
            geoip_city: &geoip_city,
            kafka: &brokers,
            topic_prefix: &run,
            state: &dir.join("state"),
            metrics_port,
        }),
    )
    .unwrap();
    let mut agent_command = Command::new(&agent_binary);
    agent_command
        .arg("run")
        .arg(format!("--config={}", agent_config.display()))
        .env("SKIFF_LOG", "info");
    let mut agent = Process::start("skiff-agent", agent_command, dir.join("agent.log"));

    let services = [
        Service {
            name: "checkout",
            topic: template_topic("checkout"),
            pod: pods[0].name_any(),
            lines: 1_000,
        },
        Service {
            name: "billing",
            topic: billing_topic.clone(),
            pod: pods[1].name_any(),
            lines: 300,
        },
    ];
    let checkout_log = checkout_dir.join("0.log");
    append(&checkout_log, 0..300);
    append(&billing_dir.join("0.log"), 0..300);
    // Rotate once the agent is reading the first file, as the kubelet does at its size limit:
    // more lines into 0.log, then rename it away and carry on in a new 0.log, at once.
    wait_for(
        &format!(
            "the first checkout lines in Kafka (agent log {})",
            agent.log.display()
        ),
        || {
            agent.assert_running();
            (!deliveries(&brokers, &services[..1])[0].is_empty()).then_some(())
        },
    );
    append(&checkout_log, 300..600);
    fs::rename(&checkout_log, checkout_dir.join("0.log.20261128-170000")).unwrap();
    append(&checkout_log, 600..1_000);

    let counts = wait_for(
        &format!("every line in Kafka (agent log {})", agent.log.display()),
        || {
            agent.assert_running();
            let counts = deliveries(&brokers, &services);
            services
                .iter()
                .zip(&counts)
                .all(|(service, counts)| counts.len() == service.lines)
                .then_some(counts)
        },
    );
    // The endpoint the DaemonSet probes and Prometheus scrapes counts what Kafka acknowledged.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("scraping the agent's /metrics")
        .text()
        .await
        .unwrap();
    let acked: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"skiff_output_events_total{output="kafka",outcome="acked"} "#)
        })
        .unwrap_or_else(|| panic!("no acknowledged Kafka events in /metrics:\n{metrics}"))
        .parse()
        .unwrap();
    let written: usize = services.iter().map(|s| s.lines).sum();
    assert!(acked >= written as f64, "{acked} acknowledged of {written}");
    agent.stop();
    // After the drain: everything the agent ever sent, duplicates included.
    let counts_after_stop = deliveries(&brokers, &services);
    for ((service, seen), after) in services.iter().zip(&counts).zip(&counts_after_stop) {
        let expected: Vec<usize> = (0..service.lines).collect();
        assert_eq!(
            after.keys().copied().collect::<Vec<_>>(),
            expected,
            "{}: lines lost or unknown",
            service.name
        );
        let duplicates: usize = after.values().map(|n| n - 1).sum();
        eprintln!(
            "{}: {} lines delivered to {}, {duplicates} duplicates ({} seen before the stop)",
            service.name,
            service.lines,
            service.topic,
            seen.len()
        );
    }

    // Each event as the agent shipped it, enriched from the pod, the GeoLite2 database, the
    // user agent and the request.
    let records = read_topics(
        &brokers,
        &[services[0].topic.clone(), billing_topic],
        PATIENCE,
    );
    for Record { topic, event, .. } in &records {
        let service = services.iter().find(|s| s.topic == *topic).unwrap();
        let n = line_number(event);
        let context = format!("{} line {n}: {event}", service.name);
        assert_eq!(event["service"]["name"], service.name, "{context}");
        assert_eq!(event["service"]["environment"], environment, "{context}");
        assert_eq!(
            event["kubernetes"]["namespace"],
            namespace.as_str(),
            "{context}"
        );
        assert_eq!(
            event["kubernetes"]["pod"]["name"],
            service.pod.as_str(),
            "{context}"
        );
        assert_eq!(
            event["kubernetes"]["container"]["name"], "nginx",
            "{context}"
        );
        assert_eq!(
            event["kubernetes"]["node"]["name"],
            node.as_str(),
            "{context}"
        );
        let (ip, country) = CLIENTS[n % CLIENTS.len()];
        assert_eq!(event["client"]["ip"], ip, "{context}");
        assert_eq!(
            event["client"]["geo"]["country_iso_code"], country,
            "{context}"
        );
        let (agent_string, agent_name) = USER_AGENTS[n % USER_AGENTS.len()];
        assert_eq!(event["user_agent"]["original"], agent_string, "{context}");
        assert_eq!(event["user_agent"]["name"], agent_name, "{context}");
        assert_eq!(event["http"]["request"]["method"], "GET", "{context}");
        assert_eq!(event["http"]["response"]["status_code"], 200, "{context}");
        assert_eq!(event["http"]["route"], "/orders/:id/items", "{context}");
    }
    webhook.stop();
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(&namespace, &Default::default())
        .await;
}
