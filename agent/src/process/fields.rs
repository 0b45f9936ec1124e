//! Processors that edit an event's fields: `add_fields`, `rename`, `drop_fields`, and the
//! filters `drop_event`, `include_lines`, `exclude_lines`.

use super::condition::{ConditionConfig, compile};
use super::{BuildError, Event, Value, field};
use regex::RegexSet;
use serde::{Deserialize, Serialize};
use serde_json::Map;

/// `add_fields`: fixed fields, under `target` (`""` for the event's root).
///
/// A string value may reference the event's own fields as `%{[path]}` (the syntax of
/// Filebeat's and Logstash's format strings): `"%{[@timestamp]}"` copies the event's time,
/// `"%{[kubernetes.namespace]}-logs"` builds a string. A value whose reference is missing from
/// the event is not added.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddFieldsConfig {
    /// Where the fields go; `""` is the event's root. Default: `fields`.
    #[serde(default = "default_add_fields_target")]
    pub target: String,
    /// The fields to add; existing values are replaced.
    pub fields: Map<String, serde_json::Value>,
    /// Only for events that match. Default: all events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ConditionConfig>,
}

fn default_add_fields_target() -> String {
    "fields".to_string()
}

/// `rename`: moves fields to new names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RenameConfig {
    /// The renames, applied in order.
    pub fields: Vec<RenameField>,
    /// A missing `from` field is not an error. Default: false.
    #[serde(default)]
    pub ignore_missing: bool,
    /// Only for events that match. Default: all events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ConditionConfig>,
}

/// One rename of [`RenameConfig`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RenameField {
    /// The field's current path.
    pub from: String,
    /// Its new path; an existing field there is an error and is left alone.
    pub to: String,
}

/// `drop_fields`: removes fields.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropFieldsConfig {
    /// The paths to remove. `@timestamp` always comes back: every event has one.
    pub fields: Vec<String>,
    /// A missing field is not an error. Default: true (unlike Filebeat, whose default makes
    /// every event without the field carry an error).
    #[serde(default = "default_true")]
    pub ignore_missing: bool,
    /// Only for events that match. Default: all events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ConditionConfig>,
}

fn default_true() -> bool {
    true
}

/// `drop_event`: drops the events that match `when` (all events without one).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropEventConfig {
    /// Which events to drop. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ConditionConfig>,
}

/// A string value of `add_fields`: literal text and `%{[path]}` references.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Field(String),
}

#[derive(Debug, Clone)]
enum FieldValue {
    Static(Value),
    Template(Vec<Piece>),
}

/// Built `add_fields`.
#[derive(Debug, Clone)]
pub struct AddFields {
    target: String,
    fields: Vec<(String, FieldValue)>,
}

impl AddFields {
    pub fn build(config: &AddFieldsConfig) -> Self {
        let fields = config
            .fields
            .iter()
            .map(|(key, value)| {
                let value = match value.as_str().and_then(template) {
                    Some(pieces) => FieldValue::Template(pieces),
                    None => FieldValue::Static(shared(value.clone().into())),
                };
                (key.clone(), value)
            })
            .collect();
        Self {
            target: config.target.clone(),
            fields,
        }
    }

    pub fn apply(&self, event: &mut Event) {
        for (key, value) in &self.fields {
            let value = match value {
                FieldValue::Static(value) => value.clone(),
                FieldValue::Template(pieces) => match render(pieces, event) {
                    Some(value) => value,
                    None => continue,
                },
            };
            field::object_mut(event, &self.target).insert(key.as_str(), value);
        }
    }
}

/// `value`, with an object in a form every event can share until it changes it.
fn shared(value: Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(object.into_shared()),
        other => other,
    }
}

/// Splits `text` at its `%{[path]}` references; `None` when it has none.
fn template(text: &str) -> Option<Vec<Piece>> {
    if !text.contains("%{[") {
        return None;
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("%{[") {
        let Some(len) = rest[start + 3..].find("]}") else {
            break;
        };
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        pieces.push(Piece::Field(rest[start + 3..start + 3 + len].to_string()));
        rest = &rest[start + 3 + len + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Some(pieces)
}

/// A lone reference keeps the referenced value's type; a mix becomes a string.
fn render(pieces: &[Piece], event: &Event) -> Option<Value> {
    if let [Piece::Field(path)] = pieces {
        return field::get(event, path).cloned();
    }
    let mut out = super::Text::default();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Field(path) => match field::get(event, path)? {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Some(Value::String(out))
}

/// Built `rename`.
#[derive(Debug, Clone)]
pub struct Rename {
    fields: Vec<RenameField>,
    ignore_missing: bool,
}

impl Rename {
    pub fn build(config: &RenameConfig) -> Self {
        Self {
            fields: config.fields.clone(),
            ignore_missing: config.ignore_missing,
        }
    }

    pub fn apply(&self, event: &mut Event) {
        for RenameField { from, to } in &self.fields {
            if field::get(event, to).is_some() {
                field::set_error(event, format!("rename: {to} already exists"));
                continue;
            }
            match field::remove(event, from) {
                Some(value) => {
                    field::insert(event, to, value);
                }
                None if self.ignore_missing => {}
                None => field::set_error(event, format!("rename: {from} is missing")),
            }
        }
    }
}

/// Built `drop_fields`.
#[derive(Debug, Clone)]
pub struct DropFields {
    fields: Vec<String>,
    ignore_missing: bool,
}

impl DropFields {
    pub fn build(config: &DropFieldsConfig) -> Self {
        Self {
            fields: config.fields.clone(),
            ignore_missing: config.ignore_missing,
        }
    }

    pub fn apply(&self, event: &mut Event) {
        for path in &self.fields {
            if field::remove(event, path).is_none() && !self.ignore_missing {
                field::set_error(event, format!("drop_fields: {path} is missing"));
            }
        }
    }
}

/// Built `include_lines` / `exclude_lines`: regular expressions over `message`.
#[derive(Debug, Clone)]
pub struct Lines {
    patterns: RegexSet,
}

impl Lines {
    pub fn build(what: &'static str, patterns: &[String]) -> Result<Self, BuildError> {
        for pattern in patterns {
            compile(what, pattern)?;
        }
        let patterns = RegexSet::new(patterns).map_err(|source| BuildError::InvalidRegex {
            what,
            pattern: patterns.join(" | "),
            source,
        })?;
        Ok(Self { patterns })
    }

    /// Whether the event's `message` matches any pattern (an event without one matches none).
    pub fn matches(&self, event: &Event) -> bool {
        field::get_str(event, "message").is_some_and(|m| self.patterns.is_match(m))
    }
}
