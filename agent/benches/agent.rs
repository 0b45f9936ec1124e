//! `cargo xtask bench agent`: the harvest hot loop.
//!
//! criterion measures line splitting over 200-byte lines in memory; a whole-file run then reads
//! a generated file through [`Harvester`] (file → null output) and reports MB/s and lines/s
//! next to the in-memory figure of the same process, so the ratio is what to compare.

use criterion::{Criterion, Throughput};
use skiff_agent::harvest::{Harvester, LineSplitter};
use std::io::Write;
use std::time::Instant;

const LINE_LEN: usize = 200;

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
                splitter.push(chunk, |_, line| count += line.len());
            }
            std::hint::black_box(count)
        })
    });
    group.finish();
}

/// Reads a 512 MiB file of 200-byte lines to its end and reports throughput.
fn harvest_file() -> Vec<(&'static str, f64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.log");
    let chunk = lines(50_000);
    let mut file = std::fs::File::create(&path).expect("bench file");
    let repeats = (512 << 20) / chunk.len();
    for _ in 0..repeats {
        file.write_all(&chunk).expect("writing the bench file");
    }
    drop(file);
    let bytes = (chunk.len() * repeats) as f64;

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut harvester = Harvester::open(&path).expect("open");
    let mut batch = Vec::new();
    let mut count = 0usize;
    loop {
        batch.clear();
        if harvester.read_lines(&mut batch).expect("read") == 0 {
            break;
        }
        count += batch.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    assert_eq!(count, 50_000 * repeats, "every line read");
    vec![
        ("harvest_1_file_mb_per_s", bytes / seconds / 1e6),
        ("harvest_1_file_lines_per_s", count as f64 / seconds),
        ("harvest_1_file_cpu_s_per_gb", cpu / (bytes / 1e9)),
    ]
}

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let time = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    time(usage.user_time()) + time(usage.system_time())
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    split_lines(&mut criterion);
    criterion.final_summary();
    skiff_tests::bench::report(&harvest_file());
}
