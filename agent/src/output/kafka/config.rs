//! `output.kafka`: the configuration, and how it becomes a librdkafka client configuration.

use crate::output::dead_letter::DeadLetterConfig;
use crate::output::tls::{TlsConfig, VerificationMode};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `output.kafka`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub hosts: Vec<String>,
    /// Topic template over event fields. Default: `logs-%{[service.name]}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// An event field whose value, when present and not empty, is the topic instead of the
    /// template's: the webhook's `skiff.dev/log-topic` annotation as the Kubernetes metadata
    /// puts it on events. Default: `kubernetes.annotations.skiff_dev/log-topic`.
    #[serde(default = "default_topic_field")]
    pub topic_field: String,
    /// Globs (`*`, `?`, `[…]`) a topic from `topic_field` must match: a tenant writes the
    /// annotation, and must not route its events into another's topic. Any other goes to
    /// `fallback_topic`, counted in `skiff_output_refused_topics_total`. The `topic` template
    /// is the operator's and is not checked. Default: `["logs-*"]`.
    #[serde(default = "default_allowed_topics")]
    pub allowed_topics: Vec<String>,
    /// The topic for events the `topic` template cannot be rendered for (it names a field
    /// the event lacks); counted in `skiff_output_template_fallbacks_total{kind="topic"}`.
    /// Default: `logs-default`.
    #[serde(default = "default_fallback_topic")]
    pub fallback_topic: String,
    /// Message key template; events that lack its fields get no key (round-robin
    /// partitioning). Default: none.
    #[serde(default)]
    pub key: Option<String>,
    /// Compression codec. Default: zstd.
    #[serde(default)]
    pub compression: Compression,
    /// Codec level (`-1` is the codec's default). Default: -1.
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// Broker acknowledgements a record needs: `-1` (all in-sync replicas), `1` (the leader)
    /// or `0` (none; then nothing is confirmed). Default: -1.
    #[serde(default = "default_required_acks")]
    pub required_acks: i32,
    /// Idempotent producer: the broker drops the duplicates of librdkafka's own retries and
    /// keeps each partition's order. Needs `required_acks: -1`. Default: true.
    #[serde(default = "default_true")]
    pub idempotent: bool,
    /// Largest number of records in one produce request. Default: 10000.
    #[serde(default = "default_batch_events")]
    pub bulk_max_size: u32,
    /// Largest produce request per partition, bytes. Default: 1048576.
    #[serde(default = "default_batch_bytes")]
    pub bulk_max_bytes: u32,
    /// How long librdkafka waits to fill a batch. Default: 5ms.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Largest record (the event's JSON) sent; larger ones are refused locally and go to the
    /// dead-letter file. Keep it at or below the broker's `message.max.bytes`. Default: 1000000.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// How long librdkafka keeps retrying a record before its delivery fails (then the
    /// pipeline sends the batch again). Default: 30s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// TLS towards the brokers. Default: plain TCP.
    #[serde(default)]
    pub ssl: Option<TlsConfig>,
    /// SASL authentication. Default: none.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// Where records the broker refuses for good (too large, invalid topic) are kept.
    /// Default: none (they are counted as dropped and logged).
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    /// librdkafka properties set as given, after (so over) the ones above.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A Kafka compression codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    #[default]
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `sasl` of `output.kafka`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Default: PLAIN.
    #[serde(default = "default_mechanism")]
    pub mechanism: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

