use super::*;
use crate::policy::{AUTOSCALE, MAX_REPLICAS, PROFILE, TARGET_RPS};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::LimitRange;
use kube::core::admission::AdmissionReview;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

/// A cluster as a test describes it.
#[derive(Default)]
struct Fake {
    limit_ranges: Vec<Arc<LimitRange>>,
    hpa: Option<Arc<HorizontalPodAutoscaler>>,
    vpa: Option<String>,
}

impl Cluster for Fake {
    fn limit_ranges(&self, _: &str) -> Vec<Arc<LimitRange>> {
        self.limit_ranges.clone()
    }
    fn hpa(&self, _: &str, _: &str) -> Option<Arc<HorizontalPodAutoscaler>> {
        self.hpa.clone()
    }
    fn vpa_for(&self, _: &str, _: &str) -> Option<String> {
        self.vpa.clone()
    }
}

fn limit_range(item: Value) -> Arc<LimitRange> {
    Arc::new(serde_json::from_value(json!({ "spec": { "limits": [item] } })).unwrap())
}

fn deployment(extra_container: Value) -> Value {
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

fn plain() -> Value {
    deployment(json!({ "name": "b", "image": "busybox" }))
}

fn request_with(
    object: Value,
    old: Option<Value>,
    namespace: &str,
    dry_run: bool,
) -> AdmissionRequest<DynamicObject> {
    let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0c8b1c2e-1111-2222-3333-444455556666",
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "requestKind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "requestResource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "name": "web", "namespace": namespace, "operation": operation,
            "userInfo": { "username": "admin" },
            "object": object, "oldObject": old, "dryRun": dry_run, "options": null
        }
    }))
    .unwrap();
    review.try_into().unwrap()
}

fn request(object: Value, namespace: &str) -> AdmissionRequest<DynamicObject> {
    request_with(object, None, namespace, false)
}

/// The object after the review's patch.
fn patched(object: &Value, response: &AdmissionResponse) -> Value {
    let mut object = object.clone();
    if let Some(patch) = &response.patch {
        let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

fn mutated_in(object: Value, cluster: &Fake) -> (Deployment, Vec<String>) {
    let bounds = Bounds::new(cluster.limit_ranges.iter().map(AsRef::as_ref));
    let policy = Policy::default();
    let context = Context {
        namespace: "shop",
        old: None,
        policy: &policy,
        bounds: &bounds,
        vpa: None,
    };
    let m = mutate(serde_json::from_value(object).unwrap(), &context);
    (m.deployment, m.warnings)
}

fn mutated(object: Value) -> Deployment {
    mutated_in(object, &Fake::default()).0
}

fn resources(
    d: &Deployment,
    container: usize,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let r = d.spec.template.spec.as_ref().unwrap().containers[container]
        .resources
        .clone()
        .unwrap_or_default();
    let plain =
        |m: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        };
    (plain(r.requests), plain(r.limits))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn fills_missing_resources_and_keeps_the_users() {
    let d = mutated(deployment(json!({
        "name": "side", "image": "envoy",
        "resources": { "requests": { "memory": "512Mi" } }
    })));
    assert_eq!(
        resources(&d, 0),
        (
            map(&[("cpu", "100m"), ("memory", "128Mi")]),
            map(&[("memory", "256Mi")])
        )
    );
    // The default limit would fall below the user's request: it is raised to the request.
    assert_eq!(
        resources(&d, 1),
        (
            map(&[("cpu", "100m"), ("memory", "512Mi")]),
            map(&[("memory", "512Mi")])
        )
    );
}

#[test]
fn injected_limits_keep_within_the_ratio() {
    let d = mutated(deployment(json!({
        "name": "side", "image": "envoy",
        "resources": { "requests": { "memory": "100Mi" } }
    })));
    assert_eq!(
        resources(&d, 1).1,
        map(&[("memory", "200Mi")]),
        "256Mi would exceed 2 × 100Mi"
    );
    // A limit alone: the injected request is raised so that limit / request stays ≤ 2.
    let d = mutated(deployment(json!({
        "name": "side", "image": "envoy", "resources": { "limits": { "memory": "1Gi" } }
    })));
    assert_eq!(resources(&d, 1).0["memory"], "512Mi");
}

#[test]
fn init_containers_are_filled_too() {
    let mut object = plain();
    object["spec"]["template"]["spec"]["initContainers"] =
        json!([{ "name": "migrate", "image": "flyway" }]);
    let d = mutated(object);
    let init = &d.spec.template.spec.unwrap().init_containers.unwrap()[0];
    assert_eq!(
        init.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
        "100m"
    );
}

#[test]
fn a_users_limit_below_the_request_is_kept_with_a_warning() {
    let (d, warnings) = mutated_in(
        deployment(json!({
            "name": "side", "image": "envoy",
            "resources": { "requests": { "memory": "1Gi" }, "limits": { "memory": "512Mi" } }
        })),
        &Fake::default(),
    );
    assert_eq!(resources(&d, 1).1["memory"], "512Mi");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("\"side\"") && w.contains("below requests.memory")),
        "{warnings:?}"
    );
    // Quantities compare exactly, whatever their notation: 123Mi < 129e6.
    let (_, warnings) = mutated_in(
        deployment(json!({
            "name": "side", "image": "envoy",
            "resources": { "requests": { "memory": "129e6" }, "limits": { "memory": "123Mi" } }
        })),
        &Fake::default(),
    );
    assert!(warnings.iter().any(|w| w.contains("below")), "{warnings:?}");
}

