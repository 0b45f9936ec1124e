//! skiff-webhook end to end through the real kube-apiserver: each test starts the webhook
//! in-process on its own port with its own CA, registers a MutatingWebhookConfiguration
//! (`clientConfig.url` on loopback) scoped to its own namespace, and checks what the API server
//! stores. Tests run in parallel against one API server, so nothing is shared between them.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{LimitRange, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skiff_tests::pki::Ca;
use skiff_tests::{env, eventually, kube_client, require_peer, unique, write_atomically};
use skiff_webhook::policy::Policy;
use skiff_webhook::server::{self, Running};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long anything asynchronous (the API server noticing a webhook configuration, the
/// reconciler, a reload) may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(30);
const POLICY_HASH: &str = "skiff.dev/policy-hash";

/// One test's world: a namespace, a webhook, its configuration.
struct Harness {
    client: Client,
    namespace: String,
    ca: Ca,
    dir: PathBuf,
    webhook: Option<Running>,
    port: u16,
}

impl Harness {
    /// A fresh namespace and a running webhook registered for it with `failure_policy`.
    async fn new(kubeconfig: &str, test: &str, policy: &str, failure_policy: &str) -> Self {
        let client = kube_client(kubeconfig).await;
        let namespace = unique(&format!("wh-{test}"));
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the namespace");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&namespace);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.yml"), policy).unwrap();
        let ca = Ca::new();
        ca.issue(&["127.0.0.1"], &dir.join("tls.crt"), &dir.join("tls.key"));
        let mut harness = Self {
            client,
            namespace,
            ca,
            dir,
            webhook: None,
            port: 0,
        };
        harness.start_webhook().await;
        harness.register(failure_policy).await;
        harness.wait_until_active().await;
        harness
    }

    /// Starts the webhook in-process, on a free port the first time and on the same port after.
    async fn start_webhook(&mut self) {
        let policy_path = self.dir.join("policy.yml");
        let running = server::start(server::Options {
            listen: format!("127.0.0.1:{}", self.port).parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert: self.dir.join("tls.crt"),
            tls_key: self.dir.join("tls.key"),
            policy: Policy::load(&policy_path).expect("the test's policy is valid"),
            policy_path: Some(policy_path),
            client: Some(self.client.clone()),
            namespace: Some(self.namespace.clone()),
            limits: server::ServerLimits::default(),
        })
        .await
        .expect("starting the webhook");
        self.port = running.addr.port();
        self.webhook = Some(running);
    }

    /// Registers the webhook for this namespace only (the shipped registration, with a loopback URL).
    async fn register(&self, failure_policy: &str) {
        skiff_tests::webhook::register(
            &self.client,
            &self.namespace,
            &format!("https://127.0.0.1:{}/mutate", self.port),
            &self.ca.pem,
            failure_policy,
        )
        .await;
    }

    /// The API server picks webhook configurations up asynchronously: dry-run creates until
    /// one comes back mutated.
    async fn wait_until_active(&self) {
        eventually("the API server to call the webhook", PATIENCE, || async {
            let probe = self
                .deployments()
                .create(
                    &PostParams {
                        dry_run: true,
                        ..PostParams::default()
                    },
                    &deployment("probe", &[], None),
                )
                .await
                .ok()?;
            probe.annotations().contains_key(POLICY_HASH).then_some(())
        })
        .await;
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn hpas(&self) -> Api<HorizontalPodAutoscaler> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create(&self, deployment: &Deployment) -> Deployment {
        self.deployments()
            .create(&PostParams::default(), deployment)
            .await
            .expect("creating the Deployment")
    }

    /// The HPA once `ready` holds for it.
    async fn hpa_where(
        &self,
        name: &str,
        what: &str,
        ready: impl Fn(&HorizontalPodAutoscaler) -> bool,
    ) -> HorizontalPodAutoscaler {
        eventually(what, PATIENCE, || async {
            self.hpas()
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .filter(|h| ready(h))
        })
        .await
    }

    /// The webhook's /metrics text (plain HTTP, on its own port).
    async fn metrics(&self) -> String {
        let running = self.webhook.as_ref().expect("the webhook is running");
        reqwest::get(format!("http://{}/metrics", running.metrics_addr))
            .await
            .expect("scraping /metrics")
            .text()
            .await
            .unwrap()
    }

    /// Removes what is cluster-wide and stops the webhook.
    async fn finish(mut self) {
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        if let Some(webhook) = self.webhook.take() {
            webhook.stop().await.expect("the webhook stops cleanly");
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

/// A Deployment as a user writes it: one container, no resources.
fn deployment(name: &str, annotations: &[(&str, &str)], replicas: Option<i32>) -> Deployment {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name, "app.kubernetes.io/name": format!("{name}-svc") } },
                "spec": { "containers": [{ "name": "app", "image": "nginx:1.27" }] }
            }
        }
    }))
    .unwrap()
}

