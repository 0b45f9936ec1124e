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
    assert_eq!(
        added,
        BTreeSet::from(["BPF", "PERFMON", "SYS_RESOURCE", "DAC_READ_SEARCH"])
    );
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
    // Each host folder is mounted where the agent looks, read-only where it only reads.
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    for (host, read_only) in [
        ("/var/log", true),
        ("/var/lib/skiff", false),
        ("/sys/kernel/tracing", true),
    ] {
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

#[tokio::test]
async fn the_dev_overlay_is_accepted_by_the_api_server() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let kustomize = require_peer!(env::KUSTOMIZE, "kustomize");
    let rendered = render(&kustomize, "dev");
    check_agent_daemonset(&rendered);
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
    check_agent_daemonset(&rendered);
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
    // The port the DaemonSet declares and probes.
    assert_eq!(effective["metrics"]["listen"], "0.0.0.0:9479");
}
