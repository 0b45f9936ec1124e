//! `user_agent`: browser, version, OS and device of a user-agent string, with `woothee`
//! (Project Woothee's rules compiled into the crate: no data file to ship or keep current at
//! run time). Rejected: `uaparser` and `ua-parser`, which load uap-core's `regexes.yaml`
//! at start-up, a file the agent's image would have to carry and update.
//!
//! Real traffic repeats a few hundred strings, so results are kept in a bounded cache.

use super::{Event, field};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

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

/// Fields under the target (path, value).
type Parsed = Arc<[(&'static str, Value)]>;

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
        let target = field::object_mut(event, &self.target);
        for (path, value) in parsed.iter() {
            field::insert(target, path, value.clone());
        }
    }

    fn parse(&self, original: &str) -> Parsed {
        let Some(result) = self.parser.parse(original) else {
            return Arc::new([("name", "Other".into())]);
        };
        let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
        let mut fields: Vec<(&'static str, Value)> = Vec::with_capacity(5);
        if known(result.name) {
            fields.push(("name", result.name.into()));
        }
        if known(result.version) {
            fields.push(("version", result.version.into()));
        }
        if known(result.os) {
            fields.push(("os.name", result.os.into()));
        }
        if known(&result.os_version) {
            fields.push(("os.version", result.os_version.as_ref().into()));
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
            fields.push(("device.name", device.into()));
        }
        fields.into()
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
