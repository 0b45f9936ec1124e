//! Finding the files to harvest: each input's [`PathsProvider`] (its glob patterns and
//! `exclude_files`; for the `kubernetes` input, also an [`Admission`]), and the rescans that
//! list them ([`Discovery`]).
//!
//! - A file is listed once per rescan however many paths reach it. A symlinked file is
//!   harvested under the link's name; events name its target, which is mapped back to the
//!   link, and the target's folder is watched too.
//! - `harvester_limit` caps the open files of an input: files beyond it wait in line, and an
//!   open file that reached its end makes room for the first of them.

use crate::config::FilestreamConfig;
use crate::watch::{FileId, folder_patterns};
use regex::Regex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One `filestream` input, validated and compiled.
#[derive(Debug)]
pub struct FileInput {
    pub(super) id: Arc<str>,
    /// Which files it harvests.
    paths: Box<dyn PathsProvider>,
    pub(super) ignore_older: Option<Duration>,
    pub(super) close_inactive: Duration,
    pub(super) close_removed: Duration,
    pub(super) max_bytes: usize,
    pub(super) harvester_limit: usize,
    pub(super) removed_budget: u64,
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
        Ok(Self {
            id: config.id.as_str().into(),
            paths: Box::new(Globs::build(&config.paths, &config.exclude_files)?),
            ignore_older: config.ignore_older,
            close_inactive: config.close.inactive,
            close_removed: config.close.removed,
            max_bytes: config.max_bytes,
            harvester_limit: config.harvester_limit,
            removed_budget: config.close.removed_budget,
        })
    }

    /// Harvests only the matching files `admission` admits, re-evaluated at every rescan.
    pub fn admitting(mut self, admission: Arc<dyn Admission>) -> Self {
        self.paths = Box::new(Admitted {
            paths: self.paths,
            admission,
        });
        self
    }

    /// The glob patterns of the files this input harvests.
    pub fn patterns(&self) -> &[String] {
        self.paths.patterns()
    }

    /// Whether `path` names a file this input harvests now.
    pub(super) fn matches(&self, path: &Path) -> bool {
        self.paths.matches(path)
    }

    /// Whether the file at `path`, which the patterns match, is harvested now.
    pub(super) fn includes(&self, path: &Path) -> bool {
        self.paths.includes(path)
    }
}

/// The files of one input (Vector's `paths_provider`): what a rescan lists, and what decides
/// whether a path an event names is one of them.
pub(super) trait PathsProvider: Send + std::fmt::Debug {
    /// The glob patterns of the files; the watch backends watch the folders they name.
    fn patterns(&self) -> &[String];
    /// The paths of the files now, as listed (symlinks not followed), in pattern order.
    fn paths(&self) -> Vec<PathBuf>;
    /// Whether `path` names one of the files.
    fn matches(&self, path: &Path) -> bool;
    /// Whether the file at `path`, which the patterns match, is one of them now (not excluded,
    /// admitted).
    fn includes(&self, path: &Path) -> bool;
    /// Changes whenever the answers may change without the file system changing: the engine
    /// notices it within one turn of its loop and rescans. Constant by default.
    fn version(&self) -> u64 {
        0
    }
}

/// The files matching glob patterns and none of the `exclude_files` regular expressions.
#[derive(Debug)]
struct Globs {
    patterns: Vec<String>,
    matchers: Vec<glob::Pattern>,
    exclude: Vec<Regex>,
}

