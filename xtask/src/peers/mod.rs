//! The real peers that skiff is tested against, all on 127.0.0.1.
//!
//! Each peer is built or downloaded once into `~/.cache/skiff/peers/<name>-<version>/` (shared
//! by every clone of the repository, so CI's fresh clone reuses it) and runs with its state and
//! logs under `target/peers/<name>/`. Every process started here records its pid in that folder
//! and leads its own process group, so `peers down` can stop it and all its children.

mod beats;
mod geoip;
mod kafka;
mod kube;
mod manifests;
mod opensearch;

use crate::cmd;
use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `cargo xtask peers` does.
#[derive(clap::Subcommand, Clone, Copy)]
pub enum Action {
    /// Build or download (cached), start and health-check the peers; print their environment.
    Up,
    /// Stop every peer process this workspace started.
    Down,
    /// Show which peers are cached, running and healthy.
    Status,
}

/// A real service that tests run against.
pub trait Peer {
    /// Short name: the folder under `target/peers/`, and what `--only` selects.
    fn name(&self) -> &'static str;
    /// Pinned version, part of the cache folder's name.
    fn version(&self) -> &'static str;
    /// Builds or downloads the peer into `ctx.cache(self)` unless it is already there.
    fn install(&self, ctx: &Ctx) -> Result<()>;
    /// Starts the peer's processes in the background (through [`Ctx::spawn`]).
    fn start(&self, ctx: &Ctx) -> Result<()>;
    /// Whether the running peer answers like the real thing (one quick probe, no waiting).
    fn healthy(&self, ctx: &Ctx) -> Result<()>;
    /// The `SKIFF_TEST_*` variables that tell tests where the peer is.
    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)>;
    /// How long the peer may take to become healthy after `start`.
    fn start_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// Every peer, in start order.
pub fn all() -> Vec<Box<dyn Peer>> {
    vec![
        Box::new(geoip::GeoIp),
        Box::new(kube::KubeApiserver),
        Box::new(kafka::Kafka),
        Box::new(opensearch::OpenSearch),
        Box::new(beats::BeatsServer),
        Box::new(manifests::Kustomize),
        Box::new(manifests::CertManagerCrds),
    ]
}

/// Where a peer's cache and state live.
pub struct Ctx {
    /// The workspace root.
    pub root: PathBuf,
    /// `~/.cache/skiff/peers`.
    pub cache_root: PathBuf,
    /// `target/peers`.
    pub state_root: PathBuf,
}

impl Ctx {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            cache_root: cmd::cache_root().join("peers"),
            state_root: root.join("target").join("peers"),
        }
    }

    /// The peer's cache folder, `~/.cache/skiff/peers/<name>-<version>/`.
    pub fn cache(&self, peer: &dyn Peer) -> PathBuf {
        self.cache_root
            .join(format!("{}-{}", peer.name(), peer.version()))
    }

    /// The peer's state folder, `target/peers/<name>/` (created).
    pub fn state(&self, peer: &dyn Peer) -> Result<PathBuf> {
        let dir = self.state_root.join(peer.name());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Starts `command` as process `process` of `peer`: its own process group, stdout and
    /// stderr appended to `target/peers/<peer>/<process>.log`, pid in `<process>.pid`.
    pub fn spawn(&self, peer: &dyn Peer, process: &str, mut command: Command) -> Result<()> {
        let dir = self.state(peer)?;
        let log_path = dir.join(format!("{process}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {} ({process})", peer.name()))?;
        fs::write(dir.join(format!("{process}.pid")), child.id().to_string())?;
        Ok(())
    }
}

/// Runs `action` on the selected peers.
pub fn dispatch(root: &Path, action: Action, only: &[String]) -> Result<()> {
    let ctx = Ctx::new(root);
    let peers = select(only)?;
    match action {
        Action::Up => {
            let env = up(&ctx, &peers)?;
            for (key, value) in env {
                println!("export {key}={value}");
            }
            Ok(())
        }
        Action::Down => down(&ctx),
        Action::Status => status(&ctx, &peers),
    }
}

/// The peers named in `only` (all when empty).
pub fn select(only: &[String]) -> Result<Vec<Box<dyn Peer>>> {
    let peers = all();
    if only.is_empty() {
        return Ok(peers);
    }
    for name in only {
        if !peers.iter().any(|p| p.name() == name) {
            let known: Vec<_> = peers.iter().map(|p| p.name()).collect();
            bail!("unknown peer {name:?}; peers are {}", known.join(", "));
        }
    }
    Ok(peers
        .into_iter()
        .filter(|p| only.iter().any(|n| n == p.name()))
        .collect())
}

