//! The disk queue's storage: numbered records in segment files, and one durable cursor per
//! output.
//!
//! A record is a 20-byte header, `magic: u32, seq: u64, len: u32, crc32: u32` (big-endian), and
//! `len` bytes of JSON (the batch's events); the checksum covers the sequence number, the length
//! and the payload, so a damaged header is seen like a damaged payload. Appends are fsynced
//! before they count.
//!
//! At open every segment is checked record by record. A crash can leave a torn record at the
//! end of the last segment: it is cut off, and that batch, never acknowledged as stored, is read
//! again from its file. Damage anywhere else (a bad sector, a bit flip) costs only the damaged
//! records: the scan looks for the next header whose magic and checksum hold and goes on from
//! there, and the numbers that are missing are reported as lost (they were committed when
//! stored, so their lines cannot be read again). Numbers must follow each other, from the
//! segment's name on: a record out of sequence is damage too.
//!
//! Segments are named after their first record's number, and deleted once every output's
//! cursor is past them. The cursors file also keeps the next record number, so that after a
//! fully drained queue (no segment left) numbering goes on where it was rather than restarting
//! below the cursors.

use crate::process::Event;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Marks the start of a record, so a scan can find the next one after damage. A payload cannot
/// hold a header that passes for a record: it is JSON, which never has a raw byte below 0x20,
/// and a header's number and length start with zero bytes.
const MAGIC: u32 = u32::from_be_bytes(*b"SKQ2");
const HEADER: usize = 20;
const CURSORS: &str = "cursors.json";
const SEGMENT_EXTENSION: &str = "seg";

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

/// What [`DiskStore::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The intact records, in order (numbers may have gaps where records were damaged).
    pub records: Vec<Recovered>,
    /// Each output's saved cursor: the number of the next record it must send.
    pub cursors: HashMap<String, u64>,
    /// The number the next appended record gets.
    pub next: u64,
    /// Damaged records: bytes skipped in segments other than a torn tail.
    pub damaged_bytes: u64,
}

/// The cursors file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedCursors {
    /// The number the next appended record gets.
    next: u64,
    /// Per output, the number of the next record it must send.
    outputs: HashMap<String, u64>,
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
    /// The number the next appended record gets.
    next: u64,
}

