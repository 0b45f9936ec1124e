//! The mutation of one Deployment: pure, no I/O (the cluster is read from caches through
//! [`Cluster`]), unit-tested without HTTP.

use crate::cluster::Cluster;
use crate::hpa;
use crate::policy::{Effective, LOG_FIELDS, LOG_FORMAT, LOG_TOPIC, LOGS, Policy};
use crate::resources::{self, Bounds, ContainerWarnings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `skiff.dev/inject: "false"` on a Deployment leaves it alone.
pub const INJECT: &str = "skiff.dev/inject";
/// Pod-template annotation: the service name of the logs.
pub const SERVICE: &str = "skiff.dev/service";
/// Pod-template annotation: production, staging, …
pub const ENVIRONMENT: &str = "skiff.dev/environment";
/// Deployment annotation: the hash of the effective policy applied. It marks the Deployments
/// whose HPA the reconciler manages; it is not on the pod template, so a policy change does
/// not restart pods.
pub const POLICY_HASH: &str = "skiff.dev/policy-hash";
/// The topology key of the spread constraint.
const HOSTNAME: &str = "kubernetes.io/hostname";

/// What [`mutate`] needs besides the Deployment.
pub struct Context<'a> {
    /// The request's namespace (a CREATE's object may not name it).
    pub namespace: &'a str,
    /// The live object on UPDATE.
    pub old: Option<&'a Deployment>,
    pub policy: &'a Policy,
    /// The namespace's LimitRange constraints.
    pub bounds: &'a Bounds,
    /// A VerticalPodAutoscaler sets this Deployment's CPU or memory, so it gets no HPA.
    pub vpa: Option<&'a str>,
}

/// The mutated Deployment, the policy it got, and what the user should hear about.
pub struct Mutation {
    pub deployment: Deployment,
    pub effective: Effective,
    pub warnings: Vec<String>,
}

/// How a review ended, the `result` label of the review metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Mutated: the response carries a patch.
    Patched,
    /// Covered by the policy, already as it wants it.
    Unchanged,
    /// Not ours: another kind, an excluded namespace, an opt-out, a DELETE.
    Skipped,
    /// Claims to be a Deployment but does not decode as one: denied.
    Invalid,
    /// More containers than the policy's `limits.maxContainers`: admitted as written.
    TooLarge,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
        }
    }
}

/// The answer to one review.
pub struct Reviewed {
    pub response: AdmissionResponse,
    pub outcome: Outcome,
    /// JSON Patch operations in the response.
    pub operations: usize,
}

