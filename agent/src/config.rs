//! The agent's configuration file, shaped like filebeat.yml.

use crate::kubernetes::KubernetesInputConfig;
use crate::metrics::MetricsConfig;
use crate::output::console::ConsoleConfig;
use crate::output::elasticsearch::ElasticsearchConfig;
use crate::output::file::FileConfig;
use crate::output::kafka::KafkaConfig;
use crate::output::logstash::LogstashConfig;
use crate::process::ProcessorConfig;
use crate::queue::QueueConfig;
use crate::registry::RegistryConfig;
use crate::watch::WatchConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not YAML, or not the shape of the configuration: `key` is the path of the offending
    /// key (`processors[1].geoip.databse`), and the message ends with its line and column.
    #[error("{path}: {key}: {message}")]
    Parse {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "{path}: environment variable {name} is not set and has no default (write ${{{name}:default}})"
    )]
    MissingVariable { path: PathBuf, name: String },
    #[error("{path}: no output is configured (add `output.console: {{}}`)")]
    NoOutput { path: PathBuf },
    #[error("{path}: input {id:?}: {message}")]
    Input {
        path: PathBuf,
        id: String,
        message: String,
    },
    #[error("{path}: {output}: {message}")]
    Output {
        path: PathBuf,
        output: &'static str,
        message: String,
    },
}

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where logs come from.
    pub inputs: Vec<InputConfig>,
    /// Applied to every event, in order. Each is a one-key map, `- add_fields: {…}`, as in
    /// filebeat.yml (serde_yaml's default for enums would be a `!add_fields` tag).
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub processors: Vec<ProcessorConfig>,
    /// Prints events as NDJSON on stdout.
    #[serde(
        rename = "output.console",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub console: Option<ConsoleConfig>,
    /// Appends events as NDJSON to a file, fsynced before they count as delivered.
    #[serde(
        rename = "output.file",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub file: Option<FileConfig>,
    /// Produces events to Kafka, acknowledged by delivery reports.
    #[serde(
        rename = "output.kafka",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kafka: Option<KafkaConfig>,
    /// Indexes events through Elasticsearch's (or OpenSearch's) `_bulk` API.
    #[serde(
        rename = "output.elasticsearch",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub elasticsearch: Option<ElasticsearchConfig>,
    /// Sends events to Logstash's Beats input (lumberjack v2).
    #[serde(
        rename = "output.logstash",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub logstash: Option<LogstashConfig>,
    /// How files are discovered.
    #[serde(default)]
    pub watch: WatchConfig,
    /// Between the readers and the outputs: the memory queue's bounds, or a disk queue.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Where delivered offsets are kept.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// One source of log files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputConfig {
    /// Files matched by glob patterns.
    Filestream(FilestreamConfig),
    /// The container logs of this node's pods annotated `skiff.dev/logs: "true"`, parsed by
    /// their `skiff.dev/log-format` and enriched with their metadata.
    Kubernetes(KubernetesInputConfig),
}

impl InputConfig {
    /// Names the input in logs, metrics and errors.
    pub fn id(&self) -> &str {
        match self {
            InputConfig::Filestream(filestream) => &filestream.id,
            InputConfig::Kubernetes(kubernetes) => &kubernetes.id,
        }
    }
}

/// `type: filestream`: files matched by glob patterns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilestreamConfig {
    /// Names the input in logs and metrics.
    pub id: String,
    /// Glob patterns (absolute) of the files to harvest.
    pub paths: Vec<String>,
    /// Regular expressions: matching paths are not harvested. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_files: Vec<String>,
    /// Files not modified for this long are skipped when first found (a file already in
    /// the registry is always resumed). Default: none skipped.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ignore_older: Option<Duration>,
    /// When open files are closed.
    #[serde(default)]
    pub close: CloseConfig,
    /// Longest line kept whole; longer lines are cut and flagged `truncated`.
    /// Default: 10 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Most files of this input open at once; 0 is unlimited. Default: 0.
    #[serde(default)]
    pub harvester_limit: usize,
    /// How lines become messages (`container`, `ndjson`, `multiline`, `nginx`, `apache`),
    /// in order, each a one-key map as in filebeat.yml. Default: none (a line is a message).
    #[serde(
        default,
        with = "serde_yaml::with::singleton_map_recursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub parsers: Vec<crate::process::parse::ParserConfig>,
    /// Processors for this input's events, run before the global ones. Default: none.
    #[serde(
        default,
        with = "serde_yaml::with::singleton_map_recursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub processors: Vec<ProcessorConfig>,
}