impl DiskStore {
    /// Opens (creates) the queue folder: recovers the records of every segment (see the module
    /// docs) and reads the cursors.
    pub fn open(dir: &Path, segment_size: u64) -> io::Result<(Self, Recovery)> {
        fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == SEGMENT_EXTENSION)
                && let Some(first) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
            {
                segments.insert(first, 0);
            }
        }
        let mut recovery = Recovery::default();
        let mut total = 0;
        let last = segments.keys().next_back().copied();
        for (&first, len) in &mut segments {
            let path = segment_path(dir, first);
            let scan = recover_segment(&path, first, Some(first) == last, &mut recovery.records)?;
            recovery.damaged_bytes += scan.damaged;
            *len = scan.length;
            total += scan.length;
        }
        let saved = read_cursors(&dir.join(CURSORS))?;
        // After the last record, and never below a cursor: a drained queue has no segment left,
        // and numbers restarting at 0 would be behind every output's cursor (never sent).
        let after_records = match recovery.records.last() {
            Some(record) => next_seq(record.seq)?,
            None => segments.keys().next_back().copied().unwrap_or(0),
        };
        recovery.next = saved
            .outputs
            .values()
            .copied()
            .chain([saved.next, after_records])
            .max()
            .unwrap_or(0);
        recovery.cursors = saved.outputs;
        let store = Self {
            dir: dir.to_path_buf(),
            segment_size,
            segments,
            current: None,
            total,
            next: recovery.next,
        };
        Ok((store, recovery))
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.total
    }

    /// Appends the next record and fsyncs it; returns its number and where it is.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<(u64, Location)> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a batch over 4 GiB"))?;
        let seq = self.next;
        let after = next_seq(seq)?;
        let full = self
            .current
            .as_ref()
            .is_some_and(|(first, _)| self.segments.get(first).copied() >= Some(self.segment_size));
        if full {
            self.current = None;
        }
        let (first, file) = match &mut self.current {
            Some((first, file)) => (*first, file),
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(segment_path(&self.dir, seq))?;
                // The new file's name must survive a crash too.
                sync_folder(&self.dir)?;
                self.segments.insert(seq, 0);
                let (first, file) = self.current.insert((seq, file));
                (*first, file)
            }
        };
        let record = encode_record(seq, payload, len);
        file.write_all(&record)?;
        file.sync_data()?;
        let length = self.segments.entry(first).or_insert(0);
        let location = Location {
            segment: first,
            offset: *length + HEADER as u64,
            len,
        };
        *length += record.len() as u64;
        self.total += record.len() as u64;
        self.next = after;
        Ok((seq, location))
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
    /// A segment ends where the next begins; the last one ends at the next number to append, so
    /// a record appended but not yet known to the caller keeps its segment.
    pub fn release_before(&mut self, seq: u64) -> io::Result<()> {
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for (i, &first) in firsts.iter().enumerate() {
            let end = firsts.get(i + 1).copied().unwrap_or(self.next);
            if end > seq {
                break;
            }
            if self
                .current
                .as_ref()
                .is_some_and(|(open, _)| *open == first)
            {
                self.current = None;
            }
            fs::remove_file(segment_path(&self.dir, first))?;
            self.total -= self.segments.remove(&first).unwrap_or(0);
        }
        Ok(())
    }

    /// Writes the cursors and the next record number atomically (temporary file, fsync,
    /// rename, fsync of the folder so the rename itself survives a power cut).
    pub fn save_cursors(&self, cursors: &HashMap<String, u64>) -> io::Result<()> {
        let saved = SavedCursors {
            next: self.next,
            outputs: cursors.clone(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!("{CURSORS}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(CURSORS))?;
        sync_folder(&self.dir)
    }
}

fn sync_folder(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The number after `seq`; running out of numbers is an error, never a wrap to 0 (which would
/// reopen segment 0 and sit behind every cursor).
fn next_seq(seq: u64) -> io::Result<u64> {
    seq.checked_add(1).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "disk queue record numbers exhausted",
        )
    })
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEGMENT_EXTENSION}"))
}

/// Reads the cursors file. One that does not parse is set aside: every output then starts at
/// the oldest record kept (duplicates, never loss), rather than the agent refusing to start.
fn read_cursors(path: &Path) -> io::Result<SavedCursors> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(SavedCursors::default()),
        Err(err) => return Err(err),
    };
    match serde_json::from_slice(&bytes) {
        Ok(saved) => Ok(saved),
        Err(err) => {
            let aside = path.with_extension("json.unreadable");
            tracing::error!(
                path = %path.display(),
                moved_to = %aside.display(),
                %err,
                "disk queue: the cursors are unreadable; every output starts at the oldest batch kept"
            );
            fs::rename(path, &aside)?;
            Ok(SavedCursors::default())
        }
    }
}

fn checksum(seq: u64, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_be_bytes());
    hasher.update(&len.to_be_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn encode_record(seq: u64, payload: &[u8], len: u32) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&MAGIC.to_be_bytes());
    record.extend_from_slice(&seq.to_be_bytes());
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(&checksum(seq, len, payload).to_be_bytes());
    record.extend_from_slice(payload);
    record
}

/// An intact record at `at` in `bytes`: its number and payload length. A payload with a byte
/// below 0x20 cannot be one (JSON has none): such a candidate is turned down before its
/// checksum, so a scan over damage stays linear. (Without that, back-to-back headers of a
/// large length had the scan checksum megabytes at every byte: 23 s for a 2 MiB segment,
/// found by the `disk_segment` fuzz target.)
fn decode_record(bytes: &[u8], at: usize, controls: &mut ControlBytes) -> Option<(u64, u32)> {
    let header = bytes.get(at..at + HEADER)?;
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if word(0) != MAGIC {
        return None;
    }
    let seq = (u64::from(word(4)) << 32) | u64::from(word(8));
    let len = word(12);
    let crc = word(16);
    let start = at + HEADER;
    let payload = bytes.get(start..start + len as usize)?;
    if controls.first_from(bytes, start) < start + payload.len() {
        return None;
    }
    (checksum(seq, len, payload) == crc).then_some((seq, len))
}

