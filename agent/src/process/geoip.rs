//! `geoip` (also `geolocation`): where an IP address is and which network owns it, looked up
//! locally in MaxMind DB files (GeoLite2/GeoIP2 City and ASN) — never through a web API.
//!
//! Results go to ECS `client.geo.*` and `client.as.*` (or beside whatever `*.ip` field is
//! looked up). Private, loopback, documentation and unparsable addresses are skipped without
//! an error: they are normal in logs and no database knows them. Lookups are cached by
//! address, and the fields made of a database record by the record: the many addresses that
//! share one (a city, an autonomous system) decode it once. The databases are reloaded when
//! their files are replaced (as `geoipupdate` does), checked by a background thread so the
//! hot path never touches the file system.
//!
//! Two schemas are read: MaxMind's own (`city.names.en`, `location.latitude`, …, detected by a
//! `GeoIP2-`/`GeoLite2-` database type) and the flat one of the ip-location-db project
//! (`country_code`, `state1`, `city`, `latitude`, …).

use super::{BuildError, Event, Object, Value, field};
use maxminddb::{LookupResult, Reader, geoip2};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// Where GeoIP databases live by default (Debian's `geoipupdate` and MaxMind's images).
const DEFAULT_CITY: &str = "/usr/share/GeoIP/GeoLite2-City.mmdb";
const DEFAULT_ASN: &str = "/usr/share/GeoIP/GeoLite2-ASN.mmdb";
/// Environment variables that override those defaults, as a DaemonSet sets them.
const CITY_ENV: &str = "SKIFF_GEOIP_DATABASE";
const ASN_ENV: &str = "SKIFF_GEOIP_ASN_DATABASE";

/// `geoip` configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpConfig {
    /// The field with the IP address. Default: `client.ip`.
    #[serde(default = "default_field")]
    pub field: String,
    /// Where the location goes. Default: beside the address (`client.ip` → `client.geo`), or
    /// `client.geo` when the field is not named `*.ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Where the autonomous system goes. Default: like `target`, with `as` (`client.as`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_target: Option<String>,
    /// The City database. Default: `$SKIFF_GEOIP_DATABASE`, else
    /// `/usr/share/GeoIP/GeoLite2-City.mmdb`.
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// The ASN database; when not set, `$SKIFF_GEOIP_ASN_DATABASE` or
    /// `/usr/share/GeoIP/GeoLite2-ASN.mmdb` is used if it exists. Default: not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn_database: Option<PathBuf>,
    /// How many addresses the lookup cache holds, and how many records of each database the
    /// record caches hold. Default: 10000.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// How often the database files are checked for replacement. Default: 30s.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Accepted so configurations written for a geolocation web API load unchanged; lookups
    /// are local, so it is never used (nor printed by `check-config`).
    #[serde(default, skip_serializing)]
    pub api_key: Option<String>,
}

fn default_field() -> String {
    "client.ip".to_string()
}

fn default_database() -> PathBuf {
    std::env::var_os(CITY_ENV).map_or_else(|| DEFAULT_CITY.into(), PathBuf::from)
}

fn default_cache_size() -> usize {
    10_000
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(30)
}

/// Built `geoip`.
pub struct GeoIp {
    field: String,
    geo_target: String,
    as_target: String,
    shared: Arc<Shared>,
}

/// What the reload thread shares with the processor.
struct Shared {
    city: Database,
    asn: Option<Database>,
    cache: Cache<IpAddr, Arc<Found>>,
}

/// One database file and its current contents.
struct Database {
    path: PathBuf,
    cache_size: usize,
    loaded: RwLock<Arc<Loaded>>,
}

struct Loaded {
    reader: Reader<Vec<u8>>,
    stamp: Stamp,
    maxmind_schema: bool,
    /// The fields made of each record, by its offset in the file's data section: addresses
    /// that miss the address cache mostly land on records decoded before (decoding one was
    /// a third of the step's time). Kept with the contents the offsets are of.
    records: Cache<usize, Option<Object>>,
}

/// What tells a replaced file apart: a rename gives a new inode, a rewrite a new mtime or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// The fields found for one address.
#[derive(Debug, Default)]
struct Found {
    geo: Option<Object>,
    asn: Option<Object>,
}

impl GeoIp {
    /// Opens the databases (a missing or broken file is an error naming it) and starts the
    /// thread that reloads them.
    pub fn build(config: &GeoIpConfig) -> Result<Self, BuildError> {
        let cache_size = config.cache_size.max(1);
        let asn = match &config.asn_database {
            Some(path) => Some(Database::open(path, cache_size)?),
            None => {
                let path =
                    std::env::var_os(ASN_ENV).map_or_else(|| DEFAULT_ASN.into(), PathBuf::from);
                path.exists()
                    .then(|| Database::open(&path, cache_size))
                    .transpose()?
            }
        };
        let shared = Arc::new(Shared {
            city: Database::open(&config.database, cache_size)?,
            asn,
            cache: Cache::new(cache_size),
        });
        spawn_reloader(Arc::downgrade(&shared), config.reload_interval);
        let prefix = config.field.strip_suffix(".ip").unwrap_or("client");
        Ok(Self {
            field: config.field.clone(),
            geo_target: config
                .target
                .clone()
                .unwrap_or_else(|| format!("{prefix}.geo")),
            as_target: config
                .as_target
                .clone()
                .unwrap_or_else(|| format!("{prefix}.as")),
            shared,
        })
    }