fn default_max_bytes() -> usize {
    crate::harvest::DEFAULT_MAX_BYTES
}

/// `close`: when a harvested file is closed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloseConfig {
    /// A file with no new bytes for this long is closed (and reopened when it grows).
    /// Default: 5m.
    #[serde(default = "default_close_inactive", with = "humantime_serde")]
    pub inactive: Duration,
    /// A file renamed away or deleted is closed once read to its end, idle this long, and
    /// acknowledged by every output (until then it stays open: pinned). Default: 1s.
    #[serde(default = "default_close_removed", with = "humantime_serde")]
    pub removed: Duration,
    /// Most bytes of deleted files this input keeps pinned past `removed`: beyond it the
    /// oldest are closed, unacknowledged or unread (a warning and the
    /// `harvest_pinned_released` metric say so). Default: 1GiB.
    #[serde(
        default = "default_close_removed_budget",
        deserialize_with = "crate::queue::config::byte_size"
    )]
    pub removed_budget: u64,
}

impl Default for CloseConfig {
    fn default() -> Self {
        Self {
            inactive: default_close_inactive(),
            removed: default_close_removed(),
            removed_budget: default_close_removed_budget(),
        }
    }
}

fn default_close_inactive() -> Duration {
    Duration::from_secs(300)
}

fn default_close_removed() -> Duration {
    Duration::from_secs(1)
}

fn default_close_removed_budget() -> u64 {
    1 << 30
}

impl Config {
    /// Reads, expands `${VAR}` / `${VAR:default}`, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Like [`Config::load`], from text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let lookup = |name: &str| std::env::var(name).ok().or_else(|| event_reference(name));
        let expanded = expand_env(text, lookup).map_err(|name| ConfigError::MissingVariable {
            path: path.to_path_buf(),
            name,
        })?;
        let config: Config =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&expanded))
                .map_err(|err| {
                    let key = err.path().to_string();
                    let message = err.into_inner().to_string();
                    // serde_yaml names the enclosing object itself; the key path is more precise.
                    let message = match message.split_once(": ") {
                        Some((prefix, rest)) if key.starts_with(prefix) => rest.to_string(),
                        _ => message,
                    };
                    ConfigError::Parse {
                        path: path.to_path_buf(),
                        key,
                        message,
                    }
                })?;
        if config.console.is_none()
            && config.file.is_none()
            && config.kafka.is_none()
            && config.elasticsearch.is_none()
            && config.logstash.is_none()
        {
            return Err(ConfigError::NoOutput {
                path: path.to_path_buf(),
            });
        }
        let checks = [
            (
                "output.kafka",
                config.kafka.as_ref().map(KafkaConfig::validate),
            ),
            (
                "output.elasticsearch",
                config
                    .elasticsearch
                    .as_ref()
                    .map(ElasticsearchConfig::validate),
            ),
            (
                "output.logstash",
                config.logstash.as_ref().map(LogstashConfig::validate),
            ),
        ];
        for (output, check) in checks {
            if let Some(Err(message)) = check {
                return Err(ConfigError::Output {
                    path: path.to_path_buf(),
                    output,
                    message,
                });
            }
        }
        for input in &config.inputs {
            let invalid = |message: String| ConfigError::Input {
                path: path.to_path_buf(),
                id: input.id().to_string(),
                message,
            };
            let filestream = match input {
                InputConfig::Filestream(filestream) => filestream,
                InputConfig::Kubernetes(kubernetes) => {
                    if !kubernetes.logs_path.is_absolute() {
                        return Err(invalid("`logs_path` is not an absolute path".into()));
                    }
                    if kubernetes.node.is_empty() {
                        return Err(invalid(
                            "`node` is empty (set NODE_NAME from spec.nodeName)".into(),
                        ));
                    }
                    continue;
                }
            };
            if filestream.paths.is_empty() {
                return Err(invalid("`paths` is empty".into()));
            }
            if let Err(err) = crate::harvest::FileInput::build(filestream) {
                return Err(invalid(err.to_string()));
            }
        }
        Ok(config)
    }
}

