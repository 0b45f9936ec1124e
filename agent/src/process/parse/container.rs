//! The container runtime's framing: CRI lines (`<RFC 3339 time> <stream> <P|F> <message>`, as
//! containerd and CRI-O write `/var/log/pods`) and Docker's json-file lines
//! (`{"log":"…\n","stream":"stdout","time":"…"}`). Both split long lines into partial
//! pieces (CRI: tag `P`; Docker: a `log` without its trailing newline), joined here into one
//! event that keeps the offset of its first piece.

use super::message;
use crate::process::{Event, field, format_timestamp};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// A joined message is cut at this size, as a line is at the harvester's `max_bytes`, so a
/// runaway stream of partial pieces cannot grow without bound.
const MAX_JOINED_BYTES: usize = 10 << 20;

/// `container` parser configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Which stream to keep. Default: all.
    #[serde(default)]
    pub stream: Stream,
    /// Which framing the lines have. Default: auto (a line starting with `{` is Docker's).
    #[serde(default)]
    pub format: Format,
}

/// A container's output stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    #[default]
    All,
    Stdout,
    Stderr,
}

/// The framing of container log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Auto,
    Cri,
    Docker,
}

/// Built `container` parser, with the partial message of each stream it is joining.
#[derive(Debug, Clone)]
pub struct Container {
    stream: Stream,
    format: Format,
    /// The first piece's event and the message so far, per stream (stdout, stderr): the two
    /// streams interleave in one file, each with its own partial lines.
    partial: [Option<(Event, String)>; 2],
}

/// One line, unframed.
struct Piece<'a> {
    time: Option<Cow<'a, str>>,
    stream: &'a str,
    partial: bool,
    text: Cow<'a, str>,
}

impl Container {
    pub fn build(config: &ContainerConfig) -> Self {
        Self {
            stream: config.stream,
            format: config.format,
            partial: [None, None],
        }
    }

    pub fn push(&mut self, mut event: Event, emit: &mut dyn FnMut(Event)) {
        let Some(line) = message(&event) else {
            return emit(event);
        };
        let docker = match self.format {
            Format::Auto => line.starts_with('{'),
            Format::Cri => false,
            Format::Docker => true,
        };
        let piece = if docker {
            docker_piece(line)
        } else {
            cri_piece(line)
        };
        let Some(Piece {
            time,
            stream,
            partial,
            text,
        }) = piece
        else {
            let what = if docker { "Docker json-file" } else { "CRI" };
            field::set_error(&mut event, format!("container: not a {what} log line"));
            return emit(event);
        };
        let keep = match self.stream {
            Stream::All => true,
            Stream::Stdout => stream == "stdout",
            Stream::Stderr => stream == "stderr",
        };
        if !keep {
            return;
        }
        let slot = usize::from(stream == "stderr");
        let timestamp = time.and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
        let text = text.into_owned();
        let stream = stream.to_string();
        let (mut first, joined) = match self.partial[slot].take() {
            Some((first, mut joined)) => {
                if joined.len() + text.len() > MAX_JOINED_BYTES {
                    let room = MAX_JOINED_BYTES.saturating_sub(joined.len());
                    joined.push_str(truncate(&text, room));
                    field::add_flag(&mut event, "truncated");
                } else {
                    joined.push_str(&text);
                }
                (first, joined)
            }
            None => {
                if let Some(time) = timestamp {
                    event.insert("@timestamp".into(), format_timestamp(time.to_utc()).into());
                }
                event.insert("stream".into(), stream.into());
                (event, text)
            }
        };
        if partial {
            self.partial[slot] = Some((first, joined));
        } else {
            first.insert("message".into(), Value::String(joined));
            emit(first);
        }
    }

    /// Emits the partial messages still open (their final piece never came).
    pub fn flush(&mut self, emit: &mut dyn FnMut(Event)) {
        for slot in &mut self.partial {
            if let Some((mut event, joined)) = slot.take() {
                event.insert("message".into(), Value::String(joined));
                field::add_flag(&mut event, "partial");
                emit(event);
            }
        }
    }

    pub fn pending_offset(&self) -> Option<u64> {
        self.partial
            .iter()
            .flatten()
            .filter_map(|(event, _)| field::get(event, "log.offset")?.as_u64())
            .min()
    }
}

