//! Between the readers and the outputs: a bounded queue that every output consumes at its
//! own pace, from its own cursor.
//!
//! Each output has a task that takes the batches in order and sends each until the output
//! acknowledges it (waiting longer after each failure), several at once when the output has
//! several workers; its cursor moves over the batches acknowledged so far without a gap. A
//! slow or dead output therefore holds back only itself until the queue is full; then
//! [`Queue::push`] waits, and so do the readers (backpressure; nothing is dropped).
//!
//! - **Memory queue** (default): bounded by events and bytes. A batch's commit token (its
//!   registry checkpoint) is handed back, in push order, once *every* output has acknowledged
//!   it, so a line's offset is committed only after all outputs have it.
//! - **Disk queue** (`queue.disk`): batches are appended to segment files and fsynced; that is
//!   when their token is handed back, so the readers and the registry go on while an output is
//!   down, until `max_size` is reached. Each output's cursor is saved after every
//!   acknowledgement, so after a crash each output resumes where *it* stopped. A batch that
//!   cannot be read back is never passed over: its output stops there and tries again (an
//!   error, counted), so nothing behind it is released either.

pub mod config;
pub mod disk;
pub mod metrics;

pub use config::QueueConfig;
pub use metrics::QueueMetrics;

use crate::output::{Output, OutputError};
use crate::process::{Event, Value};
use disk::{DiskStore, Location, Recovery};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// First wait before sending a batch again to an output that failed; doubles up to
/// [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(100);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("disk queue {path}: {source}")]
    Disk {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the queue is closed")]
    Closed,
}

/// Called with each batch's token once the batch is safe (see the module docs).
pub type OnSafe<T> = Box<dyn FnMut(T) + Send>;

/// The queue, with one consumer task per output.
pub struct Queue<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    consumers: Vec<JoinHandle<()>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Bumped on every push: consumers wait on it.
    pushed: watch::Sender<u64>,
    /// Bumped on every release: a full queue's producer waits on it.
    released: watch::Sender<u64>,
    on_safe: Mutex<OnSafe<T>>,
    store: Option<(std::path::PathBuf, Mutex<DiskStore>)>,
    /// One push at a time: a batch's number, its record and its entry must be taken in the
    /// same order by every push.
    pushing: tokio::sync::Mutex<()>,
    metrics: QueueMetrics,
    max_events: usize,
    max_bytes: u64,
}

struct State<T> {
    /// Batches not yet acknowledged by every output, oldest first, numbered consecutively.
    entries: VecDeque<Entry<T>>,
    next_seq: u64,
    /// Per output (by index), the number of the next batch it must send.
    cursors: Vec<u64>,
    names: Vec<&'static str>,
    events: usize,
    /// Estimated bytes held (memory queue; the disk queue's size is its store's).
    bytes: u64,
    closed: bool,
}

struct Entry<T> {
    seq: u64,
    payload: Payload,
    /// Handed back when every output has the batch (memory queue only).
    token: Option<T>,
    events: usize,
    bytes: u64,
}

#[derive(Clone)]
enum Payload {
    Memory(Arc<Vec<Event>>),
    Disk(Location),
    /// A disk record found damaged when the queue was opened: counted as lost then, nothing
    /// left to send.
    Lost,
}

impl<T> Shared<T> {
    /// Appends a batch to the disk queue; once it is stored and fsynced it is safe, whatever
    /// happens to the outputs, so its token is handed back at once.
    fn append(&self, json: &[u8], token: T) -> std::io::Result<()> {
        let (_, store) = self.store.as_ref().expect("a disk queue");
        let (seq, location) = store.lock().expect("not poisoned").append(json)?;
        (self.on_safe.lock().expect("not poisoned"))(token);
        self.add(Entry {
            seq,
            payload: Payload::Disk(location),
            token: None,
            events: 0,
            bytes: 0,
        });
        Ok(())
    }

