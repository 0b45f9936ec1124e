//! nginx and Apache `combined` access logs:
//! `1.2.3.4 - user [10/Oct/2026:13:55:36 +0000] "GET /a?b=1 HTTP/1.1" 200 2326 "ref" "agent"`
//! (Apache's `common` format, without the last two, too). Parsed by hand: this runs on every
//! line of a busy web server, and a regular expression costs several times as much.

use super::message;
use crate::process::{Event, Object, Text, field, format_timestamp, parse_digits};
use chrono::{FixedOffset, NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// `nginx` / `apache` parser configuration (nothing to set yet: the formats are fixed).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {}

/// Whose access log it is; the formats are the same, only error messages differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Nginx,
    Apache,
}

/// Built `nginx` / `apache` parser.
#[derive(Debug, Clone)]
pub struct AccessLog {
    flavour: Flavour,
}

/// The parts of one access log line.
#[derive(Debug, PartialEq)]
pub struct AccessLine<'a> {
    pub client: &'a str,
    pub user: Option<&'a str>,
    /// The time, already in `@timestamp`'s format.
    pub time: Option<Text>,
    pub request: Request<'a>,
    pub status: Option<u16>,
    pub bytes: Option<u64>,
    pub referrer: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
}

/// A request line, `GET /a?b=1 HTTP/1.1`; anything else (`-`, a TLS handshake sent to a
/// plain-text port) is kept whole as `raw`.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Line {
        method: Cow<'a, str>,
        target: Cow<'a, str>,
        version: Option<Cow<'a, str>>,
    },
    Raw(Cow<'a, str>),
}

impl AccessLog {
    pub fn new(flavour: Flavour) -> Self {
        Self { flavour }
    }

    /// Splits `message` into ECS fields; a line of another shape keeps its text and gets
    /// `error.message`.
    pub fn apply(&self, event: &mut Event) {
        let Some(line) = message(event) else { return };
        let Some(parsed) = parse_line(line) else {
            let what = match self.flavour {
                Flavour::Nginx => "nginx",
                Flavour::Apache => "apache",
            };
            return field::set_error(event, format!("{what}: not a combined access log line"));
        };
        let AccessLine {
            client,
            user,
            time,
            request,
            status,
            bytes,
            referrer,
            user_agent,
        } = parsed;
        // Owned before the event is written to: the parts borrow its message.
        let client = Text::new(client);
        let user = user.map(Text::new);
        let (method, target, version, raw) = match request {
            Request::Line {
                method,
                target,
                version,
            } => (
                Some(Text::from(method)),
                Some(Text::from(target)),
                version.map(Text::from),
                None,
            ),
            Request::Raw(raw) => (None, None, None, Some(Text::from(raw))),
        };
        let referrer = referrer.map(Text::from);
        let user_agent = user_agent.map(Text::from);
        // Each object is made with room for what it holds at the end of the usual chain
        // (geoip adds `client.geo` and `client.as`, http `http.route`, `url.path` and
        // `url.query`): an object that grows is copied, and a vector's first growth gives it
        // room for four entries (256 bytes), which the small ones here never use. The
        // objects are merged into the event's own if it has them already.
        let mut client_fields = Object::with_capacity(3);
        client_fields.insert("ip", client);
        event.merge_key("client", client_fields);
        if let Some(user) = user {
            event.merge_key("user", Object::from_iter([("name", user)]));
        }
        if let Some(time) = time {
            event.insert("@timestamp", time);
        }
        let mut http = Object::with_capacity(4);
        if method.is_some() || raw.is_some() || referrer.is_some() {
            let mut request = Object::with_capacity(2);
            if let Some(method) = method {
                request.insert("method", method);
            }
            if let Some(raw) = raw {
                request.insert("raw", raw);
            }
            if let Some(referrer) = referrer {
                request.insert("referrer", referrer);
            }
            http.insert("request", request);
        }
        if let Some(version) = version {
            http.insert("version", version);
        }
        if status.is_some() || bytes.is_some() {
            let mut response = Object::with_capacity(2);
            if let Some(status) = status {
                response.insert("status_code", status);
            }
            if let Some(bytes) = bytes {
                response.insert("body", Object::from_iter([("bytes", bytes)]));
            }
            http.insert("response", response);
        }
        event.merge_key("http", http);
        if let Some(target) = target {
            let mut url = Object::with_capacity(3);
            url.insert("original", target);
            event.merge_key("url", url);
        }
        if let Some(agent) = user_agent {
            event.merge_key("user_agent", Object::from_iter([("original", agent)]));
        }
    }
}

