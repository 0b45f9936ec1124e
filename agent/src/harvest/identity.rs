//! What makes a file the same file across restarts: (device, inode) plus something that tells
//! apart two files that had the same inode one after the other.
//!
//! While a file exists its (device, inode) is unique, and the engine holds every file it reads
//! open, so a live inode cannot be reused under it. Across a restart or after a close it can:
//! a file is deleted, a new one gets its inode, and an offset recorded for the old one would
//! skip the new one's first bytes. So a recorded offset applies only if the file also has the
//! same birth time (`statx`'s `btime`, on ext4, xfs, btrfs, tmpfs) or, where the file system
//! records none, the same first bytes. The fingerprint grows with the file up to
//! [`FINGERPRINT_MAX`] bytes, so even a one-line file is recognised from its first byte, where
//! Filebeat and Vector need 1 KiB or a whole line before they can tell files apart.

use serde::{Deserialize, Serialize};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::FileExt;
use std::time::UNIX_EPOCH;

/// How many leading bytes the fingerprint covers at most.
pub const FINGERPRINT_MAX: u64 = 1024;

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `file`'s first `len` bytes (fewer if the file is shorter: then
    /// `len` is what was there).
    pub fn of(file: &File, len: u64) -> io::Result<Self> {
        let mut buffer = vec![0; len.min(FINGERPRINT_MAX) as usize];
        let mut filled = 0;
        while filled < buffer.len() {
            match file.read_at(&mut buffer[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Self {
            len: filled as u64,
            hash: fnv1a(&buffer[..filled]),
        })
    }

    /// Whether `file` starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        Ok(Self::of(file, self.len)? == *self)
    }
}

/// FNV-1a, 64 bits: stable across Rust releases (the registry outlives the binary), and the
/// input is at most 1 KiB.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A file's birth time as (seconds, nanoseconds) since the epoch, where the file system
/// records one.
pub fn birth(meta: &Metadata) -> Option<(i64, u32)> {
    let born = meta.created().ok()?;
    let since = born.duration_since(UNIX_EPOCH).ok()?;
    Some((since.as_secs() as i64, since.subsec_nanos()))
}

/// What tells this generation of an inode from earlier and later ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Birth time, where the file system records one.
    pub birth: Option<(i64, u32)>,
    /// The first bytes, up to [`FINGERPRINT_MAX`].
    pub fingerprint: Fingerprint,
}

impl Generation {
    /// Whether `file` (described by `meta`) is this generation: same birth time where both
    /// have one, else the same first bytes.
    pub fn matches(&self, file: &File, meta: &Metadata) -> io::Result<bool> {
        match (self.birth, birth(meta)) {
            (Some(recorded), Some(now)) => Ok(recorded == now),
            _ => self.fingerprint.matches(file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprint_grows_with_the_file_and_tells_files_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"first line\n").unwrap();
        let reader = File::open(&path).unwrap();
        let short = Fingerprint::of(&reader, 4096).unwrap();
        assert_eq!(short.len, 11);
        file.write_all(&[b'x'; 2000]).unwrap();
        assert!(
            short.matches(&reader).unwrap(),
            "a grown file is the same file"
        );
        assert_eq!(Fingerprint::of(&reader, 4096).unwrap().len, FINGERPRINT_MAX);

        // A new file at the same path with other first bytes is another file.
        std::fs::write(&path, "other line\n").unwrap();
        assert!(!short.matches(&File::open(&path).unwrap()).unwrap());
    }

    #[test]
    fn generation_prefers_the_birth_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "same\n").unwrap();
        let file = File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let generation = Generation {
            birth: birth(&meta),
            fingerprint: Fingerprint::of(&file, 1024).unwrap(),
        };
        assert!(generation.matches(&file, &meta).unwrap());
        if let Some((secs, nanos)) = generation.birth {
            // Same bytes, other birth: a new file that reused the inode.
            let reborn = Generation {
                birth: Some((secs - 1, nanos)),
                ..generation
            };
            assert!(!reborn.matches(&file, &meta).unwrap());
        }
    }
}
