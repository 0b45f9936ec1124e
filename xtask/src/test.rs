//! `cargo xtask test` and `cargo xtask e2e`: lint, then tests with the real peers up.

use crate::{cmd, peers, toolchain};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// fmt check, clippy, then every test in the workspace with every peer up; peers down at the
/// end, whether the tests passed or not.
pub fn all(root: &Path, cargo_args: &[String]) -> Result<()> {
    let started = Instant::now();
    cmd::run(Command::new("cargo").args(["fmt", "--all", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    // The eBPF programs are a workspace of their own (see the root Cargo.toml).
    let ebpf = ["fmt", "--manifest-path", "agent-ebpf/Cargo.toml", "--check"];
    cmd::run(Command::new("cargo").args(ebpf).current_dir(root)).context(
        "formatting of the eBPF programs differs: run `cargo fmt --manifest-path agent-ebpf/Cargo.toml`",
    )?;
    // So are the fuzz targets.
    let fuzz_fmt = ["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"];
    cmd::run(Command::new("cargo").args(fuzz_fmt).current_dir(root)).context(
        "formatting of the fuzz targets differs: run `cargo fmt --manifest-path fuzz/Cargo.toml`",
    )?;
    // Native libraries and the eBPF toolchain (the agent's build script compiles the eBPF
    // programs) must exist before anything builds.
    toolchain::ensure_build_toolchain()?;
    cmd::run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Compile the tests before the peers start, so they do not idle through a long build.
    cmd::run(Command::new("cargo").args(["test", "--workspace", "--no-run"]))?;
    peers::with_peers(root, &peers::all(), |env| {
        cmd::run(
            Command::new("cargo")
                .args(["test", "--workspace"])
                .args(cargo_args)
                .envs(env.iter().cloned()),
        )
    })?;
    eprintln!("cargo xtask test: all green in {:.0?}", started.elapsed());
    Ok(())
}

/// The peers the whole-system test needs.
const E2E_PEERS: [&str; 3] = ["geoip", "kube", "kafka"];

/// `cargo xtask e2e`: the whole-system test (`tests/tests/system_e2e.rs`) alone, with the peers
/// it needs up, and every peer down afterwards.
pub fn e2e(root: &Path) -> Result<()> {
    let started = Instant::now();
    toolchain::ensure_build_toolchain()?;
    let test = ["test", "--package", "skiff-tests", "--test", "system_e2e"];
    // Build the test and both programs it runs before the peers start, so they do not idle
    // through a long build.
    cmd::run(Command::new("cargo").args(test).arg("--no-run"))?;
    cmd::run(Command::new("cargo").args([
        "build",
        "--package",
        "skiff-agent",
        "--package",
        "skiff-webhook",
    ]))?;
    let only: Vec<String> = E2E_PEERS.iter().map(|p| p.to_string()).collect();
    peers::with_peers(root, &peers::select(&only)?, |env| {
        cmd::run(
            Command::new("cargo")
                .args(test)
                // Its progress (deliveries, duplicates) is worth seeing.
                .args(["--", "--nocapture"])
                .envs(env.iter().cloned()),
        )
    })?;
    eprintln!("cargo xtask e2e: green in {:.0?}", started.elapsed());
    Ok(())
}
