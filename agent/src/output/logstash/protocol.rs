//! Lumberjack v2, the Beats protocol, client side: a window frame announcing how many events
//! follow, JSON data frames numbered from 1 (optionally wrapped in one zlib-compressed frame),
//! and ACK frames from the server carrying the highest sequence number it has taken over.

use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::io::{self, Write};

const VERSION: u8 = b'2';

/// Appends a window frame for `count` events.
pub fn window(out: &mut Vec<u8>, count: u32) {
    out.extend_from_slice(&[VERSION, b'W']);
    out.extend_from_slice(&count.to_be_bytes());
}

/// Appends a JSON data frame holding `payload` with sequence number `seq`.
pub fn json_frame(out: &mut Vec<u8>, seq: u32, payload: &[u8]) {
    out.extend_from_slice(&[VERSION, b'J']);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&frame_len(payload.len()).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends a compressed frame holding `frames` deflated with zlib at `level`.
pub fn compressed_frame(out: &mut Vec<u8>, frames: &[u8], level: u32) -> io::Result<()> {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(frames.len() / 4),
        Compression::new(level),
    );
    encoder.write_all(frames)?;
    let payload = encoder.finish()?;
    out.extend_from_slice(&[VERSION, b'C']);
    out.extend_from_slice(&frame_len(payload.len()).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The sequence number of an ACK frame, or an error naming what came instead.
pub fn parse_ack(frame: &[u8; 6]) -> Result<u32, String> {
    if frame[..2] != [VERSION, b'A'] {
        return Err(format!(
            "expected an ACK frame, got bytes {:?}",
            &frame[..2]
        ));
    }
    Ok(u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]))
}

/// Frame lengths are 32-bit; an event that large was refused long before (the harvester caps
/// lines far below 4 GiB).
fn frame_len(len: usize) -> u32 {
    u32::try_from(len).expect("a frame under 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn frames_have_the_lumberjack_v2_layout() {
        let mut out = Vec::new();
        window(&mut out, 2);
        json_frame(&mut out, 1, b"{}");
        assert_eq!(out, b"2W\0\0\0\x022J\0\0\0\x01\0\0\0\x02{}");
    }

    #[test]
    fn a_compressed_frame_inflates_to_its_frames() {
        let mut frames = Vec::new();
        json_frame(&mut frames, 1, br#"{"a":1}"#);
        let mut out = Vec::new();
        compressed_frame(&mut out, &frames, 3).unwrap();
        assert_eq!(&out[..2], b"2C");
        let len = u32::from_be_bytes(out[2..6].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 6);
        let mut inflated = Vec::new();
        ZlibDecoder::new(&out[6..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, frames);
    }

    #[test]
    fn acks_are_parsed_and_other_frames_refused() {
        assert_eq!(parse_ack(b"2A\0\0\x01\0"), Ok(256));
        assert!(parse_ack(b"2W\0\0\0\x01").is_err());
    }
}
