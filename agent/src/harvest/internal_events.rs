//! What the harvest engine reports, one struct per kind of event (Vector's `internal_events`):
//! each `emit` writes the log line and updates the metrics, so the engine's logic says what
//! happened and nothing about how it is reported.

use crate::metrics::{FileLabels, FileMetrics, LossLabels, LossReason};
use prometheus_client::metrics::gauge::Gauge;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The metric series of one open file: its labels, and its `lag_bytes` and `age_seconds`
/// gauges, set at every look without a lookup by label.
pub(super) struct FileSeries {
    labels: FileLabels,
    lag: Gauge,
    age: Gauge<f64, AtomicU64>,
}

impl FileSeries {
    /// The series of the file opened under `path`.
    pub(super) fn new(metrics: &FileMetrics, path: &Path) -> Self {
        let labels = FileLabels {
            path: path.to_string_lossy().into_owned(),
        };
        Self {
            lag: metrics.lag_bytes.get_or_create(&labels).clone(),
            age: metrics.age_seconds.get_or_create(&labels).clone(),
            labels,
        }
    }

    fn lost(&self, metrics: &FileMetrics, reason: LossReason, bytes: u64) {
        metrics
            .lost_bytes
            .get_or_create(&LossLabels {
                path: self.labels.path.clone(),
                reason,
            })
            .inc_by(bytes);
    }
}

/// A file was opened for harvesting.
pub(super) struct HarvestStarted<'a> {
    pub input: &'a str,
    pub path: &'a Path,
    pub offset: u64,
    /// Opened under a name no pattern matches: renamed away before it was opened.
    pub rotated: bool,
    /// Files open now, this one included.
    pub open_files: usize,
}

impl HarvestStarted<'_> {
    pub(super) fn emit(self, metrics: &FileMetrics) {
        tracing::info!(input = %self.input, path = %self.path.display(), offset = self.offset, rotated = self.rotated, "harvesting");
        metrics.open_files.set(self.open_files as i64);
    }
}

/// A file's recorded offset is beyond its end: it was truncated while not harvested.
pub(super) struct ShrankWhileClosed<'a> {
    pub path: &'a Path,
    pub offset: u64,
    pub size: u64,
}

impl ShrankWhileClosed<'_> {
    pub(super) fn emit(self) {
        tracing::warn!(
            path = %self.path.display(),
            offset = self.offset,
            size = self.size,
            "file shrank while not harvested (truncated); reading it from the start"
        );
    }
}

/// An open file shrank below the read offset (copytruncate): `lost` bytes were never read.
pub(super) struct FileTruncated<'a> {
    pub path: &'a Path,
    pub series: &'a FileSeries,
    pub offset: u64,
    pub size: u64,
    pub lost: u64,
}

impl FileTruncated<'_> {
    pub(super) fn emit(self, metrics: &FileMetrics) {
        tracing::warn!(
            path = %self.path.display(),
            offset = self.offset,
            size = self.size,
            lost_bytes = self.lost,
            "file truncated (copytruncate); reading it again from the start"
        );
        self.series.lost(metrics, LossReason::truncated, self.lost);
    }
}

/// An open file was looked at.
pub(super) struct FileLooked<'a> {
    pub series: &'a FileSeries,
    /// Bytes and lines read by the look.
    pub bytes: usize,
    pub lines: usize,
    /// Bytes between the read offset and the end of the file.
    pub lag: u64,
    /// How long ago the file was last written, when everything in it was read.
    pub age: Option<Duration>,
}

impl FileLooked<'_> {
    pub(super) fn emit(self, metrics: &FileMetrics) {
        let labels = &self.series.labels;
        if self.bytes > 0 {
            metrics
                .bytes
                .get_or_create(labels)
                .inc_by(self.bytes as u64);
            metrics
                .lines
                .get_or_create(labels)
                .inc_by(self.lines as u64);
        }
        self.series.lag.set(self.lag as i64);
        if let Some(age) = self.age {
            self.series.age.set(age.as_secs_f64());
        }
    }
}

