//! `cargo xtask bench [NAME]`: runs the workspace's benchmarks and reports their figures.
//!
//! Every `[[bench]]` target of the workspace is a benchmark, named after its target. Each one
//! leaves one JSON object of `metric name → number` in `target/bench/NAME.json`: criterion
//! benchmarks get theirs collected here from criterion's estimates (time per iteration, and
//! throughput when the benchmark declares one); whole-pipeline benchmarks write their own
//! figures to the file named by `SKIFF_BENCH_OUT`. Both end up in the same file and table.
//! The peers a benchmark measures against ([`peers_of`]) are started for it and stopped after.

use crate::{cmd, peers, toolchain};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use std::fs;
use std::path::Path;
use std::process::Command;

pub fn run(root: &Path, only: Option<&str>) -> Result<()> {
    let benches = bench_targets()?;
    let selected: Vec<_> = benches
        .iter()
        .filter(|(_, name)| only.is_none_or(|o| o == name))
        .collect();
    if selected.is_empty() {
        let names: Vec<_> = benches.iter().map(|(_, n)| n.as_str()).collect();
        bail!(
            "no benchmark named {only:?}; there are: {}",
            names.join(", ")
        );
    }
    toolchain::ensure_build_toolchain()?;
    let out_dir = root.join("target").join("bench");
    for (package, name) in selected {
        let out = out_dir.join(format!("{name}.json"));
        let criterion_home = out_dir.join("criterion").join(name);
        let _ = fs::remove_file(&out);
        let _ = fs::remove_dir_all(&criterion_home);
        fs::create_dir_all(&criterion_home)?;
        let bench = || {
            let mut command = Command::new("cargo");
            command
                .args(["bench", "--package", package, "--bench", name])
                .env("SKIFF_BENCH_OUT", &out)
                .env("CRITERION_HOME", &criterion_home);
            command
        };
        // Built before the peers start, so they do not idle through a long build.
        cmd::run(bench().arg("--no-run"))?;
        let needed: Vec<String> = peers_of(name).iter().map(|p| p.to_string()).collect();
        if needed.is_empty() {
            cmd::run(&mut bench())?;
        } else {
            peers::with_peers(root, &peers::select(&needed)?, |env| {
                cmd::run(bench().envs(env.iter().cloned()))
            })?;
        }
        let mut figures = read_object(&out)?;
        collect_criterion(&criterion_home, &mut figures)?;
        fs::write(&out, serde_json::to_string_pretty(&figures)?)?;
        print_table(name, &figures);
    }
    Ok(())
}

/// The peers a benchmark measures against: the GeoLite2 databases for the processing chain,
/// the brokers for the outputs, the API server that calls the webhook.
fn peers_of(bench: &str) -> &'static [&'static str] {
    match bench {
        "process" => &["geoip"],
        "output" => &["kafka", "opensearch"],
        "webhook" => &["kube"],
        _ => &[],
    }
}

/// `(package, bench target)` for every benchmark in the workspace.
fn bench_targets() -> Result<Vec<(String, String)>> {
    let metadata: Value = serde_json::from_str(&cmd::output(Command::new("cargo").args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
    ]))?)?;
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            if target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"))
            {
                found.push((
                    package["name"].as_str().unwrap_or_default().to_string(),
                    target["name"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    Ok(found)
}

fn read_object(path: &Path) -> Result<Map<String, Value>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object of figures", path.display())),
        Err(_) => Ok(Map::new()),
    }
}

/// Adds `<id>_ns` (mean time per iteration) and, for benchmarks with a declared throughput,
/// `<id>_mb_per_s` or `<id>_per_s`, from criterion's `new/{estimates,benchmark}.json`.
fn collect_criterion(home: &Path, figures: &mut Map<String, Value>) -> Result<()> {
    for estimates in find_files(home, "estimates.json") {
        let dir = estimates.parent().context("estimates.json has a folder")?;
        if !dir.ends_with("new") {
            continue;
        }
        let benchmark: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("benchmark.json"))?)?;
        let estimates: Value = serde_json::from_str(&fs::read_to_string(&estimates)?)?;
        let id = benchmark["full_id"]
            .as_str()
            .unwrap_or_default()
            .replace(['/', ' ', '-'], "_");
        let Some(ns) = estimates["mean"]["point_estimate"].as_f64() else {
            continue;
        };
        figures.insert(format!("{id}_ns"), round(ns).into());
        let throughput = &benchmark["throughput"];
        if let Some(bytes) = throughput["Bytes"].as_f64() {
            figures.insert(
                format!("{id}_mb_per_s"),
                round(bytes / ns * 1e9 / 1e6).into(),
            );
        } else if let Some(n) = throughput["Elements"].as_f64() {
            figures.insert(format!("{id}_per_s"), round(n / ns * 1e9).into());
        }
    }
    Ok(())
}

fn find_files(dir: &Path, file_name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            found.extend(find_files(&path, file_name));
        } else if path.file_name().is_some_and(|n| n == file_name) {
            found.push(path);
        }
    }
    found
}

/// Three significant decimals are plenty for figures this noisy.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn print_table(name: &str, figures: &Map<String, Value>) {
    println!("\n{name}");
    let width = figures.keys().map(String::len).max().unwrap_or(0);
    for (metric, value) in figures {
        println!("  {metric:<width$}  {value}");
    }
}
