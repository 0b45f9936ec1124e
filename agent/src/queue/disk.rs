//! The disk queue's storage: numbered records in segment files, and one durable cursor per
//! output.
//!
//! A record is `seq: u64, len: u32, crc32: u32` (big-endian) and `len` bytes of JSON (the
//! batch's events). Appends are fsynced before they count. A crash can leave a torn record at
//! the end of the last segment: at open, everything from the first record whose length runs
//! past the file's end or whose checksum fails is cut off, and that batch, never acknowledged
//! as stored, is read again from its file. Segments are named after their first record's
//! number, and deleted once every output's cursor is past them.

use crate::process::Event;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 16;
const CURSORS: &str = "cursors.json";

/// Where a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The segment, by its first record's number.
    pub segment: u64,
    /// The payload's offset in the segment.
    pub offset: u64,
    /// The payload's length.
    pub len: u32,
}

/// A record found when the store was opened.
#[derive(Debug)]
pub struct Recovered {
    pub seq: u64,
    pub location: Location,
}

/// The segment files of one disk queue.
pub struct DiskStore {
    dir: PathBuf,
    segment_size: u64,
    /// First record number → file length, oldest first.
    segments: BTreeMap<u64, u64>,
    /// The segment appended to, open.
    current: Option<(u64, File)>,
    /// Bytes of every segment together.
    total: u64,
}

impl DiskStore {
    /// Opens (creates) the queue folder: recovers the records of every segment, cutting a torn
    /// tail, and reads the cursors.
    pub fn open(
        dir: &Path,
        segment_size: u64,
    ) -> io::Result<(Self, Vec<Recovered>, HashMap<String, u64>)> {
        fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "seg")
                && let Some(first) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
            {
                segments.insert(first, 0);
            }
        }
        let mut recovered = Vec::new();
        let mut total = 0;
        for (&first, len) in &mut segments {
            let path = segment_path(dir, first);
            let good = recover_segment(&path, first, &mut recovered)?;
            *len = good;
            total += good;
        }
        let cursors = match fs::read(dir.join(CURSORS)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {err}", dir.join(CURSORS).display()),
                )
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(err) => return Err(err),
        };
        Ok((
            Self {
                dir: dir.to_path_buf(),
                segment_size,
                segments,
                current: None,
                total,
            },
            recovered,
            cursors,
        ))
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.total
    }

    /// Appends record `seq` and fsyncs it.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<Location> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a batch over 4 GiB"))?;
        let full = self
            .current
            .as_ref()
            .is_some_and(|(first, _)| self.segments[first] >= self.segment_size);
        if full {
            self.current = None;
        }
        if self.current.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            self.segments.insert(seq, 0);
            self.current = Some((seq, file));
        }
        let (first, file) = self.current.as_mut().expect("opened above");
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&seq.to_be_bytes());
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        record.extend_from_slice(payload);
        file.write_all(&record)?;
        file.sync_data()?;
        let length = self.segments.get_mut(first).expect("current is a segment");
        let location = Location {
            segment: *first,
            offset: *length + HEADER as u64,
            len,
        };
        *length += record.len() as u64;
        self.total += record.len() as u64;
        Ok(location)
    }

    /// Reads the events of the record at `location`.
    pub fn read(&self, location: Location) -> io::Result<Vec<Event>> {
        let file = File::open(segment_path(&self.dir, location.segment))?;
        let mut payload = vec![0; location.len as usize];
        file.read_exact_at(&mut payload, location.offset)?;
        serde_json::from_slice(&payload)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
    }

    /// Deletes the segments whose records all come before `seq` (every output is past them).
    pub fn release_before(&mut self, seq: u64) -> io::Result<()> {
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for (i, &first) in firsts.iter().enumerate() {
            // A segment ends where the next begins; the last one ends at `seq` only when
            // nothing was appended after it, which the caller knows: it passes the next number.
            let end = firsts.get(i + 1).copied();
            let done = match end {
                Some(next) => next <= seq,
                None => false,
            };
            if !done {
                break;
            }
            fs::remove_file(segment_path(&self.dir, first))?;
            self.total -= self.segments.remove(&first).unwrap_or(0);
        }
        Ok(())
    }

    /// Deletes every segment: every record was delivered everywhere.
    pub fn release_all(&mut self) -> io::Result<()> {
        self.current = None;
        for first in std::mem::take(&mut self.segments).into_keys() {
            fs::remove_file(segment_path(&self.dir, first))?;
        }
        self.total = 0;
        Ok(())
    }

    /// Writes the cursors atomically (temporary file, fsync, rename).
    pub fn save_cursors(&self, cursors: &HashMap<String, u64>) -> io::Result<()> {
        let tmp = self.dir.join(format!("{CURSORS}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(cursors).expect("a map serialises"))?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(CURSORS))
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// Reads the records of one segment into `out`; cuts the file after the last whole one.
/// Returns the segment's length after that.
fn recover_segment(path: &Path, first: u64, out: &mut Vec<Recovered>) -> io::Result<u64> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let header = &bytes[at..at + HEADER];
        let seq = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
        let start = at + HEADER;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(Recovered {
            seq,
            location: Location {
                segment: first,
                offset: start as u64,
                len,
            },
        });
        at = start + len as usize;
    }
    if at < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            cut = bytes.len() - at,
            "disk queue: cutting a torn record left by a crash"
        );
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(at as u64)?;
    }
    Ok(at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([{ "n": n }])).unwrap()
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, recovered, cursors) = DiskStore::open(dir.path(), 64).unwrap();
        assert!(recovered.is_empty() && cursors.is_empty());
        for seq in 0..10 {
            store.append(seq, &events(seq)).unwrap();
        }
        let segments = store.segments.len();
        assert!(segments > 1, "64-byte segments roll over");
        // A crash in the middle of an append: half a record at the end of the last segment.
        let (&last, _) = store.segments.last_key_value().unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), last))
            .unwrap();
        file.write_all(&[0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]).unwrap();
        drop((store, file));

        let (store, recovered, _) = DiskStore::open(dir.path(), 64).unwrap();
        let seqs: Vec<u64> = recovered.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
        let fifth = store.read(recovered[5].location).unwrap();
        assert_eq!(fifth[0]["n"], 5);
    }

    #[test]
    fn consumed_segments_are_deleted_and_cursors_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _, _) = DiskStore::open(dir.path(), 64).unwrap();
        for seq in 0..10 {
            store.append(seq, &events(seq)).unwrap();
        }
        let before = store.size();
        store.release_before(5).unwrap();
        assert!(store.size() < before);
        let (first, _) = store.segments.first_key_value().unwrap();
        assert!(*first <= 5, "segment holding record 5 is kept");
        store
            .save_cursors(&HashMap::from([("kafka".to_string(), 5)]))
            .unwrap();
        store.release_all().unwrap();
        assert_eq!(store.size(), 0);
        let (_, recovered, cursors) = DiskStore::open(dir.path(), 64).unwrap();
        assert!(recovered.is_empty());
        assert_eq!(cursors["kafka"], 5);
    }
}
