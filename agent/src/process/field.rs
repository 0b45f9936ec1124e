//! Dotted field paths (`client.geo.city_name`) into an [`Event`].
//!
//! A path names nested objects, as in Filebeat and ECS. A key that itself contains dots (a
//! flat `"client.ip"` key decoded from JSON) is found too: at each level where the nested
//! objects do not have the rest of the path, the whole remaining path is tried as a key.
//! Nested objects first, as nearly every event has them: trying the flat key first made
//! every lookup of a dotted path miss once per level.

use super::event::MAX_DEPTH;
use super::{Event, Object, Value};

/// The value at `path`, if there is one.
pub fn get<'a>(event: &'a Event, path: &str) -> Option<&'a Value> {
    match split_once(path, b'.') {
        None => event.get(path),
        Some((head, rest)) => event
            .get(head)
            .and_then(Value::as_object)
            .and_then(|object| get(object, rest))
            .or_else(|| event.get(path)),
    }
}

/// The string at `path`, if the value there is a string.
pub fn get_str<'a>(event: &'a Event, path: &str) -> Option<&'a str> {
    get(event, path)?.as_str()
}

/// Sets `path` to `value`, creating the objects on the way (and replacing a non-object that
/// stands where an object must go). Returns the value it replaced.
pub fn insert(event: &mut Event, path: &str, value: impl Into<Value>) -> Option<Value> {
    match split_once(path, b'.') {
        None => event.insert(path, value),
        Some((head, rest)) => insert(event.object_mut(head), rest, value),
    }
}

/// Like [`insert`], but leaves an existing value alone (nested or under a flat key, as [`get`]
/// finds it), a value standing where an object must go included. Returns whether it
/// inserted. One walk down the path: at each level the rest of it is looked up as a flat key
/// before going into the nested object.
pub fn insert_if_absent(event: &mut Event, path: &str, value: impl Into<Value>) -> bool {
    match split_once(path, b'.') {
        None => event.insert_if_absent(path, value),
        Some((head, rest)) => {
            !event.contains_key(path)
                && event
                    .object_if_free(head)
                    .is_some_and(|object| insert_if_absent(object, rest, value))
        }
    }
}

/// How many levels `path` names: 1 for a key without dots.
pub fn levels(path: &str) -> usize {
    1 + path.bytes().filter(|&b| b == b'.').count()
}

/// Whether `value`, set at the dotted `key` of an object at `level` of an event (1: the event
/// itself), has nothing deeper than [`MAX_DEPTH`]: its deepest object or array would be at
/// `level + levels(key) + depth - 1`. A key without dots always does, as its object does.
pub fn nests_within(level: usize, key: &str, value: &Value) -> bool {
    let levels = levels(key);
    levels == 1 || level + levels + value.depth() <= MAX_DEPTH + 1
}

/// The object at `path`, created (or made an object) if needed; `""` is the event itself.
pub fn object_mut<'a>(event: &'a mut Event, path: &str) -> &'a mut Object {
    if path.is_empty() {
        return event;
    }
    match split_once(path, b'.') {
        None => event.object_mut(path),
        Some((head, rest)) => object_mut(event.object_mut(head), rest),
    }
}

/// Removes and returns the value at `path`; an object left empty by that stays.
pub fn remove(event: &mut Event, path: &str) -> Option<Value> {
    let Some((head, rest)) = split_once(path, b'.') else {
        return event.remove(path);
    };
    let nested = event
        .get_mut(head)
        .and_then(Value::as_object_mut)
        .and_then(|object| remove(object, rest));
    nested.or_else(|| event.remove(path))
}

/// `text` split at the first `byte` (an ASCII character), as `str::split_once` does. For
/// path segments and the words of a log line, split on every event: they are short, and a
/// plain loop finds the byte before `memchr` (or `str`'s searcher) has set up its search.
pub fn split_once(text: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = text.bytes().position(|b| b == byte)?;
    Some((&text[..at], &text[at + 1..]))
}