/// Answers one AdmissionReview request: a JSON Patch for Deployments the policy covers, an
/// unchanged admission for everything else, a denial naming the problem for an object that
/// claims to be a Deployment but does not decode as one.
pub fn review(
    request: &AdmissionRequest<DynamicObject>,
    policy: &Policy,
    cluster: &dyn Cluster,
) -> Reviewed {
    let response = AdmissionResponse::from(request);
    let skipped = |response| Reviewed {
        response,
        outcome: Outcome::Skipped,
        operations: 0,
    };
    let is_deployment = request.kind.group == "apps" && request.kind.kind == "Deployment";
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let (Some(object), true, Operation::Create | Operation::Update) =
        (request.object.as_ref(), is_deployment, &request.operation)
    else {
        return skipped(response);
    };
    if request.kind.version != "v1" {
        let warning = format!(
            "skiff: apps/{} is not apps/v1; left alone",
            request.kind.version
        );
        return skipped(with_warnings(response, vec![warning]));
    }
    if policy.excludes(namespace) {
        return skipped(response);
    }
    // Counted before any copy of the object is made: the copies and the patch grow with it.
    // Admitted as written, as with `failurePolicy: Ignore` when the webhook cannot answer:
    // skiff makes workloads better, it does not guard the cluster (a validating policy does).
    let containers = container_count(object);
    let most = policy.limits.max_containers;
    if containers > most {
        let warning = format!(
            "skiff: {containers} containers, more than the {most} the policy's limits.maxContainers allows: admitted unchanged"
        );
        return Reviewed {
            response: with_warnings(response, vec![warning]),
            outcome: Outcome::TooLarge,
            operations: 0,
        };
    }
    let deployment = match typed(object) {
        Ok(deployment) => deployment,
        Err(err) => {
            return Reviewed {
                response: response.deny(format!("not a valid apps/v1 Deployment: {err}")),
                outcome: Outcome::Invalid,
                operations: 0,
            };
        }
    };
    if annotation(&deployment, INJECT) == Some("false") {
        return skipped(response);
    }
    let old = request.old_object.as_ref().and_then(|old| typed(old).ok());
    let name = deployment
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| request.name.clone());
    let limit_ranges = cluster.limit_ranges(namespace);
    let bounds = Bounds::new(limit_ranges.iter().map(AsRef::as_ref));
    let vpa = cluster.vpa_for(namespace, &name);
    // Both sides of the diff go through the typed Deployment, so the patch holds only what
    // `mutate` changed, never artefacts of (de)serialisation.
    let before = serde_json::to_value(&deployment).expect("a Deployment serialises");
    let context = Context {
        namespace,
        old: old.as_ref(),
        policy,
        bounds: &bounds,
        vpa: vpa.as_deref(),
    };
    let Mutation {
        deployment: mutated,
        effective,
        mut warnings,
    } = mutate(deployment, &context);
    if let Some(vpa) = &vpa {
        warnings.push(format!(
            "VerticalPodAutoscaler {vpa} sets CPU or memory of this Deployment: no HorizontalPodAutoscaler"
        ));
    }
    if request.dry_run {
        warnings.extend(preview_hpa(
            &mutated,
            namespace,
            &name,
            &effective,
            vpa.is_some(),
            cluster,
        ));
    }
    let after = serde_json::to_value(&mutated).expect("a Deployment serialises");
    let patch = json_patch::diff(&before, &after);
    let response = with_warnings(response, warnings);
    if patch.0.is_empty() {
        return Reviewed {
            response,
            outcome: Outcome::Unchanged,
            operations: 0,
        };
    }
    let operations = patch.0.len();
    match response.clone().with_patch(patch) {
        Ok(patched) => Reviewed {
            response: patched,
            outcome: Outcome::Patched,
            operations,
        },
        Err(err) => Reviewed {
            response: response.deny(format!("cannot encode the patch: {err}")),
            outcome: Outcome::Invalid,
            operations: 0,
        },
    }
}

/// The Deployment as the policy wants it. Values the user wrote are kept (unless the policy
/// says `enforce`); a second run over the result changes nothing.
pub fn mutate(mut deployment: Deployment, context: &Context) -> Mutation {
    // Taken out while the rest is changed and put back at the end, rather than copied: they
    // can be most of a large object.
    let mut annotations = deployment.metadata.annotations.take().unwrap_or_default();
    let (effective, mut warnings) = context.policy.resolve(context.namespace, &annotations);
    let autoscaled = effective.autoscaling.enabled && context.vpa.is_none();

    // No fight with the HPA: an update keeps the replicas it chose.
    if let Some(old) = context.old
        && autoscaled
        && annotation(old, POLICY_HASH).is_some()
        && let Some(live) = old.spec.replicas
        && deployment.spec.replicas != Some(live)
    {
        warnings.push(format!(
            "spec.replicas kept at the live {live}: the HorizontalPodAutoscaler manages it"
        ));
        deployment.spec.replicas = Some(live);
    }

    let may_run_two = deployment.spec.replicas.unwrap_or(1) >= 2
        || autoscaled && effective.autoscaling.max_replicas >= 2;
    let selector = deployment.spec.selector.clone();
    let template = &mut deployment.spec.template;
    if let Some(pod) = template.spec.as_mut() {
        let init = pod.init_containers.iter_mut().flatten();
        let mut container_warnings = ContainerWarnings::default();
        for container in pod.containers.iter_mut().chain(init) {
            resources::fill(
                container,
                &effective.resources,
                context.bounds,
                &mut container_warnings,
            );
        }
        warnings.extend(container_warnings.into_messages());
        let spread = pod.topology_spread_constraints.get_or_insert_with(Vec::new);
        if effective.spread && may_run_two && !spread.iter().any(|c| c.topology_key == HOSTNAME) {
            spread.push(TopologySpreadConstraint {
                max_skew: 1,
                topology_key: HOSTNAME.into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(selector),
                // Spread each rollout's pods on their own, not old and new together.
                match_label_keys: Some(vec!["pod-template-hash".into()]),
                ..TopologySpreadConstraint::default()
            });
        }
        if spread.is_empty() {
            pod.topology_spread_constraints = None;
        }
    }

    let metadata = template.metadata.get_or_insert_with(Default::default);
    let service = annotations
        .get(SERVICE)
        .or_else(|| metadata.labels.as_ref()?.get("app.kubernetes.io/name"))
        .or_else(|| {
            deployment
                .metadata
                .labels
                .as_ref()?
                .get("app.kubernetes.io/name")
        })
        .cloned()
        .or_else(|| deployment.metadata.name.clone())
        .unwrap_or_default();
    let pod_annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    // What the Deployment says explicitly beats the template; the template beats the policy.
    let mut set = |key: &str, value: String| {
        if annotations.contains_key(key) {
            pod_annotations.insert(key.to_string(), value);
        } else {
            pod_annotations.entry(key.to_string()).or_insert(value);
        }
    };
    let logs = &effective.logs;
    set(LOGS, logs.enabled.to_string());
    set(SERVICE, service);
    set(ENVIRONMENT, effective.environment.clone());
    set(LOG_FORMAT, logs.format.clone());
    if let Some(topic) = &logs.topic {
        set(LOG_TOPIC, topic.clone());
    }
    if !logs.fields.is_empty() {
        set(
            LOG_FIELDS,
            serde_json::to_string(&logs.fields).expect("strings serialise"),
        );
    }

    annotations.insert(POLICY_HASH.into(), effective.hash());
    deployment.metadata.annotations = Some(annotations);
    Mutation {
        deployment,
        effective,
        warnings,
    }
}

