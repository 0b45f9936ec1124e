//! The registry: how far each file has been delivered, so a restart resumes where the outputs'
//! acknowledgements left off.
//!
//! Offsets enter the registry only through [`Registry::commit`], which the pipeline calls after
//! every output acknowledged a batch; the registry is written to disk every `registry.flush`
//! and at shutdown, crash-safely (a temporary file, fsync, rename, fsync of the folder), so a
//! `kill -9` leaves either the previous or the next complete file, never a torn one. Lines
//! acknowledged after the last flush are sent again after a crash: at-least-once.

use crate::harvest::identity::Generation;
use crate::watch::FileId;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file inside `registry.path` that holds the offsets.
const FILE_NAME: &str = "offsets.json";
/// Bumped when the file's shape changes incompatibly.
const FORMAT_VERSION: u32 = 1;

/// `registry`: where delivered offsets are kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The folder of the registry. Default: `/var/lib/skiff/registry`.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// How often acknowledged offsets are written to disk; what a crash may send again.
    /// Default: 1s.
    #[serde(default = "default_flush", with = "humantime_serde")]
    pub flush: Duration,
    /// Entries of files not seen for this long are dropped. Default: 24h.
    #[serde(default = "default_clean_inactive", with = "humantime_serde")]
    pub clean_inactive: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            path: default_path(),
            flush: default_flush(),
            clean_inactive: default_clean_inactive(),
        }
    }
}

fn default_path() -> PathBuf {
    PathBuf::from("/var/lib/skiff/registry")
}

fn default_flush() -> Duration {
    Duration::from_secs(1)
}

fn default_clean_inactive() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// How far one file has been delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Device and inode.
    pub id: FileId,
    /// Which file that inode was (see [`crate::harvest::identity`]).
    pub generation: Generation,
    /// The path the file was harvested under, for operators reading the registry.
    pub path: PathBuf,
    /// Offset just past the last delivered line.
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    checkpoint: Checkpoint,
    /// Seconds since the epoch of the last commit, or of the last scan that saw the file.
    updated: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<Entry>,
}

