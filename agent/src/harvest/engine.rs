//! The harvest engine: one [`OpenFile`] per watched file, kept through rotations, fed by the
//! watch backends' hints ([`super::watch_events`]) and its own rescans ([`Discovery`]),
//! sending batches of lines down a bounded channel.
//!
//! It runs on one dedicated thread (blocking reads never touch the async executor) and owns
//! every open file. Its rules (those of one file are [`super::open_file`]'s):
//! - A path now naming another file means the old one was rotated away: the old one is checked
//!   at once, and files rotated away are read to their current end before a new file of the
//!   same input is opened, so a stream's lines usually keep their order across a rotation
//!   (guaranteed only per file).
//! - Deleted files pinned past `close.removed` hold disk space: when those of an input exceed
//!   its `close.removed_budget`, the oldest are released (closed), with a warning and the
//!   `pinned_released` metric, and what was left unread is counted as lost.
//! - Open files are looked at when an event names them, at every rescan, and otherwise when
//!   their backoff says, kept in a queue by time, so that waking up for the next look costs
//!   nothing per idle file. A look is an `fstat`, and a read only when the file grew. Each look
//!   reads at most [`READ_BUDGET`] bytes before the next file's turn, so one busy file cannot
//!   starve the others, through one read buffer for all files.
//! - The channel is bounded: when outputs are slow, batches wait in a short queue of the
//!   engine's own and reading stops; watch events are still handled, so a new file is opened
//!   (and its bytes kept by the open descriptor, even if it is deleted) while the outputs catch
//!   up.

