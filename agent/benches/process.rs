//! `cargo xtask bench process`: the processing chain of a web server's container log,
//! cri → nginx parse → add_fields → geoip → user_agent → http, on generated access log lines
//! with realistic address and user-agent distributions.
//!
//! criterion measures the bare CRI parse and the whole chain over the same lines. Whole runs
//! then measure events/s per second of CPU of the chain up to each step, from `read` (only the
//! event of the line, as the harvester makes it) to the whole chain, over [`POOL_LINES`]
//! lines, and report the cost of every step per event, and the allocations (and bytes
//! allocated) per event up to each step. The stages take turns, [`ROUNDS`] times, and each
//! figure is the median of its rounds: the chain is bound by memory, so a neighbour's load
//! moves it by a third within minutes, and turns spread that over all stages alike. The whole
//! chain's rate relative to `read`, measured in the same run, is the figure to compare across
//! machines and busy hosts. Last, the agent's own binary reads [`AGENT_LINES`] of them with
//! and without the chain (`agent_*`): what a node pays, outputs and queue included. Needs the
//! `geoip` peer's databases (`cargo xtask bench process` starts it).

use criterion::{Criterion, Throughput};
use skiff_agent::harvest::Line;
use skiff_agent::harvest::READ_BUDGET;
use skiff_agent::process::parse::{ParserConfig, Parsers};
use skiff_agent::process::{Event, ProcessorConfig, Processors, Source, event_from_line};
use skiff_tests::env;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::path::Path;

/// Lines the whole runs go through, batch after batch, starting over at the end: so many
/// that a one-off address or user agent has left the caches (10,000 entries each) before it
/// comes again, as in a real log; a short set read over and over would find every one of
/// them cached after its first pass.
const POOL_LINES: usize = 400_000;
/// The first of them, which criterion's iterations read over and over (so its figures find
/// more in the caches than the whole runs do).
const CRITERION_LINES: usize = 20_000;
/// Batches read before a turn is timed, to warm the caches up.
const WARM_BATCHES: usize = 16;
/// Turns each stage of the chain takes.
const ROUNDS: usize = 5;
/// CPU seconds of one turn.
const ROUND_CPU_S: f64 = 0.5;

/// Events are trees of small maps and strings: with glibc's malloc, 60% of the CPU time went
/// to malloc/free (`malloc_consolidate`, `unlink_chunk`) in `perf`: the benchmark runs with
/// the allocator the agent's binary has (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// mimalloc, counting the allocations of each thread and their bytes: unlike the time an
/// event takes, how many allocations it costs and how much memory it touches do not change
/// with how busy the host is, and on a busy host most of the time goes to fetching the memory
/// of the events' small blocks.
struct Counting;

thread_local! {
    /// Allocations, bytes allocated.
    static ALLOCATED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn count_allocation(bytes: usize) {
    // Not counted while the thread is being torn down.
    let _ = ALLOCATED.try_with(|n| {
        let (count, total) = n.get();
        n.set((count + 1, total + bytes as u64));
    });
}

/// Allocations and bytes allocated so far by this thread.
fn allocated() -> (u64, u64) {
    ALLOCATED.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation(new_size);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

/// A small deterministic generator (xorshift64*): the same lines on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Zipf-like: low indexes far more often, as a few clients make most requests.
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as usize
    }
}

const USER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "kube-probe/1.30",
];

const PATHS: [&str; 6] = [
    "/api/users/{id}",
    "/api/users/{id}/orders/{hex}",
    "/api/products?page={id}",
    "/static/app.js",
    "/health",
    "/api/cart/{hex}/items",
];

