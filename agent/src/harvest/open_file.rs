//! One open file and its state machine (Vector's `FileWatcher`): where it stands, what a look
//! at it finds, when it is looked at next, and when it is closed.
//!
//! - A file is known by its [`FileId`] while open; a path is only where it was last seen.
//! - A file renamed away or deleted is read to its end through its open descriptor, then closed
//!   once idle for `close.removed` and every line read from it is acknowledged by every output
//!   (committed in the registry): until then it stays pinned, so an output outage followed by
//!   a restart cannot lose the lines of a deleted file. (The engine releases the oldest
//!   deleted files of an input pinned beyond its `close.removed_budget`.)
//! - A file that shrank below the read offset was truncated (copytruncate): it is read again
//!   from its first byte, and the bytes between the read offset and the size last seen are
//!   counted as lost.
//! - Between looks a file backs off (10 ms doubling while idle). A new file, and a file idle
//!   for [`ARM_AFTER`], is armed: the backend is asked to report its next write
//!   ([`crate::watch::FolderWatch::arm`]); the backoff's next looks (up to [`ARM_AFTER`]) close
//!   the race with a write already under way, and then the file waits for that report or the
//!   safety rescan: idle files cost nothing. Files the backend cannot report (polling; renamed
//!   away) back off up to `check_interval`.

use super::engine::{EngineOptions, READ_BUDGET, RECHECK};
use super::identity::{FINGERPRINT_MAX, Fingerprint, Generation, birth};
use super::internal_events::{
    CloseReason, FileIoFailed, FileLooked, FileSeries, FileTruncated, ShrankWhileClosed,
};
use super::{FileInput, Harvester, Line};
use crate::metrics::FileMetrics;
use crate::registry::{Checkpoint, Registry};
use crate::watch::FileId;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The first wait after a file had new bytes.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// How long a file stays idle before its next write is left to the backend to report: short
/// enough that idle files soon cost nothing, long enough that a steadily written file is
/// not re-armed (a syscall with eBPF) at every look.
pub const ARM_AFTER: Duration = Duration::from_millis(80);

/// Where an open file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Reachable through a watched path.
    Live,
    /// Renamed out of the watched names (or no longer admitted), seen at `since`: read to the
    /// end, then closed.
    RenamedAway { since: Instant },
    /// Deleted, seen gone at `since`: read to the end, then closed once acknowledged.
    Deleted { since: Instant },
}

impl Presence {
    /// When the file was seen gone, unless it is live.
    fn gone_since(self) -> Option<Instant> {
        match self {
            Presence::Live => None,
            Presence::RenamedAway { since } | Presence::Deleted { since } => Some(since),
        }
    }
}

/// An open file.
pub(super) struct OpenFile {
    input: usize,
    /// The path it was opened under (events, metric labels).
    path: Arc<Path>,
    /// Where it was last seen.
    current: PathBuf,
    series: FileSeries,
    harvester: Harvester,
    generation: Generation,
    presence: Presence,
    /// The path should be looked at: an event or a rescan suggests the file moved.
    check_path: bool,
    /// The file moved or may have: read to its end before a new file of its input is opened,
    /// since what it holds was written before the new file's first line.
    rotated: bool,
    last_data: Instant,
    /// Size at the last look: what a truncation may have cut.
    last_size: u64,
    next_look: Instant,
    backoff: Duration,
    /// The backend reports the file's next write (see [`crate::watch::FolderWatch::arm`]).
    armed: bool,
}

/// What one look at an open file found.
pub(super) struct Look {
    /// The file's metadata at the look.
    meta: Metadata,
    /// Bytes read.
    read: usize,
    /// The complete lines read.
    pub lines: Vec<Line>,
    /// The file was truncated: its offset moved back, even without lines.
    pub truncated: bool,
    /// The file was seen deleted for the first time.
    pub deleted: bool,
}

impl Look {
    /// The look read up to the file's end.
    pub(super) fn at_end(&self) -> bool {
        self.read < READ_BUDGET
    }
}

