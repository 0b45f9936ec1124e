//! `ndjson`: decodes a message that is a JSON object into the event (or under a target).

use super::message;
use crate::process::{Event, Object, Value, field};
use serde::{Deserialize, Serialize};

/// `ndjson` parser configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonConfig {
    /// Where the decoded keys go; `""` is the event's root, where the raw line (`message`) is
    /// replaced by the object's own keys. Default: `""`.
    #[serde(default)]
    pub target: String,
    /// At the root, decoded keys replace fields the agent set (`@timestamp`, `log.offset`,
    /// `host.name`…); otherwise the agent's are kept. Objects on both sides are merged key by
    /// key either way (a line's `log.level` joins the agent's `log`). Default: false.
    #[serde(default)]
    pub overwrite_keys: bool,
    /// Dotted keys (`"log.level"`) become nested objects, as ECS loggers write them.
    /// Default: false.
    #[serde(default)]
    pub expand_keys: bool,
    /// The decoded key whose string becomes `message` (for multiline and filters after this
    /// parser). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_key: Option<String>,
}

/// Built `ndjson` parser.
#[derive(Debug, Clone)]
pub struct Ndjson {
    config: NdjsonConfig,
}

impl Ndjson {
    pub fn build(config: &NdjsonConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }

    /// Decodes `message`; a line that is not a JSON object keeps its text and gets
    /// `error.message`.
    pub fn apply(&self, event: &mut Event) {
        let decoded = match message(event).map(serde_json::from_str::<Value>) {
            None => return,
            Some(Ok(Value::Object(object))) => object,
            Some(Ok(_)) => {
                return field::set_error(event, "ndjson: the line is JSON but not an object");
            }
            Some(Err(err)) => {
                return field::set_error(event, format!("ndjson: cannot decode the line: {err}"));
            }
        };
        let decoded = if self.config.expand_keys {
            expand(decoded)
        } else {
            decoded
        };
        let message_text = self
            .config
            .message_key
            .as_deref()
            .and_then(|key| field::get(&decoded, key)?.as_str().map(Value::from));
        if self.config.target.is_empty() {
            event.remove("message");
            event.merge(decoded, self.config.overwrite_keys);
        } else {
            field::insert(event, &self.config.target, decoded);
        }
        if let Some(text) = message_text {
            event.insert("message", text);
        }
    }
}

/// Turns `{"log.level": "x"}` into `{"log": {"level": "x"}}`, recursively.
fn expand(object: Object) -> Object {
    let mut out = Object::with_capacity(object.len());
    for (key, value) in object {
        let value = match value {
            Value::Object(inner) => Value::Object(expand(inner)),
            other => other,
        };
        field::insert(&mut out, &key, value);
    }
    out
}
