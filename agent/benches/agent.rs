//! `cargo xtask bench agent`: the harvest hot loop, rotation detection, and idle cost.
//!
//! - criterion measures line splitting over 200-byte lines in memory (the baseline).
//! - harvest throughput, file → null output, 200-byte lines: one file through [`Harvester`],
//!   then 100 files through the whole engine (watch, identity, registry, batches over the
//!   bounded channel): MB/s, lines/s, CPU seconds per GB, peak RSS, and the ratio of the two.
//! - rotation detection latency per backend: from just before `rename()` + `open(O_CREAT)` to
//!   the engine's batch holding the new file's first line, p50/p99.
//! - idle cost per backend: CPU (percent of one core) and RSS growth with 10,000 idle watched
//!   files open, over one safety rescan period, each backend in a process of its own (memory
//!   the benchmarks before it freed would otherwise be reused and hide what the engine holds).
//!
//! The eBPF figures need root; without it they are left out (and said so).

use criterion::{Criterion, Throughput};
use skiff_agent::config::FilestreamConfig;
use skiff_agent::harvest::{Engine, EngineOptions, FileInput, Harvested, READ_BUDGET};
use skiff_agent::harvest::{Harvester, LineSplitter};
use skiff_agent::metrics::{FileMetrics, new_registry};
use skiff_agent::registry::{Registry, RegistryConfig};
use skiff_agent::watch::{self, BackendKind, WatchConfig};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Memory figures mean what they would in the agent's binary only with its allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LINE_LEN: usize = 200;
/// Rotations timed per event backend; polling detects at `scan_frequency`, so fewer.
const ROTATIONS: usize = 1000;
const POLL_ROTATIONS: usize = 100;
/// Idle files watched for the idle cost, and how long the idle window is: the default safety
/// rescan period, so that one rescan of every file is part of the cost.
const IDLE_FILES: usize = 10_000;
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// The poll backend's scan period while rotation latency is measured (its latency).
const FAST_SCAN: Duration = Duration::from_millis(100);
/// Set in the process that measures one backend's idle cost, to the backend's name.
const IDLE_BACKEND: &str = "SKIFF_BENCH_IDLE_BACKEND";

fn lines(count: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(count * LINE_LEN);
    for n in 0..count {
        let prefix = format!("{n:>10} ");
        data.extend_from_slice(prefix.as_bytes());
        data.extend(std::iter::repeat_n(b'x', LINE_LEN - prefix.len() - 1));
        data.push(b'\n');
    }
    data
}

fn split_lines(c: &mut Criterion) {
    let data = lines(50_000);
    let mut group = c.benchmark_group("split");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("200B_lines", |b| {
        b.iter(|| {
            let mut splitter = LineSplitter::at(0);
            let mut count = 0usize;
            // 64 KiB chunks, as reads arrive.
            for chunk in data.chunks(64 * 1024) {
                splitter.push(chunk, |_, line, _| count += line.len());
            }
            std::hint::black_box(count)
        })
    });
    group.finish();
}

/// Writes `total` bytes of 200-byte lines into `path`; returns the line count.
fn write_lines(path: &Path, total: usize) -> usize {
    let chunk = lines(50_000);
    let mut file = std::fs::File::create(path).expect("bench file");
    let repeats = total.div_ceil(chunk.len());
    for _ in 0..repeats {
        file.write_all(&chunk).expect("writing a bench file");
    }
    50_000 * repeats
}

