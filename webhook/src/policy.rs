//! The policy: what the webhook injects, in layers — defaults, then the namespace, then the
//! Deployment's profile, then the Deployment's own annotations — resolved per Deployment into
//! one [`Effective`] policy whose hash marks what was applied.

use crate::quantity::{Amount, Format};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The policy used when no file is given.
const DEFAULT_POLICY: &str = include_str!("default-policy.yml");

/// Deployment annotation: the resource profile from the policy.
pub const PROFILE: &str = "skiff.dev/profile";
/// Deployment annotation: `"false"` means no HPA.
pub const AUTOSCALE: &str = "skiff.dev/autoscale";
/// Deployment annotation: the HPA's lower bound.
pub const MIN_REPLICAS: &str = "skiff.dev/min-replicas";
/// Deployment annotation: the HPA's upper bound.
pub const MAX_REPLICAS: &str = "skiff.dev/max-replicas";
/// Deployment annotation: CPU utilisation target, percent of requests.
pub const TARGET_CPU: &str = "skiff.dev/target-cpu";
/// Deployment annotation: requests per second per pod.
pub const TARGET_RPS: &str = "skiff.dev/target-rps";
/// Deployment and pod-template annotation: ship this workload's logs.
pub const LOGS: &str = "skiff.dev/logs";
/// Pod-template annotation: how the agent parses the lines.
pub const LOG_FORMAT: &str = "skiff.dev/log-format";
/// Pod-template annotation: Kafka topic override.
pub const LOG_TOPIC: &str = "skiff.dev/log-topic";
/// Pod-template annotation: JSON object of extra fields.
pub const LOG_FIELDS: &str = "skiff.dev/log-fields";
/// Deployment annotation prefixes for per-object resources: `skiff.dev/request-cpu: 250m`,
/// `skiff.dev/limit-memory: 1Gi`, for every container that lacks them.
pub const REQUEST_PREFIX: &str = "skiff.dev/request-";
/// See [`REQUEST_PREFIX`].
pub const LIMIT_PREFIX: &str = "skiff.dev/limit-";

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: {at}: {message}")]
    Invalid {
        path: PathBuf,
        at: String,
        message: String,
    },
}

impl PolicyError {
    /// A short name for the metric label of failed reloads.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Parse { .. } => "parse",
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What every Deployment gets.
    pub defaults: Defaults,
    /// Overrides per namespace.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Layer>,
    /// Namespaces the webhook leaves alone.
    #[serde(default)]
    pub exclude: Exclude,
    /// Bounds on what one Deployment may ask of the webhook.
    #[serde(default)]
    pub limits: Limits,
}

/// Bounds on what one Deployment may ask of the webhook: its size, and what its annotations
/// may set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// The most containers (init containers included) of a Deployment the webhook mutates; one
    /// with more is admitted as written, with a warning. Kubernetes sets no such bound, but a
    /// Deployment of 40,000 containers cost the webhook 443 MB and a 21 MB response, for a Pod
    /// that no node would run. Default: 100.
    #[serde(default = "default_max_containers")]
    pub max_containers: usize,
    /// The most replicas that `skiff.dev/min-replicas` and `skiff.dev/max-replicas` may ask
    /// for: a larger value is lowered to this one, with a warning. The policy's own
    /// `maxReplicas` must not exceed it either. Default: 100.
    #[serde(default = "default_replicas_ceiling")]
    pub replicas_ceiling: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_containers: default_max_containers(),
            replicas_ceiling: default_replicas_ceiling(),
        }
    }
}

fn default_max_containers() -> usize {
    100
}

fn default_replicas_ceiling() -> i32 {
    100
}

