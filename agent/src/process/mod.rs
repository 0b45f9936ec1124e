//! Turning lines into events, and the processors that enrich them.

pub mod condition;
pub mod field;
pub mod fields;
pub mod geoip;
pub mod http;
pub mod input;
pub mod parse;
pub mod processor;
pub mod timestamp;
pub mod user_agent;

pub use processor::{BuildError, Flow, Processor, ProcessorConfig, Processors};

use crate::harvest::Line;
use serde_json::{Map, Value, json};
use std::path::Path;

/// An event: a JSON object with ECS field names.
pub type Event = Map<String, Value>;

/// The event of one line: `@timestamp`, `message`, `log.file.path`, `log.offset`,
/// `host.name`. Invalid UTF-8 is kept lossily and flagged in `log.flags`, as is a line cut at
/// the input's `max_bytes` (`truncated`).
pub fn event_from_line(line: &Line, path: &Path, host: &str) -> Event {
    let mut flags = Vec::new();
    let message = match std::str::from_utf8(&line.bytes) {
        Ok(text) => text.to_string(),
        Err(_) => {
            flags.push("invalid_utf8");
            String::from_utf8_lossy(&line.bytes).into_owned()
        }
    };
    if line.truncated {
        flags.push("truncated");
    }
    let mut log = json!({ "file": { "path": path.to_string_lossy() }, "offset": line.offset });
    if !flags.is_empty() {
        log["flags"] = json!(flags);
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

/// `time` as `@timestamp` writes it: RFC 3339, UTC, milliseconds (as Filebeat does).
pub fn format_timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The current time as [`format_timestamp`] writes it.
pub fn now_rfc3339() -> String {
    format_timestamp(chrono::Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bytes: &[u8]) -> Line {
        Line {
            offset: 42,
            bytes: bytes.to_vec(),
            truncated: false,
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
}
