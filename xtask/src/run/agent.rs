//! The agent's half of the demo: an nginx access log written as a busy site would (public
//! clients, real browsers, rotation by rename), the product's real chain on it, and the
//! events shown as a person reads them.

use anyhow::{Context, Result};
use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The demo's agent configuration: the access log parsed as nginx lines, then the product
/// description's `add_fields` and `geolocation` block, user agents and routes.
const CONFIG: &str = r#"inputs:
  - type: filestream
    id: demo
    paths: ["{logs}/*.log"]
    parsers:
      - nginx: {}
processors:
  - add_fields:
      target: ""
      fields:
        environment: "${ENVIRONMENT:demo}"
        service_name: skiff-demo
  - geolocation:
      field: client.ip
      database: "{city}"
      asn_database: "{asn}"
  - user_agent: {}
  - http: {}
output.console:
  pretty: false
registry:
  path: "{demo}/registry"
metrics:
  listen: "{metrics}"
"#;

/// Writes the agent's configuration into `demo`; returns its path.
pub fn write_config(
    demo: &Path,
    logs: &Path,
    geoip: &GeoIpFiles,
    metrics: &str,
) -> Result<std::path::PathBuf> {
    let config = demo.join("agent.yml");
    let text = CONFIG
        .replace("{logs}", &logs.to_string_lossy())
        .replace("{demo}", &demo.to_string_lossy())
        .replace("{city}", &geoip.city)
        .replace("{asn}", &geoip.asn)
        .replace("{metrics}", metrics);
    fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

/// The GeoLite2 databases the demo enriches with (the `geoip` test peer's files).
pub struct GeoIpFiles {
    pub city: String,
    pub asn: String,
}

/// Clients of a public site: a mix of countries, networks and address families (each has a
/// city in the GeoLite2 databases the demo uses).
const CLIENTS: [&str; 8] = [
    "81.2.69.142",
    "175.16.199.10",
    "24.24.24.24",
    "193.0.6.139",
    "196.25.1.1",
    "190.98.128.1",
    "130.104.1.1",
    "2001:67c:2e8:22::c100:68b",
];
/// What they ask for: ids and hashes in the paths, which the `http` processor turns into
/// routes.
const REQUESTS: [(&str, &str, u16); 6] = [
    ("GET", "/users/42", 200),
    ("GET", "/users/7/orders/9f1c2e77", 200),
    ("POST", "/cart/items", 201),
    ("GET", "/products/1234?color=blue", 200),
    ("GET", "/users/999", 404),
    ("GET", "/health", 200),
];
/// Real browsers and clients.
const AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "curl/8.5.0",
];

/// Appends nginx combined-format lines, four a second, rotating by rename every 200 lines as
/// logrotate would; returns when `stop` is set.
pub fn write_logs(logs: &Path, stop: &AtomicBool) {
    let path = logs.join("access.log");
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if n > 0 && n % 200 == 0 {
            let _ = fs::rename(&path, logs.join(format!("access.log.{}", n / 200)));
        }
        // Co-prime list lengths: the combinations keep changing.
        let (method, target, status) = REQUESTS[n as usize % REQUESTS.len()];
        let line = format!(
            "{} - - [{}] \"{method} {target} HTTP/1.1\" {status} {} \"https://shop.example/\" \"{}\"\n",
            CLIENTS[n as usize % CLIENTS.len()],
            chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S %z"),
            512 + n % 1500,
            AGENTS[(n / 2) as usize % AGENTS.len()],
        );
        if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
            let _ = file.write_all(line.as_bytes());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// The agent's NDJSON as it is (piped, or `--json`).
    Json,
    /// The first event in full, then one line per event (a terminal).
    Pretty,
}

/// Copies the agent's stdout to ours in the chosen form, counting events into `shown`.
pub fn show_events(stdout: impl Read, show: Show, shown: &AtomicU64) {
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        shown.fetch_add(1, Ordering::Relaxed);
        let text = match (show, serde_json::from_str::<Value>(&line)) {
            (Show::Json, _) | (_, Err(_)) => line,
            (Show::Pretty, Ok(event)) if shown.load(Ordering::Relaxed) == 1 => format!(
                "the first event in full (then one line each; --json for NDJSON):\n{}",
                serde_json::to_string_pretty(&event).unwrap_or(line)
            ),
            (Show::Pretty, Ok(event)) => one_line(&event),
        };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// An event in a line: request and route, client and where it is, network, browser.
fn one_line(event: &Value) -> String {
    let text = |path: &str| {
        let value = path.split('.').fold(event, |v, key| &v[key]);
        match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let joined = |parts: &[String], separator: &str| {
        parts
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(separator)
    };
    let place = joined(
        &[
            text("client.geo.city_name"),
            text("client.geo.country_iso_code"),
        ],
        ", ",
    );
    let mut network = match text("client.as.number") {
        number if number.is_empty() => String::new(),
        number => format!("AS{number} {}", text("client.as.organization.name")),
    };
    network.truncate(network.floor_char_boundary(30));
    let browser = joined(&[text("user_agent.name"), text("user_agent.version")], " ");
    let system = match joined(
        &[text("user_agent.os.name"), text("user_agent.device.name")],
        ", ",
    ) {
        system if system.is_empty() => system,
        system => format!(" ({system})"),
    };
    format!(
        "{:<4} {:<27} {} -> {:<22} | {:<25} {:<18} {:<30} | {browser}{system}",
        text("http.request.method"),
        text("url.original"),
        text("http.response.status_code"),
        text("http.route"),
        text("client.ip"),
        place,
        network,
    )
}

/// Prints a summary of the agent's own metrics to stderr every few seconds, until `stop`.
pub fn summarise(metrics: &str, shown: Arc<AtomicU64>, stop: &AtomicBool) {
    let url = format!("http://{metrics}/metrics");
    let client = reqwest::blocking::Client::new();
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
        if waited < Duration::from_secs(5) {
            continue;
        }
        waited = Duration::ZERO;
        let Ok(text) = client.get(&url).send().and_then(|r| r.text()) else {
            continue;
        };
        eprintln!(
            "agent: {} lines read, {} events shipped, lag {} bytes, files open: {}",
            sum(&text, "skiff_harvest_read_lines_total"),
            shown.load(Ordering::Relaxed),
            sum(&text, "skiff_harvest_lag_bytes"),
            sum(&text, "skiff_harvest_open_files"),
        );
    }
}

/// The sum of every series of `metric` in a Prometheus text exposition.
fn sum(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
