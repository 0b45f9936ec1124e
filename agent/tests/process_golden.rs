//! Golden tests of the parsers and processors. Every directory under `tests/data/parse/` and
//! `tests/data/process/` is one case: an agent configuration (`agent.yml`), the lines of a log
//! file (`input.log`), and the events they become (`expected.ndjson`, one per line).
//!
//! Lines go through the first input's parsers, its processors, then the global processors, as
//! in the agent. After the last line, the events a timeout releases (an open multiline group)
//! follow a `# flushed at timeout` line, and those closing the file releases (a partial
//! container line) follow `# flushed at close`. Every event starts with the same read time,
//! path and host, so the files are the same on every run.
//!
//! `SKIFF_BLESS=1 cargo test -p skiff-agent --test process_golden` rewrites the expected files
//! from what the code does now; review their diff before keeping it. A case whose `agent.yml`
//! names a `SKIFF_TEST_GEOIP_*` database needs the `geoip` peer.

use serde_json::Value;
use skiff_agent::config::{Config, InputConfig};
use skiff_agent::harvest::Line;
use skiff_agent::process::parse::Parsers;
use skiff_agent::process::{Event, Processors, Source, event_from_line};
use skiff_tests::env;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The read time every event starts with (parsers that find a time in the line replace it).
const READ_TIME: &str = "2026-01-01T00:00:00.000Z";
const LOG_PATH: &str = "/var/log/app.log";
const HOST: &str = "node-1";
const TIMEOUT_MARKER: &str = "# flushed at timeout";
const CLOSE_MARKER: &str = "# flushed at close";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// The case directories under `tests/data/{group}`, sorted.
fn cases(group: &str) -> Vec<PathBuf> {
    let dir = data_dir().join(group);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// The lines of `input` as the harvester hands them over: split at `\n`, each with the byte
/// offset it starts at.
fn lines(input: &[u8]) -> Vec<Line> {
    let mut offset = 0;
    let mut lines = Vec::new();
    for bytes in input.split(|b| *b == b'\n') {
        let line = Line {
            offset,
            bytes: bytes.to_vec(),
            truncated: false,
        };
        offset += bytes.len() as u64 + 1;
        lines.push(line);
    }
    // The text after the last `\n` is not a line yet; a file ending in `\n` leaves nothing.
    lines.pop();
    lines
}

/// What `case` turns its input into, as the lines of `expected.ndjson`. `None` when the case
/// needs a peer that is not running.
fn run_case(case: &Path) -> Option<Vec<String>> {
    let config_path = case.join("agent.yml");
    let text = std::fs::read_to_string(&config_path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", config_path.display()));
    if text.contains("${SKIFF_TEST_GEOIP") {
        skiff_tests::peer(env::GEOIP_CITY, "geoip")?;
    }
    let config = Config::parse(&config_path, &text)
        .unwrap_or_else(|err| panic!("{}: {err}", config_path.display()));
    let Some(InputConfig::Filestream(input)) = config.inputs.first() else {
        panic!(
            "{}: the first input is not a filestream",
            config_path.display()
        );
    };
    let mut parsers = Parsers::build(&input.parsers).expect("parsers build");
    let input_processors = Processors::build(&input.processors).expect("processors build");
    let global = Processors::build(&config.processors).expect("processors build");
    let finish = |events: Vec<Event>, out: &mut Vec<String>| {
        for mut event in events {
            if input_processors.run(&mut event) && global.run(&mut event) {
                out.push(serde_json::to_string(&event).expect("events serialize"));
            }
        }
    };

    let input_path = case.join("input.log");
    let input = std::fs::read(&input_path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", input_path.display()));
    let mut out = Vec::new();
    let mut events = Vec::new();
    for line in lines(&input) {
        let mut event = event_from_line(&line, &Source::new(Path::new(LOG_PATH), HOST));
        event.insert("@timestamp", READ_TIME);
        parsers.push(event, &mut events);
    }
    finish(std::mem::take(&mut events), &mut out);
    parsers.flush_expired(Instant::now() + Duration::from_secs(24 * 3600), &mut events);
    if !events.is_empty() {
        out.push(TIMEOUT_MARKER.into());
        finish(std::mem::take(&mut events), &mut out);
    }
    parsers.flush(&mut events);
    if !events.is_empty() {
        out.push(CLOSE_MARKER.into());
        finish(events, &mut out);
    }
    Some(out)
}

/// Differences between the expected and the actual lines of `case`, one message each.
fn compare(case: &Path, expected: &str, actual: &[String]) -> Vec<String> {
    let expected: Vec<&str> = expected.lines().collect();
    let mut problems = Vec::new();
    for (n, (want, got)) in expected.iter().zip(actual).enumerate() {
        let same = match (
            serde_json::from_str::<Value>(want),
            serde_json::from_str::<Value>(got),
        ) {
            (Ok(want), Ok(got)) => want == got,
            _ => want == got,
        };
        if !same {
            problems.push(format!(
                "{}: line {}:\n  expected {want}\n  actual   {got}",
                case.display(),
                n + 1
            ));
        }
    }
    if expected.len() != actual.len() {
        problems.push(format!(
            "{}: {} expected lines, {} actual",
            case.display(),
            expected.len(),
            actual.len()
        ));
    }
    problems
}

fn check(group: &str) {
    let bless = std::env::var_os("SKIFF_BLESS").is_some_and(|v| v != "0");
    let mut problems = Vec::new();
    let cases = cases(group);
    assert!(!cases.is_empty(), "no cases under tests/data/{group}");
    for case in cases {
        let Some(actual) = run_case(&case) else {
            continue;
        };
        let expected_path = case.join("expected.ndjson");
        if bless {
            let mut text = actual.join("\n");
            text.push('\n');
            std::fs::write(&expected_path, text).expect("write expected.ndjson");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) => problems.extend(compare(&case, &expected, &actual)),
            Err(err) => problems.push(format!("{}: {err}", expected_path.display())),
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\n(if the change is intended: SKIFF_BLESS=1 cargo test -p skiff-agent --test process_golden, then review the diff)",
        problems.join("\n")
    );
}

#[test]
fn parsers() {
    check("parse");
}

#[test]
fn processors() {
    check("process");
}
