//! Finding the files to harvest.

pub mod ebpf;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A file's identity on this machine: it survives renames, unlike its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
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
                    let id = FileId {
                        dev: meta.dev(),
                        ino: meta.ino(),
                    };
                    found.entry(id).or_insert(path);
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(path = %path.display(), %err, "skipping"),
            }
        }
    }
    found
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
}
