//! `cargo xtask bench json`: reading JSON lines into events
//! (`process::Value`) against `serde_json::Value`, for a line a tenant made hostile (80,000
//! keys sharing their first 8 bytes, 1.8 MB, which took 16 s before objects were built by
//! sorting) and for an ordinary line of a dozen keys.

use criterion::{Criterion, Throughput};
use skiff_agent::process::Value;
use std::hint::black_box;

/// Memory figures mean what they would in the agent's binary only with its allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 80,000 `"attribute_<n>":<n>` pairs, in an order far from sorted: about 1.8 MB.
fn hostile_line() -> Vec<u8> {
    const KEYS: usize = 80_000;
    let mut line = String::from("{");
    for i in 0..KEYS {
        let n = (i * 7919) % KEYS;
        line.push_str(&format!("\"attribute_{n}\":{n},"));
    }
    line.pop();
    line.push('}');
    line.into_bytes()
}

/// A structured application log line, as ECS loggers write them.
fn ordinary_line() -> Vec<u8> {
    br#"{"@timestamp":"2026-05-06T07:08:09.123Z","log.level":"info","message":"order placed","service.name":"checkout","trace.id":"4bf92f3577b34da6a3ce929d0e0e4736","user":{"id":"u-1234","roles":["buyer"]},"order":{"id":98765,"total":129.9,"items":3},"http":{"status":200}}"#.to_vec()
}

fn parse(criterion: &mut Criterion, name: &str, line: &[u8]) {
    let mut group = criterion.benchmark_group(name);
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("process::Value", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(line)).expect("valid JSON"))
    });
    group.bench_function("serde_json::Value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(line)).expect("valid JSON"))
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    parse(&mut criterion, "json_80000_keys", &hostile_line());
    parse(&mut criterion, "json_ordinary_line", &ordinary_line());
    criterion.final_summary();
}
