//! Reading a file's new bytes and cutting them into lines.

use memchr::memchr_iter;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How much one `read` asks for: large reads keep syscalls off the profile.
const READ_SIZE: usize = 256 * 1024;

/// Cuts a byte stream into lines, holding a partial last line until its newline arrives.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// Bytes of a line whose newline has not been read yet.
    pending: Vec<u8>,
    /// Stream offset of the first byte not yet handed to `push`.
    next_offset: u64,
}

impl LineSplitter {
    /// A splitter whose next byte is at `offset` in the stream.
    pub fn at(offset: u64) -> Self {
        Self {
            pending: Vec::new(),
            next_offset: offset,
        }
    }

    /// Feeds `chunk`; calls `emit(offset, line)` for each complete line (without its `\n` or
    /// `\r\n`), where `offset` is the stream offset of the line's first byte.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(u64, &[u8])) {
        let chunk_offset = self.next_offset;
        let mut start = 0;
        for newline in memchr_iter(b'\n', chunk) {
            if self.pending.is_empty() {
                emit(chunk_offset + start as u64, trim_cr(&chunk[start..newline]));
            } else {
                self.pending.extend_from_slice(&chunk[start..newline]);
                let line_offset = chunk_offset - (self.pending.len() - (newline - start)) as u64;
                emit(line_offset, trim_cr(&self.pending));
                self.pending.clear();
            }
            start = newline + 1;
        }
        self.pending.extend_from_slice(&chunk[start..]);
        self.next_offset += chunk.len() as u64;
    }

    /// Stream offset just past the last complete line: where a restart resumes.
    pub fn committed_offset(&self) -> u64 {
        self.next_offset - self.pending.len() as u64
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
    /// The line, without its newline.
    pub bytes: Vec<u8>,
}

/// Reads one file from an offset onwards, through its open descriptor, so a file renamed
/// away is still read to its end.
#[derive(Debug)]
pub struct Harvester {
    file: File,
    path: PathBuf,
    splitter: LineSplitter,
    buffer: Vec<u8>,
}

impl Harvester {
    /// Opens `path` for reading from its first byte.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            path: path.to_path_buf(),
            splitter: LineSplitter::at(0),
            buffer: vec![0; READ_SIZE],
        })
    }

    /// The path the file had when it was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call and appends its complete lines to `lines`.
    /// Returns the number of bytes read (0 at end of file).
    pub fn read_lines(&mut self, lines: &mut Vec<Line>) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let n = match self.file.read(&mut self.buffer) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if n == 0 {
                return Ok(total);
            }
            total += n;
            self.splitter.push(&self.buffer[..n], |offset, bytes| {
                lines.push(Line {
                    offset,
                    bytes: bytes.to_vec(),
                })
            });
            if n < self.buffer.len() {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn split(chunks: &[&[u8]]) -> (Vec<(u64, String)>, u64) {
        let mut splitter = LineSplitter::at(0);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |offset, line| {
                lines.push((offset, String::from_utf8_lossy(line).into_owned()))
            });
        }
        (lines, splitter.committed_offset())
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
    fn harvester_reads_appended_lines_and_keeps_reading_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"one\ntw").unwrap();
        let mut harvester = Harvester::open(&path).unwrap();
        let mut lines = Vec::new();
        harvester.read_lines(&mut lines).unwrap();
        assert_eq!(lines.len(), 1);
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        file.write_all(b"o\nthree\n").unwrap();
        harvester.read_lines(&mut lines).unwrap();
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
