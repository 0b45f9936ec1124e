//! The poll watch, for machines where neither the eBPF programs nor inotify can be used (or for
//! file systems whose changes inotify does not see, as network file systems written by
//! other hosts). A thread looks at every watched folder each `scan_frequency`: one `stat` per
//! folder. Only a folder whose modification time changed is listed again (`readdir`, no
//! `stat` per file), and its names and inodes are compared with the previous listing, which
//! yields the events of the other backends: an inode that moved to another name is
//! [`WatchEvent::Renamed`], a new or replaced name [`WatchEvent::Changed`], a name gone
//! [`WatchEvent::Removed`]. So idle folders cost one `stat` per scan, whatever they hold.
//!
//! Writes to a file change no folder: the engine looks at the files it harvests itself, backing
//! off while they are idle (see [`super::WatchConfig::check_interval`]). And a file that keeps
//! a name for less than a scan period may never be seen under it: one created, written and
//! renamed out of the patterns between two scans is missed, which only an event backend can
//! prevent.

use super::{WatchEvent, WatchSender};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A folder modified this recently may change again within the same tick of the file
/// system's clock, leaving its modification time as it was: it is listed again at the next
/// scan, whatever its time says.
const RACY: Duration = Duration::from_secs(1);

/// The folders scanned by a thread of their own; dropping it stops the thread.
pub struct PollWatch {
    folders: Sender<Vec<PathBuf>>,
}

impl PollWatch {
    /// Starts the thread, which scans the folders it is given every `period`.
    pub fn start(period: Duration, tx: WatchSender) -> std::io::Result<Self> {
        let (folders, added) = channel();
        std::thread::Builder::new()
            .name("skiff-poll".into())
            .spawn(move || scan_folders(period, &added, &tx))?;
        Ok(Self { folders })
    }

    /// Scans `folders` too (those already scanned are skipped).
    pub fn watch_folders(&mut self, folders: &[PathBuf]) {
        // The thread is gone only when the engine is: nothing is left to tell.
        let _ = self.folders.send(folders.to_vec());
    }
}

/// What a folder held when it was last listed.
struct Listing {
    /// Its modification time then (seconds and nanoseconds).
    modified: (i64, i64),
    /// Listed within [`RACY`] of its modification time: list it again.
    racy: bool,
    /// Names and their inodes.
    entries: HashMap<OsString, u64>,
}