/// Parses one combined (or common) access log line.
pub fn parse_line(line: &str) -> Option<AccessLine<'_>> {
    let (client, rest) = field::split_once(line, b' ')?;
    let (_ident, rest) = field::split_once(rest, b' ')?;
    let (user, rest) = split_around(rest, " [")?;
    let (time, rest) = split_around(rest, "] \"")?;
    let (request, rest) = quoted(rest)?;
    // Status, then bytes (`-` when the line ends after the status), then the rest.
    let rest = rest.trim_start();
    let (status, rest) = field::split_once(rest, b' ').unwrap_or((rest, "-"));
    let (bytes, rest) = field::split_once(rest, b' ').unwrap_or((rest, ""));
    let rest = rest.trim_start();
    let status = match status {
        "-" => None,
        s => Some(s.parse().ok()?),
    };
    let bytes = match bytes {
        "-" => Some(0),
        b => Some(b.parse().ok()?),
    };
    let (referrer, rest) = match rest.strip_prefix('"') {
        Some(rest) => {
            let (referrer, rest) = quoted(rest)?;
            (dash_is_none(referrer), rest.trim_start())
        }
        None => (None, rest),
    };
    let user_agent = match rest.strip_prefix('"') {
        Some(rest) => dash_is_none(quoted(rest)?.0),
        None => None,
    };
    Some(AccessLine {
        client,
        user: (user != "-").then_some(user),
        time: parse_time(time),
        request: parse_request(request),
        status,
        bytes,
        referrer,
        user_agent,
    })
}

/// `text` split around the first `separator`, as `str::split_once` does. The spans before
/// these separators are short: a scan for the first byte is done before `str`'s searcher has
/// been set up.
fn split_around<'a>(text: &'a str, separator: &str) -> Option<(&'a str, &'a str)> {
    let (first, tail) = separator.as_bytes().split_first()?;
    let bytes = text.as_bytes();
    let mut from = 0;
    loop {
        let at = from + bytes[from..].iter().position(|b| b == first)?;
        if bytes[at + 1..].starts_with(tail) {
            return Some((&text[..at], &text[at + separator.len()..]));
        }
        from = at + 1;
    }
}

