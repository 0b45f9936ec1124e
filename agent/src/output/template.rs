//! Format strings over event fields, as in Filebeat and Logstash: `logs-%{[service.name]}`,
//! a field with a default `%{[service.name]:unknown}`, and the event's date `%{+yyyy.MM.dd}`.
//!
//! Kafka topics and keys and Elasticsearch index names are built from them. A template is
//! parsed once when its output is built; rendering only walks the parts.

use crate::process::{Event, Value};
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// A parsed format string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// `%{[a.b]}` or `%{[a.b]:default}`.
    Field {
        path: String,
        default: Option<String>,
    },
    /// `%{+yyyy.MM.dd}`, kept as a chrono format string.
    Date(String),
}

/// Why a format string is not a template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("{template:?}: `%{{` at byte {at} is never closed")]
    Unclosed { template: String, at: usize },
    #[error(
        "{template:?}: `%{{{inner}}}` is neither a field `%{{[a.b]}}` nor a date `%{{+yyyy.MM.dd}}`"
    )]
    Syntax { template: String, inner: String },
}

/// A field that a template names is not in the event (and the template gave no default).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field {0:?} is missing or not a scalar")]
pub struct MissingField(pub String);

impl Template {
    /// Parses `text`; `%%{` is a literal `%{`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            if rest[..start].ends_with('%') {
                literal.push_str(&rest[..start - 1]);
                literal.push_str("%{");
                rest = &rest[start + 2..];
                continue;
            }
            literal.push_str(&rest[..start]);
            let at = text.len() - rest.len() + start;
            let Some(len) = rest[start + 2..].find('}') else {
                return Err(TemplateError::Unclosed {
                    template: text.to_string(),
                    at,
                });
            };
            let inner = &rest[start + 2..start + 2 + len];
            let part = parse_placeholder(inner).ok_or_else(|| TemplateError::Syntax {
                template: text.to_string(),
                inner: inner.to_string(),
            })?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &rest[start + 2 + len + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// The text itself when the template names no field and no date.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Appends the template rendered over `event` to `out`. The date is the event's
    /// `@timestamp` (RFC 3339), or now when it has none.
    pub fn render(&self, event: &Event, out: &mut String) -> Result<(), MissingField> {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field { path, default } => match lookup(event, path) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Number(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Some(Value::Bool(b)) => {
                        let _ = write!(out, "{b}");
                    }
                    _ => match default {
                        Some(default) => out.push_str(default),
                        None => return Err(MissingField(path.clone())),
                    },
                },
                Part::Date(format) => {
                    let _ = write!(out, "{}", event_time(event).format(format));
                }
            }
        }
        Ok(())
    }

    /// Like [`Template::render`], into a new string.
    pub fn render_string(&self, event: &Event) -> Result<String, MissingField> {
        let mut out = String::new();
        self.render(event, &mut out)?;
        Ok(out)
    }
}

/// `[a.b]`, `[a.b]:default` or `+yyyy.MM.dd`.
fn parse_placeholder(inner: &str) -> Option<Part> {
    if let Some(date) = inner.strip_prefix('+') {
        return Some(Part::Date(joda_to_chrono(date)));
    }
    let body = inner.strip_prefix('[')?;
    let close = body.find(']')?;
    let path = &body[..close];
    if path.is_empty() {
        return None;
    }
    let default = match &body[close + 1..] {
        "" => None,
        rest => Some(rest.strip_prefix(':')?.to_string()),
    };
    Some(Part::Field {
        path: path.to_string(),
        default,
    })
}

/// Translates the Joda-style pattern Filebeat and Logstash use (`yyyy.MM.dd`) into chrono's
/// `strftime` syntax. Letters it does not know are kept as literal text.
fn joda_to_chrono(pattern: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let token = match (c, run) {
            ('y', 2) => Some("%y"),
            ('y', _) => Some("%Y"),
            ('M', _) => Some("%m"),
            ('d', _) => Some("%d"),
            ('H', _) => Some("%H"),
            ('m', _) => Some("%M"),
            ('s', _) => Some("%S"),
            _ => None,
        };
        match token {
            Some(token) => out.push_str(token),
            None => {
                for _ in 0..run {
                    if c == '%' {
                        out.push_str("%%");
                    } else {
                        out.push(c);
                    }
                }
            }
        }
        i += run;
    }
    out
}

fn event_time(event: &Event) -> DateTime<Utc> {
    event
        .get("@timestamp")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

/// The value at dotted `path`: nested objects, or a key that itself contains dots (tried
/// whole first at each level, as a flat key decoded from JSON would be).
pub(crate) fn lookup<'a>(event: &'a Event, path: &str) -> Option<&'a Value> {
    if let Some(value) = event.get(path) {
        return Some(value);
    }
    let mut split = path.match_indices('.').map(|(i, _)| i);
    split.find_map(|i| lookup(event.get(&path[..i])?.as_object()?, &path[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Event {
        value.as_object().unwrap().clone().into()
    }

    #[test]
    fn fields_defaults_and_dates() {
        let e = event(json!({
            "@timestamp": "2026-03-04T05:06:07.000Z",
            "service": { "name": "checkout" },
            "log": { "offset": 42 },
            "kubernetes": { "annotations": { "skiff_dev/log-topic": "audit" } },
        }));
        let render = |t: &str| Template::parse(t).unwrap().render_string(&e);
        assert_eq!(render("logs-%{[service.name]}").unwrap(), "logs-checkout");
        assert_eq!(render("%{[log.offset]}").unwrap(), "42");
        assert_eq!(
            render("%{[kubernetes.annotations.skiff_dev/log-topic]}").unwrap(),
            "audit"
        );
        assert_eq!(
            render("logs-%{[service.name]}-%{+yyyy.MM.dd}").unwrap(),
            "logs-checkout-2026.03.04"
        );
        assert_eq!(render("x-%{[nope]:other}").unwrap(), "x-other");
        assert_eq!(
            render("x-%{[nope]}").unwrap_err(),
            MissingField("nope".into())
        );
        assert_eq!(render("100%%{x}").unwrap(), "100%{x}");
    }

    #[test]
    fn a_flat_dotted_key_is_found() {
        let e = event(json!({ "service.name": "flat", "a": { "b.c": 1 } }));
        let t = Template::parse("%{[service.name]}/%{[a.b.c]}").unwrap();
        assert_eq!(t.render_string(&e).unwrap(), "flat/1");
    }

    #[test]
    fn static_templates_are_recognised() {
        assert_eq!(Template::parse("logs").unwrap().as_static(), Some("logs"));
        assert_eq!(Template::parse("l-%{[a]}").unwrap().as_static(), None);
    }

    #[test]
    fn syntax_errors_name_the_placeholder() {
        let err = Template::parse("logs-%{service.name}").unwrap_err();
        assert!(err.to_string().contains("%{service.name}"), "{err}");
        assert!(matches!(
            Template::parse("logs-%{[a]").unwrap_err(),
            TemplateError::Unclosed { at: 5, .. }
        ));
    }
}
