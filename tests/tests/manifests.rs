//! `manifests/` as a cluster gets them: each overlay rendered by the pinned kustomize, every
//! object server-side applied as a dry run (with strict field validation, so a misspelled field
//! fails) to the real kube-apiserver, and the agent's ConfigMap checked by
//! `skiff-agent check-config`.
//!
//! A namespaced dry run needs its namespace to exist, so the overlays' Namespace
//! (`skiff-system`) is applied for real first: it is empty and inert. The prod overlay's
//! `Certificate` and `Issuer` need cert-manager's CRDs, which are installed for real from the
//! pinned cert-manager release (the `cert-manager-crds` peer).

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use skiff_tests::pki::Ca;
use skiff_tests::{binary, eventually, kube_client, workspace_root};
use skiff_tests::{env, require_peer};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long the API server may take to serve newly installed CRDs.
const PATIENCE: Duration = Duration::from_secs(60);
/// The field manager of the applies, as `kubectl apply --server-side` would name it.
const MANAGER: &str = "skiff";

/// A rendered overlay: its objects, and the dev CA's PEM (what its caBundle must hold).
struct Rendered {
    objects: Vec<Value>,
    ca_pem: String,
}

impl Rendered {
    /// The object of `kind` whose name starts with `name` (generated names end with a hash).
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| {
                o["kind"] == kind && o["metadata"]["name"].as_str().unwrap().starts_with(name)
            })
            .unwrap_or_else(|| panic!("the overlay has no {kind} {name}"))
    }
}

/// Renders `manifests/overlays/<overlay>` with kustomize, from a copy of `manifests/` in which
/// the dev overlay's certificates (what `cargo xtask certs` writes there) are freshly made.
fn render(kustomize: &str, overlay: &str) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&workspace_root().join("manifests"), dir.path());
    let ca_pem = write_dev_certs(&dir.path().join("overlays/dev/certs"));
    let output = Command::new(kustomize)
        .arg("build")
        .arg(dir.path().join("overlays").join(overlay))
        .output()
        .unwrap_or_else(|err| panic!("running {kustomize}: {err}"));
    assert!(
        output.status.success(),
        "kustomize build overlays/{overlay} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let objects = yaml_documents(&String::from_utf8(output.stdout).unwrap());
    assert!(!objects.is_empty(), "overlays/{overlay} rendered nothing");
    Rendered { objects, ca_pem }
}

/// The documents of a multi-document YAML text, empty ones left out.
fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// Copies a folder tree, leaving out `certs/` folders (local, git-ignored dev certificates).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "certs" {
                copy_tree(&entry.path(), &target);
            }
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A CA and the webhook's serving certificate for its Service name, as `cargo xtask certs`
/// writes them; returns the CA's PEM.
fn write_dev_certs(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    let ca = Ca::new();
    ca.issue(
        &["skiff-webhook.skiff-system.svc"],
        &dir.join("webhook.crt"),
        &dir.join("webhook.key"),
    );
    fs::write(dir.join("ca.crt"), &ca.pem).unwrap();
    ca.pem
}

fn gvk(object: &Value) -> GroupVersionKind {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, object["kind"].as_str().expect("kind"))
}

fn identity(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["namespace"].as_str().unwrap_or("-"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Server-side applies `object`, for real or as a dry run, with strict field validation.
async fn apply(
    client: &Client,
    discovery: &Discovery,
    object: &Value,
    dry_run: bool,
) -> Result<Value, String> {
    let (resource, capabilities) = discovery
        .resolve_gvk(&gvk(object))
        .ok_or_else(|| "the API server does not serve this kind".to_string())?;
    let api: Api<DynamicObject> =
        match (capabilities.scope, object["metadata"]["namespace"].as_str()) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(client.clone(), namespace, &resource)
            }
            (Scope::Namespaced, None) => return Err("namespaced, but has no namespace".into()),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
    let mut params = PatchParams::apply(MANAGER).validation_strict();
    params.dry_run = dry_run;
    let name = object["metadata"]["name"].as_str().expect("a name");
    api.patch(name, &params, &Patch::Apply(object))
        .await
        .map(|applied| serde_json::to_value(applied).unwrap())
        .map_err(|err| err.to_string())
}

/// Applies the overlay's Namespaces for real, then every object as a dry run; fails listing
/// every object the API server refused. Returns the objects as the API server would store them.
async fn dry_run_every_object(client: &Client, objects: &[Value]) -> Vec<Value> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    for namespace in objects.iter().filter(|o| o["kind"] == "Namespace") {
        apply(client, &discovery, namespace, false)
            .await
            .unwrap_or_else(|err| panic!("creating {}: {err}", identity(namespace)));
    }
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    for object in objects {
        match apply(client, &discovery, object, true).await {
            Ok(applied) => stored.push(applied),
            Err(err) => refused.push(format!("{}: {err}", identity(object))),
        }
    }
    assert!(
        refused.is_empty(),
        "the API server refused {} object(s):\n{}",
        refused.len(),
        refused.join("\n")
    );
    stored
}

