//! The eBPF watch: syscall tracepoints report every open for writing, rename, unlink and
//! truncate of a path under the watched folders the instant it happens, so a new, rotated,
//! deleted or truncated log file is known without waiting for the next directory scan.
//!
//! The kernel side (`agent-ebpf/`) matches absolute paths against the watched prefixes (an LPM
//! trie), and resolves relative paths itself: the folder a path is relative to (the caller's cwd
//! or dirfd) is matched by device and inode against the watched folders, which user space keeps
//! in a hash map as folders appear (see [`EbpfWatch::watch_folders`]). The struct offsets that
//! walk needs come from the running kernel's BTF ([`super::btf`]), the tracepoint argument
//! offsets from tracefs. So only matching syscalls cross into user space, and nothing is looked
//! up in /proc after the fact.
//!
//! A dedicated thread blocks on the ring buffer's fd and hands events to a sink: the ring is
//! drained even while the rest of the agent is busy, and a slow consumer backs up into the
//! ring, where the programs count what they drop and the watch reports it as
//! [`EbpfEvent::Lost`] (rescan).
//!
//! Limits: a relative path is seen when it is relative to a watched folder itself (`mv a.log
//! a.log.1` inside it, `openat(dirfd_of_folder, "a.log")`), not when it reaches a watched
//! folder from elsewhere (`mv logs/a.log logs/b.log` run in the parent): the rescan finds
//! those. Events are seen on syscall entry, so the syscall may still fail: the engine checks
//! the file system itself.

use super::FileId;
use super::btf::{Btf, VMLINUX};
use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap as BpfHashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader, Pod};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, setrlimit};
use skiff_ebpf_common::{
    self as abi, ArgOffsets, FileEvent, Folder, KernelOffsets, PREFIX_MAX, WriteEvent, kind, slot,
};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The eBPF object `build.rs` compiled from `agent-ebpf/`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff-ebpf"));

/// Where tracefs is mounted on current kernels, and where it is mounted when missing.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Where older setups only have it (under debugfs). aya looks in the same two places.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
/// The tracepoints' category under tracefs' `events/`.
const CATEGORY: &str = "syscalls";

/// Events waiting for the async side of [`EbpfWatcher`]; beyond this the reader thread waits
/// and the ring fills.
const CHANNEL_CAPACITY: usize = 1024;
/// How long the reader thread sleeps in `poll` before checking whether the watch is gone.
const POLL_TIMEOUT_MS: u16 = 100;

/// Watched folders by their kernel identity, shared with the reader thread, which turns a
/// relative path back into an absolute one.
type FolderPaths = Arc<Mutex<HashMap<Folder, PathBuf>>>;

/// The attached programs and their reader thread, which hands every event to a sink. Dropping
/// it detaches the programs; the reader thread ends within [`POLL_TIMEOUT_MS`].
pub struct EbpfWatch {
    stop: Arc<AtomicBool>,
    folders: BpfHashMap<MapData, Folder, u8>,
    /// Harvested files whose next write is reported (see [`EbpfWatch::arm`]).
    files: BpfHashMap<MapData, Folder, u8>,
    /// The kernel's prefixes of absolute paths.
    trie: LpmTrie<MapData, [u8; PREFIX_MAX], u8>,
    /// The prefixes given at start-up, as stored in `trie` (with their trailing `/`).
    prefixes: BTreeSet<Vec<u8>>,
    /// Prefixes added for folders outside them (symlink targets), by folder.
    extra: HashMap<PathBuf, Vec<Vec<u8>>>,
    paths: FolderPaths,
    /// Owns the attached programs and the remaining maps.
    _ebpf: Ebpf,
}

impl Drop for EbpfWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// An [`EbpfWatch`] whose events are awaited one by one.
pub struct EbpfWatcher {
    events: mpsc::Receiver<EbpfEvent>,
    watch: EbpfWatch,
}

/// What the [`EbpfWatch`] reports. Paths are absolute (a relative one is joined to its
/// folder), exactly as the process named them otherwise (possibly with `..` or symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EbpfEvent {
    /// A process is opening a file under a watched folder for writing or creating it.
    Opened(OpenedFile),
    /// A process is renaming `from` to `to` (one of them under a watched folder).
    Renamed {
        pid: u32,
        from: PathBuf,
        to: PathBuf,
    },
    /// A process is deleting `path`.
    Unlinked { pid: u32, path: PathBuf },
    /// A process is truncating `path` (`truncate` or `ftruncate`).
    Truncated { pid: u32, path: PathBuf },
    /// A process is writing to `file`, which was armed (see [`EbpfWatch::arm`]) and no longer
    /// is. Seen on entry: the bytes may land a moment later.
    Written { pid: u32, file: FileId },
    /// This many events were dropped because the ring buffer was full, or could not be
    /// resolved to a path: the watched folders must be rescanned to find what they were.
    Lost(u64),
}

