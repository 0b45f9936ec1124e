//! The HorizontalPodAutoscaler a Deployment should have: pure, shared by the reconciler that
//! applies it and by the admission review that previews it on dry runs.

use crate::policy::Effective;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricSource, CrossVersionObjectReference, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource,
    ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// The field manager of server-side apply, and the `managed-by` label of skiff's HPAs.
pub const MANAGER: &str = "skiff-webhook";
/// Deployment annotation: take over an existing HPA of the same name.
pub const ADOPT: &str = "skiff.dev/adopt-hpa";
/// The `Pods` metric of `skiff.dev/target-rps`.
pub const RPS_METRIC: &str = "http_requests_per_second";
/// Pod-template annotation naming the application container among sidecars.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The HPA for `deployment` under `effective`, owned by the Deployment when it has a UID (a
/// dry-run CREATE has none yet).
pub fn desired(deployment: &Deployment, effective: &Effective) -> HorizontalPodAutoscaler {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let a = &effective.autoscaling;
    let target = |utilization| MetricTarget {
        type_: "Utilization".into(),
        average_utilization: Some(utilization),
        ..MetricTarget::default()
    };
    let cpu = match application_container(deployment) {
        Some(container) => MetricSpec {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricSource {
                container,
                name: "cpu".into(),
                target: target(a.target_cpu),
            }),
            ..MetricSpec::default()
        },
        None => MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: target(a.target_cpu),
            }),
            ..MetricSpec::default()
        },
    };
    let mut metrics = vec![cpu];
    if let Some(rps) = &a.target_rps {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: RPS_METRIC.into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(rps.text.clone())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                MANAGER.to_string(),
            )])),
            owner_references: deployment
                .controller_owner_ref(&())
                .map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: a.behavior.clone(),
        },
        status: None,
    }
}

/// The container the CPU target is about when the pod has sidecars (more than one container,
/// or init containers that keep running): a log or mesh sidecar would dilute the utilisation.
fn application_container(deployment: &Deployment) -> Option<String> {
    let template = &deployment.spec.template;
    let pod = template.spec.as_ref()?;
    let native_sidecars = pod
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.restart_policy.as_deref() == Some("Always"));
    if pod.containers.len() < 2 && !native_sidecars {
        return None;
    }
    let named = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(DEFAULT_CONTAINER))
        .filter(|name| pod.containers.iter().any(|c| &c.name == *name));
    named
        .cloned()
        .or_else(|| pod.containers.first().map(|c| c.name.clone()))
}

/// Whether `hpa` is controlled by the Deployment with this UID.
pub fn owned_by(hpa: &HorizontalPodAutoscaler, deployment_uid: Option<&str>) -> bool {
    let Some(uid) = deployment_uid else {
        return false;
    };
    hpa.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "Deployment" && o.uid == uid)
}

/// Whether two HPAs ask for the same scaling (what the reconciler would change).
pub fn same_spec(a: &HorizontalPodAutoscaler, b: &HorizontalPodAutoscaler) -> bool {
    a.spec == b.spec
}

/// One line about an HPA, for warnings and events: `2..10 replicas, cpu 50% (container app)`.
pub fn describe(hpa: &HorizontalPodAutoscaler) -> String {
    let spec = &hpa.spec;
    let mut text = format!(
        "{}..{} replicas",
        spec.min_replicas.unwrap_or(1),
        spec.max_replicas
    );
    for metric in spec.metrics.iter().flatten() {
        if let Some(r) = &metric.resource {
            text += &format!(
                ", {} {}%",
                r.name,
                r.target.average_utilization.unwrap_or(0)
            );
        }
        if let Some(r) = &metric.container_resource {
            text += &format!(
                ", {} {}% (container {})",
                r.name,
                r.target.average_utilization.unwrap_or(0),
                r.container
            );
        }
        if let Some(p) = &metric.pods {
            let value = p
                .target
                .average_value
                .as_ref()
                .map_or("?", |q| q.0.as_str());
            text += &format!(", {} {value}/pod", p.metric.name);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, TARGET_RPS};
    use serde_json::json;

    fn deployment(containers: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "shop", "uid": "1234" },
            "spec": {
                "selector": { "matchLabels": { "app": "web" } },
                "template": { "spec": { "containers": containers } }
            }
        }))
        .unwrap()
    }

    fn effective(annotations: &[(&str, &str)]) -> Effective {
        let annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Policy::default().resolve("shop", &annotations).0
    }

    #[test]
    fn one_container_gets_a_resource_metric_and_an_owner() {
        let d = deployment(json!([{ "name": "app" }]));
        let hpa = desired(&d, &effective(&[]));
        let spec = &hpa.spec;
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 10));
        let metrics = spec.metrics.as_ref().unwrap();
        assert_eq!(metrics.len(), 1);
        assert_eq!(
            metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(50)
        );
        assert!(owned_by(&hpa, Some("1234")));
        assert!(!owned_by(&hpa, Some("other")));
        assert_eq!(
            spec.behavior
                .as_ref()
                .unwrap()
                .scale_down
                .as_ref()
                .unwrap()
                .stabilization_window_seconds,
            Some(300)
        );
        assert_eq!(describe(&hpa), "2..10 replicas, cpu 50%");
    }

    #[test]
    fn sidecars_get_a_container_resource_metric_and_rps_a_pods_metric() {
        let d = deployment(json!([{ "name": "app" }, { "name": "envoy" }]));
        let hpa = desired(&d, &effective(&[(TARGET_RPS, "100")]));
        let metrics = &hpa.spec.metrics.clone().unwrap();
        assert_eq!(
            metrics[0].container_resource.as_ref().unwrap().container,
            "app"
        );
        let pods = metrics[1].pods.as_ref().unwrap();
        assert_eq!(pods.metric.name, RPS_METRIC);
        assert_eq!(pods.target.average_value, Some(Quantity("100".into())));
        assert_eq!(
            describe(&hpa),
            "2..10 replicas, cpu 50% (container app), http_requests_per_second 100/pod"
        );
    }

    #[test]
    fn native_sidecars_and_the_default_container_annotation_count() {
        let mut d = deployment(json!([{ "name": "app" }]));
        let pod = d.spec.template.spec.as_mut().unwrap();
        pod.init_containers = Some(vec![
            serde_json::from_value(json!({ "name": "logs", "restartPolicy": "Always" })).unwrap(),
        ]);
        assert_eq!(application_container(&d).as_deref(), Some("app"));

        let mut d = deployment(json!([{ "name": "istio-proxy" }, { "name": "api" }]));
        d.spec.template.metadata = Some(ObjectMeta {
            annotations: Some(BTreeMap::from([(DEFAULT_CONTAINER.into(), "api".into())])),
            ..ObjectMeta::default()
        });
        assert_eq!(application_container(&d).as_deref(), Some("api"));
    }
}
