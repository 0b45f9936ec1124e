//! The HPA reconciler: one `autoscaling/v2` HorizontalPodAutoscaler per Deployment the webhook
//! marked, applied server-side, owned by the Deployment, removed on opt-out.
//!
//! Every replica of the webhook runs it; they apply identical objects under one field manager,
//! so running twice is harmless and no leader election is needed.

use crate::cluster::{Cluster, scoped};
use crate::hpa::{self, MANAGER};
use crate::metrics::{Metrics, ResultLabels};
use crate::mutate::{INJECT, POLICY_HASH};
use crate::policy::Policy;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// First retry after a failed reconciliation; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} HorizontalPodAutoscaler {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

impl Error {
    /// The metric label.
    fn kind(&self) -> &'static str {
        match self {
            Self::Kube { action, .. } => action,
        }
    }
}

/// What each reconciliation shares.
pub struct Context {
    pub client: Client,
    pub policy: watch::Receiver<Arc<Policy>>,
    pub cluster: Arc<dyn Cluster>,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    failures: Mutex<HashMap<ObjectRef<Deployment>, u32>>,
}

/// Runs the reconciler over `namespace` (or all namespaces) until `shutdown` completes; every
/// policy change re-reconciles all.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    policy: watch::Receiver<Arc<Policy>>,
    cluster: Arc<dyn Cluster>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let mut changes = policy.clone();
    changes.mark_unchanged();
    let reloads = futures::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        Some(((), changes))
    });
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), MANAGER.into()),
        client: client.clone(),
        policy,
        cluster,
        metrics,
        failures: Mutex::default(),
    });
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let namespace = namespace.as_deref();
    let hpas: Api<HorizontalPodAutoscaler> = scoped(&client, namespace);
    Controller::new(
        scoped::<Deployment>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(hpas, owned)
    .reconcile_all_on(reloads)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(err) = result {
            tracing::debug!(%err, "reconciler event");
        }
    })
    .await;
    tracing::info!("HPA reconciler stopped");
}

/// Brings the HPA of one Deployment in line with its annotations and the policy.
pub async fn reconcile(
    deployment: Arc<Deployment>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = apply(&deployment, &context).await;
    context
        .metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "success",
        Err(err) => err.kind(),
    };
    context
        .metrics
        .reconciles
        .get_or_create(&ResultLabels { result: label })
        .inc();
    if result.is_ok() {
        context
            .failures
            .lock()
            .expect("not poisoned")
            .remove(&ObjectRef::from(deployment.as_ref()));
    }
    result
}

async fn apply(deployment: &Deployment, context: &Context) -> Result<Action, Error> {
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let policy = context.policy.borrow().clone();
    let annotations = deployment.annotations();
    let marked = annotations.contains_key(POLICY_HASH)
        && annotations.get(INJECT).is_none_or(|v| v != "false")
        && !policy.excludes(&namespace);
    let (effective, _) = policy.resolve(&namespace, annotations);
    let vpa = context.cluster.vpa_for(&namespace, &name);
    let wanted = marked
        && effective.autoscaling.enabled
        && vpa.is_none()
        && deployment.metadata.deletion_timestamp.is_none();

    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(context.client.clone(), &namespace);
    let kube_error = |action| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| Error::Kube {
            action,
            namespace,
            name,
            source,
        }
    };
    let existing = api.get_opt(&name).await.map_err(kube_error("get"))?;
    let uid = deployment.metadata.uid.as_deref();
    let owned = existing.as_ref().is_some_and(|h| hpa::owned_by(h, uid));

    if !wanted {
        if owned {
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(kube_error("delete"))?;
            let why = match &vpa {
                Some(vpa) => format!("VerticalPodAutoscaler {vpa} sets CPU or memory"),
                None => "autoscaling is off for this Deployment".to_string(),
            };
            tracing::info!(%namespace, %name, %why, "deleted the HorizontalPodAutoscaler");
            publish(context, deployment, EventType::Normal, "HPADeleted", why).await;
        }
        return Ok(Action::await_change());
    }
    let adopt = annotations.get(hpa::ADOPT).is_some_and(|v| v == "true");
    if existing.is_some() && !owned && !adopt {
        let note = format!(
            "HorizontalPodAutoscaler {name} exists and is not managed by skiff: left alone \
             (set {}: \"true\" to adopt it)",
            hpa::ADOPT
        );
        tracing::warn!(%namespace, %name, "{note}");
        publish(context, deployment, EventType::Warning, "HPANotOwned", note).await;
        return Ok(Action::await_change());
    }
    let desired = hpa::desired(deployment, &effective);
    let params = PatchParams::apply(MANAGER).force();
    let applied = api
        .patch(&name, &params, &Patch::Apply(&desired))
        .await
        .map_err(kube_error("apply"))?;
    if existing.as_ref().map(|h| &h.spec) != Some(&applied.spec) {
        let what = if existing.is_some() {
            "updated"
        } else {
            "created"
        };
        tracing::info!(%namespace, %name, hpa = %hpa::describe(&applied), "{what} the HorizontalPodAutoscaler");
    }
    Ok(Action::await_change())
}

/// Logs and counts the failure; retries with a per-Deployment exponential backoff.
fn error_policy(deployment: Arc<Deployment>, err: &Error, context: Arc<Context>) -> Action {
    let mut failures = context.failures.lock().expect("not poisoned");
    let count = failures
        .entry(ObjectRef::from(deployment.as_ref()))
        .or_insert(0);
    let delay = FIRST_BACKOFF
        .saturating_mul(1 << (*count).min(16))
        .min(MAX_BACKOFF);
    *count += 1;
    tracing::warn!(%err, retry_in = ?delay, "reconciliation failed");
    Action::requeue(delay)
}

/// An Event on the Deployment; failing to record one is only logged.
async fn publish(
    context: &Context,
    deployment: &Deployment,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "ReconcileHPA".into(),
        secondary: None,
    };
    if let Err(err) = context
        .recorder
        .publish(&event, &deployment.object_ref(&()))
        .await
    {
        tracing::warn!(%err, "cannot record an Event");
    }
}