fn quantities(
    map: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
) -> Vec<(String, String)> {
    map.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

const DEFAULT_POLICY: &str = include_str!("../../webhook/src/default-policy.yml");

#[tokio::test]
async fn stored_deployment_is_mutated_and_its_hpa_follows_the_annotations() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let h = Harness::new(&kubeconfig, "store", DEFAULT_POLICY, "Fail").await;

    let stored = h.create(&deployment("web", &[], None)).await;
    let template = &stored.spec.template;
    let pod = template.spec.as_ref().unwrap();
    let resources = pod.containers[0].resources.as_ref().unwrap();
    assert_eq!(
        quantities(resources.requests.as_ref()),
        [
            ("cpu".into(), "100m".into()),
            ("memory".into(), "128Mi".into())
        ]
    );
    assert_eq!(
        quantities(resources.limits.as_ref()),
        [("memory".into(), "256Mi".into())]
    );
    let spread = pod
        .topology_spread_constraints
        .as_ref()
        .expect("a spread constraint");
    assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
    assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
    let annotations = template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(annotations["skiff.dev/logs"], "true");
    assert_eq!(annotations["skiff.dev/service"], "web-svc");
    assert_eq!(annotations["skiff.dev/environment"], h.namespace);
    assert_eq!(annotations["skiff.dev/log-format"], "cri");
    assert!(stored.annotations().contains_key(POLICY_HASH));

    // The reconciler creates the HPA, owned by the Deployment.
    let hpa = h.hpa_where("web", "the HPA", |_| true).await;
    assert_eq!(
        (hpa.spec.min_replicas, hpa.spec.max_replicas),
        (Some(2), 10)
    );
    let metrics = hpa.spec.metrics.as_ref().unwrap();
    assert_eq!(
        metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .target
            .average_utilization,
        Some(50)
    );
    let owner = &hpa.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (stored.uid().unwrap().as_str(), Some(true))
    );

    // New annotations change it.
    let deployments = h.deployments();
    let annotate = |pairs: Value| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "annotations": pairs } })),
                )
                .await
                .expect("annotating the Deployment")
        }
    };
    annotate(json!({ "skiff.dev/max-replicas": "5", "skiff.dev/target-rps": "100" })).await;
    let hpa = h
        .hpa_where("web", "the HPA to follow the annotations", |h| {
            h.spec.max_replicas == 5
        })
        .await;
    let pods = hpa.spec.metrics.as_ref().unwrap()[1]
        .pods
        .as_ref()
        .expect("a Pods metric");
    assert_eq!(pods.metric.name, "http_requests_per_second");

    // Opting out deletes it.
    annotate(json!({ "skiff.dev/autoscale": "false" })).await;
    eventually("the HPA to be deleted", PATIENCE, || async {
        h.hpas().get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;

    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"skiff_webhook_reviews_total{operation="CREATE",result="patched"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"skiff_webhook_reconciles_total{result="success"}"#),
        "{metrics}"
    );
    h.finish().await;
}

