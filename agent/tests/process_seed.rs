//! The processor block of the product's original description, run as written by the real
//! `skiff-agent` binary: geolocation from the local GeoLite2 databases (the `geoip` peer),
//! `api_key` accepted and unused, `${timestamp}` the event's own time.

use serde_json::Value;
use skiff_tests::{env, require_peer};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The block exactly as the product description writes it.
const SEED_PROCESSORS: &str = r#"processors:
  - add_fields:
      target: ""
      fields:
        environment: "${ENVIRONMENT}"
        service_name: "my-microservice"
  - geolocation:
      field: "client_ip"
      api_key: "your-api-key-for-geolocation"
  - add_fields:
      target: ""
      fields:
        timestamp: "${timestamp}"
"#;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skiff-agent"))
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = format!(
        r#"inputs:
  - type: filestream
    id: app
    paths: ["{dir}/app.log"]
    parsers: [ {{ ndjson: {{ target: "" }} }} ]
watch: {{ backend: poll, scan_frequency: 100ms }}
registry: {{ path: "{dir}/registry" }}
output.file: {{ path: "{dir}/events.ndjson" }}
{SEED_PROCESSORS}"#,
        dir = dir.display()
    );
    let path = dir.join("agent.yml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn the_seed_block_runs_as_written() {
    let city = require_peer!(env::GEOIP_CITY, "geoip");
    let asn = require_peer!(env::GEOIP_ASN, "geoip");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    std::fs::write(
        dir.path().join("app.log"),
        "{\"message\":\"checkout ok\",\"client_ip\":\"8.8.8.8\"}\n\
         {\"message\":\"internal call\",\"client_ip\":\"10.1.2.3\"}\n\
         {\"message\": broken json\n",
    )
    .unwrap();
    let mut child = agent()
        .args(["run", "--config"])
        .arg(&config)
        .env("ENVIRONMENT", "production")
        .env("SKIFF_GEOIP_DATABASE", &city)
        .env("SKIFF_GEOIP_ASN_DATABASE", &asn)
        .env_remove("timestamp")
        .stdout(Stdio::null())
        .spawn()
        .expect("start skiff-agent");

    let out = dir.path().join("events.ndjson");
    let deadline = Instant::now() + Duration::from_secs(120);
    let events: Vec<Value> = loop {
        let events: Vec<Value> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("events are JSON"))
            .collect();
        if events.len() >= 3 {
            break events;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("skiff-agent exited with {status} before writing 3 events");
        }
        assert!(
            Instant::now() < deadline,
            "skiff-agent wrote {} of 3 events in 120s",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();

    for event in &events {
        assert_eq!(event["environment"], "production", "{event}");
        assert_eq!(event["service_name"], "my-microservice");
        assert_eq!(
            event["timestamp"], event["@timestamp"],
            "${{timestamp}} is the event's time"
        );
    }
    let public = &events[0];
    assert_eq!(public["message"], "checkout ok");
    assert_eq!(
        public["client"]["geo"]["country_iso_code"], "US",
        "{public}"
    );
    assert_eq!(public["client"]["as"]["number"], 15169);
    let private = &events[1];
    assert!(
        private.get("client").is_none(),
        "a private address is skipped: {private}"
    );
    assert!(private.get("error").is_none());
    let broken = &events[2];
    assert_eq!(
        broken["message"], "{\"message\": broken json",
        "the raw line is kept"
    );
    assert!(
        broken["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("ndjson: ")
    );
}

#[test]
fn check_config_prints_the_effective_config_and_names_a_broken_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let output = agent()
        .arg("check-config")
        .arg(&config)
        .env("ENVIRONMENT", "staging")
        .env_remove("timestamp")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("environment: staging"), "{printed}");
    assert!(
        printed.contains("timestamp: '%{[@timestamp]}'"),
        "{printed}"
    );
    assert!(printed.contains("geoip:"), "{printed}");
    assert!(
        !printed.contains("your-api-key"),
        "the api key is not printed: {printed}"
    );

    let broken = std::fs::read_to_string(&config).unwrap().replace(
        "field: \"client_ip\"",
        "field: \"client_ip\"\n      cache: 5",
    );
    std::fs::write(&config, broken).unwrap();
    let output = agent()
        .arg("check-config")
        .arg(&config)
        .env("ENVIRONMENT", "staging")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("processors[1].geolocation.cache: unknown field `cache`")
            || stderr.contains("processors[1].geoip.cache: unknown field `cache`"),
        "{stderr}"
    );
    assert!(stderr.contains("line 17"), "{stderr}");
}
