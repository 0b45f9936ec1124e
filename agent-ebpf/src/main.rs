//! skiff's eBPF programs. `sys_enter_openat` reports every `openat(2)` of a path under a watched
//! prefix, so the agent learns of a new or reopened log file the instant it is opened instead of
//! at its next directory scan.
//!
//! Rust eBPF has no CO-RE: the offsets of the tracepoint's fields are not compiled in but read by
//! user space from tracefs and set as read-only globals at load time, where the verifier sees
//! them as constants.
#![no_std]
#![no_main]

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::bpf_probe_read_user_str;
use aya_ebpf::macros::{map, tracepoint};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{LpmTrie, PerCpuArray, RingBuf};
use aya_ebpf::programs::TracePointContext;
use core::ptr::{addr_of_mut, read_volatile};
use skiff_ebpf_common::{MAX_PREFIXES, OpenEvent, PATH_MAX, PREFIX_MAX};

/// Size of [`EVENTS`]. Opens under log folders are rare (writers keep their files open), but a
/// burst, e.g. a node starting many containers, must not overflow it: 8 MiB holds 2,000 events.
const RING_BYTES: u32 = 8 << 20;

/// Watched prefixes (see `skiff_ebpf_common::PREFIXES`).
#[map]
static PREFIXES: LpmTrie<[u8; PREFIX_MAX], u8> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);

/// Opens under a watched prefix, for user space.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Events lost because [`EVENTS`] was full. Per CPU because eBPF has no atomic add on this
/// target; user space sums the slots.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The lookup key of [`PREFIXES`], built per call. A map slot rather than a local: at 260 bytes
/// it would take half of the 512-byte eBPF stack.
#[map]
static SCRATCH: PerCpuArray<Key<[u8; PREFIX_MAX]>> = PerCpuArray::with_max_entries(1, 0);

/// Offset of the `filename` pointer in the `sys_enter_openat` record (set by user space).
#[unsafe(no_mangle)]
static FILENAME_OFFSET: u32 = 0;

/// Offset of the `flags` argument in the same record (set by user space).
#[unsafe(no_mangle)]
static FLAGS_OFFSET: u32 = 0;

/// Attached to `syscalls:sys_enter_openat`.
#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // A failed read (a bad user pointer) means the open fails too: nothing to report. The return
    // value only tells perf whether to keep the trace record, which nobody reads: 0 drops it.
    let _ = try_sys_enter_openat(&ctx);
    0
}

fn try_sys_enter_openat(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: the globals are plain integers; `read_volatile` keeps the compiler from folding
    // their compile-time zero, so the value set at load time is the one read.
    let (filename_offset, flags_offset) = unsafe {
        (
            read_volatile(&FILENAME_OFFSET),
            read_volatile(&FLAGS_OFFSET),
        )
    };
    // SAFETY: user space checked both offsets against the tracepoint's format (8-byte fields).
    let filename: u64 = unsafe { ctx.read_at(filename_offset as usize)? };
    let filename = filename as *const core::ffi::c_void;

    let key = SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: `key` points at this CPU's slot, which nothing else uses while this program runs.
    let len = unsafe {
        bpf_probe_read_user_str(
            addr_of_mut!((*key).data).cast(),
            PREFIX_MAX as u32,
            filename,
        )
    };
    if len <= 1 {
        return Err(len); // unreadable or empty
    }
    // Match on the bytes read (without the NUL): stale bytes of an earlier path stay out.
    unsafe { addr_of_mut!((*key).prefix_len).write_unaligned((len as u32 - 1) * 8) };
    // SAFETY: as above; the key is fully initialised up to `prefix_len` bits.
    if PREFIXES.get(unsafe { &*key }).is_none() {
        return Ok(());
    }

    let flags: u64 = unsafe { ctx.read_at(flags_offset as usize)? };
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        count_lost();
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer record; only raw
    // field writes, no reference to the uninitialised record.
    let len = unsafe {
        (*event).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*event).flags = flags as u32;
        bpf_probe_read_user_str(
            addr_of_mut!((*event).path).cast(),
            PATH_MAX as u32,
            filename,
        )
    };
    if len <= 1 {
        entry.discard(0);
        return Err(len);
    }
    // SAFETY: as above.
    unsafe { (*event).path_len = len as u32 - 1 };
    entry.submit(0);
    Ok(())
}

/// Counts an event [`EVENTS`] had no room for, so user space knows to rescan.
fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; a tracepoint program does not preempt itself on one CPU.
        unsafe { *lost += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel lets only GPL-compatible programs call `bpf_probe_read_user_str`.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