/// CRI-framed nginx lines: 2,000 recurring public clients (skewed), 15% one-off public
/// addresses, 10% private ones (probes, sidecars); user agents skewed over real browsers,
/// with 5% unique strings (versions nobody else has).
fn access_log(count: usize) -> Vec<Line> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let clients: Vec<String> = (0..2_000)
        .map(|_| {
            format!(
                "{}.{}.{}.{}",
                [8, 31, 46, 81, 93, 104, 151, 185, 203, 212][rng.below(10)],
                rng.below(256),
                rng.below(256),
                1 + rng.below(254)
            )
        })
        .collect();
    let mut offset = 0;
    (0..count)
        .map(|n| {
            let client = match rng.below(100) {
                0..10 => format!("10.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254)),
                10..25 => format!("{}.{}.{}.{}", 1 + rng.below(223), rng.below(256), rng.below(256), 1 + rng.below(254)),
                _ => clients[rng.skewed(clients.len())].clone(),
            };
            let agent = match rng.below(100) {
                0..5 => format!("Mozilla/5.0 (X11; Linux x86_64) CustomApp/{}.{}", rng.below(1000), n),
                _ => USER_AGENTS[rng.skewed(USER_AGENTS.len())].to_string(),
            };
            let path = PATHS[rng.below(PATHS.len())]
                .replace("{id}", &rng.below(100_000).to_string())
                .replace("{hex}", &format!("{:016x}", rng.next()));
            let status = [200, 200, 200, 201, 204, 301, 404, 500][rng.below(8)];
            let text = format!(
                "2026-05-06T07:08:{:02}.{:09}Z stdout F {client} - - [06/May/2026:07:08:{:02} +0000] \"GET {path} HTTP/1.1\" {status} {} \"-\" \"{agent}\"",
                n % 60,
                n,
                n % 60,
                rng.below(50_000)
            );
            let line = Line {
                offset,
                bytes: text.into_bytes(),
                truncated: false,
            };
            offset += line.bytes.len() as u64 + 1;
            line
        })
        .collect()
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::with::singleton_map_recursive::deserialize(serde_yaml::Deserializer::from_str(text))
        .expect("valid YAML")
}

/// `lines` in batches as the harvester reads them, up to [`READ_BUDGET`] bytes each: events
/// leave for the outputs batch by batch, so the memory they use is reused, as in the agent.
fn batches(lines: &[Line]) -> Vec<&[Line]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (n, line) in lines.iter().enumerate() {
        bytes += line.bytes.len() + 1;
        if bytes > READ_BUDGET {
            batches.push(&lines[start..n]);
            (start, bytes) = (n, line.bytes.len() + 1);
        }
    }
    batches.push(&lines[start..]);
    batches
}

/// One pass of `lines` through `parsers` then `processors`, batch by batch; returns the
/// events kept. As in the agent (`Processing::push`), the events of each line go through the
/// processors as soon as the parsers emit them.
fn run(
    batches: &[&[Line]],
    parsers: &mut Parsers,
    processors: &Processors,
    out: &mut Vec<Event>,
) -> usize {
    let path = Path::new("/var/log/pods/shop_web-1_0b4c2a8e/nginx/0.log");
    let mut kept = 0;
    for batch in batches {
        out.clear();
        // As the pipeline does, once per batch (of one file).
        let source = Source::new(path, "node-1");
        for line in *batch {
            let start = out.len();
            parsers.push(event_from_line(line, &source), out);
            kept += out[start..]
                .iter_mut()
                .map(|event| processors.run(event))
                .filter(|kept| *kept)
                .count();
        }
    }
    kept
}

/// The chain one step at a time: every stage's configuration adds one parser or processor to
/// the stage before it, so the difference between two stages is the cost of that step.
const STAGES: [&str; 7] = [
    "read",
    "cri",
    "nginx",
    "add_fields",
    "geoip",
    "user_agent",
    "http",
];

/// The parsers and processors of the chain up to `stage` (an index of [`STAGES`]), as YAML
/// lists.
fn chain_yaml(stage: usize, city: &str, asn: &str) -> (String, String) {
    let parsers = ["{ container: { format: cri } }", "{ nginx: {} }"];
    let processors = [
        r#"{ add_fields: { target: "", fields: { service: { name: web }, environment: production } } }"#.to_string(),
        format!(r#"{{ geoip: {{ field: client.ip, database: "{city}", asn_database: "{asn}" }} }}"#),
        "{ user_agent: {} }".to_string(),
        "{ http: {} }".to_string(),
    ];
    (
        format!("[{}]", parsers[..stage.min(2)].join(", ")),
        format!("[{}]", processors[..stage.saturating_sub(2)].join(", ")),
    )
}

/// The parsers and processors of the chain up to `stage` (an index of [`STAGES`]).
fn chain(stage: usize, city: &str, asn: &str) -> (Parsers, Processors) {
    let (parsers, processors) = chain_yaml(stage, city, asn);
    let parsers: Vec<ParserConfig> = yaml(&parsers);
    let processors: Vec<ProcessorConfig> = yaml(&processors);
    (
        Parsers::build(&parsers).unwrap(),
        Processors::build(&processors).unwrap(),
    )
}

/// The whole chain in the agent's configuration: the parsers of the input (indented under
/// it), the processors at the top.
fn agent_chain_config(city: &str, asn: &str) -> String {
    let (parsers, processors) = chain_yaml(STAGES.len() - 1, city, asn);
    format!("    parsers: {parsers}\nprocessors: {processors}")
}

fn bench(
    c: &mut Criterion,
    lines: &[&[Line]],
    cri: &mut (Parsers, Processors),
    full: &mut (Parsers, Processors),
) {
    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Elements(
        lines.iter().map(|batch| batch.len() as u64).sum(),
    ));
    group.sample_size(20);
    let mut out = Vec::new();
    group.bench_function("cri_parse", |b| {
        b.iter(|| run(lines, &mut cri.0, &cri.1, &mut out))
    });
    group.bench_function("cri_nginx_fields_geoip_ua_http", |b| {
        b.iter(|| run(lines, &mut full.0, &full.1, &mut out))
    });
    group.finish();
}