/// Turns `{"log.level": "x"}` into `{"log": {"level": "x"}}`, recursively. `object` is at
/// `level` of the event and nothing in it is deeper than [`MAX_DEPTH`]; a dotted key whose
/// value would then be is kept as it is, and `kept_flat` set.
pub fn expand_keys(object: Object, level: usize, kept_flat: &mut bool) -> Object {
    let mut out = Object::with_capacity(object.len());
    for (key, value) in object {
        let nested = nests_within(level, &key, &value);
        let value_level = level + if nested { levels(&key) } else { 1 };
        let value = match value {
            Value::Object(inner) => Value::Object(expand_keys(inner, value_level, kept_flat)),
            other => other,
        };
        if nested {
            insert(&mut out, &key, value);
        } else {
            *kept_flat = true;
            out.insert(key, value);
        }
    }
    out
}

/// Appends `flag` to the event's `log.flags` list unless it is there already.
pub fn add_flag(event: &mut Event, flag: &str) {
    let log = event.object_mut("log");
    if !log.get("flags").is_some_and(Value::is_array) {
        log.insert("flags", Value::Array(Vec::new()));
    }
    let flags = log
        .get_mut("flags")
        .and_then(Value::as_array_mut)
        .expect("made an array above");
    if !flags.iter().any(|f| f == flag) {
        flags.push(flag.into());
    }
}

/// Records why processing failed in `error.message`, keeping the rest of the event as it is.
pub fn set_error(event: &mut Event, message: impl Into<Value>) {
    event.object_mut("error").insert("message", message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Event {
        value.as_object().unwrap().clone().into()
    }

    #[test]
    fn nested_and_flat_keys_are_both_found() {
        let e = event(json!({ "client": { "ip": "1.2.3.4" }, "url.path": "/a" }));
        assert_eq!(get(&e, "client.ip"), Some(&"1.2.3.4".into()));
        assert_eq!(get(&e, "url.path"), Some(&"/a".into()));
        assert_eq!(get(&e, "client.port"), None);
        assert_eq!(get(&e, "url.path.x"), None);
    }

    #[test]
    fn insert_creates_objects_and_replaces_scalars_in_the_way() {
        let mut e = event(json!({ "http": "oops" }));
        insert(&mut e, "http.response.status_code", 200);
        assert_eq!(
            e,
            event(json!({ "http": { "response": { "status_code": 200 } } }))
        );
        assert!(!insert_if_absent(&mut e, "http.response.status_code", 500));
        assert_eq!(e["http"]["response"]["status_code"], 200);
    }

    #[test]
    fn insert_if_absent_sees_flat_keys_at_every_level() {
        let mut e = event(json!({ "url.path": "/a", "http": { "response.status_code": 200 } }));
        assert!(!insert_if_absent(&mut e, "url.path", "/b"));
        assert!(!insert_if_absent(&mut e, "http.response.status_code", 500));
        assert_eq!(
            e,
            event(json!({ "url.path": "/a", "http": { "response.status_code": 200 } }))
        );
        assert!(insert_if_absent(&mut e, "url.query", "q=1"));
        assert!(insert_if_absent(&mut e, "http.request.method", "GET"));
        assert_eq!(e["url"], json!({ "query": "q=1" }));
        assert_eq!(e["http"]["request"], json!({ "method": "GET" }));
    }

    #[test]
    fn insert_if_absent_leaves_a_scalar_in_the_way() {
        let mut e = event(json!({ "kubernetes": { "namespace": "shop" } }));
        assert!(!insert_if_absent(&mut e, "kubernetes.namespace.name", "x"));
        assert_eq!(e, event(json!({ "kubernetes": { "namespace": "shop" } })));
    }

    #[test]
    fn remove_returns_the_value() {
        let mut e = event(json!({ "a": { "b": 1, "c": 2 } }));
        assert_eq!(remove(&mut e, "a.b"), Some(1.into()));
        assert_eq!(remove(&mut e, "a.x"), None);
        assert_eq!(e, event(json!({ "a": { "c": 2 } })));
    }

    #[test]
    fn flags_are_a_set() {
        let mut e = Event::new();
        add_flag(&mut e, "multiline");
        add_flag(&mut e, "multiline");
        add_flag(&mut e, "truncated");
        assert_eq!(e["log"]["flags"], json!(["multiline", "truncated"]));
    }
}