/// An open for writing under a watched folder, seen on entry: the open may still fail, so the
/// file need not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFile {
    /// The opener's process id.
    pub pid: u32,
    /// The open flags (`O_CREAT`, `O_TRUNC`, `O_WRONLY`, ...).
    pub flags: OFlag,
    /// The path.
    pub path: PathBuf,
}

/// Why the eBPF watch could not start. The variant names are the failure labels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A watched folder is relative or too long for the kernel's prefix map.
    #[error(
        "cannot watch {}: the kernel matches absolute folders of at most {} bytes",
        path.display(),
        PREFIX_MAX - 2
    )]
    Prefix { path: PathBuf },
    /// More distinct folders (with their canonical forms) than the prefix map holds.
    #[error(
        "cannot watch {count} folders with eBPF: at most {}",
        abi::MAX_PREFIXES
    )]
    TooManyPrefixes { count: usize },
    /// tracefs is not mounted and mounting it failed.
    #[error("tracefs is not mounted and mounting it on {TRACEFS} failed")]
    Tracefs { source: Errno },
    /// A tracepoint's format file is unreadable.
    #[error("cannot read {}", path.display())]
    Format { path: PathBuf, source: io::Error },
    /// A tracepoint's format has no 8-byte field of that name.
    #[error("{} has no 8-byte field `{field}`", path.display())]
    Field { path: PathBuf, field: &'static str },
    /// The kernel's BTF is missing or lacks a struct field the programs need.
    #[error("cannot read struct offsets from {VMLINUX}")]
    Btf(#[from] super::btf::BtfError),
    /// The object did not load (parse, BTF, map creation).
    #[error("cannot load the eBPF object")]
    Load(#[from] EbpfError),
    /// The object lacks a program or map the watcher needs.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The kernel refused a program (verifier, permissions) or its attachment.
    #[error("cannot load or attach {CATEGORY}:{program}")]
    Program {
        program: &'static str,
        source: ProgramError,
    },
    /// A map could not be opened or written.
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    /// The reader thread could not be started.
    #[error("cannot start the eBPF reader thread")]
    Thread(#[source] io::Error),
}

impl EbpfWatcher {
    /// Loads and attaches the programs (see [`EbpfWatch::attach`]); events queue in a bounded
    /// channel, beyond which the ring buffer fills and counts what it drops.
    pub fn load(prefixes: &[PathBuf]) -> Result<Self, Error> {
        let (tx, events) = mpsc::channel(CHANNEL_CAPACITY);
        let watch = EbpfWatch::attach(prefixes, move |event| tx.blocking_send(event).is_ok())?;
        Ok(Self { events, watch })
    }

    /// The next event, waiting for it; `None` once the reader thread has stopped (it logs why).
    pub async fn next(&mut self) -> Option<EbpfEvent> {
        self.events.recv().await
    }

    /// See [`EbpfWatch::watch_folders`].
    pub fn watch_folders<'a>(&mut self, folders: impl IntoIterator<Item = &'a Path>) {
        self.watch.watch_folders(folders);
    }

    /// See [`EbpfWatch::arm`].
    pub fn arm(&mut self, file: FileId) -> bool {
        self.watch.arm(file)
    }
}

impl EbpfWatch {
    /// Loads and attaches the programs, watching the folders `prefixes` and everything below
    /// them by absolute path (and the prefixes themselves for relative paths), and calls `sink`
    /// with each event on a dedicated thread until `sink` returns false or the watch is
    /// dropped. A folder is matched as given and, if different, in its canonical form, since
    /// the kernel compares the path strings processes pass. Needs root (`CAP_BPF`,
    /// `CAP_PERFMON`) and mounts tracefs if nobody has.
    pub fn attach(
        prefixes: &[PathBuf],
        sink: impl FnMut(EbpfEvent) -> bool + Send + 'static,
    ) -> Result<Self, Error> {
        let keys = prefix_bytes(prefixes)?;
        raise_memlock_limit();
        let events = tracefs()?.join("events").join(CATEGORY);
        let (args, present) = arg_offsets(&events)?;
        let kernel: KernelOffsets = Btf::load(Path::new(VMLINUX))?.kernel_offsets()?;

        // No CO-RE relocations to apply: the offsets above, from our own BTF reader, are
        // globals. aya would otherwise relocate against a second, fully parsed kernel BTF.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .override_global(abi::ARG_OFFSETS, &args, true)
            .override_global(abi::KERNEL_OFFSETS, &kernel, true)
            .load(PROGRAMS)?;
        let mut trie: LpmTrie<_, [u8; PREFIX_MAX], u8> = map(&mut ebpf, abi::PREFIXES)?;
        for key in &keys {
            trie.insert(&trie_key(key), 1, 0)
                .map_err(|source| Error::Map {
                    name: abi::PREFIXES,
                    source,
                })?;
        }
        let folders: BpfHashMap<MapData, Folder, u8> = map(&mut ebpf, abi::FOLDERS)?;
        let files: BpfHashMap<MapData, Folder, u8> = map(&mut ebpf, abi::FILES)?;
        let ring: RingBuf<MapData> = map(&mut ebpf, abi::EVENTS)?;
        let lost: PerCpuArray<MapData, u64> = map(&mut ebpf, abi::LOST)?;

        for &(program, _) in abi::PROGRAMS {
            if !present.contains(program) {
                tracing::debug!(program, "no such tracepoint on this kernel; skipped");
                continue;
            }
            let failed = |source| Error::Program { program, source };
            let tracepoint: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(Error::Missing(program))?
                .try_into()
                .map_err(failed)?;
            tracepoint.load().map_err(failed)?;
            tracepoint.attach(CATEGORY, program).map_err(failed)?;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let paths = FolderPaths::default();
        {
            let stop = Arc::clone(&stop);
            let paths = Arc::clone(&paths);
            std::thread::Builder::new()
                .name("skiff-ebpf".into())
                .spawn(move || read_events(ring, &lost, &stop, &paths, sink))
                .map_err(Error::Thread)?;
        }
        tracing::info!(
            tracepoints = present.len(),
            prefixes = keys.len(),
            "eBPF watch attached"
        );
        let mut watch = Self {
            stop,
            folders,
            files,
            trie,
            prefixes: keys,
            extra: HashMap::new(),
            paths,
            _ebpf: ebpf,
        };
        watch.watch_folders(prefixes.iter().map(PathBuf::as_path));
        Ok(watch)
    }

    /// Adds `folders` to the folders whose relative paths the kernel resolves (a folder that
    /// does not exist is skipped; the next rescan brings it when it does), and a folder outside
    /// every watched prefix (the target of a symlinked log file) to the prefixes, so that
    /// what happens in it is seen too.
    pub fn watch_folders<'a>(&mut self, folders: impl IntoIterator<Item = &'a Path>) {
        let folders: Vec<&Path> = folders.into_iter().collect();
        for &folder in &folders {
            if !self.extra.contains_key(folder) && folder.is_dir() {
                self.add_prefix(folder);
            }
        }
        let mut paths = self.paths.lock().expect("eBPF folder paths lock");
        for folder in folders {
            let Ok(meta) = std::fs::metadata(folder) else {
                continue;
            };
            let key = kernel_folder(&meta);
            if paths.contains_key(&key) {
                continue;
            }
            match self.folders.insert(key, 1, 0) {
                Ok(()) => {
                    paths.insert(key, folder.to_path_buf());
                }
                Err(err) => {
                    tracing::warn!(folder = %folder.display(), %err, "cannot add a folder to the eBPF map; the rescan covers it");
                }
            }
        }
        // Folders that went away (a pod's folder) free their slots.
        let gone: Vec<Folder> = paths
            .iter()
            .filter(|(key, path)| {
                std::fs::metadata(path).map_or(true, |meta| kernel_folder(&meta) != **key)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            paths.remove(&key);
            let _ = self.folders.remove(&key);
        }
        let gone: Vec<PathBuf> = self
            .extra
            .keys()
            .filter(|folder| !folder.is_dir())
            .cloned()
            .collect();
        for folder in gone {
            for bytes in self.extra.remove(&folder).into_iter().flatten() {
                let _ = self.trie.remove(&trie_key(&bytes));
            }
        }
    }

    /// Adds `folder` (as given and canonical) to the prefixes unless a prefix covers it.
    /// Recorded even when nothing is added, so each folder is considered once.
    fn add_prefix(&mut self, folder: &Path) {
        let covered = |bytes: &[u8], extra: &HashMap<PathBuf, Vec<Vec<u8>>>| {
            self.prefixes
                .iter()
                .chain(extra.values().flatten())
                .any(|prefix| bytes.starts_with(prefix))
        };
        let mut added = Vec::new();
        match prefix_bytes(&[folder.to_path_buf()]) {
            Ok(candidates) => {
                for bytes in candidates {
                    if covered(&bytes, &self.extra) {
                        continue;
                    }
                    match self.trie.insert(&trie_key(&bytes), 1, 0) {
                        Ok(()) => added.push(bytes),
                        Err(err) => {
                            tracing::warn!(folder = %folder.display(), %err, "cannot add a prefix to the eBPF map; the rescan covers the folder");
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(folder = %folder.display(), %err, "cannot watch the folder with eBPF; the rescan covers it");
            }
        }
        if !added.is_empty() {
            tracing::debug!(folder = %folder.display(), "eBPF prefix added");
        }
        self.extra.insert(folder.to_path_buf(), added);
    }

    /// Arms `file`: its next write (any process, `write`, `writev`, `pwrite*`) is reported once
    /// as [`EbpfEvent::Written`], which disarms it. Returns false when the kernel's map of
    /// files is full: that file's writes are not reported.
    pub fn arm(&mut self, file: FileId) -> bool {
        match self.files.insert(kernel_key(file), 1, 0) {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(?file, %err, "cannot arm a file for write events");
                false
            }
        }
    }

    /// Forgets `file` (closed by the harvester).
    pub fn disarm(&mut self, file: FileId) {
        // Absent when it was never armed: nothing to do.
        let _ = self.files.remove(&kernel_key(file));
    }
}

/// The kernel's name for the folder `meta` describes.
fn kernel_folder(meta: &std::fs::Metadata) -> Folder {
    kernel_key(FileId::of(meta))
}

/// The kernel's name for the file `id`: `s_dev` is `major << 20 | minor`, where user space's
/// `st_dev` uses glibc's encoding.
fn kernel_key(id: FileId) -> Folder {
    let (major, minor) = (nix::sys::stat::major(id.dev), nix::sys::stat::minor(id.dev));
    Folder {
        dev: (major << 20) | minor,
        ino: id.ino,
    }
}

/// The inverse of [`kernel_key`].
fn file_id(key: Folder) -> FileId {
    FileId {
        dev: nix::sys::stat::makedev(key.dev >> 20, key.dev & 0xf_ffff),
        ino: key.ino,
    }
}

/// The argument offsets of every program's tracepoint, and which tracepoints exist here.
fn arg_offsets(events: &Path) -> Result<(ArgOffsets, BTreeSet<&'static str>), Error> {
    let mut offsets = ArgOffsets([0; slot::COUNT]);
    let mut present = BTreeSet::new();
    let mut next = 0;
    for &(program, fields) in abi::PROGRAMS {
        let path = events.join(program).join("format");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::Format { path, source }),
        };
        for &field in fields {
            if let Some(text) = &text {
                offsets.0[next] = field_offset(text, field).ok_or_else(|| Error::Field {
                    path: path.clone(),
                    field,
                })?;
            }
            next += 1;
        }
        if text.is_some() {
            present.insert(program);
        }
    }
    Ok((offsets, present))
}

/// The LPM trie prefixes for `folders`: each as given and canonical, with one trailing `/` so
/// that `/var/log/app` does not match `/var/log/app2/x.log`.
fn prefix_bytes(folders: &[PathBuf]) -> Result<BTreeSet<Vec<u8>>, Error> {
    let mut prefixes = BTreeSet::new();
    for folder in folders {
        let canonical = std::fs::canonicalize(folder).ok();
        for path in std::iter::once(folder.as_path()).chain(canonical.as_deref()) {
            let mut bytes = path.as_os_str().as_bytes().to_vec();
            while bytes.last() == Some(&b'/') {
                bytes.pop();
            }
            bytes.push(b'/');
            // The kernel side reads paths into PREFIX_MAX bytes, NUL included.
            if !path.is_absolute() || bytes.len() >= PREFIX_MAX {
                return Err(Error::Prefix {
                    path: folder.clone(),
                });
            }
            prefixes.insert(bytes);
        }
    }
    if prefixes.len() > abi::MAX_PREFIXES as usize {
        return Err(Error::TooManyPrefixes {
            count: prefixes.len(),
        });
    }
    Ok(prefixes)
}

/// The LPM trie key of a prefix from [`prefix_bytes`].
fn trie_key(bytes: &[u8]) -> Key<[u8; PREFIX_MAX]> {
    let mut data = [0; PREFIX_MAX];
    data[..bytes.len()].copy_from_slice(bytes);
    Key::new(bytes.len() as u32 * 8, data)
}

/// Kernels before 5.11 charge eBPF maps to `RLIMIT_MEMLOCK`, whose default (64 KiB) is far below
/// the ring buffer; newer ones ignore it, so failing to raise it is only worth a note.
fn raise_memlock_limit() {
    let infinity = nix::libc::RLIM_INFINITY;
    if let Err(err) = setrlimit(Resource::RLIMIT_MEMLOCK, infinity, infinity) {
        tracing::debug!(%err, "cannot raise RLIMIT_MEMLOCK");
    }
}

/// The tracefs mount point, mounting tracefs first when the kernel has it but nobody mounted it
/// (a bare VM; Kubernetes nodes usually have it mounted).
///
/// Race-free without a lock of our own: mounting the same tracefs on the same point a second
/// time fails with `EBUSY`, so when two watchers (or two agents) mount at once, the loser
/// finds the winner's mount by looking again. A process-wide lock would only cover watchers of
/// this process, and the kernel's check already covers every process.
fn tracefs() -> Result<PathBuf, Error> {
    if let Some(dir) = mounted_tracefs() {
        return Ok(dir);
    }
    match nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) => Ok(TRACEFS.into()),
        // Someone mounted it between our look and our mount.
        Err(Errno::EBUSY) => mounted_tracefs().ok_or(Error::Tracefs {
            source: Errno::EBUSY,
        }),
        Err(source) => Err(Error::Tracefs { source }),
    }
}

/// Where tracefs is mounted with its tracepoints, if it is.
fn mounted_tracefs() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .find(|dir| Path::new(dir).join("events").is_dir())
        .map(PathBuf::from)
}

