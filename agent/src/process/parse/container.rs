//! The container runtime's framing: CRI lines (`<RFC 3339 time> <stream> <P|F> <message>`, as
//! containerd and CRI-O write `/var/log/pods`) and Docker's json-file lines
//! (`{"log":"…\n","stream":"stdout","time":"…"}`). Both split long lines into partial
//! pieces (CRI: tag `P`; Docker: a `log` without its trailing newline), joined here into one
//! event that keeps the offset of its first piece.

use super::message;
use crate::process::{Event, Text, Value, field, rfc3339_timestamp};
use serde::{Deserialize, Serialize};
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
    partial: [Option<(Event, Text)>; 2],
}

/// One line, unframed.
struct Piece {
    /// `@timestamp` of the line's time, if it has a valid one.
    time: Option<Text>,
    /// 0 for stdout, 1 for stderr.
    slot: usize,
    partial: bool,
    body: Body,
}

/// The message of a [`Piece`].
enum Body {
    /// The line from this byte on (CRI): cut from the line's own `message` in place.
    From(usize),
    /// Decoded (Docker).
    Decoded(Text),
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

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
            slot,
            partial,
            body,
        }) = piece
        else {
            let what = if docker { "Docker json-file" } else { "CRI" };
            field::set_error(&mut event, format!("container: not a {what} log line"));
            return emit(event);
        };
        let keep = match self.stream {
            Stream::All => true,
            Stream::Stdout => slot == 0,
            Stream::Stderr => slot == 1,
        };
        if !keep {
            return;
        }
        let text = match body {
            Body::Decoded(text) => text,
            Body::From(start) => {
                let mut line = take_message(&mut event);
                line.replace_range(..start, "");
                line
            }
        };
        let (mut first, joined) = match self.partial[slot].take() {
            Some((mut first, mut joined)) => {
                if joined.len() + text.len() > MAX_JOINED_BYTES {
                    let room = MAX_JOINED_BYTES.saturating_sub(joined.len());
                    joined.push_str(truncate(&text, room));
                    field::add_flag(&mut first, "truncated");
                } else {
                    joined.push_str(&text);
                }
                (first, joined)
            }
            None => {
                if let Some(time) = time {
                    event.insert("@timestamp", time);
                }
                event.insert("stream", STREAMS[slot]);
                (event, text)
            }
        };
        if partial {
            self.partial[slot] = Some((first, joined));
        } else {
            first.insert("message", joined);
            emit(first);
        }
    }

    /// Emits the partial messages still open (their final piece never came).
    pub fn flush(&mut self, emit: &mut dyn FnMut(Event)) {
        for slot in &mut self.partial {
            if let Some((mut event, joined)) = slot.take() {
                event.insert("message", joined);
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

/// The event's `message` string, taken out (an empty string stays until it is replaced).
fn take_message(event: &mut Event) -> Text {
    match event.get_mut("message") {
        Some(Value::String(message)) => std::mem::take(message),
        _ => Text::default(),
    }
}

fn cri_piece(line: &str) -> Option<Piece> {
    let (time, rest) = field::split_once(line, b' ')?;
    let (stream, rest) = field::split_once(rest, b' ')?;
    // An empty message may leave no space after the tag.
    let tag = field::split_once(rest, b' ').map_or(rest, |(tag, _)| tag);
    let slot = match stream {
        "stdout" => 0,
        "stderr" => 1,
        _ => return None,
    };
    // The tag may carry more flags after a colon in future CRI versions; `P` is the one that
    // matters.
    let partial = match field::split_once(tag, b':').map_or(tag, |(flag, _)| flag) {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    let start = (time.len() + stream.len() + tag.len() + 3).min(line.len());
    Some(Piece {
        time: rfc3339_timestamp(time),
        slot,
        partial,
        body: Body::From(start),
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

fn docker_piece(line: &str) -> Option<Piece> {
    let parsed: DockerLine = serde_json::from_str(line).ok()?;
    let slot = match parsed.stream.as_ref() {
        "stdout" => 0,
        "stderr" => 1,
        _ => return None,
    };
    let (text, partial) = match parsed.log.strip_suffix('\n') {
        Some(text) => (Text::new(text), false),
        None => (Text::from(parsed.log), true),
    };
    Some(Piece {
        time: parsed.time.as_deref().and_then(rfc3339_timestamp),
        slot,
        partial,
        body: Body::Decoded(text),
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
