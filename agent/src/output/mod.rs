//! Where events go. Every destination implements [`Output`]; the pipeline commits a line's
//! offset to the registry only after every output's `send` for its batch has returned `Ok`.

pub mod console;

use crate::process::Event;

/// Why a batch was not delivered. The pipeline keeps the batch and sends it again later, so
/// an error must never mean "partly delivered and forgotten".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    #[error("{output}: {source}")]
    Io {
        output: &'static str,
        source: std::io::Error,
    },
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
}
