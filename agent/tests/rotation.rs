//! The rotation torture suite, once per watch backend: writers at a high rate into several
//! files, rotated every way logs are rotated (rename every 100 ms, also of a symlink's target
//! in a folder no pattern names; every 500 ms for polling, which cannot see a file that keeps
//! its name for less than a scan period), while the real agent harvests them into the file
//! output; then every line is checked against what was written, by sequence number: every
//! line delivered, in order per file, no duplicates.
//! Copytruncate's inherent loss window (lines written between the copy and the truncation, and
//! lines not read before the truncation) is measured and printed, not hidden.

#[path = "harvest_support/mod.rs"]
mod support;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::{Agent, delivered, line, sequences, wait_until};

/// How long the rotating writers run.
const RUN: Duration = Duration::from_secs(3);
/// Lines per second per rotating writer (about 100 bytes each).
const RATE: u64 = 20_000;
/// Files created at once in the "many" scenario, and lines in each.
const MANY: usize = 1000;
const MANY_LINES: u64 = 20;

/// Writes lines of `stream` into `path` at [`RATE`] for [`RUN`], calling `rotate` every
/// `every` with the open file and returning the next one. Returns how many lines were written.
fn write_rotating(
    stream: &str,
    path: &Path,
    every: Duration,
    mut rotate: impl FnMut(File, u64) -> File,
) -> u64 {
    let mut file = File::create(path).unwrap();
    let started = Instant::now();
    let mut last_rotation = started;
    let mut rotations = 0;
    let mut seq = 0;
    while started.elapsed() < RUN {
        // Bursts of 1 ms worth of lines keep the rate without a sleep per line.
        let due = (started.elapsed().as_secs_f64() * RATE as f64) as u64;
        while seq < due {
            file.write_all(line(stream, seq).as_bytes()).unwrap();
            seq += 1;
        }
        if last_rotation.elapsed() >= every {
            rotations += 1;
            file = rotate(file, rotations);
            last_rotation = Instant::now();
        }
        thread::sleep(Duration::from_millis(1));
    }
    seq
}

fn inputs(dir: &Path) -> String {
    let mut yaml = String::new();
    for scenario in [
        "rename", "create", "truncate", "delete", "reuse", "links", "many",
    ] {
        yaml.push_str(&format!(
            "  - {{ type: filestream, id: {scenario}, paths: ['{}/{scenario}/*.log'], close: {{ removed: 300ms }} }}\n",
            dir.display()
        ));
    }
    yaml
}

/// One backend at a time: three agents and their writers at once would measure the 2-core
/// machine, not the agent.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One backend at a time: three debug-build agents and their writers at full rate on two
/// cores delay the agents by more than a rename generation lives (100 ms). The event backends
/// still harvest a generation renamed out of the glob before the agent opened it (by its new
/// name: see `rotation_renamed_away.rs`); this keeps the measurement about the agent.
static ONE_BACKEND_AT_A_TIME: Mutex<()> = Mutex::new(());

