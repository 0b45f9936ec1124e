//! `user_agent`: browser, version, OS and device of a user-agent string, with `woothee`
//! (Project Woothee's rules compiled into the crate: no data file to ship or keep current at
//! run time). Rejected: `uaparser` and `ua-parser`, which load uap-core's `regexes.yaml`
//! at start-up, a file the agent's image would have to carry and update.
//!
//! Real traffic repeats a few hundred strings, so results are kept in a bounded cache.

use super::{Event, Object, Value, field};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};

/// Only this much of a user-agent string is looked at: real ones are a few hundred bytes, and
/// a 64 KiB one is an attack or a bug, not a browser.
const MAX_LEN: usize = 1024;

/// `user_agent` configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentConfig {
    /// The field with the user-agent string. Default: `user_agent.original`.
    #[serde(default = "default_field")]
    pub field: String,
    /// The object the results go into. Default: `user_agent`.
    #[serde(default = "default_target")]
    pub target: String,
    /// How many distinct strings the cache holds. Default: 10000.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
}

fn default_field() -> String {
    "user_agent.original".to_string()
}

fn default_target() -> String {
    "user_agent".to_string()
}

fn default_cache_size() -> usize {
    10_000
}

/// What one user-agent string yields, shared by the events that carry it.
#[derive(Clone)]
struct Parsed {
    /// The fields found, merged into the target.
    fields: Object,
    /// `fields` and `original`: the whole target of an event whose target held nothing but
    /// the string (an access log's `user_agent`), taken as it is instead of merged into a
    /// copy of its own.
    whole: Object,
}

/// Built `user_agent`.
pub struct UserAgent {
    field: String,
    target: String,
    /// Whether `field` is the target's `original` (the default).
    original_in_target: bool,
    parser: woothee::parser::Parser,
    cache: Cache<String, Parsed>,
}

impl UserAgent {
    pub fn build(config: &UserAgentConfig) -> Self {
        Self {
            field: config.field.clone(),
            target: config.target.clone(),
            original_in_target: config.field == format!("{}.original", config.target),
            parser: woothee::parser::Parser::new(),
            cache: Cache::new(config.cache_size.max(1)),
        }
    }

    pub fn apply(&self, event: &mut Event) {
        let Some(original) = field::get_str(event, &self.field) else {
            return;
        };
        let target_is_original = self.original_in_target
            && original.len() <= MAX_LEN
            && field::get(event, &self.target)
                .and_then(Value::as_object)
                .is_some_and(|target| target.len() == 1 && target.contains_key("original"));
        let original = clip(original);
        let parsed = match self.cache.get(original) {
            Some(parsed) => parsed,
            None => {
                let parsed = self.parse(original);
                self.cache.insert(original.to_string(), parsed.clone());
                parsed
            }
        };
        let target = field::object_mut(event, &self.target);
        if target_is_original {
            *target = parsed.whole;
        } else {
            target.merge(parsed.fields, true);
        }
    }

    fn parse(&self, original: &str) -> Parsed {
        let fields = self.fields(original);
        let mut whole = fields.clone();
        whole.insert("original", original);
        Parsed {
            fields: fields.into_shared(),
            whole: whole.into_shared(),
        }
    }

    /// The fields of `original` that woothee recognises.
    fn fields(&self, original: &str) -> Object {
        let mut fields = Object::with_capacity(5);
        let Some(result) = self.parser.parse(original) else {
            fields.insert("name", "Other");
            return fields;
        };
        let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
        if known(result.name) {
            fields.insert("name", result.name);
        }
        if known(result.version) {
            fields.insert("version", result.version);
        }
        if known(result.os) {
            fields.object_mut("os").insert("name", result.os);
        }
        if known(&result.os_version) {
            fields
                .object_mut("os")
                .insert("version", result.os_version.as_ref());
        }
        // woothee names device classes, not models; ECS's `device.name` is "iPhone" for
        // Apple's devices and otherwise the class, as Elastic's user_agent processor does.
        let device = match (result.os, result.category) {
            (os @ ("iPhone" | "iPad" | "iPod"), _) => Some(os),
            (_, "crawler") => Some("Spider"),
            (_, "smartphone") => Some("Smartphone"),
            (_, "mobilephone") => Some("Mobile phone"),
            (_, "appliance") => Some("Appliance"),
            (_, "pc") => Some("Other"),
            _ => None,
        };
        if let Some(device) = device {
            fields.object_mut("device").insert("name", device);
        }
        fields
    }
}

/// At most [`MAX_LEN`] bytes of `text`, cut at a character boundary.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_LEN {
        return text;
    }
    let mut end = MAX_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
