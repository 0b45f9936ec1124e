//! OpenSearch, the Elasticsearch-API store that the agent's Elasticsearch output ships to.
//!
//! Maven Central serves OpenSearch's jars but not its distribution, so `tests/peers/opensearch/`
//! is a small Maven project: a launcher that runs one embedded node (core, the Netty HTTP
//! transport, the common analyzers and the extra field types) serving the REST API on loopback.
//! It is built once into `~/.cache/skiff/peers/opensearch-<version>/launcher-<hash>/`, where the
//! hash covers the project's sources, so that editing the launcher rebuilds it.

use super::{Ctx, Peer, http_ok};
use crate::cmd;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The OpenSearch release; keep in step with `opensearch.version` in the launcher's `pom.xml`.
const VERSION: &str = "2.19.6";
const HTTP_PORT: u16 = 19200;
const TRANSPORT_PORT: u16 = 19300;
/// The cluster name the launcher sets, which tells our node apart from a stranger on the port.
const CLUSTER_NAME: &str = "skiff-test";
/// The launcher's jar; its manifest puts `lib/*` on the classpath.
const JAR: &str = "opensearch-launcher.jar";

/// One embedded OpenSearch node on `127.0.0.1:19200`.
pub struct OpenSearch;

impl OpenSearch {
    /// The launcher's Maven project in the work tree.
    fn project(ctx: &Ctx) -> PathBuf {
        ctx.root.join("tests").join("peers").join("opensearch")
    }

    /// Where the build of the launcher's current sources lives.
    fn build_dir(&self, ctx: &Ctx) -> Result<PathBuf> {
        let hash = source_hash(&Self::project(ctx))?;
        Ok(ctx.cache(self).join(format!("launcher-{hash:016x}")))
    }

    fn url() -> String {
        format!("http://127.0.0.1:{HTTP_PORT}")
    }
}

impl Peer for OpenSearch {
    fn name(&self) -> &'static str {
        "opensearch"
    }

    fn version(&self) -> &'static str {
        VERSION
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        let dir = self.build_dir(ctx)?;
        if dir.exists() {
            return Ok(());
        }
        cmd::apt_install(&["openjdk-17-jdk-headless", "maven"])?;
        let cache = ctx.cache(self);
        // Built beside its final place and renamed into it, so a build that was interrupted is
        // never mistaken for a finished one.
        let tmp = cache.join(".build");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        eprintln!(
            "building the OpenSearch {VERSION} launcher into {}",
            dir.display()
        );
        let pom = Self::project(ctx).join("pom.xml");
        cmd::run(
            Command::new("mvn")
                .args(["-B", "-q", "-f"])
                .arg(&pom)
                .arg(format!("-Dskiff.buildDir={}", tmp.display()))
                .arg("package")
                // stdout carries the `export` lines that `peers up` prints for `eval`.
                .stdout(std::io::stderr()),
        )?;
        fs::rename(&tmp, &dir)
            .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
        // Builds of older launcher sources are of no further use.
        for entry in fs::read_dir(&cache)?.flatten() {
            let path = entry.path();
            if path != dir && entry.file_name().to_string_lossy().starts_with("launcher-") {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        let jar = self.build_dir(ctx)?.join(JAR);
        let home = ctx.state(self)?;
        // Every start is a fresh cluster, so no test sees indices that an earlier run left.
        let data = home.join("data");
        if data.exists() {
            fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        }
        let mut java = Command::new("java");
        java.args(["-Xms512m", "-Xmx1g", "-jar"])
            .arg(jar)
            .arg(&home)
            .arg(HTTP_PORT.to_string())
            .arg(TRANSPORT_PORT.to_string());
        ctx.spawn(self, "opensearch", java)
    }

    fn healthy(&self, _ctx: &Ctx) -> Result<()> {
        let url = Self::url();
        let health: Value = serde_json::from_str(&http_ok(&format!("{url}/_cluster/health"))?)
            .context("parsing the cluster health")?;
        if health["cluster_name"] != CLUSTER_NAME {
            bail!(
                "{url} serves cluster {}, not {CLUSTER_NAME}",
                health["cluster_name"]
            );
        }
        if !matches!(health["status"].as_str(), Some("green" | "yellow")) {
            bail!("cluster health is {}", health["status"]);
        }
        // The launcher sets this right after the node starts; until then new indices would get
        // a replica that a single node never allocates.
        let settings: Value = serde_json::from_str(&http_ok(&format!(
            "{url}/_cluster/settings?filter_path=persistent.cluster.default_number_of_replicas"
        ))?)
        .context("parsing the cluster settings")?;
        let replicas = settings.pointer("/persistent/cluster/default_number_of_replicas");
        if replicas.and_then(Value::as_str) != Some("0") {
            bail!("the launcher has not set cluster.default_number_of_replicas yet");
        }
        Ok(())
    }

    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![("SKIFF_TEST_OPENSEARCH", Self::url())]
    }

    fn start_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }
}

/// A hash of every file of the Maven project (names and contents), skipping Maven's own
/// `target/` should someone have built there by hand.
///
/// FNV-1a rather than `std`'s `DefaultHasher`, whose output may change between Rust releases;
/// this is a cache key, not a security boundary.
fn source_hash(project: &Path) -> Result<u64> {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    files(&path, out)?;
                }
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut paths = Vec::new();
    files(project, &mut paths)?;
    paths.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in paths {
        let name = path.strip_prefix(project)?.to_string_lossy().into_owned();
        let contents = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // The NUL keeps the boundary between a name and its contents unambiguous.
        for byte in name.bytes().chain([0]).chain(contents) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(hash)
}