#[test]
fn enforce_replaces_the_users_values() {
    let policy = Policy::parse(
        std::path::Path::new("p.yml"),
        &include_str!("../default-policy.yml").replace(
            "maxLimitRequestRatio: { memory: 2 }",
            "maxLimitRequestRatio: { memory: 2 }\n    enforce: true",
        ),
    )
    .unwrap();
    let object: Deployment = serde_json::from_value(deployment(json!({
        "name": "side", "image": "envoy", "resources": { "requests": { "cpu": "4" } }
    })))
    .unwrap();
    let bounds = Bounds::default();
    let context = Context {
        namespace: "shop",
        old: None,
        policy: &policy,
        bounds: &bounds,
        vpa: None,
    };
    let d = mutate(object, &context).deployment;
    assert_eq!(resources(&d, 1).0["cpu"], "100m");
}

#[test]
fn limit_ranges_bound_what_is_injected() {
    let cluster = Fake {
        limit_ranges: vec![limit_range(json!({
            "type": "Container",
            "min": { "cpu": "200m" },
            "max": { "cpu": "2", "memory": "200Mi" },
            "maxLimitRequestRatio": { "memory": "1500m" }
        }))],
        ..Fake::default()
    };
    let (d, warnings) = mutated_in(plain(), &cluster);
    let (requests, limits) = resources(&d, 0);
    assert_eq!(requests["cpu"], "200m", "raised to the LimitRange min");
    assert_eq!(requests["memory"], "128Mi");
    assert_eq!(
        limits["memory"], "192Mi",
        "1.5 × 128Mi, below the max 200Mi"
    );
    // A max without a default limit makes the Pod need a limit: it gets the max.
    assert_eq!(limits["cpu"], "2");
    assert!(warnings.is_empty(), "{warnings:?}");

    // The user's values that break the LimitRange are kept and reported.
    let (d, warnings) = mutated_in(
        deployment(
            json!({ "name": "side", "image": "envoy", "resources": { "limits": { "cpu": "3" } } }),
        ),
        &cluster,
    );
    assert_eq!(resources(&d, 1).1["cpu"], "3");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("above the LimitRange max 2")),
        "{warnings:?}"
    );
}

#[test]
fn a_limit_range_default_limit_is_left_to_the_limit_ranger() {
    let cluster = Fake {
        limit_ranges: vec![limit_range(json!({
            "type": "Container", "max": { "cpu": "2" }, "default": { "cpu": "1" }
        }))],
        ..Fake::default()
    };
    let (d, _) = mutated_in(plain(), &cluster);
    assert!(!resources(&d, 0).1.contains_key("cpu"));
}

#[test]
fn adds_log_annotations_environment_service_and_marker() {
    let d = mutated(plain());
    let annotations = d.spec.template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations[LOGS], "true");
    assert_eq!(annotations[SERVICE], "web");
    assert_eq!(annotations[ENVIRONMENT], "shop");
    assert_eq!(annotations[LOG_FORMAT], "cri");
    assert_eq!(annotations["team"], "shop");
    let marker = &d.metadata.annotations.unwrap()[POLICY_HASH];
    assert_eq!(marker.len(), 16);
}

