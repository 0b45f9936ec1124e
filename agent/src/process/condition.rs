//! Filebeat-style conditions (`when:`), used by processors to decide which events they touch.

use super::{BuildError, Event, Value, field};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A condition as written in the configuration, e.g.
/// `{ and: [ { equals: { http.response.status_code: 200 } }, { not: { has_fields: [error] } } ] }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionConfig {
    /// Every named field equals its value (a string also matches a number or boolean that
    /// prints the same, as YAML users write `"200"` for 200).
    Equals(BTreeMap<String, serde_json::Value>),
    /// Every named field is a string containing its substring (or a list with such a string).
    Contains(BTreeMap<String, String>),
    /// Every named field is a string matching its regular expression (unanchored).
    Regexp(BTreeMap<String, String>),
    /// Every listed field exists.
    HasFields(Vec<String>),
    /// All of the conditions hold.
    And(Vec<ConditionConfig>),
    /// At least one of the conditions holds.
    Or(Vec<ConditionConfig>),
    /// The condition does not hold.
    Not(Box<ConditionConfig>),
}

/// A compiled [`ConditionConfig`].
#[derive(Debug, Clone)]
pub enum Condition {
    Equals(Vec<(String, Value)>),
    Contains(Vec<(String, String)>),
    Regexp(Vec<(String, Regex)>),
    HasFields(Vec<String>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    /// Compiles the regular expressions once.
    pub fn build(config: &ConditionConfig) -> Result<Self, BuildError> {
        Ok(match config {
            ConditionConfig::Equals(fields) => Condition::Equals(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect(),
            ),
            ConditionConfig::Contains(fields) => {
                Condition::Contains(fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            ConditionConfig::Regexp(fields) => Condition::Regexp(
                fields
                    .iter()
                    .map(|(k, pattern)| Ok((k.clone(), compile("regexp", pattern)?)))
                    .collect::<Result<_, BuildError>>()?,
            ),
            ConditionConfig::HasFields(fields) => Condition::HasFields(fields.clone()),
            ConditionConfig::And(all) => Condition::And(build_all(all)?),
            ConditionConfig::Or(any) => Condition::Or(build_all(any)?),
            ConditionConfig::Not(inner) => Condition::Not(Box::new(Condition::build(inner)?)),
        })
    }

    /// Whether `event` satisfies the condition.
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Condition::Equals(fields) => fields.iter().all(|(path, want)| {
                field::get(event, path).is_some_and(|got| loosely_equal(got, want))
            }),
            Condition::Contains(fields) => {
                fields
                    .iter()
                    .all(|(path, needle)| match field::get(event, path) {
                        Some(Value::String(s)) => s.contains(needle.as_str()),
                        Some(Value::Array(items)) => items
                            .iter()
                            .any(|item| item.as_str().is_some_and(|s| s.contains(needle.as_str()))),
                        _ => false,
                    })
            }
            Condition::Regexp(fields) => fields.iter().all(|(path, regex)| {
                field::get_str(event, path).is_some_and(|s| regex.is_match(s))
            }),
            Condition::HasFields(fields) => fields.iter().all(|p| field::get(event, p).is_some()),
            Condition::And(all) => all.iter().all(|c| c.matches(event)),
            Condition::Or(any) => any.iter().any(|c| c.matches(event)),
            Condition::Not(inner) => !inner.matches(event),
        }
    }
}

fn build_all(configs: &[ConditionConfig]) -> Result<Vec<Condition>, BuildError> {
    configs.iter().map(Condition::build).collect()
}

/// Compiles `pattern` for the processor or condition named `what`.
pub(crate) fn compile(what: &'static str, pattern: &str) -> Result<Regex, BuildError> {
    Regex::new(pattern).map_err(|source| BuildError::InvalidRegex {
        what,
        pattern: pattern.to_string(),
        source,
    })
}

fn loosely_equal(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            n.to_string() == s.as_str()
        }
        (Value::Bool(b), Value::String(s)) | (Value::String(s), Value::Bool(b)) => {
            b.to_string() == s.as_str()
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => got == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(yaml: &str) -> Condition {
        let config: ConditionConfig = serde_yaml::with::singleton_map_recursive::deserialize(
            serde_yaml::Deserializer::from_str(yaml),
        )
        .unwrap();
        Condition::build(&config).unwrap()
    }

    fn event() -> Event {
        json!({
            "message": "GET /health 200",
            "http": { "response": { "status_code": 200 } },
            "tags": ["beta", "canary-1"],
            "kubernetes": { "namespace": "payments" },
        })
        .as_object()
        .unwrap()
        .clone()
        .into()
    }

    #[test]
    fn leaf_conditions() {
        let e = event();
        for (yaml, want) in [
            ("equals: { http.response.status_code: 200 }", true),
            ("equals: { http.response.status_code: '200' }", true),
            ("equals: { kubernetes.namespace: payments }", true),
            ("equals: { kubernetes.namespace: shop }", false),
            ("equals: { missing: x }", false),
            ("contains: { message: /health }", true),
            ("contains: { tags: canary }", true),
            ("contains: { message: /metrics }", false),
            ("regexp: { message: '^GET\\s' }", true),
            ("regexp: { message: '^POST' }", false),
            ("has_fields: [message, kubernetes.namespace]", true),
            ("has_fields: [message, error.message]", false),
        ] {
            assert_eq!(condition(yaml).matches(&e), want, "{yaml}");
        }
    }

    #[test]
    fn combinators_nest() {
        let e = event();
        let yaml = "and: [ { contains: { message: health } }, { not: { has_fields: [error] } }, \
                    { or: [ { equals: { kubernetes.namespace: shop } }, { regexp: { message: '200$' } } ] } ]";
        assert!(condition(yaml).matches(&e));
        assert!(!condition("not: { contains: { message: health } }").matches(&e));
    }

    #[test]
    fn a_bad_regexp_is_a_build_error() {
        let config = ConditionConfig::Regexp([("message".into(), "(".into())].into());
        let err = Condition::build(&config).unwrap_err().to_string();
        assert!(err.contains("regexp"), "{err}");
    }
}