/// Installs cert-manager's `Certificate` and `Issuer` CRDs from the pinned release (for real:
/// a dry-run CRD serves nothing) and waits until the API server serves them.
async fn install_cert_manager_crds(client: &Client, folder: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in fs::read_dir(folder).unwrap_or_else(|err| panic!("reading {folder}: {err}")) {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        for document in yaml_documents(&text) {
            let crd: CustomResourceDefinition = serde_json::from_value(document).unwrap();
            let name = crd.name_any();
            crds.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|err| panic!("installing the CRD {name}: {err}"));
            names.push(name);
        }
    }
    for name in names {
        eventually(
            &format!("the CRD {name} to be established"),
            PATIENCE,
            || async {
                let crd = crds.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await;
    }
    eventually(
        "discovery to serve cert-manager.io/v1",
        PATIENCE,
        || async {
            let discovery = Discovery::new(client.clone()).run().await.ok()?;
            ["Certificate", "Issuer"]
                .iter()
                .all(|kind| {
                    discovery
                        .resolve_gvk(&GroupVersionKind::gvk("cert-manager.io", "v1", kind))
                        .is_some()
                })
                .then_some(())
        },
    )
    .await;
}

/// What every overlay must hold for the agent: the DaemonSet as the issue describes it.
fn check_agent_daemonset(rendered: &Rendered) {
    let daemonset = rendered.get("DaemonSet", "skiff-agent");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let added: BTreeSet<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    // eBPF's two and nothing else: no DAC_READ_SEARCH (open_by_handle_at), DAC_OVERRIDE,
    // SYS_RESOURCE or SYS_ADMIN (see the DaemonSet's comments).
    assert_eq!(added, BTreeSet::from(["BPF", "PERFMON"]));
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    let node_name = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME is set");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(pod["tolerations"], json!([{ "operator": "Exists" }]));
    for kind in ["requests", "limits"] {
        assert!(
            container["resources"][kind]["memory"].is_string(),
            "memory {kind}"
        );
    }
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics")
    );
    // Each host folder is mounted where the agent looks, read-only where it only reads, and no
    // other: not /var/log as a whole, only the pods' logs the kubernetes input reads.
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let expected = [
        ("/var/log/pods", true),
        ("/var/lib/skiff", false),
        ("/sys/kernel/tracing", true),
        ("/usr/share/GeoIP", true),
    ];
    let host_paths: BTreeSet<&str> = volumes
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(host_paths, expected.iter().map(|(host, _)| *host).collect());
    for (host, read_only) in expected {
        let volume = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("{host} is not mounted"));
        assert_eq!(mount["mountPath"], host);
        assert_eq!(
            mount["readOnly"].as_bool().unwrap_or(false),
            read_only,
            "{host}"
        );
    }
    // What agent.yml reads and writes is inside those mounts: the logs in a read-only one,
    // the state (the dead-letter file included) in the writable one.
    let config = agent_config(rendered);
    let mounted_at = |path: &str| {
        mounts
            .iter()
            .filter(|m| Path::new(path).starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("{path} of agent.yml is in no mount"))
    };
    let logs = config["inputs"][0]["logs_path"]
        .as_str()
        .expect("logs_path");
    assert_eq!(mounted_at(logs)["readOnly"], true, "{logs}");
    for state in [
        config["registry"]["path"].as_str().expect("registry.path"),
        config["queue"]["disk"]["path"]
            .as_str()
            .expect("queue.disk.path"),
        dead_letter_path(&config),
    ] {
        assert!(
            !mounted_at(state)["readOnly"].as_bool().unwrap_or(false),
            "{state} is not writable"
        );
    }
    // The configuration volume names the generated ConfigMap, hash suffix included.
    let config = volumes
        .iter()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("a ConfigMap volume");
    assert_eq!(
        rendered.get("ConfigMap", "skiff-agent-config")["metadata"]["name"],
        config
    );
}