/// The offset of the 8-byte field `name` in a tracepoint's `format` file, whose lines read
/// `field:const char * filename;`, `offset:24;`, `size:8;`, `signed:0;`, tab-separated.
fn field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        if declaration.rsplit([' ', '*']).next()? != name {
            return None;
        }
        let offset = parts.next()?.strip_prefix("offset:")?.parse().ok()?;
        let size: u32 = parts.next()?.strip_prefix("size:")?.parse().ok()?;
        (size == 8).then_some(offset)
    })
}

/// Takes the map `name` out of `ebpf` as the typed map `M`.
fn map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, Error>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::Missing(name))?;
    M::try_from(map).map_err(|source| Error::Map { name, source })
}

/// The reader thread: waits for the ring, forwards its records, and reports growth of the lost
/// counter, until the watch is dropped or the sink refuses an event.
fn read_events(
    mut ring: RingBuf<MapData>,
    lost: &PerCpuArray<MapData, u64>,
    stop: &AtomicBool,
    paths: &Mutex<HashMap<Folder, PathBuf>>,
    mut sink: impl FnMut(EbpfEvent) -> bool,
) {
    let mut reported = 0;
    let mut unresolved = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(POLL_TIMEOUT_MS)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(%err, "polling the eBPF ring buffer failed; eBPF watch stopped");
                return;
            }
        }
        while let Some(record) = ring.next() {
            // Copied out before sending, so a slow sink never pins the record in the ring.
            let event = if view::<u32>(&record) == Some(&kind::WRITE) {
                view::<WriteEvent>(&record).map(|event| {
                    Some(EbpfEvent::Written {
                        pid: event.pid,
                        file: file_id(event.file),
                    })
                })
            } else {
                view::<FileEvent>(&record).map(|event| {
                    let paths = paths.lock().expect("eBPF folder paths lock");
                    decode(event, &record[size_of::<FileEvent>()..], &paths)
                })
            };
            drop(record);
            let event = match event {
                Some(Some(event)) => event,
                Some(None) => {
                    // Relative to a folder no longer known: the rescan finds the file.
                    unresolved += 1;
                    EbpfEvent::Lost(1)
                }
                None => {
                    tracing::warn!("malformed eBPF record skipped");
                    continue;
                }
            };
            if !sink(event) {
                return;
            }
        }
        match lost.get(&0, 0) {
            Ok(per_cpu) => {
                let total = per_cpu.iter().sum();
                if total > reported {
                    if !sink(EbpfEvent::Lost(total - reported)) {
                        return;
                    }
                    reported = total;
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the eBPF lost-event counter"),
        }
    }
    if unresolved > 0 {
        tracing::info!(unresolved, "eBPF events relative to a folder that had gone");
    }
}

