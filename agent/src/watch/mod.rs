//! Finding the files to harvest, and learning when they appear, move, shrink or go away.
//!
//! Three backends report the same [`WatchEvent`]s: [`ebpf`] (syscall tracepoints, the instant a
//! process opens, renames, deletes or truncates a watched path), [`inotify`] (directory watches)
//! and [`poll`] (a `stat` of each watched folder every `scan_frequency`, and a new listing of
//! those that changed). The two event backends also report writes to the files being
//! harvested (inotify by path, eBPF once per armed file: see [`FolderWatch::arm`]), so an idle
//! file costs nothing until it is written; with polling, an idle file is `stat`ed less and less
//! often, at least every `check_interval`. A rename reports both names, so a file renamed out of
//! the patterns before the agent opened it is still harvested (except by polling, which cannot
//! see a file that kept a matching name for less than a scan period). The events are
//! hints, never the truth: the harvest engine ([`crate::harvest::Engine`]) looks at the file
//! system itself for each one, so a duplicate or stale event costs a `stat`, and a missed one is
//! found by the next rescan. Every backend gets an initial scan and a safety rescan, and a
//! backend that loses events (a full queue, a full ring buffer, an inotify overflow) asks for a
//! rescan at once.

pub mod btf;
pub mod ebpf;
pub mod inotify;
pub mod poll;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// Watch events waiting for the harvest engine; beyond this, backends drop hints about
/// modifications (open files are polled anyway) and ask for a rescan instead of anything else.
const QUEUE_CAPACITY: usize = 16 * 1024;

/// `watch`: how files are discovered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Which backend reports file changes. Default: `auto`.
    #[serde(default)]
    pub backend: BackendKind,
    /// How often the `poll` backend looks at the watched folders (a `stat` each; a folder that
    /// changed is listed again): its latency for new, renamed and deleted files, and the
    /// shortest life under a matching name of a file it can see (one created, written and
    /// renamed out of the patterns between two looks is missed). What polling costs is mostly
    /// one `fstat` per idle open file every `check_interval`: with 10,000 idle files about
    /// 0.45 % of a core, against about 0.3 % for the event backends (`cargo xtask bench
    /// agent`). Default: 1s.
    #[serde(default = "default_scan_frequency", with = "humantime_serde")]
    pub scan_frequency: Duration,
    /// The safety rescan, in every backend: every matching path is listed and `stat`ed again,
    /// which finds what events missed, and a file closed by `close.inactive` that grew again
    /// under a backend that cannot report its writes (`poll`; `ebpf` when the writer kept it
    /// open). Default: 30s.
    #[serde(default = "default_rescan", with = "humantime_serde")]
    pub rescan: Duration,
    /// Longest wait between two looks (an `fstat`) at an open file that stopped growing (the
    /// wait starts at 10 ms and doubles while the file stays idle; new bytes reset it), as
    /// Filebeat's `backoff`/`max_backoff`: with the `poll` backend, the latency of the first
    /// new line of a file idle for longer than about twice this. With the event backends,
    /// which report writes, an idle file is looked at on its next write and at the safety
    /// rescan instead; this applies to files whose writes they cannot report (renamed away, or
    /// beyond the eBPF map's capacity). Default: 10s.
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::default(),
            scan_frequency: default_scan_frequency(),
            rescan: default_rescan(),
            check_interval: default_check_interval(),
        }
    }
}

fn default_scan_frequency() -> Duration {
    Duration::from_secs(1)
}

fn default_rescan() -> Duration {
    Duration::from_secs(30)
}

fn default_check_interval() -> Duration {
    Duration::from_secs(10)
}

/// `watch.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// eBPF when it loads, else inotify.
    #[default]
    Auto,
    /// Syscall tracepoints; fails at start-up when the programs cannot be loaded.
    Ebpf,
    /// inotify directory watches.
    Inotify,
    /// A `stat` of each watched folder every `scan_frequency`.
    Poll,
}

