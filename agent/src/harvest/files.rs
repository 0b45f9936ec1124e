//! The harvest engine: one [`Harvester`] per watched file, kept through rotations, fed by the
//! watch backends' hints and its own rescans, sending batches of lines down a bounded channel.
//!
//! It runs on one dedicated thread (blocking reads never touch the async executor) and owns
//! every open file. Its rules:
//! - A file is known by its [`FileId`] while open; a path is only where it was last seen.
//! - A watch event is a hint: the engine looks at the path itself. A path now naming another
//!   file means the old one was rotated away: the old one is checked at once, and files rotated
//!   away are read to their current end before a new file of the same input is opened, so a
//!   stream's lines usually keep their order across a rotation (guaranteed only per file).
//! - A file renamed out of the patterns before it was opened (a rotation faster than the
//!   agent) is opened by its new name when the backend reports the rename with both names
//!   (eBPF, inotify; polling when it had listed the file under its old name), and harvested as
//!   a file renamed away. Identity rules as for any file: found later under another name, it
//!   is not read again.
//! - A file renamed away or deleted is read to its end through its open descriptor, then closed
//!   once idle for `close.removed` and every line read from it is acknowledged by every output
//!   (committed in the registry): until then it stays pinned, so an output outage followed by
//!   a restart cannot lose the lines of a deleted file. Deleted files pinned past
//!   `close.removed` hold disk space: when those of an input exceed its
//!   `close.removed_budget`, the oldest are released (closed), with a warning and the
//!   `pinned_released` metric, and what was left unread is counted as lost.
//! - A file that shrank below the read offset was truncated (copytruncate): it is read again
//!   from its first byte, and the bytes between the read offset and the size last seen are
//!   counted as lost.
//! - Open files are looked at when an event names them, at every rescan, and otherwise with a
//!   backoff (10 ms doubling while idle), kept in a queue by time, so that waking up for the
//!   next look costs nothing per idle file. A look is an `fstat`, and a read only when the file
//!   grew. A new file, and a file idle for [`ARM_AFTER`], is armed: the backend is asked to
//!   report its next write ([`FolderWatch::arm`]); the backoff's next looks (up to
//!   [`ARM_AFTER`]) close the race with a write already under way, and then the file waits for
//!   that report or the safety rescan: idle files cost nothing. Files the backend cannot
//!   report (polling; renamed away) back off up to `check_interval`. Each look reads at most
//!   [`READ_BUDGET`] bytes before the next file's turn, so one busy file cannot starve the
//!   others, through one read buffer for all files.
//! - `harvester_limit` caps the open files of an input: files beyond it wait in line, and an
//!   open file that reached its end makes room for the first of them.
//! - The channel is bounded: when outputs are slow, batches wait in a short queue of the
//!   engine's own and reading stops; watch events are still handled, so a new file is opened
//!   (and its bytes kept by the open descriptor, even if it is deleted) while the outputs catch
//!   up.

use super::identity::{FINGERPRINT_MAX, Fingerprint, Generation, birth};
use super::{Harvester, Line, READ_SIZE};
use crate::config::FilestreamConfig;
use crate::metrics::{FileLabels, FileMetrics, LossLabels, LossReason};
use crate::registry::{Checkpoint, Registry};
use crate::watch::{FileId, FolderWatch, WatchEvent, WatchQueue, folder_patterns};
use prometheus_client::metrics::gauge::Gauge;
use regex::Regex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Bytes read from one file per turn: large enough for 1 GB/s in few turns, small enough that
/// 1,000 busy files all get their turn often, and the most a batch holds. The events of a
/// batch live together until the outputs have them: a quarter MiB of lines (about a thousand
/// events) keeps them in the CPU's caches while they are processed, where 1 MiB batches made
/// the processing chain 1.3 times slower (`cargo xtask bench process`).
pub const READ_BUDGET: usize = 256 << 10;
/// The first wait after a file had new bytes.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The first look again after an event seen on syscall entry (eBPF), when the syscall has
/// usually completed; also the shortest wait for anything due.
const RECHECK: Duration = Duration::from_millis(1);
/// How long a file stays idle before its next write is left to the backend to report: short
/// enough that idle files soon cost nothing, long enough that a steadily written file is
/// not re-armed (a syscall with eBPF) at every look.
pub const ARM_AFTER: Duration = Duration::from_millis(80);
/// The longest the engine waits without checking whether it should stop.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often the engine retries handing over a batch while the channel is full.
const FULL_WAIT: Duration = Duration::from_millis(2);
/// Batches the engine holds while the channel is full; reading waits beyond it.
const MAX_PENDING: usize = 16;

/// What the engine hands to the delivery side, in order per file.
#[derive(Debug)]
pub enum Harvested {
    /// Lines read from one file; once delivered, `checkpoint` goes into the registry.
    Lines(Batch),
    /// The file was deleted and closed: its registry entry goes (after the batches before it).
    Deleted(Checkpoint),
}

/// Consecutive complete lines of one file.
#[derive(Debug)]
pub struct Batch {
    /// The input that harvested the file.
    pub input: Arc<str>,
    /// The path the file was opened under (`log.file.path`).
    pub path: Arc<Path>,
    /// The lines; may be empty when only the offset moved (after a truncation).
    pub lines: Vec<Line>,
    /// The file's position just past the last of `lines`.
    pub checkpoint: Checkpoint,
}

/// One `filestream` input, validated and compiled.
#[derive(Debug)]
pub struct FileInput {
    id: Arc<str>,
    patterns: Vec<String>,
    matchers: Vec<glob::Pattern>,
    exclude: Vec<Regex>,
    ignore_older: Option<Duration>,
    close_inactive: Duration,
    close_removed: Duration,
    max_bytes: usize,
    harvester_limit: usize,
    removed_budget: u64,
    /// Which matching files are harvested now, when that changes at run time.
    admission: Option<Arc<dyn Admission>>,
    /// The admission's version at the last rescan.
    admitted: u64,
}

