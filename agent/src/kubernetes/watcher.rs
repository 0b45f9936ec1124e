//! The pods of this node, kept current by a kube-rs watcher (`spec.nodeName=<node>` field
//! selector, so the API server sends only this node's pods, as the kubelet's own watch does).
//!
//! The watch runs on its own thread and tokio runtime: processors and inputs are built from
//! synchronous code, and the watch must not depend on whichever executor the caller has.

use super::metadata::PodMeta;
use crate::process::BuildError;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Duration;

/// How to reach the API server and which node's pods to watch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// This node's name. Default: `$NODE_NAME` (the DaemonSet sets it from `spec.nodeName`),
    /// else the host name.
    #[serde(default = "default_node")]
    pub node: String,
    /// A kubeconfig file. Default: in-cluster service account, else `$KUBECONFIG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<PathBuf>,
    /// How long start-up waits for the first full list of pods, so the first lines read are
    /// already enriched. The agent starts anyway after it. Default: 10s.
    #[serde(default = "default_sync_timeout", with = "humantime_serde")]
    pub sync_timeout: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            node: default_node(),
            kube_config: None,
            sync_timeout: default_sync_timeout(),
        }
    }
}

fn default_node() -> String {
    std::env::var("NODE_NAME").unwrap_or_else(|_| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

fn default_sync_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The pods of this node by uid, shared by everyone that reads them.
#[derive(Clone, Default)]
pub struct PodIndex {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    pods: RwLock<HashMap<String, Arc<PodMeta>>>,
    /// Bumped on every change; waiters are woken through `changed`.
    version: Mutex<Version>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy)]
struct Version {
    changes: u64,
    synced: bool,
}

impl PodIndex {
    /// Starts watching `config.node`'s pods and waits up to `sync_timeout` for the first list.
    pub fn watch(config: &WatchConfig) -> Result<Self, BuildError> {
        let index = PodIndex::default();
        let weak = Arc::downgrade(&index.shared);
        let config_for_thread = config.clone();
        std::thread::Builder::new()
            .name("pod-watch".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => return tracing::error!(%err, "cannot start the pod watch"),
                };
                runtime.block_on(run(config_for_thread, weak));
            })
            .map_err(|err| BuildError::Kubernetes(format!("cannot start the pod watch: {err}")))?;
        if !index.wait_synced(config.sync_timeout) {
            tracing::warn!(
                node = config.node,
                "no list of this node's pods within {:?}; starting anyway",
                config.sync_timeout
            );
        }
        Ok(index)
    }

    /// The pod with this uid.
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.shared
            .pods
            .read()
            .expect("never poisoned")
            .get(uid)
            .cloned()
    }

    /// A number that changes whenever the set of pods or their metadata does.
    pub fn version(&self) -> u64 {
        self.shared.version.lock().expect("never poisoned").changes
    }

    /// Waits until the first full list arrived; `false` after `timeout`.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let version = self.shared.version.lock().expect("never poisoned");
        let (version, _) = self
            .shared
            .changed
            .wait_timeout_while(version, timeout, |v| !v.synced)
            .expect("never poisoned");
        version.synced
    }

    /// Waits until [`PodIndex::version`] differs from `seen`; returns the new version, or
    /// `seen` after `timeout`.
    pub fn wait_changed(&self, seen: u64, timeout: Duration) -> u64 {
        let version = self.shared.version.lock().expect("never poisoned");
        let (version, _) = self
            .shared
            .changed
            .wait_timeout_while(version, timeout, |v| v.changes == seen)
            .expect("never poisoned");
        version.changes
    }

    fn update(&self, change: impl FnOnce(&mut HashMap<String, Arc<PodMeta>>), synced: bool) {
        change(&mut self.shared.pods.write().expect("never poisoned"));
        let mut version = self.shared.version.lock().expect("never poisoned");
        version.changes += 1;
        version.synced |= synced;
        self.shared.changed.notify_all();
    }
}

/// Keeps the index current until every handle on it is dropped.
async fn run(config: WatchConfig, index: Weak<Shared>) {
    let client = match client(&config).await {
        Ok(client) => client,
        Err(err) => {
            return tracing::error!(%err, "cannot reach the Kubernetes API; pods are unknown");
        }
    };
    let pods: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", config.node);
    let mut events = watcher(pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut initial: HashMap<String, Arc<PodMeta>> = HashMap::new();
    // Checks now and then whether anyone still reads the index, since a quiet watch may
    // not yield for a long time.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tick.tick() => {
                if index.strong_count() == 0 { return; }
                continue;
            }
        };
        let Some(shared) = index.upgrade() else {
            return;
        };
        let index = PodIndex { shared };
        match event {
            None => return,
            Some(Err(err)) => tracing::warn!(%err, "pod watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => initial.clear(),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                if let Some(meta) = PodMeta::from_pod(&pod) {
                    initial.insert(meta.uid.clone(), Arc::new(meta));
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let listed = std::mem::take(&mut initial);
                index.update(|pods| *pods = listed, true);
            }
            Some(Ok(watcher::Event::Apply(pod))) => {
                if let Some(meta) = PodMeta::from_pod(&pod) {
                    index.update(
                        |pods| drop(pods.insert(meta.uid.clone(), Arc::new(meta))),
                        false,
                    );
                }
            }
            Some(Ok(watcher::Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid {
                    index.update(|pods| drop(pods.remove(&uid)), false);
                }
            }
        }
    }
}

async fn client(config: &WatchConfig) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    // kube's rustls needs a process-wide crypto provider; another part may have installed it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube_config = match &config.kube_config {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(kube_config)?)
}