/// The thread: adds the folders it is sent (reporting everything in them as changed, since
/// the engine may have looked before they were listed) and scans every `period`, until the
/// watch or the engine is gone.
fn scan_folders(period: Duration, added: &Receiver<Vec<PathBuf>>, tx: &WatchSender) {
    let mut listed: HashMap<PathBuf, Listing> = HashMap::new();
    let mut next_scan = Instant::now() + period;
    loop {
        match added.recv_timeout(next_scan.saturating_duration_since(Instant::now())) {
            Ok(folders) => {
                for folder in folders {
                    if !listed.contains_key(&folder)
                        && let Some(listing) = list(&folder)
                    {
                        for name in listing.entries.keys() {
                            if !tx.send(WatchEvent::Changed(folder.join(name))) {
                                return;
                            }
                        }
                        listed.insert(folder, listing);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                next_scan = Instant::now() + period;
                let mut gone = Vec::new();
                for (folder, listing) in &mut listed {
                    match look(folder, listing, tx) {
                        Some(true) => {}
                        Some(false) => gone.push(folder.clone()),
                        None => return,
                    }
                }
                for folder in gone {
                    listed.remove(&folder);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Lists `folder`, or `None` when it cannot be read (gone, or not a folder).
fn list(folder: &Path) -> Option<Listing> {
    // The time is taken before the names: a change while listing shows as a newer time.
    let meta = fs::metadata(folder).ok()?;
    let now = SystemTime::now();
    let entries = fs::read_dir(folder)
        .ok()?
        .flatten()
        .map(|entry| (entry.file_name(), entry.ino()))
        .collect();
    let modified = UNIX_EPOCH + Duration::new(meta.mtime() as u64, meta.mtime_nsec() as u32);
    Some(Listing {
        modified: (meta.mtime(), meta.mtime_nsec()),
        racy: now.duration_since(modified).is_ok_and(|age| age < RACY) || modified > now,
        entries,
    })
}

/// Looks at one folder: when it changed, lists it again and reports the differences. Returns
/// whether the folder is still there (`Some(false)`: forget it), `None` once the engine is gone.
fn look(folder: &Path, listing: &mut Listing, tx: &WatchSender) -> Option<bool> {
    let unchanged = fs::metadata(folder).map(|meta| (meta.mtime(), meta.mtime_nsec()));
    if unchanged.as_ref().is_ok_and(|m| *m == listing.modified) && !listing.racy {
        return Some(true);
    }
    let Some(now) = list(folder) else {
        // Gone with everything in it.
        for name in listing.entries.keys() {
            if !tx.send(WatchEvent::Removed(folder.join(name))) {
                return None;
            }
        }
        return Some(false);
    };
    let before = std::mem::replace(listing, now);
    for event in differences(&before.entries, &listing.entries) {
        let event = match event {
            Difference::Renamed { from, to } => WatchEvent::Renamed {
                from: folder.join(from),
                to: folder.join(to),
            },
            Difference::Changed(name) => WatchEvent::Changed(folder.join(name)),
            Difference::Removed(name) => WatchEvent::Removed(folder.join(name)),
        };
        if !tx.send(event) {
            return None;
        }
    }
    Some(true)
}

/// How one listing of a folder differs from the previous one.
#[derive(Debug, PartialEq, Eq)]
enum Difference<'a> {
    /// The inode under `from` is now under `to`.
    Renamed {
        from: &'a OsString,
        to: &'a OsString,
    },
    /// A new name, or a name now holding another inode.
    Changed(&'a OsString),
    /// A name no longer there.
    Removed(&'a OsString),
}

/// The differences from `before` to `after` (names and their inodes): renames first, so that
/// a rotated file is known as moved before the file that took its name is looked at.
fn differences<'a>(
    before: &'a HashMap<OsString, u64>,
    after: &'a HashMap<OsString, u64>,
) -> Vec<Difference<'a>> {
    let mut vanished: HashMap<u64, &OsString> = before
        .iter()
        .filter(|(name, ino)| after.get(*name) != Some(*ino))
        .map(|(name, ino)| (*ino, name))
        .collect();
    let mut renamed = Vec::new();
    let mut changed = Vec::new();
    for (name, ino) in after {
        if before.get(name) == Some(ino) {
            continue;
        }
        match vanished.remove(ino) {
            Some(from) => renamed.push(Difference::Renamed { from, to: name }),
            None => changed.push(Difference::Changed(name)),
        }
    }
    let mut removed: Vec<_> = vanished
        .into_values()
        .filter(|name| !after.contains_key(*name))
        .map(Difference::Removed)
        .collect();
    renamed.append(&mut removed);
    renamed.append(&mut changed);
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[(&str, u64)]) -> HashMap<OsString, u64> {
        entries
            .iter()
            .map(|(name, ino)| (OsString::from(name), *ino))
            .collect()
    }

    #[test]
    fn a_rotation_is_a_rename_then_a_new_file() {
        let before = names(&[("app.log", 1), ("other.log", 2), ("old.log", 3)]);
        let after = names(&[("app.log", 4), ("app.log.1", 1), ("other.log", 2)]);
        let (app, rotated, old) = (
            OsString::from("app.log"),
            OsString::from("app.log.1"),
            OsString::from("old.log"),
        );
        assert_eq!(
            differences(&before, &after),
            vec![
                Difference::Renamed {
                    from: &app,
                    to: &rotated
                },
                Difference::Removed(&old),
                Difference::Changed(&app),
            ]
        );
        assert!(differences(&after, &after).is_empty());
    }

    #[test]
    fn changes_in_a_watched_folder_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().to_path_buf();
        std::fs::write(folder.join("a.log"), "a\n").unwrap();
        let (tx, queue) = super::super::queue();
        let mut watch = PollWatch::start(Duration::from_millis(10), tx).unwrap();
        watch.watch_folders(std::slice::from_ref(&folder));
        let next = || {
            queue
                .events
                .recv_timeout(Duration::from_secs(10))
                .expect("an event within 10 s")
        };
        // Everything in a folder is reported when it is added.
        assert_eq!(next(), WatchEvent::Changed(folder.join("a.log")));
        std::fs::rename(folder.join("a.log"), folder.join("a.log.1")).unwrap();
        assert_eq!(
            next(),
            WatchEvent::Renamed {
                from: folder.join("a.log"),
                to: folder.join("a.log.1")
            }
        );
        std::fs::remove_file(folder.join("a.log.1")).unwrap();
        assert_eq!(next(), WatchEvent::Removed(folder.join("a.log.1")));
    }
}