/// What a backend saw. A hint: the receiver checks the file system itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Something at `path` was created, opened for writing, renamed into place, written or
    /// truncated.
    Changed(PathBuf),
    /// `path` was deleted or renamed away to a name not known.
    Removed(PathBuf),
    /// The file at `from` was renamed to `to`: `from` is gone, and `to` may be a name no
    /// pattern matches, under which a file the engine has not opened yet is still harvested.
    Renamed { from: PathBuf, to: PathBuf },
    /// A process is writing to the armed open file `id` (eBPF, seen on syscall entry).
    Written(FileId),
}

/// The receiving end of a backend: its events, and a flag it sets when it lost some.
pub struct WatchQueue {
    pub events: Receiver<WatchEvent>,
    /// Set by a backend that could not deliver an event: rescan now.
    pub rescan: Arc<AtomicBool>,
}

/// The sending end, held by a backend's thread.
#[derive(Clone)]
pub struct WatchSender {
    events: SyncSender<WatchEvent>,
    rescan: Arc<AtomicBool>,
}

/// A connected sender and queue.
pub fn queue() -> (WatchSender, WatchQueue) {
    let (tx, rx) = sync_channel(QUEUE_CAPACITY);
    let rescan = Arc::new(AtomicBool::new(false));
    (
        WatchSender {
            events: tx,
            rescan: Arc::clone(&rescan),
        },
        WatchQueue { events: rx, rescan },
    )
}

impl WatchSender {
    /// Queues `event` without waiting: the backends' threads must keep draining the kernel.
    /// When the queue is full, a `Changed` hint about a file that may already be open is
    /// dropped only because the engine polls open files and rescans; the rescan flag makes
    /// that rescan happen now. Returns false once the engine is gone.
    pub fn send(&self, event: WatchEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.request_rescan();
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Asks the engine to rescan every watched folder now (events were lost).
    pub fn request_rescan(&self) {
        self.rescan.store(true, Ordering::SeqCst);
    }
}

/// A started backend: the queue the engine reads, and what keeps the backend running.
pub struct Watch {
    /// The backend's events.
    pub queue: WatchQueue,
    /// The backend's folder watches, which the engine keeps up to date after each rescan;
    /// owning it keeps the backend running.
    pub folders: Option<Box<dyn FolderWatch>>,
    /// How often the engine rescans: `rescan`.
    pub rescan: Duration,
    /// The longest wait between two looks at an idle open file whose writes the backend does
    /// not report: `check_interval`.
    pub check_interval: Duration,
    /// Events are seen on syscall entry, before the syscall took effect (eBPF).
    pub events_on_entry: bool,
    /// The backend that runs (`auto` resolved).
    pub backend: BackendKind,
    /// Keeps the queue connected should a backend's thread end: the engine then waits for
    /// its timers instead of returning from every wait at once.
    _sender: WatchSender,
}

/// A backend that watches folders one by one and must be told of new ones, and that reports
/// writes to the files being harvested.
pub trait FolderWatch: Send {
    /// Watches `folders` too (those already watched are skipped).
    fn watch_folders(&mut self, folders: &[PathBuf]);
    /// Asks for the next write to the open file `file` (under a watched folder) to be
    /// reported, by a [`WatchEvent::Changed`] of its path or a [`WatchEvent::Written`] (after
    /// which the file must be armed again). Returns false when it cannot be: the file's
    /// writes are found by looking at it.
    fn arm(&mut self, file: FileId) -> bool;
    /// The open file `file` was closed: its writes are no longer of interest.
    fn disarm(&mut self, file: FileId);
}

impl FolderWatch for inotify::InotifyWatch {
    fn watch_folders(&mut self, folders: &[PathBuf]) {
        inotify::InotifyWatch::watch_folders(self, folders.iter().map(PathBuf::as_path));
    }

    /// Folder watches report every write (`IN_MODIFY`) of the files inside, by path.
    fn arm(&mut self, _file: FileId) -> bool {
        true
    }