#[tokio::test]
async fn opted_out_deployment_is_stored_untouched_without_calling_the_webhook() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let h = Harness::new(&kubeconfig, "optout", DEFAULT_POLICY, "Fail").await;
    let reviews = |text: String| {
        text.lines()
            .filter(|l| l.starts_with("skiff_webhook_reviews_total"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let before = reviews(h.metrics().await);
    let stored = h
        .create(&deployment(
            "legacy",
            &[("skiff.dev/inject", "false")],
            None,
        ))
        .await;
    assert_eq!(
        reviews(h.metrics().await),
        before,
        "matchConditions spare the call"
    );
    assert!(!stored.annotations().contains_key(POLICY_HASH));
    let pod = stored.spec.template.spec.unwrap();
    assert_eq!(
        pod.containers[0].resources,
        Some(Default::default()),
        "no requests or limits"
    );
    assert!(pod.topology_spread_constraints.is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.hpas().get_opt("legacy").await.unwrap().is_none(),
        "no HPA for an opted-out Deployment"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_dry_run_shows_the_mutation_and_creates_nothing() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let h = Harness::new(&kubeconfig, "dryrun", DEFAULT_POLICY, "Fail").await;
    let preview = h
        .deployments()
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &deployment("preview", &[], Some(3)),
        )
        .await
        .expect("a dry-run create");
    let resources = preview.spec.template.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(resources.requests.unwrap()["cpu"].0, "100m");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.deployments().get_opt("preview").await.unwrap().is_none());
    assert!(
        h.hpas().get_opt("preview").await.unwrap().is_none(),
        "a dry run has no side effects"
    );
    h.finish().await;
}

#[tokio::test]
async fn an_apply_with_other_replicas_keeps_the_live_ones_while_the_hpa_is_managed() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let h = Harness::new(&kubeconfig, "replicas", DEFAULT_POLICY, "Fail").await;
    let deployments = h.deployments();
    let apply = |d: Deployment| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "api",
                    &PatchParams::apply("kubectl").force(),
                    &Patch::Apply(&d),
                )
                .await
                .expect("applying the manifest")
        }
    };
    apply(deployment("api", &[], Some(1))).await;
    h.hpa_where("api", "the HPA", |_| true).await;
    // The autoscaler scales through the scale subresource (no controller-manager here).
    h.deployments()
        .patch_scale(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 4 } })),
        )
        .await
        .expect("scaling");
    let stored = apply(deployment("api", &[], Some(1))).await;
    assert_eq!(
        stored.spec.replicas,
        Some(4),
        "the HPA's decision survives kubectl apply"
    );
    // Without autoscaling the manifest decides again.
    let stored = apply(deployment(
        "api",
        &[("skiff.dev/autoscale", "false")],
        Some(1),
    ))
    .await;
    assert_eq!(stored.spec.replicas, Some(1));
    h.finish().await;
}