/// Why an open file was closed.
pub(super) enum CloseReason {
    /// Deleted, with `lost` bytes left unread (released by `close.removed_budget`).
    Deleted { lost: u64 },
    /// Renamed away (or no longer admitted), read to its end.
    RenamedAway,
    /// Idle for `close.inactive`, or making room for a file waiting for `harvester_limit`.
    Inactive,
}

/// An open file was closed.
pub(super) struct FileClosed<'a> {
    pub path: &'a Path,
    pub series: &'a FileSeries,
    pub reason: CloseReason,
    /// The file that took its name (same labels) is open: it shares the gauges, which stay.
    pub gauges_shared: bool,
    /// Files open now.
    pub open_files: usize,
}

impl FileClosed<'_> {
    pub(super) fn emit(self, metrics: &FileMetrics) {
        if !self.gauges_shared {
            metrics.closed(&self.series.labels);
        }
        metrics.open_files.set(self.open_files as i64);
        let path = self.path.display();
        match self.reason {
            CloseReason::Deleted { lost } => {
                if lost > 0 {
                    tracing::warn!(path = %path, lost_bytes = lost, "deleted file closed before its end was read (close.removed_budget)");
                    self.series.lost(metrics, LossReason::deleted, lost);
                }
                tracing::info!(path = %path, "closed: deleted");
            }
            CloseReason::RenamedAway => {
                tracing::info!(path = %path, "closed: renamed away, read to its end");
            }
            CloseReason::Inactive => {
                tracing::debug!(path = %path, "closed: inactive or making room");
            }
        }
    }
}

/// A deleted file is released from its input's `close.removed_budget` before every output
/// acknowledged it (it is closed next).
pub(super) struct PinnedReleased<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub read: u64,
    pub acknowledged: u64,
    pub pinned_bytes: u64,
    pub budget: u64,
}

impl PinnedReleased<'_> {
    pub(super) fn emit(self, metrics: &FileMetrics) {
        tracing::warn!(
            path = %self.path.display(),
            size = self.size,
            read = self.read,
            acknowledged = self.acknowledged,
            pinned_bytes = self.pinned_bytes,
            budget = self.budget,
            "deleted file released before every output acknowledged it: its input's pinned deleted files exceed close.removed_budget"
        );
        metrics.pinned_released.inc();
    }
}

/// A file could not be opened: it is skipped until it changes (reported once per path).
pub(super) struct FileUnreadable<'a> {
    pub path: &'a Path,
    pub err: io::Error,
}

impl FileUnreadable<'_> {
    pub(super) fn emit(self) {
        let err = self.err;
        tracing::warn!(path = %self.path.display(), %err, "cannot open; skipping it until it changes");
    }
}

/// A file operation failed; `what` says which, and what became of the file.
pub(super) struct FileIoFailed<'a> {
    pub path: &'a Path,
    pub err: io::Error,
    pub what: &'static str,
}

impl FileIoFailed<'_> {
    pub(super) fn emit(self) {
        let err = self.err;
        tracing::warn!(path = %self.path.display(), %err, "{}", self.what);
    }
}

/// A file was renamed out of the patterns before it was opened: it is harvested under its new
/// name.
pub(super) struct RenamedBeforeOpened<'a> {
    pub from: &'a Path,
    pub to: &'a Path,
}

impl RenamedBeforeOpened<'_> {
    pub(super) fn emit(self) {
        tracing::debug!(from = %self.from.display(), to = %self.to.display(), "renamed out of the patterns before it was opened");
    }
}

/// Every input's patterns are scanned again.
pub(super) struct RescanStarted;

impl RescanStarted {
    pub(super) fn emit(self, metrics: &FileMetrics) {
        metrics.rescans.inc();
    }
}

/// The watch backend could not deliver some events (a rescan follows).
pub(super) struct WatchEventsLost;

impl WatchEventsLost {
    pub(super) fn emit(self, metrics: &FileMetrics) {
        metrics.watch_lost.inc();
    }
}

/// The engine stopped with `open` files open.
pub(super) struct HarvestStopped {
    pub open: usize,
}

impl HarvestStopped {
    pub(super) fn emit(self) {
        tracing::info!(open = self.open, "harvesting stopped");
    }
}
