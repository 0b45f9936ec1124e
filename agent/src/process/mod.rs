//! Turning lines into events, and the processors that enrich them.

pub mod condition;
pub mod event;
pub mod field;
pub mod fields;
pub mod geoip;
pub mod http;
pub mod input;
pub mod parse;
pub mod processor;
pub mod timestamp;
pub mod user_agent;

pub use event::{Object, Text, Value};
pub use processor::{BuildError, Flow, Processor, ProcessorConfig, Processors};

use crate::harvest::Line;
use std::path::Path;

/// An event: a JSON object with ECS field names (see [`event`] for its representation).
pub type Event = Object;

/// What the events of one file's lines share: `log.file` (its path, and the identity the
/// pipeline adds), `host`, and the time they were read. Made once per batch of lines; every
/// event holds its objects shared (see [`Object::into_shared`]), copying one only if a
/// processor changes it, instead of allocating its own.
pub struct Source {
    file: Object,
    host: Object,
    /// `@timestamp` until a parser finds the line's own time: the lines of a batch were read
    /// by one read call, and asking the clock for every line cost 4% of the chain.
    read_at: Text,
}

impl Source {
    /// `log.file.path` is `path`, `host.name` is `host`.
    pub fn new(path: &Path, host: &str) -> Self {
        Self {
            file: [("path", Text::new(path.to_string_lossy()))]
                .into_iter()
                .collect::<Object>()
                .into_shared(),
            host: [("name", host)]
                .into_iter()
                .collect::<Object>()
                .into_shared(),
            read_at: now_rfc3339(),
        }
    }

    /// Adds `fields` to `log.file` (the file's identity).
    pub fn with_file_fields(mut self, fields: Object) -> Self {
        self.file.extend(fields);
        self.file = self.file.into_shared();
        self
    }
}

/// The event of one line of `source`: `@timestamp`, `message`, `log.file`, `log.offset`,
/// `host`. Invalid UTF-8 is kept lossily and flagged in `log.flags`, as is a line cut at the
/// input's `max_bytes` (`truncated`).
pub fn event_from_line(line: &Line, source: &Source) -> Event {
    let mut flags = Vec::new();
    // simdutf8 checks a whole log line several times faster than `std::str::from_utf8`.
    let message = match simdutf8::basic::from_utf8(&line.bytes) {
        Ok(text) => Text::new(text),
        Err(_) => {
            flags.push(Value::from("invalid_utf8"));
            Text::from_utf8_lossy(&line.bytes)
        }
    };
    if line.truncated {
        flags.push("truncated".into());
    }
    let mut log = Object::with_capacity(3);
    log.insert("file", source.file.clone());
    log.insert("offset", line.offset);
    if !flags.is_empty() {
        log.insert("flags", flags);
    }
    let mut event = Object::with_capacity(12);
    event.insert("@timestamp", source.read_at.clone());
    event.insert("message", message);
    event.insert("log", log);
    event.insert("host", source.host.clone());
    event
}

/// `time` as `@timestamp` writes it: RFC 3339, UTC, milliseconds (as Filebeat does).
pub fn format_timestamp(time: chrono::DateTime<chrono::Utc>) -> Text {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        .into()
}

/// The current time as [`format_timestamp`] writes it.
pub fn now_rfc3339() -> Text {
    format_timestamp(chrono::Utc::now())
}

/// Appends `.mmmZ`.
fn push_millis(text: &mut Text, millis: u32) {
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let suffix = [
        b'.',
        digit(millis / 100),
        digit(millis / 10),
        digit(millis),
        b'Z',
    ];
    text.push_str(std::str::from_utf8(&suffix).expect("ASCII"));
}

/// An RFC 3339 time (as CRI and Docker write them) as [`format_timestamp`] writes it, or
/// `None` if it is not one. UTC times with up to nine fractional digits, the container
/// runtimes' own, are rewritten without a calendar round trip; others go through chrono.
pub fn rfc3339_timestamp(text: &str) -> Option<Text> {
    utc_rfc3339_timestamp(text).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| format_timestamp(time.to_utc()))
    })
}

