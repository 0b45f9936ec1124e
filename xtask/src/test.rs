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
    with_peers(root, |env| {
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

/// The end-to-end tests alone, with the peers up.
pub fn e2e(root: &Path) -> Result<()> {
    toolchain::ensure_build_toolchain()?;
    with_peers(root, |env| {
        cmd::run(
            Command::new("cargo")
                .args(["test", "--package", "skiff-tests"])
                .envs(env.iter().cloned()),
        )
    })
}

/// Starts every peer, runs `body` with their environment, and stops them again even when
/// `body` (or a peer's start) fails.
fn with_peers(
    root: &Path,
    body: impl FnOnce(&[(&'static str, String)]) -> Result<()>,
) -> Result<()> {
    let ctx = peers::Ctx::new(root);
    let result = peers::up(&ctx, &peers::all()).and_then(|env| body(&env));
    let stopped = peers::down(&ctx);
    result.and(stopped)
}