#[test]
fn the_deployments_annotations_beat_the_template() {
    let mut object = plain();
    object["metadata"]["annotations"] =
        json!({ LOGS: "false", LOG_FORMAT: "json", LOG_TOPIC: "t" });
    object["spec"]["template"]["metadata"]["annotations"] =
        json!({ LOGS: "true", SERVICE: "mine" });
    object["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = json!("shop-web");
    let annotations = mutated(object)
        .spec
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(annotations[LOGS], "false");
    assert_eq!(annotations[LOG_FORMAT], "json");
    assert_eq!(annotations[LOG_TOPIC], "t");
    assert_eq!(
        annotations[SERVICE], "mine",
        "the template's own value is kept"
    );
}

#[test]
fn spread_when_two_replicas_are_possible() {
    let spread = |d: &Deployment| {
        d.spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .topology_spread_constraints
            .clone()
            .unwrap_or_default()
    };
    // Autoscaled up to 10 replicas: spread.
    let constraints = spread(&mutated(plain()));
    assert_eq!(constraints.len(), 1);
    assert_eq!(constraints[0].topology_key, HOSTNAME);
    assert_eq!(constraints[0].when_unsatisfiable, "ScheduleAnyway");
    assert_eq!(constraints[0].max_skew, 1);
    // One replica, no autoscaling: nothing to spread.
    let mut single = plain();
    single["metadata"]["annotations"] = json!({ AUTOSCALE: "false" });
    assert!(spread(&mutated(single.clone())).is_empty());
    single["spec"]["replicas"] = json!(3);
    assert_eq!(spread(&mutated(single)).len(), 1);
    // The user's own constraint on hostnames wins.
    let mut own = plain();
    own["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{
        "maxSkew": 2, "topologyKey": HOSTNAME, "whenUnsatisfiable": "DoNotSchedule"
    }]);
    let constraints = spread(&mutated(own));
    assert_eq!((constraints.len(), constraints[0].max_skew), (1, 2));
}

#[test]
fn patch_escapes_slashes_and_second_admission_is_empty() {
    let object = plain();
    let cluster = Fake::default();
    let reviewed = review(
        &request(object.clone(), "shop"),
        &Policy::default(),
        &cluster,
    );
    assert_eq!(reviewed.outcome, Outcome::Patched);
    let text = String::from_utf8(reviewed.response.patch.clone().unwrap()).unwrap();
    assert!(text.contains("skiff.dev~1logs"), "{text}");
    assert_eq!(
        reviewed.operations,
        serde_json::from_str::<Vec<Value>>(&text).unwrap().len()
    );
    let again = review(
        &request(patched(&object, &reviewed.response), "shop"),
        &Policy::default(),
        &cluster,
    );
    assert!(
        again.response.patch.is_none(),
        "mutation must be idempotent"
    );
    assert_eq!(again.outcome, Outcome::Unchanged);
}

#[test]
fn excluded_namespace_and_opt_out_pass_untouched() {
    let cluster = Fake::default();
    let reviewed = review(
        &request(plain(), "kube-system"),
        &Policy::default(),
        &cluster,
    );
    assert_eq!(
        (reviewed.outcome, reviewed.response.patch.is_none()),
        (Outcome::Skipped, true)
    );
    let mut opted_out = plain();
    opted_out["metadata"]["annotations"] = json!({ INJECT: "false" });
    let reviewed = review(&request(opted_out, "shop"), &Policy::default(), &cluster);
    assert_eq!(
        (reviewed.outcome, reviewed.response.patch.is_none()),
        (Outcome::Skipped, true)
    );
}

#[test]
fn other_kinds_versions_and_operations_pass_untouched() {
    let cluster = Fake::default();
    let mut r = request(plain(), "shop");
    r.kind.kind = "StatefulSet".into();
    assert_eq!(
        review(&r, &Policy::default(), &cluster).outcome,
        Outcome::Skipped
    );
    let mut r = request(plain(), "shop");
    r.kind.version = "v1beta1".into();
    let reviewed = review(&r, &Policy::default(), &cluster);
    assert_eq!(reviewed.outcome, Outcome::Skipped);
    assert!(reviewed.response.warnings.unwrap()[0].contains("not apps/v1"));
    let mut r = request(plain(), "shop");
    r.operation = Operation::Delete;
    assert_eq!(
        review(&r, &Policy::default(), &cluster).outcome,
        Outcome::Skipped
    );
}