    fn add(&self, entry: Entry<T>) {
        let mut state = self.state.lock().expect("not poisoned");
        state.events += entry.events;
        state.bytes += entry.bytes;
        state.next_seq = entry.seq + 1;
        state.entries.push_back(entry);
    }
}

impl<T> State<T> {
    fn front_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }
}

impl<T: Send + 'static> Queue<T> {
    /// Starts one consumer task per output. With a disk queue, the batches stored by an
    /// earlier run are delivered first, each output from its saved cursor.
    pub fn start(
        config: &QueueConfig,
        outputs: Vec<Box<dyn Output>>,
        on_safe: OnSafe<T>,
        metrics: QueueMetrics,
    ) -> Result<Self, QueueError> {
        let names: Vec<&'static str> = outputs.iter().map(|o| o.name()).collect();
        let mut state = State {
            entries: VecDeque::new(),
            next_seq: 0,
            cursors: vec![0; outputs.len()],
            names,
            events: 0,
            bytes: 0,
            closed: false,
        };
        let (store, max_events, max_bytes) = match &config.disk {
            None => (None, config.mem.events, config.mem.bytes),
            Some(disk) => {
                let segment = disk.segment_size.min(disk.max_size / 8).max(1);
                let (store, recovery) =
                    DiskStore::open(&disk.path, segment).map_err(|source| QueueError::Disk {
                        path: disk.path.clone(),
                        source,
                    })?;
                resume(&mut state, recovery, &metrics);
                (
                    Some((disk.path.clone(), Mutex::new(store))),
                    usize::MAX,
                    disk.max_size,
                )
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            pushed: watch::Sender::new(0),
            released: watch::Sender::new(0),
            on_safe: Mutex::new(on_safe),
            store,
            pushing: tokio::sync::Mutex::new(()),
            metrics,
            max_events,
            max_bytes,
        });
        let consumers = outputs
            .into_iter()
            .enumerate()
            .map(|(index, output)| tokio::spawn(consume(Arc::clone(&shared), index, output)))
            .collect();
        Ok(Self { shared, consumers })
    }

    /// Adds a batch (possibly empty: then only its token travels, in order). Waits while the
    /// queue is full; an empty queue takes any batch, so one larger than the bounds still goes.
    pub async fn push(&self, events: Vec<Event>, token: T) -> Result<(), QueueError> {
        let shared = &self.shared;
        let _pushing = shared.pushing.lock().await;
        let (payload, bytes) = match &shared.store {
            None => {
                let bytes = events.iter().map(estimate_size).sum::<usize>() as u64;
                (None, bytes)
            }
            Some((path, _)) => {
                let json = serde_json::to_vec(&events).map_err(|err| QueueError::Disk {
                    path: path.clone(),
                    source: std::io::Error::other(err),
                })?;
                let bytes = json.len() as u64 + 16;
                (Some(json), bytes)
            }
        };
        let mut released = shared.released.subscribe();
        loop {
            {
                let state = shared.state.lock().expect("not poisoned");
                if state.closed {
                    return Err(QueueError::Closed);
                }
                let held = match &shared.store {
                    Some((_, store)) => store.lock().expect("not poisoned").size(),
                    None => state.bytes,
                };
                let fits = state.events + events.len() <= shared.max_events
                    && held + bytes <= shared.max_bytes;
                if fits || state.entries.is_empty() {
                    break;
                }
            }
            released.changed().await.map_err(|_| QueueError::Closed)?;
        }
        match (&shared.store, payload) {
            (Some((path, _)), Some(json)) => {
                let owned = Arc::clone(shared);
                // The record, its token and its entry go together even if this push is dropped
                // while the append runs: a record without its entry would shift every later
                // batch's number.
                tokio::task::spawn_blocking(move || owned.append(&json, token))
                    .await
                    .expect("the disk append does not panic")
                    .map_err(|source| QueueError::Disk {
                        path: path.clone(),
                        source,
                    })?;
            }
            _ => {
                let seq = shared.state.lock().expect("not poisoned").next_seq;
                shared.add(Entry {
                    seq,
                    events: events.len(),
                    payload: Payload::Memory(Arc::new(events)),
                    token: Some(token),
                    bytes,
                });
            }
        }
        shared.pushed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Stops taking batches and waits until every output has sent every batch, for at most
    /// `deadline`. Returns whether everything was delivered.
    pub async fn close(self, deadline: Duration) -> bool {
        self.shared.state.lock().expect("not poisoned").closed = true;
        self.shared.pushed.send_modify(|n| *n += 1);
        let mut consumers = self.consumers;
        let drained = tokio::time::timeout(deadline, async {
            for consumer in &mut consumers {
                let _ = consumer.await;
            }
        })
        .await
        .is_ok();
        if !drained {
            // What is left is read again at the next start (memory) or stays on disk.
            for consumer in &consumers {
                consumer.abort();
            }
        }
        drained
    }

    /// Batches and events held now (for metrics and tests).
    pub fn len(&self) -> (usize, usize) {
        let state = self.shared.state.lock().expect("not poisoned");
        (state.entries.len(), state.events)
    }

    /// Whether no batch is waiting for any output.
    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }
}

