//! The queue, the registry and the outputs together against a reference model (a proptest
//! state machine): random interleavings of pushes, acknowledgements and failures by several
//! workers of several outputs (out of order), crashes (state dropped without a clean stop),
//! restarts, and damaged or torn segment files. Checked after every step: a committed offset
//! never passes a line that some output has not acknowledged (memory queue) or that is not
//! stored (disk queue). Checked at the end: every line read reached every output at least
//! once, except lines of disk records the test damaged, and those only with the loss counted.

use proptest::prelude::*;
use skiff_agent::harvest::identity::Generation;
use skiff_agent::output::{Output, OutputError};
use skiff_agent::process::Event;
use skiff_agent::queue::config::DiskQueueConfig;
use skiff_agent::queue::{Queue, QueueConfig, QueueMetrics};
use skiff_agent::registry::{Checkpoint, Registry, RegistryConfig};
use skiff_agent::watch::FileId;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

const FILES: u64 = 2;
const OUTPUTS: [&str; 2] = ["a", "b"];
/// The disk queue's record header: magic, number, length, checksum (see `queue::disk`).
const HEADER: usize = 20;

/// One step of the test.
#[derive(Debug, Clone)]
enum Step {
    /// The reader of file `file` reads `lines` more lines and pushes them as one batch.
    Push { file: u64, lines: u64 },
    /// The destination acknowledges a pending send of `output` (`pick` chooses which).
    Ack { output: usize, pick: usize },
    /// A pending send of `output` fails.
    Fail { output: usize, pick: usize },
    /// The registry is written to disk.
    Flush,
    /// The agent dies: queue and registry dropped, no drain, no flush.
    Crash,
    /// The agent starts again (after a crash).
    Restart,
    /// While crashed: one bit flipped in a stored record (`pick` chooses the record and bit).
    Damage { pick: usize },
    /// While crashed: half a record at the end of the last segment (an append cut short).
    TornTail { len: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..FILES, 0..6u64).prop_map(|(file, lines)| Step::Push { file, lines }),
        7 => (0..OUTPUTS.len(), any::<usize>()).prop_map(|(output, pick)| Step::Ack { output, pick }),
        1 => (0..OUTPUTS.len(), any::<usize>()).prop_map(|(output, pick)| Step::Fail { output, pick }),
        1 => Just(Step::Flush),
        1 => Just(Step::Crash),
        2 => Just(Step::Restart),
        1 => any::<usize>().prop_map(|pick| Step::Damage { pick }),
        1 => (1..HEADER + 8).prop_map(|len| Step::TornTail { len }),
    ]
}

/// A send waiting for the test to answer it.
struct Pending {
    output: usize,
    lines: Vec<(u64, u64)>,
    reply: oneshot::Sender<bool>,
}

/// An output whose every send waits until the test acknowledges or fails it.
#[derive(Clone)]
struct Scripted {
    index: usize,
    workers: usize,
    pending: Arc<Mutex<Vec<Pending>>>,
}

#[async_trait::async_trait]
impl Output for Scripted {
    fn name(&self) -> &'static str {
        OUTPUTS[self.index]
    }

    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
        let lines = events
            .iter()
            .map(|e| (e["f"].as_u64().unwrap(), e["i"].as_u64().unwrap()))
            .collect();
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap().push(Pending {
            output: self.index,
            lines,
            reply,
        });
        match answer.await {
            Ok(true) => Ok(()),
            _ => Err(OutputError::Unreachable {
                output: self.name(),
                message: "the test failed this send".into(),
            }),
        }
    }

    fn extra_workers(&self) -> Vec<Box<dyn Output>> {
        (1..self.workers)
            .map(|_| Box::new(self.clone()) as Box<dyn Output>)
            .collect()
    }
}

fn checkpoint(file: u64, offset: u64) -> Checkpoint {
    Checkpoint {
        id: FileId { dev: 0, ino: file },
        generation: Generation::default(),
        path: PathBuf::from(format!("/model/{file}.log")),
        offset,
    }
}

