//! Kafka outages against the real broker and the real agent binary: the broker is stopped for
//! 30 s while lines keep being written, then started again, and every line must arrive (the
//! duplicates are counted and reported). Once with the memory queue, once with the disk queue
//! and the agent killed with SIGKILL in the middle of the outage.
//!
//! The shared Kafka peer is stopped through its pid file and started again with
//! `cargo xtask peers up --only kafka`; a guard does that even when the test fails, so the peer
//! is healthy again for the other tests.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use skiff_tests::{env, require_peer};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines written in all.
const LINES: u64 = 100_000;
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// How long everything may take to arrive once the broker is back.
const CATCH_UP: Duration = Duration::from_secs(300);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent is in the workspace")
        .to_path_buf()
}

/// Stops the shared Kafka peer, and starts it again when dropped (also when a test panics).
struct KafkaOutage {
    restarted: bool,
}

impl KafkaOutage {
    fn begin() -> Self {
        let pid_file = workspace_root().join("target/peers/kafka/kafka.pid");
        let pid: i32 = fs::read_to_string(&pid_file)
            .unwrap_or_else(|err| panic!("reading {}: {err}", pid_file.display()))
            .trim()
            .parse()
            .expect("a pid");
        // The peer leads its own process group (see xtask's `Ctx::spawn`).
        killpg(Pid::from_raw(pid), Signal::SIGTERM).expect("stopping kafka");
        let deadline = Instant::now() + Duration::from_secs(60);
        while kill(Pid::from_raw(pid), None).is_ok() && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "kafka did not stop within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("kafka stopped (pid {pid})");
        Self { restarted: false }
    }

    fn end(&mut self) {
        if self.restarted {
            return;
        }
        self.restarted = true;
        let status = Command::new("cargo")
            .args(["xtask", "peers", "up", "--only", "kafka"])
            .current_dir(workspace_root())
            .stdout(Stdio::null())
            .status()
            .expect("running cargo xtask peers up");
        assert!(status.success(), "restarting kafka failed: {status}");
        eprintln!("kafka started again");
    }
}

