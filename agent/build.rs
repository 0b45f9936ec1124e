//! Builds the eBPF programs of `agent-ebpf/` for `bpfel-unknown-none` with aya-build, into
//! `OUT_DIR/skiff-ebpf`, which `watch::ebpf` embeds. So a plain `cargo build`, `cargo test` or
//! `cargo clippy` always carries programs built from the current sources.

use anyhow::{Context, Result, bail};
use aya_build::{Package, Toolchain};
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run once on a fresh machine; it installs everything this script checks for.
const INSTALL_HINT: &str = "run `cargo xtask build-ebpf` once to install the eBPF toolchain";

fn main() -> Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("the agent lives inside the workspace")?
        .join("agent-ebpf");
    // The toolchain that builds the agent builds the programs too (rust-toolchain.toml pins it);
    // rustup names it to every process it starts.
    let toolchain = env::var("RUSTUP_TOOLCHAIN")
        .context("RUSTUP_TOOLCHAIN is unset: build through rustup's cargo")?;
    check_toolchain(&toolchain)?;

    // SAFETY: the build script is single-threaded; nothing reads the environment concurrently.
    unsafe {
        // `-Z build-std=core` on a stable toolchain; aya-build passes the flag when it sees this.
        env::set_var("RUSTC_BOOTSTRAP", "1");
        // aya-build relays the nested cargo's stderr as warnings: keep its progress lines out,
        // its errors still come through.
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    // aya-build runs `cargo build --package skiff-ebpf` in the current directory, and that
    // package is outside the host workspace (it builds only for the BPF target).
    env::set_current_dir(&ebpf_dir)
        .with_context(|| format!("cannot enter {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "skiff-ebpf",
            root_dir: ebpf_dir
                .to_str()
                .context("the workspace path is not UTF-8")?,
            ..Package::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

/// Fails early, naming the fix, when bpf-linker or `rust-src` is missing: the nested cargo's own
/// errors for either are long and obscure.
fn check_toolchain(toolchain: &str) -> Result<()> {
    let path = env::var_os("PATH").unwrap_or_default();
    if !env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()) {
        bail!("bpf-linker is not on the PATH: {INSTALL_HINT}");
    }
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .context("cannot run rustup")?;
    if !out.status.success() {
        bail!(
            "`rustup run {toolchain} rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sysroot = String::from_utf8(out.stdout).context("rustc printed a non-UTF-8 sysroot")?;
    let core = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !core.is_dir() {
        bail!("rust-src is missing for toolchain {toolchain}: {INSTALL_HINT}");
    }
    Ok(())
}
