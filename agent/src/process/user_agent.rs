//! `user_agent`: browser, version, OS and device of a user-agent string, with `woothee`
//! (Project Woothee's rules compiled into the crate: no data file to ship or keep current at
//! run time). Rejected: `uaparser` and `ua-parser`, which load uap-core's `regexes.yaml`
//! at start-up, a file the agent's image would have to carry and update.
//!
//! Real traffic repeats a few hundred strings, so results are kept in a bounded cache.

use super::{Event, Object, field};
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

/// Fields under the target, shared by the events of the same user agent.
type Parsed = Object;

/// Built `user_agent`.
pub struct UserAgent {
    field: String,
    target: String,
    parser: woothee::parser::Parser,
    cache: Cache<String, Parsed>,
}

impl UserAgent {
    pub fn build(config: &UserAgentConfig) -> Self {
        Self {
            field: config.field.clone(),
            target: config.target.clone(),
            parser: woothee::parser::Parser::new(),
            cache: Cache::new(config.cache_size.max(1)),
        }
    }

    pub fn apply(&self, event: &mut Event) {
        let Some(original) = field::get_str(event, &self.field) else {
            return;
        };
        let original = clip(original);
        let parsed = match self.cache.get(original) {
            Some(parsed) => parsed,
            None => {
                let parsed = self.parse(original);
                self.cache.insert(original.to_string(), parsed.clone());
                parsed
            }
        };
        field::object_mut(event, &self.target).merge(parsed, true);
    }

    fn parse(&self, original: &str) -> Parsed {
        let mut fields = Object::with_capacity(5);
        let Some(result) = self.parser.parse(original) else {
            fields.insert("name", "Other");
            return fields.into_shared();
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
        fields.into_shared()
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
