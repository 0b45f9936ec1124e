//! Helpers shared by the `output_*` tests: events shaped like the agent's (`event_from_line`),
//! numbered by `log.offset` so deliveries can be counted one by one; a throwaway PKI and a Beats
//! server of its own for the TLS tests.

#![allow(dead_code)] // each test crate uses its own subset

use serde_json::{Value, json};
use skiff_agent::output::{Output, OutputError};
use skiff_agent::process::Event;
use skiff_tests::pki::Ca;
use std::collections::{BTreeMap, BTreeSet};

/// Sends `events` through `output`, which must fail with an error of `kind` (its
/// `skiff_output_errors_total` label: `tls`, `unreachable`, `auth`, …); returns the error.
pub async fn send_fails_with(
    output: &mut impl Output,
    events: &[Event],
    kind: &str,
) -> OutputError {
    let err = output.send(events).await.expect_err("the send must fail");
    assert_eq!(err.metric_label(), kind, "unexpected error: {err:?}");
    err
}

/// The event of line `n` of a file: `log.offset` is `n`, `message` names `run` and `n`.
pub fn event(run: &str, n: u64, service: Option<&str>) -> Event {
    let mut event = json!({
        "@timestamp": "2026-03-04T05:06:07.000Z",
        "message": format!("{run} line {n}"),
        "log": { "file": { "path": "/var/log/pods/app.log", "device_id": "2049", "inode": "1234" }, "offset": n },
        "host": { "name": "node-1" },
        "run": run,
    });
    if let Some(service) = service {
        event["service"] = json!({ "name": service });
    }
    event.as_object().expect("an object").clone().into()
}

/// `events(run, range)`: the events of lines `range`, all of service `svc`.
pub fn events(run: &str, range: std::ops::Range<u64>, service: Option<&str>) -> Vec<Event> {
    range.map(|n| event(run, n, service)).collect()
}

/// How often each `log.offset` arrived, from delivered documents.
pub fn count_offsets<'a>(docs: impl IntoIterator<Item = &'a Value>) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for doc in docs {
        let offset = doc["log"]["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("delivered document without log.offset: {doc}"));
        *seen.entry(offset).or_insert(0) += 1;
    }
    seen
}

/// Asserts that every offset in `expected` arrived at least once and nothing else did;
/// returns the number of duplicates (arrivals beyond the first), which at-least-once allows.
pub fn assert_all_delivered(
    seen: &BTreeMap<u64, u32>,
    expected: impl IntoIterator<Item = u64>,
) -> u64 {
    let expected: BTreeSet<u64> = expected.into_iter().collect();
    let missing: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|n| !seen.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events were lost, first: {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    let unexpected: Vec<u64> = seen
        .keys()
        .copied()
        .filter(|n| !expected.contains(n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected events arrived: {unexpected:?}"
    );
    seen.values().map(|&c| u64::from(c - 1)).sum()
}

/// PEM files of a test PKI written into a folder.
pub struct Pki {
    /// The CA that signed `cert`.
    pub ca: std::path::PathBuf,
    /// A server certificate for `127.0.0.1` and `localhost`.
    pub cert: std::path::PathBuf,
    /// Its key.
    pub key: std::path::PathBuf,
    /// Another CA, which signed nothing here: trusting it must fail the handshake.
    pub other_ca: std::path::PathBuf,
}

/// Writes a CA, a server certificate it signs, and an unrelated CA into `dir`.
pub fn pki(dir: &std::path::Path) -> Pki {
    let (ca, other) = (Ca::new(), Ca::new());
    let pki = Pki {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.crt"),
    };
    std::fs::write(&pki.ca, &ca.pem).unwrap();
    std::fs::write(&pki.other_ca, &other.pem).unwrap();
    ca.issue(&["127.0.0.1", "localhost"], &pki.cert, &pki.key);
    pki
}

/// A private instance of the Beats peer's server (the same go-lumber binary, found through the
/// running peer's pid file), on its own port and output file, so a test may kill and restart it
/// without disturbing the shared peer. Killed when dropped.
pub struct BeatsServer {
    binary: std::path::PathBuf,
    args: Vec<String>,
    child: std::process::Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// The NDJSON file of acknowledged events.
    pub output: std::path::PathBuf,
}

impl BeatsServer {
    /// Starts a server writing into `dir`, with TLS when `tls` names a certificate and key.
    pub fn start(dir: &std::path::Path, tls: Option<(&std::path::Path, &std::path::Path)>) -> Self {
        // The shared peer's state folder holds its output file and its pid file.
        let peer_output = std::env::var(skiff_tests::env::BEATS_OUTPUT)
            .expect("the beats peer is up (SKIFF_TEST_BEATS_OUTPUT)");
        let pid_file = std::path::Path::new(&peer_output).with_file_name("beats-server.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|err| panic!("reading {}: {err}", pid_file.display()));
        let binary = std::fs::read_link(format!("/proc/{}/exe", pid.trim()))
            .unwrap_or_else(|err| panic!("finding the beats peer's binary (pid {pid}): {err}"));
        let addr = format!("127.0.0.1:{}", skiff_tests::free_port());
        let output = dir.join("events.ndjson");
        let mut args = vec![
            "-listen".to_string(),
            addr.clone(),
            "-output".to_string(),
            output.display().to_string(),
        ];
        if let Some((cert, key)) = tls {
            args.extend([
                "-tls-cert".to_string(),
                cert.display().to_string(),
                "-tls-key".to_string(),
                key.display().to_string(),
            ]);
        }
        let child = Self::spawn(&binary, &args, &addr);
        Self {
            binary,
            args,
            child,
            addr,
            output,
        }
    }

    fn spawn(binary: &std::path::Path, args: &[String], addr: &str) -> std::process::Child {
        let child = std::process::Command::new(binary)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", binary.display()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the private beats server on {addr} did not listen within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and starts it again.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.binary, &self.args, &self.addr);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The acknowledged events whose `run` field is `run`.
    pub fn events(&self, run: &str) -> Vec<Value> {
        read_ndjson(&self.output, run)
    }
}

impl Drop for BeatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The events in an NDJSON file whose `run` field is `run` (none when the file is missing).
/// A line that is not JSON is skipped: the server is still writing it, or was killed while
/// writing it (and never acknowledged it). Every expected event is checked for by the tests,
/// so a broken event still shows as missing.
pub fn read_ndjson(path: &std::path::Path, run: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["run"] == run)
        .collect()
}
