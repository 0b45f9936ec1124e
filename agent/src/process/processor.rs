//! The `processors:` list: configuration, building (all validation happens here, once) and
//! the chain that runs over every event.

use super::condition::Condition;
use super::fields::{
    AddFields, AddFieldsConfig, DropEventConfig, DropFields, DropFieldsConfig, Lines, Rename,
    RenameConfig,
};
use super::geoip::{GeoIp, GeoIpConfig};
use super::http::{Http, HttpConfig};
use super::timestamp::{Timestamp, TimestampConfig};
use super::user_agent::{UserAgent, UserAgentConfig};
use super::{Event, now_rfc3339};
use crate::kubernetes::{AddKubernetesMetadata, AddKubernetesMetadataConfig};
use serde::{Deserialize, Serialize};

/// One processing step, written as a one-key map (`- add_fields: {…}`) as in filebeat.yml.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorConfig {
    /// Adds fields, fixed or referencing the event's own (`%{[@timestamp]}`).
    AddFields(AddFieldsConfig),
    /// Moves fields.
    Rename(RenameConfig),
    /// Removes fields.
    DropFields(DropFieldsConfig),
    /// Drops the events that match its condition.
    DropEvent(DropEventConfig),
    /// Keeps only events whose `message` matches one of these regular expressions.
    IncludeLines(Vec<String>),
    /// Drops events whose `message` matches one of these regular expressions.
    ExcludeLines(Vec<String>),
    /// Geolocation and autonomous system of an IP address, from MaxMind databases.
    /// `geolocation` is accepted as another name for it.
    #[serde(alias = "geolocation")]
    Geoip(GeoIpConfig),
    /// Browser, OS and device from a user-agent string.
    UserAgent(UserAgentConfig),
    /// Method, URL path and query, status, size and route of an HTTP request.
    Http(HttpConfig),
    /// Parses a time into `@timestamp`.
    Timestamp(TimestampConfig),
    /// Pod metadata and the webhook's annotations for container log files.
    AddKubernetesMetadata(AddKubernetesMetadataConfig),
}

/// Why a processor (or parser) could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("{what}: invalid regular expression {pattern:?}: {source}")]
    InvalidRegex {
        what: &'static str,
        pattern: String,
        source: regex::Error,
    },
    #[error("{what}: {message}")]
    InvalidOption { what: &'static str, message: String },
    #[error("geoip: cannot open {path}: {source}")]
    Database {
        path: std::path::PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("add_kubernetes_metadata: {0}")]
    Kubernetes(String),
}

/// What a processor decided about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Hand the event to the next processor.
    Continue,
    /// Drop the event: it is filtered out and never shipped.
    Drop,
}

/// A processor built from its configuration, with its condition.
pub struct Processor {
    when: Option<Condition>,
    kind: Kind,
}

enum Kind {
    AddFields(AddFields),
    Rename(Rename),
    DropFields(DropFields),
    DropEvent,
    IncludeLines(Lines),
    ExcludeLines(Lines),
    GeoIp(GeoIp),
    UserAgent(UserAgent),
    Http(Http),
    Timestamp(Timestamp),
    Kubernetes(AddKubernetesMetadata),
}

impl Processor {
    /// Validates `config` and builds the processor: regular expressions are compiled and
    /// databases opened here, never per event.
    pub fn build(config: &ProcessorConfig) -> Result<Self, BuildError> {
        let (when, kind) = match config {
            ProcessorConfig::AddFields(c) => (&c.when, Kind::AddFields(AddFields::build(c))),
            ProcessorConfig::Rename(c) => (&c.when, Kind::Rename(Rename::build(c))),
            ProcessorConfig::DropFields(c) => (&c.when, Kind::DropFields(DropFields::build(c))),
            ProcessorConfig::DropEvent(c) => (&c.when, Kind::DropEvent),
            ProcessorConfig::IncludeLines(p) => {
                (&None, Kind::IncludeLines(Lines::build("include_lines", p)?))
            }
            ProcessorConfig::ExcludeLines(p) => {
                (&None, Kind::ExcludeLines(Lines::build("exclude_lines", p)?))
            }
            ProcessorConfig::Geoip(c) => (&None, Kind::GeoIp(GeoIp::build(c)?)),
            ProcessorConfig::UserAgent(c) => (&None, Kind::UserAgent(UserAgent::build(c))),
            ProcessorConfig::Http(c) => (&None, Kind::Http(Http::build(c))),
            ProcessorConfig::Timestamp(c) => (&None, Kind::Timestamp(Timestamp::build(c)?)),
            ProcessorConfig::AddKubernetesMetadata(c) => {
                (&None, Kind::Kubernetes(AddKubernetesMetadata::build(c)?))
            }
        };
        Ok(Self {
            when: when.as_ref().map(Condition::build).transpose()?,
            kind,
        })
    }