    pub fn apply(&self, event: &mut Event) {
        let Some(ip) = field::get_str(event, &self.field).and_then(parse_ip) else {
            return;
        };
        if !is_public(ip) {
            return;
        }
        let found = match self.shared.cache.get(&ip) {
            Some(found) => found,
            None => {
                let found = Arc::new(self.shared.lookup(ip));
                self.shared.cache.insert(ip, found.clone());
                found
            }
        };
        if let Some(geo) = &found.geo {
            merge(field::object_mut(event, &self.geo_target), geo);
        }
        if let Some(asn) = &found.asn {
            merge(field::object_mut(event, &self.as_target), asn);
        }
    }
}

/// Adds `fields` to `object`, replacing the values of keys it has.
fn merge(object: &mut Object, fields: &Object) {
    if object.is_empty() {
        // The usual case: a whole clone of the tree is cheaper than inserting its keys one by one.
        object.clone_from(fields);
    } else {
        object.extend(fields.clone());
    }
}

impl Shared {
    fn lookup(&self, ip: IpAddr) -> Found {
        let city = self.city.current();
        let asn = self.asn.as_ref().map(Database::current);
        Found {
            geo: city.fields(ip, Loaded::geo),
            asn: asn.and_then(|db| db.fields(ip, Loaded::asn)),
        }
    }
}

impl Database {
    fn open(path: &Path, cache_size: usize) -> Result<Self, BuildError> {
        Ok(Self {
            path: path.to_path_buf(),
            cache_size,
            loaded: RwLock::new(Arc::new(Loaded::open(path, cache_size)?)),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().expect("never poisoned").clone()
    }

    /// Reloads the file if it was replaced. Returns whether it did.
    fn reload_if_replaced(&self) -> bool {
        let Ok(stamp) = Stamp::of(&self.path) else {
            // Gone for a moment (being replaced): keep serving the old contents.
            return false;
        };
        if stamp == self.current().stamp {
            return false;
        }
        match Loaded::open(&self.path, self.cache_size) {
            Ok(loaded) => {
                tracing::info!(path = %self.path.display(), "GeoIP database reloaded");
                *self.loaded.write().expect("never poisoned") = Arc::new(loaded);
                true
            }
            Err(err) => {
                tracing::warn!(%err, "GeoIP database replaced by an unreadable file; keeping the old one");
                false
            }
        }
    }
}

fn spawn_reloader(shared: Weak<Shared>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("geoip-reload".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                // The processor is gone: so is the reason to watch its files.
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let mut reloaded = shared.city.reload_if_replaced();
                if let Some(asn) = &shared.asn {
                    reloaded |= asn.reload_if_replaced();
                }
                if reloaded {
                    // A lookup racing the swap may cache one old answer until the next reload;
                    // locking every lookup to prevent that would cost more than it is worth.
                    shared.cache.clear();
                }
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "cannot start the GeoIP reload thread; databases will not be reloaded");
    }
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
        })
    }
}

impl Loaded {
    fn open(path: &Path, cache_size: usize) -> Result<Self, BuildError> {
        let error = |source| BuildError::Database {
            path: path.to_path_buf(),
            source,
        };
        let stamp = Stamp::of(path)
            .map_err(|e| error(maxminddb::MaxMindDbError::invalid_input(e.to_string())))?;
        let reader = Reader::open_readfile(path).map_err(error)?;
        let kind = &reader.metadata().database_type;
        let maxmind_schema = kind.starts_with("GeoIP2-") || kind.starts_with("GeoLite2-");
        Ok(Self {
            reader,
            stamp,
            maxmind_schema,
            records: Cache::new(cache_size),
        })
    }