/// Fills `state` with what an earlier run left on disk: every output's cursor, and the batches
/// from the oldest cursor on. Numbers with no intact record are damage, counted as lost once.
fn resume<T>(state: &mut State<T>, recovery: Recovery, metrics: &QueueMetrics) {
    let Recovery {
        records,
        cursors: saved,
        next,
        damaged_bytes,
    } = recovery;
    let first = records.first().map_or(next, |r| r.seq);
    state.next_seq = next;
    for (cursor, name) in state.cursors.iter_mut().zip(&state.names) {
        // A new output starts at the oldest batch kept. A saved cursor before it is kept: the
        // batches in between are gone (damaged), and are counted below, not passed over.
        *cursor = saved.get(*name).copied().unwrap_or(first).min(next);
    }
    let oldest = state.cursors.iter().copied().min().unwrap_or(next);
    let mut records = records.into_iter().filter(|r| r.seq >= oldest).peekable();
    let mut lost = 0u64;
    for seq in oldest..next {
        let payload = match records.next_if(|r| r.seq == seq) {
            Some(record) => Payload::Disk(record.location),
            None => {
                lost += 1;
                Payload::Lost
            }
        };
        state.entries.push_back(Entry {
            seq,
            payload,
            token: None,
            events: 0,
            bytes: 0,
        });
    }
    if lost > 0 || damaged_bytes > 0 {
        metrics.lost_batches.inc_by(lost);
        tracing::error!(
            lost_batches = lost,
            damaged_bytes,
            "disk queue: damaged records found; their batches are lost (they were committed when stored)"
        );
    }
    if !state.entries.is_empty() {
        tracing::info!(
            batches = state.entries.len(),
            "disk queue: resuming the batches stored by the last run"
        );
    }
}

/// One output's consumer: hands the batches from its cursor on, in order, to the output's
/// workers ([`Output::extra_workers`]), several at a time when it has several. Batches may be
/// acknowledged out of order; the cursor moves only over a run of acknowledged batches, so a
/// batch is released (and its offsets committed) only once it and every earlier one are.
async fn consume<T: Send + 'static>(shared: Arc<Shared<T>>, index: usize, output: Box<dyn Output>) {
    let mut idle = output.extra_workers();
    idle.push(output);
    let mut sending: JoinSet<(u64, Box<dyn Output>)> = JoinSet::new();
    let mut pushed = shared.pushed.subscribe();
    let mut next = shared.state.lock().expect("not poisoned").cursors[index];
    // The cursor, and the acknowledged batches after it (waiting for an earlier one).
    let mut cursor = next;
    let mut done = BTreeSet::new();
    loop {
        let mut closed = false;
        while !idle.is_empty() {
            let payload = {
                let state = shared.state.lock().expect("not poisoned");
                closed = state.closed;
                let at = (next - state.front_seq()) as usize;
                state.entries.get(at).map(|entry| entry.payload.clone())
            };
            let Some(payload) = payload else { break };
            let worker = idle.pop().expect("not empty");
            sending.spawn(deliver(Arc::clone(&shared), next, payload, worker));
            next += 1;
        }
        if closed && sending.is_empty() {
            return;
        }
        tokio::select! {
            Some(joined) = sending.join_next() => {
                let (seq, worker) = joined.expect("a delivery task does not panic");
                idle.push(worker);
                done.insert(seq);
                let before = cursor;
                while done.remove(&cursor) {
                    cursor += 1;
                }
                if cursor > before {
                    acknowledge(&shared, index, cursor).await;
                }
            }
            // Never an error: the sender lives in `shared`, which this task holds.
            _ = pushed.changed(), if !idle.is_empty() => {}
        }
    }
}