impl OpenFile {
    /// Starts harvesting `file` of input `input` (`spec`), opened at `path` and described by
    /// `meta`, where `resume` ended or else at its first byte. None when it was never
    /// harvested and is older than `ignore_older`, or cannot seek (logged).
    pub(super) fn start(
        input: usize,
        spec: &FileInput,
        path: &Path,
        file: File,
        meta: &Metadata,
        resume: Option<Checkpoint>,
        metrics: &FileMetrics,
    ) -> Option<Self> {
        if resume.is_none()
            && let Some(older) = spec.ignore_older
            && meta
                .modified()
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > older)
        {
            return None;
        }
        let mut offset = resume.map_or(0, |checkpoint| checkpoint.offset);
        if offset > meta.len() {
            ShrankWhileClosed {
                path,
                offset,
                size: meta.len(),
            }
            .emit();
            offset = 0;
        }
        let generation = Generation {
            birth: birth(meta),
            fingerprint: Fingerprint::of(&file, FINGERPRINT_MAX).unwrap_or_default(),
        };
        let harvester = match Harvester::new(file, offset, spec.max_bytes) {
            Ok(harvester) => harvester,
            Err(err) => {
                FileIoFailed {
                    path,
                    err,
                    what: "cannot seek",
                }
                .emit();
                return None;
            }
        };
        // A name no pattern matches: a file renamed away before it was opened.
        let matched = spec.matches(path);
        let now = Instant::now();
        Some(Self {
            input,
            path: path.into(),
            current: path.to_path_buf(),
            series: FileSeries::new(metrics, path),
            harvester,
            generation,
            presence: if matched {
                Presence::Live
            } else {
                Presence::RenamedAway { since: now }
            },
            check_path: false,
            rotated: !matched,
            last_data: now,
            last_size: meta.len(),
            next_look: now,
            backoff: MIN_BACKOFF,
            armed: false,
        })
    }

    /// The input that harvests it.
    pub(super) fn input(&self) -> usize {
        self.input
    }

    /// The path it was opened under.
    pub(super) fn path(&self) -> &Arc<Path> {
        &self.path
    }

    /// Where it was last seen.
    pub(super) fn current(&self) -> &Path {
        &self.current
    }

    pub(super) fn series(&self) -> &FileSeries {
        &self.series
    }

    /// Offset just past the last complete line read.
    pub(super) fn committed_offset(&self) -> u64 {
        self.harvester.committed_offset()
    }

    /// Offset of the next byte to read.
    pub(super) fn read_offset(&self) -> u64 {
        self.harvester.read_offset()
    }

    /// Its size at the last look.
    pub(super) fn last_size(&self) -> u64 {
        self.last_size
    }

    pub(super) fn next_look(&self) -> Instant {
        self.next_look
    }

    pub(super) fn set_next_look(&mut self, at: Instant) {
        self.next_look = at;
    }

    pub(super) fn backoff(&self) -> Duration {
        self.backoff
    }

    pub(super) fn armed(&self) -> bool {
        self.armed
    }

    /// Whether the backend reports its next write now.
    pub(super) fn set_armed(&mut self, armed: bool) {
        self.armed = armed;
    }

    pub(super) fn is_live(&self) -> bool {
        self.presence == Presence::Live
    }

    /// When it was seen deleted, if it was.
    pub(super) fn deleted_since(&self) -> Option<Instant> {
        match self.presence {
            Presence::Deleted { since } => Some(since),
            _ => None,
        }
    }

    /// Whether it moved or may have, and was not yet read to its end since.
    pub(super) fn rotated(&self) -> bool {
        self.rotated
    }

    /// It was read to its end after it moved.
    pub(super) fn drained(&mut self) {
        self.rotated = false;
    }

    /// It may have moved or gone: its path is looked at by the next look.
    pub(super) fn suspect(&mut self) {
        self.check_path = true;
        self.rotated = true;
    }

    /// The backend reported a write (once: armed again when idle). Seen on entry, so the
    /// bytes may land after the next look: the backoff's next looks find them.
    pub(super) fn written(&mut self) {
        self.armed = false;
        self.backoff = RECHECK;
    }

    /// It was found at the watched `path`: follows it there, and returns the path it was last
    /// seen at if that was another.
    pub(super) fn found_at(&mut self, path: &Path) -> Option<PathBuf> {
        let moved = (self.current != path).then(|| {
            self.rotated = true;
            std::mem::replace(&mut self.current, path.to_path_buf())
        });
        if matches!(self.presence, Presence::RenamedAway { .. }) {
            self.presence = Presence::Live; // renamed back into a watched name
        }
        moved
    }

    /// Looks at it (file `id` of input `spec`) at `now`: follows a move, notices truncation and
    /// deletion, and reads a turn's worth of lines through `buffer`. An error closes the file.
    pub(super) fn look(
        &mut self,
        id: FileId,
        spec: &FileInput,
        buffer: &mut [u8],
        metrics: &FileMetrics,
        now: Instant,
    ) -> Result<Look, FileIoFailed<'_>> {
        let meta = match self.harvester.file().metadata() {
            Ok(meta) => meta,
            Err(err) => return Err(self.failed(err, "cannot stat the open file; closing it")),
        };
        if self.check_path {
            self.check_path = false;
            // A file its input no longer admits is on its way out too.
            let here = std::fs::metadata(&self.current).is_ok_and(|m| FileId::of(&m) == id)
                && spec.includes(&self.current);
            if !here && self.presence == Presence::Live {
                self.presence = Presence::RenamedAway { since: now };
            }
        }
        let deleted = meta.nlink() == 0 && self.deleted_since().is_none();
        if deleted {
            self.presence = Presence::Deleted {
                since: self.presence.gone_since().unwrap_or(now),
            };
        }
        let size = meta.len();
        let mut truncated = false;
        if size < self.harvester.read_offset() {
            FileTruncated {
                path: &self.path,
                series: &self.series,
                offset: self.harvester.read_offset(),
                size,
                lost: self.last_size.max(self.harvester.read_offset())
                    - self.harvester.committed_offset(),
            }
            .emit(metrics);
            if let Err(err) = self.harvester.restart() {
                return Err(self.failed(err, "cannot seek; closing"));
            }
            truncated = true;
        }
        self.last_size = size;

        let mut lines = Vec::new();
        // A file that did not grow has nothing to read: the look was the `fstat` alone.
        let read = if size > self.harvester.read_offset() || truncated {
            match self
                .harvester
                .read_lines_with(buffer, &mut lines, READ_BUDGET)
            {
                Ok(read) => read,
                Err(err) => return Err(self.failed(err, "read failed; closing")),
            }
        } else {
            0
        };
        if read > 0 {
            self.last_data = now;
            self.backoff = MIN_BACKOFF;
            if self.generation.fingerprint.len < FINGERPRINT_MAX
                && self.harvester.read_offset() > self.generation.fingerprint.len
                && let Ok(fingerprint) = Fingerprint::of(self.harvester.file(), FINGERPRINT_MAX)
            {
                self.generation.fingerprint = fingerprint;
            }
        }
        let look = Look {
            meta,
            read,
            lines,
            truncated,
            deleted,
        };
        let read_offset = self.harvester.read_offset();
        FileLooked {
            series: &self.series,
            bytes: read,
            lines: look.lines.len(),
            lag: self.last_size.max(read_offset) - read_offset,
            age: look
                .at_end()
                .then(|| {
                    look.meta
                        .modified()
                        .map(|m| m.elapsed().unwrap_or_default())
                })
                .and_then(Result::ok),
        }
        .emit(metrics);
        Ok(look)
    }

    fn failed(&self, err: std::io::Error, what: &'static str) -> FileIoFailed<'_> {
        FileIoFailed {
            path: &self.path,
            err,
            what,
        }
    }

    /// When to look at it again after `look` at `now`; advances the backoff.
    pub(super) fn next_look_after(
        &mut self,
        look: &Look,
        now: Instant,
        options: &EngineOptions,
        close_removed: Duration,
    ) -> Instant {
        // A file on its way out is looked at often enough to be closed in time.
        let longest = match self.presence {
            Presence::Live => options.check_interval,
            _ => options.check_interval.min(close_removed / 2),
        };
        if !look.at_end() {
            now // more to read: after the other files' turns
        } else if self.armed && self.is_live() && look.read == 0 && self.backoff >= ARM_AFTER {
            // Idle and armed for a while: the backend reports the next write, and the safety
            // rescan looks anyway.
            now + options.rescan
        } else {
            let wait = self.backoff.min(longest);
            self.backoff = (self.backoff * 2).min(longest);
            now + wait
        }
    }

    /// Whether to arm it after `look` (and [`OpenFile::next_look_after`]): the look after the
    /// one scheduled sees a write that was under way.
    pub(super) fn wants_arming(&self, look: &Look) -> bool {
        look.at_end()
            && look.read == 0
            && self.is_live()
            && !self.armed
            && self.backoff >= ARM_AFTER
    }

    /// Whether its time has come after `look` at `now`: a file on its way out read to its end,
    /// idle for `close.removed` and delivered (pinned until then; deleted files within a
    /// budget); a live one read to its end and idle for `close.inactive`, or whose input has
    /// files waiting for a turn (`waiting`).
    pub(super) fn should_close(
        &self,
        id: FileId,
        look: &Look,
        now: Instant,
        spec: &FileInput,
        waiting: bool,
        registry: &Registry,
    ) -> bool {
        if !look.at_end() {
            return false;
        }
        match self.presence.gone_since() {
            Some(since) => {
                now.duration_since(since.max(self.last_data)) >= spec.close_removed
                    && self.delivered(id, registry, &look.meta)
            }
            None => now.duration_since(self.last_data) >= spec.close_inactive || waiting,
        }
    }

    /// Every line read from it (whose metadata is `meta`) was acknowledged by every output:
    /// the registry holds this very file at or beyond it.
    fn delivered(&self, id: FileId, registry: &Registry, meta: &Metadata) -> bool {
        let read = self.harvester.committed_offset();
        read == 0
            || registry.lookup(id).is_some_and(|checkpoint| {
                checkpoint.offset >= read
                    && checkpoint
                        .generation
                        .matches(self.harvester.file(), meta)
                        .unwrap_or(false)
            })
    }

    /// Where it (file `id`) stands now: what the registry keeps of it.
    pub(super) fn checkpoint(&self, id: FileId) -> Checkpoint {
        Checkpoint {
            id,
            generation: self.generation,
            path: self.path.to_path_buf(),
            offset: self.harvester.committed_offset(),
        }
    }

    /// Why it is closed now: deleted (with the bytes left unread), renamed away, or inactive.
    pub(super) fn close_reason(&self) -> CloseReason {
        match self.presence {
            Presence::Deleted { .. } => {
                let size = self.harvester.file().metadata().map_or(0, |m| m.len());
                CloseReason::Deleted {
                    lost: size.saturating_sub(self.harvester.committed_offset()),
                }
            }
            Presence::RenamedAway { .. } => CloseReason::RenamedAway,
            Presence::Live => CloseReason::Inactive,
        }
    }
}