/// Which of the files matching an input's patterns it harvests now, for inputs where that
/// changes while the agent runs (the `kubernetes` input: the containers of annotated pods).
/// A file that stops being admitted is read to its end and closed, like one renamed away.
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// Whether the file at `path` is harvested now.
    fn admits(&self, path: &Path) -> bool;
    /// Changes whenever [`Admission::admits`] may answer differently: the engine notices it
    /// within one turn of its loop and rescans.
    fn version(&self) -> u64;
}

/// Why an input's configuration is unusable (reported with the input's id by the config).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{pattern:?} is not a valid glob pattern: {source}")]
    Glob {
        pattern: String,
        source: glob::PatternError,
    },
    #[error("exclude_files {pattern:?} is not a valid regular expression: {source}")]
    Exclude {
        pattern: String,
        source: regex::Error,
    },
    #[error("{pattern:?} is not an absolute path")]
    Relative { pattern: String },
}

impl FileInput {
    /// Compiles a `filestream` input's patterns.
    pub fn build(config: &FilestreamConfig) -> Result<Self, InputError> {
        let mut matchers = Vec::new();
        for pattern in &config.paths {
            if !pattern.starts_with('/') {
                return Err(InputError::Relative {
                    pattern: pattern.clone(),
                });
            }
            matchers.push(
                glob::Pattern::new(pattern).map_err(|source| InputError::Glob {
                    pattern: pattern.clone(),
                    source,
                })?,
            );
        }
        let exclude = config
            .exclude_files
            .iter()
            .map(|pattern| {
                Regex::new(pattern).map_err(|source| InputError::Exclude {
                    pattern: pattern.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: config.id.as_str().into(),
            patterns: config.paths.clone(),
            matchers,
            exclude,
            ignore_older: config.ignore_older,
            close_inactive: config.close.inactive,
            close_removed: config.close.removed,
            max_bytes: config.max_bytes,
            harvester_limit: config.harvester_limit,
            removed_budget: config.close.removed_budget,
            admission: None,
            admitted: 0,
        })
    }

    /// Harvests only the matching files `admission` admits, re-evaluated at every rescan.
    pub fn admitting(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// The glob patterns of the files this input harvests.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    fn matches(&self, path: &Path) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        self.matchers
            .iter()
            .any(|pattern| pattern.matches_path_with(path, options))
            && !self.excluded(path)
    }

    /// Excluded by `exclude_files`, or not admitted now.
    fn excluded(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        self.exclude.iter().any(|regex| regex.is_match(&text))
            || self.admission.as_ref().is_some_and(|a| !a.admits(path))
    }

    /// The admission changed since the last rescan.
    fn admission_changed(&self) -> bool {
        self.admission
            .as_ref()
            .is_some_and(|a| a.version() != self.admitted)
    }
}

/// Where an open file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Reachable through a watched path.
    Live,
    /// Renamed away or deleted, seen at `since`: read to the end, then closed.
    Gone { since: Instant, deleted: bool },
}

/// An open file.
struct Open {
    input: usize,
    /// The path it was opened under (events, metric labels).
    path: Arc<Path>,
    /// Where it was last seen.
    current: PathBuf,
    labels: FileLabels,
    /// Its `lag_bytes` and `age_seconds` gauges, set at every look without a lookup by label.
    lag: Gauge,
    age: Gauge<f64, AtomicU64>,
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
    next_poll: Instant,
    backoff: Duration,
    /// The backend reports the file's next write (see [`FolderWatch::arm`]).
    armed: bool,
}

/// Tunables of the engine that are not per input.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How often every watched folder is scanned again.
    pub rescan: Duration,
    /// The longest wait between two looks at an idle open file (see [`crate::watch::Watch`]).
    pub check_interval: Duration,
    /// The backend reports syscalls on entry, before they take effect (eBPF): a path an event
    /// names is looked at again shortly after, until it exists.
    pub events_on_entry: bool,
}

/// The harvest engine (see the module docs).
pub struct Engine {
    inputs: Vec<FileInput>,
    options: EngineOptions,
    queue: WatchQueue,
    folders: Option<Box<dyn FolderWatch>>,
    registry: Arc<Registry>,
    metrics: FileMetrics,
    out: mpsc::Sender<Harvested>,
    open: HashMap<FileId, Open>,
    /// The open files by the time of their next look, soonest first: an entry whose time is
    /// no longer its file's `next_poll` is stale, and dropped when it comes up. So a wait for
    /// the next look does not go over every open file.
    looks: BinaryHeap<Reverse<(Instant, FileId)>>,
    by_path: HashMap<PathBuf, FileId>,
    /// Files closed while they still existed (inactive, limit): where to resume.
    closed: HashMap<FileId, Checkpoint>,
    /// Files beyond an input's `harvester_limit`, per input.
    waiting: Vec<VecDeque<PathBuf>>,
    /// Canonical paths of symlinked files, to the watched path: events name the target.
    aliases: HashMap<PathBuf, PathBuf>,
    /// Files that failed to open, logged once each.
    unreadable: HashSet<PathBuf>,
    next_rescan: Instant,
    /// Events to handle again (seen on syscall entry: a `Changed` path, or a rename): when,
    /// which, and how often already.
    recheck: VecDeque<(Instant, WatchEvent, u32)>,
    /// Batches read while the channel was full, oldest first.
    pending: VecDeque<Harvested>,
    /// The engine's output channel is closed: nothing more can be delivered.
    closed_out: bool,
    /// The one read buffer of every harvester: memory does not grow with idle files.
    buffer: Vec<u8>,
    /// Open files that were deleted: pinned ones count against their input's budget.
    deleted: HashSet<FileId>,
}