#[test]
fn broken_deployment_is_denied_with_a_reason() {
    let mut object = plain();
    object["spec"]["template"]["spec"]["containers"] = json!("not a list");
    let reviewed = review(
        &request(object, "shop"),
        &Policy::default(),
        &Fake::default(),
    );
    assert_eq!(reviewed.outcome, Outcome::Invalid);
    assert!(!reviewed.response.allowed);
    assert!(
        reviewed
            .response
            .result
            .message
            .contains("not a valid apps/v1 Deployment")
    );
}

#[test]
fn a_3_mib_deployment_gets_an_answer() {
    let mut object = plain();
    object["metadata"]["annotations"] = json!({ "big": "x".repeat(3 << 20) });
    let reviewed = review(
        &request(object, "shop"),
        &Policy::default(),
        &Fake::default(),
    );
    assert_eq!(reviewed.outcome, Outcome::Patched);
}

/// A Deployment whose containers `c0`, `c1`, … each ask for `requests.cpu: bad0`, `bad1`, …
fn with_containers(count: usize, init: usize) -> Value {
    let container = |i: usize| {
        json!({ "name": format!("c{i}"), "image": "nginx",
        "resources": { "requests": { "cpu": format!("bad{i}") } } })
    };
    let mut object = plain();
    let pod = &mut object["spec"]["template"]["spec"];
    pod["containers"] = (0..count).map(container).collect();
    pod["initContainers"] = (count..count + init).map(container).collect();
    object
}

/// Regression: 40,000 containers with an invalid quantity each took 747 MB and answered with
/// 40,000 warnings; past the policy's bound the object is now admitted as written at once.
#[test]
fn a_deployment_with_too_many_containers_is_admitted_unchanged_with_one_warning() {
    let policy = Policy::default();
    let most = policy.limits.max_containers;
    let object = with_containers(most - 1, 2);
    let reviewed = review(&request(object, "shop"), &policy, &Fake::default());
    assert_eq!(reviewed.outcome, Outcome::TooLarge);
    assert!(reviewed.response.allowed);
    assert!(reviewed.response.patch.is_none());
    let warnings = reviewed.response.warnings.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("{} containers", most + 1))
            && warnings[0].contains("limits.maxContainers"),
        "{warnings:?}"
    );

    // At the bound, the Deployment is mutated as usual.
    let reviewed = review(
        &request(with_containers(most - 1, 1), "shop"),
        &policy,
        &Fake::default(),
    );
    assert_eq!(reviewed.outcome, Outcome::Patched);
}

