//! The real agent stopped over and over while lines are written, as a node's agent is by
//! evictions, OOM kills and rollouts: SIGTERM (drained) and `kill -9` (not drained) at random
//! moments, lines written as a trickle and in bursts, with the disk queue (the shipped
//! production config) and with the memory queue. At the end every line must be in the output;
//! duplicates are allowed (at-least-once) and reported.
//!
//! The moments are drawn from a seed printed at the start; `SKIFF_CRASH_SEED=N` replays one.

#[path = "harvest_support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Agent, delivered, line, sequences, wait_until};

/// Lines written in all.
const LINES: u64 = 40_000;
/// Lines of a burst, written at once.
const BURST: u64 = 4_000;

/// A small generator (xorshift64*): enough to pick moments, and replayable from its seed.
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("SKIFF_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("crash loop: SKIFF_CRASH_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Writes [`LINES`] lines to `path`: bursts of [`BURST`] between trickles of a line every
/// millisecond or so, until done; sets `done` at the end.
fn write_lines(path: &Path, done: &AtomicBool) {
    let mut file = File::create(path).unwrap();
    let mut seq = 0;
    while seq < LINES {
        let burst = (seq + BURST).min(LINES);
        let mut text = String::new();
        while seq < burst {
            text.push_str(&line("app", seq));
            seq += 1;
        }
        file.write_all(text.as_bytes()).unwrap();
        let trickle = (seq + 1_000).min(LINES);
        while seq < trickle {
            file.write_all(line("app", seq).as_bytes()).unwrap();
            seq += 1;
            if seq % 4 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    done.store(true, Ordering::SeqCst);
}

fn crash_loop(queue: &str) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let state = dir.path().join("state");
    let inputs = format!(
        "  - {{ type: filestream, id: app, paths: ['{}/*.log'] }}",
        logs.display()
    );
    let queue = queue.replace("STATE", &state.display().to_string());
    let mut moments = Moments::new();
    let mut agent = Agent::start(&state, "inotify", &inputs, &queue);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, done) = (logs.join("app.log"), Arc::clone(&done));
        thread::spawn(move || write_lines(&path, &done))
    };
    let (mut terms, mut kills) = (0, 0);
    while !done.load(Ordering::SeqCst) || terms + kills < 6 {
        thread::sleep(Duration::from_millis(50 + moments.below(700)));
        if moments.below(2) == 0 {
            let status = agent.stop();
            assert!(status.success(), "SIGTERM: the agent exited with {status}");
            terms += 1;
        } else {
            agent.kill();
            kills += 1;
        }
        agent = agent.restart();
    }
    writer.join().unwrap();
    let all: BTreeSet<u64> = (0..LINES).collect();
    let output = agent.output.clone();
    let received = || {
        let (events, _) = delivered(&output);
        sequences(&events)
            .remove("app")
            .unwrap_or_default()
            .into_iter()
            .map(|(_, seq)| seq)
            .collect::<Vec<u64>>()
    };
    wait_until(
        || {
            let got: BTreeSet<u64> = received().into_iter().collect();
            let missing: Vec<&u64> = all.difference(&got).take(10).collect();
            format!(
                "every line after {terms} SIGTERMs and {kills} kill -9s; {} missing, the first {missing:?}; log:\n{}",
                all.len() - got.len(),
                agent
                    .log()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        },
        || received().into_iter().collect::<BTreeSet<u64>>() == all,
    );
    let status = agent.terminate();
    assert!(status.success(), "the last SIGTERM: {status}");
    let got = received();
    eprintln!(
        "crash loop ({queue}): {terms} SIGTERMs, {kills} kill -9s, {LINES} lines, {} duplicates",
        got.len() as u64 - LINES
    );
}

#[test]
fn disk_queue_loses_nothing_across_sigterm_and_kill_9() {
    crash_loop("queue: { disk: { path: STATE/queue, max_size: 256MiB, segment_size: 256KiB } }");
}

#[test]
fn memory_queue_loses_nothing_across_sigterm_and_kill_9() {
    crash_loop("queue: { mem: { events: 4096 } }");
}
