//! `ndjson`: decodes a message that is a JSON object into the event (or under a target).

use super::message;
use crate::process::event::MAX_DEPTH;
use crate::process::{Event, Value, field};
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

    /// Decodes `message`; a line that is not a JSON object, or nests deeper than an event may
    /// (see [`MAX_DEPTH`]), keeps its text and gets `error.message`.
    pub fn apply(&self, event: &mut Event) {
        // The level of the event the decoded object becomes (1: the event itself).
        let level = match self.config.target.as_str() {
            "" => 1,
            target => 1 + field::levels(target),
        };
        let levels = (MAX_DEPTH + 1).saturating_sub(level);
        let decoded = match message(event).map(|text| Value::from_json(text, levels)) {
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
            let mut kept_flat = false;
            let expanded = field::expand_keys(decoded, level, &mut kept_flat);
            if kept_flat {
                field::set_error(
                    event,
                    format!(
                        "ndjson: a dotted key that would nest deeper than {MAX_DEPTH} levels was kept as it is"
                    ),
                );
            }
            expanded
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::event::tests::{nested, on_small_stack};
    use crate::process::parse::tests::line;

    fn decoded(config: NdjsonConfig, text: &str) -> Event {
        let mut event = line(0, text);
        Ndjson::build(&config).apply(&mut event);
        event
    }

    fn expanding() -> NdjsonConfig {
        NdjsonConfig {
            expand_keys: true,
            ..NdjsonConfig::default()
        }
    }

    /// Regression: a 60 KB key of 30,000 dotted segments overflowed the stack while the
    /// event was built, and again when it was serialised and dropped.
    #[test]
    fn a_key_of_30000_segments_stays_flat_and_is_flagged() {
        on_small_stack(|| {
            let key = vec!["a"; 30_000].join(".");
            let event = decoded(expanding(), &format!(r#"{{"{key}":1,"b.c":2}}"#));
            assert_eq!(event[key.as_str()], 1, "kept flat");
            assert_eq!(event["b"]["c"], 2, "shallow keys are still expanded");
            let error = event["error"]["message"].as_str().unwrap();
            assert!(error.contains("kept as it is"), "{error}");
            serde_json::to_string(&event).unwrap();
        });
    }

    #[test]
    fn expanded_keys_nest_no_deeper_than_an_event_may() {
        // 60 segments put the value at level 61: 4 levels of it reach 64, 5 would pass it.
        let key = vec!["k"; 60].join(".");
        let fits = decoded(
            expanding(),
            &format!(r#"{{"{key}":{}}}"#, nested("[", "]", 4)),
        );
        assert!(fits.get("error").is_none(), "{fits:?}");
        assert_eq!(Value::Object(fits.clone()).depth(), MAX_DEPTH);
        let deep = decoded(
            expanding(),
            &format!(r#"{{"{key}":{}}}"#, nested("[", "]", 5)),
        );
        assert!(deep[key.as_str()].is_array(), "kept flat");
        assert!(deep["error"]["message"].is_string());
        assert!(Value::Object(deep).depth() <= MAX_DEPTH);
    }

    /// A line of arrays or objects nested 1 MB deep keeps its text, with `error.message`;
    /// one an event can hold under the target is decoded.
    #[test]
    fn lines_nested_too_deep_are_kept_as_text() {
        on_small_stack(|| {
            for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
                let text = format!(r#"{{"x":{}}}"#, nested(open, close, 1 << 20));
                let event = decoded(NdjsonConfig::default(), &text);
                assert_eq!(event["message"], text.as_str());
                assert!(event["error"]["message"].is_string());
            }
        });
        let under_target = NdjsonConfig {
            target: "json.line".into(),
            ..NdjsonConfig::default()
        };
        // The decoded object is at level 3: 62 levels fit, 63 do not.
        let fits = decoded(
            under_target.clone(),
            &nested(r#"{"a":"#, "}", MAX_DEPTH - 2),
        );
        assert!(fits.get("error").is_none(), "{fits:?}");
        assert!(fits["json"]["line"].is_object());
        assert_eq!(Value::Object(fits).depth(), MAX_DEPTH);
        let deep = decoded(under_target, &nested(r#"{"a":"#, "}", MAX_DEPTH - 1));
        assert!(deep["error"]["message"].is_string());
    }

    #[test]
    fn a_line_of_80000_keys_becomes_the_event() {
        let mut text = String::from("{");
        for i in (0..80_000).rev() {
            text.push_str(&format!(r#""attribute_{i}":{i},"#));
        }
        text.push_str(r#""log":{"level":"warn"}}"#);
        let event = decoded(NdjsonConfig::default(), &text);
        assert_eq!(event.len(), 80_000 + 1);
        assert_eq!(event["attribute_0"], 0);
        assert_eq!(event["attribute_79999"], 79_999);
        assert_eq!(event["log"]["level"], "warn", "merged with the agent's log");
        assert_eq!(event["log"]["offset"], 0);
    }
}