/// Regression: one warning per container and problem, and none of them bounded in length.
#[test]
fn container_warnings_are_one_per_problem_with_a_count_and_the_first_names() {
    let (_, warnings) = mutated_in(with_containers(40, 2), &Fake::default());
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(
        warnings[0],
        "container \"c0\": requests.cpu: \"bad0\" is not a quantity: expected a number with an \
         optional suffix (m, k, Mi, Gi, e3, …); left alone \
         (the same for 41 more containers: \"c1\", \"c2\", …)"
    );

    // Two containers with it: both named, no ellipsis.
    let (_, warnings) = mutated_in(with_containers(2, 0), &Fake::default());
    assert!(
        warnings[0].ends_with("(the same for 1 more containers: \"c1\")"),
        "{warnings:?}"
    );

    // A megabyte-long value is cut to what the API server would keep.
    let mut object = with_containers(1, 0);
    object["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
        json!("9".repeat(1 << 20) + "x");
    let reviewed = review(
        &request(object, "shop"),
        &Policy::default(),
        &Fake::default(),
    );
    let warnings = reviewed.response.warnings.unwrap();
    assert_eq!(warnings[0].chars().count(), 256, "{:.300}", warnings[0]);
    assert!(warnings[0].ends_with('…'));
}

#[test]
fn an_update_keeps_the_live_replicas_while_an_hpa_is_managed() {
    let cluster = Fake::default();
    let mut live = patched(
        &plain(),
        &review(&request(plain(), "shop"), &Policy::default(), &cluster).response,
    );
    live["spec"]["replicas"] = json!(7);
    let mut applied = plain();
    applied["spec"]["replicas"] = json!(1);
    let reviewed = review(
        &request_with(applied.clone(), Some(live.clone()), "shop", false),
        &Policy::default(),
        &cluster,
    );
    assert_eq!(patched(&applied, &reviewed.response)["spec"]["replicas"], 7);
    assert!(reviewed.response.warnings.unwrap()[0].contains("kept at the live 7"));

    // Opting out of autoscaling hands the replicas back to the manifest.
    applied["metadata"]["annotations"] = json!({ AUTOSCALE: "false" });
    let reviewed = review(
        &request_with(applied.clone(), Some(live.clone()), "shop", false),
        &Policy::default(),
        &cluster,
    );
    assert_eq!(patched(&applied, &reviewed.response)["spec"]["replicas"], 1);
    // So does a VPA, and a live object skiff never marked.
    applied["metadata"]["annotations"] = json!({});
    let vpa = Fake {
        vpa: Some("web-vpa".into()),
        ..Fake::default()
    };
    let reviewed = review(
        &request_with(applied.clone(), Some(live.clone()), "shop", false),
        &Policy::default(),
        &vpa,
    );
    assert_eq!(patched(&applied, &reviewed.response)["spec"]["replicas"], 1);
    assert!(
        reviewed
            .response
            .warnings
            .unwrap()
            .iter()
            .any(|w| w.contains("VerticalPodAutoscaler web-vpa"))
    );
    live["metadata"]["annotations"] = json!({});
    let reviewed = review(
        &request_with(applied.clone(), Some(live), "shop", false),
        &Policy::default(),
        &cluster,
    );
    assert_eq!(patched(&applied, &reviewed.response)["spec"]["replicas"], 1);
}

#[test]
fn a_dry_run_previews_the_hpa() {
    let warnings = |cluster: &Fake, object: Value| {
        review(
            &request_with(object, None, "shop", true),
            &Policy::default(),
            cluster,
        )
        .response
        .warnings
        .unwrap_or_default()
    };
    let mut object = plain();
    object["metadata"]["annotations"] = json!({ MAX_REPLICAS: "4", TARGET_RPS: "50" });
    let w = warnings(&Fake::default(), object.clone());
    assert_eq!(
        w,
        [
            "dry run: would create HorizontalPodAutoscaler shop/web: 2..4 replicas, cpu 50% (container app), http_requests_per_second 50/pod"
        ]
    );

    // An HPA this Deployment owns, with other bounds: a change.
    object["metadata"]["uid"] = json!("uid-1");
    let mut d: Deployment = serde_json::from_value(object.clone()).unwrap();
    d.metadata.annotations = None;
    let owned = crate::hpa::desired(&d, &Policy::default().resolve("shop", &BTreeMap::new()).0);
    let cluster = Fake {
        hpa: Some(Arc::new(owned)),
        ..Fake::default()
    };
    let w = warnings(&cluster, object.clone());
    assert!(
        w[0].starts_with(
            "dry run: would change HorizontalPodAutoscaler shop/web from 2..10 replicas"
        ),
        "{w:?}"
    );

    // Someone else's HPA is left alone; opting out deletes ours.
    let mut foreign = (*cluster.hpa.clone().unwrap()).clone();
    foreign.metadata.owner_references = None;
    let w = warnings(
        &Fake {
            hpa: Some(Arc::new(foreign)),
            ..Fake::default()
        },
        object.clone(),
    );
    assert!(w[0].contains("is not skiff's"), "{w:?}");
    object["metadata"]["annotations"] = json!({ AUTOSCALE: "false" });
    assert_eq!(
        warnings(&cluster, object),
        ["dry run: would delete HorizontalPodAutoscaler shop/web"]
    );
}

#[test]
fn a_profile_sets_the_resources() {
    let mut object = plain();
    object["metadata"]["annotations"] = json!({ PROFILE: "small" });
    let d = mutated(object);
    assert_eq!(
        resources(&d, 0),
        (
            map(&[("cpu", "50m"), ("memory", "64Mi")]),
            map(&[("memory", "128Mi")])
        )
    );
}

/// Quantities a user might write, valid or not.
fn quantity() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "100m",
        "0.5",
        "1",
        "2",
        "250m",
        "1Gi",
        "512Mi",
        "64Mi",
        "1e3",
        "129e6",
        "128974848",
        "1.5Gi",
        "0",
        "3",
        "banana",
    ])
    .prop_map(str::to_string)
}

