//! `output.elasticsearch`: events indexed through `_bulk` (NDJSON, optionally gzipped), every
//! document with `op_type: create`.
//!
//! Each item of a bulk response is handled on its own: created (201) or already there (409, a
//! replay of an idempotent `_id`) counts as delivered; 429 and 5xx items are sent again with
//! exponential backoff; any other refusal (a mapping error) goes to the dead-letter file with
//! the reason. Only when retries run out does the batch fail, and the pipeline sends it again.
//!
//! Up to `worker` × hosts `_bulk` requests are in flight at once: a large batch is cut into
//! several requests sent together, and the queue hands small batches to several workers (clones
//! sharing one connection pool, one limit on requests in flight, and the dead-letter file);
//! the queue still commits the batches' offsets in order.

pub mod config;

pub use config::ElasticsearchConfig;

use super::dead_letter::{Refusals, Refused};
use super::metrics::OutputMetrics;
use super::template::{Template, lookup};
use super::{Output, OutputError};
use crate::process::{self, Event};
use base64::Engine;
use flate2::write::GzEncoder;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

const NAME: &str = "elasticsearch";

/// The Elasticsearch (and OpenSearch) output. Its clones are its workers: they share the
/// HTTP connection pool and the dead-letter file.
#[derive(Clone)]
pub struct Elasticsearch {
    config: ElasticsearchConfig,
    client: reqwest::Client,
    /// The host requests go to (shared by the workers); moves on when one cannot be reached.
    host: Arc<AtomicUsize>,
    /// `worker` × hosts permits: a `_bulk` request holds one while in flight, so that many
    /// are sent at once in all, whether they come from one large batch or several small ones.
    in_flight: Arc<Semaphore>,
    index: Template,
    fallback_index: Template,
    authorization: Option<HeaderValue>,
    refusals: Refusals,
    metrics: OutputMetrics,
}

/// What became of one document in a `_bulk` request.
enum ItemResult {
    Created,
    /// 409: a document with this `_id` exists, from an earlier delivery of the same line.
    Duplicate,
    /// 429 or 5xx: send it again.
    Retry(String),
    /// Refused for good: dead-letter it. The reason is a [`Refused::reason`].
    Refused(&'static str, String),
}

/// A `_bulk` response, only the parts that are read.
#[derive(Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

impl Elasticsearch {
    /// Builds the HTTP client; nothing connects until the first `send`.
    pub fn build(
        config: &ElasticsearchConfig,
        metrics: OutputMetrics,
    ) -> Result<Self, OutputError> {
        let invalid = |message: String| OutputError::Config {
            output: NAME,
            message,
        };
        config.validate().map_err(invalid)?;
        let index = Template::parse(&config.index).map_err(|err| invalid(err.to_string()))?;
        let fallback_index =
            Template::parse(&config.fallback_index).map_err(|err| invalid(err.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10).min(config.timeout));
        if let Some(ssl) = config.ssl.as_ref().filter(|ssl| ssl.enabled) {
            builder = builder
                .use_preconfigured_tls(ssl.rustls().map_err(|err| invalid(format!("ssl: {err}")))?);
        }
        let client = builder
            .build()
            .map_err(|err| invalid(format!("HTTP client: {err}")))?;
        let authorization = authorization(config)
            .map(|value| {
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    invalid("credentials contain characters a header cannot".into())
                })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let refusals = Refusals::open(NAME, config.dead_letter.as_ref(), metrics.clone())?;
        Ok(Self {
            config: config.clone(),
            client,
            host: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(Semaphore::new(config.worker * config.hosts.len())),
            index,
            fallback_index,
            authorization,
            refusals,
            metrics,
        })
    }

    /// Appends the action line and the document line of `event` to `body`.
    fn encode(&self, event: &Event, body: &mut Vec<u8>, index: &mut String) {
        index.clear();
        if self.index.render(event, index).is_err() {
            self.metrics.fallback(NAME, "index");
            index.clear();
            self.fallback_index
                .render(event, index)
                .unwrap_or_else(|_| index.push_str("logs-default"));
        }
        let mut action = serde_json::Map::new();
        action.insert("_index".into(), index.as_str().into());
        if self.config.idempotent_ids
            && let Some(id) = document_id(event)
        {
            action.insert("_id".into(), id.into());
        }
        let action = Value::Object(
            [("create".to_string(), Value::Object(action))]
                .into_iter()
                .collect(),
        );
        serde_json::to_writer(&mut *body, &action).expect("JSON serialises");
        body.push(b'\n');
        serde_json::to_writer(&mut *body, event).expect("JSON serialises");
        body.push(b'\n');
    }

