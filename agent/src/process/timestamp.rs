//! `timestamp`: parses a field with the given layouts into `@timestamp`.
//!
//! Layouts may be named (`RFC3339`, `ISO8601`, `UNIX`, `UNIX_MS`), chrono/strftime patterns
//! (anything with a `%`, e.g. `%d/%b/%Y:%H:%M:%S %z`), or Go reference layouts as Filebeat
//! users write them (`2006-01-02T15:04:05.000Z07:00`), translated once at build time.

use super::{BuildError, Event, Value, field, format_timestamp};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// `timestamp` configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// The field holding the time.
    pub field: String,
    /// Layouts tried in order; the first that parses wins.
    pub layouts: Vec<String>,
    /// Where the parsed time goes. Default: `@timestamp`.
    #[serde(default = "default_target")]
    pub target_field: String,
    /// Fixed offset (`+02:00`) for layouts without one. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A missing field is not an error. Default: false.
    #[serde(default)]
    pub ignore_missing: bool,
    /// A value no layout parses is not an error. Default: false.
    #[serde(default)]
    pub ignore_failure: bool,
}

fn default_target() -> String {
    "@timestamp".to_string()
}

#[derive(Debug, Clone)]
enum Layout {
    Rfc3339,
    Unix,
    UnixMs,
    /// A strftime pattern, and whether it carries an offset (`%z`).
    Pattern(String, bool),
}

/// Built `timestamp`.
#[derive(Debug, Clone)]
pub struct Timestamp {
    field: String,
    target: String,
    layouts: Vec<Layout>,
    timezone: FixedOffset,
    ignore_missing: bool,
    ignore_failure: bool,
}

impl Timestamp {
    pub fn build(config: &TimestampConfig) -> Result<Self, BuildError> {
        if config.layouts.is_empty() {
            return Err(BuildError::InvalidOption {
                what: "timestamp",
                message: "`layouts` is empty".into(),
            });
        }
        let timezone = match &config.timezone {
            None => FixedOffset::east_opt(0).expect("zero offset"),
            Some(tz) if tz == "UTC" || tz == "Z" => FixedOffset::east_opt(0).expect("zero offset"),
            Some(tz) => DateTime::parse_from_str(&format!("2000-01-01 00:00 {tz}"), "%F %R %:z")
                .map(|d| *d.offset())
                .map_err(|_| BuildError::InvalidOption {
                    what: "timestamp",
                    message: format!("timezone {tz:?} is not UTC or an offset like +02:00"),
                })?,
        };
        Ok(Self {
            field: config.field.clone(),
            target: config.target_field.clone(),
            layouts: config.layouts.iter().map(|l| layout(l)).collect(),
            timezone,
            ignore_missing: config.ignore_missing,
            ignore_failure: config.ignore_failure,
        })
    }

    pub fn apply(&self, event: &mut Event) {
        let parsed = match field::get(event, &self.field) {
            None if self.ignore_missing => return,
            None => {
                field::set_error(event, format!("timestamp: {} is missing", self.field));
                return;
            }
            Some(value) => self.layouts.iter().find_map(|l| self.parse(l, value)),
        };
        match parsed {
            Some(time) => {
                field::insert(event, &self.target, format_timestamp(time));
            }
            None if self.ignore_failure => {}
            None => field::set_error(
                event,
                format!("timestamp: {} matches none of the layouts", self.field),
            ),
        }
    }

    fn parse(&self, layout: &Layout, value: &Value) -> Option<DateTime<Utc>> {
        let number = || match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match layout {
            Layout::Unix => from_millis(number()? * 1000.0),
            Layout::UnixMs => from_millis(number()?),
            Layout::Rfc3339 => DateTime::parse_from_rfc3339(value.as_str()?)
                .ok()
                .map(|t| t.to_utc()),
            Layout::Pattern(pattern, true) => {
                let text = value.as_str()?;
                // `%z` does not accept `Z`, which is how most logs write UTC.
                let text = match text.strip_suffix('Z') {
                    Some(rest) => std::borrow::Cow::Owned(format!("{rest}+00:00")),
                    None => text.into(),
                };
                DateTime::parse_from_str(&text, pattern)
                    .ok()
                    .map(|t| t.to_utc())
            }
            Layout::Pattern(pattern, false) => {
                let naive = NaiveDateTime::parse_from_str(value.as_str()?, pattern).ok()?;
                self.timezone
                    .from_local_datetime(&naive)
                    .single()
                    .map(|t| t.to_utc())
            }
        }
    }
}

