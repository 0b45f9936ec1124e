//! What the agent knows of a pod: its identity, labels, and the webhook's `skiff.dev/*`
//! annotations, as ECS fields; and which pod a `/var/log/pods` file belongs to.

use crate::process::event::MAX_DEPTH;
use crate::process::{Event, Object, Value, field};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::path::Path;

/// The annotations of the webhook's contract (see docs/ARCHITECTURE.md).
pub mod annotation {
    /// What every key of the contract starts with.
    pub const PREFIX: &str = "skiff.dev/";
    pub const LOGS: &str = "skiff.dev/logs";
    pub const SERVICE: &str = "skiff.dev/service";
    pub const ENVIRONMENT: &str = "skiff.dev/environment";
    pub const LOG_FORMAT: &str = "skiff.dev/log-format";
    pub const LOG_FIELDS: &str = "skiff.dev/log-fields";
}

/// The label a service name falls back to.
const NAME_LABEL: &str = "app.kubernetes.io/name";

/// One pod of this node.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// `skiff.dev/logs: "true"`: its containers' logs are harvested by the `kubernetes` input.
    pub harvest: bool,
    /// `skiff.dev/service`, else the `app.kubernetes.io/name` label, else the owning
    /// workload's name.
    pub service: Option<String>,
    pub environment: Option<String>,
    /// `skiff.dev/log-format`; `cri` when not set.
    pub log_format: String,
    /// The webhook's `skiff.dev/*` annotations (`skiff.dev/log-topic` is the Kafka topic
    /// for this pod's events).
    pub annotations: BTreeMap<String, String>,
    /// `skiff.dev/log-fields`: extra fields for every event (a JSON object), dotted keys
    /// expanded into objects. They never replace a field the event has: the annotation is
    /// the tenant's, and `kubernetes.*` and `service.*` are the agent's.
    pub extra_fields: Object,
    /// Whether a dotted key of `extra_fields` is kept flat, as expanded it would nest deeper
    /// than an event may ([`MAX_DEPTH`]); its events say so in `error.message`.
    extra_fields_kept_flat: bool,
    /// Names of all its containers (init and ephemeral ones too).
    pub containers: Vec<String>,
}

impl PodMeta {
    /// The metadata of `pod`; `None` for a pod without name, namespace or uid (never seen
    /// from the API server, but the types allow it).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let annotations = meta.annotations.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let annotation = |key: &str| annotations.get(key).filter(|v| !v.is_empty()).cloned();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| match o.kind.as_str() {
                // A Deployment's pods belong to `<deployment>-<pod-template-hash>`.
                "ReplicaSet" => o
                    .name
                    .rsplit_once('-')
                    .map_or(o.name.clone(), |(deployment, _)| deployment.to_string()),
                _ => o.name.clone(),
            });
        let pod_name = meta.name.as_deref().unwrap_or_default();
        // Read as JSON at most `MAX_DEPTH` levels deep: the object's keys become the event's.
        let extra_fields = match annotations.get(annotation::LOG_FIELDS) {
            None => Object::new(),
            Some(text) => match Value::from_json(text, MAX_DEPTH) {
                Ok(Value::Object(fields)) => fields,
                Ok(_) => {
                    tracing::warn!(
                        pod = pod_name,
                        "{} is not a JSON object; ignored",
                        annotation::LOG_FIELDS
                    );
                    Object::new()
                }
                Err(err) => {
                    tracing::warn!(
                        pod = pod_name,
                        %err,
                        "{} is not a JSON object; ignored",
                        annotation::LOG_FIELDS
                    );
                    Object::new()
                }
            },
        };
        let mut extra_fields_kept_flat = false;
        let expanded = field::expand_keys(extra_fields, 1, &mut extra_fields_kept_flat);
        // `kubernetes.*` is the agent's: what the API server says, which outputs route by
        // (`kubernetes.annotations.skiff_dev/log-topic` only from that annotation).
        let expanded_len = expanded.len();
        let extra_fields: Object = expanded
            .into_iter()
            .filter(|(key, _)| key != "kubernetes" && !key.starts_with("kubernetes."))
            .collect();
        if extra_fields.len() < expanded_len {
            tracing::warn!(
                pod = pod_name,
                "{}: fields under kubernetes are the agent's; ignored",
                annotation::LOG_FIELDS
            );
        }
        if extra_fields_kept_flat {
            tracing::warn!(
                pod = pod_name,
                "{}: a dotted key that would nest deeper than {MAX_DEPTH} levels is kept flat",
                annotation::LOG_FIELDS
            );
        }
        let containers = spec
            .map(|spec| {
                let init = spec.init_containers.iter().flatten().map(|c| &c.name);
                let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| &c.name);
                spec.containers
                    .iter()
                    .map(|c| &c.name)
                    .chain(init)
                    .chain(ephemeral)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            harvest: annotations
                .get(annotation::LOGS)
                .is_some_and(|v| v == "true"),
            service: annotation(annotation::SERVICE)
                .or_else(|| labels.get(NAME_LABEL).cloned())
                .or(owner),
            environment: annotation(annotation::ENVIRONMENT),
            log_format: annotation(annotation::LOG_FORMAT).unwrap_or_else(|| "cri".into()),
            annotations: annotations
                .iter()
                .filter(|(key, _)| key.starts_with(annotation::PREFIX))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            // Shared: every event of the pod merges the same fields.
            extra_fields: extra_fields.into_shared(),
            extra_fields_kept_flat,
            labels,
            containers,
        })
    }

    /// Adds the pod's fields to `event` for its container `container`: `kubernetes.*` (with
    /// the `skiff.dev/*` annotations, where the Kafka output finds `skiff_dev/log-topic`),
    /// `service.name`, `service.environment`, and the extra fields where the event has no
    /// field of theirs.
    pub fn apply(&self, container: &str, event: &mut Event) {
        let labels = dedot(&self.labels);
        let annotations = dedot(&self.annotations);
        let kubernetes = event.object_mut("kubernetes");
        kubernetes.insert("namespace", self.namespace.as_str());
        let pod = kubernetes.object_mut("pod");
        pod.insert("name", self.name.as_str());
        pod.insert("uid", self.uid.as_str());
        kubernetes.object_mut("container").insert("name", container);
        kubernetes
            .object_mut("node")
            .insert("name", self.node.as_str());
        if !labels.is_empty() {
            kubernetes.insert("labels", labels);
        }
        if !annotations.is_empty() {
            kubernetes.insert("annotations", annotations);
        }
        if let Some(service) = &self.service {
            field::insert(event, "service.name", service.as_str());
        }
        if let Some(environment) = &self.environment {
            field::insert(event, "service.environment", environment.as_str());
        }
        // The agent's fields win: a tenant's `kubernetes.namespace` or `service.name` would
        // pass its events off as another's (and pick their Kafka topic).
        event.merge(self.extra_fields.clone(), false);
        if self.extra_fields_kept_flat {
            field::set_error(
                event,
                format!(
                    "kubernetes: a key of {} that would nest deeper than {MAX_DEPTH} levels was kept as it is",
                    annotation::LOG_FIELDS
                ),
            );
        }
    }
}

