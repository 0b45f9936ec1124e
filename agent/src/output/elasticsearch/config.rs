//! `output.elasticsearch`: the configuration.

use crate::output::dead_letter::DeadLetterConfig;
use crate::output::tls::TlsConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `output.elasticsearch`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URLs (`http://…` or `https://…`); a request that cannot connect tries the next.
    pub hosts: Vec<String>,
    /// Index (or data stream) template; `%{+yyyy.MM.dd}` is the event's `@timestamp` date.
    /// Every document is sent with `op_type: create`, which data streams require.
    /// Default: `logs-%{[service.name]}-%{+yyyy.MM.dd}`.
    #[serde(default = "default_index")]
    pub index: String,
    /// The index template for events the `index` template cannot be rendered for; counted in
    /// `skiff_output_template_fallbacks_total{kind="index"}`. Default: `logs-default-%{+yyyy.MM.dd}`.
    #[serde(default = "default_fallback_index")]
    pub fallback_index: String,
    /// Derive each document's `_id` from its file identity and byte offset, so a replay after
    /// a crash gives 409 conflicts instead of duplicates. Default: true.
    #[serde(default = "default_true")]
    pub idempotent_ids: bool,
    /// Workers per host: each sends its own batch, so up to `worker` × hosts `_bulk`
    /// requests are in flight at once (offsets are still committed in order). Default: 4.
    #[serde(default = "default_worker")]
    pub worker: usize,
    /// Largest number of documents in one `_bulk` request. Default: 1600.
    #[serde(default = "default_bulk_max_size")]
    pub bulk_max_size: usize,
    /// Largest `_bulk` body before compression, bytes (a single larger document still goes
    /// alone). Default: 10485760.
    #[serde(default = "default_bulk_max_bytes")]
    pub bulk_max_bytes: usize,
    /// gzip level of request bodies, 0 (off) to 9. Default: 1.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    /// Basic authentication user. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic authentication password. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// API key, as `id:api_key` or already base64-encoded. Default: none.
    #[serde(default)]
    pub api_key: Option<String>,
    /// TLS for `https://` hosts. Default: the built-in web roots, full verification.
    #[serde(default)]
    pub ssl: Option<TlsConfig>,
    /// How long one `_bulk` request may take. Default: 90s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often documents answered with 429 or 5xx are sent again within one batch before
    /// the batch fails (and the pipeline sends it again later). Default: 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; doubled after each. Default: 1s.
    #[serde(default = "default_backoff_init", with = "humantime_serde")]
    pub backoff_init: Duration,
    /// Longest wait between retries. Default: 60s.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Where documents refused for good (mapping errors and other 4xx) are kept, with the
    /// reason. Default: none (they are counted as dropped and logged).
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
}

fn default_index() -> String {
    "logs-%{[service.name]}-%{+yyyy.MM.dd}".to_string()
}
fn default_fallback_index() -> String {
    "logs-default-%{+yyyy.MM.dd}".to_string()
}
fn default_true() -> bool {
    true
}
fn default_worker() -> usize {
    4
}
fn default_bulk_max_size() -> usize {
    1600
}
fn default_bulk_max_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_compression_level() -> u32 {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff_init() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}

impl ElasticsearchConfig {
    /// A configuration with every default and these hosts.
    pub fn new(hosts: Vec<String>) -> Self {
        Self {
            hosts,
            index: default_index(),
            fallback_index: default_fallback_index(),
            idempotent_ids: true,
            worker: default_worker(),
            bulk_max_size: default_bulk_max_size(),
            bulk_max_bytes: default_bulk_max_bytes(),
            compression_level: default_compression_level(),
            username: None,
            password: None,
            api_key: None,
            ssl: None,
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            backoff_init: default_backoff_init(),
            backoff_max: default_backoff_max(),
            dead_letter: None,
        }
    }

    /// Checks what would otherwise only fail at the first request.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Err("`hosts` is empty".into());
        }
        for host in &self.hosts {
            if !(host.starts_with("http://") || host.starts_with("https://")) {
                return Err(format!("host {host:?} must start with http:// or https://"));
            }
        }
        if self.compression_level > 9 {
            return Err("compression_level must be 0 to 9".into());
        }
        if self.worker == 0 {
            return Err("worker must be at least 1".into());
        }
        if self.bulk_max_size == 0 {
            return Err("bulk_max_size must be at least 1".into());
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("`username` and `password` go together".into());
        }
        if self.username.is_some() && self.api_key.is_some() {
            return Err("use either `username`/`password` or `api_key`, not both".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults() {
        let yaml = r#"
hosts: ["https://es:9200"]
index: "app-%{[service.name]}-%{+yyyy.MM}"
api_key: "id:secret"
backoff_init: 250ms
dead_letter: { path: /var/lib/skiff/dead.ndjson }
"#;
        let config: ElasticsearchConfig = serde_yaml::from_str(yaml).unwrap();
        let mut expected = ElasticsearchConfig::new(vec!["https://es:9200".into()]);
        expected.index = "app-%{[service.name]}-%{+yyyy.MM}".into();
        expected.api_key = Some("id:secret".into());
        expected.backoff_init = Duration::from_millis(250);
        expected.dead_letter = Some(DeadLetterConfig::new("/var/lib/skiff/dead.ndjson"));
        assert_eq!(config, expected);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_host_without_scheme_is_an_error() {
        let config = ElasticsearchConfig::new(vec!["es:9200".into()]);
        assert!(config.validate().unwrap_err().contains("http://"));
    }
}