fn default_topic() -> String {
    "logs-%{[service.name]}".to_string()
}
fn default_topic_field() -> String {
    "kubernetes.annotations.skiff_dev/log-topic".to_string()
}
fn default_allowed_topics() -> Vec<String> {
    vec!["logs-*".to_string()]
}
fn default_fallback_topic() -> String {
    "logs-default".to_string()
}
fn default_compression_level() -> i32 {
    -1
}
fn default_required_acks() -> i32 {
    -1
}
fn default_true() -> bool {
    true
}
fn default_batch_events() -> u32 {
    10_000
}
fn default_batch_bytes() -> u32 {
    1_048_576
}
fn default_linger() -> Duration {
    Duration::from_millis(5)
}
fn default_max_message_bytes() -> u32 {
    1_000_000
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_mechanism() -> String {
    "PLAIN".to_string()
}

impl KafkaConfig {
    /// A configuration with every default and these brokers.
    pub fn new(hosts: Vec<String>) -> Self {
        Self {
            hosts,
            topic: default_topic(),
            topic_field: default_topic_field(),
            allowed_topics: default_allowed_topics(),
            fallback_topic: default_fallback_topic(),
            key: None,
            compression: Compression::default(),
            compression_level: default_compression_level(),
            required_acks: default_required_acks(),
            idempotent: true,
            bulk_max_size: default_batch_events(),
            bulk_max_bytes: default_batch_bytes(),
            linger: default_linger(),
            max_message_bytes: default_max_message_bytes(),
            timeout: default_timeout(),
            ssl: None,
            sasl: None,
            dead_letter: None,
            options: BTreeMap::new(),
        }
    }

    /// Checks what librdkafka would only reject later, or accept and misbehave with.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Err("`hosts` is empty".into());
        }
        if ![-1, 0, 1].contains(&self.required_acks) {
            return Err(format!(
                "required_acks is {}; it must be -1, 0 or 1",
                self.required_acks
            ));
        }
        if self.idempotent && self.required_acks != -1 {
            return Err("`idempotent: true` needs `required_acks: -1`".into());
        }
        if let Some(ssl) = &self.ssl {
            if ssl.enabled && ssl.certificate.is_some() != ssl.key.is_some() {
                return Err("ssl: `certificate` and `key` go together".into());
            }
            for path in ssl
                .certificate_authorities
                .iter()
                .chain(&ssl.certificate)
                .chain(&ssl.key)
            {
                if !Path::new(path).is_file() {
                    return Err(format!("ssl: {} is not a readable file", path.display()));
                }
            }
        }
        Ok(())
    }

    /// The librdkafka producer properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.hosts.join(","))
            .set("compression.type", self.compression.as_str())
            .set("compression.level", self.compression_level.to_string())
            .set("acks", self.required_acks.to_string())
            .set("enable.idempotence", self.idempotent.to_string())
            .set("batch.num.messages", self.bulk_max_size.to_string())
            .set("batch.size", self.bulk_max_bytes.to_string())
            .set("linger.ms", self.linger.as_millis().to_string())
            // librdkafka's own limit sits above ours so that our check, which knows the
            // event, is the one that refuses a record.
            .set(
                "message.max.bytes",
                (self.max_message_bytes.max(1000) + 1024).to_string(),
            )
            .set("message.timeout.ms", self.timeout.as_millis().to_string());
        let tls = self.ssl.as_ref().filter(|ssl| ssl.enabled);
        let protocol = match (tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(ssl) = tls {
            if !ssl.certificate_authorities.is_empty() {
                let paths: Vec<String> = ssl
                    .certificate_authorities
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                config.set("ssl.ca.location", paths.join(","));
            }
            if let (Some(cert), Some(key)) = (&ssl.certificate, &ssl.key) {
                config
                    .set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
            }
            if ssl.verification_mode == VerificationMode::None {
                config
                    .set("enable.ssl.certificate.verification", "false")
                    .set("ssl.endpoint.identification.algorithm", "none");
            }
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", &sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_filebeat_shape_with_defaults() {
        let yaml = r#"
hosts: ["kafka:9092"]
topic: "logs-%{[service.name]}"
compression: lz4
linger: 20ms
sasl: { mechanism: SCRAM-SHA-512, username: skiff, password: secret }
options: { "queue.buffering.max.kbytes": "65536" }
"#;
        let config: KafkaConfig = serde_yaml::from_str(yaml).unwrap();
        let mut expected = KafkaConfig::new(vec!["kafka:9092".into()]);
        expected.compression = Compression::Lz4;
        expected.linger = Duration::from_millis(20);
        expected.sasl = Some(SaslConfig {
            mechanism: "SCRAM-SHA-512".into(),
            username: "skiff".into(),
            password: "secret".into(),
        });
        expected
            .options
            .insert("queue.buffering.max.kbytes".into(), "65536".into());
        assert_eq!(config, expected);
        let client = config.client_config();
        assert_eq!(client.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(client.get("compression.type"), Some("lz4"));
        assert_eq!(client.get("linger.ms"), Some("20"));
        assert_eq!(client.get("queue.buffering.max.kbytes"), Some("65536"));
    }

    #[test]
    fn idempotence_needs_all_acks() {
        let mut config = KafkaConfig::new(vec!["k:9092".into()]);
        config.required_acks = 1;
        assert!(config.validate().unwrap_err().contains("idempotent"));
        config.idempotent = false;
        assert_eq!(config.validate(), Ok(()));
    }
}
