//! The outputs' counters, registered with the agent's Prometheus registry.
//!
//! One [`OutputMetrics`] is shared (cheap clones of the same counters) by every output, each
//! counting under its own `output` label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// `output` and `outcome` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The output's name (`kafka`, `elasticsearch`, …).
    pub output: &'static str,
    /// `acked` (delivered), `duplicate` (already delivered before: an Elasticsearch 409 on
    /// an idempotent `_id`), `dead_lettered` (refused for good, written to the dead-letter
    /// file) or `dropped` (refused for good and no dead-letter file configured).
    pub outcome: &'static str,
}

/// `output` and `kind` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The output's name.
    pub output: &'static str,
    /// What went wrong: an [`super::OutputError::metric_label`], or the reason an event was
    /// refused for good (a [`super::dead_letter::Refused::reason`]).
    pub kind: &'static str,
}

/// `output` and `reason` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The output's name.
    pub output: &'static str,
    /// Why the destination refused the event for good: a
    /// [`super::dead_letter::Refused::reason`].
    pub reason: &'static str,
}

/// The `output` label alone.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    /// The output's name.
    pub output: &'static str,
}

/// Counters every output keeps.
#[derive(Debug, Clone, Default)]
pub struct OutputMetrics {
    /// `skiff_output_events_total{output,outcome}`.
    pub events: Family<OutcomeLabels, Counter>,
    /// `skiff_output_errors_total{output,kind}`: failed sends and refused events.
    pub errors: Family<KindLabels, Counter>,
    /// `skiff_output_dropped_total{output,reason}`: events refused for good that were not
    /// kept (no dead-letter file, or a line larger than it may grow).
    pub dropped: Family<ReasonLabels, Counter>,
    /// `skiff_output_retries_total{output,kind}`: events or requests sent again.
    pub retries: Family<KindLabels, Counter>,
    /// `skiff_output_template_fallbacks_total{output,kind}`: events whose topic, key or index
    /// template named a missing field, so the documented fallback was used.
    pub fallbacks: Family<KindLabels, Counter>,
    /// `skiff_output_refused_topics_total{output}`: events whose topic field named a topic
    /// outside the allowed ones, sent to the fallback topic instead.
    pub refused_topics: Family<OutputLabels, Counter>,
}

impl OutputMetrics {
    /// Registers the counters as `output_*` (the agent's registry adds the `skiff_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "output_events",
            "Events that left an output, by outcome",
            self.events.clone(),
        );
        registry.register(
            "output_errors",
            "Failed sends and refused events, by kind",
            self.errors.clone(),
        );
        registry.register(
            "output_dropped",
            "Events refused for good and not kept in a dead-letter file, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "output_retries",
            "Events or requests sent again, by reason",
            self.retries.clone(),
        );
        registry.register(
            "output_template_fallbacks",
            "Events whose template named a missing field",
            self.fallbacks.clone(),
        );
        registry.register(
            "output_refused_topics",
            "Events whose topic field named a topic that is not allowed",
            self.refused_topics.clone(),
        );
    }

    /// Counts `n` events of `output` with `outcome`.
    pub fn outcome(&self, output: &'static str, outcome: &'static str, n: u64) {
        self.events
            .get_or_create(&OutcomeLabels { output, outcome })
            .inc_by(n);
    }

    /// Counts one error of `kind` for `output`.
    pub fn error(&self, output: &'static str, kind: &'static str) {
        self.errors
            .get_or_create(&KindLabels { output, kind })
            .inc();
    }

    /// Counts `n` events of `output` refused for `reason` and dropped.
    pub fn dropped(&self, output: &'static str, reason: &'static str, n: u64) {
        self.dropped
            .get_or_create(&ReasonLabels { output, reason })
            .inc_by(n);
    }

    /// Counts `n` retries of `kind` for `output`.
    pub fn retry(&self, output: &'static str, kind: &'static str, n: u64) {
        self.retries
            .get_or_create(&KindLabels { output, kind })
            .inc_by(n);
    }

    /// Counts one template fallback of `kind` (`topic`, `key`, `index`) for `output`.
    pub fn fallback(&self, output: &'static str, kind: &'static str) {
        self.fallbacks
            .get_or_create(&KindLabels { output, kind })
            .inc();
    }

    /// Counts one event of `output` whose topic was not allowed.
    pub fn refused_topic(&self, output: &'static str) {
        self.refused_topics
            .get_or_create(&OutputLabels { output })
            .inc();
    }

    /// The current value of `skiff_output_refused_topics_total{output}`.
    pub fn refused_topics_of(&self, output: &'static str) -> u64 {
        self.refused_topics
            .get_or_create(&OutputLabels { output })
            .get()
    }

    /// The current value of `skiff_output_events_total{output,outcome}` (for tests and logs).
    pub fn events_of(&self, output: &'static str, outcome: &'static str) -> u64 {
        self.events
            .get_or_create(&OutcomeLabels { output, outcome })
            .get()
    }

    /// The current value of `skiff_output_errors_total{output,kind}`.
    pub fn errors_of(&self, output: &'static str, kind: &'static str) -> u64 {
        self.errors
            .get_or_create(&KindLabels { output, kind })
            .get()
    }

    /// The current value of `skiff_output_dropped_total{output,reason}`.
    pub fn dropped_of(&self, output: &'static str, reason: &'static str) -> u64 {
        self.dropped
            .get_or_create(&ReasonLabels { output, reason })
            .get()
    }

    /// The current value of `skiff_output_retries_total{output,kind}`.
    pub fn retries_of(&self, output: &'static str, kind: &'static str) -> u64 {
        self.retries
            .get_or_create(&KindLabels { output, kind })
            .get()
    }

    /// The current value of `skiff_output_template_fallbacks_total{output,kind}`.
    pub fn fallbacks_of(&self, output: &'static str, kind: &'static str) -> u64 {
        self.fallbacks
            .get_or_create(&KindLabels { output, kind })
            .get()
    }
}