    /// The fields `make` makes of the record of `ip`, shared, made once per record.
    fn fields(
        &self,
        ip: IpAddr,
        make: fn(&Self, &LookupResult<'_, Vec<u8>>) -> Option<Object>,
    ) -> Option<Object> {
        let result = self.reader.lookup(ip).ok()?;
        let offset = result.offset()?;
        if let Some(fields) = self.records.get(&offset) {
            return fields;
        }
        let fields = make(self, &result)
            .filter(|fields| !fields.is_empty())
            .map(Object::into_shared);
        self.records.insert(offset, fields.clone());
        fields
    }

    fn geo(&self, result: &LookupResult<'_, Vec<u8>>) -> Option<Object> {
        Some(if self.maxmind_schema {
            maxmind_geo(result.decode::<geoip2::City>().ok()??)
        } else {
            flat_geo(result.decode::<FlatCity>().ok()??)
        })
    }

    fn asn(&self, result: &LookupResult<'_, Vec<u8>>) -> Option<Object> {
        let asn = result.decode::<geoip2::Asn>().ok()??;
        let mut out = Object::with_capacity(2);
        if let Some(number) = asn.autonomous_system_number {
            out.insert("number", number);
        }
        if let Some(name) = asn.autonomous_system_organization {
            out.object_mut("organization").insert("name", name);
        }
        Some(out)
    }
}

/// Made with room for every field it may get: every lookup that misses the cache builds one
/// (and grew it three times before).
fn maxmind_geo(city: geoip2::City) -> Object {
    let mut geo = Object::with_capacity(10);
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            geo.insert(key, value);
        }
    };
    put("city_name", city.city.names.english.map(Into::into));
    put("continent_code", city.continent.code.map(Into::into));
    put(
        "continent_name",
        city.continent.names.english.map(Into::into),
    );
    put("country_iso_code", city.country.iso_code.map(Into::into));
    put("country_name", city.country.names.english.map(Into::into));
    if let Some(region) = city.subdivisions.first() {
        put(
            "region_iso_code",
            match (city.country.iso_code, region.iso_code) {
                (Some(country), Some(region)) => Some(format!("{country}-{region}").into()),
                _ => None,
            },
        );
        put("region_name", region.names.english.map(Into::into));
    }
    put("postal_code", city.postal.code.map(Into::into));
    put("timezone", city.location.time_zone.map(Into::into));
    if let (Some(lat), Some(lon)) = (city.location.latitude, city.location.longitude) {
        put("location", Some(location(lat, lon).into()));
    }
    geo
}

/// A record of ip-location-db's flat City schema.
#[derive(Deserialize)]
struct FlatCity<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    state1: Option<&'a str>,
    #[serde(borrow, default)]
    city: Option<&'a str>,
    #[serde(borrow, default)]
    postcode: Option<&'a str>,
    #[serde(borrow, default)]
    timezone: Option<&'a str>,
    /// Single or double precision, depending on the build: read as whatever number it is.
    #[serde(default)]
    latitude: Option<serde_json::Value>,
    #[serde(default)]
    longitude: Option<serde_json::Value>,
}

fn flat_geo(city: FlatCity) -> Object {
    let mut geo = Object::with_capacity(6);
    for (key, value) in [
        ("city_name", city.city),
        ("country_iso_code", city.country_code),
        ("region_name", city.state1),
        ("postal_code", city.postcode),
        ("timezone", city.timezone),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            geo.insert(key, value);
        }
    }
    let lat = city.latitude.as_ref().and_then(serde_json::Value::as_f64);
    let lon = city.longitude.as_ref().and_then(serde_json::Value::as_f64);
    if let (Some(lat), Some(lon)) = (lat, lon) {
        geo.insert("location", location(lat, lon));
    }
    geo
}

/// `{ "lat": …, "lon": … }`.
fn location(lat: f64, lon: f64) -> Object {
    [("lat", lat), ("lon", lon)].into_iter().collect()
}

/// An address as logs write it: bare, bracketed IPv6, with a port, or the first of an
/// `X-Forwarded-For` list.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.split(',').next()?.trim();
    text.parse()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// Whether a database could know `ip`: not private, loopback, link-local, shared (CGNAT),
/// documentation, multicast, broadcast or unspecified.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || shared)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let documentation = ip.segments()[..2] == [0x2001, 0xdb8];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || documentation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_logs_write_them() {
        for (text, want) in [
            ("8.8.8.8", Some("8.8.8.8")),
            (" 8.8.8.8 ", Some("8.8.8.8")),
            ("8.8.8.8:443", Some("8.8.8.8")),
            ("[2001:4860::8888]:443", Some("2001:4860::8888")),
            ("[2001:4860::8888]", Some("2001:4860::8888")),
            ("8.8.8.8, 10.0.0.1", Some("8.8.8.8")),
            ("999.1.1.1", None),
            ("-", None),
            ("", None),
            ("\u{0}garbage\u{fffd}", None),
        ] {
            assert_eq!(
                parse_ip(text).map(|ip| ip.to_string()).as_deref(),
                want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn private_and_special_addresses_are_skipped() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "81.2.69.142",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_missing_database_is_an_error_naming_it() {
        let config: GeoIpConfig = serde_yaml::from_str(
            "{ database: /nonexistent/City.mmdb, asn_database: /nonexistent/ASN.mmdb }",
        )
        .unwrap();
        let err = GeoIp::build(&config).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/"), "{err}");
    }
}
