//! The mutation of one Deployment: pure, no I/O, unit-tested without HTTP.

use crate::policy::Policy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use std::collections::BTreeMap;

/// `skiff.dev/inject: "false"` on a Deployment leaves it alone.
pub const INJECT: &str = "skiff.dev/inject";
/// Pod-template annotation: ship this pod's logs.
pub const LOGS: &str = "skiff.dev/logs";
/// Pod-template annotation: the service name of the logs.
pub const SERVICE: &str = "skiff.dev/service";
/// Pod-template annotation: how the agent parses the lines.
pub const LOG_FORMAT: &str = "skiff.dev/log-format";

/// Answers one AdmissionReview request: a JSON Patch for Deployments the policy covers, an
/// unchanged admission for everything else, a denial naming the problem for an object that
/// claims to be a Deployment but does not decode as one.
pub fn review(request: &AdmissionRequest<DynamicObject>, policy: &Policy) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let is_deployment = request.kind.group == "apps" && request.kind.kind == "Deployment";
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let Some(object) = request.object.as_ref() else {
        return response;
    };
    if !is_deployment || policy.excludes(namespace) {
        return response;
    }
    let deployment: Deployment = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(deployment) => deployment,
        Err(err) => return response.deny(format!("not a valid apps/v1 Deployment: {err}")),
    };
    if annotation(&deployment, INJECT) == Some("false") {
        return response;
    }
    // Both sides of the diff go through the typed Deployment, so the patch holds only what
    // `mutate` changed, never artefacts of (de)serialisation.
    let before = serde_json::to_value(&deployment).expect("a Deployment serialises");
    let after = serde_json::to_value(mutate(deployment, policy)).expect("a Deployment serialises");
    let patch = json_patch::diff(&before, &after);
    if patch.0.is_empty() {
        return response;
    }
    match response.clone().with_patch(patch) {
        Ok(patched) => patched,
        Err(err) => response.deny(format!("cannot encode the patch: {err}")),
    }
}

/// The Deployment as the policy wants it. Values the user wrote are kept.
pub fn mutate(mut deployment: Deployment, policy: &Policy) -> Deployment {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let template = &mut deployment.spec.template;
    if let Some(pod) = template.spec.as_mut() {
        let init = pod.init_containers.iter_mut().flatten();
        for container in pod.containers.iter_mut().chain(init) {
            fill_resources(container, policy);
        }
    }
    let metadata = &mut template.metadata.get_or_insert_with(Default::default);
    let service = metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get("app.kubernetes.io/name"))
        .cloned()
        .unwrap_or(name);
    let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    let logs = &policy.defaults.logs;
    annotations.entry(LOGS.into()).or_insert_with(|| logs.enabled.to_string());
    annotations.entry(SERVICE.into()).or_insert(service);
    annotations.entry(LOG_FORMAT.into()).or_insert_with(|| logs.format.clone());
    deployment
}

/// Fills the requests and limits the container lacks. A default limit is only added where
/// the request is the policy's own too, so it can never fall below a request the user chose.
fn fill_resources(container: &mut Container, policy: &Policy) {
    let defaults = &policy.defaults.resources;
    let resources = container.resources.get_or_insert_with(ResourceRequirements::default);
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    let mut defaulted_requests = Vec::new();
    for (name, quantity) in &defaults.requests {
        if !requests.contains_key(name) {
            requests.insert(name.clone(), Quantity(quantity.clone()));
            defaulted_requests.push(name.as_str());
        }
    }
    let user_requests: Vec<String> = requests
        .keys()
        .filter(|name| !defaulted_requests.contains(&name.as_str()))
        .cloned()
        .collect();
    let limits = resources.limits.get_or_insert_with(BTreeMap::new);
    for (name, quantity) in &defaults.limits {
        if !limits.contains_key(name) && !user_requests.contains(name) {
            limits.insert(name.clone(), Quantity(quantity.clone()));
        }
    }
}

fn annotation<'a>(deployment: &'a Deployment, key: &str) -> Option<&'a str> {
    deployment
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::json;

    fn deployment(extra_container: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "namespace": "shop" },
            "spec": {
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" }, "annotations": { "team": "shop" } },
                    "spec": { "containers": [ { "name": "app", "image": "nginx" }, extra_container ] }
                }
            }
        })
    }

    fn request(object: serde_json::Value, namespace: &str) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0c8b1c2e-1111-2222-3333-444455556666",
                "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
                "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
                "requestKind": { "group": "apps", "version": "v1", "kind": "Deployment" },
                "requestResource": { "group": "apps", "version": "v1", "resource": "deployments" },
                "name": "web", "namespace": namespace, "operation": "CREATE",
                "userInfo": { "username": "admin" },
                "object": object, "oldObject": null, "dryRun": false, "options": null
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn mutated(object: serde_json::Value) -> Deployment {
        mutate(serde_json::from_value(object).unwrap(), &Policy::default())
    }

    #[test]
    fn fills_missing_resources_and_keeps_the_users() {
        let d = mutated(deployment(json!({
            "name": "side", "image": "envoy",
            "resources": { "requests": { "memory": "512Mi" } }
        })));
        let pod = d.spec.template.spec.unwrap();
        let app = pod.containers[0].resources.clone().unwrap();
        assert_eq!(app.requests.unwrap()["cpu"].0, "100m");
        assert_eq!(app.limits.unwrap()["memory"].0, "256Mi");
        let side = pod.containers[1].resources.clone().unwrap();
        assert_eq!(side.requests.as_ref().unwrap()["memory"].0, "512Mi");
        assert_eq!(side.requests.unwrap()["cpu"].0, "100m");
        assert!(
            side.limits.unwrap().get("memory").is_none(),
            "a default limit below the user's request would break the pod"
        );
    }

    #[test]
    fn adds_log_annotations_to_the_pod_template() {
        let d = mutated(deployment(json!({ "name": "b", "image": "busybox" })));
        let annotations = d.spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[LOGS], "true");
        assert_eq!(annotations[SERVICE], "web");
        assert_eq!(annotations[LOG_FORMAT], "cri");
    }

    #[test]
    fn patch_escapes_slashes_and_second_admission_is_empty() {
        let object = deployment(json!({ "name": "b", "image": "busybox" }));
        let response = review(&request(object.clone(), "shop"), &Policy::default());
        let patch: json_patch::Patch =
            serde_json::from_slice(response.patch.as_ref().expect("a patch")).unwrap();
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains("skiff.dev~1logs"), "{text}");
        let mut patched = object;
        json_patch::patch(&mut patched, &patch).unwrap();
        let again = review(&request(patched, "shop"), &Policy::default());
        assert!(again.patch.is_none(), "mutation must be idempotent");
    }

    #[test]
    fn excluded_namespace_and_opt_out_pass_untouched() {
        let object = deployment(json!({ "name": "b", "image": "busybox" }));
        assert!(review(&request(object.clone(), "kube-system"), &Policy::default()).patch.is_none());
        let mut opted_out = object;
        opted_out["metadata"]["annotations"] = json!({ INJECT: "false" });
        assert!(review(&request(opted_out, "shop"), &Policy::default()).patch.is_none());
    }

    #[test]
    fn broken_deployment_is_denied_with_a_reason() {
        let mut object = deployment(json!({ "name": "b", "image": "busybox" }));
        object["spec"]["template"]["spec"]["containers"] = json!("not a list");
        let response = review(&request(object, "shop"), &Policy::default());
        assert!(!response.allowed);
        assert!(response.result.message.contains("not a valid apps/v1 Deployment"));
    }
}
