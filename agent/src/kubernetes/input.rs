//! The `kubernetes` input: exactly the containers of this node's pods annotated
//! `skiff.dev/logs: "true"`, each with the parsers of its `skiff.dev/log-format` and the
//! pod's metadata.
//!
//! The harvest engine watches every container log file under `logs_path`
//! ([`KubernetesInputConfig::filestream`]) and harvests those this input admits
//! ([`Admission`]), looking again whenever [`PodIndex::version`] changes; for each file,
//! [`KubernetesInput::container_of`] tells the processing which parsers to run and which
//! fields to add. A pod that is deleted, or loses its annotation, is no longer admitted: its
//! files are read to their end and closed.

use super::metadata::{LogPath, PodMeta};
use super::watcher::{PodIndex, WatchConfig};
use crate::config::{CloseConfig, FilestreamConfig};
use crate::harvest::Admission;
use crate::process::parse::{ParserConfig, for_log_format};
use crate::process::{BuildError, Event};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `- type: kubernetes` configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesInputConfig {
    /// Names the input in logs and metrics. Default: `kubernetes`.
    #[serde(default = "default_id")]
    pub id: String,
    /// Where the kubelet writes pod logs. Default: `/var/log/pods`.
    #[serde(default = "default_logs_path")]
    pub logs_path: PathBuf,
    /// This node's name. Default: `$NODE_NAME`, else the host name.
    #[serde(default = "default_node")]
    pub node: String,
    /// A kubeconfig file. Default: in-cluster service account, else `$KUBECONFIG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<PathBuf>,
    /// How long start-up waits for the first list of pods. Default: 10s.
    #[serde(default = "default_sync_timeout", with = "humantime_serde")]
    pub sync_timeout: Duration,
}

fn default_id() -> String {
    "kubernetes".to_string()
}

fn default_logs_path() -> PathBuf {
    "/var/log/pods".into()
}

fn default_node() -> String {
    WatchConfig::default().node
}

fn default_sync_timeout() -> Duration {
    WatchConfig::default().sync_timeout
}

impl KubernetesInputConfig {
    /// The watch this input needs.
    pub fn watch(&self) -> WatchConfig {
        WatchConfig {
            node: self.node.clone(),
            kube_config: self.kube_config.clone(),
            sync_timeout: self.sync_timeout,
        }
    }

    /// The files the harvest engine looks at: every container log file under `logs_path`
    /// (`<ns>_<pod>_<uid>/<container>/N.log`; rotated `N.log.<time>[.gz]` files are not
    /// matched, but one already open is read to its end like any rotated file). Which of them
    /// are harvested is the input's [`Admission`].
    pub fn filestream(&self) -> FilestreamConfig {
        let root = glob::Pattern::escape(&self.logs_path.to_string_lossy());
        FilestreamConfig {
            id: self.id.clone(),
            paths: vec![format!("{root}/*/*/*.log")],
            exclude_files: Vec::new(),
            ignore_older: None,
            close: CloseConfig::default(),
            max_bytes: crate::harvest::DEFAULT_MAX_BYTES,
            harvester_limit: 0,
            parsers: Vec::new(),
            processors: Vec::new(),
        }
    }
}

/// One container whose logs are harvested.
#[derive(Debug, Clone)]
pub struct ContainerLog {
    pub pod: Arc<PodMeta>,
    pub container: String,
    /// The parsers of its log format.
    pub parsers: Vec<ParserConfig>,
}

impl ContainerLog {
    /// Adds the pod's and container's fields to an event of this container.
    pub fn enrich(&self, event: &mut Event) {
        self.pod.apply(&self.container, event);
    }
}

/// The `kubernetes` input, with its pod watch running.
#[derive(Clone)]
pub struct KubernetesInput {
    logs_path: PathBuf,
    index: PodIndex,
}

impl KubernetesInput {
    /// Starts the pod watch for `config`.
    pub fn start(config: &KubernetesInputConfig) -> Result<Self, BuildError> {
        Ok(Self::with_index(config, PodIndex::watch(&config.watch())?))
    }

    /// The input over an existing pod index.
    pub fn with_index(config: &KubernetesInputConfig, index: PodIndex) -> Self {
        Self {
            logs_path: config.logs_path.clone(),
            index,
        }
    }

    /// The pod index, to wait for changes ([`PodIndex::wait_changed`]).
    pub fn index(&self) -> &PodIndex {
        &self.index
    }

    /// The harvested container a log file belongs to, if any.
    pub fn container_of(&self, path: &Path) -> Option<ContainerLog> {
        let (pod, container) = self.harvested(path)?;
        Some(self.container(&pod, container))
    }

    /// The pod and container of a log file that is harvested now.
    fn harvested<'p>(&self, path: &'p Path) -> Option<(Arc<PodMeta>, &'p str)> {
        if !path.starts_with(&self.logs_path) {
            return None;
        }
        let log = LogPath::parse(path)?;
        let pod = self.index.get(log.uid)?;
        (pod.harvest && pod.containers.iter().any(|c| c == log.container))
            .then_some((pod, log.container))
    }

    fn container(&self, pod: &Arc<PodMeta>, container: &str) -> ContainerLog {
        let parsers = for_log_format(&pod.log_format).unwrap_or_else(|| {
            tracing::warn!(
                pod = pod.name,
                format = pod.log_format,
                "unknown skiff.dev/log-format; reading it as cri"
            );
            for_log_format("cri").expect("cri is known")
        });
        ContainerLog {
            pod: Arc::clone(pod),
            container: container.to_string(),
            parsers,
        }
    }
}

impl Admission for KubernetesInput {
    fn admits(&self, path: &Path) -> bool {
        self.harvested(path).is_some()
    }

    fn version(&self) -> u64 {
        self.index.version()
    }
}

impl std::fmt::Debug for KubernetesInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesInput")
            .field("logs_path", &self.logs_path)
            .finish_non_exhaustive()
    }
}
