//! Apache Kafka: one KRaft node that is broker and controller at once, on 127.0.0.1:19092, with a
//! listener on 127.0.0.1:19094 that requires SASL (PLAIN or SCRAM-SHA-512, one user,
//! [`SASL_USERNAME`]) and one on 127.0.0.1:19095 that speaks TLS (a certificate from the peer's
//! own CA, whose PEM the tests trust).
//!
//! The broker runs from Kafka's own jars on Maven Central (`kafka_2.13` and its dependencies,
//! listed in `tests/peers/kafka/pom.xml`) rather than from the release tarball, because Maven
//! Central is a registry every machine of the project reaches.

use super::{Ctx, Peer, tcp_open};
use crate::certs::Ca;
use crate::cmd;
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Where clients reach the broker.
const BROKER: &str = "127.0.0.1:19092";
/// Where clients that authenticate with SASL/PLAIN reach the broker.
const SASL_BROKER: &str = "127.0.0.1:19094";
/// Where clients that speak TLS reach the broker.
const TLS_BROKER: &str = "127.0.0.1:19095";
/// The one SASL user, and its password: test credentials on a loopback-only broker.
const SASL_USERNAME: &str = "skiff";
const SASL_PASSWORD: &str = "skiff-test-secret";
/// Where the KRaft controller listens (only the broker talks to it).
const CONTROLLER: &str = "127.0.0.1:19093";
/// The cluster id the storage is formatted with: the base64url of the 16 bytes
/// `skiff-test-kafka`. Fixed, so a formatted data folder always matches the config.
const CLUSTER_ID: &str = "c2tpZmYtdGVzdC1rYWZrYQ";
/// What the storage is formatted with, recorded beside it: storage formatted by an older
/// version of this peer (before the SCRAM user) is formatted again; its data is test data.
const FORMAT: &str = "2: SCRAM-SHA-512 user";

/// The Kafka broker peer.
pub struct Kafka;

impl Peer for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn version(&self) -> &'static str {
        "4.1.2"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        cmd::apt_install(&["openjdk-17-jre-headless", "maven"])?;
        let cache = ctx.cache(self);
        if cache.join("lib").is_dir() {
            return Ok(());
        }
        // Built beside the cache folder and renamed into it only when complete, so an
        // interrupted download is never taken for a finished one.
        let partial = ctx
            .cache_root
            .join(format!("{}-{}.partial", self.name(), self.version()));
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let pom = ctx.root.join("tests/peers/kafka/pom.xml");
        cmd::run(
            Command::new("mvn")
                .args(["-q", "-B", "-f"])
                .arg(&pom)
                .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
                .arg(format!("-Dkafka.version={}", self.version()))
                .arg(format!(
                    "-DoutputDirectory={}",
                    partial.join("lib").display()
                ))
                // stdout is the environment that `eval $(cargo xtask peers up)` reads.
                .stdout(std::io::stderr()),
        )?;
        fs::rename(&partial, &cache)
            .with_context(|| format!("renaming {} to {}", partial.display(), cache.display()))
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        let state = ctx.state(self)?;
        let data = state.join("data");
        let keystore = write_keystore(&state.join("pki"))?;
        let config = state.join("server.properties");
        fs::write(&config, server_properties(&data, &keystore))
            .with_context(|| format!("writing {}", config.display()))?;
        // A KRaft node refuses to start on unformatted storage; formatting again would fail
        // once there is data, so it happens only on the first start (or for an older format).
        let format_file = state.join("format");
        if fs::read_to_string(&format_file).ok().as_deref() != Some(FORMAT) {
            if data.exists() {
                fs::remove_dir_all(&data)
                    .with_context(|| format!("removing {}", data.display()))?;
            }
            let formatted = cmd::output(
                self.java(ctx)
                    .arg("-Dskiff.kafka.log.level=WARN")
                    .args(["kafka.tools.StorageTool", "format", "--config"])
                    .arg(&config)
                    .args(["--cluster-id", CLUSTER_ID])
                    // SCRAM credentials live in the cluster's metadata, written at format time.
                    .arg("--add-scram")
                    .arg(format!(
                        "SCRAM-SHA-512=[name={SASL_USERNAME},password={SASL_PASSWORD}]"
                    )),
            )
            .context("formatting the Kafka storage")?;
            eprint!("{formatted}");
            fs::write(&format_file, FORMAT)
                .with_context(|| format!("writing {}", format_file.display()))?;
        }
        let mut broker = self.java(ctx);
        broker.arg("kafka.Kafka").arg(&config);
        ctx.spawn(self, "kafka", broker)
    }

    /// Speaks the Kafka protocol to the broker: an open port is not enough, since the port is
    /// bound (and connections queue) long before the broker has caught up with the controller
    /// and serves requests.
    /// Every listener is checked: a broker started with an older `server.properties` (before
    /// the SASL or TLS listener) is not the peer the tests expect.
    fn healthy(&self, _ctx: &Ctx) -> Result<()> {
        tcp_open(TLS_BROKER)?;
        // ApiVersions is answered before authentication, on the SASL listener too.
        for addr in [BROKER, SASL_BROKER] {
            let apis = api_versions(addr)?;
            // The controller answers ApiVersions too; only a broker offers Produce (key 0).
            ensure!(
                apis.contains(&PRODUCE),
                "{addr} answers Kafka but offers no Produce API"
            );
        }
        Ok(())
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let ca = ctx.state_root.join(self.name()).join("pki/ca.crt");
        vec![
            ("SKIFF_TEST_KAFKA", BROKER.to_string()),
            ("SKIFF_TEST_KAFKA_TLS", TLS_BROKER.to_string()),
            ("SKIFF_TEST_KAFKA_TLS_CA", ca.display().to_string()),
            ("SKIFF_TEST_KAFKA_SASL", SASL_BROKER.to_string()),
            ("SKIFF_TEST_KAFKA_SASL_USERNAME", SASL_USERNAME.to_string()),
            ("SKIFF_TEST_KAFKA_SASL_PASSWORD", SASL_PASSWORD.to_string()),
        ]
    }
}