impl Drop for KafkaOutage {
    fn drop(&mut self) {
        self.end();
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// The agent binary on a config; SIGKILLed when dropped.
struct Agent {
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path, log: &Path) -> Self {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff-agent"))
            .args(["run", "--config"])
            .arg(config)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting skiff-agent");
        Self {
            child,
            config: config.to_path_buf(),
            log: log.to_path_buf(),
        }
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn restart(&mut self) {
        *self = Self::start(&self.config.clone(), &self.log.clone());
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How often each line number arrived in `topic`, from the beginning to the high watermarks.
/// `None` while the broker cannot answer.
fn delivered(brokers: &str, topic: &str) -> Option<BTreeMap<u64, u32>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in metadata.topics().first()?.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .ok()?;
        if high > low {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                .ok()?;
            ends.insert(partition.id(), high);
        }
    }
    let mut seen = BTreeMap::new();
    let mut remaining: i64 = ends.values().sum::<i64>()
        - assignment
            .elements()
            .iter()
            .map(|e| e.offset().to_raw().unwrap_or(0))
            .sum::<i64>();
    if remaining == 0 {
        return Some(seen);
    }
    consumer.assign(&assignment).ok()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while remaining > 0 && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        if message.offset() >= ends[&message.partition()] {
            continue;
        }
        remaining -= 1;
        let event: serde_json::Value = serde_json::from_slice(message.payload()?).ok()?;
        let line: u64 = event["message"].as_str()?.split(' ').nth(1)?.parse().ok()?;
        *seen.entry(line).or_insert(0) += 1;
    }
    (remaining == 0).then_some(seen)
}

/// Appends lines `range` to `path`, about `per_second` of them each second.
fn write_lines(path: &Path, range: std::ops::Range<u64>, per_second: u64) {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let started = Instant::now();
    for n in range.clone() {
        writeln!(file, "outage {n:08} {}", "x".repeat(100)).unwrap();
        let written = n - range.start + 1;
        if per_second > 0 && written.is_multiple_of(1000) {
            let due = Duration::from_secs_f64(written as f64 / per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    file.sync_all().unwrap();
}

/// One outage at a time: the tests of this file share the broker they stop.
static BROKER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_outage(queue: &str, disk_queue: Option<&Path>) {
    // The agent's default backend is eBPF as root, which may mount tracefs.
    skiff_tests::own_mounts();
    let kill_agent_midway = disk_queue.is_some();
    let brokers = require_peer!(env::KAFKA, "kafka");
    let _one_at_a_time = BROKER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("skiff-outage-{}-{nanos}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let log_file = logs.join("app.log");
    let config = dir.path().join("agent.yml");
    fs::write(
        &config,
        format!(
            "inputs:\n  - {{ type: filestream, id: app, paths: ['{logs}/*.log'] }}\n\
             registry: {{ path: {registry}, flush: 200ms }}\n\
             output.kafka: {{ hosts: ['{brokers}'], topic: {topic}, timeout: 5s }}\n{queue}\n",
            logs = logs.display(),
            registry = dir.path().join("registry").display(),
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&config, &dir.path().join("agent.log"));

    // Flowing first: a fifth of the lines arrive before the outage.
    write_lines(&log_file, 0..LINES / 5, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered(&brokers, &topic).map_or(0, |seen| seen.len() as u64) < LINES / 5 {
        assert!(
            Instant::now() < deadline,
            "the first lines did not arrive; agent log:\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let mut outage = KafkaOutage::begin();
    let started = Instant::now();
    let rest = LINES / 5..LINES;
    let per_second = (rest.end - rest.start) / OUTAGE.as_secs();
    if kill_agent_midway {
        let half = rest.start + (rest.end - rest.start) / 2;
        write_lines(&log_file, rest.start..half, per_second);
        agent.kill_9();
        eprintln!("agent killed with SIGKILL during the outage");
        agent.restart();
        write_lines(&log_file, half..rest.end, per_second);
    } else {
        write_lines(&log_file, rest, per_second);
    }
    if let Some(dir) = disk_queue {
        // Reading goes on during the outage: every line written lands in the disk queue.
        let wanted = (LINES - LINES / 5) * 100;
        let deadline = Instant::now() + Duration::from_secs(120);
        while segment_bytes(dir) < wanted {
            assert!(
                Instant::now() < deadline,
                "the disk queue holds {} bytes, not the {wanted} of the lines written during the outage; agent log:\n{}",
                segment_bytes(dir),
                agent.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if let Some(wait) = OUTAGE.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
    outage.end();

    let deadline = Instant::now() + CATCH_UP;
    let seen = loop {
        if let Some(seen) = delivered(&brokers, &topic)
            && seen.len() as u64 == LINES
        {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "not every line arrived within {CATCH_UP:?} of the broker's return; agent log:\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let unexpected: Vec<_> = seen.keys().filter(|&&n| n >= LINES).collect();
    assert!(
        unexpected.is_empty(),
        "lines never written arrived: {unexpected:?}"
    );
    let duplicates: u64 = seen.values().map(|&c| u64::from(c - 1)).sum();
    eprintln!(
        "{queue:?}, agent killed: {kill_agent_midway}: all {LINES} lines arrived, {duplicates} duplicates"
    );
}

/// Bytes in the disk queue's segment files.
fn segment_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn kafka_down_for_30s_with_the_memory_queue_loses_no_line() {
    run_outage("", None);
}

#[test]
fn kafka_down_for_30s_with_the_disk_queue_and_the_agent_killed_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    run_outage(
        &format!(
            "queue: {{ disk: {{ path: {}, max_size: 512MiB }} }}",
            queue.display()
        ),
        Some(&queue),
    );
}
