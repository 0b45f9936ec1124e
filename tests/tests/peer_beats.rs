//! Smoke test of the Beats peer: a minimal lumberjack v2 client sends two batches, one as plain
//! JSON frames and one compressed, and checks each acknowledgement and the server's NDJSON file.

use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde_json::{Value, json};
use skiff_tests::{env, require_peer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VERSION: u8 = b'2';

/// A window frame: how many events the batch that follows holds.
fn window(count: u32) -> Vec<u8> {
    let mut frame = vec![VERSION, b'W'];
    frame.extend_from_slice(&count.to_be_bytes());
    frame
}

/// A JSON data frame carrying one event with sequence number `seq`.
fn json_frame(seq: u32, event: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(event).expect("event serialises");
    let mut frame = vec![VERSION, b'J'];
    frame.extend_from_slice(&seq.to_be_bytes());
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// A compressed frame: `frames` deflated with zlib.
fn compressed_frame(frames: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(frames).unwrap();
    let payload = encoder.finish().unwrap();
    let mut frame = vec![VERSION, b'C'];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Reads ACK frames until one acknowledges something: the server sends `ACK 0` as a keepalive
/// while a batch is still in its pipeline.
fn read_ack(stream: &mut TcpStream) -> u32 {
    loop {
        let mut frame = [0u8; 6];
        stream.read_exact(&mut frame).expect("reading an ACK frame");
        assert_eq!(&frame[..2], b"2A", "not an ACK frame: {frame:?}");
        let seq = u32::from_be_bytes(frame[2..].try_into().unwrap());
        if seq != 0 {
            return seq;
        }
    }
}

/// The events in the server's output file whose `marker` field is `marker`.
fn acknowledged(output: &str, marker: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(output).unwrap_or_else(|err| panic!("reading {output}: {err}"));
    text.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|err| panic!("{err}: {line}"))
        })
        .filter(|event| event["marker"] == marker)
        .collect()
}

#[test]
fn batches_are_acknowledged_and_written() {
    let addr = require_peer!(env::BEATS, "beats");
    let output = require_peer!(env::BEATS_OUTPUT, "beats");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("peer-beats-{}-{nanos}", std::process::id());

    let mut stream =
        TcpStream::connect(&addr).unwrap_or_else(|err| panic!("connecting {addr}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    // Batch 1: three plain JSON frames.
    let mut batch = window(3);
    for seq in 1..=3 {
        let event =
            json!({ "marker": marker, "batch": 1, "n": seq, "message": format!("line {seq}") });
        batch.extend(json_frame(seq, &event));
    }
    stream.write_all(&batch).unwrap();
    assert_eq!(read_ack(&mut stream), 3);

    let events = acknowledged(&output, &marker);
    assert_eq!(events.len(), 3, "acknowledged events: {events:?}");
    let numbers: Vec<_> = events.iter().map(|e| e["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(events[0]["message"], "line 1");

    // Batch 2: two JSON frames inside one compressed frame; the integer must survive as is.
    let mut frames = Vec::new();
    for seq in 1..=2 {
        let event =
            json!({ "marker": marker, "batch": 2, "n": seq, "offset": 9_007_199_254_740_993u64 });
        frames.extend(json_frame(seq, &event));
    }
    let mut batch = window(2);
    batch.extend(compressed_frame(&frames));
    stream.write_all(&batch).unwrap();
    assert_eq!(read_ack(&mut stream), 2);

    let second: Vec<_> = acknowledged(&output, &marker)
        .into_iter()
        .filter(|e| e["batch"] == 2)
        .collect();
    assert_eq!(second.len(), 2, "acknowledged events: {second:?}");
    assert_eq!(second[1]["offset"].as_u64(), Some(9_007_199_254_740_993));
}