/// Sends batch `seq` with `worker` until it is acknowledged; hands the worker back. A disk
/// record that cannot be read is tried again, longer and longer, for as long as it takes: it
/// is never taken as sent.
async fn deliver<T: Send + 'static>(
    shared: Arc<Shared<T>>,
    seq: u64,
    payload: Payload,
    mut worker: Box<dyn Output>,
) -> (u64, Box<dyn Output>) {
    let events = match payload {
        Payload::Memory(events) => events,
        Payload::Lost => return (seq, worker),
        Payload::Disk(location) => {
            let mut backoff = Backoff::new();
            loop {
                match read(&shared, location).await {
                    Ok(events) => break Arc::new(events),
                    Err(err) => {
                        shared
                            .metrics
                            .read_errors
                            .get_or_create(&metrics::OutputLabels {
                                output: worker.name(),
                            })
                            .inc();
                        let wait = backoff.next_wait();
                        tracing::error!(output = worker.name(), batch = seq, %err, retry_in = ?wait, "disk queue: cannot read a stored batch; this output waits for it");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    };
    if !events.is_empty() {
        send_until_acknowledged(worker.as_mut(), &events).await;
    }
    (seq, worker)
}

async fn read<T: Send + 'static>(
    shared: &Arc<Shared<T>>,
    location: Location,
) -> std::io::Result<Vec<Event>> {
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let (_, store) = shared.store.as_ref().expect("a disk queue");
        store.lock().expect("not poisoned").read(location)
    })
    .await
    .expect("the disk read does not panic")
}

/// Moves output `index`'s cursor to `cursor`, then releases the batches every output has:
/// hands back their tokens (memory) or deletes their segments (disk).
async fn acknowledge<T: Send + 'static>(shared: &Arc<Shared<T>>, index: usize, cursor: u64) {
    let (released, oldest, cursors) = {
        let mut state = shared.state.lock().expect("not poisoned");
        state.cursors[index] = cursor;
        let oldest = state.cursors.iter().copied().min().unwrap_or(cursor);
        let mut released = Vec::new();
        while state.entries.front().is_some_and(|e| e.seq < oldest) {
            let entry = state.entries.pop_front().expect("checked above");
            state.events -= entry.events;
            state.bytes -= entry.bytes;
            released.extend(entry.token);
        }
        let cursors: HashMap<String, u64> = state
            .names
            .iter()
            .zip(&state.cursors)
            .map(|(name, cursor)| (name.to_string(), *cursor))
            .collect();
        (released, oldest, cursors)
    };
    {
        let mut on_safe = shared.on_safe.lock().expect("not poisoned");
        for token in released {
            on_safe(token);
        }
    }
    if let Some((path, _)) = &shared.store {
        let owned = Arc::clone(shared);
        let result = tokio::task::spawn_blocking(move || {
            let (_, store) = owned.store.as_ref().expect("a disk queue");
            let mut store = store.lock().expect("not poisoned");
            store.save_cursors(&cursors)?;
            // Only segments that end before every cursor: a record being appended meanwhile
            // is past them all.
            store.release_before(oldest)
        })
        .await
        .expect("the disk release does not panic");
        match result {
            Ok(()) => {}
            Err(err) => {
                tracing::error!(path = %path.display(), %err, "disk queue: cannot save cursors or delete segments")
            }
        }
    }
    shared.released.send_modify(|n| *n += 1);
}

