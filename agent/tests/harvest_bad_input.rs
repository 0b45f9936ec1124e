//! Bad input never costs neighbouring lines and never panics the agent: binary data, a 100 MB
//! line without a newline, invalid UTF-8, files that vanish between the event and the open,
//! and a file the agent may not read (the agent runs as `nobody` for that one).

#[path = "harvest_support/mod.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use support::{Agent, delivered, line, sequences, wait_until};

/// `max_bytes` of the test input: the 100 MB line is cut here.
const MAX_BYTES: usize = 1 << 20;

#[test]
fn bad_input_is_flagged_or_logged_and_neighbours_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    fs::create_dir_all(&logs).unwrap();
    fs::create_dir_all(&state).unwrap();
    // `nobody` must reach the logs, write its state, and be refused one file.
    for folder in [dir.path(), logs.as_path(), state.as_path()] {
        fs::set_permissions(folder, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let output = state.join("events.ndjson");
    let config = state.join("agent.yml");
    fs::write(
        &config,
        format!(
            "inputs:\n  - {{ type: filestream, id: bad, paths: ['{logs}/*.log'], max_bytes: {MAX_BYTES} }}\nwatch: {{ backend: inotify }}\nregistry: {{ path: {state}/registry, flush: 200ms }}\noutput.file: {{ path: {output} }}\n",
            logs = logs.display(),
            state = state.display(),
            output = output.display(),
        ),
    )
    .unwrap();
    let denied = logs.join("denied.log");
    fs::write(&denied, line("denied", 0)).unwrap();
    fs::set_permissions(&denied, fs::Permissions::from_mode(0o600)).unwrap();
    let agent = Agent::spawn(&state, config, output.clone(), |command| {
        if nix::unistd::geteuid().is_root() {
            command.uid(65534).gid(65534);
        }
    });

    // Binary data with newlines in between, then a normal line.
    let mut binary: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    binary.push(b'\n');
    binary.extend_from_slice(line("binary", 0).as_bytes());
    fs::write(logs.join("binary.log"), &binary).unwrap();

    // Invalid UTF-8 between two good lines.
    let mut invalid = line("utf8", 0).into_bytes();
    invalid.extend_from_slice(b"utf8 bad caf\xe9 \xff\xfe\n");
    invalid.extend_from_slice(line("utf8", 2).as_bytes());
    fs::write(logs.join("utf8.log"), &invalid).unwrap();

    // A 100 MB line written in pieces, then its newline and a normal line.
    let mut huge = fs::File::create(logs.join("huge.log")).unwrap();
    let piece = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        huge.write_all(&piece).unwrap();
    }
    huge.write_all(b"\n").unwrap();
    huge.write_all(line("huge", 1).as_bytes()).unwrap();
    drop(huge);

    // Files that appear and vanish at once.
    for n in 0..200 {
        let path = logs.join(format!("vanish-{n}.log"));
        fs::write(&path, "gone\n").unwrap();
        fs::remove_file(&path).unwrap();
    }
    fs::write(logs.join("after.log"), line("after", 0)).unwrap();

    let done = || {
        let streams = sequences(&delivered(&output).0);
        ["binary", "utf8", "huge", "after"]
            .iter()
            .all(|stream| streams.contains_key(*stream))
    };
    wait_until(
        || format!("the good lines; agent log:\n{}", agent.log()),
        done,
    );
    // The 100 MB line: cut at max_bytes and flagged, the line after it intact.
    let (events, _) = delivered(&output);
    let cut = events
        .iter()
        .find(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("xxx"))
        })
        .expect("the long line is delivered, cut");
    assert_eq!(cut["message"].as_str().unwrap().len(), MAX_BYTES);
    assert!(
        cut["log"]["flags"]
            .as_array()
            .unwrap()
            .contains(&"truncated".into())
    );
    // Invalid UTF-8: kept lossily, flagged, its neighbours intact.
    let bad = events
        .iter()
        .find(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("utf8 bad"))
        })
        .expect("the invalid UTF-8 line is delivered");
    assert_eq!(bad["log"]["flags"], serde_json::json!(["invalid_utf8"]));
    assert_eq!(sequences(&events)["utf8"].len(), 2);

    let log = agent.log();
    let status = agent.terminate();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    if nix::unistd::geteuid().is_root() {
        assert!(
            log.contains("cannot open") && log.contains("denied.log"),
            "a clear line about the unreadable file: {log}"
        );
        assert!(!sequences(&events).contains_key("denied"));
    }
}
