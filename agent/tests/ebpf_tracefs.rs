//! Pins the fresh-machine failure of `cargo xtask test` (issue A): where tracefs was not yet
//! mounted, two eBPF watchers loading at once both mounted it, and the second failed with
//! `Tracefs { source: EBUSY }`. The kernel is the peer, so the test needs root (skipped
//! otherwise, except under CI).
//!
//! The fresh machine is made in a mount namespace of the test thread's own (see
//! [`skiff_tests::ebpf_sandbox`]): tracefs is unmounted there, never on the host, and what the
//! watchers mount there is checked not to reach the host.

use skiff_agent::watch::ebpf::EbpfWatcher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

/// The tracefs mount point the watch uses.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Watchers loading at once, in each round.
const WATCHERS: usize = 6;
/// Rounds of unmounting tracefs and racing the watchers: one round could pass by luck (one
/// watcher mounting before the others look).
const ROUNDS: usize = 4;

/// One line of a `mountinfo` file.
struct Mount {
    /// Unique across every mount namespace of the machine.
    id: u64,
    point: PathBuf,
    fstype: String,
}

/// The mounts of the mount namespace `mountinfo` (a `/proc/.../mountinfo` file) describes.
fn mounts(mountinfo: &str) -> Vec<Mount> {
    let text = std::fs::read_to_string(mountinfo).unwrap();
    text.lines()
        .map(|line| {
            // `id parent major:minor root point options [optional...] - fstype source ...`
            let (before, after) = line.split_once(" - ").expect("a mountinfo line");
            let fields: Vec<&str> = before.split(' ').collect();
            Mount {
                id: fields[0].parse().unwrap(),
                // Spaces are escaped as \040; the tracing mount points have none.
                point: PathBuf::from(fields[4]),
                fstype: after.split(' ').next().unwrap().to_string(),
            }
        })
        .collect()
}

/// This thread's tracefs mounts.
fn tracefs_mounts() -> Vec<Mount> {
    mounts("/proc/thread-self/mountinfo")
        .into_iter()
        .filter(|m| m.fstype == "tracefs")
        .collect()
}

/// Unmounts tracefs, and debugfs (its `tracing/` folder automounts tracefs when looked at),
/// in this thread's mount namespace, as on a machine where nobody mounted them.
fn unmount_tracing() {
    let mut points: Vec<PathBuf> = mounts("/proc/thread-self/mountinfo")
        .into_iter()
        .filter(|m| m.fstype == "tracefs" || m.fstype == "debugfs")
        .map(|m| m.point)
        .collect();
    // Innermost first, and each point as often as it is mounted (mounts stack).
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            // EINVAL: already gone with a mount it was under.
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(err) => panic!(
                "unmounting {} in the test's namespace: {err}",
                point.display()
            ),
        }
    }
    assert!(tracefs_mounts().is_empty(), "tracefs is still mounted");
    assert!(!Path::new(TRACEFS).join("events").exists());
}

#[test]
fn watchers_loading_at_once_where_tracefs_is_not_mounted_all_attach() {
    // A thread left in the host's mount namespace, which reads the host's mounts at the end.
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let host = std::thread::spawn(move || {
        wait.recv().ok()?;
        Some(mounts("/proc/thread-self/mountinfo"))
    });
    if !skiff_tests::ebpf_sandbox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ours = Vec::new();
    for round in 0..ROUNDS {
        unmount_tracing();
        let start = Arc::new(Barrier::new(WATCHERS));
        // Spawned from this thread, so they share its mount namespace.
        let loads: Vec<_> = (0..WATCHERS)
            .map(|_| {
                let start = Arc::clone(&start);
                let folder = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    start.wait();
                    EbpfWatcher::load(&[folder]).map(drop)
                })
            })
            .collect();
        for (watcher, load) in loads.into_iter().enumerate() {
            if let Err(err) = load.join().expect("a watcher thread panicked") {
                panic!("round {round}: watcher {watcher} failed: {err:?}");
            }
        }
        // One mount, however many watchers raced to make it.
        let mounted = tracefs_mounts();
        let points: Vec<&Path> = mounted.iter().map(|m| m.point.as_path()).collect();
        assert_eq!(points, [Path::new(TRACEFS)], "round {round}");
        ours.extend(mounted.into_iter().map(|m| m.id));
    }

    // Mount ids are unique machine-wide: none of the test's is among the host's mounts.
    done.send(()).unwrap();
    let host: Vec<u64> = host
        .join()
        .unwrap()
        .expect("the host's mounts")
        .into_iter()
        .map(|m| m.id)
        .collect();
    let leaked: Vec<u64> = ours.into_iter().filter(|id| host.contains(id)).collect();
    assert!(leaked.is_empty(), "mounts {leaked:?} reached the host");
}
