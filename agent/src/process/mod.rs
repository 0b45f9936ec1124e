//! Turning lines into events, and the processors that enrich them.

use crate::harvest::Line;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::Path;

/// An event: a JSON object with ECS field names.
pub type Event = Map<String, Value>;

/// The event of one line: `@timestamp`, `message`, `log.file.path`, `log.offset`,
/// `host.name`. Invalid UTF-8 is kept lossily and flagged in `log.flags`.
pub fn event_from_line(line: &Line, path: &Path, host: &str) -> Event {
    let (message, flags) = match std::str::from_utf8(&line.bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(&line.bytes).into_owned(),
            Some(json!(["invalid_utf8"])),
        ),
    };
    let mut log = json!({ "file": { "path": path.to_string_lossy() }, "offset": line.offset });
    if let Some(flags) = flags {
        log["flags"] = flags;
    }
    let mut event = Map::new();
    event.insert(
        "@timestamp".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    event.insert("message".into(), message.into());
    event.insert("log".into(), log);
    event.insert("host".into(), json!({ "name": host }));
    event
}

/// A processing step.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorConfig {
    /// Adds fixed fields to each event.
    AddFields(AddFieldsConfig),
}

/// `add_fields`: fixed fields, under `target` (`""` for the event's root).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddFieldsConfig {
    /// Where the fields go; `""` is the event's root. Default: `fields`.
    #[serde(default = "default_add_fields_target")]
    pub target: String,
    /// The fields to add.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

fn default_add_fields_target() -> String {
    "fields".to_string()
}

/// A processor built from its configuration.
pub enum Processor {
    /// Adds fixed fields under a target object (or the root).
    AddFields {
        target: Vec<String>,
        fields: Map<String, Value>,
    },
}

impl Processor {
    pub fn build(config: &ProcessorConfig) -> Self {
        match config {
            ProcessorConfig::AddFields(add) => Processor::AddFields {
                target: add
                    .target
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                fields: add.fields.clone(),
            },
        }
    }

    pub fn apply(&self, event: &mut Event) {
        match self {
            Processor::AddFields { target, fields } => {
                let mut object = event;
                for key in target {
                    let slot = object
                        .entry(key.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    object = slot.as_object_mut().expect("made an object above");
                }
                for (key, value) in fields {
                    object.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bytes: &[u8]) -> Line {
        Line {
            offset: 42,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn event_has_the_ecs_basics() {
        let event = event_from_line(&line(b"hello"), Path::new("/var/log/a.log"), "node-1");
        assert_eq!(event["message"], "hello");
        assert_eq!(event["log"]["file"]["path"], "/var/log/a.log");
        assert_eq!(event["log"]["offset"], 42);
        assert_eq!(event["host"]["name"], "node-1");
        assert!(event["@timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(event["log"].get("flags").is_none());
    }

    #[test]
    fn invalid_utf8_is_kept_and_flagged() {
        let event = event_from_line(&line(b"caf\xe9"), Path::new("a"), "h");
        assert_eq!(event["message"], "caf\u{fffd}");
        assert_eq!(event["log"]["flags"], json!(["invalid_utf8"]));
    }

    #[test]
    fn add_fields_at_root_and_under_a_target() {
        let mut fields = Map::new();
        fields.insert("environment".into(), "production".into());
        let mut event = event_from_line(&line(b"x"), Path::new("a"), "h");
        for target in ["", "labels.team"] {
            Processor::build(&ProcessorConfig::AddFields(AddFieldsConfig {
                target: target.into(),
                fields: fields.clone(),
            }))
            .apply(&mut event);
        }
        assert_eq!(event["environment"], "production");
        assert_eq!(event["labels"]["team"]["environment"], "production");
    }
}
