//! kube-apiserver and etcd: a control plane without controllers, like controller-runtime's
//! envtest, on 127.0.0.1:16443.
//!
//! Both are built from their Go modules on the module proxy: `tests/peers/kube/apiserver` is
//! upstream's `cmd/kube-apiserver` main against `k8s.io/kubernetes`, and `tests/peers/kube/etcd`
//! runs etcd's `embed` package. The API server serves TLS with a certificate from a test CA,
//! authenticates clients by certificate (the admin kubeconfig is `system:masters`), authorizes
//! with RBAC, and calls admission webhooks on loopback directly (no egress selector).

use super::{Ctx, Peer, tcp_open};
use crate::certs::Ca;
use crate::cmd;
use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use rcgen::KeyPair;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The Kubernetes release, as pinned in `tests/peers/kube/apiserver/go.mod`.
const VERSION: &str = "v1.37.2";
/// The Go modules of the two programs, relative to the workspace root.
const SOURCE_DIR: &str = "tests/peers/kube";
/// The programs: the folder of each Go module under [`SOURCE_DIR`], also the binary's name.
const PROGRAMS: [&str; 2] = ["etcd", "kube-apiserver"];
/// The files each program is built from; copies kept beside the binaries tell a stale build
/// apart (a changed pin in a `go.mod` rebuilds).
const SOURCES: [&str; 3] = ["main.go", "go.mod", "go.sum"];
/// etcd's client endpoint (plain HTTP; only the API server talks to it).
const ETCD_CLIENT: &str = "127.0.0.1:12379";
/// etcd's peer endpoint: a one-member cluster never uses it, but etcd always listens.
const ETCD_PEER: &str = "127.0.0.1:12380";
/// The API server's HTTPS endpoint.
const APISERVER: &str = "127.0.0.1:16443";
/// How long `start` waits for etcd before starting the API server, which needs it at once.
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);

/// The kube-apiserver peer (with its etcd).
pub struct KubeApiserver;

impl Peer for KubeApiserver {
    fn name(&self) -> &'static str {
        "kube"
    }

    fn version(&self) -> &'static str {
        VERSION
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        let source = ctx.root.join(SOURCE_DIR);
        let cache = ctx.cache(self);
        if built(&source, &cache)? {
            return Ok(());
        }
        if !cmd::has("go") {
            bail!("the Go toolchain is needed to build the kube peer (`go` is not on the PATH)");
        }
        // Built beside the cache folder and renamed into it only when complete, so an
        // interrupted build is never taken for a finished one.
        let partial = ctx
            .cache_root
            .join(format!(".{}-{}.partial", self.name(), self.version()));
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        let started = Instant::now();
        for program in PROGRAMS {
            let module = source.join(program);
            let ldflags = if program == "kube-apiserver" {
                version_ldflags()
            } else {
                String::new()
            };
            go_build(&module, &ldflags, &partial.join(program))?;
            let copies = partial.join("src").join(program);
            fs::create_dir_all(&copies)?;
            for file in SOURCES {
                fs::copy(module.join(file), copies.join(file))
                    .with_context(|| format!("copying {file} of {program}"))?;
            }
        }
        eprintln!("built kube-apiserver and etcd in {:.0?}", started.elapsed());
        if cache.exists() {
            fs::remove_dir_all(&cache)
                .with_context(|| format!("removing stale {}", cache.display()))?;
        }
        fs::rename(&partial, &cache)
            .with_context(|| format!("moving {} to {}", partial.display(), cache.display()))
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        let state = ctx.state(self)?;
        let pki = Pki::create(&state.join("pki"))?;
        write_kubeconfig(&pki, &kubeconfig(&state))?;

        // A fresh store on every start: nothing from an earlier run (or a half-written,
        // never-fsynced one) leaks into this one.
        let data = state.join("etcd-data");
        if data.exists() {
            fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        }
        let cache = ctx.cache(self);
        let mut etcd = Command::new(cache.join("etcd"));
        etcd.arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client={ETCD_CLIENT}"))
            .arg(format!("--listen-peer={ETCD_PEER}"));
        ctx.spawn(self, "etcd", etcd)?;
        wait_for_etcd()?;

        let (host, port) = APISERVER.split_once(':').expect("APISERVER is host:port");
        let file = |path: &Path| path.display().to_string();
        let mut apiserver = Command::new(cache.join("kube-apiserver"));
        apiserver.args([
            format!("--etcd-servers=http://{ETCD_CLIENT}"),
            format!("--bind-address={host}"),
            format!("--advertise-address={host}"),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", file(&pki.serving_cert)),
            format!("--tls-private-key-file={}", file(&pki.serving_key)),
            format!("--client-ca-file={}", file(&pki.ca_cert)),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://{APISERVER}"),
            format!(
                "--service-account-key-file={}",
                file(&pki.service_account_public)
            ),
            format!(
                "--service-account-signing-key-file={}",
                file(&pki.service_account_key)
            ),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            // No controller-manager creates each namespace's `default` ServiceAccount, so
            // this plugin would reject every Pod (envtest disables it for the same reason).
            "--disable-admission-plugins=ServiceAccount".into(),
            // The endpoint reconciler would publish the advertise address as the `kubernetes`
            // Service's endpoint, and Endpoints may not point at loopback: the API server
            // refuses to start with it.
            "--endpoint-reconciler-type=none".into(),
        ]);
        ctx.spawn(self, "kube-apiserver", apiserver)
    }

    fn healthy(&self, ctx: &Ctx) -> Result<()> {
        let pki = ctx.state_root.join(self.name()).join("pki");
        let read = |name: &str| {
            let path = pki.join(name);
            fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let identity = [read("admin.crt")?, read("admin.key")?].concat();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .build()?;
        let url = format!("https://{APISERVER}/readyz");
        let response = client
            .get(&url)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text()?;
        ensure!(status.is_success(), "GET {url}: {status}: {body}");
        Ok(())
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let path = kubeconfig(&ctx.state_root.join(self.name()));
        vec![("SKIFF_TEST_KUBECONFIG", path.display().to_string())]
    }

    fn start_timeout(&self) -> Duration {
        Duration::from_secs(90)
    }
}