/// Delivered offsets by file, shared by the harvest engine (reads) and the pipeline (commits).
#[derive(Debug)]
pub struct Registry {
    folder: PathBuf,
    clean_inactive: Duration,
    state: Mutex<State>,
    /// Held while writing the file: the periodic flush and the final one may overlap.
    writing: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<FileId, Entry>,
    dirty: bool,
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot create the registry folder {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot read the registry {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the registry {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl Registry {
    /// Opens the registry in `config.path`, creating the folder. A registry file that does not
    /// parse (written by something else) is moved aside and logged: starting over means
    /// duplicates, never loss.
    pub fn open(config: &RegistryConfig) -> Result<Self, RegistryError> {
        fs::create_dir_all(&config.path).map_err(|source| RegistryError::Create {
            path: config.path.clone(),
            source,
        })?;
        let file = config.path.join(FILE_NAME);
        let entries = match fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(disk) if disk.version == FORMAT_VERSION => disk.entries,
                Ok(disk) => {
                    set_aside(&file, &format!("format version {}", disk.version));
                    Vec::new()
                }
                Err(err) => {
                    set_aside(&file, &err.to_string());
                    Vec::new()
                }
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(RegistryError::Read { path: file, source }),
        };
        tracing::info!(path = %file.display(), files = entries.len(), "registry loaded");
        Ok(Self {
            folder: config.path.clone(),
            clean_inactive: config.clean_inactive,
            state: Mutex::new(State {
                entries: entries
                    .into_iter()
                    .map(|entry| (entry.checkpoint.id, entry))
                    .collect(),
                dirty: false,
            }),
            writing: Mutex::new(()),
        })
    }

    /// The delivered offset recorded for the inode `id`, whichever generation it was.
    pub fn lookup(&self, id: FileId) -> Option<Checkpoint> {
        let state = self.state.lock().expect("registry lock");
        state.entries.get(&id).map(|entry| entry.checkpoint.clone())
    }

    /// Records that everything before `checkpoint.offset` was delivered.
    pub fn commit(&self, checkpoint: Checkpoint) {
        let mut state = self.state.lock().expect("registry lock");
        state.entries.insert(
            checkpoint.id,
            Entry {
                checkpoint,
                updated: now(),
            },
        );
        state.dirty = true;
    }

    /// Forgets the inode `id` if its recorded generation is `generation`: the file was deleted.
    pub fn forget(&self, id: FileId, generation: &Generation) {
        let mut state = self.state.lock().expect("registry lock");
        if state
            .entries
            .get(&id)
            .is_some_and(|entry| entry.checkpoint.generation == *generation)
        {
            state.entries.remove(&id);
            state.dirty = true;
        }
    }

    /// Drops the entries of files neither committed nor seen for `clean_inactive`; `present`
    /// are the files a scan has just seen. A file idle for longer than `clean_inactive` but
    /// still there keeps its entry: dropping it would ship it again from its start at the next
    /// restart.
    pub fn clean(&self, present: &HashSet<FileId>) {
        let now = now();
        let cutoff = now.saturating_sub(self.clean_inactive.as_secs());
        let mut state = self.state.lock().expect("registry lock");
        for id in present {
            // Not worth a write of its own: the next scan after a restart sees the file again.
            if let Some(entry) = state.entries.get_mut(id) {
                entry.updated = now;
            }
        }
        let before = state.entries.len();
        state.entries.retain(|_, entry| entry.updated >= cutoff);
        if state.entries.len() != before {
            state.dirty = true;
        }
    }

    /// Writes the registry to disk if it changed since the last flush: a temporary file,
    /// fsync, rename over the old file, fsync of the folder (so the rename itself survives a
    /// power cut).
    pub fn flush(&self) -> Result<(), RegistryError> {
        let _writing = self.writing.lock().expect("registry write lock");
        let bytes = {
            let mut state = self.state.lock().expect("registry lock");
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            let entries: Vec<&Entry> = state.entries.values().collect();
            serde_json::to_vec(&serde_json::json!({
                "version": FORMAT_VERSION,
                "entries": entries,
            }))
            .expect("the registry serialises")
        };
        let path = self.folder.join(FILE_NAME);
        let written = write_atomically(&self.folder, &path, &bytes);
        if written.is_err() {
            // Written next time.
            self.state.lock().expect("registry lock").dirty = true;
        }
        written.map_err(|source| RegistryError::Write { path, source })
    }

    /// How many files the registry tracks.
    pub fn len(&self) -> usize {
        self.state.lock().expect("registry lock").entries.len()
    }

    /// Whether the registry tracks no file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn write_atomically(folder: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = folder.join(format!("{FILE_NAME}.tmp"));
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temp, path)?;
    File::open(folder)?.sync_all()
}

fn set_aside(file: &Path, why: &str) {
    let aside = file.with_extension("json.unreadable");
    tracing::error!(
        path = %file.display(),
        moved_to = %aside.display(),
        why,
        "the registry is unreadable; starting over (files are read again from their start)"
    );
    if let Err(err) = fs::rename(file, &aside) {
        tracing::error!(%err, "cannot move the unreadable registry aside");
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(ino: u64, offset: u64) -> Checkpoint {
        Checkpoint {
            id: FileId { dev: 1, ino },
            generation: Generation::default(),
            path: PathBuf::from(format!("/logs/{ino}.log")),
            offset,
        }
    }

    #[test]
    fn commits_survive_a_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let config = RegistryConfig {
            path: dir.path().join("registry"),
            ..RegistryConfig::default()
        };
        let registry = Registry::open(&config).unwrap();
        registry.commit(checkpoint(7, 100));
        registry.commit(checkpoint(7, 250));
        registry.commit(checkpoint(8, 5));
        registry.forget(FileId { dev: 1, ino: 8 }, &Generation::default());
        registry.flush().unwrap();
        let reopened = Registry::open(&config).unwrap();
        assert_eq!(
            reopened.lookup(FileId { dev: 1, ino: 7 }),
            Some(checkpoint(7, 250))
        );
        assert_eq!(reopened.len(), 1);
    }

    #[test]
    fn clean_inactive_counts_from_the_last_sighting() {
        let dir = tempfile::tempdir().unwrap();
        let config = RegistryConfig {
            path: dir.path().to_path_buf(),
            clean_inactive: Duration::from_secs(3600),
            ..RegistryConfig::default()
        };
        let registry = Registry::open(&config).unwrap();
        registry.commit(checkpoint(1, 10));
        registry.commit(checkpoint(2, 20));
        // Both committed a day ago; only file 1 is still there.
        for entry in registry.state.lock().unwrap().entries.values_mut() {
            entry.updated -= 24 * 3600;
        }
        let present = HashSet::from([FileId { dev: 1, ino: 1 }]);
        registry.clean(&present);
        assert_eq!(
            registry.lookup(FileId { dev: 1, ino: 1 }),
            Some(checkpoint(1, 10))
        );
        assert_eq!(registry.lookup(FileId { dev: 1, ino: 2 }), None);
        // Once gone, it is forgotten after `clean_inactive` from its last sighting.
        registry
            .state
            .lock()
            .unwrap()
            .entries
            .values_mut()
            .for_each(|e| e.updated -= 3601);
        registry.clean(&HashSet::new());
        assert!(registry.is_empty());
    }

    #[test]
    fn an_unreadable_registry_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let config = RegistryConfig {
            path: dir.path().to_path_buf(),
            ..RegistryConfig::default()
        };
        fs::write(dir.path().join(FILE_NAME), "{ not json").unwrap();
        let registry = Registry::open(&config).unwrap();
        assert!(registry.is_empty());
        assert!(dir.path().join("offsets.json.unreadable").exists());
    }
}