/// The fast path of [`rfc3339_timestamp`]: `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, valid date and
/// time of day (a leap second is left to chrono).
fn utc_rfc3339_timestamp(text: &str) -> Option<Text> {
    let b = text.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let fraction = match &b[19..b.len() - 1] {
        [] => &[][..],
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => digits,
        _ => return None,
    };
    let number = |range: std::ops::Range<usize>| parse_digits(&b[range]);
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !fraction.iter().all(u8::is_ascii_digit)
        || hour > 23
        || minute > 59
        || second > 59
        || chrono::NaiveDate::from_ymd_opt(year as i32, month, day).is_none()
    {
        return None;
    }
    let millis = (0..3).fold(0, |n, i| {
        n * 10 + fraction.get(i).map_or(0, |d| u32::from(d - b'0'))
    });
    let mut out = Text::with_capacity(24);
    out.push_str(&text[..19]);
    push_millis(&mut out, millis);
    Some(out)
}

/// The number written in `digits`, if they are all ASCII digits: the fields of the
/// timestamps in log lines, read without `str::parse`'s generality.
pub fn parse_digits(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &digit| {
        digit
            .is_ascii_digit()
            .then(|| n * 10 + u32::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(bytes: &[u8]) -> Line {
        Line {
            offset: 42,
            bytes: bytes.to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn event_has_the_ecs_basics() {
        let event = event_from_line(
            &line(b"hello"),
            &Source::new(Path::new("/var/log/a.log"), "node-1"),
        );
        assert_eq!(event["message"], "hello");
        assert_eq!(event["log"]["file"]["path"], "/var/log/a.log");
        assert_eq!(event["log"]["offset"], 42);
        assert_eq!(event["host"]["name"], "node-1");
        assert!(event["@timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(event["log"].get("flags").is_none());
    }

    #[test]
    fn rfc3339_times_as_timestamps() {
        for (text, want) in [
            (
                "2026-05-06T07:08:09.123456789Z",
                Some("2026-05-06T07:08:09.123Z"),
            ),
            ("2026-05-06T07:08:09.5Z", Some("2026-05-06T07:08:09.500Z")),
            ("2026-05-06T07:08:09Z", Some("2026-05-06T07:08:09.000Z")),
            (
                "2026-05-06T09:08:09.5+02:00",
                Some("2026-05-06T07:08:09.500Z"),
            ),
            ("2024-02-29T23:59:59.999Z", Some("2024-02-29T23:59:59.999Z")),
            ("2026-02-29T00:00:00Z", None),
            ("2026-05-06T24:00:00Z", None),
            ("2026-05-06T07:08:09.Z", None),
            ("2026-05-06 07:08:09Z", Some("2026-05-06T07:08:09.000Z")),
            ("yesterday", None),
        ] {
            let chrono = chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| format_timestamp(t.to_utc()));
            assert_eq!(rfc3339_timestamp(text), chrono, "{text}: as chrono does");
            assert_eq!(rfc3339_timestamp(text).as_deref(), want, "{text}");
        }
        let now = now_rfc3339();
        let parsed = chrono::DateTime::parse_from_rfc3339(&now).unwrap();
        assert_eq!(format_timestamp(parsed.to_utc()), now);
    }

    #[test]
    fn events_share_their_source_until_one_changes_it() {
        let source = Source::new(Path::new("/a.log"), "h1")
            .with_file_fields([("inode", "42")].into_iter().collect());
        let mut first = event_from_line(&line(b"x"), &source);
        let second = event_from_line(&line(b"y"), &source);
        field::object_mut(&mut first, "log.file").insert("path", "/changed.log");
        assert_eq!(first["log"]["file"]["path"], "/changed.log");
        assert_eq!(second["log"]["file"]["path"], "/a.log");
        assert_eq!(second["log"]["file"]["inode"], "42");
        assert_eq!(second["host"]["name"], "h1");
    }

    #[test]
    fn invalid_utf8_is_kept_and_flagged() {
        let event = event_from_line(&line(b"caf\xe9"), &Source::new(Path::new("a"), "h"));
        assert_eq!(event["message"], "caf\u{fffd}");
        assert_eq!(event["log"]["flags"], json!(["invalid_utf8"]));
    }
}
