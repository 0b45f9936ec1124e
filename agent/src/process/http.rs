//! `http`: the HTTP request of an event, as ECS fields: `http.request.method`, `url.path`,
//! `url.query`, `http.response.status_code`, `http.response.body.bytes`, and `http.route`,
//! the path with its ids replaced by `:id` (`/users/42/orders/9f1c…` → `/users/:id/orders/:id`)
//! so requests group by endpoint.
//!
//! The request comes from fields an earlier parser set (`url.original`, as `nginx` and
//! `apache` do), else from `field`: a combined access log line, or any text with a
//! `METHOD /path` in it (`GET /users/42 200 12ms`). Fields already set are left alone.

use super::parse::access::{self, AccessLine, Request};
use super::{Event, Text, field};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// `http` configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The text to find the request in when `url.original` is not set. Default: `message`.
    #[serde(default = "default_field")]
    pub field: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            field: default_field(),
        }
    }
}

fn default_field() -> String {
    "message".to_string()
}

/// Built `http`.
#[derive(Debug, Clone)]
pub struct Http {
    field: String,
}

/// What was found of a request, borrowed from the event where possible.
#[derive(Default)]
struct Found<'a> {
    method: Option<Cow<'a, str>>,
    target: Option<Cow<'a, str>>,
    status: Option<u16>,
    bytes: Option<u64>,
}

impl Http {
    pub fn build(config: &HttpConfig) -> Self {
        Self {
            field: config.field.clone(),
        }
    }

    pub fn apply(&self, event: &mut Event) {
        let (found, from_fields) = match field::get_str(event, "url.original") {
            Some(target) => (
                Found {
                    target: Some(target.into()),
                    ..Found::default()
                },
                true,
            ),
            None => match field::get_str(event, &self.field) {
                Some(text) => (find(text), false),
                None => return,
            },
        };
        let Found {
            method,
            target: Some(target),
            status,
            bytes,
        } = found
        else {
            return;
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target.as_ref(), None),
        };
        // An absolute URL (a proxy's request line) has its path after the authority. Most
        // paths have no colon: looked for first, as it is found far faster than "://".
        let authority = if path.contains(':') {
            path.split_once("://")
        } else {
            None
        };
        let path = match authority {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => path,
        };
        // Owned before the event is written to: they borrow from it.
        let url_path = Text::new(path);
        let route = route(path);
        let query = query.map(Text::new);
        let original = (!from_fields).then(|| Text::new(&target));
        let method = method.map(Text::from);
        field::insert_if_absent(event, "url.path", url_path);
        field::insert_if_absent(event, "http.route", route);
        if let Some(query) = query {
            field::insert_if_absent(event, "url.query", query);
        }
        if let Some(method) = method {
            field::insert_if_absent(event, "http.request.method", method);
        }
        if let Some(status) = status {
            field::insert_if_absent(event, "http.response.status_code", status);
        }
        if let Some(bytes) = bytes {
            field::insert_if_absent(event, "http.response.body.bytes", bytes);
        }
        if let Some(original) = original {
            field::insert_if_absent(event, "url.original", original);
        }
    }
}

/// The request in a line of text.
fn find(text: &str) -> Found<'_> {
    if let Some(AccessLine {
        request: Request::Line { method, target, .. },
        status,
        bytes,
        ..
    }) = access::parse_line(text)
    {
        return Found {
            method: Some(method),
            target: Some(target),
            status,
            bytes,
        };
    }
    // Free text: the first `METHOD /path`, and a status right after it if there is one.
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '"')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, pair) in words.windows(2).enumerate() {
        if is_method(pair[0]) && pair[1].starts_with('/') {
            let status = words
                .iter()
                .skip(i + 2)
                .take(2)
                .find_map(|w| w.parse::<u16>().ok().filter(|s| (100..600).contains(s)));
            return Found {
                method: Some(pair[0].into()),
                target: Some(pair[1].into()),
                status,
                bytes: None,
            };
        }
    }
    Found::default()
}

fn is_method(word: &str) -> bool {
    matches!(
        word,
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" | "CONNECT" | "TRACE"
    )
}

/// `path` with every id-like segment replaced by `:id`.
pub fn route(path: &str) -> Text {
    // Written straight into the text, a run of plain segments at a time: most routes fit
    // inline, without an allocation (not sized from the path: a long path with ids makes a
    // short route).
    let mut route = Text::default();
    let (mut copied, mut start) = (0, 0);
    for segment in path.as_bytes().split(|&b| b == b'/') {
        let end = start + segment.len();
        if is_id(segment) {
            route.push_str(&path[copied..start]);
            route.push_str(":id");
            copied = end;
        }
        start = end + 1;
    }
    route.push_str(&path[copied..]);
    route
}

/// What a byte can be part of, for [`is_id`]: a digit, a hex id (hex digits and `-`), a
/// token (letters, digits, `-` and `_`).
const DIGIT: u8 = 1;
const HEX: u8 = 2;
const TOKEN: u8 = 4;
const CLASSES: [u8; 256] = {
    let mut classes = [0; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let hex = byte.is_ascii_hexdigit() || byte == b'-';
        let token = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
        classes[b] =
            (DIGIT * byte.is_ascii_digit() as u8) | (HEX * hex as u8) | (TOKEN * token as u8);
        b += 1;
    }
    classes
};

/// Whether a path segment names one resource rather than a collection: a number, a UUID,
/// a hex digest or object id (8+ hex digits, at least one a digit), or a long opaque token
/// (16+ characters of letters, digits, `-` and `_`, with digits in it). One table lookup
/// per byte: this runs for every byte of every request's path.
fn is_id(segment: &[u8]) -> bool {
    let (mut digits, mut all) = (0, HEX | TOKEN);
    for &b in segment {
        let class = CLASSES[usize::from(b)];
        digits += usize::from(class & DIGIT);
        all &= class;
    }
    let len = segment.len();
    digits > 0 && (digits == len || (all & HEX != 0 && len >= 8) || (all & TOKEN != 0 && len >= 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_normalise_ids() {
        for (path, want) in [
            ("/users/42/orders/9f1c2a7e", "/users/:id/orders/:id"),
            (
                "/users/42/orders/9f1c2a7e-6b1d-4f7e-9a51-0c6e2f9b8d11",
                "/users/:id/orders/:id",
            ),
            ("/objects/507f1f77bcf86cd799439011/raw", "/objects/:id/raw"),
            ("/t/Ab3dEfGh1jKlMn0pQ", "/t/:id"),
            ("/v1/health", "/v1/health"),
            ("/api/users/me", "/api/users/me"),
            ("/", "/"),
            ("/a//b/", "/a//b/"),
            ("/deadbeef/v1/abcdef12", "/deadbeef/v1/:id"),
            (
                "/files/report_2026-final-v2.pdf",
                "/files/report_2026-final-v2.pdf",
            ),
        ] {
            assert_eq!(route(path), want, "{path}");
        }
    }
}