fn from_millis(millis: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis.round() as i64)
}

fn layout(text: &str) -> Layout {
    match text {
        "RFC3339" | "RFC3339Nano" | "ISO8601" => Layout::Rfc3339,
        "UNIX" => Layout::Unix,
        "UNIX_MS" => Layout::UnixMs,
        _ => {
            let pattern = if text.contains('%') {
                text.to_string()
            } else {
                go_layout(text)
            };
            let zoned = pattern.contains("%z") || pattern.contains("%:z");
            Layout::Pattern(pattern, zoned)
        }
    }
}

/// Translates a Go reference layout (Mon Jan 2 15:04:05 MST 2006) into a strftime pattern.
fn go_layout(layout: &str) -> String {
    // Longest tokens first, so `2006` is not read as `20` + `06`.
    const TOKENS: [(&str, &str); 24] = [
        ("January", "%B"),
        ("Monday", "%A"),
        (".000000000", "%.9f"),
        (".999999999", "%.f"),
        (".000000", "%.6f"),
        (".999999", "%.f"),
        ("Z07:00", "%:z"),
        ("-07:00", "%:z"),
        ("-0700", "%z"),
        ("Z0700", "%z"),
        (".000", "%.3f"),
        (".999", "%.f"),
        ("2006", "%Y"),
        ("Jan", "%b"),
        ("Mon", "%a"),
        ("MST", "%Z"),
        ("01", "%m"),
        ("02", "%d"),
        ("_2", "%e"),
        ("15", "%H"),
        ("03", "%I"),
        ("04", "%M"),
        ("05", "%S"),
        ("PM", "%p"),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (token, pattern) in TOKENS {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(pattern);
                rest = after;
                continue 'outer;
            }
        }
        if let Some(after) = rest.strip_prefix("06") {
            out.push_str("%y");
            rest = after;
            continue;
        }
        let c = rest.chars().next().expect("not empty");
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(layouts: &[&str], value: serde_json::Value, timezone: Option<&str>) -> Event {
        let mut event: Event = json!({ "t": value }).as_object().unwrap().clone().into();
        Timestamp::build(&TimestampConfig {
            field: "t".into(),
            layouts: layouts.iter().map(|l| l.to_string()).collect(),
            target_field: default_target(),
            timezone: timezone.map(str::to_string),
            ignore_missing: false,
            ignore_failure: false,
        })
        .unwrap()
        .apply(&mut event);
        event
    }

    #[test]
    fn layouts_of_every_kind() {
        let want = "2026-03-04T05:06:07.089Z";
        for (layouts, value, tz) in [
            (
                &["RFC3339"][..],
                json!("2026-03-04T07:06:07.089+02:00"),
                None,
            ),
            (&["UNIX_MS"][..], json!(1772600767089_i64), None),
            (&["UNIX"][..], json!("1772600767.089"), None),
            (
                &["%d/%b/%Y:%H:%M:%S%.3f %z"][..],
                json!("04/Mar/2026:05:06:07.089 +0000"),
                None,
            ),
            (
                &["2006-01-02 15:04:05.000"][..],
                json!("2026-03-04 06:06:07.089"),
                Some("+01:00"),
            ),
            (
                &["nope", "2006-01-02T15:04:05.000Z07:00"][..],
                json!("2026-03-04T05:06:07.089Z"),
                None,
            ),
        ] {
            let event = run(layouts, value.clone(), tz);
            assert_eq!(event["@timestamp"], want, "{layouts:?} {value}");
        }
    }

    #[test]
    fn unparsable_and_missing_values_are_errors_that_keep_the_event() {
        let event = run(&["RFC3339"], json!("yesterday"), None);
        assert_eq!(event["t"], "yesterday");
        assert_eq!(
            event["error"]["message"],
            "timestamp: t matches none of the layouts"
        );
        assert!(event.get("@timestamp").is_none());
    }

    #[test]
    fn go_layouts_translate() {
        assert_eq!(
            go_layout("02/Jan/2006:15:04:05 -0700"),
            "%d/%b/%Y:%H:%M:%S %z"
        );
        assert_eq!(
            go_layout("Mon Jan _2 03:04:05 PM 06"),
            "%a %b %e %I:%M:%S %p %y"
        );
    }
}