/// Sends `events` to `output` until it acknowledges them, waiting longer after each failure:
/// nothing is dropped, and the queue fills meanwhile (backpressure).
pub async fn send_until_acknowledged(output: &mut dyn Output, events: &[Event]) {
    let mut backoff = Backoff::new();
    loop {
        match output.send(events).await {
            Ok(()) => return,
            Err(err) => {
                let wait = backoff.next_wait();
                log_failure(output.name(), &err, wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Waits between attempts: [`FIRST_RETRY_WAIT`], doubling up to [`MAX_RETRY_WAIT`].
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: FIRST_RETRY_WAIT,
        }
    }

    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_RETRY_WAIT);
        wait
    }
}

fn log_failure(output: &str, err: &OutputError, wait: Duration) {
    tracing::warn!(output, kind = err.metric_label(), error = %err, retry_in = ?wait, "delivery failed");
}

/// Roughly the bytes an event takes: its strings and keys, plus a little per value. An
/// object shared with a cache (GeoIP, user agents, the file's and host's fields) is the
/// cache's memory, not the event's, and is not walked: walking them took 6% of the agent's
/// time with the access-log chain (`agent_chain_*` in `cargo xtask bench process`).
fn estimate_size(event: &Event) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len() + 24,
            Value::Array(items) => items.iter().map(value).sum::<usize>() + 24,
            Value::Object(map) if map.is_shared() => 16,
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + 32 + value(v)).sum(),
            _ => 16,
        }
    }
    event.iter().map(|(k, v)| k.len() + 32 + value(v)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputError;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An output that records what it acknowledged, and fails while `down` is set.
    struct Recorder {
        name: &'static str,
        got: Arc<Mutex<Vec<u64>>>,
        down: Arc<AtomicBool>,
    }

    #[async_trait::async_trait]
    impl Output for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(OutputError::Unreachable {
                    output: self.name,
                    message: "down".into(),
                });
            }
            let mut got = self.got.lock().unwrap();
            got.extend(events.iter().map(|e| e["n"].as_u64().unwrap()));
            Ok(())
        }
    }

    /// The output, what it received, and the switch that takes it down.
    type Recorded = (Box<dyn Output>, Arc<Mutex<Vec<u64>>>, Arc<AtomicBool>);

    fn recorder(name: &'static str) -> Recorded {
        let got = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let output = Recorder {
            name,
            got: Arc::clone(&got),
            down: Arc::clone(&down),
        };
        (Box::new(output), got, down)
    }

    fn batch(n: u64) -> Vec<Event> {
        vec![json!({ "n": n }).as_object().unwrap().clone().into()]
    }

    async fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_token_comes_back_only_when_every_output_has_the_batch() {
        let (a, got_a, _) = recorder("a");
        let (b, got_b, down_b) = recorder("b");
        down_b.store(true, Ordering::SeqCst);
        let safe = Arc::new(Mutex::new(Vec::new()));
        let on_safe = {
            let safe = Arc::clone(&safe);
            Box::new(move |t: u64| safe.lock().unwrap().push(t))
        };
        let queue = Queue::start(
            &QueueConfig::default(),
            vec![a, b],
            on_safe,
            QueueMetrics::default(),
        )
        .unwrap();
        for n in 0..5 {
            queue.push(batch(n), n).await.unwrap();
        }
        // Output a goes on while b is down; nothing is committed yet.
        wait_until("output a", || got_a.lock().unwrap().len() == 5).await;
        assert!(safe.lock().unwrap().is_empty());
        down_b.store(false, Ordering::SeqCst);
        wait_until("every token", || safe.lock().unwrap().len() == 5).await;
        assert_eq!(*safe.lock().unwrap(), vec![0, 1, 2, 3, 4], "in push order");
        assert_eq!(*got_b.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(queue.close(Duration::from_secs(5)).await);
    }

    /// An output with `workers` workers that record what they acknowledged; batch 0 waits
    /// until `gate` gets a permit.
    #[derive(Clone)]
    struct Gated {
        got: Arc<Mutex<Vec<u64>>>,
        gate: Arc<tokio::sync::Semaphore>,
        workers: usize,
    }

    #[async_trait::async_trait]
    impl Output for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
            let n = events[0]["n"].as_u64().unwrap();
            if n == 0 {
                self.gate.acquire().await.unwrap().forget();
            }
            self.got.lock().unwrap().push(n);
            Ok(())
        }
        fn extra_workers(&self) -> Vec<Box<dyn Output>> {
            (1..self.workers)
                .map(|_| Box::new(self.clone()) as Box<dyn Output>)
                .collect()
        }
    }

    #[tokio::test]
    async fn workers_send_at_once_and_tokens_still_come_back_in_order() {
        let output = Gated {
            got: Arc::new(Mutex::new(Vec::new())),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            workers: 3,
        };
        let (got, gate) = (Arc::clone(&output.got), Arc::clone(&output.gate));
        let safe = Arc::new(Mutex::new(Vec::new()));
        let on_safe = {
            let safe = Arc::clone(&safe);
            Box::new(move |t: u64| safe.lock().unwrap().push(t))
        };
        let queue = Queue::start(
            &QueueConfig::default(),
            vec![Box::new(output)],
            on_safe,
            QueueMetrics::default(),
        )
        .unwrap();
        for n in 0..6 {
            queue.push(batch(n), n).await.unwrap();
        }
        // Batch 0 hangs in one worker; the two others deliver the rest meanwhile…
        wait_until("batches 1 to 5", || got.lock().unwrap().len() == 5).await;
        // …but nothing is committed before batch 0 is.
        assert!(safe.lock().unwrap().is_empty());
        gate.add_permits(1);
        wait_until("every token", || safe.lock().unwrap().len() == 6).await;
        assert_eq!(
            *safe.lock().unwrap(),
            vec![0, 1, 2, 3, 4, 5],
            "in push order"
        );
        assert!(queue.close(Duration::from_secs(5)).await);
    }

    #[test]
    fn objects_shared_with_a_cache_are_not_counted_as_the_events_memory() {
        let geo = Event::from(
            json!({ "city_name": "x".repeat(1000), "country_iso_code": "NZ" })
                .as_object()
                .unwrap()
                .clone(),
        );
        let mut owned = Event::new();
        owned.insert("geo", geo.clone());
        let mut shared = Event::new();
        shared.insert("geo", geo.into_shared());
        assert!(estimate_size(&owned) > 1000);
        assert!(estimate_size(&shared) < 100);
    }

    /// Pushes `fitting` batches into a queue of `config` whose output is down, then checks
    /// that one more push waits until the output is back.
    async fn push_waits_for_room_after(config: QueueConfig, fitting: u64) {
        let (a, got, down) = recorder("a");
        down.store(true, Ordering::SeqCst);
        let queue = Arc::new(
            Queue::start(
                &config,
                vec![a],
                Box::new(|_: u64| {}),
                QueueMetrics::default(),
            )
            .unwrap(),
        );
        for n in 0..fitting {
            queue.push(batch(n), n).await.unwrap();
        }
        let blocked = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.push(batch(fitting), fitting).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!blocked.is_finished(), "batch {fitting} must wait for room");
        down.store(false, Ordering::SeqCst);
        blocked.await.unwrap().unwrap();
        let all = fitting as usize + 1;
        wait_until("every batch", || got.lock().unwrap().len() == all).await;
    }

    #[tokio::test]
    async fn a_full_memory_queue_makes_push_wait() {
        let mut config = QueueConfig::default();
        config.mem.events = 3;
        push_waits_for_room_after(config, 3).await;
    }

    #[tokio::test]
    async fn the_byte_bound_holds_too() {
        let mut config = QueueConfig::default();
        config.mem.bytes = 1;
        // An empty queue takes a batch over the bound; the next one waits.
        push_waits_for_room_after(config, 1).await;
    }

    /// A disk queue in a temporary folder (on tmpfs where there is one: every push fsyncs).
    fn disk_config(segment_size: u64) -> (tempfile::TempDir, QueueConfig) {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let mut config = QueueConfig::default();
        config.disk = Some(config::DiskQueueConfig {
            path: dir.path().join("q"),
            max_size: 1 << 30,
            segment_size,
        });
        (dir, config)
    }

    /// The output acknowledges as fast as batches come, so the queue drains between pushes
    /// over and over, while the next push is being stored: no segment may go from under it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushes_racing_acknowledgements_lose_nothing() {
        let (_dir, config) = disk_config(4096);
        let (a, got, _) = recorder("a");
        let queue = Queue::start(
            &config,
            vec![a],
            Box::new(|_: u64| {}),
            QueueMetrics::default(),
        )
        .unwrap();
        for n in 0..3000 {
            queue.push(batch(n), n).await.unwrap();
        }
        assert!(queue.close(Duration::from_secs(30)).await);
        assert_eq!(*got.lock().unwrap(), (0..3000).collect::<Vec<_>>());
    }

    /// After a fully drained disk queue (no segment left), a restarted queue's batches are
    /// numbered after the saved cursors, so they are sent.
    #[tokio::test]
    async fn a_drained_disk_queue_sends_the_batches_of_the_next_run() {
        let (_dir, config) = disk_config(4096);
        for run in 0..3 {
            let (a, got, _) = recorder("a");
            let queue = Queue::start(
                &config,
                vec![a],
                Box::new(|_: u64| {}),
                QueueMetrics::default(),
            )
            .unwrap();
            for n in 0..10 {
                queue.push(batch(run * 10 + n), n).await.unwrap();
            }
            assert!(queue.close(Duration::from_secs(5)).await);
            let want: Vec<u64> = (run * 10..run * 10 + 10).collect();
            assert_eq!(*got.lock().unwrap(), want, "run {run}");
        }
    }

    #[tokio::test]
    async fn the_disk_queue_commits_on_store_and_resumes_each_cursor_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = QueueConfig::default();
        config.disk = Some(config::DiskQueueConfig {
            path: dir.path().join("q"),
            max_size: 1 << 20,
            segment_size: 256,
        });
        let (a, got_a, _) = recorder("a");
        let (b, got_b, down_b) = recorder("b");
        down_b.store(true, Ordering::SeqCst);
        let safe = Arc::new(Mutex::new(Vec::new()));
        let on_safe = {
            let safe = Arc::clone(&safe);
            Box::new(move |t: u64| safe.lock().unwrap().push(t))
        };
        let queue = Queue::start(&config, vec![a, b], on_safe, QueueMetrics::default()).unwrap();
        for n in 0..10 {
            queue.push(batch(n), n).await.unwrap();
        }
        // Committed as soon as stored, although b has nothing yet.
        assert_eq!(safe.lock().unwrap().len(), 10);
        wait_until("output a", || got_a.lock().unwrap().len() == 10).await;
        // "Crash": drop the queue without draining; b never got anything.
        assert!(!queue.close(Duration::from_millis(200)).await);

        let (a, got_a2, _) = recorder("a");
        let (b, got_b2, _) = recorder("b");
        let queue = Queue::start(
            &config,
            vec![a, b],
            Box::new(|_: u64| {}),
            QueueMetrics::default(),
        )
        .unwrap();
        wait_until("output b after the restart", || {
            got_b2.lock().unwrap().len() == 10
        })
        .await;
        assert!(
            got_a2.lock().unwrap().is_empty(),
            "a resumes after what it had"
        );
        assert!(got_b.lock().unwrap().is_empty());
        assert!(queue.close(Duration::from_secs(5)).await);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("q"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .collect();
        assert!(left.is_empty(), "delivered segments are deleted: {left:?}");
    }
}
