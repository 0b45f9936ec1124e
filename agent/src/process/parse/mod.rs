//! Parsers: per input, per file, they turn the events of raw lines into the events of
//! messages, in the order configured (as Filebeat's `parsers:`): strip the container runtime's
//! framing and join its partial lines, decode JSON, join multiline groups, split access logs
//! into fields.
//!
//! Parsers hold state per file (a partial container line, an open multiline group), so each
//! harvested file gets its own clone of the built [`Parsers`]; cloning is cheap (compiled
//! regular expressions are shared).

pub mod access;
pub mod container;
pub mod multiline;
pub mod ndjson;

use super::{BuildError, Event};
use serde::{Deserialize, Serialize};
use std::time::Instant;

pub use access::{AccessLog, AccessLogConfig, Flavour};
pub use container::{Container, ContainerConfig};
pub use multiline::{Multiline, MultilineConfig};
pub use ndjson::{Ndjson, NdjsonConfig};

/// One parser, written as a one-key map (`- ndjson: { target: "" }`) as in filebeat.yml.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ParserConfig {
    /// CRI (`<time> stdout F <msg>`) or Docker json-file container lines; partial lines joined.
    Container(ContainerConfig),
    /// JSON objects, one per line.
    Ndjson(NdjsonConfig),
    /// Lines joined into one event by a pattern (stack traces).
    Multiline(MultilineConfig),
    /// nginx's `combined` access log format.
    Nginx(AccessLogConfig),
    /// Apache's `combined` (or `common`) access log format.
    Apache(AccessLogConfig),
}

/// The parsers of one file, in order.
#[derive(Debug, Clone, Default)]
pub struct Parsers {
    stages: Vec<Stage>,
}

#[derive(Debug, Clone)]
enum Stage {
    Container(Container),
    Ndjson(Ndjson),
    Multiline(Multiline),
    Access(AccessLog),
}

impl Parsers {
    /// Validates and builds the parsers of `configs`.
    pub fn build(configs: &[ParserConfig]) -> Result<Self, BuildError> {
        let stages = configs
            .iter()
            .map(|config| {
                Ok(match config {
                    ParserConfig::Container(c) => Stage::Container(Container::build(c)),
                    ParserConfig::Ndjson(c) => Stage::Ndjson(Ndjson::build(c)),
                    ParserConfig::Multiline(c) => Stage::Multiline(Multiline::build(c)?),
                    ParserConfig::Nginx(_) => Stage::Access(AccessLog::new(Flavour::Nginx)),
                    ParserConfig::Apache(_) => Stage::Access(AccessLog::new(Flavour::Apache)),
                })
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(Self { stages })
    }

    /// Feeds the event of one line; the events of complete messages are appended to `out`
    /// (none while a partial line or multiline group is still open).
    pub fn push(&mut self, event: Event, out: &mut Vec<Event>) {
        feed(&mut self.stages, event, out);
    }

    /// Emits the multiline groups that saw no new line for their `timeout` by `now`.
    /// The pipeline calls this periodically, so a group is never held forever.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<Event>) {
        self.flush_where(out, |stage, emit| stage.flush(Some(now), emit));
    }

    /// Emits everything still held: the file is closed or the agent stops.
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        self.flush_where(out, |stage, emit| stage.flush(None, emit));
    }

    /// The `log.offset` of the oldest line held back in an open group, if any: a registry must
    /// not commit past it.
    pub fn pending_offset(&self) -> Option<u64> {
        self.stages.iter().filter_map(Stage::pending_offset).min()
    }

    fn flush_where(
        &mut self,
        out: &mut Vec<Event>,
        flush: impl Fn(&mut Stage, &mut dyn FnMut(Event)),
    ) {
        for index in 0..self.stages.len() {
            let (head, rest) = self.stages.split_at_mut(index + 1);
            flush(&mut head[index], &mut |event| feed(rest, event, out));
        }
    }
}

fn feed(stages: &mut [Stage], event: Event, out: &mut Vec<Event>) {
    match stages.split_first_mut() {
        None => out.push(event),
        Some((stage, rest)) => stage.push(event, &mut |event| feed(rest, event, out)),
    }
}