impl Globs {
    fn build(patterns: &[String], exclude: &[String]) -> Result<Self, InputError> {
        let mut matchers = Vec::new();
        for pattern in patterns {
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
        let exclude = exclude
            .iter()
            .map(|pattern| {
                Regex::new(pattern).map_err(|source| InputError::Exclude {
                    pattern: pattern.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            patterns: patterns.to_vec(),
            matchers,
            exclude,
        })
    }
}

impl PathsProvider for Globs {
    fn patterns(&self) -> &[String] {
        &self.patterns
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.patterns
            .iter()
            .filter_map(|pattern| glob::glob(pattern).ok())
            .flat_map(|paths| paths.flatten())
            .filter(|path| self.includes(path))
            .collect()
    }

    fn matches(&self, path: &Path) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        self.matchers
            .iter()
            .any(|pattern| pattern.matches_path_with(path, options))
            && self.includes(path)
    }

    fn includes(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        !self.exclude.iter().any(|regex| regex.is_match(&text))
    }
}

/// Another input's files, those its [`Admission`] admits now.
#[derive(Debug)]
struct Admitted {
    paths: Box<dyn PathsProvider>,
    admission: Arc<dyn Admission>,
}

impl PathsProvider for Admitted {
    fn patterns(&self) -> &[String] {
        self.paths.patterns()
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = self.paths.paths();
        paths.retain(|path| self.admission.admits(path));
        paths
    }

    fn matches(&self, path: &Path) -> bool {
        self.paths.matches(path) && self.admission.admits(path)
    }

    fn includes(&self, path: &Path) -> bool {
        self.paths.includes(path) && self.admission.admits(path)
    }

    fn version(&self) -> u64 {
        self.admission.version()
    }
}

/// A regular file a rescan found.
pub(super) struct Found {
    pub input: usize,
    pub path: PathBuf,
    pub meta: Metadata,
}

/// What a rescan found.
pub(super) struct Scan {
    /// Every file once, under the first path that reached it.
    pub files: Vec<Found>,
    /// Their identities.
    pub seen: HashSet<FileId>,
    /// The folders the backend should watch (when asked for).
    pub folders: Vec<PathBuf>,
}

/// Every input's files: the rescans, the paths events name, and the lines of files waiting for
/// their input's `harvester_limit`.
pub(super) struct Discovery {
    inputs: Vec<FileInput>,
    /// Each input's [`PathsProvider::version`] at the last rescan.
    versions: Vec<u64>,
    /// Canonical paths of symlinked files, to the watched path: events name the target.
    aliases: HashMap<PathBuf, PathBuf>,
    /// Files beyond an input's `harvester_limit`, per input.
    waiting: Vec<VecDeque<PathBuf>>,
    /// Files that failed to open, logged once each.
    unreadable: HashSet<PathBuf>,
}

impl Discovery {
    pub(super) fn new(inputs: Vec<FileInput>) -> Self {
        Self {
            versions: vec![0; inputs.len()],
            waiting: inputs.iter().map(|_| VecDeque::new()).collect(),
            inputs,
            aliases: HashMap::new(),
            unreadable: HashSet::new(),
        }
    }

    /// The inputs, by index.
    pub(super) fn inputs(&self) -> &[FileInput] {
        &self.inputs
    }

    /// The first input that harvests the file at `path`.
    pub(super) fn input_of(&self, path: &Path) -> Option<usize> {
        self.inputs.iter().position(|input| input.matches(path))
    }

    /// The watched path of the file at `path`: the link, for a symlink's target.
    pub(super) fn resolve(&self, path: PathBuf) -> PathBuf {
        self.aliases.get(&path).cloned().unwrap_or(path)
    }

    /// Whether `path` (or the link to it, for a symlink's target, which events name while
    /// the patterns name the link) matches an input.
    pub(super) fn watched(&self, path: &Path) -> bool {
        self.input_of(self.aliases.get(path).map_or(path, PathBuf::as_path))
            .is_some()
    }

    /// Whether the folder at `path` may hold matching files (and need a watch of its own).
    pub(super) fn may_hold(&self, path: &Path) -> bool {
        self.inputs.iter().any(|input| {
            input.patterns().iter().any(|p| {
                folder_patterns(p).iter().any(|folder| {
                    glob::Pattern::new(folder).is_ok_and(|folder| folder.matches_path(path))
                })
            })
        })
    }

    /// Some input's files changed without the file system changing (an admission changed)
    /// since the last rescan.
    pub(super) fn changed(&self) -> bool {
        self.inputs
            .iter()
            .zip(&self.versions)
            .any(|(input, &version)| input.paths.version() != version)
    }

    /// Lists every input's files, and the folders to watch when `folders` is asked for.
    pub(super) fn scan(&mut self, folders: bool) -> Scan {
        for (input, version) in self.inputs.iter().zip(&mut self.versions) {
            // Read before the scan: a change during it triggers the next one.
            *version = input.paths.version();
        }
        let mut scan = Scan {
            files: Vec::new(),
            seen: HashSet::new(),
            folders: Vec::new(),
        };
        for (index, input) in self.inputs.iter().enumerate() {
            if folders {
                for pattern in input.patterns() {
                    for folder in folder_patterns(pattern) {
                        scan.folders
                            .extend(glob::glob(&folder).into_iter().flatten().flatten());
                    }
                }
            }
            for path in input.paths.paths() {
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
                        scan.folders.push(folder.to_path_buf());
                    }
                    self.aliases.insert(target, path.clone());
                }
                if scan.seen.insert(FileId::of(&meta)) {
                    scan.files.push(Found {
                        input: index,
                        path,
                        meta,
                    });
                }
            }
        }
        scan
    }

    /// Forgets the aliases and unreadable files whose paths are gone (after a rescan).
    pub(super) fn forget_gone(&mut self) {
        self.aliases.retain(|_, path| path.exists());
        self.unreadable.retain(|path| path.exists());
    }

    /// Whether the file at `path` must wait for its turn: it waits already, or input `input`
    /// has `harvester_limit` files open (`open` counts them), and then it is put in line.
    pub(super) fn must_wait(
        &mut self,
        input: usize,
        path: &Path,
        open: impl FnOnce() -> usize,
    ) -> bool {
        if self.waiting[input].iter().any(|waiting| waiting == path) {
            return true;
        }
        let limit = self.inputs[input].harvester_limit;
        if limit > 0 && open() >= limit {
            self.waiting[input].push_back(path.to_path_buf());
            return true;
        }
        false
    }

    /// The first file waiting for a turn of input `input`, out of the line.
    pub(super) fn next_waiting(&mut self, input: usize) -> Option<PathBuf> {
        self.waiting[input].pop_front()
    }

    /// Whether files wait for a turn of input `input`.
    pub(super) fn has_waiting(&self, input: usize) -> bool {
        !self.waiting[input].is_empty()
    }

    /// Whether `path` failed to open for the first time (since it last opened or went).
    pub(super) fn unreadable(&mut self, path: &Path) -> bool {
        self.unreadable.insert(path.to_path_buf())
    }

    /// `path` opened.
    pub(super) fn readable(&mut self, path: &Path) {
        self.unreadable.remove(path);
    }
}