/// What one stage of the chain costs.
struct Cost {
    events_per_core_s: f64,
    allocations_per_event: f64,
    bytes_allocated_per_event: f64,
}

/// Events per second of CPU time of this thread, over the batches of `pool` from `next` on
/// (wrapping around) that take at least [`ROUND_CPU_S`] of CPU, after [`WARM_BATCHES`] that
/// warm the caches up; and the allocations and bytes allocated per event.
fn cost(
    pool: &[&[Line]],
    next: &mut usize,
    parsers: &mut Parsers,
    processors: &Processors,
) -> Cost {
    let mut out = Vec::new();
    let mut take = |batches: usize| -> usize {
        (0..batches)
            .map(|_| {
                let batch = &pool[*next..*next + 1];
                *next = (*next + 1) % pool.len();
                run(batch, parsers, processors, &mut out)
            })
            .sum()
    };
    take(WARM_BATCHES);
    let start = thread_cpu_seconds();
    let (allocations, bytes) = allocated();
    let mut events = 0;
    while thread_cpu_seconds() - start < ROUND_CPU_S {
        events += take(WARM_BATCHES);
    }
    let events = events as f64;
    let per_event = |n: u64| n as f64 / events.max(1.0);
    let (allocations_now, bytes_now) = allocated();
    Cost {
        events_per_core_s: events / (thread_cpu_seconds() - start).max(1e-9),
        allocations_per_event: per_event(allocations_now - allocations),
        bytes_allocated_per_event: per_event(bytes_now - bytes),
    }
}

/// Lines the agent runs read.
const AGENT_LINES: usize = 200_000;

/// Events per CPU second of the agent's own process, every thread counted (harvest, parsers,
/// processors, queue, the file output's JSON and writes, registry commits), for `lines` as a
/// file that appears whole (renamed) in a folder the agent watches. `chain` is the processing
/// chain's configuration; without it the agent only reads (the baseline).
fn agent_run(lines: &[Line], chain: Option<&str>) -> f64 {
    let dir = tempfile::tempdir().expect("temporary folder");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs folder");
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        format!(
            "inputs:\n  - type: filestream\n    id: bench\n    paths: [{logs}/*.log]\n{chain}\n\
             watch: {{ backend: inotify }}\n\
             registry: {{ path: {dir}/registry, flush: 100ms }}\n\
             output.file: {{ path: {dir}/events.ndjson }}\n",
            logs = logs.display(),
            chain = chain.unwrap_or(""),
            dir = dir.path().display(),
        ),
    )
    .expect("agent config");
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_skiff-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting skiff-agent");
    let pid = agent.id();
    // One line first: once it is delivered, the agent is up and every start-up cost paid.
    let write = |name: &str, lines: &[Line]| {
        let mut text = String::new();
        for line in lines {
            text.push_str(std::str::from_utf8(&line.bytes).expect("generated lines are UTF-8"));
            text.push('\n');
        }
        skiff_tests::write_atomically(&logs.join(name), &text);
        text.len() as u64
    };
    let registry = dir.path().join("registry/offsets.json");
    let ready = write("ready.log", &lines[..1]);
    wait_for_offsets(&registry, ready);
    let start = skiff_tests::bench::cpu_seconds(pid);
    let size = write("access.log", lines);
    wait_for_offsets(&registry, ready + size);
    let cpu = skiff_tests::bench::cpu_seconds(pid) - start;
    agent.kill().expect("stopping skiff-agent");
    agent.wait().expect("skiff-agent exits");
    lines.len() as f64 / cpu.max(1e-9)
}

