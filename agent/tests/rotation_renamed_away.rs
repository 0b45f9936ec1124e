//! A file renamed out of the patterns before the agent opened it, once per watch backend.
//!
//! The agent is stopped (SIGSTOP) while a generation of `app.log` is created, written and
//! renamed to `app.log.2`, which `*.log` does not match, as a rotation does to a file the
//! agent had no time to open under load. The event backends saw the rename (eBPF's carries
//! both paths, inotify pairs `IN_MOVED_FROM` with `IN_MOVED_TO`): the agent harvests the file
//! by its new name, as a rotated file, once. The poll backend never saw the file under a
//! matching name, and documents that it misses it; it harvests it once only when the file is
//! renamed into a matching name. In every backend, that later rename does not make the file
//! read twice.

#[path = "harvest_support/mod.rs"]
mod support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::path::Path;
use support::{Agent, check_stream, delivered, line, sequences, wait_until};

/// Lines of each generation.
const LINES: u64 = 1000;

/// Writes generation `stream` of [`LINES`] lines to `path` at once.
fn write_generation(path: &Path, stream: &str) {
    let text: String = (0..LINES).map(|seq| line(stream, seq)).collect();
    fs::write(path, text).unwrap();
}

fn renamed_away(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    write_generation(&app, "first");
    let agent = Agent::start(
        &dir.path().join("state"),
        backend,
        &format!(
            "  - {{ type: filestream, id: away, paths: ['{}/*.log'], close: {{ removed: 300ms }} }}\n",
            logs.display()
        ),
        "",
    );
    let count = |stream: &str| {
        sequences(&delivered(&agent.output).0)
            .get(stream)
            .map_or(0, Vec::len) as u64
    };
    let log = &agent;
    let arrived = |stream: &'static str| {
        move || {
            format!(
                "{backend}: {stream} lines not delivered; log:\n{}",
                log.log()
            )
        }
    };
    wait_until(arrived("first"), || count("first") == LINES);

    // While the agent cannot run: `app.log` rotated, the next generation written and rotated
    // out of the glob before anyone opened it, and a third one written.
    let pid = Pid::from_raw(agent.pid());
    kill(pid, Signal::SIGSTOP).unwrap();
    fs::rename(&app, logs.join("app.log.1")).unwrap();
    write_generation(&app, "away");
    fs::rename(&app, logs.join("app.log.2")).unwrap();
    write_generation(&app, "after");
    kill(pid, Signal::SIGCONT).unwrap();

    wait_until(arrived("after"), || count("after") == LINES);
    if backend == "poll" {
        // Its scans never saw `app.log.2` under a matching name: documented, not harvested.
        assert_eq!(count("away"), 0, "poll: the file renamed away was read");
    } else {
        wait_until(arrived("away"), || count("away") == LINES);
    }

    // The file renamed into a matching name: harvested once (poll), not again (the others).
    fs::rename(logs.join("app.log.2"), logs.join("away-again.log")).unwrap();
    write_generation(&logs.join("last.log"), "last");
    wait_until(arrived("last"), || count("last") == LINES);
    wait_until(arrived("away"), || count("away") == LINES);

    let status = agent.terminate();
    assert!(status.success(), "{backend}: agent exit {status}");
    let got = sequences(&delivered(&dir.path().join("state/events.ndjson")).0);
    for stream in ["first", "away", "after", "last"] {
        let seqs = check_stream(&format!("{backend}: {stream}"), &got[stream]);
        assert_eq!(
            seqs,
            (0..LINES).collect::<Vec<_>>(),
            "{backend}: {stream} incomplete"
        );
    }
}

#[test]
fn renamed_away_ebpf() {
    if support::backends().contains(&"ebpf") {
        renamed_away("ebpf");
    }
}

#[test]
fn renamed_away_inotify() {
    renamed_away("inotify");
}

#[test]
fn renamed_away_poll() {
    renamed_away("poll");
}
