//! Prometheus metrics and their HTTP endpoint (`GET /metrics` on `metrics.listen`).
//!
//! One [`prometheus_client::registry::Registry`] (prefix `skiff`) is created by the pipeline and
//! handed as `&mut Registry` to every component's build function, which registers its own
//! metrics there; the pipeline then serves it. [`FileMetrics`] are the harvest engine's: per file
//! (label `path`, the path the file was opened under), bytes and lines read, lag, age, and the
//! bytes lost to rotation, which no other shipper counts.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// `metrics`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served, e.g. `127.0.0.1:9479`. Default: not served (as Filebeat's
    /// `http.enabled: false`), so that several agents on one host never fight over a port;
    /// the DaemonSet sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// The labels of a per-file series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    /// The path the file was opened under.
    pub path: String,
}

/// Why bytes were lost.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as operators query them
pub enum LossReason {
    /// The file was truncated (copytruncate) before its end was read.
    truncated,
    /// The file was deleted and released (`close.removed_budget`) before its end was read.
    deleted,
}

/// The labels of a loss series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabels {
    pub path: String,
    pub reason: LossReason,
}

/// The harvest engine's metrics.
#[derive(Clone)]
pub struct FileMetrics {
    /// Bytes read per file.
    pub bytes: Family<FileLabels, Counter>,
    /// Lines read per file.
    pub lines: Family<FileLabels, Counter>,
    /// Bytes between the read offset and the end of the file, at the last look.
    pub lag_bytes: Family<FileLabels, Gauge>,
    /// Seconds since the file was last written, when everything in it was read: how stale the
    /// newest delivered line is.
    pub age_seconds: Family<FileLabels, Gauge<f64, AtomicU64>>,
    /// Bytes lost, by file and reason.
    pub lost_bytes: Family<LossLabels, Counter>,
    /// Files open for harvesting.
    pub open_files: Gauge,
    /// Deleted files closed before every output acknowledged them: `close.removed_budget`.
    pub pinned_released: Counter,
    /// Rescans of the watched folders (initial, safety, poll, or after lost events).
    pub rescans: Counter,
    /// Events the watch backend could not deliver (each triggered a rescan).
    pub watch_lost: Counter,
}

impl FileMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            bytes: Family::default(),
            lines: Family::default(),
            lag_bytes: Family::default(),
            age_seconds: Family::default(),
            lost_bytes: Family::default(),
            open_files: Gauge::default(),
            pinned_released: Counter::default(),
            rescans: Counter::default(),
            watch_lost: Counter::default(),
        };
        let harvest = registry.sub_registry_with_prefix("harvest");
        harvest.register("read_bytes", "Bytes read per file", metrics.bytes.clone());
        harvest.register("read_lines", "Lines read per file", metrics.lines.clone());
        harvest.register(
            "lag_bytes",
            "Bytes between the read offset and the end of the file",
            metrics.lag_bytes.clone(),
        );
        harvest.register(
            "age_seconds",
            "Seconds since a fully read file was last written",
            metrics.age_seconds.clone(),
        );
        harvest.register(
            "lost_bytes",
            "Bytes lost to copytruncate or to a deleted file closed before its end was read",
            metrics.lost_bytes.clone(),
        );
        harvest.register(
            "open_files",
            "Files open for harvesting",
            metrics.open_files.clone(),
        );
        harvest.register(
            "pinned_released",
            "Deleted files closed before every output acknowledged them (close.removed_budget)",
            metrics.pinned_released.clone(),
        );
        let watch = registry.sub_registry_with_prefix("watch");
        watch.register(
            "rescans",
            "Rescans of the watched folders",
            metrics.rescans.clone(),
        );
        watch.register(
            "lost_events",
            "Watch events lost (each triggered a rescan)",
            metrics.watch_lost.clone(),
        );
        metrics
    }

    /// Drops the gauges of a closed file (its counters stay: the path may be opened again,
    /// as a rotated log is).
    pub fn closed(&self, labels: &FileLabels) {
        self.lag_bytes.remove(labels);
        self.age_seconds.remove(labels);
    }
}

/// The registry of all metrics, with the prefix `skiff`.
pub fn new_registry() -> Registry {
    Registry::with_prefix("skiff")
}

/// Renders `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = Arc::clone(&registry);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(&registry),
                )
            }
        }),
    );
    tracing::info!(listen = %listener.local_addr()?, "serving metrics");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_metrics_are_encoded_with_their_labels() {
        let mut registry = new_registry();
        let metrics = FileMetrics::register(&mut registry);
        let labels = FileLabels {
            path: "/logs/a.log".into(),
        };
        metrics.bytes.get_or_create(&labels).inc_by(42);
        metrics
            .lost_bytes
            .get_or_create(&LossLabels {
                path: labels.path.clone(),
                reason: LossReason::truncated,
            })
            .inc_by(7);
        let text = encode(&registry);
        assert!(
            text.contains(r#"skiff_harvest_read_bytes_total{path="/logs/a.log"} 42"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"skiff_harvest_lost_bytes_total{path="/logs/a.log",reason="truncated"} 7"#
            ),
            "{text}"
        );
    }
}
