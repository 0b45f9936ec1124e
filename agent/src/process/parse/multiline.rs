//! `multiline`: joins consecutive lines into one event by a pattern, as Filebeat's
//! `multiline.type: pattern` does (Java stack traces, wrapped messages).
//!
//! `negate` flips the pattern; `match: after` appends the matching lines to the line before
//! them, `match: before` prepends them to the line after them. A group that sees no new line
//! for `timeout` is emitted anyway, so the last event of a quiet file is never held forever.

use super::message;
use crate::process::condition::compile;
use crate::process::{BuildError, Event, Text, field};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// `multiline` parser configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Only `pattern` is supported. Default: pattern.
    #[serde(rename = "type", default)]
    pub kind: MultilineKind,
    /// The regular expression lines are matched against.
    pub pattern: String,
    /// Lines that do *not* match are the ones joined. Default: false.
    #[serde(default)]
    pub negate: bool,
    /// Where joined lines go. Default: after.
    #[serde(rename = "match", default)]
    pub position: Position,
    /// Lines beyond this many are dropped from the group (flagged `truncated`). Default: 500.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Bytes of the joined message beyond this many are dropped (flagged `truncated`), as
    /// Filebeat's `max_bytes`: 500 lines of the harvester's 10 MiB each made one 600 MiB
    /// event, above the agent's memory limit. Default: 10485760 (10 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// A group is emitted after this long without a new line. Default: 5s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// The kinds of multiline grouping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilineKind {
    #[default]
    Pattern,
}

/// `match:` of [`MultilineConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    #[default]
    After,
    Before,
}

fn default_max_lines() -> usize {
    500
}

fn default_max_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Built `multiline` parser, with its open group.
#[derive(Debug, Clone)]
pub struct Multiline {
    pattern: Regex,
    negate: bool,
    position: Position,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
    group: Option<Group>,
}

#[derive(Debug, Clone)]
struct Group {
    /// The first line's event; its `message` becomes the joined text.
    first: Event,
    text: Text,
    lines: usize,
    truncated: bool,
    last_line_at: Instant,
}

impl Multiline {
    pub fn build(config: &MultilineConfig) -> Result<Self, BuildError> {
        if config.max_lines == 0 {
            return Err(BuildError::InvalidOption {
                what: "multiline",
                message: "`max_lines` must be at least 1".into(),
            });
        }
        if config.max_bytes == 0 {
            return Err(BuildError::InvalidOption {
                what: "multiline",
                message: "`max_bytes` must be at least 1".into(),
            });
        }
        Ok(Self {
            pattern: compile("multiline", &config.pattern)?,
            negate: config.negate,
            position: config.position,
            max_lines: config.max_lines,
            max_bytes: config.max_bytes,
            timeout: config.timeout,
            group: None,
        })
    }

    pub fn push(&mut self, event: Event, emit: &mut dyn FnMut(Event)) {
        let Some(text) = message(&event) else {
            return emit(event);
        };
        let joins = self.pattern.is_match(text) != self.negate;
        match self.position {
            // A joining line continues the open group; any other line starts a new one.
            Position::After => {
                if !(joins && self.group.is_some()) {
                    self.emit_group(emit);
                }
                self.add(event);
            }
            // A joining line continues into the next; any other line ends its group.
            Position::Before => {
                self.add(event);
                if !joins {
                    self.emit_group(emit);
                }
            }
        }
    }

    /// Emits the open group: always when `now` is `None`, else if it timed out by `now`.
    pub fn flush(&mut self, now: Option<Instant>, emit: &mut dyn FnMut(Event)) {
        let expired = match (&self.group, now) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(group), Some(now)) => now.duration_since(group.last_line_at) >= self.timeout,
        };
        if expired {
            self.emit_group(emit);
        }
    }

    pub fn pending_offset(&self) -> Option<u64> {
        field::get(&self.group.as_ref()?.first, "log.offset")?.as_u64()
    }

    fn add(&mut self, event: Event) {
        let now = Instant::now();
        let text = message(&event).unwrap_or_default();
        match &mut self.group {
            None => {
                let kept = prefix_within(text, self.max_bytes);
                self.group = Some(Group {
                    text: Text::new(kept),
                    truncated: kept.len() < text.len(),
                    first: event,
                    lines: 1,
                    last_line_at: now,
                })
            }
            Some(group) => {
                group.last_line_at = now;
                // A group cut short drops its further lines, but still ends where its pattern
                // says: the lines after it are events of their own.
                let room = self.max_bytes.saturating_sub(group.text.len());
                if group.lines >= self.max_lines || group.truncated || room == 0 {
                    group.truncated = true;
                    return;
                }
                // The newline and as much of the line as fits after it.
                let kept = prefix_within(text, room - 1);
                group.truncated = kept.len() < text.len();
                group.text.push('\n');
                group.text.push_str(kept);
                group.lines += 1;
            }
        }
    }

    fn emit_group(&mut self, emit: &mut dyn FnMut(Event)) {
        let Some(mut group) = self.group.take() else {
            return;
        };
        if group.lines > 1 {
            field::add_flag(&mut group.first, "multiline");
        }
        if group.truncated {
            field::add_flag(&mut group.first, "truncated");
        }
        group.first.insert("message", group.text);
        emit(group.first);
    }
}

/// The longest start of `text` of at most `max` bytes that ends between characters.
fn prefix_within(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{line, parsers};
    use serde_json::json;
    use std::time::{Duration, Instant};

    /// Regression: a group was bound by lines only, and 500 lines of 10 MiB made one
    /// 600 MiB event.
    #[test]
    fn a_group_stops_growing_at_max_bytes_and_the_next_one_flows() {
        let mut p = parsers("[ { multiline: { pattern: '^\\s', max_bytes: 24 } } ]");
        let mut out = Vec::new();
        for (n, text) in [
            "Exception",
            "  at a.b(A.java:1)",
            "  at c.d(C.java:2)",
            "next",
            "  at é",
            "ééééééééééééééé",
        ]
        .iter()
        .enumerate()
        {
            p.push(line(n as u64 * 100, text), &mut out);
        }
        p.flush(&mut out);
        let messages: Vec<&str> = out.iter().map(|e| e["message"].as_str().unwrap()).collect();
        assert_eq!(
            messages,
            ["Exception\n  at a.b(A.jav", "next\n  at é", "éééééééééééé"]
        );
        assert_eq!(out[0]["log"]["flags"], json!(["multiline", "truncated"]));
        assert_eq!(out[1]["log"]["flags"], json!(["multiline"]));
        // 30 bytes cut at a character's end, not in its middle.
        assert_eq!(out[2]["log"]["flags"], json!(["truncated"]));
        assert_eq!(out[2]["log"]["offset"], 500);
    }

    #[test]
    fn an_unterminated_group_is_flushed_at_its_timeout() {
        let mut p = parsers("[ { multiline: { pattern: '^\\s', timeout: 2s } } ]");
        let mut out = Vec::new();
        p.push(line(0, "Exception"), &mut out);
        p.push(line(10, "  at x"), &mut out);
        let pushed = Instant::now();
        p.flush_expired(pushed, &mut out);
        assert!(out.is_empty(), "not yet timed out");
        p.flush_expired(pushed + Duration::from_secs(3), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["message"], "Exception\n  at x");
        assert_eq!(p.pending_offset(), None);
    }
}