/// The system under test and the model beside it.
struct Harness {
    folder: tempfile::TempDir,
    disk: bool,
    workers: [usize; 2],
    running: Option<(Queue<Checkpoint>, Arc<Registry>)>,
    metrics: QueueMetrics,
    pending: Arc<Mutex<Vec<Pending>>>,
    /// Per file, the next line its reader reads (lines are numbered, one "offset" each).
    read: [u64; FILES as usize],
    /// Per file, how many lines exist (were ever read).
    written: [u64; FILES as usize],
    /// Per file, the end of the lines stored by a disk push that returned.
    stored: [u64; FILES as usize],
    /// Per output, every line its destination acknowledged.
    delivered: [HashSet<(u64, u64)>; 2],
    /// The disk queue's batches by number (the model numbers them as the queue should).
    batches: Vec<Vec<(u64, u64)>>,
    /// Batches whose record the test damaged.
    damaged: BTreeSet<usize>,
}

impl Harness {
    fn new(disk: bool, workers: [usize; 2]) -> Self {
        // tmpfs where there is one: every disk push is fsynced.
        let base = Path::new("/dev/shm");
        let folder = if base.is_dir() {
            tempfile::tempdir_in(base).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        Self {
            folder,
            disk,
            workers,
            running: None,
            metrics: QueueMetrics::default(),
            pending: Arc::default(),
            read: [0; FILES as usize],
            written: [0; FILES as usize],
            stored: [0; FILES as usize],
            delivered: Default::default(),
            batches: Vec::new(),
            damaged: BTreeSet::new(),
        }
    }

    fn queue_folder(&self) -> PathBuf {
        self.folder.path().join("queue")
    }

    fn start(&mut self) {
        let registry = Arc::new(
            Registry::open(&RegistryConfig {
                path: self.folder.path().join("registry"),
                ..RegistryConfig::default()
            })
            .unwrap(),
        );
        // The readers resume from what the registry kept.
        for file in 0..FILES {
            self.read[file as usize] = registry
                .lookup(FileId { dev: 0, ino: file })
                .map_or(0, |c| c.offset);
        }
        let mut config = QueueConfig::default();
        if self.disk {
            config.disk = Some(DiskQueueConfig {
                path: self.queue_folder(),
                max_size: 1 << 20,
                // A few records a segment: segments roll over and are deleted often.
                segment_size: 150,
            });
        }
        let outputs = (0..OUTPUTS.len())
            .map(|index| {
                Box::new(Scripted {
                    index,
                    workers: self.workers[index],
                    pending: Arc::clone(&self.pending),
                }) as Box<dyn Output>
            })
            .collect();
        let on_safe = {
            let registry = Arc::clone(&registry);
            Box::new(move |c: Checkpoint| registry.commit(c))
        };
        let queue = Queue::start(&config, outputs, on_safe, self.metrics.clone()).unwrap();
        self.running = Some((queue, registry));
    }

    /// Lets the queue's tasks run until they have nothing left to do for now.
    async fn settle(&self) {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn push(&mut self, file: u64, lines: u64) {
        let Some((queue, _)) = &self.running else {
            return;
        };
        let f = file as usize;
        let from = self.read[f];
        let events: Vec<Event> = (from..from + lines)
            .map(|i| {
                Event::from(
                    serde_json::json!({ "f": file, "i": i })
                        .as_object()
                        .unwrap()
                        .clone(),
                )
            })
            .collect();
        queue
            .push(events, checkpoint(file, from + lines))
            .await
            .unwrap();
        self.read[f] = from + lines;
        self.written[f] = self.written[f].max(from + lines);
        if self.disk {
            self.stored[f] = self.stored[f].max(from + lines);
            self.batches
                .push((from..from + lines).map(|i| (file, i)).collect());
        }
    }

    fn answer(&mut self, output: usize, pick: usize, ok: bool) {
        let mut pending = self.pending.lock().unwrap();
        let theirs: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].output == output)
            .collect();
        if theirs.is_empty() {
            return;
        }
        let send = pending.swap_remove(theirs[pick % theirs.len()]);
        // A send whose task is gone (stopped by a crash) cannot be acknowledged.
        if send.reply.send(ok).is_ok() && ok {
            self.delivered[output].extend(send.lines);
        }
    }