/// The value of an unset `${NAME}` that names a field every event has, rather than a
/// variable: `${timestamp}` is the event's own time, `%{[@timestamp]}`, which `add_fields`
/// resolves per event. The product's seed configuration writes `timestamp: "${timestamp}"`,
/// and what its author expects there is the time of the event, not a start-up failure nor a
/// fixed start-up time. A variable `timestamp` that is set still wins.
fn event_reference(name: &str) -> Option<String> {
    (name == "timestamp").then(|| "%{[@timestamp]}".to_string())
}

/// Replaces `${NAME}` and `${NAME:default}` with the variable's value (or the default).
/// A variable that is unset and has no default is an error naming it. `$${` escapes.
fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let body = &rest[start + 2..start + 2 + len];
        let (name, default) = match body.split_once(':') {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(name.to_string()),
        }
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        (name == "ENVIRONMENT").then(|| "production".to_string())
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(
            expand_env("a: ${ENVIRONMENT}, b: ${REGION:eu-west-1}", vars).unwrap(),
            "a: production, b: eu-west-1"
        );
    }

    #[test]
    fn missing_variable_without_default_is_named() {
        assert_eq!(expand_env("x: ${NOPE}", vars).unwrap_err(), "NOPE");
    }

    #[test]
    fn dollar_dollar_escapes() {
        assert_eq!(expand_env("x: $${HOME}", vars).unwrap(), "x: ${HOME}");
    }

    #[test]
    fn parses_the_filebeat_shape() {
        let yaml = r#"
inputs:
  - type: filestream
    id: app
    paths: [/var/log/app/*.log]
processors:
  - add_fields: { target: "", fields: { environment: "${ENVIRONMENT:dev}", service_name: my-microservice } }
output.console: { pretty: false }
"#;
        let config = Config::parse(Path::new("agent.yml"), yaml).unwrap();
        let InputConfig::Filestream(FilestreamConfig { id, paths, .. }) = &config.inputs[0] else {
            panic!("not filestream: {:?}", config.inputs[0]);
        };
        assert_eq!(
            (id.as_str(), paths[0].as_str()),
            ("app", "/var/log/app/*.log")
        );
        let crate::process::ProcessorConfig::AddFields(add) = &config.processors[0] else {
            panic!("not add_fields: {:?}", config.processors[0]);
        };
        assert_eq!(add.target, "");
        assert_eq!(add.fields["service_name"], "my-microservice");
        assert!(config.console.is_some());
    }

    #[test]
    fn type_errors_name_the_key_path_and_line() {
        let yaml = "inputs: []\noutput.console: {}\nprocessors:\n  - add_fields: { fields: {} }\n  - geoip:\n      field: client.ip\n      databse: /x.mmdb\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("agent.yml: processors[1].geoip.databse: unknown field `databse`"),
            "{err}"
        );
        assert!(err.contains("line 7"), "{err}");
        let yaml = "inputs: []\noutput.console: {}\nprocessors: [ { user_agent: { cache_size: lots } } ]\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("processors[0].user_agent.cache_size: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn unset_timestamp_variable_is_the_event_time() {
        let yaml = "inputs: []\noutput.console: {}\nprocessors: [ { add_fields: { target: '', fields: { timestamp: '${timestamp}' } } } ]\n";
        let config = Config::parse(Path::new("agent.yml"), yaml).unwrap();
        let crate::process::ProcessorConfig::AddFields(add) = &config.processors[0] else {
            panic!("not add_fields");
        };
        assert_eq!(add.fields["timestamp"], "%{[@timestamp]}");
    }

    #[test]
    fn parses_several_outputs_and_the_queue() {
        let yaml = r#"
inputs: []
output.kafka: { hosts: ["kafka:9092"], topic: "logs-%{[service.name]}", compression: zstd, required_acks: -1 }
output.elasticsearch: { hosts: ["https://es:9200"], api_key: "id:key" }
output.logstash: { hosts: ["ls:5044"] }
queue: { mem: { events: 8192 }, disk: { path: /var/lib/skiff/queue, max_size: 1GiB } }
"#;
        let config = Config::parse(Path::new("agent.yml"), yaml).unwrap();
        assert_eq!(config.kafka.unwrap().hosts, ["kafka:9092"]);
        assert_eq!(
            config.elasticsearch.unwrap().api_key.as_deref(),
            Some("id:key")
        );
        assert_eq!(config.logstash.unwrap().hosts, ["ls:5044"]);
        assert_eq!(config.queue.disk.unwrap().max_size, 1 << 30);
    }

    #[test]
    fn an_invalid_output_is_an_error_that_names_it() {
        let yaml = "inputs: []\noutput.kafka: { hosts: [k:9092], required_acks: 1 }\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output.kafka") && err.contains("idempotent"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_that_names_it() {
        let yaml = "inputs: []\nouptut.console: {}\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ouptut.console"), "{err}");
    }

    #[test]
    fn parses_the_kubernetes_input_with_its_defaults() {
        let yaml = "inputs:\n  - type: kubernetes\n    node: node-a\n  - { type: kubernetes, id: k2, node: node-a, logs_path: /logs, kube_config: /k, sync_timeout: 2s }\noutput.console: {}\n";
        let config = Config::parse(Path::new("agent.yml"), yaml).unwrap();
        let InputConfig::Kubernetes(defaults) = &config.inputs[0] else {
            panic!("not kubernetes: {:?}", config.inputs[0]);
        };
        assert_eq!(config.inputs[0].id(), "kubernetes");
        assert_eq!(defaults.logs_path, Path::new("/var/log/pods"));
        assert_eq!(defaults.kube_config, None);
        assert_eq!(defaults.sync_timeout, Duration::from_secs(10));
        assert_eq!(
            defaults.filestream().paths,
            ["/var/log/pods/*/*/*.log"],
            "every container log file; the pods decide which are read"
        );
        let InputConfig::Kubernetes(set) = &config.inputs[1] else {
            panic!("not kubernetes: {:?}", config.inputs[1]);
        };
        assert_eq!(
            (set.id.as_str(), set.logs_path.as_path(), set.sync_timeout),
            ("k2", Path::new("/logs"), Duration::from_secs(2))
        );
        // What `check-config` prints reads back the same.
        let printed = serde_yaml::to_string(&config).unwrap();
        assert!(printed.contains("type: kubernetes"), "{printed}");
        let again = Config::parse(Path::new("printed.yml"), &printed).unwrap();
        assert_eq!(again.inputs[1].id(), "k2");

        let yaml =
            "inputs: [ { type: kubernetes, node: n, logs_path: pods } ]\noutput.console: {}\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"kubernetes\": `logs_path`"), "{err}");
        let yaml = "inputs: [ { type: kubernetes, node: n, paths: [/x] } ]\noutput.console: {}\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `paths`"), "{err}");
    }

    #[test]
    fn bad_glob_is_an_error() {
        let yaml = "inputs: [ { type: filestream, id: x, paths: ['/var/log/[.log'] } ]\noutput.console: {}\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid glob"), "{err}");
    }
}
