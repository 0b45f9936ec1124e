//! What the manifests test needs besides the API server: the kustomize binary that renders the
//! overlays, and the cert-manager CRDs that make the prod overlay's `Certificate` and `Issuer`
//! known to it. Files, no process.
//!
//! Both come from the Go module proxy, checked against the Go checksum database: kustomize is
//! `go install`ed at its release tag (its own `go.mod`/`go.sum` pin every dependency), and the
//! CRDs are the generated `deploy/crds/` files of the cert-manager module at a release tag.

use super::{Ctx, Peer};
use crate::cmd;
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The kustomize release (the newest whose `go.mod` the machine's Go 1.26 builds).
const KUSTOMIZE_VERSION: &str = "v5.8.1";
const KUSTOMIZE_PACKAGE: &str = "sigs.k8s.io/kustomize/kustomize/v5";
/// The cert-manager release whose CRDs are installed.
const CERT_MANAGER_VERSION: &str = "v1.21.2";
const CERT_MANAGER_MODULE: &str = "github.com/cert-manager/cert-manager";
/// The CRDs of the kinds the prod overlay uses, under `deploy/crds/` in the module.
const CERT_MANAGER_CRDS: [&str; 2] = [
    "cert-manager.io_certificates.yaml",
    "cert-manager.io_issuers.yaml",
];

/// The `kustomize` binary.
pub struct Kustomize;

impl Kustomize {
    fn binary(&self, ctx: &Ctx) -> PathBuf {
        ctx.cache(self).join("kustomize")
    }
}

impl Peer for Kustomize {
    fn name(&self) -> &'static str {
        "kustomize"
    }

    fn version(&self) -> &'static str {
        KUSTOMIZE_VERSION
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        if self.binary(ctx).exists() {
            return Ok(());
        }
        let partial = partial_dir(ctx, self)?;
        cmd::run(
            go()?
                .args(["install", "-trimpath", "-p", "2"])
                .arg(format!("{KUSTOMIZE_PACKAGE}@{KUSTOMIZE_VERSION}"))
                .env("GOBIN", &partial),
        )?;
        finish(ctx, self, &partial)
    }

    fn start(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    /// The binary runs and is the pinned release.
    fn healthy(&self, ctx: &Ctx) -> Result<()> {
        let version = cmd::output(Command::new(self.binary(ctx)).arg("version"))?;
        ensure!(
            version.trim() == KUSTOMIZE_VERSION,
            "kustomize reports {version:?}, expected {KUSTOMIZE_VERSION}"
        );
        Ok(())
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![(
            "SKIFF_TEST_KUSTOMIZE",
            self.binary(ctx).display().to_string(),
        )]
    }

    fn start_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// cert-manager's `Certificate` and `Issuer` CustomResourceDefinitions.
pub struct CertManagerCrds;

impl Peer for CertManagerCrds {
    fn name(&self) -> &'static str {
        "cert-manager-crds"
    }

    fn version(&self) -> &'static str {
        CERT_MANAGER_VERSION
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        if self.healthy(ctx).is_ok() {
            return Ok(());
        }
        let json = cmd::output(go()?.args([
            "mod",
            "download",
            "-json",
            &format!("{CERT_MANAGER_MODULE}@{CERT_MANAGER_VERSION}"),
        ]))?;
        let download: serde_json::Value =
            serde_json::from_str(&json).context("parsing `go mod download -json`")?;
        let Some(module) = download["Dir"].as_str() else {
            bail!("`go mod download` did not name the module's folder: {json}");
        };
        let partial = partial_dir(ctx, self)?;
        for crd in CERT_MANAGER_CRDS {
            let from = Path::new(module).join("deploy/crds").join(crd);
            fs::copy(&from, partial.join(crd))
                .with_context(|| format!("copying {}", from.display()))?;
        }
        finish(ctx, self, &partial)
    }

    fn start(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    /// Every CRD file is there and is a CustomResourceDefinition.
    fn healthy(&self, ctx: &Ctx) -> Result<()> {
        for crd in CERT_MANAGER_CRDS {
            let path = ctx.cache(self).join(crd);
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            ensure!(
                text.contains("kind: CustomResourceDefinition"),
                "{} is not a CustomResourceDefinition",
                path.display()
            );
        }
        Ok(())
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![(
            "SKIFF_TEST_CERT_MANAGER_CRDS",
            ctx.cache(self).display().to_string(),
        )]
    }

    fn start_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// `go`, run outside any module so that no project's `go.mod` is involved.
fn go() -> Result<Command> {
    if !cmd::has("go") {
        bail!("the Go toolchain is needed (`go` is not on the PATH)");
    }
    let mut go = Command::new("go");
    go.current_dir(std::env::temp_dir())
        .env("GO111MODULE", "on");
    Ok(go)
}

/// An empty folder beside the peer's cache folder, to fill and then [`finish`].
fn partial_dir(ctx: &Ctx, peer: &dyn Peer) -> Result<PathBuf> {
    let partial = ctx
        .cache_root
        .join(format!(".{}-{}.partial", peer.name(), peer.version()));
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    Ok(partial)
}

/// Renames the filled `partial` folder into the peer's cache folder: an interrupted install is
/// never taken for a finished one.
fn finish(ctx: &Ctx, peer: &dyn Peer, partial: &Path) -> Result<()> {
    let cache = ctx.cache(peer);
    if cache.exists() {
        fs::remove_dir_all(&cache)
            .with_context(|| format!("removing stale {}", cache.display()))?;
    }
    fs::rename(partial, &cache)
        .with_context(|| format!("moving {} to {}", partial.display(), cache.display()))
}
