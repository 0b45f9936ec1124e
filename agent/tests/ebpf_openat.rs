//! The eBPF watch against the kernel of this machine: the peer is the kernel itself, so the test
//! needs root. Skipped when not root, except under CI, where a skip would pass for green.

use nix::fcntl::OFlag;
use skiff_agent::watch::ebpf::{EbpfEvent, EbpfWatcher};
use std::fs::File;
use std::time::Duration;
use tokio::time::timeout;

/// How long an event may take from `open` to the watcher (it takes microseconds).
const DEADLINE: Duration = Duration::from_secs(5);

/// Whether eBPF programs can be loaded here; panics under CI when they cannot.
fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !skiff_tests::in_ci(),
        "the eBPF tests need root, under CI too"
    );
    eprintln!("skipping: loading eBPF programs needs root");
    false
}

#[tokio::test]
async fn opens_under_the_watched_folder_arrive_and_others_do_not() {
    if !privileged() {
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