/// Reads a 512 MiB file of 200-byte lines to its end through one [`Harvester`].
fn harvest_one_file() -> Vec<(&'static str, f64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.log");
    let expected = write_lines(&path, 512 << 20);
    let bytes = std::fs::metadata(&path).expect("stat").len() as f64;

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut harvester = Harvester::open(&path).expect("open");
    let mut batch = Vec::new();
    let mut count = 0usize;
    loop {
        batch.clear();
        if harvester.read_lines(&mut batch, READ_BUDGET).expect("read") == 0 {
            break;
        }
        count += batch.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    assert_eq!(count, expected, "every line read");
    vec![
        ("harvest_1_file_mb_per_s", bytes / seconds / 1e6),
        ("harvest_1_file_lines_per_s", count as f64 / seconds),
        ("harvest_1_file_cpu_s_per_gb", cpu / (bytes / 1e9)),
    ]
}

/// A running engine over `pattern` with `backend`, whose batches go to `on_batch` on a thread
/// of their own (the null output), which acknowledges each at once: its offsets are committed,
/// as the pipeline does, so rotated and deleted files are not kept pinned.
struct Running {
    stop: Arc<AtomicBool>,
    engine: Option<JoinHandle<()>>,
    consumer: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(
        pattern: &str,
        backend: BackendKind,
        scan_frequency: Duration,
        mut on_batch: impl FnMut(&Harvested) + Send + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let input: FilestreamConfig = serde_yaml::from_str(&format!(
            "{{ id: bench, paths: ['{pattern}'], close: {{ removed: 100ms }} }}"
        ))
        .expect("input config");
        let config = WatchConfig {
            backend,
            scan_frequency,
            ..WatchConfig::default()
        };
        let watch = watch::start(&config, &[pattern.to_string()]).expect("watch backend");
        let registry = Arc::new(
            Registry::open(&RegistryConfig {
                path: dir.path().join("registry"),
                ..RegistryConfig::default()
            })
            .expect("registry"),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let engine = Engine::new(
            vec![FileInput::build(&input).expect("input")],
            EngineOptions {
                rescan: watch.rescan,
                check_interval: watch.check_interval,
                events_on_entry: watch.events_on_entry,
            },
            watch.queue,
            watch.folders,
            Arc::clone(&registry),
            FileMetrics::register(&mut new_registry()),
            tx,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let engine = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || engine.run(&stop))
        };
        let consumer = std::thread::spawn(move || {
            while let Some(harvested) = rx.blocking_recv() {
                on_batch(&harvested);
                match harvested {
                    Harvested::Lines(batch) => registry.commit(batch.checkpoint),
                    Harvested::Deleted(checkpoint) => {
                        registry.forget(checkpoint.id, &checkpoint.generation)
                    }
                }
            }
        });
        Self {
            stop,
            engine: Some(engine),
            consumer: Some(consumer),
            _dir: dir,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(engine) = self.engine.take() {
            engine.join().expect("the engine panicked");
        }
        if let Some(consumer) = self.consumer.take() {
            consumer.join().expect("the consumer panicked");
        }
    }
}

fn line_count(harvested: &Harvested) -> usize {
    match harvested {
        Harvested::Lines(batch) => batch.lines.len(),
        Harvested::Deleted(_) => 0,
    }
}

/// Reads 100 files of 5 MiB each through the engine, file → null output.
fn harvest_hundred_files() -> Vec<(&'static str, f64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut expected = 0;
    for n in 0..100 {
        expected += write_lines(&dir.path().join(format!("{n}.log")), 5 << 20);
    }
    let bytes: u64 = (0..100)
        .map(|n| {
            std::fs::metadata(dir.path().join(format!("{n}.log")))
                .expect("stat")
                .len()
        })
        .sum();
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let running = {
        let counted = Arc::clone(&counted);
        Running::start(
            &format!("{}/*.log", dir.path().display()),
            BackendKind::Poll,
            FAST_SCAN,
            move |harvested| {
                counted.fetch_add(line_count(harvested), Ordering::Relaxed);
            },
        )
    };
    while counted.load(Ordering::Relaxed) < expected {
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    drop(running);
    let bytes = bytes as f64;
    vec![
        ("harvest_100_files_mb_per_s", bytes / seconds / 1e6),
        ("harvest_100_files_lines_per_s", expected as f64 / seconds),
        ("harvest_100_files_cpu_s_per_gb", cpu / (bytes / 1e9)),
    ]
}

/// p50 and p99 of rotation detection with `backend`: rename the file away, create the new one
/// with one line, time until the engine hands over that line.
fn rotation_latency(backend: BackendKind, rotations: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.log");
    std::fs::write(&path, "first\n").expect("first file");
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    let _running = Running::start(
        &format!("{}/*.log", dir.path().display()),
        backend,
        FAST_SCAN,
        move |harvested| {
            if let Harvested::Lines(batch) = harvested {
                for line in &batch.lines {
                    let _ = tx.send((Instant::now(), String::from_utf8_lossy(&line.bytes).into()));
                }
            }
        },
    );
    // The first file is found by the initial scan.
    while rx.recv().expect("engine running").1 != "first" {}
    let mut latencies = Vec::with_capacity(rotations);
    for n in 0..rotations {
        let rotated = dir.path().join("app.log.1");
        let started = Instant::now();
        std::fs::rename(&path, &rotated).expect("rename");
        let mut file = std::fs::File::create(&path).expect("create");
        let marker = format!("rotation {n}");
        file.write_all(format!("{marker}\n").as_bytes())
            .expect("write");
        drop(file);
        loop {
            let (arrived, line) = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{backend:?}: rotation {n} not seen in 30 s"));
            if line == marker {
                latencies.push(arrived.duration_since(started).as_secs_f64() * 1e3);
                break;
            }
        }
        std::fs::remove_file(&rotated).expect("remove the rotated file");
        // Writers rotate every few seconds at most; a pause keeps one rotation's closing
        // out of the next one's measurement.
        std::thread::sleep(Duration::from_millis(2));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.5), at(0.99))
}

/// CPU (percent of one core) and RSS growth (MB) of the engine with [`IDLE_FILES`] idle files,
/// with the default watch settings (the poll backend looks at its folder every second, and at
/// each idle file every `check_interval`).
fn idle_cost(backend: BackendKind) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    for n in 0..IDLE_FILES {
        std::fs::write(dir.path().join(format!("{n}.log")), "one line\n").expect("idle file");
    }
    let rss_before = rss_mb();
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let running = {
        let counted = Arc::clone(&counted);
        Running::start(
            &format!("{}/*.log", dir.path().display()),
            backend,
            WatchConfig::default().scan_frequency,
            move |harvested| {
                counted.fetch_add(line_count(harvested), Ordering::Relaxed);
            },
        )
    };
    while counted.load(Ordering::Relaxed) < IDLE_FILES {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the backoff of every file reach its idle maximum first.
    std::thread::sleep(Duration::from_secs(3));
    let cpu_before = cpu_seconds();
    std::thread::sleep(IDLE_WINDOW);
    let cpu = cpu_seconds() - cpu_before;
    let rss = rss_mb() - rss_before;
    drop(running);
    (100.0 * cpu / IDLE_WINDOW.as_secs_f64(), rss)
}

/// [`idle_cost`] of `backend` in a new process of this benchmark.
fn idle_cost_alone(backend: &str) -> (f64, f64) {
    let exe = std::env::current_exe().expect("the benchmark's path");
    let output = std::process::Command::new(exe)
        .env(IDLE_BACKEND, backend)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("the idle cost's process");
    assert!(
        output.status.success(),
        "idle cost of {backend}: {}",
        output.status
    );
    let text = String::from_utf8(output.stdout).expect("figures");
    let figures: Vec<f64> = text
        .split_whitespace()
        .map(|figure| figure.parse().expect("a number"))
        .collect();
    (figures[0], figures[1])
}

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let time = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    time(usage.user_time()) + time(usage.system_time())
}

/// Resident set size now, in MB.
fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm's resident pages");
    pages * 4096.0 / 1e6
}

