//! The inotify watch: one directory watch per folder that can hold matching files (see
//! [`super::folder_patterns`]), for machines where the eBPF programs cannot load.
//!
//! A directory watch reports creations, renames, deletions and writes of the files inside it
//! by name, which is all the engine needs. It cannot see a folder's files before the folder is
//! watched, so a new folder (`Changed` on a directory) makes the engine rescan, which also adds
//! the new folder's watch. `IN_Q_OVERFLOW` (the kernel's queue was full) asks for a rescan too.
//! A rename within or between watched folders comes as `IN_MOVED_FROM` and `IN_MOVED_TO` with
//! one cookie: paired, they are a [`WatchEvent::Renamed`], which names the file's new name
//! even when no pattern matches it.

use super::{WatchEvent, WatchSender};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How long the reader thread sleeps in `poll` before checking whether the watch is gone.
const POLL_TIMEOUT_MS: u16 = 100;
/// Renames whose `IN_MOVED_TO` may still come: the kernel queues the two halves one after the
/// other, but a read may end between them.
const MOVES_PENDING: usize = 64;

/// The events a folder watch asks for.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
}

/// Watched folders by descriptor and by path, shared with the reader thread, which forgets a
/// folder when the kernel drops its watch (`IN_IGNORED`: deleted or unmounted).
#[derive(Default)]
struct Folders {
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    by_path: HashMap<PathBuf, WatchDescriptor>,
}

/// Directory watches feeding a [`WatchSender`]. Dropping it stops the reader thread within
/// [`POLL_TIMEOUT_MS`].
pub struct InotifyWatch {
    watches: Watches,
    folders: Arc<Mutex<Folders>>,
    stop: Arc<AtomicBool>,
}

impl InotifyWatch {
    /// Starts the reader thread; no folder is watched until [`InotifyWatch::watch_folders`].
    pub fn start(tx: WatchSender) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let folders = Arc::new(Mutex::new(Folders::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let folders = Arc::clone(&folders);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("skiff-inotify".into())
                .spawn(move || read_events(inotify, &folders, &tx, &stop))?;
        }
        Ok(Self {
            watches,
            folders,
            stop,
        })
    }

    /// Adds a watch on each of `folders` not watched yet. A folder that vanished in the
    /// meantime is skipped (the next rescan sees what replaced it).
    pub fn watch_folders<'a>(&mut self, folders: impl IntoIterator<Item = &'a Path>) {
        let mut known = self.folders.lock().expect("inotify folders lock");
        for folder in folders {
            if known.by_path.contains_key(folder) {
                continue;
            }
            match self.watches.add(folder, mask()) {
                Ok(wd) => {
                    tracing::debug!(folder = %folder.display(), "inotify watch added");
                    known.by_wd.insert(wd.clone(), folder.to_path_buf());
                    known.by_path.insert(folder.to_path_buf(), wd);
                }
                Err(err) => tracing::debug!(folder = %folder.display(), %err, "cannot watch"),
            }
        }
    }

    /// How many folders are watched.
    pub fn folder_count(&self) -> usize {
        self.folders
            .lock()
            .expect("inotify folders lock")
            .by_wd
            .len()
    }
}

impl Drop for InotifyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The reader thread: turns inotify records into [`WatchEvent`]s until the watch is dropped or
/// the engine is gone.
fn read_events(
    mut inotify: Inotify,
    folders: &Mutex<Folders>,
    tx: &WatchSender,
    stop: &AtomicBool,
) {
    let mut buffer = vec![0; 64 * 1024];
    // Writes arrive as one MODIFY per write(2): one hint per file per read is enough.
    let mut changed = HashSet::new();
    // The `IN_MOVED_FROM` paths by cookie, newest last.
    let mut moved_from: VecDeque<(u32, PathBuf)> = VecDeque::new();
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(POLL_TIMEOUT_MS)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(err) => {
                tracing::error!(%err, "polling inotify failed; inotify watch stopped");
                return;
            }
        }
        let events = match inotify.read_events(&mut buffer) {
            Ok(events) => events,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                tracing::error!(%err, "reading inotify failed; inotify watch stopped");
                return;
            }
        };
        let mut known = folders.lock().expect("inotify folders lock");
        for event in events {
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                tracing::warn!("inotify queue overflowed; rescanning");
                tx.request_rescan();
                continue;
            }
            if event.mask.contains(EventMask::IGNORED) {
                if let Some(folder) = known.by_wd.remove(&event.wd) {
                    known.by_path.remove(&folder);
                }
                continue;
            }
            let (Some(folder), Some(name)) = (known.by_wd.get(&event.wd), event.name) else {
                continue;
            };
            let path = folder.join(name);
            let from = event
                .mask
                .contains(EventMask::MOVED_TO)
                .then(|| {
                    moved_from
                        .iter()
                        .position(|(cookie, _)| *cookie == event.cookie)
                })
                .flatten()
                .and_then(|at| moved_from.remove(at));
            let sent = if let Some((_, from)) = from {
                changed.insert(path.clone());
                tx.send(WatchEvent::Renamed { from, to: path })
            } else if event
                .mask
                .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
            {
                changed.remove(&path);
                if event.mask.contains(EventMask::MOVED_FROM) {
                    if moved_from.len() == MOVES_PENDING {
                        moved_from.pop_front();
                    }
                    moved_from.push_back((event.cookie, path.clone()));
                }
                tx.send(WatchEvent::Removed(path))
            } else if changed.insert(path.clone()) {
                tx.send(WatchEvent::Changed(path))
            } else {
                true
            };
            if !sent {
                return;
            }
        }
        changed.clear();
    }
}
