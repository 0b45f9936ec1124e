//! Reading files: cutting their bytes into lines ([`LineSplitter`]), one reader per file
//! ([`Harvester`]), what makes a file the same file ([`identity`]), and the engine that keeps
//! one harvester per watched file through rotations ([`Engine`]), in the manner of Vector's
//! `file-source`: the scheduler ([`engine`]), with its queue of looks by time
//! ([`look_queue`]) and its end of the channel ([`outbox`]); one open file's state machine
//! ([`open_file`]); which files an input harvests ([`discovery`]); what watch events ask for
//! ([`watch_events`]); and what is logged and counted ([`internal_events`]).

mod discovery;
mod engine;
pub mod identity;
mod internal_events;
mod look_queue;
mod open_file;
mod outbox;
mod watch_events;

pub use discovery::{Admission, FileInput, InputError};
pub use engine::{Batch, Engine, EngineOptions, Harvested, READ_BUDGET};

use memchr::memchr_iter;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// How much one `read` asks for: large reads keep syscalls off the profile.
const READ_SIZE: usize = 256 * 1024;

/// Default longest line kept whole, as Filebeat's `max_bytes`: 10 MiB.
pub const DEFAULT_MAX_BYTES: usize = 10 << 20;

/// Cuts a byte stream into lines, holding a partial last line until its newline arrives.
/// A line longer than `max_bytes` is cut there (the rest of it is skipped, not buffered), so
/// a 100 MB line without a newline costs `max_bytes` of memory, not 100 MB.
#[derive(Debug)]
pub struct LineSplitter {
    /// Kept bytes of a line whose newline has not been read yet (at most `max_bytes + 1`).
    pending: Vec<u8>,
    /// Bytes of that line consumed so far, kept or skipped.
    pending_len: u64,
    /// Stream offset of the first byte not yet handed to `push`.
    next_offset: u64,
    max_bytes: usize,
}

impl LineSplitter {
    /// A splitter whose next byte is at `offset` in the stream, keeping lines whole up to
    /// `max_bytes`.
    pub fn new(offset: u64, max_bytes: usize) -> Self {
        Self {
            pending: Vec::new(),
            pending_len: 0,
            next_offset: offset,
            max_bytes,
        }
    }

    /// A splitter at `offset` with the default `max_bytes`.
    pub fn at(offset: u64) -> Self {
        Self::new(offset, DEFAULT_MAX_BYTES)
    }

    /// Feeds `chunk`; calls `emit(offset, line, truncated)` for each complete line (without its
    /// `\n` or `\r\n`), where `offset` is the stream offset of the line's first byte and
    /// `truncated` says the line was longer than `max_bytes` and was cut.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(u64, &[u8], bool)) {
        let mut start = 0;
        for newline in memchr_iter(b'\n', chunk) {
            let piece = &chunk[start..newline];
            let line_offset = self.next_offset + start as u64 - self.pending_len;
            if self.pending_len == 0 {
                let line = trim_cr(piece);
                let truncated = line.len() > self.max_bytes;
                emit(
                    line_offset,
                    &line[..line.len().min(self.max_bytes)],
                    truncated,
                );
            } else {
                self.keep(piece);
                let line = trim_cr(&self.pending);
                let truncated =
                    line.len() > self.max_bytes || self.pending_len > self.pending.len() as u64;
                emit(
                    line_offset,
                    &line[..line.len().min(self.max_bytes)],
                    truncated,
                );
                self.pending.clear();
                self.pending_len = 0;
            }
            start = newline + 1;
        }
        self.keep(&chunk[start..]);
        self.next_offset += chunk.len() as u64;
    }

    /// Appends `piece` to the partial line, keeping at most `max_bytes + 1` bytes (one more
    /// than a whole line, so a `\r` right after the limit is still recognised).
    fn keep(&mut self, piece: &[u8]) {
        let room = (self.max_bytes + 1).saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(&piece[..piece.len().min(room)]);
        self.pending_len += piece.len() as u64;
    }

    /// Stream offset just past the last complete line: where a restart resumes.
    pub fn committed_offset(&self) -> u64 {
        self.next_offset - self.pending_len
    }

    /// Stream offset of the next byte to read.
    pub fn read_offset(&self) -> u64 {
        self.next_offset
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A line read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Byte offset of the line's first byte in its file.
    pub offset: u64,
    /// The line, without its newline, at most the input's `max_bytes` long.
    pub bytes: Vec<u8>,
    /// The line was longer than `max_bytes` and was cut there.
    pub truncated: bool,
}

/// Reads one file from an offset onwards, through its open descriptor, so a file renamed
/// away or deleted is still read to its end.
#[derive(Debug)]
pub struct Harvester {
    file: File,
    splitter: LineSplitter,
    /// The buffer of [`Harvester::read_lines`], allocated on its first call; the engine, which
    /// holds thousands of harvesters, passes one buffer for all to
    /// [`Harvester::read_lines_with`] instead.
    buffer: Vec<u8>,
}

