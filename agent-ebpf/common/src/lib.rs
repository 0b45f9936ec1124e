//! The ABI between skiff's eBPF programs (`agent-ebpf/`, `bpfel-unknown-none`) and the agent:
//! map names, sizes and the `#[repr(C)]` records they exchange. Both sides compile this one file,
//! so a layout change cannot reach only one of them.
#![no_std]

/// Longest path an [`OpenEvent`] carries, terminating NUL included: Linux's `PATH_MAX`.
pub const PATH_MAX: usize = 4096;

/// Bytes of data in a [`PREFIXES`] key: the kernel's limit for an LPM trie key
/// (`LPM_DATA_SIZE_MAX`). A watched prefix may use all but one of them, since the program reads
/// the opened path into a buffer of this size as a NUL-terminated string.
pub const PREFIX_MAX: usize = 256;

/// How many watched prefixes [`PREFIXES`] holds.
pub const MAX_PREFIXES: u32 = 256;

/// Name of the program attached to `syscalls:sys_enter_openat`.
pub const SYS_ENTER_OPENAT: &str = "sys_enter_openat";

/// Name of the LPM trie of watched prefixes (key: `aya::maps::lpm_trie::Key<[u8; PREFIX_MAX]>`
/// whose length is in bits, value: `u8`, unused). User space writes each watched folder with a
/// trailing `/`; the program sends only opens whose path starts with one of them.
pub const PREFIXES: &str = "PREFIXES";

/// Name of the ring buffer of [`OpenEvent`]s.
pub const EVENTS: &str = "EVENTS";

/// Name of the per-CPU `u64` array (one slot) counting events lost because [`EVENTS`] was full.
pub const LOST: &str = "LOST";

/// Name of the global (`u32`) holding the offset of `filename` in the `sys_enter_openat`
/// tracepoint record, which user space reads from tracefs and sets at load time.
pub const FILENAME_OFFSET: &str = "FILENAME_OFFSET";

/// Name of the global (`u32`) holding the offset of `flags` in the same record.
pub const FLAGS_OFFSET: &str = "FLAGS_OFFSET";

/// A process opened a path under a watched prefix (`openat(2)` entry, so the open may still
/// fail: user space checks the file itself).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    /// Thread group id of the opener (the user-space "pid").
    pub pid: u32,
    /// The `flags` argument of `openat(2)` (`O_CREAT`, `O_TRUNC`, `O_WRONLY`, ...).
    pub flags: u32,
    /// Bytes of `path` in use, without the terminating NUL.
    pub path_len: u32,
    /// The path exactly as the process passed it, NUL-terminated.
    pub path: [u8; PATH_MAX],
}

// SAFETY: `OpenEvent` is `#[repr(C)]`, built only of integers and byte arrays, so every bit
// pattern is a valid value (its three `u32`s leave no padding before the byte array).
#[cfg(feature = "user")]
unsafe impl aya::Pod for OpenEvent {}