/// Peak resident set size of the process so far, in MB.
fn peak_rss_mb() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    usage.max_rss() as f64 / 1e3
}

fn main() {
    // The eBPF figures' watch mounts tracefs where nobody had: in a mount namespace of the
    // bench's own, so it goes when the bench ends (the engine's threads and the idle-cost
    // child processes start from this thread and share it).
    if nix::unistd::geteuid().is_root() {
        skiff_tests::private_mount_namespace();
    }
    // 10,000 open files need more than the default soft limit of 1,024 descriptors.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("setrlimit");
    if let Ok(backend) = std::env::var(IDLE_BACKEND) {
        let backend: BackendKind = serde_yaml::from_str(&backend).expect("a backend's name");
        let (cpu, rss) = idle_cost(backend);
        println!("{cpu} {rss}");
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    split_lines(&mut criterion);
    criterion.final_summary();

    let mut figures = harvest_one_file();
    figures.push(("harvest_1_file_peak_rss_mb", peak_rss_mb()));
    let hundred = harvest_hundred_files();
    figures.push((
        "harvest_100_files_vs_1_file_throughput_ratio",
        hundred[0].1 / figures[0].1,
    ));
    figures.extend(hundred);
    figures.push(("harvest_peak_rss_mb", peak_rss_mb()));

    let mut backends = vec![
        (BackendKind::Inotify, "inotify", ROTATIONS),
        (BackendKind::Poll, "poll", POLL_ROTATIONS),
    ];
    if nix::unistd::geteuid().is_root() {
        backends.insert(0, (BackendKind::Ebpf, "ebpf", ROTATIONS));
    } else {
        eprintln!("not root: no eBPF figures");
    }
    for (backend, name, rotations) in backends {
        let (p50, p99) = rotation_latency(backend, rotations);
        let (cpu, rss) = idle_cost_alone(name);
        let metric = |what: &str| -> &'static str { format!("{name}_{what}").leak() };
        figures.extend([
            (metric("rotation_latency_p50_ms"), p50),
            (metric("rotation_latency_p99_ms"), p99),
            (metric("idle_10k_files_cpu_percent"), cpu),
            (metric("idle_10k_files_rss_mb"), rss),
        ]);
    }
    skiff_tests::bench::report(&figures);
}