/// Waits until the offsets of the agent's registry add up to `total` bytes.
fn wait_for_offsets(registry: &Path, total: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let committed: u64 = std::fs::read(registry)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|registry| {
                let entries = registry["entries"].as_array()?.clone();
                Some(entries.iter().filter_map(|e| e["offset"].as_u64()).sum())
            })
            .unwrap_or(0);
        if committed == total {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent committed {committed} of {total} bytes in 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The round with the median rate, with that round's counts.
fn median(mut costs: Vec<Cost>) -> Cost {
    costs.sort_by(|a, b| a.events_per_core_s.total_cmp(&b.events_per_core_s));
    costs.swap_remove(costs.len() / 2)
}

fn thread_cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
        .expect("getrusage");
    let time = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    time(usage.user_time()) + time(usage.system_time())
}

fn main() {
    let (Some(city), Some(asn)) = (
        skiff_tests::peer(env::GEOIP_CITY, "geoip"),
        skiff_tests::peer(env::GEOIP_ASN, "geoip"),
    ) else {
        return;
    };
    let lines = access_log(POOL_LINES);
    let pool = batches(&lines);
    let mut criterion = Criterion::default().configure_from_args();
    bench(
        &mut criterion,
        &batches(&lines[..CRITERION_LINES]),
        &mut chain(1, &city, &asn),
        &mut chain(STAGES.len() - 1, &city, &asn),
    );
    criterion.final_summary();

    // Whole runs, the stages taking turns: events/s of the chain up to each stage, and what
    // each step costs per event (the difference to the stage before).
    let mut chains: Vec<_> = (0..STAGES.len())
        .map(|stage| chain(stage, &city, &asn))
        .collect();
    let mut rounds: Vec<Vec<Cost>> = (0..STAGES.len()).map(|_| Vec::new()).collect();
    let mut next = 0;
    for _ in 0..ROUNDS {
        for ((parsers, processors), costs) in chains.iter_mut().zip(&mut rounds) {
            costs.push(cost(&pool, &mut next, parsers, processors));
        }
    }
    let full_rounds: Vec<f64> = rounds[STAGES.len() - 1]
        .iter()
        .map(|c| c.events_per_core_s)
        .collect();
    let costs: Vec<Cost> = rounds.into_iter().map(median).collect();
    let rates: Vec<f64> = costs.iter().map(|c| c.events_per_core_s).collect();
    let mut figures = Vec::new();
    for (stage, cost) in STAGES.iter().zip(&costs) {
        figures.push((
            format!("upto_{stage}_events_per_core_s"),
            cost.events_per_core_s,
        ));
        figures.push((
            format!("upto_{stage}_allocations_per_event"),
            cost.allocations_per_event,
        ));
        figures.push((
            format!("upto_{stage}_bytes_allocated_per_event"),
            cost.bytes_allocated_per_event,
        ));
    }
    for (i, pair) in rates.windows(2).enumerate() {
        let step_ns = (1e9 / pair[1] - 1e9 / pair[0]).max(0.0);
        figures.push((format!("step_{}_ns_per_event", STAGES[i + 1]), step_ns));
    }
    // The agent itself, reading the same kind of log with and without the chain.
    let agent_lines = &lines[..AGENT_LINES];
    let agent_read = agent_run(agent_lines, None);
    let agent_chain = agent_run(agent_lines, Some(&agent_chain_config(&city, &asn)));
    figures.push(("agent_read_events_per_core_s".to_string(), agent_read));
    figures.push(("agent_chain_events_per_core_s".to_string(), agent_chain));
    figures.push((
        "agent_chain_vs_read_ratio".to_string(),
        agent_chain / agent_read,
    ));
    let (read, full) = (rates[0], rates[STAGES.len() - 1]);
    figures.push(("read_ns_per_event".to_string(), 1e9 / read));
    figures.push(("chain_events_per_core_s".to_string(), full));
    let (slowest, fastest) = full_rounds
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    figures.push(("chain_events_per_core_s_slowest_round".to_string(), slowest));
    figures.push(("chain_events_per_core_s_fastest_round".to_string(), fastest));
    figures.push(("chain_vs_read_ratio".to_string(), full / read));
    let figures: Vec<(&str, f64)> = figures.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    skiff_tests::bench::report(&figures);
}
