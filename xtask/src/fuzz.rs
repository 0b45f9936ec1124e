//! `cargo xtask fuzz [TARGET] [--seconds N]`: the libFuzzer targets of `fuzz/`, built and run by
//! cargo-fuzz (installed on demand), one after the other.
//!
//! cargo-fuzz passes nightly flags (`-Zsanitizer=address`, the coverage passes) on this stable
//! toolchain through `RUSTC_BOOTSTRAP=1`, as the agent's build script does for the eBPF programs.
//! Those flags reach cargo as `RUSTFLAGS` and the agent's build script as
//! `CARGO_ENCODED_RUSTFLAGS`, but not the nested cargo that builds the eBPF programs: aya-build
//! sets that one's `CARGO_ENCODED_RUSTFLAGS` itself, which cargo prefers over `RUSTFLAGS`.
//!
//! Each target's corpus is `fuzz/corpus/TARGET/`: the committed seeds and regression inputs
//! (named with an extension) and what libFuzzer adds there (SHA-1 names, git-ignored), so a
//! developer's corpus grows from run to run. A crash leaves its input in
//! `fuzz/artifacts/TARGET/` (git-ignored).

use crate::{cmd, toolchain};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The cargo-fuzz release installed into `~/.cargo/bin`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// How long `cargo xtask fuzz` runs each target by default.
const DEFAULT_SECONDS: u64 = 60;
/// The largest input libFuzzer makes: depth and key-count bugs need big documents (its
/// default follows the seeds' sizes, a few KiB).
const MAX_LEN: usize = 4 << 20;
/// An input that runs longer than this is reported as a hang (libFuzzer's default is 20
/// minutes, which would outlast every run).
const TIMEOUT_SECONDS: u64 = 30;

/// Builds every target (or `target`), then runs each for `seconds` (default
/// [`DEFAULT_SECONDS`]); fails at the first target that crashes, naming its input.
pub fn run(root: &Path, target: Option<&str>, seconds: Option<u64>) -> Result<()> {
    let started = Instant::now();
    // The agent's build script compiles the eBPF programs; cargo-fuzz is a cargo subcommand.
    toolchain::ensure_build_toolchain()?;
    ensure_cargo_fuzz()?;
    let targets = match target {
        Some(target) => vec![target.to_string()],
        None => list(root)?,
    };
    let target_dir = target_dir(root);
    cmd::run(&mut fuzz_command(root, "build", target, &target_dir))?;
    let seconds = seconds.unwrap_or(DEFAULT_SECONDS);
    for target in &targets {
        let corpus = root.join("fuzz").join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        cmd::run(
            fuzz_command(root, "run", Some(target), &target_dir)
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg(format!("-max_len={MAX_LEN}"))
                .arg(format!("-timeout={TIMEOUT_SECONDS}")),
        )
        .with_context(|| {
            format!(
                "fuzz target {target} failed: its input is in fuzz/artifacts/{target}/; \
                 keep it as fuzz/corpus/{target}/NAME.EXT (`cargo xtask fuzz {target} \
                 --seconds 1` replays it) and as a unit test of the crate that crashed"
            )
        })?;
    }
    eprintln!(
        "cargo xtask fuzz: {} target(s), {seconds} s each, no crash, in {:.0?}",
        targets.len(),
        started.elapsed()
    );
    Ok(())
}

/// The targets `fuzz/Cargo.toml` declares, as `cargo fuzz list` prints them.
fn list(root: &Path) -> Result<Vec<String>> {
    let out = cmd::output(
        Command::new("cargo")
            .args(["fuzz", "list"])
            .current_dir(root),
    )?;
    let targets: Vec<String> = out.lines().map(str::trim).map(str::to_owned).collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` names no fuzz target");
    }
    Ok(targets)
}

/// `cargo fuzz SUBCOMMAND [TARGET]`, with the flags `build` and `run` must share (or `run`
/// would build again).
fn fuzz_command(root: &Path, subcommand: &str, target: Option<&str>, dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    command
        .args(["fuzz", subcommand])
        .args(target)
        .arg("--target-dir")
        .arg(dir)
        // cargo-fuzz's default of one codegen unit took twice as long to build the
        // instrumented dependency tree on two cores.
        .args(["--codegen-units", "16"])
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root);
    command
}

/// A target folder of its own inside the workspace's: the instrumented build shares no
/// artifact with the normal one, and in the same folder each would invalidate the other.
fn target_dir(root: &Path) -> PathBuf {
    cmd::target_dir(root).join("fuzz")
}

/// cargo-fuzz [`CARGO_FUZZ_VERSION`] in `~/.cargo/bin`, installed from crates.io if another
/// version or none is there.
fn ensure_cargo_fuzz() -> Result<()> {
    let probe = || toolchain::tool_version(Command::new("cargo").args(["fuzz", "--version"]));
    toolchain::install_once("cargo-fuzz", CARGO_FUZZ_VERSION, probe, || {
        cmd::run(
            Command::new("cargo")
                .args(["install", "--locked", "cargo-fuzz", "--version"])
                .arg(CARGO_FUZZ_VERSION),
        )
    })
}
