//! The harness of the agent's end-to-end tests: runs the real `skiff-agent` binary on a config
//! in a temporary folder, with the file output, and reads back what it delivered.
#![allow(dead_code)] // each test file uses part of it

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long anything may take before the test fails naming what hung.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The watch backends to test here: eBPF only as root (required under CI), in a mount
/// namespace of the calling thread's own (see [`skiff_tests::ebpf_sandbox`]).
pub fn backends() -> Vec<&'static str> {
    let mut backends = vec!["inotify", "poll"];
    if skiff_tests::ebpf_sandbox() {
        backends.insert(0, "ebpf");
    }
    backends
}

/// A running agent.
pub struct Agent {
    pub child: Child,
    pub state: PathBuf,
    pub output: PathBuf,
    pub log: PathBuf,
    config: PathBuf,
}

impl Agent {
    /// Starts the agent with `inputs` (YAML list items) and `extra` top-level YAML, its
    /// registry, output and log under `state`.
    pub fn start(state: &Path, backend: &str, inputs: &str, extra: &str) -> Self {
        Self::start_with(state, backend, inputs, extra, |_| {})
    }

    /// [`Agent::start`], adjusting the command with `adjust`.
    pub fn start_with(
        state: &Path,
        backend: &str,
        inputs: &str,
        extra: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        fs::create_dir_all(state).unwrap();
        let output = state.join("events.ndjson");
        let config = state.join("agent.yml");
        fs::write(
            &config,
            format!(
                "inputs:\n{inputs}\nwatch: {{ backend: {backend}, scan_frequency: 100ms, rescan: 5s, check_interval: 200ms }}\nregistry: {{ path: {registry}, flush: 200ms }}\noutput.file: {{ path: {output} }}\n{extra}\n",
                registry = state.join("registry").display(),
                output = output.display(),
            ),
        )
        .unwrap();
        Self::spawn(state, config, output, adjust)
    }

    /// Starts the agent on an existing `config`, adjusting the command with `adjust`.
    pub fn spawn(
        state: &Path,
        config: PathBuf,
        output: PathBuf,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let log = state.join("agent.log");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_skiff-agent"));
        command
            .args(["run", "--config"])
            .arg(&config)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr);
        adjust(&mut command);
        let child = command.spawn().expect("starting skiff-agent");
        Self {
            child,
            state: state.to_path_buf(),
            output,
            log,
            config,
        }
    }

    /// Starts the same agent again (after [`Agent::kill`]).
    pub fn restart(&self) -> Self {
        Self::spawn(
            &self.state,
            self.config.clone(),
            self.output.clone(),
            |_| {},
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.stop()
    }

    /// SIGTERM, then waits for the exit; the agent can be [`Agent::restart`]ed after.
    pub fn stop(&mut self) -> ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the agent did not exit after SIGTERM; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the output file holds so far: the events, and how many lines were not JSON (a write
/// torn by `kill -9`).
pub fn delivered(output: &Path) -> (Vec<Value>, usize) {
    let text = fs::read(output).unwrap_or_default();
    let mut events = Vec::new();
    let mut torn = 0;
    for line in text.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(event) => events.push(event),
            Err(_) => torn += 1,
        }
    }
    (events, torn)
}

/// Which file a line came from (`log.file.device_id`, `log.file.inode`) and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
}

/// The lines of `events` written by [`line`], as `stream -> [(origin, sequence number)]` in
/// delivery order.
pub fn sequences(events: &[Value]) -> BTreeMap<String, Vec<(Origin, u64)>> {
    let mut streams: BTreeMap<String, Vec<(Origin, u64)>> = BTreeMap::new();
    for event in events {
        let Some(message) = event["message"].as_str() else {
            continue;
        };
        let mut words = message.split(' ');
        let (Some(stream), Some(seq)) = (words.next(), words.next()) else {
            continue;
        };
        let file = &event["log"]["file"];
        let number = |value: &Value| value.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        let origin = Origin {
            device: number(&file["device_id"]),
            inode: number(&file["inode"]),
            offset: event["log"]["offset"].as_u64().unwrap_or(0),
        };
        if let Ok(seq) = seq.parse() {
            streams
                .entry(stream.to_string())
                .or_default()
                .push((origin, seq));
        }
    }
    streams
}

/// Checks one stream's delivery: no sequence number twice, and in order within each file
/// (same device and inode, growing offsets; a smaller offset on the same inode is a new file
/// that reused it). Returns the sorted sequence numbers.
pub fn check_stream(stream: &str, delivered: &[(Origin, u64)]) -> Vec<u64> {
    let mut last: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    for &(origin, seq) in delivered {
        let key = (origin.device, origin.inode);
        if let Some(&(offset, previous)) = last.get(&key) {
            assert!(
                origin.offset <= offset || seq > previous,
                "{stream}: line {seq} (offset {}) delivered after line {previous} (offset {offset}) of the same file",
                origin.offset
            );
        }
        last.insert(key, (origin.offset, seq));
    }
    let mut seqs: Vec<u64> = delivered.iter().map(|&(_, seq)| seq).collect();
    seqs.sort_unstable();
    if let Some(pair) = seqs.windows(2).find(|pair| pair[0] == pair[1]) {
        panic!("{stream}: line {} delivered twice", pair[0]);
    }
    seqs
}

/// Line `seq` of `stream`, about 100 bytes, newline included.
pub fn line(stream: &str, seq: u64) -> String {
    format!("{stream} {seq:08} {}\n", "x".repeat(80))
}

/// Waits until `done` holds, polling; panics with `what()` after [`PATIENCE`].
pub fn wait_until(what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "timed out: {}", what());
        std::thread::sleep(Duration::from_millis(100));
    }
}