    async fn crash(&mut self) {
        if let Some((queue, registry)) = self.running.take() {
            // No drain: the consumers are stopped where they are.
            queue.close(Duration::ZERO).await;
            drop(registry);
            self.pending.lock().unwrap().clear();
            // Writes already handed to the blocking pool finish, as a crash a moment later.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The segment files, oldest first (their names are their first record's number).
    fn segments(&self) -> Vec<PathBuf> {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(self.queue_folder())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        segments
    }

    /// The stored records, in order: (number, segment, offset of the header, record length).
    /// Reading a segment stops at the first header without the magic.
    fn records(&self) -> Vec<(usize, PathBuf, usize, usize)> {
        let mut records = Vec::new();
        for segment in self.segments() {
            let bytes = std::fs::read(&segment).unwrap();
            let mut at = 0;
            while at + HEADER <= bytes.len() && &bytes[at..at + 4] == b"SKQ2" {
                let seq = u64::from_be_bytes(bytes[at + 4..at + 12].try_into().unwrap());
                let len = u32::from_be_bytes(bytes[at + 12..at + 16].try_into().unwrap());
                let total = HEADER + len as usize;
                if at + total > bytes.len() {
                    break;
                }
                records.push((seq as usize, segment.clone(), at, total));
                at += total;
            }
        }
        records
    }

    fn damage(&mut self, pick: usize) {
        // Once per case: a damaged header would mislead this test's own reading of the records.
        if self.running.is_some() || !self.disk || !self.damaged.is_empty() {
            return;
        }
        let records = self.records();
        // The last record is left alone: damage to it cannot be told from an append cut short
        // by the crash (the queue cuts it, as every write-ahead log does).
        let Some(candidates) = records.len().checked_sub(1).filter(|n| *n > 0) else {
            return;
        };
        let (seq, segment, at, len) = &records[pick % candidates];
        let bit = (pick / candidates) % (len * 8);
        let mut bytes = std::fs::read(segment).unwrap();
        bytes[at + bit / 8] ^= 1 << (bit % 8);
        std::fs::write(segment, bytes).unwrap();
        self.damaged.insert(*seq);
    }

    fn tear_tail(&mut self, len: usize) {
        if self.running.is_some() || !self.disk {
            return;
        }
        let Some(segment) = self.segments().pop() else {
            return;
        };
        let mut partial = b"SKQ2".to_vec();
        partial.resize(len, 0);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.extend_from_slice(&partial[..len]);
        std::fs::write(segment, bytes).unwrap();
    }

    /// The line end each file's registry entry has committed, in the running registry.
    fn committed(&self) -> Option<[u64; FILES as usize]> {
        let (_, registry) = self.running.as_ref()?;
        let mut committed = [0; FILES as usize];
        for file in 0..FILES {
            committed[file as usize] = registry
                .lookup(FileId { dev: 0, ino: file })
                .map_or(0, |c| c.offset);
        }
        Some(committed)
    }

    /// How many lines of `file` from line 0 on `output` has without a gap.
    fn prefix(&self, output: usize, file: u64) -> u64 {
        (0..)
            .find(|i| !self.delivered[output].contains(&(file, *i)))
            .unwrap()
    }

    fn check_commits(&self) -> Result<(), TestCaseError> {
        let Some(committed) = self.committed() else {
            return Ok(());
        };
        for file in 0..FILES {
            let f = file as usize;
            if self.disk {
                prop_assert!(
                    committed[f] <= self.stored[f],
                    "file {file}: committed {} but stored up to {}",
                    committed[f],
                    self.stored[f]
                );
            } else {
                for (output, name) in OUTPUTS.iter().enumerate() {
                    let prefix = self.prefix(output, file);
                    prop_assert!(
                        committed[f] <= prefix,
                        "file {file}: committed {} but output {name} has lines up to {prefix} only",
                        committed[f],
                    );
                }
            }
        }
        Ok(())
    }

    async fn run(&mut self, steps: &[Step]) -> Result<(), TestCaseError> {
        self.start();
        for step in steps {
            match *step {
                Step::Push { file, lines } => self.push(file, lines).await,
                Step::Ack { output, pick } => self.answer(output, pick, true),
                Step::Fail { output, pick } => self.answer(output, pick, false),
                Step::Flush => {
                    if let Some((_, registry)) = &self.running {
                        registry.flush().unwrap();
                    }
                }
                Step::Crash => self.crash().await,
                Step::Restart => {
                    if self.running.is_none() {
                        self.start();
                    }
                }
                Step::Damage { pick } => self.damage(pick),
                Step::TornTail { len } => self.tear_tail(len),
            }
            self.settle().await;
            self.check_commits()?;
        }
        if self.running.is_none() {
            self.start();
        }
        self.finish().await
    }

    /// The readers catch up with every file, the outputs acknowledge everything, the queue
    /// drains; then every line must be everywhere.
    async fn finish(&mut self) -> Result<(), TestCaseError> {
        for file in 0..FILES {
            let missing = self.written[file as usize] - self.read[file as usize];
            if missing > 0 {
                self.push(file, missing).await;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.settle().await;
            let answered = {
                let mut pending = self.pending.lock().unwrap();
                let all: Vec<Pending> = pending.drain(..).collect();
                let answered = !all.is_empty();
                for send in all {
                    if send.reply.send(true).is_ok() {
                        self.delivered[send.output].extend(send.lines);
                    }
                }
                answered
            };
            self.check_commits()?;
            let (queue, _) = self.running.as_ref().unwrap();
            if !answered && queue.is_empty() {
                break;
            }
            prop_assert!(
                tokio::time::Instant::now() < deadline,
                "the queue did not drain: {:?} held",
                queue.len()
            );
        }
        let lost_lines: HashSet<(u64, u64)> = self
            .damaged
            .iter()
            .flat_map(|&seq| self.batches[seq].iter().copied())
            .collect();
        for (output, name) in OUTPUTS.iter().enumerate() {
            for file in 0..FILES {
                for line in 0..self.written[file as usize] {
                    if self.delivered[output].contains(&(file, line)) {
                        continue;
                    }
                    prop_assert!(
                        lost_lines.contains(&(file, line)),
                        "output {name} never got line {line} of file {file}"
                    );
                    prop_assert!(
                        self.metrics.lost_batches.get() > 0,
                        "line {line} of file {file} lost without being counted"
                    );
                }
            }
        }
        let committed = self.committed().unwrap();
        prop_assert_eq!(committed, self.written, "everything committed once drained");
        let (queue, registry) = self.running.take().unwrap();
        prop_assert!(queue.close(Duration::from_secs(5)).await);
        registry.flush().unwrap();
        if self.disk {
            prop_assert!(
                self.records().is_empty(),
                "a drained disk queue keeps no segment with records"
            );
        }
        Ok(())
    }
}

fn run_case(disk: bool, workers: [usize; 2], steps: &[Step]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { Harness::new(disk, workers).run(steps).await })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_queue_against_the_model(
        workers in [1..4usize, 1..4usize],
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        run_case(false, workers, &steps)?;
    }

    #[test]
    fn disk_queue_against_the_model(
        workers in [1..4usize, 1..4usize],
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        run_case(true, workers, &steps)?;
    }
}