/// The [`EbpfEvent`] of one record, whose paths' bytes follow `event` (see [`FileEvent`]), or
/// `None` when a relative path's folder is unknown (or the record is short).
fn decode(
    event: &FileEvent,
    paths: &[u8],
    folders: &HashMap<Folder, PathBuf>,
) -> Option<EbpfEvent> {
    let path = |i: usize| -> Option<PathBuf> {
        // The second path starts after the first one's NUL.
        let start = if i == 0 {
            0
        } else {
            event.lens[0] as usize + 1
        };
        let bytes = paths.get(start..start + event.lens[i] as usize)?;
        let path = Path::new(OsStr::from_bytes(bytes));
        let folder = event.folders[i];
        if folder == Folder::default() {
            Some(path.to_path_buf())
        } else {
            Some(normalise(&folders.get(&folder)?.join(path)))
        }
    };
    let pid = event.pid;
    Some(match event.kind {
        kind::OPEN => EbpfEvent::Opened(OpenedFile {
            pid,
            flags: OFlag::from_bits_retain(event.flags as i32),
            path: path(0)?,
        }),
        kind::RENAME => EbpfEvent::Renamed {
            pid,
            from: path(0)?,
            to: path(1)?,
        },
        kind::UNLINK => EbpfEvent::Unlinked {
            pid,
            path: path(0)?,
        },
        kind::TRUNCATE | kind::FTRUNCATE => EbpfEvent::Truncated {
            pid,
            path: path(0)?,
        },
        _ => return None,
    })
}