/// A dry run's preview of what the reconciler would do to the HPA.
fn preview_hpa(
    deployment: &Deployment,
    namespace: &str,
    name: &str,
    effective: &Effective,
    vpa: bool,
    cluster: &dyn Cluster,
) -> Option<String> {
    let existing = cluster.hpa(namespace, name);
    let uid = deployment.metadata.uid.as_deref();
    let ours = existing.as_ref().is_some_and(|h| hpa::owned_by(h, uid))
        || annotation(deployment, hpa::ADOPT) == Some("true");
    let wanted = effective.autoscaling.enabled && !vpa;
    let mut deployment = deployment.clone();
    deployment.metadata.namespace = Some(namespace.to_string());
    let desired = hpa::describe(&hpa::desired(&deployment, effective));
    let hpa = format!("HorizontalPodAutoscaler {namespace}/{name}");
    match (wanted, existing) {
        (true, None) => Some(format!("dry run: would create {hpa}: {desired}")),
        (true, Some(current)) if ours => {
            let current = hpa::describe(&current);
            Some(if current == desired {
                format!("dry run: {hpa} unchanged: {desired}")
            } else {
                format!("dry run: would change {hpa} from {current} to {desired}")
            })
        }
        (true, Some(_)) => Some(format!(
            "dry run: {hpa} exists and is not skiff's: left alone (skiff.dev/adopt-hpa: \"true\" adopts it)"
        )),
        (false, Some(_)) if ours => Some(format!("dry run: would delete {hpa}")),
        (false, _) => None,
    }
}

/// The Deployment an object holds, decoded from its parts where they are (a round trip through
/// one `Value` of the whole object would copy it first).
fn typed(object: &DynamicObject) -> Result<Deployment, serde_json::Error> {
    fn part<'a, T: Deserialize<'a>>(
        object: &'a DynamicObject,
        key: &str,
    ) -> Result<Option<T>, serde_json::Error> {
        match object.data.get(key) {
            Some(value) => Option::deserialize(value),
            None => Ok(None),
        }
    }
    Ok(Deployment {
        metadata: object.metadata.clone(),
        // A missing spec decodes as its default, as k8s-openapi decodes it.
        spec: part(object, "spec")?.unwrap_or_default(),
        status: part(object, "status")?,
    })
}

/// Containers and init containers of an object claiming to be a Deployment, as written (a
/// field of the wrong type counts none, and fails to decode later).
fn container_count(object: &DynamicObject) -> usize {
    let Some(pod) = object.data.pointer("/spec/template/spec") else {
        return 0;
    };
    ["containers", "initContainers"]
        .iter()
        .filter_map(|key| pod.get(key)?.as_array().map(Vec::len))
        .sum()
}

/// The API server keeps the first 256 characters of a warning (and 4 KiB of them all): a
/// longer one, say with a megabyte-long quantity in it, would only grow the response.
const WARNING_CHARS: usize = 256;

fn with_warnings(mut response: AdmissionResponse, mut warnings: Vec<String>) -> AdmissionResponse {
    for warning in &mut warnings {
        if let Some((cut, _)) = warning.char_indices().nth(WARNING_CHARS - 1) {
            warning.truncate(cut);
            warning.push('…');
        }
    }
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
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
mod tests;
