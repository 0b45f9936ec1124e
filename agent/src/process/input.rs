//! What happens to the lines of every harvested file between the harvester and the outputs:
//! the input's parsers (with state per file), the input's processors, then the global ones.
//! A file of the `kubernetes` input gets its container's parsers instead, and its pod's
//! fields before any processor.
//!
//! Parsers may hold lines back (a partial container line, an open multiline group), so the
//! offset a file may be committed to is that of the oldest line still held, not the end of
//! the batch: after a crash, the held lines are read again rather than lost.

use super::parse::{ParserConfig, Parsers, for_log_format};
use super::{BuildError, Event, ProcessorConfig, Processors};
use crate::harvest::Admission;
use crate::kubernetes::{ContainerLog, KubernetesInput};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the parser state of a file the `kubernetes` input no longer harvests (its pod is
/// gone) outlives the file's last lines. The engine reads such a file to its end and closes it
/// within `close.removed` (1s), so no line of it comes later; without this, every pod the node
/// ever ran would keep an entry.
const FORGET_UNHARVESTED: Duration = Duration::from_secs(60);

/// The parsers and processors of one input.
pub struct InputSteps {
    parsers: Parsers,
    processors: Processors,
    /// The `kubernetes` input: where each file's parsers and pod fields come from.
    containers: Option<KubernetesInput>,
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
            containers: None,
        })
    }

    /// The steps of the `kubernetes` input: each file's container decides its parsers and
    /// adds its pod's fields.
    pub fn kubernetes(input: KubernetesInput) -> Result<Self, BuildError> {
        Ok(Self {
            // For a file whose pod is unknown: the kubelet writes CRI lines.
            parsers: Parsers::build(&for_log_format("cri").expect("cri is a log format"))?,
            processors: Processors::default(),
            containers: Some(input),
        })
    }

    /// A new file's parsers, and its container for the `kubernetes` input. The container is
    /// looked up once: after its pod is deleted, the rest of the file is still enriched.
    fn for_file(&self, path: &Path) -> (Parsers, Option<ContainerLog>) {
        let Some(input) = &self.containers else {
            return (self.parsers.clone(), None);
        };
        let Some(container) = input.container_of(path) else {
            // Only when the pod went between the harvester's open and the first batch.
            tracing::warn!(path = %path.display(), "no harvested pod for this file; its lines are read as cri, not enriched");
            return (self.parsers.clone(), None);
        };
        match Parsers::build(&container.parsers) {
            Ok(parsers) => (parsers, Some(container)),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "the log format's parsers do not build; lines are not parsed");
                (Parsers::default(), Some(container))
            }
        }
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
    /// The file's container, for the `kubernetes` input.
    container: Option<ContainerLog>,
    /// When its last lines came.
    last_lines: Instant,
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
        let state = self.files.entry(Arc::clone(path)).or_insert_with(|| {
            let (parsers, container) = steps.map(|s| s.for_file(path)).unwrap_or_default();
            FileState {
                input: Arc::clone(input),
                parsers,
                container,
                checkpoint: None,
                last_lines: Instant::now(),
            }
        });
        state.last_lines = Instant::now();
        for line in lines {
            let start = out.len();
            state.parsers.push(line, out);
            // Processed as soon as parsed, while the event is still in the CPU's caches: after
            // a whole batch of parsing, each would be read back from memory.
            finish(steps, state.container.as_ref(), &self.global, out, start);
        }
        let pending = state.parsers.pending_offset();
        state.checkpoint = pending.is_some().then_some(checkpoint);
        pending.map_or(end, |held| held.min(end))
    }

    /// Emits the multiline groups and partial lines that timed out by `now`; returns the
    /// checkpoints of the files that hold nothing back any more, to commit after delivery.
    /// Forgets the files of pods that are gone (emitting what they held) once
    /// [`FORGET_UNHARVESTED`] passed without lines.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<Event>) -> Vec<C> {
        let mut done = Vec::new();
        for state in self.files.values_mut() {
            if state.parsers.pending_offset().is_none() {
                continue;
            }
            let start = out.len();
            state.parsers.flush_expired(now, out);
            let steps = self.inputs.get(&state.input);
            finish(steps, state.container.as_ref(), &self.global, out, start);
            if state.parsers.pending_offset().is_none() {
                done.extend(state.checkpoint.take());
            }
        }
        let Self {
            inputs,
            global,
            files,
        } = self;
        files.retain(|path, state| {
            if now.saturating_duration_since(state.last_lines) < FORGET_UNHARVESTED {
                return true;
            }
            let steps = inputs.get(&state.input);
            if steps
                .and_then(|s| s.containers.as_ref())
                .is_none_or(|pods| pods.admits(path))
            {
                return true;
            }
            let start = out.len();
            state.parsers.flush(out);
            finish(steps, state.container.as_ref(), global, out, start);
            done.extend(state.checkpoint.take());
            false
        });
        done
    }

    /// The file is gone: emits whatever its parsers held and forgets it.
    pub fn close(&mut self, path: &Path, out: &mut Vec<Event>) {
        if let Some(mut state) = self.files.remove(path) {
            let start = out.len();
            state.parsers.flush(out);
            let steps = self.inputs.get(&state.input);
            finish(steps, state.container.as_ref(), &self.global, out, start);
        }
    }
}

/// Adds the container's fields, then runs the input's and the global processors over
/// `out[start..]`, removing dropped events.
fn finish(
    steps: Option<&InputSteps>,
    container: Option<&ContainerLog>,
    global: &Processors,
    out: &mut Vec<Event>,
    start: usize,
) {
    let mut kept = start;
    for at in start..out.len() {
        let event = &mut out[at];
        if let Some(container) = container {
            container.enrich(event);
        }
        if steps.is_none_or(|s| s.processors.run(event)) && global.run(event) {
            out.swap(kept, at);
            kept += 1;
        }
    }
    out.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::super::parse::tests::line;
    use super::*;

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
    fn files_of_pods_that_are_gone_are_forgotten_after_a_while() {
        let config = serde_yaml::from_str("{ node: n, logs_path: /pods }").unwrap();
        let pods = KubernetesInput::with_index(&config, crate::kubernetes::PodIndex::default());
        let mut p = Processing::new(
            [(Arc::from("k8s"), InputSteps::kubernetes(pods).unwrap())]
                .into_iter()
                .collect(),
            Processors::default(),
        );
        let input: Arc<str> = Arc::from("k8s");
        let path: Arc<Path> = Arc::from(Path::new("/pods/ns_web_u1/app/0.log"));
        let mut out = Vec::new();
        let partial = line(0, "2026-11-28T16:45:00.000000001Z stdout P held ");
        assert_eq!(p.push(&input, &path, vec![partial], 50, 50, &mut out), 0);
        assert!(out.is_empty(), "a partial line is held");
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(p.flush_expired(soon, &mut out).is_empty());
        assert_eq!(p.files.len(), 1, "kept while it may still be drained");
        let later = Instant::now() + FORGET_UNHARVESTED;
        assert_eq!(p.flush_expired(later, &mut out), vec![50]);
        assert!(p.files.is_empty(), "forgotten: its pod is unknown");
        assert_eq!(out.len(), 1, "what it held is emitted");
        assert_eq!(out[0]["message"], "held ", "read as cri: {:?}", out[0]);
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
