//! The eBPF watch: a tracepoint on `openat(2)` reports every open of a path under the watched
//! folders the instant it happens, so a new or recreated log file is found without waiting for
//! the next directory scan.
//!
//! The kernel side (`agent-ebpf/`) compares each opened path with the folders user space wrote
//! into an LPM trie, so only matching opens cross into user space. A dedicated thread blocks on
//! the ring buffer's fd and hands events to the async side through a bounded channel: the ring is
//! drained even while the runtime is busy, and a slow consumer backs up into the ring, where the
//! program counts what it drops and the watcher reports it as [`EbpfEvent::Lost`] (rescan).
//!
//! Limits: only absolute paths match (an open relative to a directory fd or the cwd is not
//! resolved in the kernel yet), and only the `openat` syscall is watched (glibc and Go open
//! through it; a raw `open(2)` or `openat2(2)` is not seen). The scan fallback covers both.

use aya::maps::lpm_trie::Key;
use aya::maps::{LpmTrie, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader, Pod};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, setrlimit};
use skiff_ebpf_common::{self as abi, OpenEvent, PREFIX_MAX};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// The eBPF object `build.rs` compiled from `agent-ebpf/`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff-ebpf"));

/// Where tracefs is mounted on current kernels, and where it is mounted when missing.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Where older setups only have it (under debugfs). aya looks in the same two places.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
/// The tracepoint, as `category/name` under tracefs' `events/`.
const CATEGORY: &str = "syscalls";
const TRACEPOINT: &str = "sys_enter_openat";

/// Events waiting for the async side; beyond this the reader thread waits and the ring fills.
const CHANNEL_CAPACITY: usize = 1024;
/// How long the reader thread sleeps in `poll` before checking whether the watcher is gone.
const POLL_TIMEOUT_MS: u16 = 100;

/// Reports opens under the watched folders. Dropping it detaches the program; the reader thread
/// ends within [`POLL_TIMEOUT_MS`].
pub struct EbpfWatcher {
    events: mpsc::Receiver<EbpfEvent>,
    /// Owns the attached program and the maps; the reader thread owns the ring and the counter.
    _ebpf: Ebpf,
}

/// What the [`EbpfWatcher`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EbpfEvent {
    /// A process is opening a file under a watched folder.
    Opened(OpenedFile),
    /// This many opens were dropped because the ring buffer was full: the watched folders must
    /// be rescanned to find what they were.
    Lost(u64),
}