    /// `pending` cut into `_bulk` requests: as many documents each as fit the count and size
    /// limits (at least one).
    fn chunks<'a>(&self, pending: &'a [usize], spans: &[Range<usize>]) -> Vec<&'a [usize]> {
        let mut chunks = Vec::new();
        let mut rest = pending;
        while !rest.is_empty() {
            let (mut taken, mut bytes) = (0, 0);
            for &i in rest.iter().take(self.config.bulk_max_size) {
                if taken > 0 && bytes + spans[i].len() > self.config.bulk_max_bytes {
                    break;
                }
                bytes += spans[i].len();
                taken += 1;
            }
            let (chunk, tail) = rest.split_at(taken);
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    /// Posts the documents `chunk` (indexes into `spans`, the spans of `encoded` that hold
    /// each document's two lines) as one `_bulk` request.
    async fn post_chunk<'a>(
        &self,
        chunk: &'a [usize],
        encoded: &[u8],
        spans: &[Range<usize>],
    ) -> (&'a [usize], Result<Vec<ItemResult>, OutputError>) {
        let mut body = Vec::with_capacity(chunk.iter().map(|&i| spans[i].len()).sum());
        for &i in chunk {
            body.extend_from_slice(&encoded[spans[i].clone()]);
        }
        (chunk, self.post(&body, chunk.len()).await)
    }

