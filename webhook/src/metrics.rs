//! Prometheus metrics, served as text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a review.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// CREATE, UPDATE, … or `none` for a body that was no review.
    pub operation: &'static str,
    /// `patched`, `unchanged`, `skipped`, `invalid` or `too_large` (more containers than the
    /// policy allows); for `none`: `bad_request`, or a body `too_large` or `too_slow`.
    pub result: &'static str,
}

/// Labels of an outcome: `success` or an error's kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reviews answered, by operation and result.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time from the request body to the response, in seconds.
    pub review_seconds: Histogram,
    /// JSON Patch operations sent.
    pub patch_operations: Counter,
    /// Policy reloads, by result (`success`, `read`, `parse`, `invalid`).
    pub policy_reloads: Family<ResultLabels, Counter>,
    /// 1 while the policy file on disk is the one in use, 0 while a broken file is ignored.
    pub policy_valid: Gauge,
    /// HPA reconciliations, by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Duration of one reconciliation, in seconds.
    pub reconcile_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("skiff_webhook");
        let reviews = Family::default();
        registry.register("reviews", "AdmissionReviews answered", reviews.clone());
        // 50 µs to ~1.6 s.
        let review_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "review_duration_seconds",
            "Time to answer one AdmissionReview",
            review_seconds.clone(),
        );
        let patch_operations = Counter::default();
        registry.register(
            "patch_operations",
            "JSON Patch operations sent to the API server",
            patch_operations.clone(),
        );
        let policy_reloads = Family::default();
        registry.register(
            "policy_reloads",
            "Policy file reloads",
            policy_reloads.clone(),
        );
        let policy_valid = Gauge::default();
        policy_valid.set(1);
        registry.register(
            "policy_valid",
            "1 while the policy file on disk is valid and in use",
            policy_valid.clone(),
        );
        let reconciles = Family::default();
        registry.register("reconciles", "HPA reconciliations", reconciles.clone());
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time of one HPA reconciliation",
            reconcile_seconds.clone(),
        );
        Self {
            registry,
            reviews,
            review_seconds,
            patch_operations,
            policy_reloads,
            policy_valid,
            reconciles,
            reconcile_seconds,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histograms() {
        let metrics = Metrics::default();
        metrics
            .reviews
            .get_or_create(&ReviewLabels {
                operation: "CREATE",
                result: "patched",
            })
            .inc();
        metrics.review_seconds.observe(0.0003);
        let text = metrics.encode();
        assert!(
            text.contains(r#"skiff_webhook_reviews_total{operation="CREATE",result="patched"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("skiff_webhook_review_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("skiff_webhook_policy_valid 1"), "{text}");
    }
}