#[tokio::test]
async fn with_failure_policy_ignore_deployments_are_admitted_while_the_webhook_is_down() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let mut h = Harness::new(&kubeconfig, "down", DEFAULT_POLICY, "Ignore").await;
    h.webhook
        .take()
        .unwrap()
        .stop()
        .await
        .expect("the webhook stops cleanly");
    let stored = h.create(&deployment("orphan", &[], None)).await;
    assert!(
        !stored.annotations().contains_key(POLICY_HASH),
        "admitted unmutated"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let mut h = Harness::new(&kubeconfig, "certs", DEFAULT_POLICY, "Fail").await;
    let url = format!("https://127.0.0.1:{}/healthz", h.port);
    let renewed = Ca::new();
    assert!(
        renewed.client().get(&url).send().await.is_err(),
        "not yet trusted"
    );
    renewed.issue(
        &["127.0.0.1"],
        &h.dir.join("tls.crt"),
        &h.dir.join("tls.key"),
    );
    let client = renewed.client();
    eventually("the new certificate to be served", PATIENCE, || async {
        client
            .get(&url)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    // The API server, given the new CA, reaches the same process.
    h.ca = renewed;
    h.register("Fail").await;
    h.wait_until_active().await;
    let stored = h.create(&deployment("renewed", &[], None)).await;
    assert!(stored.annotations().contains_key(POLICY_HASH));
    h.finish().await;
}

#[tokio::test]
async fn limit_ranges_and_policy_reloads_shape_what_is_injected() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let h = Harness::new(&kubeconfig, "policy", DEFAULT_POLICY, "Fail").await;
    let limit_range: LimitRange = serde_json::from_value(json!({
        "metadata": { "name": "small-pods" },
        "spec": { "limits": [{ "type": "Container", "max": { "memory": "200Mi" } }] }
    }))
    .unwrap();
    Api::<LimitRange>::namespaced(h.client.clone(), &h.namespace)
        .create(&PostParams::default(), &limit_range)
        .await
        .expect("creating the LimitRange");
    let preview = |name: &'static str| {
        let h = &h;
        async move {
            let d = h
                .deployments()
                .create(
                    &PostParams {
                        dry_run: true,
                        ..PostParams::default()
                    },
                    &deployment(name, &[], None),
                )
                .await
                .ok()?;
            d.spec.template.spec?.containers[0].resources.clone()
        }
    };
    eventually(
        "the LimitRange's max to cap the injected limit",
        PATIENCE,
        || async {
            let resources = preview("capped").await?;
            (resources.limits?["memory"].0 == "200Mi").then_some(())
        },
    )
    .await;

    // A Deployment whose HPA must follow the policy's next maxReplicas.
    h.create(&deployment("steady", &[], None)).await;
    h.hpa_where("steady", "the HPA", |h| h.spec.max_replicas == 10)
        .await;
    let next = DEFAULT_POLICY
        .replace("cpu: 100m", "cpu: 250m")
        .replace("maxReplicas: 10", "maxReplicas: 7");
    write_atomically(&h.dir.join("policy.yml"), &next);
    eventually("the reloaded policy's request", PATIENCE, || async {
        let resources = preview("reloaded").await?;
        (resources.requests?["cpu"].0 == "250m").then_some(())
    })
    .await;
    h.hpa_where("steady", "the reload to re-reconcile the HPA", |h| {
        h.spec.max_replicas == 7
    })
    .await;

    // A broken policy is reported and ignored: the last good one stays.
    write_atomically(&h.dir.join("policy.yml"), "defaults: [not, a, policy]\n");
    eventually("the broken policy to be reported", PATIENCE, || async {
        h.metrics()
            .await
            .contains("skiff_webhook_policy_valid 0")
            .then_some(())
    })
    .await;
    let resources = preview("last-good").await.expect("still admitting");
    assert_eq!(resources.requests.unwrap()["cpu"].0, "250m");
    assert!(
        h.metrics()
            .await
            .contains(r#"skiff_webhook_policy_reloads_total{result="parse"} 1"#)
    );
    h.finish().await;
}

#[tokio::test]
async fn an_hpa_skiff_does_not_own_is_left_alone_until_adopted() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let h = Harness::new(&kubeconfig, "foreign", DEFAULT_POLICY, "Fail").await;
    let foreign: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": { "name": "shop" },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "shop" },
            "minReplicas": 3, "maxReplicas": 4
        }
    }))
    .unwrap();
    h.hpas()
        .create(&PostParams::default(), &foreign)
        .await
        .expect("creating someone else's HPA");
    let stored = h.create(&deployment("shop", &[], None)).await;

    // Reported as an Event on the Deployment, and not touched.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(h.client.clone(), &h.namespace);
    eventually(
        "an Event about the HPA skiff does not own",
        PATIENCE,
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("HPANotOwned"))
                .then_some(())
        },
    )
    .await;
    let hpa = h.hpas().get("shop").await.unwrap();
    assert_eq!(hpa.spec.max_replicas, 4);
    assert!(hpa.metadata.owner_references.is_none());

    // Adopted on request.
    h.deployments()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { "skiff.dev/adopt-hpa": "true" } } }),
            ),
        )
        .await
        .expect("asking for adoption");
    let hpa = h
        .hpa_where("shop", "the adopted HPA", |h| h.spec.max_replicas == 10)
        .await;
    let owner = &hpa.metadata.owner_references.as_ref().expect("an owner")[0];
    assert_eq!(owner.uid, stored.uid().unwrap());
    h.finish().await;
}

