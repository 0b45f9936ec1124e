//! `cargo xtask run`: both programs on embedded defaults, no cluster needed.
//!
//! A writer thread keeps appending nginx access lines to `target/demo/logs/access.log`
//! (rotating it by rename now and then); the agent tails that folder and prints enriched
//! events to the console; the webhook serves `https://127.0.0.1:8443` with a self-signed
//! certificate from `cargo xtask certs`. Ctrl-C stops everything.

use crate::{certs, cmd, toolchain};
use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The agent configuration of the demo: the folder's logs, parsed as nginx access lines,
/// enriched, printed.
const AGENT_CONFIG: &str = r#"inputs:
  - type: filestream
    id: demo
    paths: ["{logs}/*.log"]
processors:
  - add_fields:
      target: ""
      fields:
        environment: "${ENVIRONMENT:demo}"
        service_name: skiff-demo
output.console:
  pretty: false
registry:
  path: "{demo}/registry"
"#;

/// Runs the demo until Ctrl-C, or for `duration` when given.
pub fn demo(root: &Path, duration: Option<Duration>) -> Result<()> {
    toolchain::ensure_build_toolchain()?;
    cmd::run(Command::new("cargo").args([
        "build",
        "--package",
        "skiff-agent",
        "--package",
        "skiff-webhook",
    ]))?;
    let demo = root.join("target").join("demo");
    let logs = demo.join("logs");
    fs::create_dir_all(&logs)?;
    let config = demo.join("agent.yml");
    fs::write(
        &config,
        AGENT_CONFIG
            .replace("{logs}", &logs.to_string_lossy())
            .replace("{demo}", &demo.to_string_lossy()),
    )?;
    let tls = certs::webhook(&demo.join("certs"))?.issued;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // The terminal sends SIGINT to the children too; xtask only has to notice and wait.
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let writer = {
        let stop = Arc::clone(&stop);
        let logs = logs.clone();
        std::thread::spawn(move || write_demo_logs(&logs, &stop))
    };

    let bin = root.join("target").join("debug");
    let mut children = vec![
        (
            "skiff-agent",
            Command::new(bin.join("skiff-agent"))
                .args(["run", "--config"])
                .arg(&config)
                .spawn()
                .context("starting skiff-agent")?,
        ),
        (
            "skiff-webhook",
            Command::new(bin.join("skiff-webhook"))
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .args(["--listen", "127.0.0.1:8443"])
                .args(["--metrics-listen", "127.0.0.1:9478"])
                .spawn()
                .context("starting skiff-webhook")?,
        ),
    ];
    eprintln!(
        "demo: agent tails {}, webhook on https://127.0.0.1:8443 — Ctrl-C stops",
        logs.display()
    );

    let deadline = duration.map(|d| Instant::now() + d);
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        if let Some((name, status)) = exited(&mut children) {
            stop.store(true, Ordering::SeqCst);
            shutdown(&mut children);
            let _ = writer.join();
            anyhow::bail!("{name} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    shutdown(&mut children);
    let _ = writer.join();
    Ok(())
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

/// Appends nginx combined-format lines, four a second, rotating by rename every 200 lines
/// as logrotate would.
fn write_demo_logs(logs: &Path, stop: &AtomicBool) {
    const CLIENTS: [&str; 4] = ["8.8.8.8", "81.2.69.142", "1.1.1.1", "2a02:c7f:7e21::1"];
    const PATHS: [&str; 4] = [
        "/users/42",
        "/users/7/orders/9f1c2",
        "/health",
        "/search?q=skiff",
    ];
    const AGENTS: [&str; 2] = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "curl/8.5.0",
    ];
    let path = logs.join("access.log");
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if n > 0 && n % 200 == 0 {
            let _ = fs::rename(&path, logs.join(format!("access.log.{}", n / 200)));
        }
        let line = format!(
            "{} - - [{}] \"GET {} HTTP/1.1\" {} {} \"-\" \"{}\"\n",
            CLIENTS[n as usize % CLIENTS.len()],
            httpdate(),
            PATHS[n as usize % PATHS.len()],
            if n % 7 == 0 { 404 } else { 200 },
            512 + n % 100,
            AGENTS[n as usize % AGENTS.len()],
        );
        if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
            let _ = file.write_all(line.as_bytes());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The current time in the nginx log format, e.g. `28/Nov/2026:13:31:12 +0000`.
fn httpdate() -> String {
    chrono::Utc::now()
        .format("%d/%b/%Y:%H:%M:%S %z")
        .to_string()
}
