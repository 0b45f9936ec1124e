//! The queue's counters, registered with the agent's Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The `output` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    /// The output's name (`kafka`, `elasticsearch`, …).
    pub output: &'static str,
}

/// Counters of the queue; cheap clones of the same counters.
#[derive(Debug, Clone, Default)]
pub struct QueueMetrics {
    /// `skiff_queue_read_errors_total{output}`: reads of a stored batch that failed (the output
    /// waits and tries again; it never passes over the batch).
    pub read_errors: Family<OutputLabels, Counter>,
    /// `skiff_queue_lost_batches_total`: disk records found damaged at start, whose batches
    /// some output had not sent yet.
    pub lost_batches: Counter,
}

impl QueueMetrics {
    /// Registers the counters as `queue_*` (the agent's registry adds the `skiff_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "queue_read_errors",
            "Reads of a stored disk queue batch that failed, by output (retried)",
            self.read_errors.clone(),
        );
        registry.register(
            "queue_lost_batches",
            "Disk queue batches found damaged at start, before every output had sent them",
            self.lost_batches.clone(),
        );
    }
}