/// Where the next byte below 0x20 is. Asked with positions that only grow, it only scans
/// forward: every byte of a segment is looked at once.
#[derive(Default)]
struct ControlBytes {
    next: usize,
}

impl ControlBytes {
    /// The position of the first byte below 0x20 at or after `from` (`bytes.len()` if none).
    fn first_from(&mut self, bytes: &[u8], from: usize) -> usize {
        if self.next < from {
            self.next = from;
        }
        while self.next < bytes.len() && bytes[self.next] >= 0x20 {
            self.next += 1;
        }
        self.next
    }
}

/// What the scan of one segment found.
struct SegmentScan {
    /// The segment's length once a torn tail is cut.
    length: u64,
    /// Bytes of damaged records skipped (not counting a torn tail).
    damaged: u64,
}

/// Reads the intact records of one segment into `out` (see the module docs). In the last
/// segment, what follows the last intact record is a torn append and is cut off; elsewhere
/// nothing is cut, damaged bytes are skipped and counted.
fn recover_segment(
    path: &Path,
    first: u64,
    is_last: bool,
    out: &mut Vec<Recovered>,
) -> io::Result<SegmentScan> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut expected = first;
    let mut at = 0usize;
    // The end of the last intact record, and where damage began (if it did since).
    let mut intact_end = 0usize;
    let mut damaged = 0u64;
    let mut damage_from: Option<usize> = None;
    let mut controls = ControlBytes::default();
    while at < bytes.len() {
        match decode_record(&bytes, at, &mut controls) {
            // A later number is fine after damage (the records between are lost); an earlier
            // or repeated one is not a record of this queue's sequence.
            Some((seq, len)) if seq == expected || (damage_from.is_some() && seq > expected) => {
                if let Some(from) = damage_from.take() {
                    damaged += (at - from) as u64;
                    tracing::error!(
                        path = %path.display(),
                        offset = from,
                        bytes = at - from,
                        lost = seq - expected,
                        "disk queue: damaged records skipped; their batches are lost"
                    );
                }
                let start = at + HEADER;
                out.push(Recovered {
                    seq,
                    location: Location {
                        segment: first,
                        offset: start as u64,
                        len,
                    },
                });
                expected = next_seq(seq)?;
                at = start + len as usize;
                intact_end = at;
            }
            _ => {
                damage_from.get_or_insert(at);
                at += 1;
            }
        }
    }
    if let Some(from) = damage_from {
        if is_last {
            tracing::warn!(
                path = %path.display(),
                cut = bytes.len() - intact_end,
                "disk queue: cutting a torn record left by a crash"
            );
            OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(intact_end as u64)?;
            return Ok(SegmentScan {
                length: intact_end as u64,
                damaged,
            });
        }
        damaged += (bytes.len() - from) as u64;
        tracing::error!(
            path = %path.display(),
            offset = from,
            bytes = bytes.len() - from,
            "disk queue: damaged records at the end of a segment skipped; their batches are lost"
        );
    }
    Ok(SegmentScan {
        length: bytes.len() as u64,
        damaged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([{ "n": n }])).unwrap()
    }

    /// Record `seq` of the batch `events(seq)`, as an append writes it.
    fn record(seq: u64) -> Vec<u8> {
        let payload = events(seq);
        encode_record(seq, &payload, payload.len() as u32)
    }

    fn seqs(recovery: &Recovery) -> Vec<u64> {
        recovery.records.iter().map(|r| r.seq).collect()
    }

    fn filled(dir: &Path, records: u64) -> DiskStore {
        let (mut store, _) = DiskStore::open(dir, 64).unwrap();
        for n in 0..records {
            assert_eq!(store.append(&events(n)).unwrap().0, n);
        }
        store
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), 10);
        assert!(store.segments.len() > 1, "64-byte segments roll over");
        // A crash in the middle of an append: half a record at the end of the last segment.
        let (&last, &length) = store.segments.last_key_value().unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), last))
            .unwrap();
        file.write_all(&record(10)[..15]).unwrap();
        drop((store, file));

        let (store, recovery) = DiskStore::open(dir.path(), 64).unwrap();
        assert_eq!(seqs(&recovery), (0..10).collect::<Vec<_>>());
        assert_eq!(recovery.next, 10);
        assert_eq!(recovery.damaged_bytes, 0, "a torn tail is not damage");
        assert_eq!(store.segments[&last], length, "the torn tail is cut");
        let fifth = store.read(recovery.records[5].location).unwrap();
        assert_eq!(fifth[0]["n"], 5);
    }

    #[test]
    fn damage_in_a_middle_segment_costs_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = DiskStore::open(dir.path(), 1 << 20).unwrap();
        let mut locations = Vec::new();
        for n in 0..6 {
            locations.push(store.append(&events(n)).unwrap().1);
        }
        // Roll over so the damaged segment is not the last one.
        store.segment_size = 0;
        store.append(&events(6)).unwrap();
        drop(store);
        // One flipped bit in record 2's header (its number), one in record 4's payload.
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[locations[2].offset as usize - HEADER + 11] ^= 1;
        bytes[locations[4].offset as usize + 3] ^= 0x40;
        fs::write(&path, &bytes).unwrap();

        let (_, recovery) = DiskStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(seqs(&recovery), vec![0, 1, 3, 5, 6]);
        assert!(recovery.damaged_bytes > 0);
        assert_eq!(fs::read(&path).unwrap().len(), bytes.len(), "nothing cut");
    }

    #[test]
    fn records_out_of_sequence_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), 3);
        drop(store);
        // A whole, well-formed record with a number that does not follow, at the end.
        let path = segment_path(dir.path(), 0);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&record(1)).unwrap();
        drop(file);
        let (_, recovery) = DiskStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(seqs(&recovery), vec![0, 1, 2]);
    }

    #[test]
    fn numbering_goes_on_after_a_drained_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = filled(dir.path(), 10);
        store
            .save_cursors(&HashMap::from([("kafka".to_string(), 10)]))
            .unwrap();
        store.release_before(10).unwrap();
        assert_eq!(store.size(), 0, "every segment deleted, the open one too");
        assert!(store.segments.is_empty());
        drop(store);
        let (mut store, recovery) = DiskStore::open(dir.path(), 64).unwrap();
        assert!(recovery.records.is_empty());
        assert_eq!(recovery.cursors["kafka"], 10);
        assert_eq!(recovery.next, 10);
        assert_eq!(store.append(&events(10)).unwrap().0, 10);
    }

    #[test]
    fn a_segment_still_appended_to_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = filled(dir.path(), 3);
        // The caller knows of records 0..2 only; record 3 was just appended.
        store.release_before(2).unwrap();
        let (_, recovery) = DiskStore::open(dir.path(), 64).unwrap();
        assert!(seqs(&recovery).contains(&2), "{:?}", seqs(&recovery));
        drop(store);
    }

    #[test]
    fn unreadable_cursors_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), 3));
        fs::write(dir.path().join(CURSORS), "{ torn").unwrap();
        let (_, recovery) = DiskStore::open(dir.path(), 64).unwrap();
        assert!(recovery.cursors.is_empty());
        assert_eq!(recovery.next, 3);
        assert!(dir.path().join("cursors.json.unreadable").exists());
    }

    /// Back-to-back headers claiming 512 KiB each, over 1 MiB: a scan that checksummed every
    /// candidate would go over hundreds of gigabytes.
    #[test]
    fn a_segment_of_fake_headers_is_scanned_once() {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), 1));
        let mut fake = MAGIC.to_be_bytes().to_vec();
        fake.extend_from_slice(&1u64.to_be_bytes());
        fake.extend_from_slice(&(512u32 << 10).to_be_bytes());
        fake.extend_from_slice(&0u32.to_be_bytes());
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).unwrap();
        while bytes.len() < 1 << 20 {
            bytes.extend_from_slice(&fake);
        }
        // Not the last segment: its damage is skipped, not cut.
        fs::write(&path, &bytes).unwrap();
        fs::write(segment_path(dir.path(), 1), record(1)).unwrap();
        let (_, recovery) = DiskStore::open(dir.path(), 64).unwrap();
        assert_eq!(seqs(&recovery), vec![0, 1]);
    }

    #[test]
    fn numbers_do_not_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = DiskStore::open(dir.path(), 64).unwrap();
        store.next = u64::MAX;
        assert!(store.append(&events(0)).is_err());
    }
}