/// Starts `selected` peers, runs `body` with their environment, and stops every peer again
/// even when `body` (or a peer's start) fails.
pub fn with_peers(
    root: &Path,
    selected: &[Box<dyn Peer>],
    body: impl FnOnce(&[(&'static str, String)]) -> Result<()>,
) -> Result<()> {
    let ctx = Ctx::new(root);
    let result = up(&ctx, selected).and_then(|env| body(&env));
    let stopped = down(&ctx);
    result.and(stopped)
}

/// Installs, starts and waits for each peer (a healthy running peer is left as it is);
/// returns the environment for tests.
pub fn up(ctx: &Ctx, peers: &[Box<dyn Peer>]) -> Result<Vec<(&'static str, String)>> {
    let mut env = Vec::new();
    for peer in peers {
        let name = peer.name();
        let started = Instant::now();
        peer.install(ctx)
            .with_context(|| format!("peer {name}: install failed"))?;
        if peer.healthy(ctx).is_err() {
            stop_peer(ctx, name)?;
            peer.start(ctx)
                .with_context(|| format!("peer {name}: start failed"))?;
            wait_healthy(ctx, peer.as_ref())?;
        }
        eprintln!(
            "peer {name} {} up in {:.1?}",
            peer.version(),
            started.elapsed()
        );
        env.extend(peer.env(ctx));
    }
    Ok(env)
}

fn wait_healthy(ctx: &Ctx, peer: &dyn Peer) -> Result<()> {
    let deadline = Instant::now() + peer.start_timeout();
    loop {
        match peer.healthy(ctx) {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                let logs = ctx.state_root.join(peer.name());
                return Err(err).with_context(|| {
                    format!(
                        "peer {} not healthy after {:?}; logs in {}",
                        peer.name(),
                        peer.start_timeout(),
                        logs.display()
                    )
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Stops every process recorded under `target/peers/`.
pub fn down(ctx: &Ctx) -> Result<()> {
    let Ok(entries) = fs::read_dir(&ctx.state_root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.path().is_dir() {
            stop_peer(ctx, &entry.file_name().to_string_lossy())?;
        }
    }
    Ok(())
}

/// Stops the processes of one peer: SIGTERM to each process group, SIGKILL after 15 s.
fn stop_peer(ctx: &Ctx, name: &str) -> Result<()> {
    let dir = ctx.state_root.join(name);
    for (pid_file, pid) in pid_files(&dir) {
        if killpg(pid, Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                eprintln!("peer {name}: pid {pid} ignored SIGTERM, killing");
                let _ = killpg(pid, Signal::SIGKILL);
            }
            eprintln!("peer {name}: stopped pid {pid}");
        }
        fs::remove_file(&pid_file)?;
    }
    Ok(())
}

/// The peer's pid files, newest first: processes stop in the reverse order of their start, so
/// a server goes before the store it depends on (kube-apiserver before etcd — the other way
/// round the API server retries its lease for minutes).
fn pid_files(dir: &Path) -> Vec<(PathBuf, Pid)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pid"))
        .filter_map(|p| {
            let pid = fs::read_to_string(&p).ok()?.trim().parse().ok()?;
            let started = fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((started, p, Pid::from_raw(pid)))
        })
        .collect();
    found.sort_by_key(|(started, _, _)| std::cmp::Reverse(*started));
    found.into_iter().map(|(_, p, pid)| (p, pid)).collect()
}

/// Whether process `pid` still runs (a zombie, dead but not yet reaped, counts as gone).
fn alive(pid: Pid) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state letter follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim().chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

fn status(ctx: &Ctx, peers: &[Box<dyn Peer>]) -> Result<()> {
    for peer in peers {
        let cached = if ctx.cache(peer.as_ref()).exists() {
            "cached"
        } else {
            "not built"
        };
        let running: Vec<String> = pid_files(&ctx.state_root.join(peer.name()))
            .into_iter()
            .filter(|(_, pid)| alive(*pid))
            .map(|(_, pid)| pid.to_string())
            .collect();
        let health = match peer.healthy(ctx) {
            Ok(()) => "healthy".to_string(),
            Err(err) => format!("not healthy ({err:#})"),
        };
        println!(
            "{:<12} {:<10} {:<10} pids [{}] {health}",
            peer.name(),
            peer.version(),
            cached,
            running.join(" ")
        );
    }
    Ok(())
}

/// Polls an HTTP(S) URL and expects a success status; shared by the peers' health checks.
pub fn http_ok(url: &str) -> Result<String> {
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .danger_accept_invalid_certs(true)
        .build()?
        .get(url)
        .send()
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text()?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// Whether something accepts TCP connections on `addr`.
pub fn tcp_open(addr: &str) -> Result<()> {
    let socket = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(1))
        .with_context(|| format!("nothing listens on {addr}"))?;
    Ok(())
}