/// Cluster-wide defaults: a complete layer plus the named resource profiles.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// `skiff.dev/environment` of the pods; the namespace's name when no layer sets it.
    #[serde(default)]
    pub environment: Option<String>,
    /// Requests and limits filled into containers that lack them.
    pub resources: Resources,
    /// Resource sets chosen with `skiff.dev/profile`, layered over the namespace's resources.
    #[serde(default)]
    pub profiles: BTreeMap<String, Resources>,
    /// The HPA each Deployment gets.
    pub autoscaling: Autoscaling,
    /// Log shipping annotations.
    pub logs: Logs,
    /// Topology spread across nodes for workloads that may run 2 or more replicas. Default: true.
    #[serde(default = "default_true")]
    pub spread: bool,
}

/// What a namespace changes: every field optional, maps merged key by key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// `skiff.dev/environment` for this namespace's pods.
    #[serde(default)]
    pub environment: Option<String>,
    /// Resources merged over the defaults.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Autoscaling fields overriding the defaults.
    #[serde(default)]
    pub autoscaling: Option<AutoscalingLayer>,
    /// Log fields overriding the defaults.
    #[serde(default)]
    pub logs: Option<LogsLayer>,
    /// Overrides `defaults.spread`.
    #[serde(default)]
    pub spread: Option<bool>,
}

/// Resource quantities by resource name (`cpu`, `memory`), as Kubernetes writes them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Requests filled in where a container has none.
    #[serde(default)]
    pub requests: BTreeMap<String, PolicyQuantity>,
    /// Limits filled in where a container has none.
    #[serde(default)]
    pub limits: BTreeMap<String, PolicyQuantity>,
    /// Largest `limit / request` the webhook injects, and warns about when a user exceeds it.
    #[serde(default)]
    pub max_limit_request_ratio: BTreeMap<String, PolicyQuantity>,
    /// Overwrite the requests and limits the user wrote with the policy's. Default: false.
    #[serde(default)]
    pub enforce: Option<bool>,
}

/// A quantity of the policy file, validated when the policy loads (`100m`, `1Gi`, `2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawQuantity", into = "String")]
pub struct PolicyQuantity {
    /// As written, so it is injected verbatim.
    pub text: String,
    /// Its exact value.
    pub amount: Amount,
    /// How it was written.
    pub format: Format,
}

/// A quantity as YAML may hold it: `100m` is a string, `2` and `1.5` are numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawQuantity {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl TryFrom<RawQuantity> for PolicyQuantity {
    type Error = String;

    fn try_from(raw: RawQuantity) -> Result<Self, String> {
        let text = match raw {
            RawQuantity::Text(text) => text,
            RawQuantity::Integer(n) => n.to_string(),
            RawQuantity::Float(x) => x.to_string(),
        };
        let (amount, format) = Amount::parse_with_format(&text).map_err(|e| e.to_string())?;
        if amount < Amount::ZERO {
            return Err(format!("{text:?} is negative"));
        }
        Ok(Self {
            text,
            amount,
            format,
        })
    }
}

impl From<PolicyQuantity> for String {
    fn from(quantity: PolicyQuantity) -> Self {
        quantity.text
    }
}

/// The HPA of each Deployment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscaling {
    /// Give Deployments an HPA unless they opt out. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The HPA's `minReplicas`.
    pub min_replicas: i32,
    /// The HPA's `maxReplicas`.
    pub max_replicas: i32,
    /// CPU utilisation target, percent of requests.
    #[serde(rename = "targetCPU")]
    pub target_cpu: i32,
    /// Requests per second per pod (a `Pods` metric `http_requests_per_second`); none by default.
    #[serde(default, rename = "targetRPS")]
    pub target_rps: Option<PolicyQuantity>,
    /// The HPA's `behavior`, verbatim.
    #[serde(default)]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// Autoscaling fields a namespace overrides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscalingLayer {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub min_replicas: Option<i32>,
    #[serde(default)]
    pub max_replicas: Option<i32>,
    #[serde(default, rename = "targetCPU")]
    pub target_cpu: Option<i32>,
    #[serde(default, rename = "targetRPS")]
    pub target_rps: Option<PolicyQuantity>,
    #[serde(default)]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// Whether and how the agent ships a workload's logs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// Ship logs unless the Deployment opts out. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How the agent parses the lines (`cri`, `json`, `nginx`, `apache`, `plain`). Default: `cri`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Kafka topic override; none by default.
    #[serde(default)]
    pub topic: Option<String>,
    /// Extra fields added to every event; none by default.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// Log fields a namespace overrides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsLayer {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// Namespaces left alone.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// The log formats the agent understands.
