//! Dotted field paths (`client.geo.city_name`) into an [`Event`].
//!
//! A path names nested objects, as in Filebeat and ECS. A key that itself contains dots (a
//! flat `"client.ip"` key decoded from JSON) is found too: at each level the whole remaining
//! path is tried as a key before it is split.

use super::Event;
use serde_json::{Map, Value};

/// The value at `path`, if there is one.
pub fn get<'a>(event: &'a Event, path: &str) -> Option<&'a Value> {
    if let Some(value) = event.get(path) {
        return Some(value);
    }
    let (head, rest) = split_once(path, b'.')?;
    get(event.get(head)?.as_object()?, rest)
}

/// The string at `path`, if the value there is a string.
pub fn get_str<'a>(event: &'a Event, path: &str) -> Option<&'a str> {
    get(event, path)?.as_str()
}

/// Sets `path` to `value`, creating the objects on the way (and replacing a non-object that
/// stands where an object must go). Returns the value it replaced.
pub fn insert(event: &mut Event, path: &str, value: Value) -> Option<Value> {
    match split_once(path, b'.') {
        None => set(event, path, value),
        Some((head, rest)) => insert(object_at(event, head), rest, value),
    }
}

/// Sets `key` of `object` to `value`, returning the value it replaced. The key is allocated
/// only when it is new: most fields a step sets replace one an earlier step set
/// (`@timestamp`, `message`).
pub fn set(object: &mut Map<String, Value>, key: &str, value: Value) -> Option<Value> {
    match object.get_mut(key) {
        Some(slot) => Some(std::mem::replace(slot, value)),
        None => object.insert(key.to_owned(), value),
    }
}

/// Like [`insert`], but leaves an existing value alone. Returns whether it inserted.
pub fn insert_if_absent(event: &mut Event, path: &str, value: Value) -> bool {
    if get(event, path).is_some() {
        return false;
    }
    insert(event, path, value);
    true
}

/// The object at `path`, created (or made an object) if needed; `""` is the event itself.
pub fn object_mut<'a>(event: &'a mut Event, path: &str) -> &'a mut Map<String, Value> {
    if path.is_empty() {
        return event;
    }
    match split_once(path, b'.') {
        None => object_at(event, path),
        Some((head, rest)) => object_mut(object_at(event, head), rest),
    }
}

/// Removes and returns the value at `path`; an object left empty by that stays.
pub fn remove(event: &mut Event, path: &str) -> Option<Value> {
    if let Some(value) = event.remove(path) {
        return Some(value);
    }
    let (head, rest) = split_once(path, b'.')?;
    remove(event.get_mut(head)?.as_object_mut()?, rest)
}

/// `text` split at the first `byte` (an ASCII character), as `str::split_once` does; with
/// `memchr` directly, as paths and log lines are split on every event.
pub fn split_once(text: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = memchr::memchr(byte, text.as_bytes())?;
    Some((&text[..at], &text[at + 1..]))
}

fn object_at<'a>(event: &'a mut Event, key: &str) -> &'a mut Map<String, Value> {
    // Looked up by `&str` first: `entry` would allocate the key even when it exists.
    if !event.get(key).is_some_and(Value::is_object) {
        set(event, key, Value::Object(Map::new()));
    }
    event
        .get_mut(key)
        .and_then(Value::as_object_mut)
        .expect("made an object above")
}

/// Appends `flag` to the event's `log.flags` list unless it is there already.
pub fn add_flag(event: &mut Event, flag: &str) {
    let log = object_mut(event, "log");
    if !log.get("flags").is_some_and(Value::is_array) {
        set(log, "flags", Value::Array(Vec::new()));
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
pub fn set_error(event: &mut Event, message: impl Into<String>) {
    insert(event, "error.message", Value::String(message.into()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> Event {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn nested_and_flat_keys_are_both_found() {
        let e = event(json!({ "client": { "ip": "1.2.3.4" }, "url.path": "/a" }));
        assert_eq!(get(&e, "client.ip"), Some(&json!("1.2.3.4")));
        assert_eq!(get(&e, "url.path"), Some(&json!("/a")));
        assert_eq!(get(&e, "client.port"), None);
        assert_eq!(get(&e, "url.path.x"), None);
    }

    #[test]
    fn insert_creates_objects_and_replaces_scalars_in_the_way() {
        let mut e = event(json!({ "http": "oops" }));
        insert(&mut e, "http.response.status_code", json!(200));
        assert_eq!(
            e,
            event(json!({ "http": { "response": { "status_code": 200 } } }))
        );
        assert!(!insert_if_absent(
            &mut e,
            "http.response.status_code",
            json!(500)
        ));
        assert_eq!(e["http"]["response"]["status_code"], 200);
    }

    #[test]
    fn remove_returns_the_value() {
        let mut e = event(json!({ "a": { "b": 1, "c": 2 } }));
        assert_eq!(remove(&mut e, "a.b"), Some(json!(1)));
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