/// One `openat(2)` under a watched folder, seen on entry: the open may still fail, so the file
/// need not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFile {
    /// The opener's process id.
    pub pid: u32,
    /// The open flags (`O_CREAT`, `O_TRUNC`, `O_WRONLY`, ...).
    pub flags: OFlag,
    /// The path exactly as the process passed it (absolute, possibly with `..` or symlinks).
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
    /// The tracepoint's format file is unreadable.
    #[error("cannot read {}", path.display())]
    Format { path: PathBuf, source: io::Error },
    /// The tracepoint's format has no 8-byte field of that name.
    #[error("{} has no 8-byte field `{field}`", path.display())]
    Field { path: PathBuf, field: &'static str },
    /// The object did not load (parse, BTF, map creation).
    #[error("cannot load the eBPF object")]
    Load(#[from] EbpfError),
    /// The object lacks a program or map the watcher needs.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The kernel refused the program (verifier, permissions) or its attachment.
    #[error("cannot load or attach {CATEGORY}:{TRACEPOINT}")]
    Program(#[from] ProgramError),
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
    /// Loads and attaches the program, watching the folders `prefixes` and everything below
    /// them. A folder is matched as given and, if different, in its canonical form, since the
    /// kernel compares the path strings processes pass. Needs root (`CAP_BPF`, `CAP_PERFMON`)
    /// and mounts tracefs if nobody has.
    pub fn load(prefixes: &[PathBuf]) -> Result<Self, Error> {
        let prefixes = prefix_keys(prefixes)?;
        raise_memlock_limit();
        let format = tracefs()?
            .join("events")
            .join(CATEGORY)
            .join(TRACEPOINT)
            .join("format");
        let text = std::fs::read_to_string(&format).map_err(|source| Error::Format {
            path: format.clone(),
            source,
        })?;
        let offset = |field| {
            field_offset(&text, field).ok_or_else(|| Error::Field {
                path: format.clone(),
                field,
            })
        };
        let (filename, flags) = (offset("filename")?, offset("flags")?);

        let mut ebpf = EbpfLoader::new()
            .override_global(abi::FILENAME_OFFSET, &filename, true)
            .override_global(abi::FLAGS_OFFSET, &flags, true)
            .load(PROGRAMS)?;
        let mut trie: LpmTrie<_, [u8; PREFIX_MAX], u8> = map(&mut ebpf, abi::PREFIXES)?;
        for key in &prefixes {
            trie.insert(key, 1, 0).map_err(|source| Error::Map {
                name: abi::PREFIXES,
                source,
            })?;
        }
        let ring: RingBuf<MapData> = map(&mut ebpf, abi::EVENTS)?;
        let lost: PerCpuArray<MapData, u64> = map(&mut ebpf, abi::LOST)?;

        let program: &mut TracePoint = ebpf
            .program_mut(abi::SYS_ENTER_OPENAT)
            .ok_or(Error::Missing(abi::SYS_ENTER_OPENAT))?
            .try_into()?;
        program.load()?;
        program.attach(CATEGORY, TRACEPOINT)?;

        let (tx, events) = mpsc::channel(CHANNEL_CAPACITY);
        std::thread::Builder::new()
            .name("skiff-ebpf".into())
            .spawn(move || read_events(ring, &lost, &tx))
            .map_err(Error::Thread)?;
        tracing::info!(
            tracepoint = %format_args!("{CATEGORY}:{TRACEPOINT}"),
            prefixes = prefixes.len(),
            "eBPF watch attached"
        );
        Ok(Self {
            events,
            _ebpf: ebpf,
        })
    }

    /// The next event, waiting for it; `None` once the reader thread has stopped (it logs why).
    pub async fn next(&mut self) -> Option<EbpfEvent> {
        self.events.recv().await
    }
}

/// The LPM trie keys for `folders`: each as given and canonical, with one trailing `/` so that
/// `/var/log/app` does not match `/var/log/app2/x.log`.
fn prefix_keys(folders: &[PathBuf]) -> Result<Vec<Key<[u8; PREFIX_MAX]>>, Error> {
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
    Ok(prefixes
        .into_iter()
        .map(|bytes| {
            let mut data = [0; PREFIX_MAX];
            data[..bytes.len()].copy_from_slice(&bytes);
            Key::new(bytes.len() as u32 * 8, data)
        })
        .collect())
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
fn tracefs() -> Result<PathBuf, Error> {
    if let Some(dir) = [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .find(|dir| Path::new(dir).join("events").is_dir())
    {
        return Ok(dir.into());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| Error::Tracefs { source })?;
    Ok(TRACEFS.into())
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
/// counter, until the watcher is dropped.
fn read_events(
    mut ring: RingBuf<MapData>,
    lost: &PerCpuArray<MapData, u64>,
    tx: &mpsc::Sender<EbpfEvent>,
) {
    let mut reported = 0;
    while !tx.is_closed() {
        let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(POLL_TIMEOUT_MS)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(%err, "polling the eBPF ring buffer failed; eBPF watch stopped");
                return;
            }
        }
        while let Some(record) = ring.next() {
            // Copied out before sending, so a full channel never pins the record in the ring.
            let Some(opened) = opened_file(&record) else {
                tracing::warn!(len = record.len(), "malformed eBPF record skipped");
                continue;
            };
            drop(record);
            if tx.blocking_send(EbpfEvent::Opened(opened)).is_err() {
                return;
            }
        }
        match lost.get(&0, 0) {
            Ok(per_cpu) => {
                let total = per_cpu.iter().sum();
                if total > reported && tx.blocking_send(EbpfEvent::Lost(total - reported)).is_ok() {
                    reported = total;
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the eBPF lost-event counter"),
        }
    }
}

/// The [`OpenedFile`] in one ring buffer record.
fn opened_file(record: &[u8]) -> Option<OpenedFile> {
    let event: &OpenEvent = view(record)?;
    let path = event.path.get(..event.path_len as usize)?;
    Some(OpenedFile {
        pid: event.pid,
        flags: OFlag::from_bits_retain(event.flags as i32),
        path: PathBuf::from(OsStr::from_bytes(path)),
    })
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
        let prefixes: BTreeSet<Vec<u8>> =
            prefix_keys(&[PathBuf::from(format!("{}//", link.display()))])
                .unwrap()
                .iter()
                .map(|key| key.data()[..key.prefix_len() as usize / 8].to_vec())
                .collect();
        let canonical = std::fs::canonicalize(&real).unwrap();
        let expected = [&link, &canonical]
            .map(|path| format!("{}/", path.display()).into_bytes())
            .into();
        assert_eq!(prefixes, expected);
    }

    #[test]
    fn relative_and_overlong_prefixes_are_refused() {
        assert!(matches!(
            prefix_keys(&[PathBuf::from("var/log")]),
            Err(Error::Prefix { .. })
        ));
        let long = PathBuf::from(format!("/{}", "a".repeat(PREFIX_MAX)));
        assert!(matches!(prefix_keys(&[long]), Err(Error::Prefix { .. })));
    }
}