const LOG_FORMATS: [&str; 5] = ["cri", "json", "nginx", "apache", "plain"];

fn default_true() -> bool {
    true
}

fn default_format() -> String {
    "cri".to_string()
}

/// The policy for one Deployment, every layer applied. Its hash is the marker annotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    pub environment: String,
    pub resources: EffectiveResources,
    pub autoscaling: Autoscaling,
    pub logs: Logs,
    pub spread: bool,
}

/// Resources after layering.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EffectiveResources {
    pub requests: BTreeMap<String, PolicyQuantity>,
    pub limits: BTreeMap<String, PolicyQuantity>,
    pub max_limit_request_ratio: BTreeMap<String, PolicyQuantity>,
    pub enforce: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self::parse(Path::new("default-policy.yml"), DEFAULT_POLICY)
            .expect("the embedded default policy is valid (tested)")
    }
}

impl Policy {
    /// Reads, parses and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks policy text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let policy: Self = serde_yaml::from_str(text).map_err(|source| PolicyError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        policy
            .check()
            .map_err(|(at, message)| PolicyError::Invalid {
                path: path.to_path_buf(),
                at,
                message,
            })?;
        Ok(policy)
    }

    /// What serde cannot check: bounds, known formats.
    fn check(&self) -> Result<(), (String, String)> {
        let ceiling = self.limits.replicas_ceiling;
        if ceiling < 1 {
            return Err((
                "limits.replicasCeiling".into(),
                format!("{ceiling} is below 1"),
            ));
        }
        let autoscaling = |at: &str, a: &Autoscaling| {
            if a.max_replicas > ceiling {
                return Err((
                    format!("{at}.autoscaling.maxReplicas"),
                    format!(
                        "{} is above limits.replicasCeiling {ceiling}: raise the ceiling too",
                        a.max_replicas
                    ),
                ));
            }
            if a.min_replicas < 1 || a.max_replicas < a.min_replicas {
                return Err((
                    format!("{at}.autoscaling"),
                    format!(
                        "need 1 <= minReplicas <= maxReplicas, got {} and {}",
                        a.min_replicas, a.max_replicas
                    ),
                ));
            }
            if !(1..=1000).contains(&a.target_cpu) {
                return Err((
                    format!("{at}.autoscaling.targetCPU"),
                    format!("{} is not a percentage in 1..=1000", a.target_cpu),
                ));
            }
            Ok(())
        };
        let format = |at: &str, format: &str| {
            if LOG_FORMATS.contains(&format) {
                Ok(())
            } else {
                Err((
                    format!("{at}.logs.format"),
                    format!("{format:?} is none of {}", LOG_FORMATS.join(", ")),
                ))
            }
        };
        autoscaling("defaults", &self.defaults.autoscaling)?;
        format("defaults", &self.defaults.logs.format)?;
        for (name, layer) in &self.namespaces {
            let at = format!("namespaces.{name}");
            let resolved = self.resolve_layers(name, None);
            autoscaling(&at, &resolved.autoscaling)?;
            format(&at, &resolved.logs.format)?;
            if let Some(ratios) = layer.resources.as_ref().map(|r| &r.max_limit_request_ratio) {
                check_ratios(&at, ratios)?;
            }
        }
        check_ratios("defaults", &self.defaults.resources.max_limit_request_ratio)?;
        for (name, profile) in &self.defaults.profiles {
            check_ratios(
                &format!("defaults.profiles.{name}"),
                &profile.max_limit_request_ratio,
            )?;
        }
        Ok(())
    }

    /// Whether Deployments of `namespace` pass untouched.
    pub fn excludes(&self, namespace: &str) -> bool {
        self.exclude.namespaces.iter().any(|n| n == namespace)
    }

    /// The policy for one Deployment of `namespace` with these annotations, and warnings about
    /// annotations that could not be honoured.
    pub fn resolve(
        &self,
        namespace: &str,
        annotations: &BTreeMap<String, String>,
    ) -> (Effective, Vec<String>) {
        let mut warnings = Vec::new();
        let profile = annotations.get(PROFILE).and_then(|name| {
            let found = self.defaults.profiles.get(name);
            if found.is_none() {
                warnings.push(format!(
                    "{PROFILE}: no profile {name:?} in the policy; the defaults apply"
                ));
            }
            found
        });
        let mut effective = self.resolve_layers(namespace, profile);
        apply_annotations(
            &mut effective,
            annotations,
            self.limits.replicas_ceiling,
            &mut warnings,
        );
        (effective, warnings)
    }

    /// Defaults, then the namespace, then the profile.
    fn resolve_layers(&self, namespace: &str, profile: Option<&Resources>) -> Effective {
        let d = &self.defaults;
        let mut effective = Effective {
            environment: d
                .environment
                .clone()
                .unwrap_or_else(|| namespace.to_string()),
            resources: EffectiveResources::default(),
            autoscaling: d.autoscaling.clone(),
            logs: d.logs.clone(),
            spread: d.spread,
        };
        effective.resources.merge(&d.resources);
        if let Some(layer) = self.namespaces.get(namespace) {
            if let Some(environment) = &layer.environment {
                effective.environment = environment.clone();
            }
            if let Some(resources) = &layer.resources {
                effective.resources.merge(resources);
            }
            if let Some(a) = &layer.autoscaling {
                let e = &mut effective.autoscaling;
                e.enabled = a.enabled.unwrap_or(e.enabled);
                e.min_replicas = a.min_replicas.unwrap_or(e.min_replicas);
                e.max_replicas = a.max_replicas.unwrap_or(e.max_replicas);
                e.target_cpu = a.target_cpu.unwrap_or(e.target_cpu);
                if a.target_rps.is_some() {
                    e.target_rps.clone_from(&a.target_rps);
                }
                if a.behavior.is_some() {
                    e.behavior.clone_from(&a.behavior);
                }
            }
            if let Some(l) = &layer.logs {
                let e = &mut effective.logs;
                e.enabled = l.enabled.unwrap_or(e.enabled);
                if let Some(format) = &l.format {
                    e.format.clone_from(format);
                }
                if l.topic.is_some() {
                    e.topic.clone_from(&l.topic);
                }
                e.fields.extend(l.fields.clone());
            }
            effective.spread = layer.spread.unwrap_or(effective.spread);
        }
        if let Some(profile) = profile {
            effective.resources.merge(profile);
        }
        effective
    }
}

