//! The policy: what the webhook injects, per namespace.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The policy used when no file is given.
const DEFAULT_POLICY: &str = include_str!("default-policy.yml");

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
}

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What every Deployment gets.
    pub defaults: Defaults,
    /// Namespaces the webhook leaves alone.
    #[serde(default)]
    pub exclude: Exclude,
}

/// Cluster-wide defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Requests and limits filled into containers that lack them.
    pub resources: Resources,
    /// Log shipping annotations.
    pub logs: Logs,
}

/// Resource quantities by resource name (`cpu`, `memory`), as Kubernetes writes them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
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
}

/// Namespaces left alone.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    #[serde(default)]
    pub namespaces: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_format() -> String {
    "cri".to_string()
}

impl Default for Policy {
    fn default() -> Self {
        Self::parse(Path::new("default-policy.yml"), DEFAULT_POLICY)
            .expect("the embedded default policy is valid (tested)")
    }
}

impl Policy {
    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses policy text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        serde_yaml::from_str(text).map_err(|source| PolicyError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether Deployments of `namespace` pass untouched.
    pub fn excludes(&self, namespace: &str) -> bool {
        self.exclude.namespaces.iter().any(|n| n == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_policy_parses() {
        let policy = Policy::default();
        assert_eq!(policy.defaults.resources.requests["cpu"], "100m");
        assert!(policy.excludes("kube-system"));
    }

    #[test]
    fn unknown_key_is_an_error_with_its_location() {
        let err = Policy::parse(Path::new("p.yml"), "defaults:\n  resorces: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resorces") && err.contains("line 2"), "{err}");
    }
}
