//! Where events go. Every destination implements [`Output`]. Each output consumes the
//! [`crate::queue`] at its own pace; a line's offset is committed to the registry once every
//! output's `send` for its batch has returned `Ok` (or, with the disk queue, once the batch is
//! stored there).

pub mod console;
pub mod dead_letter;
pub mod elasticsearch;
pub mod file;
pub mod kafka;
pub mod logstash;
pub mod metrics;
pub mod template;
pub mod tls;

use crate::process::Event;

/// Why a batch was not delivered. The pipeline keeps the batch and sends it again later, so
/// an error must never mean "partly delivered and forgotten". The variant's name, in snake
/// case ([`OutputError::metric_label`]), labels the failure metric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    #[error("{output}: {source}")]
    Io {
        output: &'static str,
        source: std::io::Error,
    },
    /// No connection could be made (refused, no route, name not resolved, connect timeout).
    #[error("{output}: unreachable: {message}")]
    Unreachable {
        output: &'static str,
        message: String,
    },
    /// The TLS handshake failed (unknown CA, bad certificate, wrong server name).
    #[error("{output}: TLS: {message}")]
    Tls {
        output: &'static str,
        message: String,
    },
    /// The destination refused the credentials.
    #[error("{output}: authentication: {message}")]
    Auth {
        output: &'static str,
        message: String,
    },
    /// Connected, but the acknowledgement did not come in time.
    #[error("{output}: timed out: {message}")]
    Timeout {
        output: &'static str,
        message: String,
    },
    /// The destination is overloaded (HTTP 429/503, a full producer queue) and asks to slow down.
    #[error("{output}: overloaded: {message}")]
    Overloaded {
        output: &'static str,
        message: String,
    },
    /// The destination answered with an error for the batch.
    #[error("{output}: rejected: {message}")]
    Rejected {
        output: &'static str,
        message: String,
    },
    /// The destination answered something the protocol does not allow.
    #[error("{output}: protocol: {message}")]
    Protocol {
        output: &'static str,
        message: String,
    },
    /// The output's configuration cannot work (found when it is built, never in the loop).
    #[error("{output}: configuration: {message}")]
    Config {
        output: &'static str,
        message: String,
    },
}

impl OutputError {
    /// The failure kind, as the `kind` label of `skiff_output_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            OutputError::Io { .. } => "io",
            OutputError::Unreachable { .. } => "unreachable",
            OutputError::Tls { .. } => "tls",
            OutputError::Auth { .. } => "auth",
            OutputError::Timeout { .. } => "timeout",
            OutputError::Overloaded { .. } => "overloaded",
            OutputError::Rejected { .. } => "rejected",
            OutputError::Protocol { .. } => "protocol",
            OutputError::Config { .. } => "config",
        }
    }
}

/// A destination for events.
#[async_trait::async_trait]
pub trait Output: Send {
    /// Short name for logs and metrics (`console`, `file`, `kafka`, …).
    fn name(&self) -> &'static str;

    /// Delivers `events` and returns once the destination has acknowledged every one of them
    /// durably (written and fsynced, acknowledged by the broker, bulk items accepted or
    /// dead-lettered). On `Err` the caller may send the same events again: delivery is
    /// at-least-once.
    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError>;

    /// Further clients that deliver for this output besides itself, each sending its own
    /// batch at the same time as the others (Filebeat's `worker`). The queue still
    /// acknowledges batches in order: a batch's offsets are committed only once it and every
    /// earlier batch are delivered. Default: none, one batch at a time.
    fn extra_workers(&self) -> Vec<Box<dyn Output>> {
        Vec::new()
    }
}