/// Dots in label and annotation keys would become objects in Elasticsearch: they become `_`,
/// as with Filebeat's `labels.dedot` and `annotations.dedot`.
fn dedot(map: &BTreeMap<String, String>) -> Object {
    map.iter()
        .map(|(k, v)| (k.replace('.', "_"), v.as_str()))
        .collect()
}

/// The parts of a kubelet log path, `…/<namespace>_<pod>_<uid>/<container>/<N>.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPath<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub uid: &'a str,
    pub container: &'a str,
}

impl<'a> LogPath<'a> {
    /// Reads `path`; `None` when it is not shaped like a kubelet pod log path. Names and
    /// namespaces are DNS labels (no `_`), so the folder name splits unambiguously.
    pub fn parse(path: &'a Path) -> Option<Self> {
        let mut components = path.iter().rev().map(|c| c.to_str());
        let file = components.next()??;
        let container = components.next()??;
        let pod_dir = components.next()??;
        if !file.ends_with(".log") {
            return None;
        }
        let mut parts = pod_dir.splitn(3, '_');
        let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
        if [namespace, pod, uid, container]
            .iter()
            .any(|s| s.is_empty())
        {
            return None;
        }
        Some(Self {
            namespace,
            pod,
            uid,
            container,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "checkout-7d9f8b6c5d-x2x9z",
                "namespace": "shop",
                "uid": "0b4c2a8e-1111-2222-3333-444455556666",
                "labels": { "app.kubernetes.io/name": "checkout", "tier": "web" },
                "annotations": annotations,
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "checkout-7d9f8b6c5d", "uid": "u", "controller": true }],
            },
            "spec": {
                "nodeName": "node-a",
                "initContainers": [{ "name": "migrate" }],
                "containers": [{ "name": "app" }, { "name": "sidecar" }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn annotations_become_fields() {
        let meta = PodMeta::from_pod(&pod(json!({
            "skiff.dev/logs": "true",
            "skiff.dev/service": "checkout-api",
            "skiff.dev/environment": "production",
            "skiff.dev/log-format": "json",
            "skiff.dev/log-topic": "logs-checkout",
            "skiff.dev/log-fields": "{\"team\": \"payments\", \"cost.center\": 42}",
        })))
        .unwrap();
        assert!(meta.harvest);
        assert_eq!(meta.log_format, "json");
        assert_eq!(meta.containers, ["app", "sidecar", "migrate"]);
        let mut event = Event::new();
        meta.apply("app", &mut event);
        assert_eq!(
            Value::Object(event),
            json!({
                "kubernetes": {
                    "namespace": "shop",
                    "pod": { "name": "checkout-7d9f8b6c5d-x2x9z", "uid": "0b4c2a8e-1111-2222-3333-444455556666" },
                    "container": { "name": "app" },
                    "node": { "name": "node-a" },
                    "labels": { "app_kubernetes_io/name": "checkout", "tier": "web" },
                    "annotations": {
                        "skiff_dev/logs": "true",
                        "skiff_dev/service": "checkout-api",
                        "skiff_dev/environment": "production",
                        "skiff_dev/log-format": "json",
                        "skiff_dev/log-topic": "logs-checkout",
                        "skiff_dev/log-fields": "{\"team\": \"payments\", \"cost.center\": 42}",
                    },
                },
                "service": { "name": "checkout-api", "environment": "production" },
                "team": "payments",
                "cost": { "center": 42 },
            })
        );
    }

    #[test]
    fn defaults_without_annotations() {
        let meta = PodMeta::from_pod(&pod(json!({}))).unwrap();
        assert!(!meta.harvest);
        assert_eq!(meta.log_format, "cri");
        assert_eq!(
            meta.service.as_deref(),
            Some("checkout"),
            "from the name label"
        );
        let mut unlabelled = pod(json!({ "skiff.dev/log-fields": "[1]" }));
        unlabelled.metadata.labels = None;
        let meta = PodMeta::from_pod(&unlabelled).unwrap();
        assert_eq!(
            meta.service.as_deref(),
            Some("checkout"),
            "from the Deployment's name"
        );
        assert!(meta.extra_fields.is_empty(), "a non-object is ignored");
    }

    /// Regression: `log-fields` could overwrite the agent's fields, passing a pod's events
    /// off as another namespace's and service's.
    #[test]
    fn log_fields_never_replace_the_agents_fields() {
        let fields = json!({
            "kubernetes.namespace": "kube-system",
            "kubernetes": { "pod": { "name": "etcd" }, "annotations": { "skiff_dev/log-topic": "logs-etcd" } },
            "service.name": "payments",
            "service": { "environment": "staging", "version": "1.2" },
            "team": "payments",
        });
        let meta = PodMeta::from_pod(&pod(json!({
            "skiff.dev/service": "checkout-api",
            "skiff.dev/environment": "production",
            "skiff.dev/log-fields": fields.to_string(),
        })))
        .unwrap();
        let mut event = Event::new();
        meta.apply("app", &mut event);
        assert_eq!(event["kubernetes"]["namespace"], "shop");
        assert_eq!(
            event["kubernetes"]["pod"]["name"],
            "checkout-7d9f8b6c5d-x2x9z"
        );
        assert!(
            event["kubernetes"]["annotations"]
                .get("skiff_dev/log-topic")
                .is_none()
        );
        assert_eq!(event["service"]["name"], "checkout-api");
        assert_eq!(event["service"]["environment"], "production");
        assert_eq!(event["service"]["version"], "1.2", "a field of its own");
        assert_eq!(event["team"], "payments");
        assert!(event.get("kubernetes.namespace").is_none());
    }

    /// Regression: a key of 30,000 dotted segments in `log-fields` overflowed the agent's
    /// stack, and every restart met the same pod again.
    #[test]
    fn a_log_fields_key_of_30000_segments_stays_flat_and_is_flagged() {
        crate::process::event::tests::on_small_stack(|| {
            let key = vec!["a"; 30_000].join(".");
            let meta = PodMeta::from_pod(&pod(json!({
                "skiff.dev/log-fields": json!({ key.clone(): 1, "b.c": 2 }).to_string(),
            })))
            .unwrap();
            let mut event = Event::new();
            meta.apply("app", &mut event);
            assert_eq!(event[key.as_str()], 1);
            assert_eq!(event["b"]["c"], 2);
            assert!(event["error"]["message"].is_string());
            assert_eq!(event["kubernetes"]["namespace"], "shop");
            serde_json::to_string(&event).unwrap();
        });
    }

    #[test]
    fn kubelet_log_paths() {
        let path = Path::new("/var/log/pods/shop_checkout-1_0b4c2a8e-11/app/0.log");
        assert_eq!(
            LogPath::parse(path),
            Some(LogPath {
                namespace: "shop",
                pod: "checkout-1",
                uid: "0b4c2a8e-11",
                container: "app"
            })
        );
        assert_eq!(LogPath::parse(Path::new("/var/log/syslog")), None);
        assert_eq!(
            LogPath::parse(Path::new("/x/shop-checkout/app/0.log")),
            None
        );
        assert_eq!(LogPath::parse(Path::new("/x/a_b_c/app/0.log.gz")), None);
    }
}
