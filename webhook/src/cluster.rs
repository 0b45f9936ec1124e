//! What a review needs to know of the cluster — the namespace's LimitRanges, the Deployment's
//! HPA, a VerticalPodAutoscaler on the same Deployment — read from watch caches, so a review
//! never waits on the API server.

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::LimitRange;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The cluster as one review sees it.
pub trait Cluster: Send + Sync {
    /// The LimitRanges of `namespace`.
    fn limit_ranges(&self, namespace: &str) -> Vec<Arc<LimitRange>>;
    /// The HPA named like the Deployment, whoever owns it.
    fn hpa(&self, namespace: &str, name: &str) -> Option<Arc<HorizontalPodAutoscaler>>;
    /// The name of a VerticalPodAutoscaler that sets CPU or memory of this Deployment.
    fn vpa_for(&self, namespace: &str, deployment: &str) -> Option<String>;
}

/// No cluster access (`cargo xtask run`, the benchmarks): no LimitRanges, HPAs or VPAs.
pub struct Detached;

impl Cluster for Detached {
    fn limit_ranges(&self, _: &str) -> Vec<Arc<LimitRange>> {
        Vec::new()
    }
    fn hpa(&self, _: &str, _: &str) -> Option<Arc<HorizontalPodAutoscaler>> {
        None
    }
    fn vpa_for(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// The CustomResourceDefinition that brings the VPA API.
const VPA_CRD: &str = "verticalpodautoscalers.autoscaling.k8s.io";
/// Discovery attempts, half a second apart, once the VPA CRD is established.
const DISCOVERY_ATTEMPTS: u32 = 20;

/// Watch caches of LimitRanges, HPAs and, once the VPA API is installed, VPAs.
#[derive(Clone)]
pub struct Stores {
    limit_ranges: Store<LimitRange>,
    hpas: Store<HorizontalPodAutoscaler>,
    /// Set when the VPA API is found: at start, or whenever its CRD is installed later.
    vpas: Arc<OnceLock<Store<DynamicObject>>>,
}

impl Stores {
    /// Starts the watches (of `namespace`, or of all namespaces) in the background. Without
    /// the VPA API, its CRD is watched, so a VPA installed after the webhook is still heeded.
    pub async fn start(client: &Client, namespace: Option<&str>) -> Result<Self> {
        let vpas = Arc::new(OnceLock::new());
        match vpa_resource(client).await {
            Ok(resource) => {
                tracing::info!(
                    "VerticalPodAutoscaler API found: HPAs yield to VPAs on CPU and memory"
                );
                let _ = vpas.set(watch_vpas(client, namespace, resource));
            }
            Err(err) => {
                tracing::info!(%err, "no VerticalPodAutoscaler API yet; watching for its CRD");
                tokio::spawn(await_vpa_api(
                    client.clone(),
                    namespace.map(str::to_string),
                    Arc::clone(&vpas),
                ));
            }
        }
        Ok(Self {
            limit_ranges: watch(scoped(client, namespace), "limitranges"),
            hpas: watch(scoped(client, namespace), "horizontalpodautoscalers"),
            vpas,
        })
    }

    /// Waits until every cache holds its first full list.
    pub async fn ready(&self) -> Result<()> {
        self.limit_ranges
            .wait_until_ready()
            .await
            .context("the LimitRange watch stopped")?;
        self.hpas
            .wait_until_ready()
            .await
            .context("the HPA watch stopped")?;
        if let Some(vpas) = self.vpas.get() {
            vpas.wait_until_ready()
                .await
                .context("the VPA watch stopped")?;
        }
        Ok(())
    }
}

impl Cluster for Stores {
    fn limit_ranges(&self, namespace: &str) -> Vec<Arc<LimitRange>> {
        self.limit_ranges
            .state_filter(|lr| lr.namespace().as_deref() == Some(namespace))
    }

    fn hpa(&self, namespace: &str, name: &str) -> Option<Arc<HorizontalPodAutoscaler>> {
        self.hpas.get(&ObjectRef::new(name).within(namespace))
    }

    fn vpa_for(&self, namespace: &str, deployment: &str) -> Option<String> {
        self.vpas
            .get()?
            .state()
            .into_iter()
            .find(|vpa| {
                vpa.namespace().as_deref() == Some(namespace) && vpa_controls(&vpa.data, deployment)
            })
            .map(|vpa| vpa.name_any())
    }
}

/// The VPA API as the API server serves it, if it does.
async fn vpa_resource(client: &Client) -> Result<ApiResource, kube::Error> {
    let gvk = GroupVersionKind::gvk("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler");
    Ok(kube::discovery::pinned_kind(client, &gvk).await?.0)
}

/// Starts the VPA watch cache.
fn watch_vpas(
    client: &Client,
    namespace: Option<&str>,
    resource: ApiResource,
) -> Store<DynamicObject> {
    let api = match namespace {
        Some(namespace) => {
            Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        }
        None => Api::<DynamicObject>::all_with(client.clone(), &resource),
    };
    let writer = reflector::store::Writer::new(resource);
    let store = writer.as_reader();
    spawn_reflector(api, writer, "verticalpodautoscalers");
    store
}

/// Waits for the VPA CRD to be established, then starts the VPA watch.
async fn await_vpa_api(
    client: Client,
    namespace: Option<String>,
    vpas: Arc<OnceLock<Store<DynamicObject>>>,
) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={VPA_CRD}"));
    let stream = watcher(crds, config).default_backoff().applied_objects();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let crd = match event {
            Ok(crd) => crd,
            Err(err) => {
                tracing::warn!(%err, "watching for the VPA CRD; retrying with backoff");
                continue;
            }
        };
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if !established {
            continue;
        }
        // Discovery may lag the CRD's establishment by a moment, and no further CRD event
        // comes: retry for a while, then wait for the CRD to change (say, to serve v1).
        for attempt in 1..=DISCOVERY_ATTEMPTS {
            match vpa_resource(&client).await {
                Ok(resource) => {
                    tracing::info!(
                        "VerticalPodAutoscaler API installed: HPAs yield to VPAs on CPU and memory"
                    );
                    let _ = vpas.set(watch_vpas(&client, namespace.as_deref(), resource));
                    return;
                }
                Err(err) if attempt == DISCOVERY_ATTEMPTS => {
                    tracing::warn!(%err, "the VPA CRD is established but autoscaling.k8s.io/v1 is not served");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// An API over `namespace`, or over all namespaces.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

fn watch<K>(api: Api<K>, what: &'static str) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    spawn_reflector(api, writer, what);
    store
}

fn spawn_reflector<K>(api: Api<K>, writer: reflector::store::Writer<K>, what: &'static str)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(%err, what, "watch error; retrying with backoff");
            }
        }
    });
}

/// Whether a VPA (its `spec`, as JSON) targets this Deployment and sets CPU or memory: not in
/// `updateMode: "Off"` (recommendations only), and with at least one container policy that is
/// not `mode: Off` and controls `cpu` or `memory` (both, when unspecified).
pub fn vpa_controls(vpa: &Value, deployment: &str) -> bool {
    let spec = &vpa["spec"];
    let target = &spec["targetRef"];
    if target["kind"] != "Deployment" || target["name"] != deployment {
        return false;
    }
    if spec["updatePolicy"]["updateMode"] == "Off" {
        return false;
    }
    let policies = spec["resourcePolicy"]["containerPolicies"].as_array();
    let controls = |policy: &Value| {
        if policy["mode"] == "Off" {
            return false;
        }
        match policy["controlledResources"].as_array() {
            Some(resources) => resources.iter().any(|r| r == "cpu" || r == "memory"),
            None => true,
        }
    };
    match policies {
        Some(policies) if !policies.is_empty() => policies.iter().any(controls),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vpa(spec: Value) -> Value {
        json!({ "spec": spec })
    }

    #[test]
    fn a_vpa_in_auto_mode_on_the_deployment_controls_it() {
        let target = json!({ "kind": "Deployment", "name": "web", "apiVersion": "apps/v1" });
        assert!(vpa_controls(&vpa(json!({ "targetRef": target })), "web"));
        assert!(!vpa_controls(&vpa(json!({ "targetRef": target })), "api"));
        let stateful = json!({ "kind": "StatefulSet", "name": "web" });
        assert!(!vpa_controls(&vpa(json!({ "targetRef": stateful })), "web"));
    }

    #[test]
    fn recommendation_only_or_other_resources_do_not_conflict() {
        let target = json!({ "kind": "Deployment", "name": "web" });
        let off = vpa(json!({ "targetRef": target, "updatePolicy": { "updateMode": "Off" } }));
        assert!(!vpa_controls(&off, "web"));
        let storage = vpa(
            json!({ "targetRef": target, "resourcePolicy": { "containerPolicies": [
            { "containerName": "*", "controlledResources": ["ephemeral-storage"] } ] } }),
        );
        assert!(!vpa_controls(&storage, "web"));
        let disabled = vpa(
            json!({ "targetRef": target, "resourcePolicy": { "containerPolicies": [
            { "containerName": "*", "mode": "Off" } ] } }),
        );
        assert!(!vpa_controls(&disabled, "web"));
        let memory = vpa(
            json!({ "targetRef": target, "resourcePolicy": { "containerPolicies": [
            { "containerName": "app", "controlledResources": ["memory"] } ] } }),
        );
        assert!(vpa_controls(&memory, "web"));
    }
}