impl EffectiveResources {
    fn merge(&mut self, layer: &Resources) {
        self.requests.extend(layer.requests.clone());
        self.limits.extend(layer.limits.clone());
        self.max_limit_request_ratio
            .extend(layer.max_limit_request_ratio.clone());
        self.enforce = layer.enforce.unwrap_or(self.enforce);
    }
}

impl Effective {
    /// A short, stable hash of this policy: the marker annotation's value.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("an effective policy serialises");
        let digest = ring::digest::digest(&ring::digest::SHA256, &json);
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The Deployment's own annotations, the last layer; replica counts above `ceiling` are
/// lowered to it.
fn apply_annotations(
    effective: &mut Effective,
    annotations: &BTreeMap<String, String>,
    ceiling: i32,
    warnings: &mut Vec<String>,
) {
    for (key, value) in annotations {
        let (target, name) = if let Some(name) = key.strip_prefix(REQUEST_PREFIX) {
            (&mut effective.resources.requests, name)
        } else if let Some(name) = key.strip_prefix(LIMIT_PREFIX) {
            (&mut effective.resources.limits, name)
        } else {
            continue;
        };
        match PolicyQuantity::try_from(RawQuantity::Text(value.clone())) {
            Ok(quantity) => {
                target.insert(name.to_string(), quantity);
            }
            Err(err) => warnings.push(format!("{key}: {err}; ignored")),
        }
    }
    let a = &mut effective.autoscaling;
    if annotations.get(AUTOSCALE).is_some_and(|v| v == "false") {
        a.enabled = false;
    }
    let mut int = |key: &str, range: std::ops::RangeInclusive<i32>, slot: &mut i32| {
        if let Some(value) = annotations.get(key) {
            match value.parse::<i32>() {
                Ok(n) if range.contains(&n) => *slot = n,
                _ => warnings.push(format!(
                    "{key}: {value:?} is not a whole number in {}..={}; ignored",
                    range.start(),
                    range.end()
                )),
            }
        }
    };
    int(MIN_REPLICAS, 1..=i32::MAX, &mut a.min_replicas);
    int(MAX_REPLICAS, 1..=i32::MAX, &mut a.max_replicas);
    int(TARGET_CPU, 1..=1000, &mut a.target_cpu);
    // The policy's own values are checked against the ceiling when it loads: only an
    // annotation can bring a value above it.
    for (key, slot) in [
        (MIN_REPLICAS, &mut a.min_replicas),
        (MAX_REPLICAS, &mut a.max_replicas),
    ] {
        if *slot > ceiling {
            warnings.push(format!(
                "{key}: {} is above the policy's ceiling of {ceiling} replicas; using {ceiling}",
                *slot
            ));
            *slot = ceiling;
        }
    }
    if a.max_replicas < a.min_replicas {
        warnings.push(format!(
            "maxReplicas {} is below minReplicas {}; using {} for both",
            a.max_replicas, a.min_replicas, a.min_replicas
        ));
        a.max_replicas = a.min_replicas;
    }
    if let Some(value) = annotations.get(TARGET_RPS) {
        match PolicyQuantity::try_from(RawQuantity::Text(value.clone())) {
            Ok(q) if q.amount > Amount::ZERO => a.target_rps = Some(q),
            _ => warnings.push(format!(
                "{TARGET_RPS}: {value:?} is not a positive quantity; ignored"
            )),
        }
    }
    let logs = &mut effective.logs;
    if annotations.get(LOGS).is_some_and(|v| v == "false") {
        logs.enabled = false;
    }
    if let Some(format) = annotations.get(LOG_FORMAT) {
        if LOG_FORMATS.contains(&format.as_str()) {
            logs.format.clone_from(format);
        } else {
            warnings.push(format!(
                "{LOG_FORMAT}: {format:?} is none of {}; ignored",
                LOG_FORMATS.join(", ")
            ));
        }
    }
    if let Some(topic) = annotations.get(LOG_TOPIC) {
        logs.topic = Some(topic.clone());
    }
    if let Some(fields) = annotations.get(LOG_FIELDS) {
        match serde_json::from_str::<BTreeMap<String, String>>(fields) {
            Ok(fields) => logs.fields.extend(fields),
            Err(err) => warnings.push(format!(
                "{LOG_FIELDS}: not a JSON object of strings ({err}); ignored"
            )),
        }
    }
}

fn check_ratios(
    at: &str,
    ratios: &BTreeMap<String, PolicyQuantity>,
) -> Result<(), (String, String)> {
    let one = Amount::parse("1").expect("1 is a quantity");
    match ratios.iter().find(|(_, ratio)| ratio.amount < one) {
        Some((name, ratio)) => Err((
            format!("{at}.resources.maxLimitRequestRatio.{name}"),
            format!(
                "{} is below 1: a limit cannot be below its request",
                ratio.text
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const LAYERED: &str = r#"
defaults:
  environment: staging
  resources:
    requests: { cpu: 100m, memory: 128Mi }
    limits:   { memory: 256Mi }
    maxLimitRequestRatio: { memory: 2 }
  profiles:
    small: { requests: { cpu: 50m, memory: 64Mi }, limits: { memory: 128Mi } }
  autoscaling: { minReplicas: 2, maxReplicas: 10, targetCPU: 50,
                 behavior: { scaleDown: { stabilizationWindowSeconds: 300 } } }
  logs: { enabled: true, format: cri }
  spread: true
namespaces:
  payments: { environment: production, autoscaling: { maxReplicas: 30 },
              resources: { requests: { cpu: 200m } }, logs: { topic: pay } }
exclude: { namespaces: [kube-system, kube-public, skiff-system] }
"#;

    fn layered() -> Policy {
        Policy::parse(Path::new("p.yml"), LAYERED).unwrap()
    }

    #[test]
    fn embedded_default_policy_parses() {
        let policy = Policy::default();
        assert_eq!(policy.defaults.resources.requests["cpu"].text, "100m");
        assert!(policy.excludes("kube-system"));
    }

    #[test]
    fn the_designs_example_parses() {
        let policy = layered();
        assert_eq!(
            policy.namespaces["payments"]
                .autoscaling
                .as_ref()
                .unwrap()
                .max_replicas,
            Some(30)
        );
        let behavior = policy.defaults.autoscaling.behavior.unwrap();
        assert_eq!(
            behavior.scale_down.unwrap().stabilization_window_seconds,
            Some(300)
        );
    }

    #[test]
    fn layers_apply_in_order() {
        let policy = layered();
        let (plain, warnings) = policy.resolve("shop", &BTreeMap::new());
        assert!(warnings.is_empty());
        assert_eq!(plain.environment, "staging");
        assert_eq!(plain.resources.requests["cpu"].text, "100m");
        assert_eq!(plain.autoscaling.max_replicas, 10);

        let (payments, _) = policy.resolve("payments", &BTreeMap::new());
        assert_eq!(payments.environment, "production");
        assert_eq!(payments.resources.requests["cpu"].text, "200m");
        assert_eq!(payments.resources.requests["memory"].text, "128Mi");
        assert_eq!(payments.autoscaling.max_replicas, 30);
        assert_eq!(payments.logs.topic.as_deref(), Some("pay"));

        // The profile beats the namespace, the object's annotations beat the profile.
        let (small, _) = policy.resolve(
            "payments",
            &annotations(&[(PROFILE, "small"), ("skiff.dev/request-memory", "96Mi")]),
        );
        assert_eq!(small.resources.requests["cpu"].text, "50m");
        assert_eq!(small.resources.requests["memory"].text, "96Mi");
        assert_eq!(small.resources.limits["memory"].text, "128Mi");
    }

    #[test]
    fn annotations_set_autoscaling_and_logs() {
        let (e, warnings) = layered().resolve(
            "shop",
            &annotations(&[
                (MIN_REPLICAS, "3"),
                (MAX_REPLICAS, "7"),
                (TARGET_CPU, "70"),
                (TARGET_RPS, "100"),
                (LOGS, "false"),
                (LOG_FORMAT, "json"),
                (LOG_FIELDS, r#"{"team":"shop"}"#),
            ]),
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            (e.autoscaling.min_replicas, e.autoscaling.max_replicas),
            (3, 7)
        );
        assert_eq!(e.autoscaling.target_cpu, 70);
        assert_eq!(e.autoscaling.target_rps.unwrap().text, "100");
        assert!(!e.logs.enabled);
        assert_eq!(e.logs.format, "json");
        assert_eq!(e.logs.fields["team"], "shop");
    }

    #[test]
    fn bad_annotations_warn_and_are_ignored() {
        let (e, warnings) = layered().resolve(
            "shop",
            &annotations(&[
                (PROFILE, "huge"),
                (MIN_REPLICAS, "zero"),
                (MAX_REPLICAS, "1"),
                (TARGET_RPS, "-5"),
                (LOG_FORMAT, "xml"),
                (LOG_FIELDS, "[1]"),
                ("skiff.dev/limit-memory", "lots"),
            ]),
        );
        assert_eq!(warnings.len(), 7, "{warnings:#?}");
        assert_eq!(
            (e.autoscaling.min_replicas, e.autoscaling.max_replicas),
            (2, 2)
        );
        assert_eq!(e.logs.format, "cri");
        assert_eq!(e.resources.limits["memory"].text, "256Mi");
    }

    /// Regression: `skiff.dev/max-replicas: "2147483647"` was taken as is, over any bound the
    /// policy meant to set.
    #[test]
    fn replica_annotations_are_lowered_to_the_ceiling() {
        let (e, warnings) = layered().resolve(
            "shop",
            &annotations(&[(MIN_REPLICAS, "500"), (MAX_REPLICAS, "2147483647")]),
        );
        assert_eq!(
            (e.autoscaling.min_replicas, e.autoscaling.max_replicas),
            (100, 100)
        );
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[1].contains(MAX_REPLICAS) && warnings[1].contains("ceiling of 100"),
            "{warnings:#?}"
        );

        let policy = Policy::parse(
            Path::new("p.yml"),
            &format!("{LAYERED}limits: {{ replicasCeiling: 40 }}\n"),
        )
        .unwrap();
        let (e, warnings) = policy.resolve("shop", &annotations(&[(MAX_REPLICAS, "41")]));
        assert_eq!(e.autoscaling.max_replicas, 40, "{warnings:?}");
        let (e, warnings) = policy.resolve("shop", &annotations(&[(MAX_REPLICAS, "40")]));
        assert_eq!((e.autoscaling.max_replicas, warnings.len()), (40, 0));
    }

    #[test]
    fn the_policys_own_max_replicas_must_fit_the_ceiling() {
        let err = Policy::parse(
            Path::new("p.yml"),
            &format!("{LAYERED}limits: {{ replicasCeiling: 20 }}\n"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), "invalid");
        let err = err.to_string();
        assert!(
            err.contains("namespaces.payments.autoscaling.maxReplicas")
                && err.contains("replicasCeiling 20"),
            "{err}"
        );
        let limits = Policy::parse(
            Path::new("p.yml"),
            &format!("{LAYERED}limits: {{ maxContainers: 8 }}\n"),
        )
        .unwrap()
        .limits;
        assert_eq!(
            limits,
            Limits {
                max_containers: 8,
                replicas_ceiling: 100
            }
        );
    }

    #[test]
    fn the_hash_follows_the_effective_policy_only() {
        let policy = layered();
        let (a, _) = policy.resolve("shop", &BTreeMap::new());
        let (b, _) = policy.resolve("other", &BTreeMap::new());
        let (c, _) = policy.resolve("payments", &BTreeMap::new());
        assert_eq!(a.hash(), b.hash(), "staging everywhere but payments");
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.hash().len(), 16);
    }

    #[test]
    fn unknown_key_is_an_error_with_its_location() {
        let err = Policy::parse(Path::new("p.yml"), "defaults:\n  resorces: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resorces") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_quantities_and_bounds_are_errors_with_their_location() {
        let broken = LAYERED.replace("cpu: 100m", "cpu: 100x");
        let err = Policy::parse(Path::new("p.yml"), &broken)
            .unwrap_err()
            .to_string();
        assert!(err.contains("100x") && err.contains("line"), "{err}");

        let broken = LAYERED.replace("maxReplicas: 30", "maxReplicas: 1");
        let err = Policy::parse(Path::new("p.yml"), &broken).unwrap_err();
        assert_eq!(err.kind(), "invalid");
        assert!(
            err.to_string().contains("namespaces.payments.autoscaling"),
            "{err}"
        );

        let broken = LAYERED.replace("{ memory: 2 }", "{ memory: 0.5 }");
        let err = Policy::parse(Path::new("p.yml"), &broken)
            .unwrap_err()
            .to_string();
        assert!(err.contains("maxLimitRequestRatio.memory"), "{err}");
    }
}
