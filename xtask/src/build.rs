//! `cargo xtask build`: the eBPF programs and release binaries of both programs.

use crate::{cmd, toolchain};
use anyhow::Result;
use std::path::Path;
use std::process::Command;

pub fn release(root: &Path) -> Result<()> {
    // The release build compiles the eBPF object itself (agent/build.rs).
    toolchain::ensure_build_toolchain()?;
    cmd::run(Command::new("cargo").args([
        "build",
        "--release",
        "--package",
        "skiff-agent",
        "--package",
        "skiff-webhook",
    ]))?;
    let bin = root.join("target").join("release");
    eprintln!(
        "built {} and {}",
        bin.join("skiff-agent").display(),
        bin.join("skiff-webhook").display()
    );
    Ok(())
}