impl Stage {
    fn push(&mut self, mut event: Event, emit: &mut dyn FnMut(Event)) {
        match self {
            Stage::Container(p) => p.push(event, emit),
            Stage::Multiline(p) => p.push(event, emit),
            Stage::Ndjson(p) => {
                p.apply(&mut event);
                emit(event);
            }
            Stage::Access(p) => {
                p.apply(&mut event);
                emit(event);
            }
        }
    }

    fn flush(&mut self, now: Option<Instant>, emit: &mut dyn FnMut(Event)) {
        match self {
            Stage::Container(p) if now.is_none() => p.flush(emit),
            Stage::Multiline(p) => p.flush(now, emit),
            _ => {}
        }
    }

    fn pending_offset(&self) -> Option<u64> {
        match self {
            Stage::Container(p) => p.pending_offset(),
            Stage::Multiline(p) => p.pending_offset(),
            _ => None,
        }
    }
}

/// The message of `event`, if it is a string.
fn message(event: &Event) -> Option<&str> {
    event.get("message").and_then(|m| m.as_str())
}

/// The parsers that read a container's log written in `format` (the `skiff.dev/log-format`
/// annotation): the CRI framing, then `json` (ndjson into the event), `nginx`, `apache`, or
/// nothing more for `cri` and `plain`. `None` for an unknown format.
pub fn for_log_format(format: &str) -> Option<Vec<ParserConfig>> {
    let container = ParserConfig::Container(ContainerConfig::default());
    let message = match format {
        "cri" | "plain" | "" => None,
        "json" => Some(ParserConfig::Ndjson(NdjsonConfig::default())),
        "nginx" => Some(ParserConfig::Nginx(AccessLogConfig {})),
        "apache" => Some(ParserConfig::Apache(AccessLogConfig {})),
        _ => return None,
    };
    Some(std::iter::once(container).chain(message).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The event of a line, as the harvester makes it.
    pub(crate) fn line(offset: u64, text: &str) -> Event {
        json!({ "message": text, "log": { "offset": offset, "file": { "path": "/p.log" } } })
            .as_object()
            .unwrap()
            .clone()
            .into()
    }

    pub(crate) fn parsers(yaml: &str) -> Parsers {
        let configs: Vec<ParserConfig> = serde_yaml::with::singleton_map_recursive::deserialize(
            serde_yaml::Deserializer::from_str(yaml),
        )
        .unwrap();
        Parsers::build(&configs).unwrap()
    }

    /// What the events are is in the `cri-ndjson-multiline` golden case; this is what the
    /// registry may commit while a group is open.
    #[test]
    fn an_open_group_holds_the_commit_offset_back() {
        let mut p = parsers(
            "[ { container: {} }, { ndjson: { target: '' } }, \
               { multiline: { pattern: '^\\s', match: after } } ]",
        );
        let mut out = Vec::new();
        for (n, text) in [
            r#"2026-01-01T00:00:00.000000001Z stdout F {"message":"boom"}"#,
            r#"2026-01-01T00:00:00.000000002Z stdout P {"message":"  at a.b(A.java:1)","#,
            r#"2026-01-01T00:00:00.000000003Z stdout F "level":"error"}"#,
            r#"2026-01-01T00:00:00.000000004Z stdout F {"message":"next"}"#,
        ]
        .iter()
        .enumerate()
        {
            p.push(line(n as u64 * 100, text), &mut out);
            if n == 1 {
                assert_eq!(p.pending_offset(), Some(0), "the group and a partial line");
            }
        }
        assert_eq!(out.len(), 1, "the second group is still open: {out:?}");
        assert_eq!(p.pending_offset(), Some(300));
        p.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(p.pending_offset(), None);
    }

    #[test]
    fn log_formats_map_to_parsers() {
        assert_eq!(for_log_format("cri").unwrap().len(), 1);
        assert!(matches!(
            for_log_format("json").unwrap()[1],
            ParserConfig::Ndjson(_)
        ));
        assert!(matches!(
            for_log_format("nginx").unwrap()[1],
            ParserConfig::Nginx(_)
        ));
        assert!(for_log_format("xml").is_none());
    }
}
