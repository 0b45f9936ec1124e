//! The disk queue's recovery (`queue::disk`): a segment file of any bytes, the last one (a torn
//! tail is cut) or an older one (damage is skipped), opens without a panic; every record it
//! recovers lies inside its segment and reads (as events, or as a payload that is not); and a
//! batch appended after the recovery is found again, whole, by the next open.
//!
//! The first byte chooses which segment the rest is; the seeds in the corpus start with it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_agent::queue::disk::{DiskStore, Recovery};
use std::io::ErrorKind;
use std::path::Path;

/// An empty segment after the fuzzed one, which makes the fuzzed one not the last.
const LATER_SEGMENT: u64 = 1 << 40;
const SEGMENT_SIZE: u64 = 1 << 20;
const BATCH: &[u8] = br#"[{"message":"appended after recovery"}]"#;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, segment)) = data.split_first() else {
        return;
    };
    // tmpfs where there is one: every append is fsynced.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    std::fs::write(dir.path().join(segment_name(0)), segment).unwrap();
    if mode & 1 == 1 {
        std::fs::write(dir.path().join(segment_name(LATER_SEGMENT)), b"").unwrap();
    }
    let (mut store, recovery) = match DiskStore::open(dir.path(), SEGMENT_SIZE) {
        Ok(opened) => opened,
        // A record numbered u64::MAX leaves no number for the next one.
        Err(err) if err.kind() == ErrorKind::InvalidData => return,
        Err(err) => panic!("open: {err}"),
    };
    check(dir.path(), &store, &recovery);
    let appended = match store.append(BATCH) {
        Ok(appended) => appended,
        // Record numbers run out only after a record numbered u64::MAX.
        Err(err) if err.kind() == ErrorKind::InvalidData => return,
        Err(err) => panic!("append after recovery: {err}"),
    };
    drop(store);
    let (store, reopened) = DiskStore::open(dir.path(), SEGMENT_SIZE).unwrap();
    check(dir.path(), &store, &reopened);
    let found = reopened
        .records
        .iter()
        .find(|record| record.seq == appended.0)
        .expect("the appended record is recovered");
    assert_eq!(found.location, appended.1);
    assert_eq!(store.read(found.location).unwrap().len(), 1);
});

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The records of `recovery` are in order, below the next number, inside their segments, and
/// readable: an error may only say that a payload (checksummed, but arbitrary) is no batch.
fn check(dir: &Path, store: &DiskStore, recovery: &Recovery) {
    let mut last = None;
    for record in &recovery.records {
        assert!(last < Some(record.seq), "records out of order");
        assert!(
            record.seq < recovery.next,
            "a record at or past the next number"
        );
        last = Some(record.seq);
        let location = record.location;
        let length = std::fs::metadata(dir.join(segment_name(location.segment)))
            .unwrap()
            .len();
        assert!(location.offset + u64::from(location.len) <= length);
        if let Err(err) = store.read(location) {
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        }
    }
}
