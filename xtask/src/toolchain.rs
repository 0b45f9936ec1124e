//! The eBPF toolchain: everything `aya-build` (run by `agent/build.rs`) needs to compile
//! `agent-ebpf/` for `bpfel-unknown-none`, installed on demand so a fresh machine needs nothing
//! by hand. Every step checks first, so a warm machine pays a few process spawns and no network.

use crate::cmd;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bpf-linker release, built against the system LLVM below.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// rustc 1.95 is built on LLVM 22: bpf-linker must read the bitcode it emits, so it links the
/// same major version (Debian 12 ships it in bookworm-security; its default `llvm` is 14).
const LLVM_MAJOR: u32 = 22;
/// Headers and libraries bpf-linker's `llvm-sys` links against.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// What the host build links against: librdkafka is compiled by `rdkafka-sys` (cmake) and
/// needs these headers; `curl/curl.h` even with curl support off (rust-rdkafka#829).
const NATIVE_BUILD_PACKAGES: &[&str] = &[
    "cmake",
    "pkg-config",
    "libssl-dev",
    "libsasl2-dev",
    "libcurl4-openssl-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Installs what is missing to build the workspace: the native libraries of its `-sys`
/// crates, and for the eBPF programs `rust-src` of the pinned toolchain (for
/// `-Z build-std=core`), Debian's LLVM development files and bpf-linker. Idempotent.
pub fn ensure_build_toolchain() -> Result<()> {
    cmd::apt_install(NATIVE_BUILD_PACKAGES)?;
    ensure_rust_src(&cmd::workspace_root())?;
    ensure_bpf_linker()
}

/// `cargo xtask build-ebpf`: installs the toolchain, then builds the agent, whose build script
/// compiles the eBPF object exactly as every later `cargo build`/`cargo test` will reuse it.
pub fn build_ebpf(root: &Path) -> Result<()> {
    ensure_build_toolchain()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--package", "skiff-agent"])
            .current_dir(root),
    )?;
    eprintln!("eBPF programs built (agent/build.rs embeds them in skiff-agent)");
    Ok(())
}

/// `rust-src` of the toolchain `rust-toolchain.toml` selects. rustup installs the components the
/// file lists only together with a new toolchain, so an existing one may still lack it.
fn ensure_rust_src(root: &Path) -> Result<()> {
    let sysroot = cmd::output(
        Command::new("rustc")
            .args(["--print", "sysroot"])
            .current_dir(root),
    )?;
    let core = PathBuf::from(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    cmd::run(
        Command::new("rustup")
            .args(["component", "add", "rust-src"])
            .current_dir(root),
    )
}

/// bpf-linker [`BPF_LINKER_VERSION`] on the PATH (`~/.cargo/bin`), built against LLVM
/// [`LLVM_MAJOR`] from Debian.
fn ensure_bpf_linker() -> Result<()> {
    let probe = || tool_version(Command::new("bpf-linker").arg("--version"));
    install_once("bpf-linker", BPF_LINKER_VERSION, probe, || {
        cmd::apt_install(APT_PACKAGES)?;
        let llvm_bin = PathBuf::from(format!("/usr/lib/llvm-{LLVM_MAJOR}/bin"));
        if !llvm_bin.join("llvm-config").is_file() {
            bail!(
                "{} is missing although {} are installed",
                llvm_bin.join("llvm-config").display(),
                APT_PACKAGES.join(" ")
            );
        }
        // llvm-sys finds LLVM through the first `llvm-config` on the PATH.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(llvm_bin).chain(std::env::split_paths(&path)))
                .context("cannot put the LLVM directory on the PATH")?;
        cmd::run(
            Command::new("cargo")
                .args(["install", "--locked", "bpf-linker", "--version"])
                .arg(BPF_LINKER_VERSION)
                .args(["--no-default-features", "--features"])
                .arg(format!("llvm-{LLVM_MAJOR}"))
                .env("PATH", path),
        )
    })
}

/// Runs `install` (a `cargo install` of `name` at `version` into `~/.cargo/bin`) unless `probe`
/// already reports `version`, and checks that the probe reports it afterwards: another copy
/// earlier on the PATH would otherwise be used without a word.
pub fn install_once(
    name: &str,
    version: &str,
    probe: impl Fn() -> Option<String>,
    install: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if probe().as_deref() == Some(version) {
        return Ok(());
    }
    install()?;
    match probe() {
        Some(found) if found == version => Ok(()),
        found => bail!(
            "installed {name} {version}, but the one on the PATH is {}: \
             put ~/.cargo/bin first on the PATH",
            found.as_deref().unwrap_or("missing")
        ),
    }
}

/// The version a tool's `--version` reports as its second word (`bpf-linker 0.13.0`,
/// `cargo-fuzz 0.13.2`), if it runs at all.
pub fn tool_version(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    let stdout = String::from_utf8(out.stdout).ok()?;
    out.status
        .success()
        .then(|| stdout.split_whitespace().nth(1).map(str::to_owned))
        .flatten()
}