/// Splits `GET /a HTTP/1.1`; anything else is kept raw.
pub fn parse_request(request: Cow<'_, str>) -> Request<'_> {
    match request {
        // Borrow from the line itself when no unescaping was needed.
        Cow::Borrowed(text) => match split_request(text) {
            Some((method, target, version)) => Request::Line {
                method: method.into(),
                target: target.into(),
                version: version.map(Cow::Borrowed),
            },
            None => Request::Raw(request),
        },
        Cow::Owned(ref text) => match split_request(text) {
            Some((method, target, version)) => Request::Line {
                method: method.to_string().into(),
                target: target.to_string().into(),
                version: version.map(|v| v.to_string().into()),
            },
            None => Request::Raw(request),
        },
    }
}

/// `(method, target, version without "HTTP/")` of a well-formed request line: two or three
/// words.
fn split_request(request: &str) -> Option<(&str, &str, Option<&str>)> {
    let (method, rest) = field::split_once(request, b' ')?;
    let (target, version) = match field::split_once(rest, b' ') {
        Some((target, version)) => (target, Some(version)),
        None => (rest, None),
    };
    let more_words = version.is_some_and(|v| memchr::memchr(b' ', v.as_bytes()).is_some());
    if !is_method(method) || target.is_empty() || more_words {
        return None;
    }
    Some((
        method,
        target,
        version.map(|v| v.strip_prefix("HTTP/").unwrap_or(v)),
    ))
}

fn is_method(word: &str) -> bool {
    !word.is_empty() && word.len() <= 16 && word.bytes().all(|b| b.is_ascii_uppercase())
}

fn dash_is_none(text: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (text != "-").then_some(text)
}

/// Reads a quoted string whose opening quote is already consumed, up to the closing quote;
/// `\"`, `\\` (Apache) and `\x22` (nginx) are unescaped. Returns the text and what follows.
fn quoted(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    // Jumps from one backslash or quote to the next: user agents are long and have neither.
    loop {
        i += memchr::memchr2(b'\\', b'"', bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            break;
        }
        escaped = true;
        i += 2;
    }
    let (inner, rest) = (&text[..i], &text[i + 1..]);
    if !escaped {
        return Some((Cow::Borrowed(inner), rest));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if b.is_ascii() => out.push(b as char),
                    _ => {
                        out.push_str("\\x");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Some((Cow::Owned(out), rest))
}

/// `10/Oct/2026:13:55:36 +0000` → `2026-10-10T13:55:36.000Z`.
fn parse_time(text: &str) -> Option<Text> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let b = text.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    let month = MONTHS.iter().position(|name| name[..] == b[3..6])? as u32 + 1;
    let date = NaiveDate::from_ymd_opt(
        parse_digits(&b[7..11])? as i32,
        month,
        parse_digits(&b[0..2])?,
    )?;
    let local = date.and_hms_opt(
        parse_digits(&b[12..14])?,
        parse_digits(&b[15..17])?,
        parse_digits(&b[18..20])?,
    )?;
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset = parse_digits(&b[22..24])? * 3600 + parse_digits(&b[24..26])? * 60;
    if offset == 0 {
        // Most servers log in UTC: the digits as they are (checked above), without a calendar
        // round trip or formatting.
        let mut out = *b"0000-00-00T00:00:00.000Z";
        out[0..4].copy_from_slice(&b[7..11]);
        out[5..7].copy_from_slice(&[b'0' + (month / 10) as u8, b'0' + (month % 10) as u8]);
        out[8..10].copy_from_slice(&b[0..2]);
        out[11..13].copy_from_slice(&b[12..14]);
        out[14..16].copy_from_slice(&b[15..17]);
        out[17..19].copy_from_slice(&b[18..20]);
        return Some(Text::new(std::str::from_utf8(&out).expect("ASCII")));
    }
    let time = FixedOffset::east_opt(sign * offset as i32)?
        .from_local_datetime(&local)
        .single()?;
    Some(format_timestamp(time.to_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_the_event_has_are_merged_with_or_replaced() {
        let line = r#"1.2.3.4 - - [10/Oct/2026:13:55:36 +0000] "GET /a?b=1 HTTP/1.1" 200 5 "-" "curl/8.5.0""#;
        let mut event = Event::from(
            json!({
                "message": line,
                "client": { "port": 5, "ip": "old" },
                "http": { "request": { "id": "r1" }, "response": "not an object" },
                "url": "flat",
            })
            .as_object()
            .unwrap()
            .clone(),
        );
        AccessLog::new(Flavour::Nginx).apply(&mut event);
        assert_eq!(event["client"], json!({ "ip": "1.2.3.4", "port": 5 }));
        assert_eq!(
            event["http"],
            json!({
                "request": { "id": "r1", "method": "GET" },
                "response": { "body": { "bytes": 5 }, "status_code": 200 },
                "version": "1.1",
            })
        );
        assert_eq!(event["url"], json!({ "original": "/a?b=1" }));
        assert_eq!(event["user_agent"], json!({ "original": "curl/8.5.0" }));
        assert_eq!(event["@timestamp"], "2026-10-10T13:55:36.000Z");
    }

    #[test]
    fn times_are_read_in_utc_or_converted_and_bad_ones_refused() {
        for (time, want) in [
            (
                "10/Oct/2026:13:55:36 +0000",
                Some("2026-10-10T13:55:36.000Z"),
            ),
            (
                "01/Jan/2026:00:30:00 +0130",
                Some("2025-12-31T23:00:00.000Z"),
            ),
            (
                "28/Feb/2026:23:00:00 -0100",
                Some("2026-03-01T00:00:00.000Z"),
            ),
            ("29/Feb/2026:10:00:00 +0000", None),
            ("10/Oct/2026:24:00:00 +0000", None),
            ("10/Okt/2026:13:55:36 +0000", None),
            ("1x/Oct/2026:13:55:36 +0000", None),
            ("10/Oct/2026:13:55:36 0000", None),
            ("10/Oct/2026:13:55:36 *0000", None),
        ] {
            assert_eq!(parse_time(time).as_deref(), want, "{time}");
        }
    }
}