/// Whether `cache` holds both binaries, built from the sources now in `source`.
fn built(source: &Path, cache: &Path) -> Result<bool> {
    for program in PROGRAMS {
        if !cache.join(program).exists() {
            return Ok(false);
        }
        for file in SOURCES {
            let current = fs::read(source.join(program).join(file))
                .with_context(|| format!("reading {file} of {program}"))?;
            let copy = fs::read(cache.join("src").join(program).join(file)).unwrap_or_default();
            if current != copy {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// `go build`s the main package of `module` into `binary`.
fn go_build(module: &Path, ldflags: &str, binary: &Path) -> Result<()> {
    cmd::run(
        Command::new("go")
            // Two packages at a time: the machine has two cores, shared with everything else.
            .args([
                "build",
                "-p",
                "2",
                "-trimpath",
                "-buildvcs=false",
                "-mod=readonly",
            ])
            .arg(format!("-ldflags={ldflags}"))
            .arg("-o")
            .arg(binary)
            .arg(".")
            .current_dir(module),
    )
}

/// The linker flags that stamp the release into the API server: what `/version` and
/// `kubectl version` report (v0.0.0-master without them).
fn version_ldflags() -> String {
    let mut parts = VERSION.trim_start_matches('v').split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ]
    .iter()
    .flat_map(|package| {
        [
            format!("-X {package}.gitVersion={VERSION}"),
            format!("-X {package}.gitMajor={major}"),
            format!("-X {package}.gitMinor={minor}"),
            format!("-X {package}.gitTreeState=clean"),
        ]
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// Blocks until etcd accepts connections.
fn wait_for_etcd() -> Result<()> {
    let deadline = Instant::now() + ETCD_TIMEOUT;
    while let Err(err) = tcp_open(ETCD_CLIENT) {
        if Instant::now() >= deadline {
            return Err(err).context(format!("etcd not up after {ETCD_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The certificates and keys of the peer, under `target/peers/kube/pki/`.
struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    /// Signs ServiceAccount tokens.
    service_account_key: PathBuf,
    /// Verifies them.
    service_account_public: PathBuf,
}

impl Pki {
    /// Loads or creates the CA in `dir` and issues the serving and admin certificates from it;
    /// creates the ServiceAccount key pair once.
    fn create(dir: &Path) -> Result<Self> {
        let ca = Ca::load_or_create(dir, "skiff-kube-ca")?;
        // The Service IP 10.0.0.1 and the in-cluster names are what a pod would dial.
        let serving = ca.issue_server(
            dir,
            "apiserver",
            &[
                "localhost",
                "127.0.0.1",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let admin = ca.issue_client(dir, "admin", "admin", &["system:masters"])?;
        let service_account_key = dir.join("service-account.key");
        let service_account_public = dir.join("service-account.pub");
        if !service_account_key.exists() || !service_account_public.exists() {
            let key = KeyPair::generate()?;
            fs::write(&service_account_public, key.public_key_pem())?;
            fs::write(&service_account_key, key.serialize_pem())?;
        }
        Ok(Self {
            ca_cert: ca.cert_path,
            serving_cert: serving.cert,
            serving_key: serving.key,
            admin_cert: admin.cert,
            admin_key: admin.key,
            service_account_key,
            service_account_public,
        })
    }
}

/// `target/peers/kube/kubeconfig`.
fn kubeconfig(state: &Path) -> PathBuf {
    state.join("kubeconfig")
}

/// Writes an admin kubeconfig with the certificates inline, so it works from any folder.
fn write_kubeconfig(pki: &Pki, path: &Path) -> Result<()> {
    let data = |path: &Path| -> Result<String> {
        let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(pem))
    };
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: skiff-test
    cluster:
      server: https://{APISERVER}
      certificate-authority-data: {ca}
users:
  - name: admin
    user:
      client-certificate-data: {cert}
      client-key-data: {key}
contexts:
  - name: skiff-test
    context:
      cluster: skiff-test
      user: admin
      namespace: default
current-context: skiff-test
",
        ca = data(&pki.ca_cert)?,
        cert = data(&pki.admin_cert)?,
        key = data(&pki.admin_key)?,
    );
    fs::write(path, config).with_context(|| format!("writing {}", path.display()))
}