fn torture(backend: &str) {
    let _turn = ONE_BACKEND_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    for scenario in [
        "rename", "create", "truncate", "delete", "reuse", "links", "many", "real",
    ] {
        fs::create_dir_all(logs.join(scenario)).unwrap();
    }
    // Symlinks: two links in the watched folder to one file in a folder no pattern names, as
    // /var/log/containers/*.log link into /var/log/pods. Made before the agent starts: a new
    // symlink is found by a rescan, whatever the backend.
    let links = logs.join("links");
    let target = logs.join("real/target.log");
    File::create(&target).unwrap();
    std::os::unix::fs::symlink(&target, links.join("a.log")).unwrap();
    std::os::unix::fs::symlink(&target, links.join("b.log")).unwrap();
    let agent = Agent::start(&dir.path().join("state"), backend, &inputs(&logs), "");
    // The agent is up when its registry folder exists (created before the watch starts).
    wait_until(
        || format!("agent start; log:\n{}", agent.log()),
        || dir.path().join("state/registry").exists(),
    );
    thread::sleep(Duration::from_millis(500));

    // Polling sees a file only if it keeps a matching name for a whole scan period
    // (`scan_frequency`, 100 ms here): a file renamed away sooner is never seen, which no
    // amount of care in the engine can undo. So the poll backend gets rotations every
    // 500 ms, the event backends every 100 ms.
    let rotate_every = Duration::from_millis(if backend == "poll" { 500 } else { 100 });
    let expected: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let truncated_streams = ["truncate"];
    let mut writers = Vec::new();
    let spawn = |writers: &mut Vec<thread::JoinHandle<()>>,
                 name: &'static str,
                 work: Box<dyn FnOnce() -> Vec<(String, u64)> + Send>| {
        let expected = Arc::clone(&expected);
        writers.push(
            thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    // One scenario at a time (the lock is held while it writes): with all
                    // of them at full rate at once, the debug-build agent on two cores lags
                    // by seconds, and copytruncate's loss window grows with the lag.
                    let mut expected = expected.lock().unwrap();
                    let written = work();
                    expected.extend(written);
                })
                .unwrap(),
        );
    };

    // Rename rotation every 100 ms: app.log -> app.log.N (out of the glob), new app.log.
    let folder = logs.join("rename");
    spawn(
        &mut writers,
        "rename",
        Box::new(move || {
            let path = folder.join("app.log");
            let n = write_rotating("rename", &path, rotate_every, |_, n| {
                fs::rename(&path, folder.join(format!("app.log.{n}"))).unwrap();
                File::create(&path).unwrap()
            });
            vec![("rename".into(), n)]
        }),
    );
    // Rotation into a name the glob still matches: the rotated file must not be read twice.
    let folder = logs.join("create");
    spawn(
        &mut writers,
        "create",
        Box::new(move || {
            let path = folder.join("app.log");
            let n = write_rotating("create", &path, rotate_every, |_, n| {
                fs::rename(&path, folder.join(format!("app-{n}.log"))).unwrap();
                File::create(&path).unwrap()
            });
            vec![("create".into(), n)]
        }),
    );
    // copytruncate every 300 ms.
    let folder = logs.join("truncate");
    spawn(
        &mut writers,
        "truncate",
        Box::new(move || {
            let path = folder.join("app.log");
            let n = write_rotating("truncate", &path, Duration::from_millis(300), |file, n| {
                fs::copy(&path, folder.join(format!("app.log.{n}"))).unwrap();
                file.set_len(0).unwrap();
                // The writer's offset stays where it was (no O_APPEND): reopen as logrotate's
                // users must, at the start.
                OpenOptions::new().write(true).open(&path).unwrap()
            });
            vec![("truncate".into(), n)]
        }),
    );
    // Delete and recreate: each generation written, closed, deleted.
    let folder = logs.join("delete");
    spawn(
        &mut writers,
        "delete",
        Box::new(move || {
            let path = folder.join("app.log");
            let mut streams = Vec::new();
            for generation in 0..10 {
                let stream = format!("delete-{generation}");
                let mut file = File::create(&path).unwrap();
                for seq in 0..2000 {
                    file.write_all(line(&stream, seq).as_bytes()).unwrap();
                }
                drop(file);
                // Longer than the poll backend's scan, so every backend sees each generation.
                thread::sleep(Duration::from_millis(300));
                fs::remove_file(&path).unwrap();
                streams.push((stream, 2000));
            }
            streams
        }),
    );
    // Inode reuse: a file is read, deleted, closed by the agent; the next file (often on the
    // freed inode) must be read from its first byte.
    let folder = logs.join("reuse");
    let output = agent.output.clone();
    spawn(
        &mut writers,
        "reuse",
        Box::new(move || {
            let path = folder.join("app.log");
            let mut streams = Vec::new();
            let mut reused = 0;
            let mut previous_ino = None;
            for generation in 0..5 {
                let stream = format!("reuse-{generation}");
                fs::write(&path, (0..50).map(|s| line(&stream, s)).collect::<String>()).unwrap();
                let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
                reused += usize::from(previous_ino == Some(ino));
                previous_ino = Some(ino);
                streams.push((stream.clone(), 50));
                wait_until(
                    || format!("{stream} delivered before its deletion"),
                    || sequences(&delivered(&output).0).get(&stream).map(Vec::len) >= Some(50),
                );
                fs::remove_file(&path).unwrap();
                // close.removed is 300 ms: the agent lets go of the inode.
                thread::sleep(Duration::from_millis(800));
            }
            eprintln!("inode reuse: {reused} of 4 new files got the previous file's inode");
            streams
        }),
    );
    // The links' target, harvested once, rotated where it is: only a backend that watches
    // the target's folder sees each new target in time.
    spawn(
        &mut writers,
        "links",
        Box::new(move || {
            let n = write_rotating("links", &target, rotate_every, |_, n| {
                fs::rename(&target, target.with_extension(format!("log.{n}"))).unwrap();
                File::create(&target).unwrap()
            });
            vec![("links".into(), n)]
        }),
    );
    // 1,000 files at once.
    let folder = logs.join("many");
    spawn(
        &mut writers,
        "many",
        Box::new(move || {
            let mut streams = Vec::new();
            for n in 0..MANY {
                let stream = format!("many-{n}");
                let text: String = (0..MANY_LINES).map(|s| line(&stream, s)).collect();
                fs::write(folder.join(format!("{n}.log")), text).unwrap();
                streams.push((stream, MANY_LINES));
            }
            streams
        }),
    );
    for writer in writers {
        writer.join().expect("a writer panicked");
    }
    let expected = expected.lock().unwrap().clone();

    // Everything arrives: complete streams; for copytruncate, its last line.
    let progress = || {
        let got = sequences(&delivered(&agent.output).0);
        expected
            .iter()
            .filter_map(|(stream, n)| {
                let seqs = got.get(stream).map_or(&[][..], Vec::as_slice);
                let complete = if truncated_streams.contains(&stream.as_str()) {
                    seqs.iter().any(|&(_, seq)| seq == n - 1)
                } else {
                    seqs.len() as u64 >= *n
                };
                (!complete).then(|| format!("{stream}: {} of {n}", seqs.len()))
            })
            .collect::<Vec<_>>()
    };
    wait_until(
        || {
            format!(
                "{backend}: lines missing: {:?}\nagent log tail:\n{}",
                progress().into_iter().take(20).collect::<Vec<_>>(),
                tail(&agent.log())
            )
        },
        || progress().is_empty(),
    );
    let log = agent.log();
    let status = agent.terminate();
    assert!(status.success(), "{backend}: agent exit {status}");

    let (events, torn) = delivered(&dir.path().join("state/events.ndjson"));
    assert_eq!(torn, 0, "no torn line without a crash");
    let got = sequences(&events);
    let mut copytruncate_lost = 0;
    for (stream, n) in &expected {
        let seqs = support::check_stream(&format!("{backend}: {stream}"), &got[stream]);
        if truncated_streams.contains(&stream.as_str()) {
            copytruncate_lost = n - seqs.len() as u64;
        } else {
            assert_eq!(
                seqs,
                (0..*n).collect::<Vec<_>>(),
                "{backend}: {stream} incomplete"
            );
        }
    }
    let truncate_total = expected.iter().find(|(s, _)| s == "truncate").unwrap().1;
    eprintln!(
        "{backend}: {} events; copytruncate lost {copytruncate_lost} of {truncate_total} lines ({:.3} %) over {} truncations",
        events.len(),
        100.0 * copytruncate_lost as f64 / truncate_total as f64,
        RUN.as_millis() / 300
    );
    let lost_metric_lines = log.matches("file truncated (copytruncate)").count();
    assert!(
        lost_metric_lines > 0,
        "{backend}: truncations were not detected"
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn rotation_torture_ebpf() {
    if support::backends().contains(&"ebpf") {
        torture("ebpf");
    }
}

#[test]
fn rotation_torture_inotify() {
    torture("inotify");
}

#[test]
fn rotation_torture_poll() {
    torture("poll");
}