    fn disarm(&mut self, _file: FileId) {}
}

impl FolderWatch for poll::PollWatch {
    fn watch_folders(&mut self, folders: &[PathBuf]) {
        poll::PollWatch::watch_folders(self, folders);
    }

    /// Writes change no folder: the engine looks at the file.
    fn arm(&mut self, _file: FileId) -> bool {
        false
    }

    fn disarm(&mut self, _file: FileId) {}
}

impl FolderWatch for ebpf::EbpfWatch {
    fn watch_folders(&mut self, folders: &[PathBuf]) {
        ebpf::EbpfWatch::watch_folders(self, folders.iter().map(PathBuf::as_path));
    }

    fn arm(&mut self, file: FileId) -> bool {
        ebpf::EbpfWatch::arm(self, file)
    }

    fn disarm(&mut self, file: FileId) {
        ebpf::EbpfWatch::disarm(self, file);
    }
}

/// Why no backend could start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the eBPF watch")]
    Ebpf(#[from] ebpf::Error),
    #[error("cannot start the inotify watch")]
    Inotify(#[source] std::io::Error),
    #[error("cannot start the poll watch")]
    Poll(#[source] std::io::Error),
}

/// Starts the configured backend for files matching `patterns`.
pub fn start(config: &WatchConfig, patterns: &[String]) -> Result<Watch, StartError> {
    let (tx, queue) = self::queue();
    let mut watch = Watch {
        queue,
        folders: None,
        rescan: config.rescan,
        check_interval: config.check_interval,
        events_on_entry: false,
        backend: config.backend,
        _sender: tx.clone(),
    };
    let start_inotify = |tx| -> Result<Box<dyn FolderWatch>, StartError> {
        Ok(Box::new(
            inotify::InotifyWatch::start(tx).map_err(StartError::Inotify)?,
        ))
    };
    match config.backend {
        BackendKind::Poll => {
            watch.folders = Some(Box::new(
                poll::PollWatch::start(config.scan_frequency, tx).map_err(StartError::Poll)?,
            ))
        }
        BackendKind::Inotify => watch.folders = Some(start_inotify(tx)?),
        BackendKind::Ebpf => watch.folders = Some(Box::new(start_ebpf(patterns, tx)?)),
        BackendKind::Auto => match start_ebpf(patterns, tx.clone()) {
            Ok(ebpf) => {
                watch.folders = Some(Box::new(ebpf));
                watch.backend = BackendKind::Ebpf;
            }
            Err(err) => {
                tracing::warn!(
                    error = %format!("{:#}", anyhow::Error::from(err)),
                    "eBPF watch unavailable; falling back to inotify"
                );
                watch.folders = Some(start_inotify(tx)?);
                watch.backend = BackendKind::Inotify;
            }
        },
    }
    watch.events_on_entry = watch.backend == BackendKind::Ebpf;
    tracing::info!(backend = ?watch.backend, rescan = ?watch.rescan, "watching");
    Ok(watch)
}

/// Where the kubelet keeps container logs; `/var/log/containers/*.log` are symlinks into it.
const POD_LOGS: &str = "/var/log/pods";

/// Attaches the eBPF programs to the literal folders of `patterns` and [`POD_LOGS`] (where
/// symlinked container logs are written and rotated; other symlink targets' folders are added
/// as the rescans find them), forwarding what they see.
fn start_ebpf(patterns: &[String], tx: WatchSender) -> Result<ebpf::EbpfWatch, ebpf::Error> {
    let mut prefixes: Vec<PathBuf> = patterns.iter().map(|p| literal_prefix(p)).collect();
    prefixes.push(PathBuf::from(POD_LOGS));
    prefixes.sort();
    prefixes.dedup();
    // The kernel reports opens for writing only: the agent's own reads never come back.
    ebpf::EbpfWatch::attach(&prefixes, move |event| match event {
        ebpf::EbpfEvent::Opened(opened) => tx.send(WatchEvent::Changed(opened.path)),
        ebpf::EbpfEvent::Renamed { from, to, .. } => tx.send(WatchEvent::Renamed { from, to }),
        ebpf::EbpfEvent::Unlinked { path, .. } => tx.send(WatchEvent::Removed(path)),
        ebpf::EbpfEvent::Truncated { path, .. } => tx.send(WatchEvent::Changed(path)),
        ebpf::EbpfEvent::Written { file, .. } => tx.send(WatchEvent::Written(file)),
        ebpf::EbpfEvent::Lost(count) => {
            tracing::warn!(count, "eBPF events lost (ring buffer full); rescanning");
            tx.request_rescan();
            true
        }
    })
}

/// A file's identity on this machine while it exists: it survives renames, unlike its path.
/// (An inode number is reused once the file is deleted: [`crate::harvest::identity`] tells
/// the generations apart.)
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The regular files that match `patterns` now, by identity. A file reached through several
/// paths (symlinks) appears once.
pub fn scan(patterns: &[String]) -> BTreeMap<FileId, PathBuf> {
    let mut found = BTreeMap::new();
    for pattern in patterns {
        let Ok(paths) = glob::glob(pattern) else {
            continue; // validated when the configuration was loaded
        };
        for path in paths.flatten() {
            // `metadata` follows symlinks: the identity is the target's.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    found.entry(FileId::of(&meta)).or_insert(path);
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(path = %path.display(), %err, "skipping"),
            }
        }
    }
    found
}

/// The folders that hold files matching `pattern`, as glob patterns of their own: for
/// `/var/log/pods/*/*/*.log`, `/var/log/pods`, `/var/log/pods/*` and `/var/log/pods/*/*`. The
/// inotify backend watches every folder they match, so a new pod folder is seen too.
pub fn folder_patterns(pattern: &str) -> Vec<String> {
    let path = Path::new(pattern);
    let Some(parent) = path.parent() else {
        return Vec::new();
    };
    let literal = literal_prefix(pattern);
    parent
        .ancestors()
        .filter(|folder| folder.starts_with(&literal))
        .map(|folder| folder.to_string_lossy().into_owned())
        .collect()
}

/// The longest leading folder of `pattern` without glob characters: `/var/log/pods` for
/// `/var/log/pods/*/*/*.log`. The eBPF backend watches everything below it.
pub fn literal_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    let path = Path::new(pattern);
    let components: Vec<_> = path.components().collect();
    // The last component is the file name, even when it has no glob characters.
    for component in &components[..components.len().saturating_sub(1)] {
        let text = component.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[']) {
            break;
        }
        prefix.push(component);
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_file_is_found_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("a.log");
        std::fs::write(&real, "x\n").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("b.log")).unwrap();
        std::fs::create_dir(dir.path().join("c.log")).unwrap();
        let found = scan(&[format!("{}/*.log", dir.path().display())]);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn prefixes_and_folder_patterns_of_a_glob() {
        let pattern = "/var/log/pods/*/*/*.log";
        assert_eq!(literal_prefix(pattern), PathBuf::from("/var/log/pods"));
        assert_eq!(
            folder_patterns(pattern),
            vec!["/var/log/pods/*/*", "/var/log/pods/*", "/var/log/pods"]
        );
        assert_eq!(
            literal_prefix("/var/log/app.log"),
            PathBuf::from("/var/log")
        );
        assert_eq!(folder_patterns("/var/log/app.log"), vec!["/var/log"]);
    }

    #[test]
    fn a_full_queue_asks_for_a_rescan() {
        let (tx, rx) = queue();
        for n in 0..QUEUE_CAPACITY + 1 {
            assert!(tx.send(WatchEvent::Changed(PathBuf::from(format!("/x/{n}")))));
        }
        assert!(rx.rescan.load(Ordering::SeqCst));
        drop(rx);
        assert!(!tx.send(WatchEvent::Changed(PathBuf::from("/x"))));
    }
}
