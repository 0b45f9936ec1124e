//! The ABI between skiff's eBPF programs (`agent-ebpf/`, `bpfel-unknown-none`) and the agent:
//! map names, sizes and the `#[repr(C)]` records they exchange. Both sides compile this one file,
//! so a layout change cannot reach only one of them.
#![no_std]

/// Longest path a [`FileEvent`] carries, terminating NUL included: Linux's `PATH_MAX`.
pub const PATH_MAX: usize = 4096;

/// Bytes of data in a [`PREFIXES`] key: the kernel's limit for an LPM trie key
/// (`LPM_DATA_SIZE_MAX`). A watched prefix may use all but one of them, since the program reads
/// the opened path into a buffer of this size as a NUL-terminated string.
pub const PREFIX_MAX: usize = 256;

/// How many watched prefixes [`PREFIXES`] holds.
pub const MAX_PREFIXES: u32 = 256;

/// How many watched folders [`FOLDERS`] holds.
pub const MAX_FOLDERS: u32 = 65536;

/// Name of the LPM trie of watched prefixes (key: `aya::maps::lpm_trie::Key<[u8; PREFIX_MAX]>`
/// whose length is in bits, value: `u8`, unused). User space writes each watched folder with a
/// trailing `/`; the programs report absolute paths that start with one of them.
pub const PREFIXES: &str = "PREFIXES";

/// Name of the hash map of watched folders by [`Folder`] (value: `u8`, unused). A relative path
/// is reported when the folder it is relative to (the cwd or the dirfd) is one of them, and an
/// `ftruncate(2)` when the file's folder is.
pub const FOLDERS: &str = "FOLDERS";

/// How many harvested files [`FILES`] holds.
pub const MAX_FILES: u32 = 65536;

/// Name of the hash map of files whose next write is reported, by [`Folder`] (the same
/// device and inode key, here of a regular file; value: `u8`, 1 while armed). A write-family
/// syscall on an armed file sets it to 0 and reports one [`WriteEvent`]: the agent re-arms a
/// file once it has read what was written, so a busy file costs one event per read, and an
/// idle one nothing.
pub const FILES: &str = "FILES";

/// Name of the ring buffer of [`FileEvent`]s and [`WriteEvent`]s (told apart by `kind`, their
/// first field).
pub const EVENTS: &str = "EVENTS";

/// Name of the per-CPU `u64` array (one slot) counting events lost because [`EVENTS`] was full.
pub const LOST: &str = "LOST";

/// Name of the global [`ArgOffsets`]: where each syscall argument sits in its tracepoint
/// record, read by user space from tracefs.
pub const ARG_OFFSETS: &str = "ARG_OFFSETS";

/// Name of the global [`KernelOffsets`]: struct field offsets of the running kernel, read by
/// user space from its BTF.
pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";

/// The programs, each attached to `syscalls:<name>`, and the arguments each reads, in the
/// order of the [`ArgOffsets`] slots. A program missing on an architecture (`open` and `creat`
/// exist on x86_64 only) is skipped.
pub const PROGRAMS: &[(&str, &[&str])] = &[
    ("sys_enter_openat", &["dfd", "filename", "flags"]),
    ("sys_enter_openat2", &["dfd", "filename", "how"]),
    ("sys_enter_open", &["filename", "flags"]),
    ("sys_enter_creat", &["pathname"]),
    ("sys_enter_rename", &["oldname", "newname"]),
    (
        "sys_enter_renameat",
        &["olddfd", "oldname", "newdfd", "newname"],
    ),
    (
        "sys_enter_renameat2",
        &["olddfd", "oldname", "newdfd", "newname"],
    ),
    ("sys_enter_unlink", &["pathname"]),
    ("sys_enter_unlinkat", &["dfd", "pathname"]),
    ("sys_enter_truncate", &["path"]),
    ("sys_enter_ftruncate", &["fd"]),
    ("sys_enter_write", &["fd"]),
    ("sys_enter_writev", &["fd"]),
    ("sys_enter_pwrite64", &["fd"]),
    ("sys_enter_pwritev", &["fd"]),
    ("sys_enter_pwritev2", &["fd"]),
];

