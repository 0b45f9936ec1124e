//! A Logstash Beats input stand-in: a lumberjack v2 server built from Elastic's go-lumber.
//!
//! The tiny Go program in `tests/peers/beats/` appends every acknowledged event to an NDJSON
//! file, so the Logstash output's tests can compare what was sent with what was acknowledged.

use super::{Ctx, Peer, tcp_open};
use crate::cmd;
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the server listens.
const ADDR: &str = "127.0.0.1:15044";
/// The Go sources of the server, relative to the workspace root.
const SOURCE_DIR: &str = "tests/peers/beats";
/// The files the binary is built from; copies kept beside the binary tell a stale build apart.
const SOURCES: [&str; 3] = ["main.go", "go.mod", "go.sum"];
const BINARY: &str = "beats-server";

/// The lumberjack v2 server, `127.0.0.1:15044`, plain TCP.
pub struct BeatsServer;

impl BeatsServer {
    fn binary(&self, ctx: &Ctx) -> PathBuf {
        ctx.cache(self).join(BINARY)
    }

    fn output(ctx: &Ctx) -> PathBuf {
        ctx.state_root.join("beats").join("events.ndjson")
    }
}

impl Peer for BeatsServer {
    fn name(&self) -> &'static str {
        "beats"
    }

    /// The go-lumber version, as pinned in `tests/peers/beats/go.mod` (the commit Beats uses).
    fn version(&self) -> &'static str {
        "0.1.2-0.20220819171948-335fde24ea0f"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        let source = ctx.root.join(SOURCE_DIR);
        let dir = ctx.cache(self);
        if dir.join(BINARY).exists() && same_sources(&source, &dir)? {
            return Ok(());
        }
        if !cmd::has("go") {
            bail!("the Go toolchain is needed to build the beats peer (`go` is not on the PATH)");
        }
        // Build beside the cache folder, then rename: a half-finished build is never taken
        // for a finished one.
        let tmp = ctx
            .cache_root
            .join(format!(".{}-{}.tmp", self.name(), std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        cmd::run(
            Command::new("go")
                .args(["build", "-trimpath", "-mod=readonly", "-o"])
                .arg(tmp.join(BINARY))
                .arg(".")
                .current_dir(&source),
        )?;
        for file in SOURCES {
            fs::copy(source.join(file), tmp.join(file))
                .with_context(|| format!("copying {file} into {}", tmp.display()))?;
        }
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        fs::rename(&tmp, &dir)
            .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        let mut command = Command::new(self.binary(ctx));
        command
            .arg("-listen")
            .arg(ADDR)
            .arg("-output")
            .arg(Self::output(ctx));
        ctx.spawn(self, BINARY, command)
    }

    fn healthy(&self, _ctx: &Ctx) -> Result<()> {
        tcp_open(ADDR)
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("SKIFF_TEST_BEATS", ADDR.to_string()),
            (
                "SKIFF_TEST_BEATS_OUTPUT",
                Self::output(ctx).display().to_string(),
            ),
        ]
    }
}

/// Whether the cached copies of the sources in `cache` match those in `source`.
fn same_sources(source: &Path, cache: &Path) -> Result<bool> {
    for file in SOURCES {
        let wanted = fs::read(source.join(file))
            .with_context(|| format!("reading {}", source.join(file).display()))?;
        if fs::read(cache.join(file)).ok() != Some(wanted) {
            return Ok(false);
        }
    }
    Ok(true)
}