fn cri_piece(line: &str) -> Option<Piece<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    if !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    // The tag may carry more flags after a colon in future CRI versions; `P` is the one that
    // matters.
    let partial = match tag.split(':').next() {
        Some("P") => true,
        Some("F") => false,
        _ => return None,
    };
    Some(Piece {
        time: Some(time.into()),
        stream,
        partial,
        text: text.into(),
    })
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
}

fn docker_piece(line: &str) -> Option<Piece<'_>> {
    let parsed: DockerLine = serde_json::from_str(line).ok()?;
    let stream = match parsed.stream.as_ref() {
        "stdout" => "stdout",
        "stderr" => "stderr",
        _ => return None,
    };
    let (text, partial) = match parsed.log.strip_suffix('\n') {
        Some(text) => (Cow::Owned(text.to_string()), false),
        None => (parsed.log, true),
    };
    Some(Piece {
        time: parsed.time,
        stream,
        partial,
        text,
    })
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{line, parsers};
    use serde_json::json;

    #[test]
    fn cri_lines_and_partial_lines_joined_per_stream() {
        let mut p = parsers("[ { container: { format: cri } } ]");
        let mut out = Vec::new();
        for (offset, text) in [
            (0, "2026-05-06T07:08:09.123456789Z stdout F hello world"),
            (60, "2026-05-06T07:08:10.000000000Z stdout P part one, "),
            (120, "2026-05-06T07:08:10.000000001Z stderr F oops"),
            (170, "2026-05-06T07:08:10.000000002Z stdout F part two"),
            (230, "2026-05-06T07:08:11.000000000Z stdout F "),
        ] {
            p.push(line(offset, text), &mut out);
        }
        let got: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    e["log"]["offset"].clone(),
                    e["stream"].clone(),
                    e["message"].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (json!(0), json!("stdout"), json!("hello world")),
                (json!(120), json!("stderr"), json!("oops")),
                (json!(60), json!("stdout"), json!("part one, part two")),
                (json!(230), json!("stdout"), json!("")),
            ]
        );
        assert_eq!(out[0]["@timestamp"], "2026-05-06T07:08:09.123Z");
        assert_eq!(
            out[2]["@timestamp"], "2026-05-06T07:08:10.000Z",
            "the first piece's time"
        );
    }

    #[test]
    fn docker_json_file_lines() {
        let mut p = parsers("[ { container: { stream: stderr } } ]");
        let mut out = Vec::new();
        for text in [
            r#"{"log":"to stdout\n","stream":"stdout","time":"2026-05-06T07:08:09.5Z"}"#,
            r#"{"log":"long \"quoted\" ","stream":"stderr","time":"2026-05-06T07:08:09.6Z"}"#,
            r#"{"log":"end\n","stream":"stderr","time":"2026-05-06T07:08:09.7Z"}"#,
        ] {
            p.push(line(0, text), &mut out);
        }
        assert_eq!(out.len(), 1, "stdout is filtered out");
        assert_eq!(out[0]["message"], "long \"quoted\" end");
        assert_eq!(out[0]["stream"], "stderr");
        assert_eq!(out[0]["@timestamp"], "2026-05-06T07:08:09.600Z");
    }

    #[test]
    fn a_line_without_framing_keeps_its_text_and_says_why() {
        let mut p = parsers("[ { container: {} } ]");
        let mut out = Vec::new();
        p.push(line(0, "just text"), &mut out);
        p.push(line(10, "{not json"), &mut out);
        assert_eq!(out[0]["message"], "just text");
        assert_eq!(out[0]["error"]["message"], "container: not a CRI log line");
        assert_eq!(out[1]["message"], "{not json");
        assert_eq!(
            out[1]["error"]["message"],
            "container: not a Docker json-file log line"
        );
    }

    #[test]
    fn an_unfinished_partial_line_is_flushed_flagged() {
        let mut p = parsers("[ { container: {} } ]");
        let mut out = Vec::new();
        p.push(
            line(7, "2026-05-06T07:08:10Z stdout P never ends"),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(p.pending_offset(), Some(7));
        p.flush(&mut out);
        assert_eq!(out[0]["message"], "never ends");
        assert_eq!(out[0]["log"]["flags"], json!(["partial"]));
    }
}