/// The agent's configuration, as the ConfigMap holds it.
fn agent_config(rendered: &Rendered) -> Value {
    let text = rendered.get("ConfigMap", "skiff-agent-config")["data"]["agent.yml"]
        .as_str()
        .expect("agent.yml");
    serde_yaml::from_str(text).expect("agent.yml is YAML")
}

/// The Kafka output's dead-letter file in agent.yml.
fn dead_letter_path(config: &Value) -> &str {
    config["output.kafka"]["dead_letter"]["path"]
        .as_str()
        .expect("output.kafka has a dead_letter file")
}

/// The webhook runs as a user other than root, on a read-only root, without capabilities.
fn check_webhook_deployment(rendered: &Rendered) {
    let pod = &rendered.get("Deployment", "skiff-webhook")["spec"]["template"]["spec"];
    for container in pod["containers"].as_array().unwrap() {
        let security = &container["securityContext"];
        let non_root = security["runAsNonRoot"]
            .as_bool()
            .or(pod["securityContext"]["runAsNonRoot"].as_bool());
        assert_eq!(non_root, Some(true), "{}", container["name"]);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"], json!({ "drop": ["ALL"] }));
    }
}

/// The NetworkPolicy of the pods `workload` runs: exactly one selects them, and it isolates
/// both directions.
fn policy_of<'a>(rendered: &'a Rendered, workload: &Value) -> &'a Value {
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    let selecting: Vec<&Value> = rendered
        .objects
        .iter()
        .filter(|o| o["kind"] == "NetworkPolicy")
        .filter(|policy| {
            let selector = &policy["spec"]["podSelector"];
            assert!(
                selector["matchExpressions"].is_null(),
                "only matchLabels are checked here"
            );
            selector["matchLabels"]
                .as_object()
                .is_some_and(|wanted| wanted.iter().all(|(k, v)| &labels[k] == v))
        })
        .collect();
    assert_eq!(
        selecting.len(),
        1,
        "policies selecting {}",
        identity(workload)
    );
    let policy = selecting[0];
    assert_eq!(
        policy["spec"]["policyTypes"],
        json!(["Ingress", "Egress"]),
        "{}",
        identity(policy)
    );
    policy
}

/// The container port a policy's `port` (a name or a number) means on `workload`'s pods.
fn container_port(workload: &Value, port: &Value) -> u64 {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().unwrap())
        .find(|p| &p["name"] == port || &p["containerPort"] == port)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{} has no container port {port}", identity(workload)))
}

/// The ingress rules of `policy`, each as (container ports, sources), ports resolved on
/// `workload`'s pods; every rule names its ports over TCP.
fn ingress(policy: &Value, workload: &Value) -> Vec<(BTreeSet<u64>, Value)> {
    policy["spec"]["ingress"]
        .as_array()
        .expect("ingress rules")
        .iter()
        .map(|rule| {
            let ports = rule["ports"]
                .as_array()
                .expect("every ingress rule names its ports")
                .iter()
                .map(|p| {
                    assert_eq!(p["protocol"], "TCP");
                    container_port(workload, &p["port"])
                })
                .collect();
            (ports, rule["from"].clone())
        })
        .collect()
}

