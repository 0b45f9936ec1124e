//! Kubernetes: the pods of this node and the webhook's annotations on them, turned into
//! event fields (`add_kubernetes_metadata`) and into the list of container log files the
//! `kubernetes` input harvests.

pub mod input;
pub mod metadata;
pub mod watcher;

pub use input::{ContainerLog, KubernetesInput, KubernetesInputConfig};
pub use metadata::{LogPath, PodMeta};
pub use watcher::{PodIndex, WatchConfig};

use crate::process::{BuildError, Event, field};
use std::path::Path;

/// `add_kubernetes_metadata` configuration: where the pods come from.
pub type AddKubernetesMetadataConfig = WatchConfig;

/// Built `add_kubernetes_metadata`: adds the pod's fields to events of files under
/// `/var/log/pods` (by `log.file.path`).
pub struct AddKubernetesMetadata {
    index: PodIndex,
}

impl AddKubernetesMetadata {
    /// Starts the pod watch (waiting for the first list, up to `sync_timeout`).
    pub fn build(config: &AddKubernetesMetadataConfig) -> Result<Self, BuildError> {
        Ok(Self {
            index: PodIndex::watch(config)?,
        })
    }

    /// Enriches events whose file belongs to a known pod; others pass unchanged.
    pub fn apply(&self, event: &mut Event) {
        let Some(path) = field::get_str(event, "log.file.path") else {
            return;
        };
        let path = Path::new(path);
        let Some(log) = LogPath::parse(path) else {
            return;
        };
        let container = log.container.to_string();
        if let Some(pod) = self.index.get(log.uid) {
            pod.apply(&container, event);
        }
    }
}
