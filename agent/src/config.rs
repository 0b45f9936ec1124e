//! The agent's configuration file, shaped like filebeat.yml.

use crate::output::console::ConsoleConfig;
use crate::process::ProcessorConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
}

/// One source of log files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputConfig {
    /// Files matched by glob patterns.
    Filestream {
        /// Names the input in logs and metrics.
        id: String,
        /// Glob patterns of the files to harvest.
        paths: Vec<String>,
    },
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
        let expanded = expand_env(text, |name| std::env::var(name).ok()).map_err(|name| {
            ConfigError::MissingVariable {
                path: path.to_path_buf(),
                name,
            }
        })?;
        let config: Config =
            serde_yaml::from_str(&expanded).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if config.console.is_none() {
            return Err(ConfigError::NoOutput {
                path: path.to_path_buf(),
            });
        }
        for input in &config.inputs {
            let InputConfig::Filestream { id, paths } = input;
            if paths.is_empty() {
                return Err(ConfigError::Input {
                    path: path.to_path_buf(),
                    id: id.clone(),
                    message: "`paths` is empty".into(),
                });
            }
            if let Some(bad) = paths.iter().find(|p| glob::Pattern::new(p).is_err()) {
                return Err(ConfigError::Input {
                    path: path.to_path_buf(),
                    id: id.clone(),
                    message: format!("{bad:?} is not a valid glob pattern"),
                });
            }
        }
        Ok(config)
    }
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
        let InputConfig::Filestream { id, paths } = &config.inputs[0];
        assert_eq!(
            (id.as_str(), paths[0].as_str()),
            ("app", "/var/log/app/*.log")
        );
        let crate::process::ProcessorConfig::AddFields(add) = &config.processors[0];
        assert_eq!(add.target, "");
        assert_eq!(add.fields["service_name"], "my-microservice");
        assert!(config.console.is_some());
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
    fn bad_glob_is_an_error() {
        let yaml = "inputs: [ { type: filestream, id: x, paths: ['/var/log/[.log'] } ]\noutput.console: {}\n";
        let err = Config::parse(Path::new("agent.yml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid glob"), "{err}");
    }
}