/// Slots of [`ArgOffsets`], in the order of [`PROGRAMS`].
pub mod slot {
    pub const OPENAT_DFD: usize = 0;
    pub const OPENAT_FILENAME: usize = 1;
    pub const OPENAT_FLAGS: usize = 2;
    pub const OPENAT2_DFD: usize = 3;
    pub const OPENAT2_FILENAME: usize = 4;
    pub const OPENAT2_HOW: usize = 5;
    pub const OPEN_FILENAME: usize = 6;
    pub const OPEN_FLAGS: usize = 7;
    pub const CREAT_PATHNAME: usize = 8;
    pub const RENAME_OLD: usize = 9;
    pub const RENAME_NEW: usize = 10;
    pub const RENAMEAT_OLDDFD: usize = 11;
    pub const RENAMEAT_OLD: usize = 12;
    pub const RENAMEAT_NEWDFD: usize = 13;
    pub const RENAMEAT_NEW: usize = 14;
    pub const RENAMEAT2_OLDDFD: usize = 15;
    pub const RENAMEAT2_OLD: usize = 16;
    pub const RENAMEAT2_NEWDFD: usize = 17;
    pub const RENAMEAT2_NEW: usize = 18;
    pub const UNLINK_PATHNAME: usize = 19;
    pub const UNLINKAT_DFD: usize = 20;
    pub const UNLINKAT_PATHNAME: usize = 21;
    pub const TRUNCATE_PATH: usize = 22;
    pub const FTRUNCATE_FD: usize = 23;
    pub const WRITE_FD: usize = 24;
    pub const WRITEV_FD: usize = 25;
    pub const PWRITE64_FD: usize = 26;
    pub const PWRITEV_FD: usize = 27;
    pub const PWRITEV2_FD: usize = 28;
    /// How many slots there are.
    pub const COUNT: usize = 29;
}

/// Offsets of the syscall arguments in their tracepoint records (see [`slot`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArgOffsets(pub [u32; slot::COUNT]);

/// Field offsets, in bytes, of the kernel structs the programs walk to resolve a relative path
/// (`task->fs->pwd.dentry`, `task->files->fdt->fd[n]->f_path.dentry`) to the folder's device and
/// inode, and an open file to its folder and name.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct KernelOffsets {
    pub task_fs: u32,
    pub task_files: u32,
    /// `fs_struct.pwd` plus `path.dentry`.
    pub fs_pwd_dentry: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    /// `file.f_path` plus `path.dentry`.
    pub file_dentry: u32,
    pub dentry_parent: u32,
    /// `dentry.d_name` plus `qstr.name`.
    pub dentry_name: u32,
    pub dentry_inode: u32,
    pub dentry_sb: u32,
    pub inode_ino: u32,
    pub sb_dev: u32,
}

/// A folder as the kernel names it: `super_block.s_dev` (the kernel's `MKDEV(major, minor)`,
/// `major << 20 | minor`, not user space's `st_dev` encoding) and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
pub struct Folder {
    pub dev: u64,
    pub ino: u64,
}

/// What a [`FileEvent`] reports.
pub mod kind {
    /// An open for writing or creating (`openat`, `openat2`, `open`, `creat`).
    pub const OPEN: u32 = 1;
    /// `rename` from `paths[0]` to `paths[1]`.
    pub const RENAME: u32 = 2;
    pub const UNLINK: u32 = 3;
    pub const TRUNCATE: u32 = 4;
    /// `ftruncate` of a file in a watched folder: `paths[0]` is its name in `folders[0]`.
    pub const FTRUNCATE: u32 = 5;
    /// A write-family syscall on an armed file of [`super::FILES`]: a [`super::WriteEvent`].
    pub const WRITE: u32 = 6;
}

/// A syscall on a path under a watched folder, seen on entry (so it may still fail: user space
/// checks the file itself). Each path is absolute (its folder is zero) or relative to the
/// watched folder in `folders`.
///
/// In the ring buffer a `FileEvent` is followed by the bytes of its paths, each NUL-terminated,
/// one after the other, and nothing more: a record is [`FileRecord::sent_len`] bytes, about a
/// hundred for an open rather than the 8 KiB of two whole path buffers, so the ring holds tens
/// of thousands of them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    /// One of [`kind`].
    pub kind: u32,
    /// Thread group id of the caller (the user-space "pid").
    pub pid: u32,
    /// The open flags (`O_CREAT`, `O_TRUNC`, `O_WRONLY`, ...), for [`kind::OPEN`].
    pub flags: u32,
    /// How many paths follow (1, or 2 for a rename).
    pub count: u32,
    /// The folder each path is relative to, zero for an absolute path.
    pub folders: [Folder; 2],
    /// Bytes of each path, without the terminating NUL.
    pub lens: [u32; 2],
}

/// Where the eBPF programs build a [`FileEvent`] and its paths before sending the part in use
/// (a per-CPU map value: 8 KiB would not fit on the eBPF stack).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub event: FileEvent,
    /// The paths, NUL-terminated, the second right after the first's NUL.
    pub paths: [u8; 2 * PATH_MAX],
}

impl FileRecord {
    /// Bytes sent of the record of an event whose paths take `paths` bytes, NULs included.
    pub const fn sent_len(paths: usize) -> usize {
        core::mem::size_of::<FileEvent>() + paths
    }
}

/// A write to an armed harvested file (see [`FILES`]), seen on entry: the bytes may land a
/// moment later.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WriteEvent {
    /// [`kind::WRITE`].
    pub kind: u32,
    /// Thread group id of the writer.
    pub pid: u32,
    /// The file's device (kernel encoding) and inode.
    pub file: Folder,
}

// SAFETY: these types are `#[repr(C)]`, built only of integers and arrays of them, without
// padding, so every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileEvent {}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Folder {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for WriteEvent {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ArgOffsets {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
