//! `cargo xtask run`: both programs on embedded defaults, no cluster needed.
//!
//! A writer thread keeps appending nginx access lines to `target/demo/logs/access.log`
//! (rotating it by rename now and then); the agent tails that folder with the product's real
//! chain (nginx parser, GeoLite2, user agents, routes) and its events are shown on stdout,
//! readably in a terminal and as NDJSON when piped or with `--json`; a summary of the agent's
//! own metrics goes to stderr every few seconds. The webhook serves `https://127.0.0.1:8443`
//! with a certificate from `cargo xtask certs`, admits a few sample Deployments and prints what
//! it changed. Ctrl-C stops everything.

mod agent;
mod webhook;

use crate::{certs, cmd, peers, toolchain};
use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::IsTerminal;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the demo's agent serves its metrics (read for the summary line).
const AGENT_METRICS: &str = "127.0.0.1:9479";
const WEBHOOK_LISTEN: &str = "127.0.0.1:8443";

/// Runs the demo until Ctrl-C, or for `duration` when given; `json` prints the events as
/// NDJSON even in a terminal.
pub fn demo(root: &Path, duration: Option<Duration>, json: bool) -> Result<()> {
    toolchain::ensure_build_toolchain()?;
    cmd::run(Command::new("cargo").args([
        "build",
        "--package",
        "skiff-agent",
        "--package",
        "skiff-webhook",
    ]))?;
    // The GeoLite2 databases, fetched and cached once, as for the tests.
    let env = peers::up(
        &peers::Ctx::new(root),
        &peers::select(&["geoip".to_string()])?,
    )?;
    let file = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
            .with_context(|| format!("the geoip peer did not name {name}"))
    };
    let geoip = agent::GeoIpFiles {
        city: file("SKIFF_TEST_GEOIP_CITY")?,
        asn: file("SKIFF_TEST_GEOIP_ASN")?,
    };
    let demo = root.join("target").join("demo");
    let logs = demo.join("logs");
    std::fs::create_dir_all(&logs)?;
    let config = agent::write_config(&demo, &logs, &geoip, AGENT_METRICS)?;
    let certs = certs::webhook(&demo.join("certs"))?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // The terminal sends SIGINT to the children too; xtask only has to notice and wait.
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let bin = root.join("target").join("debug");
    let mut webhook = Command::new(bin.join("skiff-webhook"))
        .arg("--tls-cert")
        .arg(&certs.issued.cert)
        .arg("--tls-key")
        .arg(&certs.issued.key)
        .args(["--listen", WEBHOOK_LISTEN, "--no-cluster"])
        .args(["--metrics-listen", "127.0.0.1:9478"])
        .env("SKIFF_LOG", "warn")
        .spawn()
        .context("starting skiff-webhook")?;
    let admitted = webhook::admit_samples(&format!("https://{WEBHOOK_LISTEN}"), &certs.ca_bundle);
    if let Err(err) = admitted {
        let _ = webhook.kill();
        let _ = webhook.wait();
        return Err(err);
    }

    let mut agent = Command::new(bin.join("skiff-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting skiff-agent")?;
    let show = if json || !std::io::stdout().is_terminal() {
        agent::Show::Json
    } else {
        agent::Show::Pretty
    };
    let shown = Arc::new(AtomicU64::new(0));
    let stdout = agent.stdout.take().context("the agent's stdout")?;
    let printer = {
        let shown = Arc::clone(&shown);
        std::thread::spawn(move || agent::show_events(stdout, show, &shown))
    };
    let summary = {
        let (stop, shown) = (Arc::clone(&stop), Arc::clone(&shown));
        std::thread::spawn(move || agent::summarise(AGENT_METRICS, shown, &stop))
    };
    let writer = {
        let stop = Arc::clone(&stop);
        let logs = logs.clone();
        std::thread::spawn(move || agent::write_logs(&logs, &stop))
    };
    eprintln!(
        "demo: the agent tails {}; the webhook keeps serving https://{WEBHOOK_LISTEN}/mutate — Ctrl-C stops",
        logs.display()
    );

    let mut children = vec![("skiff-agent", agent), ("skiff-webhook", webhook)];
    let deadline = duration.map(|d| Instant::now() + d);
    let mut early = None;
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        if let Some(exit) = exited(&mut children) {
            early = Some(exit);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    shutdown(&mut children);
    for thread in [writer, summary, printer] {
        let _ = thread.join();
    }
    match early {
        Some((name, status)) => anyhow::bail!("{name} exited early: {status}"),
        None => Ok(()),
    }
}

fn exited(
    children: &mut [(&'static str, Child)],
) -> Option<(&'static str, std::process::ExitStatus)> {
    children
        .iter_mut()
        .find_map(|(name, child)| child.try_wait().ok().flatten().map(|s| (*name, s)))
}

/// SIGTERM to each program (they drain and exit), SIGKILL after 10 s.
fn shutdown(children: &mut [(&'static str, Child)]) {
    for (_, child) in children.iter() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, child) in children.iter_mut() {
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait().ok().flatten().is_none() {
            eprintln!("demo: {name} did not stop in time, killing it");
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}