    /// Applies the processor to `event` (if its condition holds).
    pub fn apply(&self, event: &mut Event) -> Flow {
        if self.when.as_ref().is_some_and(|c| !c.matches(event)) {
            return Flow::Continue;
        }
        match &self.kind {
            Kind::AddFields(p) => p.apply(event),
            Kind::Rename(p) => p.apply(event),
            Kind::DropFields(p) => p.apply(event),
            Kind::DropEvent => return Flow::Drop,
            Kind::IncludeLines(lines) if !lines.matches(event) => return Flow::Drop,
            Kind::ExcludeLines(lines) if lines.matches(event) => return Flow::Drop,
            Kind::IncludeLines(_) | Kind::ExcludeLines(_) => {}
            Kind::GeoIp(p) => p.apply(event),
            Kind::UserAgent(p) => p.apply(event),
            Kind::Http(p) => p.apply(event),
            Kind::Timestamp(p) => p.apply(event),
            Kind::Kubernetes(p) => p.apply(event),
        }
        Flow::Continue
    }
}

/// A list of processors, run in order.
#[derive(Default)]
pub struct Processors {
    steps: Vec<Processor>,
}

impl Processors {
    /// Builds every processor of `configs`; the first that fails names itself and its index.
    pub fn build(configs: &[ProcessorConfig]) -> Result<Self, BuildError> {
        let steps = configs
            .iter()
            .map(Processor::build)
            .collect::<Result<_, _>>()?;
        Ok(Self { steps })
    }

    /// Runs the processors over `event`. Returns `false` when one of them dropped it.
    /// Every event that is kept has an `@timestamp`, even if a processor removed it.
    #[must_use]
    pub fn run(&self, event: &mut Event) -> bool {
        for step in &self.steps {
            if step.apply(event) == Flow::Drop {
                return false;
            }
        }
        if !event.contains_key("@timestamp") {
            event.insert("@timestamp", now_rfc3339());
        }
        true
    }
}

/// Parses a `processors:` list from YAML text in the filebeat shape (one-key maps).
#[cfg(test)]
pub(crate) fn from_yaml(yaml: &str) -> Vec<ProcessorConfig> {
    serde_yaml::with::singleton_map_recursive::deserialize(serde_yaml::Deserializer::from_str(yaml))
        .expect("valid processors")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Event {
        value.as_object().unwrap().clone().into()
    }

    #[test]
    fn every_kept_event_has_a_timestamp() {
        let processors = Processors::build(&from_yaml(
            "- drop_fields: { fields: ['@timestamp'] }\n- drop_event: { when: { has_fields: [x] } }",
        ))
        .unwrap();
        let mut kept = event(json!({ "@timestamp": "2026-01-01T00:00:00.000Z" }));
        assert!(processors.run(&mut kept));
        assert_ne!(
            kept["@timestamp"], "2026-01-01T00:00:00.000Z",
            "now, once dropped"
        );
        assert!(!processors.run(&mut event(json!({ "x": 1 }))));
    }

    #[test]
    fn a_bad_processor_fails_to_build_with_its_name() {
        let err = Processors::build(&from_yaml("- exclude_lines: ['[']"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("exclude_lines: invalid regular expression"),
            "{err}"
        );
    }
}