/// `path` without `.` components and with `..` applied lexically: relative paths arrive as
/// `./app.log` or `sub/../app.log`, while globs match clean paths.
fn normalise(path: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// `bytes` seen as a `T`, if they are long enough and aligned for one.
fn view<T: Pod>(bytes: &[u8]) -> Option<&T> {
    let ptr = bytes.as_ptr().cast::<T>();
    if bytes.len() < size_of::<T>() || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: in bounds and aligned, and a `Pod` type is valid for every bit pattern.
    Some(unsafe { &*ptr })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/syscalls/sys_enter_openat/format` of Linux 6.18 on x86_64.
    const OPENAT_FORMAT: &str = "\
name: sys_enter_openat
ID: 782
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;
";

    #[test]
    fn relative_paths_are_cleaned() {
        assert_eq!(
            normalise(Path::new("/var/log/app/./sub/../app.log")),
            PathBuf::from("/var/log/app/app.log")
        );
    }

    #[test]
    fn field_offsets_come_from_the_format() {
        assert_eq!(field_offset(OPENAT_FORMAT, "filename"), Some(24));
        assert_eq!(field_offset(OPENAT_FORMAT, "flags"), Some(32));
        // 4 bytes wide: the program reads 8.
        assert_eq!(field_offset(OPENAT_FORMAT, "__syscall_nr"), None);
        assert_eq!(field_offset(OPENAT_FORMAT, "name"), None);
    }

    #[test]
    fn prefixes_end_in_one_slash_and_include_the_canonical_form() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let prefixes = prefix_bytes(&[PathBuf::from(format!("{}//", link.display()))]).unwrap();
        let canonical = std::fs::canonicalize(&real).unwrap();
        let expected = [&link, &canonical]
            .map(|path| format!("{}/", path.display()).into_bytes())
            .into();
        assert_eq!(prefixes, expected);
    }

    #[test]
    fn relative_and_overlong_prefixes_are_refused() {
        assert!(matches!(
            prefix_bytes(&[PathBuf::from("var/log")]),
            Err(Error::Prefix { .. })
        ));
        let long = PathBuf::from(format!("/{}", "a".repeat(PREFIX_MAX)));
        assert!(matches!(prefix_bytes(&[long]), Err(Error::Prefix { .. })));
    }
}
