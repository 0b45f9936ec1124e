//! `output.logstash`: the configuration.

use crate::output::tls::TlsConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `output.logstash`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogstashConfig {
    /// Beats inputs, `host:port`.
    pub hosts: Vec<String>,
    /// Spread batches over every host in turn; otherwise stay on one host and move to the next
    /// only when it fails. Default: false.
    #[serde(default)]
    pub loadbalance: bool,
    /// Events per window: how many the server receives before it must acknowledge.
    /// Default: 2048.
    #[serde(default = "default_bulk_max_size")]
    pub bulk_max_size: usize,
    /// zlib level of compressed frames, 0 (plain JSON frames) to 9. Default: 3.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    /// How long to wait for a connection, or for any acknowledgement of a window (the server
    /// sends keep-alive ACKs while it works). Default: 30s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// TLS towards the Beats input. Default: plain TCP.
    #[serde(default)]
    pub ssl: Option<TlsConfig>,
}

fn default_bulk_max_size() -> usize {
    2048
}
fn default_compression_level() -> u32 {
    3
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl LogstashConfig {
    /// A configuration with every default and these hosts.
    pub fn new(hosts: Vec<String>) -> Self {
        Self {
            hosts,
            loadbalance: false,
            bulk_max_size: default_bulk_max_size(),
            compression_level: default_compression_level(),
            timeout: default_timeout(),
            ssl: None,
        }
    }

    /// Checks what would otherwise only fail at the first connection.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Err("`hosts` is empty".into());
        }
        if let Some(bad) = self.hosts.iter().find(|h| h.rsplit_once(':').is_none()) {
            return Err(format!("host {bad:?} must be host:port"));
        }
        if self.bulk_max_size == 0 || self.bulk_max_size > u32::MAX as usize {
            return Err("bulk_max_size must be at least 1".into());
        }
        if self.compression_level > 9 {
            return Err("compression_level must be 0 to 9".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults() {
        let yaml = "hosts: [ls-1:5044, ls-2:5044]\nloadbalance: true\nssl: { certificate_authorities: [/etc/ca.pem] }\n";
        let config: LogstashConfig = serde_yaml::from_str(yaml).unwrap();
        let mut expected = LogstashConfig::new(vec!["ls-1:5044".into(), "ls-2:5044".into()]);
        expected.loadbalance = true;
        expected.ssl = Some(TlsConfig {
            enabled: true,
            certificate_authorities: vec!["/etc/ca.pem".into()],
            ..TlsConfig::default()
        });
        assert_eq!(config, expected);
        assert_eq!(config.validate(), Ok(()));
    }
}