    /// Posts one `_bulk` body holding `count` documents, trying each host once when one
    /// cannot be reached. Returns one result per document, in order.
    async fn post(&self, body: &[u8], count: usize) -> Result<Vec<ItemResult>, OutputError> {
        let payload = if self.config.compression_level > 0 {
            let mut gz = GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::new(self.config.compression_level),
            );
            gz.write_all(body)
                .and_then(|()| gz.finish())
                .map_err(|source| OutputError::Io {
                    output: NAME,
                    source,
                })?
        } else {
            body.to_vec()
        };
        let _permit = self.in_flight.acquire().await.expect("never closed");
        let hosts = self.config.hosts.len();
        let mut last_error = None;
        for _ in 0..hosts {
            let at = self.host.load(Ordering::Relaxed);
            let host = self.config.hosts[at].trim_end_matches('/');
            let mut request = self
                .client
                .post(format!("{host}/_bulk"))
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(payload.clone());
            if self.config.compression_level > 0 {
                request = request.header(CONTENT_ENCODING, "gzip");
            }
            if let Some(authorization) = &self.authorization {
                request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
            }
            match request.send().await {
                Ok(response) => return self.read_response(host, response, count).await,
                Err(err) => {
                    let err = classify(host, &err);
                    tracing::warn!(%err, "elasticsearch host failed; trying the next");
                    last_error = Some(err);
                    // Unless another request has moved on already.
                    let _ = self.host.compare_exchange(
                        at,
                        (at + 1) % hosts,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
        }
        Err(last_error.expect("at least one host"))
    }

    async fn read_response(
        &self,
        host: &str,
        response: reqwest::Response,
        count: usize,
    ) -> Result<Vec<ItemResult>, OutputError> {
        let status = response.status();
        let text = response.text().await.map_err(|err| classify(host, &err))?;
        let brief = || format!("{host}: HTTP {status}: {}", truncate(&text, 500));
        match status {
            s if s.is_success() => {}
            // The whole request is refused for a reason that may pass: every item is retried.
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                return Ok((0..count).map(|_| ItemResult::Retry(brief())).collect());
            }
            s if s.is_server_error() => {
                return Ok((0..count).map(|_| ItemResult::Retry(brief())).collect());
            }
            // One document larger than the cluster takes (`http.max_content_length`): it
            // never will be taken, so it is refused like a mapping error.
            StatusCode::PAYLOAD_TOO_LARGE if count == 1 => {
                return Ok(vec![ItemResult::Refused("too_large", brief())]);
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(OutputError::Auth {
                    output: NAME,
                    message: brief(),
                });
            }
            _ => {
                return Err(OutputError::Rejected {
                    output: NAME,
                    message: brief(),
                });
            }
        }
        let parsed: BulkResponse =
            serde_json::from_str(&text).map_err(|err| OutputError::Protocol {
                output: NAME,
                message: format!(
                    "{host}: _bulk response is not what was expected ({err}): {}",
                    truncate(&text, 500)
                ),
            })?;
        if parsed.items.len() != count {
            return Err(OutputError::Protocol {
                output: NAME,
                message: format!(
                    "{host}: _bulk answered {} items for {count} documents",
                    parsed.items.len()
                ),
            });
        }
        if !parsed.errors {
            return Ok((0..count).map(|_| ItemResult::Created).collect());
        }
        Ok(parsed
            .items
            .into_iter()
            .map(|item| {
                let Some(item) = item.into_values().next() else {
                    return ItemResult::Retry("empty bulk item".into());
                };
                match item.status {
                    200..=299 => ItemResult::Created,
                    409 => ItemResult::Duplicate,
                    429 | 500..=599 => ItemResult::Retry(reason(item.status, item.error.as_ref())),
                    _ => ItemResult::Refused("document", reason(item.status, item.error.as_ref())),
                }
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Output for Elasticsearch {
    fn name(&self) -> &'static str {
        NAME
    }

    /// `worker` per host, so that small batches too keep that many requests in flight.
    fn extra_workers(&self) -> Vec<Box<dyn Output>> {
        (1..self.config.worker * self.config.hosts.len())
            .map(|_| Box::new(self.clone()) as Box<dyn Output>)
            .collect()
    }

    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
        // Each event's two bulk lines, encoded once and reused by every retry.
        let mut encoded = Vec::new();
        let mut spans: Vec<Range<usize>> = Vec::with_capacity(events.len());
        let mut index = String::new();
        for event in events {
            let start = encoded.len();
            self.encode(event, &mut encoded, &mut index);
            spans.push(start..encoded.len());
        }
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut refused: Vec<Refused> = Vec::new();
        let (mut created, mut duplicates) = (0u64, 0u64);
        let mut backoff = self.config.backoff_init;
        let mut attempt = 0;
        loop {
            let mut retry: Vec<(usize, String)> = Vec::new();
            let this = &*self;
            // Up to `worker` requests at once. An error ends them all: the pipeline sends the
            // batch again, and the idempotent `_id`s turn what was indexed into 409s.
            let mut chunks = this.chunks(&pending, &spans).into_iter();
            let mut posts = FuturesUnordered::new();
            loop {
                while posts.len() < this.config.worker
                    && let Some(chunk) = chunks.next()
                {
                    posts.push(this.post_chunk(chunk, &encoded, &spans));
                }
                let Some((chunk, results)) = posts.next().await else {
                    break;
                };
                let results = match results {
                    Ok(results) => results,
                    Err(err) => {
                        this.metrics.error(NAME, err.metric_label());
                        return Err(err);
                    }
                };
                for (&i, result) in chunk.iter().zip(results) {
                    match result {
                        ItemResult::Created => created += 1,
                        ItemResult::Duplicate => duplicates += 1,
                        ItemResult::Retry(reason) => retry.push((i, reason)),
                        ItemResult::Refused(reason, detail) => refused.push(Refused {
                            index: i,
                            reason,
                            detail,
                        }),
                    }
                }
            }
            // They borrow `pending`, which the retries replace.
            drop((posts, chunks));
            if retry.is_empty() {
                break;
            }
            attempt += 1;
            self.metrics.retry(NAME, "overloaded", retry.len() as u64);
            if attempt > self.config.max_retries {
                let err = OutputError::Overloaded {
                    output: NAME,
                    message: format!(
                        "{} documents still refused after {} retries, last: {}",
                        retry.len(),
                        self.config.max_retries,
                        retry[0].1
                    ),
                };
                self.metrics.error(NAME, err.metric_label());
                return Err(err);
            }
            tracing::warn!(
                documents = retry.len(),
                reason = %retry[0].1,
                ?backoff,
                "elasticsearch asked to slow down; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
            pending = retry.into_iter().map(|(i, _)| i).collect();
        }
        self.refusals.keep(events, &mut refused)?;
        self.metrics.outcome(NAME, "acked", created);
        self.metrics.outcome(NAME, "duplicate", duplicates);
        Ok(())
    }
}

/// The document `_id` of an event read from a file: `<device>-<inode>[-<birth>]-<offset>`
/// and a digest of the message. The same line read again (a replay after a crash) gets the
/// same `_id`; a new file that reuses an inode has other messages at its offsets, so the digest
/// keeps its lines from being taken for replays. `None` without a file identity.
pub fn document_id(event: &Event) -> Option<String> {
    let device = scalar(lookup(event, "log.file.device_id")?)?;
    let inode = scalar(lookup(event, "log.file.inode")?)?;
    let offset = lookup(event, "log.offset")?.as_u64()?;
    let mut id = format!("{device}-{inode}-");
    if let Some(birth) = lookup(event, "log.file.birth").and_then(scalar) {
        id.push_str(&birth);
        id.push('-');
    }
    id.push_str(&offset.to_string());
    if let Some(process::Value::String(message)) = event.get("message") {
        id.push_str(&format!("-{:016x}", fnv1a(message.as_bytes())));
    }
    Some(id)
}

fn scalar(value: &process::Value) -> Option<String> {
    match value {
        process::Value::String(s) if !s.is_empty() => Some(s.to_string()),
        process::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `Authorization` header: `Basic` for a user and password, `ApiKey` for an API key
/// (given as `id:api_key`, encoded here, or already encoded).
fn authorization(config: &ElasticsearchConfig) -> Option<String> {
    let base64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    match (&config.username, &config.password, &config.api_key) {
        (Some(user), Some(password), _) => {
            Some(format!("Basic {}", base64(&format!("{user}:{password}"))))
        }
        (_, _, Some(key)) if key.contains(':') => Some(format!("ApiKey {}", base64(key))),
        (_, _, Some(key)) => Some(format!("ApiKey {key}")),
        _ => None,
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, which `std`'s hasher does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `status type: reason (caused by: …)` of a bulk item's error.
fn reason(status: u16, error: Option<&Value>) -> String {
    let Some(error) = error else {
        return format!("HTTP {status}");
    };
    let mut text = format!(
        "{status} {}: {}",
        error["type"].as_str().unwrap_or("error"),
        error["reason"].as_str().unwrap_or_default()
    );
    if let Some(cause) = error["caused_by"]["reason"].as_str() {
        text.push_str(&format!(" (caused by: {cause})"));
    }
    text
}

/// The `OutputError` of a request that got no HTTP response, with the whole cause chain:
/// reqwest's own message alone ("error sending request") does not say what failed.
fn classify(host: &str, err: &reqwest::Error) -> OutputError {
    let mut message = format!("{host}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    let lower = message.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        OutputError::Tls {
            output: NAME,
            message,
        }
    } else if err.is_timeout() {
        OutputError::Timeout {
            output: NAME,
            message,
        }
    } else if err.is_connect() {
        OutputError::Unreachable {
            output: NAME,
            message,
        }
    } else {
        OutputError::Protocol {
            output: NAME,
            message,
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> Event {
        value.as_object().unwrap().clone().into()
    }

    #[test]
    fn ids_follow_the_file_identity_and_offset() {
        let line = |offset: u64, message: &str| {
            event(json!({
                "message": message,
                "log": { "offset": offset, "file": { "device_id": "2049", "inode": "77" } },
            }))
        };
        let id = document_id(&line(10, "a")).unwrap();
        assert!(id.starts_with("2049-77-10-"), "{id}");
        assert_eq!(document_id(&line(10, "a")), Some(id.clone()));
        assert_ne!(document_id(&line(11, "a")), Some(id.clone()));
        // A reused inode with other content at the same offset is not a replay.
        assert_ne!(document_id(&line(10, "b")), Some(id));
        assert_eq!(document_id(&event(json!({ "log": { "offset": 1 } }))), None);
    }

    #[test]
    fn basic_and_api_key_authorization() {
        let mut config = ElasticsearchConfig::new(vec!["http://es:9200".into()]);
        assert_eq!(authorization(&config), None);
        config.username = Some("skiff".into());
        config.password = Some("secret".into());
        assert_eq!(
            authorization(&config).as_deref(),
            Some("Basic c2tpZmY6c2VjcmV0")
        );
        config.username = None;
        config.password = None;
        config.api_key = Some("id:key".into());
        assert_eq!(authorization(&config).as_deref(), Some("ApiKey aWQ6a2V5"));
        config.api_key = Some("aWQ6a2V5".into());
        assert_eq!(authorization(&config).as_deref(), Some("ApiKey aWQ6a2V5"));
    }

    #[test]
    fn item_reasons_name_type_and_cause() {
        let error = json!({
            "type": "mapper_parsing_exception",
            "reason": "failed to parse field [n]",
            "caused_by": { "type": "number_format_exception", "reason": "For input string: \"x\"" },
        });
        assert_eq!(
            reason(400, Some(&error)),
            "400 mapper_parsing_exception: failed to parse field [n] (caused by: For input string: \"x\")"
        );
    }
}