impl Harvester {
    /// Reads `file` from `offset`, which must be the start of a line.
    pub fn new(mut file: File, offset: u64, max_bytes: usize) -> io::Result<Self> {
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file,
            splitter: LineSplitter::new(offset, max_bytes),
            buffer: Vec::new(),
        })
    }

    /// Opens `path` for reading from its first byte, with the default `max_bytes`.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::new(File::open(path)?, 0, DEFAULT_MAX_BYTES)
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Offset of the next byte to read.
    pub fn read_offset(&self) -> u64 {
        self.splitter.read_offset()
    }

    /// Offset just past the last complete line read.
    pub fn committed_offset(&self) -> u64 {
        self.splitter.committed_offset()
    }

    /// Starts over from the first byte, dropping a partial line: the file was truncated.
    pub fn restart(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.splitter = LineSplitter::new(0, self.splitter.max_bytes);
        Ok(())
    }

    /// Reads what was appended since the last call, at most about `budget` bytes (whole
    /// reads), and appends its complete lines to `lines`. Returns the number of bytes read
    /// (0 at end of file).
    pub fn read_lines(&mut self, lines: &mut Vec<Line>, budget: usize) -> io::Result<usize> {
        let mut buffer = std::mem::take(&mut self.buffer);
        if buffer.is_empty() {
            buffer = vec![0; READ_SIZE];
        }
        let read = self.read_lines_with(&mut buffer, lines, budget);
        self.buffer = buffer;
        read
    }

    /// [`Harvester::read_lines`] through `buffer` (of any non-zero size), which holds nothing
    /// between calls.
    pub fn read_lines_with(
        &mut self,
        buffer: &mut [u8],
        lines: &mut Vec<Line>,
        budget: usize,
    ) -> io::Result<usize> {
        let mut total = 0;
        while total < budget {
            let n = match self.file.read(buffer) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if n == 0 {
                break;
            }
            total += n;
            self.splitter
                .push(&buffer[..n], |offset, bytes, truncated| {
                    lines.push(Line {
                        offset,
                        bytes: bytes.to_vec(),
                        truncated,
                    })
                });
            if n < buffer.len() {
                break;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn split_with(max: usize, chunks: &[&[u8]]) -> (Vec<(u64, String, bool)>, u64) {
        let mut splitter = LineSplitter::new(0, max);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |offset, line, truncated| {
                lines.push((
                    offset,
                    String::from_utf8_lossy(line).into_owned(),
                    truncated,
                ))
            });
        }
        (lines, splitter.committed_offset())
    }

    fn split(chunks: &[&[u8]]) -> (Vec<(u64, String)>, u64) {
        let (lines, committed) = split_with(DEFAULT_MAX_BYTES, chunks);
        let lines = lines.into_iter().map(|(o, l, _)| (o, l)).collect();
        (lines, committed)
    }

    #[test]
    fn lines_carry_the_offset_of_their_first_byte() {
        let (lines, committed) = split(&[b"ab\ncde\n"]);
        assert_eq!(lines, vec![(0, "ab".into()), (3, "cde".into())]);
        assert_eq!(committed, 7);
    }

    #[test]
    fn partial_line_waits_for_its_newline_across_chunks() {
        let (lines, committed) = split(&[b"ab\nc", b"d", b"e\nf"]);
        assert_eq!(lines, vec![(0, "ab".into()), (3, "cde".into())]);
        assert_eq!(committed, 7, "the partial `f` is not committed");
    }

    #[test]
    fn crlf_and_empty_lines() {
        let (lines, _) = split(&[b"a\r\n\n\r\nb\n"]);
        assert_eq!(
            lines,
            vec![
                (0, "a".into()),
                (3, "".into()),
                (4, "".into()),
                (6, "b".into())
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_flagged_and_the_next_line_is_intact() {
        let (lines, committed) = split_with(4, &[b"abcdefgh\nxy\n"]);
        assert_eq!(
            lines,
            vec![(0, "abcd".into(), true), (9, "xy".into(), false)]
        );
        assert_eq!(committed, 12);
        // The same across chunks, where the long line is held as a partial line.
        let (lines, committed) = split_with(4, &[b"ab", b"cdefg", b"h\r\nxy\n"]);
        assert_eq!(
            lines,
            vec![(0, "abcd".into(), true), (10, "xy".into(), false)]
        );
        assert_eq!(committed, 13);
        // Exactly `max_bytes` before `\r\n` is whole.
        let (lines, _) = split_with(4, &[b"ab", b"cd\r\n"]);
        assert_eq!(lines, vec![(0, "abcd".into(), false)]);
    }

    #[test]
    fn a_huge_partial_line_is_not_buffered() {
        let mut splitter = LineSplitter::new(0, 1024);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..16 {
            splitter.push(&chunk, |_, _, _| panic!("no newline yet"));
        }
        assert!(splitter.pending.capacity() < 1 << 20);
        assert_eq!(splitter.committed_offset(), 0);
    }

    #[test]
    fn harvester_reads_appended_lines_and_keeps_reading_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"one\ntw").unwrap();
        let mut harvester = Harvester::open(&path).unwrap();
        let mut lines = Vec::new();
        harvester.read_lines(&mut lines, usize::MAX).unwrap();
        assert_eq!(lines.len(), 1);
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        file.write_all(b"o\nthree\n").unwrap();
        harvester.read_lines(&mut lines, usize::MAX).unwrap();
        let texts: Vec<_> = lines
            .iter()
            .map(|l| (l.offset, l.bytes.as_slice()))
            .collect();
        assert_eq!(
            texts,
            vec![(0, &b"one"[..]), (4, &b"two"[..]), (8, &b"three"[..])]
        );
    }
}