/// The (protocol, port) pairs `policy` lets its pods reach, with the destinations of each
/// (`null`: anywhere).
fn egress(policy: &Value) -> Vec<(String, u64, Value)> {
    policy["spec"]["egress"]
        .as_array()
        .expect("egress rules")
        .iter()
        .flat_map(|rule| {
            rule["ports"]
                .as_array()
                .expect("every egress rule names its ports")
                .iter()
                .map(|p| {
                    (
                        p["protocol"].as_str().unwrap().to_string(),
                        p["port"].as_u64().expect("a numbered port"),
                        rule["to"].clone(),
                    )
                })
        })
        .collect()
}

/// Only namespaces labelled as scrapers.
fn scrapers() -> Value {
    json!([{ "namespaceSelector": { "matchLabels": { "skiff.dev/metrics-scraper": "true" } } }])
}

/// Each program's pods have a policy: the webhook takes reviews on the port the API server
/// calls, metrics come from scraper namespaces only, and each reaches what it talks to.
fn check_network_policies(rendered: &Rendered) {
    let api_server = [("TCP".to_string(), 443), ("TCP".to_string(), 6443)];

    let webhook = rendered.get("Deployment", "skiff-webhook");
    let policy = policy_of(rendered, webhook);
    // The port the API server calls: the registration's Service port, its target port.
    let registration = rendered.get("MutatingWebhookConfiguration", "skiff-webhook");
    let service_ref = &registration["webhooks"][0]["clientConfig"]["service"];
    let service = rendered.get("Service", service_ref["name"].as_str().unwrap());
    let target = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == service_ref["port"])
        .map(|p| container_port(webhook, &p["targetPort"]))
        .expect("the Service port the webhook is registered on");
    let metrics = container_port(webhook, &json!("metrics"));
    assert_ne!(target, metrics, "metrics must not share the review port");
    assert_eq!(
        ingress(policy, webhook),
        [
            // From wherever the API server's calls come (see the policy), on that port only.
            (BTreeSet::from([target]), Value::Null),
            (BTreeSet::from([metrics]), scrapers()),
        ]
    );
    let reached: Vec<(String, u64)> = egress(policy)
        .into_iter()
        .map(|(protocol, port, to)| {
            assert!(to.is_null(), "the API server is outside the pod network");
            (protocol, port)
        })
        .collect();
    assert_eq!(
        reached, api_server,
        "the webhook talks to the API server only"
    );

    let agent = rendered.get("DaemonSet", "skiff-agent");
    let policy = policy_of(rendered, agent);
    assert_eq!(
        ingress(policy, agent),
        [(
            BTreeSet::from([container_port(agent, &json!("metrics"))]),
            scrapers()
        )]
    );
    let reached = egress(policy);
    let allows = |protocol: &str, port: u64| {
        reached
            .iter()
            .find(|(p, n, _)| p == protocol && *n == port)
            .map(|(_, _, to)| to.clone())
            .unwrap_or_else(|| panic!("the agent may not reach {protocol} {port}"))
    };
    // The brokers' port, from agent.yml's hosts (`${KAFKA_BOOTSTRAP:host:port}`), anywhere.
    let config = agent_config(rendered);
    let kafka: u64 = config["output.kafka"]["hosts"][0]
        .as_str()
        .unwrap()
        .trim_end_matches('}')
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port in output.kafka.hosts");
    assert!(allows("TCP", kafka).is_null());
    for (protocol, port) in &api_server {
        assert!(allows(protocol, *port).is_null());
    }
    let dns = json!([{
        "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
        "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
    }]);
    assert_eq!(allows("UDP", 53), dns);
    assert_eq!(allows("TCP", 53), dns);
    assert_eq!(reached.len(), 5, "nothing else: {reached:?}");
}

#[tokio::test]
async fn every_overlay_holds_least_privilege_and_network_policies() {
    let kustomize = require_peer!(env::KUSTOMIZE, "kustomize");
    for overlay in ["dev", "prod"] {
        let rendered = render(&kustomize, overlay);
        check_agent_daemonset(&rendered);
        check_webhook_deployment(&rendered);
        check_network_policies(&rendered);
    }
}

