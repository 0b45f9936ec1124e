//! What happens to the lines of every harvested file between the harvester and the outputs:
//! the input's parsers (with state per file), the input's processors, then the global ones.
//!
//! Parsers may hold lines back (a partial container line, an open multiline group), so the
//! offset a file may be committed to is that of the oldest line still held, not the end of
//! the batch: after a crash, the held lines are read again rather than lost.

use super::parse::{ParserConfig, Parsers};
use super::{BuildError, Event, ProcessorConfig, Processors};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The parsers and processors of one input.
pub struct InputSteps {
    parsers: Parsers,
    processors: Processors,
}

impl InputSteps {
    /// Builds an input's `parsers` and `processors`.
    pub fn build(
        parsers: &[ParserConfig],
        processors: &[ProcessorConfig],
    ) -> Result<Self, BuildError> {
        Ok(Self {
            parsers: Parsers::build(parsers)?,
            processors: Processors::build(processors)?,
        })
    }
}

/// Turns lines into events for every input, keeping each file's parser state.
pub struct Processing<C> {
    inputs: HashMap<Arc<str>, InputSteps>,
    global: Processors,
    files: HashMap<Arc<Path>, FileState<C>>,
}

struct FileState<C> {
    input: Arc<str>,
    parsers: Parsers,
    /// The file's latest checkpoint, committed once no line before it is held any more.
    checkpoint: Option<C>,
}

impl<C: Clone> Processing<C> {
    /// `inputs` by input id, and the global processors that run after each input's own.
    pub fn new(inputs: HashMap<Arc<str>, InputSteps>, global: Processors) -> Self {
        Self {
            inputs,
            global,
            files: HashMap::new(),
        }
    }

    /// Turns the events of `lines` (of `path`, harvested by `input`) into finished events,
    /// appended to `out`. Returns the offset the file may be committed to: `end` (where the
    /// batch ends) unless a parser holds an earlier line. `checkpoint` is remembered so
    /// [`Processing::flush_expired`] can commit it once the held lines are out.
    pub fn push(
        &mut self,
        input: &Arc<str>,
        path: &Arc<Path>,
        lines: impl IntoIterator<Item = Event>,
        end: u64,
        checkpoint: C,
        out: &mut Vec<Event>,
    ) -> u64 {
        let steps = self.inputs.get(input);
        let state = self
            .files
            .entry(Arc::clone(path))
            .or_insert_with(|| FileState {
                input: Arc::clone(input),
                parsers: steps.map(|s| s.parsers.clone()).unwrap_or_default(),
                checkpoint: None,
            });
        let start = out.len();
        for line in lines {
            state.parsers.push(line, out);
        }
        let pending = state.parsers.pending_offset();
        state.checkpoint = pending.is_some().then_some(checkpoint);
        finish(steps, &self.global, out, start);
        pending.map_or(end, |held| held.min(end))
    }

    /// Emits the multiline groups and partial lines that timed out by `now`; returns the
    /// checkpoints of the files that hold nothing back any more, to commit after delivery.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<Event>) -> Vec<C> {
        let mut done = Vec::new();
        for state in self.files.values_mut() {
            if state.parsers.pending_offset().is_none() {
                continue;
            }
            let start = out.len();
            state.parsers.flush_expired(now, out);
            finish(self.inputs.get(&state.input), &self.global, out, start);
            if state.parsers.pending_offset().is_none() {
                done.extend(state.checkpoint.take());
            }
        }
        done
    }

    /// The file is gone: emits whatever its parsers held and forgets it.
    pub fn close(&mut self, path: &Path, out: &mut Vec<Event>) {
        if let Some(mut state) = self.files.remove(path) {
            let start = out.len();
            state.parsers.flush(out);
            finish(self.inputs.get(&state.input), &self.global, out, start);
        }
    }
}

/// Runs the input's and the global processors over `out[start..]`, removing dropped events.
fn finish(steps: Option<&InputSteps>, global: &Processors, out: &mut Vec<Event>, start: usize) {
    let mut tail = out.split_off(start);
    tail.retain_mut(|event| steps.is_none_or(|s| s.processors.run(event)) && global.run(event));
    out.append(&mut tail);
}

#[cfg(test)]
mod tests {
    use super::super::parse::tests::line;
    use super::*;
    use std::time::Duration;

    fn processing() -> Processing<u64> {
        let parsers: Vec<ParserConfig> = serde_yaml::with::singleton_map_recursive::deserialize(
            serde_yaml::Deserializer::from_str(
                "[ { multiline: { pattern: '^\\s', timeout: 1s } } ]",
            ),
        )
        .unwrap();
        let input_processors = super::super::processor::from_yaml("- exclude_lines: ['^DEBUG']");
        let global = super::super::processor::from_yaml(
            "- add_fields: { target: '', fields: { env: prod } }",
        );
        let steps = InputSteps::build(&parsers, &input_processors).unwrap();
        Processing::new(
            [(Arc::from("app"), steps)].into_iter().collect(),
            Processors::build(&global).unwrap(),
        )
    }

    #[test]
    fn held_lines_keep_the_commit_offset_back_until_they_are_out() {
        let mut p = processing();
        let (input, path): (Arc<str>, Arc<Path>) =
            (Arc::from("app"), Arc::from(Path::new("/a.log")));
        let mut out = Vec::new();
        let lines = vec![line(0, "DEBUG x"), line(8, "boom"), line(13, "  at y")];
        let commit = p.push(&input, &path, lines, 20, 20, &mut out);
        assert_eq!(out.len(), 0, "DEBUG is excluded, the group is open");
        assert_eq!(commit, 8, "the open group starts at 8");
        let done = p.flush_expired(Instant::now() + Duration::from_secs(2), &mut out);
        assert_eq!(done, vec![20], "now the whole batch may be committed");
        assert_eq!(out[0]["message"], "boom\n  at y");
        assert_eq!(out[0]["env"], "prod");
        assert!(
            p.flush_expired(Instant::now() + Duration::from_secs(4), &mut out)
                .is_empty()
        );
    }

    #[test]
    fn closing_a_file_flushes_it() {
        let mut p = processing();
        let (input, path): (Arc<str>, Arc<Path>) =
            (Arc::from("app"), Arc::from(Path::new("/a.log")));
        let mut out = Vec::new();
        p.push(&input, &path, vec![line(0, "last")], 5, 5, &mut out);
        p.close(&path, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["message"], "last");
    }
}