impl Engine {
    /// An engine for `inputs`, fed by `queue` (and maintaining the backend's folder watches),
    /// resuming from `registry`, sending to `out`.
    pub fn new(
        inputs: Vec<FileInput>,
        options: EngineOptions,
        queue: WatchQueue,
        folders: Option<Box<dyn FolderWatch>>,
        registry: Arc<Registry>,
        metrics: FileMetrics,
        out: mpsc::Sender<Harvested>,
    ) -> Self {
        let waiting = inputs.iter().map(|_| VecDeque::new()).collect();
        Self {
            inputs,
            options,
            queue,
            folders,
            registry,
            metrics,
            out,
            open: HashMap::new(),
            looks: BinaryHeap::new(),
            by_path: HashMap::new(),
            closed: HashMap::new(),
            waiting,
            aliases: HashMap::new(),
            unreadable: HashSet::new(),
            next_rescan: Instant::now(),
            recheck: VecDeque::new(),
            pending: VecDeque::new(),
            closed_out: false,
            buffer: vec![0; READ_SIZE],
            deleted: HashSet::new(),
        }
    }

    /// Harvests until `stop` is set or the output channel closes. Stops reading at once:
    /// batches already sent are the delivery side's to drain.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) && !self.closed_out {
            let now = Instant::now();
            match self.queue.events.recv_timeout(self.wait(now)) {
                Ok(event) => {
                    self.handle(event);
                    while let Ok(event) = self.queue.events.try_recv() {
                        self.handle(event);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            self.recheck_due();
            if self.queue.rescan.swap(false, Ordering::SeqCst) {
                self.metrics.watch_lost.inc();
                self.rescan();
            } else if Instant::now() >= self.next_rescan
                || self.inputs.iter().any(FileInput::admission_changed)
            {
                self.rescan();
            }
            self.poll_due();
        }
        // Already read: handed over so that the delivery side drains them with the rest.
        for harvested in std::mem::take(&mut self.pending) {
            if self.out.blocking_send(harvested).is_err() {
                break;
            }
        }
        tracing::info!(open = self.open.len(), "harvesting stopped");
    }

    /// How long to wait for an event before something is due.
    fn wait(&self, now: Instant) -> Duration {
        if !self.pending.is_empty() {
            return FULL_WAIT;
        }
        let next = self
            .looks
            .peek()
            .map(|Reverse((at, _))| *at)
            .into_iter()
            .chain(self.recheck.iter().map(|(due, _, _)| *due))
            .fold(self.next_rescan, Instant::min);
        match next.saturating_duration_since(now) {
            Duration::ZERO => Duration::ZERO,
            // Files that come due at nearly the same time are looked at in one round.
            wait => wait.clamp(RECHECK, MAX_WAIT),
        }
    }

    /// Handles again the events whose recheck is due: the syscall an event was seen entering
    /// has completed by now. A path that does not exist yet (an `open(O_CREAT)` or a
    /// `rename` still in the kernel) is looked at again, waiting twice as long each time, a
    /// few times.
    fn recheck_due(&mut self) {
        /// 1, 2, 4 … 128 ms after the event: then the safety rescan takes over.
        const ATTEMPTS: u32 = 8;
        let now = Instant::now();
        let mut due = Vec::new();
        self.recheck.retain(|(at, event, attempt)| {
            let ready = *at <= now;
            if ready {
                due.push((event.clone(), *attempt));
            }
            !ready
        });
        for (event, attempt) in due {
            let exists = match &event {
                WatchEvent::Changed(path) | WatchEvent::Renamed { to: path, .. } => {
                    std::fs::metadata(path).is_ok()
                }
                WatchEvent::Removed(_) | WatchEvent::Written(_) => true,
            };
            self.apply(event.clone());
            if !exists && attempt + 1 < ATTEMPTS {
                let wait = RECHECK * (1 << (attempt + 1));
                self.recheck.push_back((now + wait, event, attempt + 1));
            }
        }
    }

    fn handle(&mut self, event: WatchEvent) {
        if self.options.events_on_entry {
            let again = match &event {
                WatchEvent::Changed(path) | WatchEvent::Removed(path) => self
                    .watched(path)
                    .then(|| WatchEvent::Changed(path.clone())),
                WatchEvent::Renamed { from, to } => {
                    (self.watched(from) || self.watched(to) || self.by_path.contains_key(from))
                        .then(|| event.clone())
                }
                WatchEvent::Written(_) => None,
            };
            if let Some(again) = again
                && !self.recheck.iter().any(|(_, queued, _)| *queued == again)
            {
                let at = Instant::now() + RECHECK;
                self.recheck.push_back((at, again, 0));
            }
        }
        self.apply(event);
    }

    /// Whether `path` (or the link to it, for a symlink's target, which events name while
    /// the patterns name the link) matches an input.
    fn watched(&self, path: &Path) -> bool {
        self.input_of(self.aliases.get(path).map_or(path, PathBuf::as_path))
            .is_some()
    }

    fn apply(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Changed(path) => {
                let path = self.aliases.get(&path).cloned().unwrap_or(path);
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => {
                        // A new folder may hold matching files and need a watch of its own.
                        if self.inputs.iter().any(|input| {
                            input.patterns.iter().any(|p| {
                                folder_patterns(p).iter().any(|folder| {
                                    glob::Pattern::new(folder)
                                        .is_ok_and(|folder| folder.matches_path(&path))
                                })
                            })
                        }) {
                            self.next_rescan = Instant::now();
                        }
                    }
                    Ok(meta) if meta.is_file() => {
                        if let Some(input) = self.input_of(&path) {
                            self.found(input, &path, &meta, true);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => self.suspect(&path),
                }
            }
            WatchEvent::Removed(path) => {
                let path = self.aliases.get(&path).cloned().unwrap_or(path);
                self.suspect(&path);
            }
            WatchEvent::Renamed { from, to } => {
                let from = self.aliases.get(&from).cloned().unwrap_or(from);
                self.suspect(&from);
                if self.watched(&to) {
                    self.apply(WatchEvent::Changed(to));
                } else {
                    self.renamed_away(&from, &to);
                }
            }
            WatchEvent::Written(id) => {
                if let Some(open) = self.open.get_mut(&id) {
                    // Reported once: armed again when idle. Seen on entry, so the bytes may
                    // land after this look: the backoff's next looks find them.
                    open.armed = false;
                    open.backoff = RECHECK;
                    schedule(&mut self.looks, id, open, Instant::now());
                }
            }
        }
    }

    /// The file at `from` was renamed to `to`, which no pattern matches. When `from` was a
    /// matching (or harvested) name and the file was not opened yet, as a file rotated away
    /// before a busy agent got to it, it is harvested under its new name as a rotated file:
    /// read to its end, then closed. Its identity is kept as any file's, so it is not read
    /// again if it is found under another name later.
    fn renamed_away(&mut self, from: &Path, to: &Path) {
        let Some(input) = self
            .by_path
            .get(from)
            .and_then(|id| self.open.get(id))
            .map(|open| open.input)
            .or_else(|| self.input_of(from))
        else {
            return;
        };
        let Ok(meta) = std::fs::metadata(to) else {
            return; // gone already, or (seen on entry) not renamed yet
        };
        if meta.is_file() && !self.open.contains_key(&FileId::of(&meta)) {
            tracing::debug!(from = %from.display(), to = %to.display(), "renamed out of the patterns before it was opened");
            self.found(input, to, &meta, true);
        }
    }

    fn input_of(&self, path: &Path) -> Option<usize> {
        self.inputs.iter().position(|input| input.matches(path))
    }

    /// The file last seen at `path` may have moved or gone: look at it now.
    fn suspect(&mut self, path: &Path) {
        if let Some(&id) = self.by_path.get(path)
            && let Some(open) = self.open.get_mut(&id)
        {
            open.check_path = true;
            open.rotated = true;
            schedule(&mut self.looks, id, open, Instant::now());
        }
    }

    /// Scans every input's patterns: opens new files, and checks open files no pattern
    /// reaches any more.
    fn rescan(&mut self) {
        self.metrics.rescans.inc();
        self.next_rescan = Instant::now() + self.options.rescan;
        for input in &mut self.inputs {
            // Read before the scan: a change during it triggers the next one.
            if let Some(admission) = &input.admission {
                input.admitted = admission.version();
            }
        }
        let mut seen = HashSet::new();
        let mut folders = Vec::new();
        for input in 0..self.inputs.len() {
            for pattern in self.inputs[input].patterns.clone() {
                if self.folders.is_some() {
                    for folder in folder_patterns(&pattern) {
                        folders.extend(glob::glob(&folder).into_iter().flatten().flatten());
                    }
                }
                let Ok(paths) = glob::glob(&pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    if self.inputs[input].excluded(&path) {
                        continue;
                    }
                    // One `lstat` per file and rescan; a second `stat` only for a symlink.
                    let Ok(link) = std::fs::symlink_metadata(&path) else {
                        continue;
                    };
                    let symlink = link.is_symlink();
                    let meta = if symlink {
                        match std::fs::metadata(&path) {
                            Ok(meta) => meta,
                            Err(_) => continue,
                        }
                    } else {
                        link
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    if symlink && let Ok(target) = std::fs::canonicalize(&path) {
                        // Writes happen at the target: its folder is watched too.
                        if let Some(folder) = target.parent() {
                            folders.push(folder.to_path_buf());
                        }
                        self.aliases.insert(target, path.clone());
                    }
                    if seen.insert(FileId::of(&meta)) {
                        self.found(input, &path, &meta, false);
                    }
                }
            }
        }
        if let Some(watch) = &mut self.folders {
            watch.watch_folders(&folders);
        }
        let now = Instant::now();
        for (id, open) in &mut self.open {
            // Idle files waiting for a write event get a look: the safety net for one missed.
            if open.armed {
                schedule(&mut self.looks, *id, open, now);
            }
            if !seen.contains(id) && open.presence == Presence::Live {
                open.check_path = true;
                open.rotated = true;
            }
        }
        self.closed.retain(|id, _| seen.contains(id));
        self.aliases.retain(|_, path| path.exists());
        self.unreadable.retain(|path| path.exists());
        self.registry.clean(&seen);
    }

    /// A regular file matching input `input` is at `path`. `urgent` when an event named it.
    fn found(&mut self, input: usize, path: &Path, meta: &Metadata, urgent: bool) {
        let id = FileId::of(meta);
        if let Some(previous) = self.by_path.get(path).copied()
            && previous != id
            && let Some(old) = self.open.get_mut(&previous)
        {
            // Another file took the path: the old one was rotated away.
            old.check_path = true;
            old.rotated = true;
            schedule(&mut self.looks, previous, old, Instant::now());
        }
        if let Some(open) = self.open.get_mut(&id) {
            if open.current != path {
                self.by_path.remove(&open.current);
                open.current = path.to_path_buf();
                open.rotated = true;
            }
            if self.by_path.get(path) != Some(&id) {
                self.by_path.insert(path.to_path_buf(), id);
            }
            if matches!(open.presence, Presence::Gone { deleted: false, .. }) {
                open.presence = Presence::Live; // renamed back into a watched name
            }
            if urgent {
                schedule(&mut self.looks, id, open, Instant::now());
            }
            return;
        }
        if let Some(checkpoint) = self.closed.get(&id)
            && checkpoint.offset == meta.len()
            && checkpoint.generation.birth == birth(meta)
        {
            return; // closed at its end and unchanged
        }
        if self.waiting[input].iter().any(|waiting| waiting == path) {
            return;
        }
        let limit = self.inputs[input].harvester_limit;
        if limit > 0 && self.open.values().filter(|o| o.input == input).count() >= limit {
            self.waiting[input].push_back(path.to_path_buf());
            return;
        }
        self.open_file(input, path);
    }

    /// Opens `path` and starts harvesting it where its last delivered line ended.
    fn open_file(&mut self, input: usize, path: &Path) {
        self.drain_rotated(input);
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return, // gone meanwhile
            Err(err) => {
                if self.unreadable.insert(path.to_path_buf()) {
                    tracing::warn!(path = %path.display(), %err, "cannot open; skipping it until it changes");
                }
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot stat");
                return;
            }
        };
        let id = FileId::of(&meta);
        if self.open.contains_key(&id) {
            return; // replaced between the stat and the open by a file already open
        }
        let spec = &self.inputs[input];
        let resume = self
            .closed
            .remove(&id)
            .or_else(|| self.registry.lookup(id))
            .filter(|checkpoint| checkpoint.generation.matches(&file, &meta).unwrap_or(false));
        if resume.is_none()
            && let Some(older) = spec.ignore_older
            && meta
                .modified()
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > older)
        {
            return;
        }
        let mut offset = resume.map_or(0, |checkpoint| checkpoint.offset);
        if offset > meta.len() {
            tracing::warn!(
                path = %path.display(),
                offset,
                size = meta.len(),
                "file shrank while not harvested (truncated); reading it from the start"
            );
            offset = 0;
        }
        let generation = Generation {
            birth: birth(&meta),
            fingerprint: Fingerprint::of(&file, FINGERPRINT_MAX).unwrap_or_default(),
        };
        let harvester = match Harvester::new(file, offset, spec.max_bytes) {
            Ok(harvester) => harvester,
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot seek");
                return;
            }
        };
        // A name no pattern matches: a file renamed away before it was opened.
        let matched = spec.matches(path);
        tracing::info!(input = %spec.id, path = %path.display(), offset, rotated = !matched, "harvesting");
        self.unreadable.remove(path);
        let now = Instant::now();
        self.by_path.insert(path.to_path_buf(), id);
        let labels = FileLabels {
            path: path.to_string_lossy().into_owned(),
        };
        self.open.insert(
            id,
            Open {
                input,
                path: path.into(),
                current: path.to_path_buf(),
                lag: self.metrics.lag_bytes.get_or_create(&labels).clone(),
                age: self.metrics.age_seconds.get_or_create(&labels).clone(),
                labels,
                harvester,
                generation,
                presence: if matched {
                    Presence::Live
                } else {
                    Presence::Gone {
                        since: now,
                        deleted: false,
                    }
                },
                check_path: false,
                rotated: !matched,
                last_data: now,
                last_size: meta.len(),
                next_poll: now,
                backoff: MIN_BACKOFF,
                // From the start: the first write to a new file is the one rotation latency
                // is measured by. The backoff's first looks see a write already under way.
                armed: self.folders.as_mut().is_some_and(|watch| watch.arm(id)),
            },
        );
        self.looks.push(Reverse((now, id)));
        self.metrics.open_files.set(self.open.len() as i64);
    }

    /// Reads the files of `input` that were rotated away to their current end, so that their
    /// lines go out before those of the file that replaced them.
    fn drain_rotated(&mut self, input: usize) {
        let rotated: Vec<FileId> = self
            .open
            .iter()
            .filter(|(_, open)| open.input == input && open.rotated)
            .map(|(id, _)| *id)
            .collect();
        for id in rotated {
            while !self.closed_out && self.pending.len() < MAX_PENDING && !self.poll(id) {}
            if let Some(open) = self.open.get_mut(&id) {
                open.rotated = false;
            }
        }
    }

    /// Hands `harvested` to the delivery side, after what is already waiting.
    fn emit(&mut self, harvested: Harvested) {
        self.pending.push_back(harvested);
        self.flush_pending();
    }

    /// Moves waiting batches into the channel while it has room.
    fn flush_pending(&mut self) {
        while let Some(harvested) = self.pending.pop_front() {
            match self.out.try_send(harvested) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(harvested)) => {
                    self.pending.push_front(harvested);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.closed_out = true;
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    fn poll_due(&mut self) {
        self.flush_pending();
        if !self.pending.is_empty() {
            return; // the outputs are behind: backpressure
        }
        let now = Instant::now();
        // Files coming due soon, relative to their backoff, are looked at in this round: a
        // look a little early costs one `fstat`, while thousands of idle files coming due one
        // by one would wake the engine a thousand times a second.
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.looks.peek() {
            match self.open.get(&id) {
                Some(open) if open.next_poll == at => {
                    if at > now + open.backoff / 8 {
                        break;
                    }
                    due.push(id);
                }
                _ => {} // closed, or looked at since: stale
            }
            self.looks.pop();
        }
        for (n, &id) in due.iter().enumerate() {
            if self.closed_out || self.pending.len() >= MAX_PENDING {
                // Not looked at (the outputs are behind): still due.
                for &id in &due[n..] {
                    if let Some(open) = self.open.get(&id) {
                        self.looks.push(Reverse((open.next_poll, id)));
                    }
                }
                break;
            }
            self.poll(id);
        }
        if !self.deleted.is_empty() {
            self.release_pinned();
        }
    }

    /// Closes the oldest deleted files kept open past `close.removed` (unread or not yet
    /// acknowledged) while they hold more than their input's `close.removed_budget` of disk.
    fn release_pinned(&mut self) {
        let now = Instant::now();
        let mut pinned: Vec<(Instant, FileId, usize, u64)> = self
            .deleted
            .iter()
            .filter_map(|id| {
                let open = self.open.get(id)?;
                match open.presence {
                    Presence::Gone { since, .. }
                        if now.duration_since(since) >= self.inputs[open.input].close_removed =>
                    {
                        Some((since, *id, open.input, open.last_size))
                    }
                    _ => None,
                }
            })
            .collect();
        pinned.sort(); // oldest first
        for input in 0..self.inputs.len() {
            let budget = self.inputs[input].removed_budget;
            let mut held: u64 = pinned.iter().filter(|p| p.2 == input).map(|p| p.3).sum();
            for &(_, id, _, size) in pinned.iter().filter(|p| p.2 == input) {
                if held <= budget {
                    break;
                }
                if let Some(open) = self.open.get(&id) {
                    let acknowledged = self.registry.lookup(id).map_or(0, |c| c.offset);
                    tracing::warn!(
                        path = %open.path.display(),
                        size,
                        read = open.harvester.committed_offset(),
                        acknowledged,
                        pinned_bytes = held,
                        budget,
                        "deleted file released before every output acknowledged it: its input's pinned deleted files exceed close.removed_budget"
                    );
                }
                self.metrics.pinned_released.inc();
                self.close(id);
                held -= size;
            }
        }
    }

    /// Looks at one open file: follows a move, notices truncation and deletion, reads a turn's
    /// worth of lines, and closes the file when its time has come. Returns whether it read
    /// up to the file's end (or closed it).
    fn poll(&mut self, id: FileId) -> bool {
        let Some(open) = self.open.get_mut(&id) else {
            return true;
        };
        let meta = match open.harvester.file().metadata() {
            Ok(meta) => meta,
            Err(err) => {
                tracing::warn!(path = %open.path.display(), %err, "cannot stat the open file; closing it");
                self.close(id);
                return true;
            }
        };
        let now = Instant::now();
        if open.check_path {
            open.check_path = false;
            // A file its input no longer admits is on its way out too.
            let here = std::fs::metadata(&open.current).is_ok_and(|m| FileId::of(&m) == id)
                && !self.inputs[open.input].excluded(&open.current);
            if !here && open.presence == Presence::Live {
                open.presence = Presence::Gone {
                    since: now,
                    deleted: false,
                };
            }
        }
        if meta.nlink() == 0 && !matches!(open.presence, Presence::Gone { deleted: true, .. }) {
            self.deleted.insert(id);
            let since = match open.presence {
                Presence::Gone { since, .. } => since,
                Presence::Live => now,
            };
            open.presence = Presence::Gone {
                since,
                deleted: true,
            };
        }
        let size = meta.len();
        let mut truncated = false;
        if size < open.harvester.read_offset() {
            let lost = open.last_size.max(open.harvester.read_offset())
                - open.harvester.committed_offset();
            tracing::warn!(
                path = %open.path.display(),
                offset = open.harvester.read_offset(),
                size,
                lost_bytes = lost,
                "file truncated (copytruncate); reading it again from the start"
            );
            self.metrics
                .lost_bytes
                .get_or_create(&LossLabels {
                    path: open.labels.path.clone(),
                    reason: LossReason::truncated,
                })
                .inc_by(lost);
            if let Err(err) = open.harvester.restart() {
                tracing::warn!(path = %open.path.display(), %err, "cannot seek; closing");
                self.close(id);
                return true;
            }
            truncated = true;
        }
        open.last_size = size;

        let mut lines = Vec::new();
        // A file that did not grow has nothing to read: the look was the `fstat` alone.
        let read = if size > open.harvester.read_offset() || truncated {
            match open
                .harvester
                .read_lines_with(&mut self.buffer, &mut lines, READ_BUDGET)
            {
                Ok(read) => read,
                Err(err) => {
                    tracing::warn!(path = %open.path.display(), %err, "read failed; closing");
                    self.close(id);
                    return true;
                }
            }
        } else {
            0
        };
        if read > 0 {
            open.last_data = now;
            open.backoff = MIN_BACKOFF;
            let labels = &open.labels;
            self.metrics.bytes.get_or_create(labels).inc_by(read as u64);
            self.metrics
                .lines
                .get_or_create(labels)
                .inc_by(lines.len() as u64);
            if open.generation.fingerprint.len < FINGERPRINT_MAX
                && open.harvester.read_offset() > open.generation.fingerprint.len
                && let Ok(fingerprint) = Fingerprint::of(open.harvester.file(), FINGERPRINT_MAX)
            {
                open.generation.fingerprint = fingerprint;
            }
        }
        let at_end = read < READ_BUDGET;
        let read_offset = open.harvester.read_offset();
        let lag = open.last_size.max(read_offset) - read_offset;
        open.lag.set(lag as i64);
        if at_end && let Ok(age) = meta.modified().map(|m| m.elapsed().unwrap_or_default()) {
            open.age.set(age.as_secs_f64());
        }
        if !lines.is_empty() || truncated {
            let batch = Harvested::Lines(Batch {
                input: Arc::clone(&self.inputs[open.input].id),
                path: Arc::clone(&open.path),
                lines,
                checkpoint: Checkpoint {
                    id,
                    generation: open.generation,
                    path: open.path.to_path_buf(),
                    offset: open.harvester.committed_offset(),
                },
            });
            self.emit(batch);
        }
        let open = self.open.get_mut(&id).expect("still open");
        let input = &self.inputs[open.input];
        // A file on its way out is looked at often enough to be closed in time.
        let longest = match open.presence {
            Presence::Live => self.options.check_interval,
            Presence::Gone { .. } => self.options.check_interval.min(input.close_removed / 2),
        };
        let live = open.presence == Presence::Live;
        let next_poll = if !at_end {
            now // more to read: after the other files' turns
        } else if open.armed && live && read == 0 && open.backoff >= ARM_AFTER {
            // Idle and armed for a while: the backend reports the next write, and the safety
            // rescan looks anyway.
            now + self.options.rescan
        } else {
            let wait = open.backoff.min(longest);
            open.backoff = (open.backoff * 2).min(longest);
            now + wait
        };
        schedule(&mut self.looks, id, open, next_poll);
        if at_end && read == 0 && live && !open.armed && open.backoff >= ARM_AFTER {
            // The look after the one scheduled above sees a write that was under way.
            open.armed = self.folders.as_mut().is_some_and(|watch| watch.arm(id));
        }
        let close = match open.presence {
            _ if !at_end => false,
            // Pinned until delivered; deleted files within a budget (`release_pinned`).
            Presence::Gone { since, .. } => {
                now.duration_since(since.max(open.last_data)) >= input.close_removed
                    && delivered(&self.registry, id, open, &meta)
            }
            Presence::Live => {
                now.duration_since(open.last_data) >= input.close_inactive
                    || !self.waiting[open.input].is_empty()
            }
        };
        if close {
            self.close(id);
        }
        at_end
    }

    /// Closes an open file, remembering where it stopped (or forgetting it, if deleted), and
    /// lets the first file waiting for its input's limit in.
    fn close(&mut self, id: FileId) {
        let Some(open) = self.open.remove(&id) else {
            return;
        };
        self.deleted.remove(&id);
        if let Some(watch) = &mut self.folders {
            watch.disarm(id);
        }
        if self.by_path.get(&open.current) == Some(&id) {
            self.by_path.remove(&open.current);
        }
        // The file that took its name (same labels) shares its gauges and stays open.
        if !self
            .by_path
            .get(open.path.as_ref())
            .is_some_and(|other| self.open.contains_key(other))
        {
            self.metrics.closed(&open.labels);
        }
        self.metrics.open_files.set(self.open.len() as i64);
        let checkpoint = Checkpoint {
            id,
            generation: open.generation,
            path: open.path.to_path_buf(),
            offset: open.harvester.committed_offset(),
        };
        match open.presence {
            Presence::Gone { deleted: true, .. } => {
                let size = open.harvester.file().metadata().map_or(0, |m| m.len());
                let lost = size.saturating_sub(checkpoint.offset);
                if lost > 0 {
                    tracing::warn!(path = %open.path.display(), lost_bytes = lost, "deleted file closed before its end was read (close.removed_budget)");
                    self.metrics
                        .lost_bytes
                        .get_or_create(&LossLabels {
                            path: open.labels.path.clone(),
                            reason: LossReason::deleted,
                        })
                        .inc_by(lost);
                }
                tracing::info!(path = %open.path.display(), "closed: deleted");
                self.emit(Harvested::Deleted(checkpoint));
            }
            Presence::Gone { deleted: false, .. } => {
                tracing::info!(path = %open.path.display(), "closed: renamed away, read to its end");
                self.closed.insert(id, checkpoint);
            }
            Presence::Live => {
                tracing::debug!(path = %open.path.display(), "closed: inactive or making room");
                self.closed.insert(id, checkpoint);
            }
        }
        let input = open.input;
        while let Some(path) = self.waiting[input].pop_front() {
            let before = self.open.len();
            if let Ok(meta) = std::fs::metadata(&path) {
                self.found(input, &path, &meta, true);
            }
            if self.open.len() > before {
                break;
            }
        }
    }
}

/// Looks at the open file `id` next at `at`.
fn schedule(
    looks: &mut BinaryHeap<Reverse<(Instant, FileId)>>,
    id: FileId,
    open: &mut Open,
    at: Instant,
) {
    open.next_poll = at;
    looks.push(Reverse((at, id)));
}

/// Every line read from `open` (whose metadata is `meta`) was acknowledged by every output:
/// the registry holds this very file at or beyond it.
fn delivered(registry: &Registry, id: FileId, open: &Open, meta: &Metadata) -> bool {
    let read = open.harvester.committed_offset();
    read == 0
        || registry.lookup(id).is_some_and(|checkpoint| {
            checkpoint.offset >= read
                && checkpoint
                    .generation
                    .matches(open.harvester.file(), meta)
                    .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_registry;
    use crate::registry::RegistryConfig;
    use crate::watch::{BackendKind, WatchConfig};

    /// Runs an engine over `input` (YAML) with the poll backend until `lines` lines arrived,
    /// and `settle` longer; returns the lines' texts by path, in delivery order.
    fn harvest(
        dir: &Path,
        input: &str,
        lines: usize,
        settle: Duration,
    ) -> HashMap<PathBuf, Vec<String>> {
        let input: FilestreamConfig = serde_yaml::from_str(input).unwrap();
        let config = WatchConfig {
            backend: BackendKind::Poll,
            scan_frequency: Duration::from_millis(50),
            rescan: Duration::from_millis(50),
            check_interval: Duration::from_millis(50),
        };
        let watch = crate::watch::start(&config, &input.paths).unwrap();
        let registry = Registry::open(&RegistryConfig {
            path: dir.join("registry"),
            ..RegistryConfig::default()
        })
        .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let engine = Engine::new(
            vec![FileInput::build(&input).unwrap()],
            EngineOptions {
                rescan: watch.rescan,
                check_interval: watch.check_interval,
                events_on_entry: watch.events_on_entry,
            },
            watch.queue,
            watch.folders,
            Arc::new(registry),
            FileMetrics::register(&mut new_registry()),
            tx,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let running = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || engine.run(&stop))
        };
        let mut got: HashMap<PathBuf, Vec<String>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut settled: Option<Instant> = None;
        while settled.is_none_or(|since| since.elapsed() < settle) {
            assert!(Instant::now() < deadline, "only {got:?} within 60 s");
            if settled.is_none() && got.values().map(Vec::len).sum::<usize>() >= lines {
                settled = Some(Instant::now());
            }
            if let Ok(Harvested::Lines(batch)) = rx.try_recv() {
                got.entry(batch.path.to_path_buf()).or_default().extend(
                    batch
                        .lines
                        .iter()
                        .map(|line| String::from_utf8_lossy(&line.bytes).into_owned()),
                );
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        stop.store(true, Ordering::SeqCst);
        drop(rx);
        running.join().unwrap();
        got
    }

    #[test]
    fn harvester_limit_takes_turns_and_reads_every_file() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..5 {
            let text: String = (0..100).map(|i| format!("{n}-{i}\n")).collect();
            std::fs::write(dir.path().join(format!("{n}.log")), text).unwrap();
        }
        let input = format!(
            "{{ id: limited, paths: ['{}/*.log'], harvester_limit: 2 }}",
            dir.path().display()
        );
        let got = harvest(dir.path(), &input, 500, Duration::ZERO);
        assert_eq!(got.len(), 5);
        for (path, lines) in got {
            assert_eq!(lines.len(), 100, "{}", path.display());
        }
    }

    #[test]
    fn excluded_and_ignored_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.log"), "a\n").unwrap();
        std::fs::write(dir.path().join("b.log.gz.log"), "gz\n").unwrap();
        let old = dir.path().join("old.log");
        std::fs::write(&old, "old\n").unwrap();
        let file = File::options().write(true).open(&old).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        // Anchored to the end: the pattern is matched against the whole path, and a bare `gz`
        // also matched the random name of the temporary folder now and then (1 in ~800 runs).
        let input = format!(
            r"{{ id: x, paths: ['{}/*.log'], exclude_files: ['\.gz\.log$'], ignore_older: 1h }}",
            dir.path().display()
        );
        // Several scans after the first line: the other files had every chance to be read.
        let got = harvest(dir.path(), &input, 1, Duration::from_millis(300));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[&dir.path().join("a.log")], vec!["a"]);
    }

    /// The latest checkpoint and line count per file name.
    type Files = HashMap<String, (Checkpoint, usize)>;

    /// Collects what the engine sends into `read` until `done`, failing after 60 s.
    fn wait_for(
        rx: &mut mpsc::Receiver<Harvested>,
        read: &mut Files,
        what: &str,
        mut done: impl FnMut(&Files) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(read) {
            assert!(Instant::now() < deadline, "{what}: not within 60 s");
            match rx.try_recv() {
                Ok(Harvested::Lines(batch)) => {
                    let name = batch.path.file_name().unwrap().to_string_lossy().into();
                    let entry = read
                        .entry(name)
                        .or_insert_with(|| (batch.checkpoint.clone(), 0));
                    entry.0 = batch.checkpoint.clone();
                    entry.1 += batch.lines.len();
                }
                Ok(Harvested::Deleted(_)) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Whether this process holds `path` open although it was deleted.
    fn holds_deleted(path: &Path) -> bool {
        let deleted = format!("{} (deleted)", path.display());
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == deleted))
    }

    #[test]
    fn deleted_files_stay_pinned_until_acknowledged_within_a_budget() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        // 100 lines of 10 bytes per file; `big` twice that.
        let write = |name: &str, lines: usize| {
            let text: String = (0..lines).map(|i| format!("{name:>4}-{i:04}\n")).collect();
            std::fs::write(logs.join(name), text).unwrap();
        };
        write("a.log", 100);
        write("big.log", 200);
        write("c.log", 100);
        // Room for `big` and `c` together, minus one byte.
        let input: FilestreamConfig = serde_yaml::from_str(&format!(
            "{{ id: pinned, paths: ['{}/*.log'], close: {{ removed: 50ms, removed_budget: 2999 }} }}",
            logs.display()
        ))
        .unwrap();
        let watch = crate::watch::start(
            &WatchConfig {
                backend: BackendKind::Poll,
                scan_frequency: Duration::from_millis(20),
                rescan: Duration::from_millis(20),
                check_interval: Duration::from_millis(20),
            },
            &input.paths,
        )
        .unwrap();
        let registry = Arc::new(
            Registry::open(&RegistryConfig {
                path: dir.path().join("registry"),
                ..RegistryConfig::default()
            })
            .unwrap(),
        );
        let metrics = FileMetrics::register(&mut new_registry());
        let (tx, mut rx) = mpsc::channel(64);
        let engine = Engine::new(
            vec![FileInput::build(&input).unwrap()],
            EngineOptions {
                rescan: watch.rescan,
                check_interval: watch.check_interval,
                events_on_entry: watch.events_on_entry,
            },
            watch.queue,
            watch.folders,
            Arc::clone(&registry),
            metrics.clone(),
            tx,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let running = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || engine.run(&stop))
        };
        // Latest checkpoint and line count per file name: nothing is committed unless the
        // test says so, as when every output is down.
        let mut read = HashMap::new();
        // Each rescan is at least 20 ms after the previous one: several are more than
        // close.removed, and every file had looks in between.
        let rescans = metrics.rescans.clone();
        let after_rescans = |n: u64| {
            let (rescans, target) = (rescans.clone(), rescans.get() + n);
            move |_: &Files| rescans.get() >= target
        };
        wait_for(&mut rx, &mut read, "every line read", |read| {
            read.values().map(|(_, lines)| lines).sum::<usize>() == 400
        });

        // Deleted, read to its end, not acknowledged: kept open.
        std::fs::remove_file(logs.join("a.log")).unwrap();
        wait_for(
            &mut rx,
            &mut read,
            "looks after the deletion",
            after_rescans(10),
        );
        assert!(
            holds_deleted(&logs.join("a.log")),
            "pinned until acknowledged"
        );
        // Acknowledged: closed.
        registry.commit(read["a.log"].0.clone());
        wait_for(&mut rx, &mut read, "a.log closed once acknowledged", |_| {
            !holds_deleted(&logs.join("a.log"))
        });
        assert_eq!(metrics.pinned_released.get(), 0);

        // Two deleted files over the budget: the older one is released, unacknowledged.
        std::fs::remove_file(logs.join("big.log")).unwrap();
        wait_for(
            &mut rx,
            &mut read,
            "looks after the deletion",
            after_rescans(5),
        );
        std::fs::remove_file(logs.join("c.log")).unwrap();
        wait_for(&mut rx, &mut read, "the budget enforced", |_| {
            metrics.pinned_released.get() == 1
        });
        assert!(!holds_deleted(&logs.join("big.log")), "the oldest released");
        wait_for(
            &mut rx,
            &mut read,
            "looks after the release",
            after_rescans(10),
        );
        assert!(holds_deleted(&logs.join("c.log")), "within the budget");
        assert_eq!(metrics.pinned_released.get(), 1);
        registry.commit(read["c.log"].0.clone());
        wait_for(&mut rx, &mut read, "c.log closed once acknowledged", |_| {
            !holds_deleted(&logs.join("c.log"))
        });

        stop.store(true, Ordering::SeqCst);
        drop(rx);
        running.join().unwrap();
    }
}