#[tokio::test]
async fn the_dev_overlay_is_accepted_by_the_api_server() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let kustomize = require_peer!(env::KUSTOMIZE, "kustomize");
    let rendered = render(&kustomize, "dev");
    let client = kube_client(&kubeconfig).await;
    let stored = dry_run_every_object(&client, &rendered.objects).await;

    // The caBundle is the dev CA, so the API server trusts the webhook's certificate.
    let webhook: MutatingWebhookConfiguration = serde_json::from_value(
        stored
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .expect("the webhook configuration was applied")
            .clone(),
    )
    .unwrap();
    let bundle = webhook.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("a caBundle");
    assert_eq!(String::from_utf8(bundle.0).unwrap(), rendered.ca_pem);
    let secret = rendered.get("Secret", "skiff-webhook-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
}

#[tokio::test]
async fn the_prod_overlay_is_accepted_by_the_api_server_with_cert_manager_crds() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let kustomize = require_peer!(env::KUSTOMIZE, "kustomize");
    let crds = require_peer!(env::CERT_MANAGER_CRDS, "cert-manager CRDs");
    let rendered = render(&kustomize, "prod");
    let client = kube_client(&kubeconfig).await;
    install_cert_manager_crds(&client, &crds).await;
    let stored = dry_run_every_object(&client, &rendered.objects).await;

    // cainjector fills the caBundle from the serving Certificate; the manifest has none, or
    // every apply would reset it.
    let webhook = stored
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .expect("the webhook configuration was applied");
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "skiff-system/skiff-webhook-tls"
    );
    assert!(webhook["webhooks"][0]["clientConfig"]["caBundle"].is_null());
    assert!(
        !rendered.objects.iter().any(|o| o["kind"] == "Secret"),
        "cert-manager writes the TLS Secret, the overlay must not"
    );
    // The Certificate writes the Secret the webhook mounts, for the name the API server dials.
    let certificate = rendered.get("Certificate", "skiff-webhook-tls");
    let deployment = rendered.get("Deployment", "skiff-webhook");
    let secret_volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .expect("the webhook mounts its TLS Secret");
    assert_eq!(certificate["spec"]["secretName"], secret_volume);
    assert!(
        certificate["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!("skiff-webhook.skiff-system.svc"))
    );
}

#[tokio::test]
async fn the_agent_configmap_passes_check_config() {
    let kustomize = require_peer!(env::KUSTOMIZE, "kustomize");
    let rendered = render(&kustomize, "prod");
    let config_map = rendered.get("ConfigMap", "skiff-agent-config");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yml");
    fs::write(
        &file,
        config_map["data"]["agent.yml"].as_str().expect("agent.yml"),
    )
    .unwrap();

    let agent = binary("skiff-agent", "skiff-agent");
    let output = Command::new(&agent)
        .arg("check-config")
        .arg(&file)
        // What the DaemonSet sets; KAFKA_BOOTSTRAP is left to its default.
        .env("NODE_NAME", "node-7")
        .env_remove("KAFKA_BOOTSTRAP")
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", agent.display()));
    assert!(
        output.status.success(),
        "check-config refused the ConfigMap's agent.yml: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let effective: Value =
        serde_yaml::from_slice(&output.stdout).expect("check-config prints YAML");
    let input = &effective["inputs"][0];
    assert_eq!(input["type"], "kubernetes");
    assert_eq!(input["node"], "node-7");
    assert_eq!(input["logs_path"], "/var/log/pods");
    assert_eq!(
        effective["output.kafka"]["hosts"],
        json!(["kafka-bootstrap.kafka.svc:9092"])
    );
    assert_eq!(effective["queue"]["disk"]["path"], "/var/lib/skiff/queue");
    assert_eq!(effective["registry"]["path"], "/var/lib/skiff/registry");
    // Refused records are kept, in a bounded file, rather than dropped.
    let dead_letter = &effective["output.kafka"]["dead_letter"];
    assert_eq!(
        dead_letter["path"],
        "/var/lib/skiff/dead-letter/kafka.ndjson"
    );
    assert_eq!(dead_letter["max_size"], 64 << 20);
    assert_eq!(dead_letter["keep"], 2);
    // The port the DaemonSet declares and probes.
    assert_eq!(effective["metrics"]["listen"], "0.0.0.0:9479");
}
