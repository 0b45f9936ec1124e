//! The eBPF watch against the kernel of this machine: the peer is the kernel itself, so the test
//! needs root. Skipped when not root, except under CI, where a skip would pass for green.

use nix::fcntl::OFlag;
use skiff_agent::watch::ebpf::{EbpfEvent, EbpfWatcher};
use std::fs::File;
use std::time::Duration;
use tokio::time::timeout;

/// How long an event may take from `open` to the watcher (it takes microseconds).
const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn opens_under_the_watched_folder_arrive_and_others_do_not() {
    if !skiff_tests::ebpf_sandbox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("logs");
    // Shares the watched folder's name as a string prefix, but is not inside it.
    let sibling = dir.path().join("logs-old");
    std::fs::create_dir(&watched).unwrap();
    std::fs::create_dir(&sibling).unwrap();
    let mut watcher = EbpfWatcher::load(std::slice::from_ref(&watched)).unwrap();

    // Opened first: were it reported, its event would precede the watched file's in the ring.
    File::create(sibling.join("app.log")).unwrap();
    let inside = watched.join("app.log");
    File::create(&inside).unwrap();

    let event = timeout(DEADLINE, watcher.next())
        .await
        .expect("no eBPF event within the deadline")
        .expect("the eBPF reader thread stopped");
    let EbpfEvent::Opened(opened) = event else {
        panic!("expected the open of {}, got {event:?}", inside.display());
    };
    assert_eq!(opened.path, inside);
    assert_eq!(opened.pid, std::process::id());
    assert!(opened.flags.contains(OFlag::O_CREAT | OFlag::O_WRONLY));

    // Nothing else: the sibling's open was filtered in the kernel.
    if let Ok(more) = timeout(Duration::from_millis(300), watcher.next()).await {
        panic!("unexpected event {more:?}");
    }
}

#[tokio::test]
async fn a_burst_beyond_the_ring_is_counted_not_silently_lost() {
    if !skiff_tests::ebpf_sandbox() {
        return;
    }
    // More than the channel (1,024) and the ring (about 24,000 records of this path's length)
    // hold while nobody reads.
    const OPENS: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    File::create(&file).unwrap();
    let mut watcher = EbpfWatcher::load(&[dir.path().to_path_buf()]).unwrap();
    for _ in 0..OPENS {
        // Opens for writing: reads are filtered in the kernel.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
    }

    let (mut opened, mut lost) = (0, 0);
    while opened + lost < OPENS {
        match timeout(DEADLINE, watcher.next()).await {
            Ok(Some(EbpfEvent::Opened(event))) => {
                assert_eq!(event.path, file);
                opened += 1;
            }
            Ok(Some(EbpfEvent::Lost(count))) => lost += count,
            Ok(Some(other)) => panic!("unexpected event {other:?}"),
            Ok(None) => panic!("the eBPF reader thread stopped"),
            Err(_) => panic!("{opened} opens and {lost} lost reported of {OPENS}"),
        }
    }
    assert_eq!(opened + lost, OPENS);
    assert!(lost > 0, "the burst should have overflowed the ring");
}