fn resource_map() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    prop::option::of(prop::collection::btree_map(
        prop::sample::select(vec!["cpu".to_string(), "memory".to_string()]),
        quantity(),
        0..3,
    ))
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (resource_map(), resource_map()).prop_map(move |(requests, limits)| {
        json!({ "name": name, "image": "x", "resources": { "requests": requests, "limits": limits } })
    })
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(vec![
            PROFILE,
            AUTOSCALE,
            MAX_REPLICAS,
            "skiff.dev/min-replicas",
            LOGS,
            LOG_FORMAT,
            TARGET_RPS,
            "skiff.dev/request-cpu",
            "skiff.dev/limit-memory",
            LOG_FIELDS,
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec![
            "small",
            "false",
            "true",
            "3",
            "json",
            "1Gi",
            "x",
            r#"{"a":"b"}"#,
        ])
        .prop_map(str::to_string),
        0..4,
    )
}

fn generated_deployment() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(0..1usize, 1..4).prop_flat_map(|v| {
            let names: Vec<_> = (0..v.len()).map(|i| container(format!("c{i}"))).collect();
            names
        }),
        prop::option::of(0..5i32),
        annotations(),
        annotations(),
        any::<bool>(),
    )
        .prop_map(|(containers, replicas, annotations, template_annotations, spread)| {
            let mut object = json!({
                "metadata": { "name": "gen", "annotations": annotations },
                "spec": {
                    "replicas": replicas,
                    "selector": { "matchLabels": { "app": "gen" } },
                    "template": {
                        "metadata": { "labels": { "app": "gen" }, "annotations": template_annotations },
                        "spec": { "containers": containers }
                    }
                }
            });
            if spread {
                object["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{
                    "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"
                }]);
            }
            object
        })
}

fn limit_ranges() -> impl Strategy<Value = Vec<Arc<LimitRange>>> {
    prop::sample::select(vec![
        vec![],
        vec![limit_range(
            json!({ "type": "Container", "max": { "cpu": "2", "memory": "1Gi" } }),
        )],
        vec![limit_range(json!({
            "type": "Container", "min": { "cpu": "150m", "memory": "100Mi" },
            "maxLimitRequestRatio": { "memory": "1500m", "cpu": "4" }
        }))],
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// mutate(mutate(x)) == mutate(x): a reinvocation, or the admission of the stored
    /// result, changes nothing.
    #[test]
    fn mutation_is_idempotent(object in generated_deployment(), limit_ranges in limit_ranges()) {
        let cluster = Fake { limit_ranges, ..Fake::default() };
        let once = mutated_in(object, &cluster).0;
        let twice = mutated_in(serde_json::to_value(&once).unwrap(), &cluster).0;
        prop_assert_eq!(once, twice);
    }

    /// Through the JSON Patch too: the patched object reviews to an empty patch.
    #[test]
    fn the_patch_applies_and_a_second_review_is_empty(object in generated_deployment()) {
        let cluster = Fake::default();
        let first = review(&request(object.clone(), "shop"), &Policy::default(), &cluster);
        let stored = patched(&object, &first.response);
        let second = review(&request(stored, "shop"), &Policy::default(), &cluster);
        prop_assert!(second.response.patch.is_none(), "{:?}", second.response.patch.map(String::from_utf8));
    }

    /// Injected values never break the LimitRange: every warning is about a user's value.
    #[test]
    fn injected_values_respect_the_limit_ranges(limit_ranges in limit_ranges()) {
        let cluster = Fake { limit_ranges, ..Fake::default() };
        let (_, warnings) = mutated_in(plain(), &cluster);
        prop_assert!(warnings.is_empty(), "{:?}", warnings);
    }

    /// Arbitrary JSON where the object goes: an answer, never a panic.
    #[test]
    fn arbitrary_objects_never_panic(object in arbitrary_json(3)) {
        let mut wrapped = plain();
        wrapped["spec"] = object;
        let reviewed = review(&request(wrapped, "shop"), &Policy::default(), &Fake::default());
        prop_assert!(reviewed.outcome != Outcome::Patched || reviewed.response.allowed);
    }
}

fn arbitrary_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(depth, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "replicas",
                    "selector",
                    "template",
                    "spec",
                    "containers",
                    "metadata",
                    "name",
                    "resources",
                    "requests",
                    "limits",
                ])
                .prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