use super::discovery::{Discovery, FileInput};
use super::identity::birth;
use super::internal_events::{
    CloseReason, FileClosed, FileIoFailed, FileUnreadable, HarvestStarted, HarvestStopped,
    PinnedReleased, RenamedBeforeOpened, RescanStarted, WatchEventsLost,
};
use super::look_queue::LookQueue;
use super::open_file::OpenFile;
use super::outbox::Outbox;
use super::watch_events::{self, Action, Rechecks};
use super::{Line, READ_SIZE};
use crate::metrics::FileMetrics;
use crate::registry::{Checkpoint, Registry};
use crate::watch::{FileId, FolderWatch, WatchEvent, WatchQueue};
use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Bytes read from one file per turn: large enough for 1 GB/s in few turns, small enough that
/// 1,000 busy files all get their turn often, and the most a batch holds. The events of a
/// batch live together until the outputs have them: a quarter MiB of lines (about a thousand
/// events) keeps them in the CPU's caches while they are processed, where 1 MiB batches made
/// the processing chain 1.3 times slower (`cargo xtask bench process`).
pub const READ_BUDGET: usize = 256 << 10;
/// The first look again after an event seen on syscall entry (eBPF), when the syscall has
/// usually completed; also the shortest wait for anything due.
pub(super) const RECHECK: Duration = Duration::from_millis(1);
/// The longest the engine waits without checking whether it should stop.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often the engine retries handing over a batch while the channel is full.
const FULL_WAIT: Duration = Duration::from_millis(2);

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
    discovery: Discovery,
    options: EngineOptions,
    queue: WatchQueue,
    folders: Option<Box<dyn FolderWatch>>,
    registry: Arc<Registry>,
    metrics: FileMetrics,
    outbox: Outbox,
    files: HashMap<FileId, OpenFile>,
    looks: LookQueue,
    by_path: HashMap<PathBuf, FileId>,
    /// Files closed while they still existed (inactive, limit): where to resume.
    stopped: HashMap<FileId, Checkpoint>,
    next_rescan: Instant,
    rechecks: Rechecks,
    /// The one read buffer of every file: memory does not grow with idle files.
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
        Self {
            discovery: Discovery::new(inputs),
            options,
            queue,
            folders,
            registry,
            metrics,
            outbox: Outbox::new(out),
            files: HashMap::new(),
            looks: LookQueue::default(),
            by_path: HashMap::new(),
            stopped: HashMap::new(),
            next_rescan: Instant::now(),
            rechecks: Rechecks::default(),
            buffer: vec![0; READ_SIZE],
            deleted: HashSet::new(),
        }
    }

    /// Harvests until `stop` is set or the output channel closes. Stops reading at once:
    /// batches already sent are the delivery side's to drain.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) && !self.outbox.receiver_gone() {
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
                WatchEventsLost.emit(&self.metrics);
                self.rescan();
            } else if Instant::now() >= self.next_rescan || self.discovery.changed() {
                self.rescan();
            }
            self.look_due();
        }
        // Already read: handed over so that the delivery side drains them with the rest.
        self.outbox.hand_over_pending();
        HarvestStopped {
            open: self.files.len(),
        }
        .emit();
    }

    /// How long to wait for an event before something is due.
    fn wait(&self, now: Instant) -> Duration {
        if self.outbox.waiting() {
            return FULL_WAIT;
        }
        let next = self
            .looks
            .next()
            .into_iter()
            .chain(self.rechecks.next_due())
            .fold(self.next_rescan, Instant::min);
        match next.saturating_duration_since(now) {
            Duration::ZERO => Duration::ZERO,
            // Files that come due at nearly the same time are looked at in one round.
            wait => wait.clamp(RECHECK, MAX_WAIT),
        }
    }

    /// Handles again the events whose recheck is due (see [`Rechecks`]).
    fn recheck_due(&mut self) {
        let now = Instant::now();
        for (event, attempt) in self.rechecks.take_due(now) {
            let took_effect = watch_events::took_effect(&event);
            self.apply(event.clone());
            if !took_effect {
                self.rechecks.again(event, attempt, now);
            }
        }
    }

    fn handle(&mut self, event: WatchEvent) {
        if self.options.events_on_entry {
            let by_path = &self.by_path;
            self.rechecks.seen_on_entry(
                &event,
                &self.discovery,
                |path| by_path.contains_key(path),
                Instant::now(),
            );
        }
        self.apply(event);
    }

    fn apply(&mut self, event: WatchEvent) {
        for action in watch_events::actions(event, &self.discovery) {
            match action {
                Action::Found { input, path, meta } => self.found(input, &path, &meta, true),
                Action::Suspect(path) => self.suspect(&path),
                Action::RenamedAway { from, to } => self.renamed_away(&from, &to),
                Action::Rescan => self.next_rescan = Instant::now(),
                Action::Written(id) => {
                    if let Some(open) = self.files.get_mut(&id) {
                        open.written();
                        self.looks.schedule(id, open, Instant::now());
                    }
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
            .and_then(|id| self.files.get(id))
            .map(OpenFile::input)
            .or_else(|| self.discovery.input_of(from))
        else {
            return;
        };
        let Ok(meta) = std::fs::metadata(to) else {
            return; // gone already, or (seen on entry) not renamed yet
        };
        if meta.is_file() && !self.files.contains_key(&FileId::of(&meta)) {
            RenamedBeforeOpened { from, to }.emit();
            self.found(input, to, &meta, true);
        }
    }

    /// The file last seen at `path` may have moved or gone: look at it now.
    fn suspect(&mut self, path: &Path) {
        if let Some(&id) = self.by_path.get(path)
            && let Some(open) = self.files.get_mut(&id)
        {
            open.suspect();
            self.looks.schedule(id, open, Instant::now());
        }
    }

    /// Scans every input's patterns: opens new files, and checks open files no pattern
    /// reaches any more.
    fn rescan(&mut self) {
        RescanStarted.emit(&self.metrics);
        self.next_rescan = Instant::now() + self.options.rescan;
        let scan = self.discovery.scan(self.folders.is_some());
        for found in &scan.files {
            self.found(found.input, &found.path, &found.meta, false);
        }
        if let Some(watch) = &mut self.folders {
            watch.watch_folders(&scan.folders);
        }
        let now = Instant::now();
        for (id, open) in &mut self.files {
            // Idle files waiting for a write event get a look: the safety net for one missed.
            if open.armed() {
                self.looks.schedule(*id, open, now);
            }
            if !scan.seen.contains(id) && open.is_live() {
                open.suspect();
            }
        }
        self.stopped.retain(|id, _| scan.seen.contains(id));
        self.discovery.forget_gone();
        self.registry.clean(&scan.seen);
    }

    /// A regular file matching input `input` is at `path`. `urgent` when an event named it.
    fn found(&mut self, input: usize, path: &Path, meta: &Metadata, urgent: bool) {
        let id = FileId::of(meta);
        if let Some(previous) = self.by_path.get(path).copied()
            && previous != id
            && let Some(old) = self.files.get_mut(&previous)
        {
            // Another file took the path: the old one was rotated away.
            old.suspect();
            self.looks.schedule(previous, old, Instant::now());
        }
        if let Some(open) = self.files.get_mut(&id) {
            if let Some(before) = open.found_at(path) {
                self.by_path.remove(&before);
            }
            if self.by_path.get(path) != Some(&id) {
                self.by_path.insert(path.to_path_buf(), id);
            }
            if urgent {
                self.looks.schedule(id, open, Instant::now());
            }
            return;
        }
        if let Some(checkpoint) = self.stopped.get(&id)
            && checkpoint.offset == meta.len()
            && checkpoint.generation.birth == birth(meta)
        {
            return; // closed at its end and unchanged
        }
        let files = &self.files;
        if self.discovery.must_wait(input, path, || {
            files.values().filter(|o| o.input() == input).count()
        }) {
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
                if self.discovery.unreadable(path) {
                    FileUnreadable { path, err }.emit();
                }
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(err) => {
                let what = "cannot stat";
                FileIoFailed { path, err, what }.emit();
                return;
            }
        };
        let id = FileId::of(&meta);
        if self.files.contains_key(&id) {
            return; // replaced between the stat and the open by a file already open
        }
        let spec = &self.discovery.inputs()[input];
        let resume = self
            .stopped
            .remove(&id)
            .or_else(|| self.registry.lookup(id))
            .filter(|checkpoint| checkpoint.generation.matches(&file, &meta).unwrap_or(false));
        let Some(mut open) = OpenFile::start(input, spec, path, file, &meta, resume, &self.metrics)
        else {
            return;
        };
        let (offset, rotated) = (open.read_offset(), open.rotated());
        // From the start: the first write to a new file is the one rotation latency is
        // measured by. The backoff's first looks see a write already under way.
        open.set_armed(arm(&mut self.folders, id));
        self.looks.push(id, open.next_look());
        self.files.insert(id, open);
        self.by_path.insert(path.to_path_buf(), id);
        HarvestStarted {
            input: &spec.id,
            path,
            offset,
            rotated,
            open_files: self.files.len(),
        }
        .emit(&self.metrics);
        self.discovery.readable(path);
    }

    /// Reads the files of `input` that were rotated away to their current end, so that their
    /// lines go out before those of the file that replaced them.
    fn drain_rotated(&mut self, input: usize) {
        let rotated: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, open)| open.input() == input && open.rotated())
            .map(|(id, _)| *id)
            .collect();
        for id in rotated {
            while !self.outbox.full() && !self.look(id) {}
            if let Some(open) = self.files.get_mut(&id) {
                open.drained();
            }
        }
    }

    fn look_due(&mut self) {
        self.outbox.flush();
        if self.outbox.waiting() {
            return; // the outputs are behind: backpressure
        }
        let due = self.looks.take_due(&self.files, Instant::now());
        for (n, &id) in due.iter().enumerate() {
            if self.outbox.full() {
                // Not looked at (the outputs are behind): still due.
                for &id in &due[n..] {
                    if let Some(open) = self.files.get(&id) {
                        self.looks.push(id, open.next_look());
                    }
                }
                break;
            }
            self.look(id);
        }
        if !self.deleted.is_empty() {
            self.release_pinned();
        }
    }

    /// Closes the oldest deleted files kept open past `close.removed` (unread or not yet
    /// acknowledged) while they hold more than their input's `close.removed_budget` of disk.
    fn release_pinned(&mut self) {
        let now = Instant::now();
        let inputs = self.discovery.inputs();
        let mut pinned: Vec<(Instant, FileId, usize, u64)> = self
            .deleted
            .iter()
            .filter_map(|id| {
                let open = self.files.get(id)?;
                let since = open.deleted_since()?;
                (now.duration_since(since) >= inputs[open.input()].close_removed)
                    .then(|| (since, *id, open.input(), open.last_size()))
            })
            .collect();
        pinned.sort(); // oldest first
        for input in 0..inputs.len() {
            let budget = self.discovery.inputs()[input].removed_budget;
            let mut held: u64 = pinned.iter().filter(|p| p.2 == input).map(|p| p.3).sum();
            for &(_, id, _, size) in pinned.iter().filter(|p| p.2 == input) {
                if held <= budget {
                    break;
                }
                if let Some(open) = self.files.get(&id) {
                    PinnedReleased {
                        path: open.path(),
                        size,
                        read: open.committed_offset(),
                        acknowledged: self.registry.lookup(id).map_or(0, |c| c.offset),
                        pinned_bytes: held,
                        budget,
                    }
                    .emit(&self.metrics);
                }
                self.close_file(id);
                held -= size;
            }
        }
    }

    /// Looks at one open file (see [`OpenFile::look`]), hands over what it read, schedules its
    /// next look and closes it when its time has come. Returns whether it read up to the
    /// file's end (or closed it).
    fn look(&mut self, id: FileId) -> bool {
        let Some(open) = self.files.get_mut(&id) else {
            return true;
        };
        let spec = &self.discovery.inputs()[open.input()];
        let now = Instant::now();
        let look = match open.look(id, spec, &mut self.buffer, &self.metrics, now) {
            Ok(look) => look,
            Err(failed) => {
                failed.emit();
                self.close_file(id);
                return true;
            }
        };
        if look.deleted {
            self.deleted.insert(id);
        }
        let at_end = look.at_end();
        let next_look = open.next_look_after(&look, now, &self.options, spec.close_removed);
        self.looks.schedule(id, open, next_look);
        if open.wants_arming(&look) {
            open.set_armed(arm(&mut self.folders, id));
        }
        let waiting = self.discovery.has_waiting(open.input());
        let close = open.should_close(id, &look, now, spec, waiting, &self.registry);
        if !look.lines.is_empty() || look.truncated {
            self.outbox.send(Harvested::Lines(Batch {
                input: Arc::clone(&spec.id),
                path: Arc::clone(open.path()),
                lines: look.lines,
                checkpoint: open.checkpoint(id),
            }));
        }
        if close {
            self.close_file(id);
        }
        at_end
    }

    /// Closes an open file, remembering where it stopped (or forgetting it, if deleted), and
    /// lets the first file waiting for its input's limit in.
    fn close_file(&mut self, id: FileId) {
        let Some(open) = self.files.remove(&id) else {
            return;
        };
        self.deleted.remove(&id);
        if let Some(watch) = &mut self.folders {
            watch.disarm(id);
        }
        if self.by_path.get(open.current()) == Some(&id) {
            self.by_path.remove(open.current());
        }
        let reason = open.close_reason();
        let deleted = matches!(reason, CloseReason::Deleted { .. });
        FileClosed {
            path: open.path(),
            series: open.series(),
            reason,
            gauges_shared: self
                .by_path
                .get(open.path().as_ref())
                .is_some_and(|other| self.files.contains_key(other)),
            open_files: self.files.len(),
        }
        .emit(&self.metrics);
        let checkpoint = open.checkpoint(id);
        if deleted {
            self.outbox.send(Harvested::Deleted(checkpoint));
        } else {
            self.stopped.insert(id, checkpoint);
        }
        let input = open.input();
        while let Some(path) = self.discovery.next_waiting(input) {
            let before = self.files.len();
            if let Ok(meta) = std::fs::metadata(&path) {
                self.found(input, &path, &meta, true);
            }
            if self.files.len() > before {
                break;
            }
        }
    }
}

/// Asks the backend, if any, to report the next write to the open file `id`.
fn arm(folders: &mut Option<Box<dyn FolderWatch>>, id: FileId) -> bool {
    folders.as_mut().is_some_and(|watch| watch.arm(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilestreamConfig;
    use crate::metrics::new_registry;
    use crate::registry::RegistryConfig;
    use crate::watch::{BackendKind, WatchConfig};
    use std::time::SystemTime;

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