impl Kafka {
    /// A `java` command with the peer's jars on the classpath and its logging config.
    fn java(&self, ctx: &Ctx) -> Command {
        let mut java = Command::new("java");
        java.args([
            "-Xms256m",
            "-Xmx512m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
        ])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            ctx.root
                .join("tests/peers/kafka/log4j2.properties")
                .display()
        ))
        // `java` itself expands the `*` into every jar of the folder.
        .arg("-cp")
        .arg(format!("{}/*", ctx.cache(self).join("lib").display()));
        java
    }
}

/// The broker's certificate for 127.0.0.1 from the peer's CA (made once), and its key, in one
/// PEM file: Kafka's PEM keystore. Returns its path.
fn write_keystore(pki: &Path) -> Result<std::path::PathBuf> {
    let ca = Ca::load_or_create(pki, "skiff-test-kafka-ca")?;
    let issued = ca.issue_server(pki, "broker", &["127.0.0.1", "localhost"])?;
    let keystore = pki.join("broker-keystore.pem");
    let pem = fs::read_to_string(&issued.key)? + &fs::read_to_string(&issued.cert)?;
    fs::write(&keystore, pem).with_context(|| format!("writing {}", keystore.display()))?;
    Ok(keystore)
}

/// The broker's `server.properties`: a single node, everything on loopback; the broker and
/// controller talk over PLAINTEXT, clients over PLAINTEXT, SASL_PLAINTEXT or SSL.
fn server_properties(data: &Path, keystore: &Path) -> String {
    format!(
        "# Written by `cargo xtask peers up` (xtask/src/peers/kafka.rs) on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{CONTROLLER}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://{BROKER},SASL_PLAINTEXT://{SASL_BROKER},SSL://{TLS_BROKER},CONTROLLER://{CONTROLLER}
advertised.listeners=PLAINTEXT://{BROKER},SASL_PLAINTEXT://{SASL_BROKER},SSL://{TLS_BROKER}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USERNAME}=\"{SASL_PASSWORD}\";
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location={keystore}
log.dirs={data}
num.partitions=3
auto.create.topics.enable=true
# One node: every internal topic has one replica. Few partitions, because the first consumer
# group or transaction otherwise waits while 50 of them are created.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests must not wait 3 s for a consumer group's first rebalance.
group.initial.rebalance.delay.ms=0
# Two cores are shared with the other peers and the build.
num.network.threads=2
num.io.threads=2
background.threads=2
",
        data = data.display(),
        keystore = keystore.display()
    )
}

/// The Produce API's key in Kafka's protocol.
const PRODUCE: i16 = 0;
/// The ApiVersions API's key in Kafka's protocol.
const API_VERSIONS: i16 = 18;

/// Sends an ApiVersions v0 request to `addr` and returns the API keys the server offers.
///
/// Version 0 because every Kafka since 0.10 answers it, with a response header and body that
/// never changed: correlation id, error code, then `[api key, min version, max version]`.
fn api_versions(addr: &str) -> Result<Vec<i16>> {
    const CORRELATION_ID: i32 = 0x736b_6966;
    const CLIENT_ID: &[u8] = b"skiff-xtask";
    let socket: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(1))
        .with_context(|| format!("nothing listens on {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;

    // Request header v1 (api key, api version, correlation id, client id); the body is empty.
    let mut request = Vec::new();
    request.extend(API_VERSIONS.to_be_bytes());
    request.extend(0i16.to_be_bytes());
    request.extend(CORRELATION_ID.to_be_bytes());
    request.extend((CLIENT_ID.len() as i16).to_be_bytes());
    request.extend(CLIENT_ID);
    let mut frame = (request.len() as i32).to_be_bytes().to_vec();
    frame.extend(request);
    stream
        .write_all(&frame)
        .with_context(|| format!("sending ApiVersions to {addr}"))?;

    let mut size = [0; 4];
    stream
        .read_exact(&mut size)
        .with_context(|| format!("reading the ApiVersions response from {addr}"))?;
    let size = usize::try_from(i32::from_be_bytes(size)).unwrap_or(0);
    if !(10..=1 << 16).contains(&size) {
        bail!("{addr} does not speak Kafka: a response of {size} bytes to ApiVersions");
    }
    let mut body = vec![0; size];
    stream
        .read_exact(&mut body)
        .with_context(|| format!("reading the ApiVersions response from {addr}"))?;

    let correlation_id = i32::from_be_bytes(body[0..4].try_into()?);
    let error_code = i16::from_be_bytes(body[4..6].try_into()?);
    let count = usize::try_from(i32::from_be_bytes(body[6..10].try_into()?)).unwrap_or(0);
    ensure!(
        correlation_id == CORRELATION_ID,
        "{addr} does not speak Kafka: wrong correlation id in the ApiVersions response"
    );
    ensure!(
        error_code == 0,
        "{addr} answered ApiVersions with error {error_code}"
    );
    let entries = body[10..].chunks_exact(6).take(count);
    ensure!(
        entries.len() == count,
        "{addr} sent a truncated ApiVersions response"
    );
    Ok(entries
        .map(|entry| i16::from_be_bytes([entry[0], entry[1]]))
        .collect())
}