#[tokio::test]
async fn a_vpa_installed_after_the_webhook_means_no_hpa() {
    let kubeconfig = require_peer!(env::KUBECONFIG, "kube-apiserver");
    // The webhook starts without the VPA API and must notice it being installed.
    remove_vpa_crd(&kubeconfig).await;
    let h = Harness::new(&kubeconfig, "vpa", DEFAULT_POLICY, "Fail").await;
    install_vpa_crd(&kubeconfig).await;
    let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "autoscaling.k8s.io",
        "v1",
        "VerticalPodAutoscaler",
    ));
    let vpas: Api<kube::api::DynamicObject> =
        Api::namespaced_with(h.client.clone(), &h.namespace, &resource);
    let vpa: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler",
        "metadata": { "name": "tuned" },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "tuned" },
            "updatePolicy": { "updateMode": "Recreate" }
        }
    }))
    .unwrap();
    vpas.create(&PostParams::default(), &vpa)
        .await
        .expect("creating the VPA");
    // Without an HPA, one replica is all the Deployment runs: no spread once the VPA is seen.
    eventually("the webhook to see the VPA", PATIENCE, || async {
        let preview = h
            .deployments()
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &deployment("tuned", &[], None),
            )
            .await
            .ok()?;
        preview
            .spec
            .template
            .spec?
            .topology_spread_constraints
            .is_none()
            .then_some(())
    })
    .await;
    let stored = h.create(&deployment("tuned", &[], None)).await;
    assert!(
        stored.annotations().contains_key(POLICY_HASH),
        "still mutated"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.hpas().get_opt("tuned").await.unwrap().is_none(),
        "no HPA beside a VPA"
    );
    h.finish().await;
}

const VPA_CRD: &str = "verticalpodautoscalers.autoscaling.k8s.io";

async fn crds(kubeconfig: &str) -> Api<CustomResourceDefinition> {
    Api::all(kube_client(kubeconfig).await)
}

/// Deletes the VPA CRD (left by an earlier run on the same API server) and waits until it is gone.
async fn remove_vpa_crd(kubeconfig: &str) {
    let crds = crds(kubeconfig).await;
    match crds.delete(VPA_CRD, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => panic!("deleting the VPA CRD: {err}"),
    }
    eventually("the VPA CRD to be deleted", PATIENCE, || async {
        crds.get_opt(VPA_CRD).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// A minimal VerticalPodAutoscaler CRD (the API only; no VPA controller runs).
async fn install_vpa_crd(kubeconfig: &str) {
    let crds = crds(kubeconfig).await;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {
            "name": VPA_CRD,
            // k8s.io groups are protected; the upstream VPA CRD carries the same approval.
            "annotations": { "api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/63797" }
        },
        "spec": {
            "group": "autoscaling.k8s.io", "scope": "Namespaced",
            "names": { "plural": "verticalpodautoscalers", "singular": "verticalpodautoscaler",
                       "kind": "VerticalPodAutoscaler", "shortNames": ["vpa"] },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
        }
    }))
    .unwrap();
    crds.patch(
        VPA_CRD,
        &PatchParams::apply("skiff-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("installing the VPA CRD");
    eventually("the VPA CRD to be established", PATIENCE, || async {
        let crd = crds.get(VPA_CRD).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}
