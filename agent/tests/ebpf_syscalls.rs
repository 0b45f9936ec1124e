//! The eBPF watch's other syscalls and its in-kernel resolution of relative paths, against the
//! kernel of this machine (root needed; skipped otherwise, except under CI).

use skiff_agent::watch::FileId;
use skiff_agent::watch::ebpf::{EbpfEvent, EbpfWatcher};
use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::time::timeout;

/// How long an event may take from the syscall to the watcher (it takes microseconds).
const DEADLINE: Duration = Duration::from_secs(5);

async fn next(watcher: &mut EbpfWatcher, what: &str) -> EbpfEvent {
    timeout(DEADLINE, watcher.next())
        .await
        .unwrap_or_else(|_| panic!("no eBPF event for {what} within {DEADLINE:?}"))
        .expect("the eBPF reader thread stopped")
}

/// Runs `program args` in `dir`, as a short-lived process whose cwd is gone by the time user
/// space could look at /proc.
fn run_in(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?}");
}

/// `event` with its pid zeroed: the pid is the short-lived helper process's.
fn without_pid(event: EbpfEvent) -> EbpfEvent {
    match event {
        EbpfEvent::Renamed { from, to, .. } => EbpfEvent::Renamed { pid: 0, from, to },
        EbpfEvent::Unlinked { path, .. } => EbpfEvent::Unlinked { pid: 0, path },
        EbpfEvent::Truncated { path, .. } => EbpfEvent::Truncated { pid: 0, path },
        other => other,
    }
}

#[tokio::test]
async fn relative_renames_unlinks_and_truncates_are_resolved_in_the_kernel() {
    if !skiff_tests::ebpf_sandbox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("logs");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("app.log"), "line\n").unwrap();
    let mut watcher = EbpfWatcher::load(std::slice::from_ref(&watched)).unwrap();

    // `mv` inside the folder: both paths relative to the cwd.
    run_in(&watched, "mv", &["app.log", "app.log.1"]);
    assert_eq!(
        without_pid(next(&mut watcher, "mv").await),
        EbpfEvent::Renamed {
            pid: 0,
            from: watched.join("app.log"),
            to: watched.join("app.log.1"),
        }
    );

    // `truncate -s 0` opens the file (O_CREAT|O_WRONLY) and calls ftruncate(fd): the open is
    // resolved through the cwd, the ftruncate through the fd's dentry and its parent.
    run_in(&watched, "truncate", &["-s", "0", "app.log.1"]);
    let open = next(&mut watcher, "truncate's open").await;
    let EbpfEvent::Opened(opened) = open else {
        panic!("expected the open of app.log.1, got {open:?}");
    };
    assert_eq!(opened.path, watched.join("app.log.1"));
    assert_eq!(
        without_pid(next(&mut watcher, "ftruncate").await),
        EbpfEvent::Truncated {
            pid: 0,
            path: watched.join("app.log.1"),
        }
    );

    // `rm` inside the folder: unlinkat relative to the cwd.
    run_in(&watched, "rm", &["app.log.1"]);
    assert_eq!(
        without_pid(next(&mut watcher, "rm").await),
        EbpfEvent::Unlinked {
            pid: 0,
            path: watched.join("app.log.1"),
        }
    );

    // The same from the parent folder, with absolute paths: truncate(2) by path.
    let absolute = watched.join("b.log");
    std::fs::write(&absolute, "x\n").unwrap();
    let _ = next(&mut watcher, "the write of b.log").await;
    nix::unistd::truncate(&absolute, 0).unwrap();
    assert_eq!(
        without_pid(next(&mut watcher, "truncate(2)").await),
        EbpfEvent::Truncated {
            pid: 0,
            path: absolute.clone(),
        }
    );

    // Relative to a folder that is not watched: nothing.
    run_in(dir.path(), "touch", &["elsewhere.log"]);
    if let Ok(more) = timeout(Duration::from_millis(300), watcher.next()).await {
        panic!("unexpected event {more:?}");
    }
}

#[tokio::test]
async fn an_armed_file_reports_its_next_write_once() {
    if !skiff_tests::ebpf_sandbox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    // Opened for writing before the watch starts: only writes can be reported.
    let mut file = std::fs::File::create(&path).unwrap();
    let id = FileId::of(&file.metadata().unwrap());
    let mut watcher = EbpfWatcher::load(&[dir.path().to_path_buf()]).unwrap();
    let written = EbpfEvent::Written {
        pid: std::process::id(),
        file: id,
    };

    file.write_all(b"not armed yet\n").unwrap();
    assert!(watcher.arm(id));
    file.write_all(b"one\n").unwrap();
    file.write_all(b"two\n").unwrap();
    assert_eq!(next(&mut watcher, "write(2)").await, written);
    // Disarmed by the first write: the second one was not reported.
    if let Ok(more) = timeout(Duration::from_millis(300), watcher.next()).await {
        panic!("unexpected event {more:?}");
    }

    // The other write syscalls.
    assert!(watcher.arm(id));
    file.write_at(b"three\n", 8).unwrap();
    assert_eq!(next(&mut watcher, "pwrite64(2)").await, written);
    assert!(watcher.arm(id));
    let bytes = file
        .write_vectored(&[IoSlice::new(b"fo"), IoSlice::new(b"ur\n")])
        .unwrap();
    assert_eq!(bytes, 5, "one writev(2) of both slices");
    assert_eq!(next(&mut watcher, "writev(2)").await, written);

    // Another file in the folder, never armed: nothing.
    let mut other = std::fs::File::create(dir.path().join("other.log")).unwrap();
    let _ = next(&mut watcher, "the creation of other.log").await;
    other.write_all(b"unarmed\n").unwrap();
    if let Ok(more) = timeout(Duration::from_millis(300), watcher.next()).await {
        panic!("unexpected event {more:?}");
    }
}
