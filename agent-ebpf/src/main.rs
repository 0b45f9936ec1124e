//! skiff's eBPF programs: syscall tracepoints that report every open for writing, rename,
//! unlink and truncate of a path under a watched folder, so the agent learns of a new, rotated,
//! deleted or truncated log file the instant it happens instead of at its next directory scan;
//! and the next write to each file the agent has read to its end, so it reads on writes
//! instead of polling idle files.
//!
//! An absolute path is matched against the watched prefixes (an LPM trie of strings). A relative
//! path (`mv app.log app.log.1` run inside the folder, or an open relative to a directory fd) is
//! resolved here: the folder it is relative to (`task->fs->pwd` or the dirfd's file) is matched
//! by device and inode against the watched folders. `ftruncate` gives only an fd: its file's
//! parent folder is matched the same way and its name reported. Nothing depends on /proc, which
//! a short-lived `mv` or `rm` has left by the time user space would look.
//!
//! Rust eBPF has no CO-RE: the offsets of the tracepoints' fields and of the kernel structs are
//! not compiled in but read by user space (from tracefs and from the running kernel's BTF) and
//! set as read-only globals at load time, where the verifier sees them as constants.
#![no_std]
#![no_main]

use aya_ebpf::helpers::generated::{bpf_get_current_task, bpf_probe_read_user_str};
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user};
use aya_ebpf::macros::{map, tracepoint};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{HashMap, LpmTrie, PerCpuArray, RingBuf};
use aya_ebpf::programs::TracePointContext;
use core::ptr::{addr_of, addr_of_mut, read_volatile};
use skiff_ebpf_common::{
    ArgOffsets, FileEvent, FileRecord, Folder, KernelOffsets, MAX_FILES, MAX_FOLDERS, MAX_PREFIXES,
    PATH_MAX, PREFIX_MAX, WriteEvent, kind, slot,
};

/// Size of [`EVENTS`]: 2 MiB hold about 15,000 opens (a record is the event and its path, about
/// 140 bytes) or 450 renames of files with long paths. Opens for writing under log folders are
/// rare (writers keep their files open), but a burst, e.g. a node starting many containers,
/// must not overflow it; when it does, user space rescans. The agent maps the ring twice
/// (the kernel's wrap-around view), so its resident memory grows by twice this.
const RING_BYTES: u32 = 2 << 20;
/// `AT_FDCWD`: the path is relative to the current working directory.
const AT_FDCWD: i64 = -100;
/// Open flags that may create or change a file; plain reads are not reported.
const WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000; // O_WRONLY | O_RDWR | O_CREAT | O_TRUNC

#[map]
static PREFIXES: LpmTrie<[u8; PREFIX_MAX], u8> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);

#[map]
static FOLDERS: HashMap<Folder, u8> = HashMap::with_max_entries(MAX_FOLDERS, 0);

#[map]
static FILES: HashMap<Folder, u8> = HashMap::with_max_entries(MAX_FILES, 0);

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

/// Where [`report`] and [`try_ftruncate`] build a record before sending the part in use.
#[map]
static STAGING: PerCpuArray<FileRecord> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static ARG_OFFSETS: ArgOffsets = ArgOffsets([0; slot::COUNT]);

#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    task_fs: 0,
    task_files: 0,
    fs_pwd_dentry: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    dentry_inode: 0,
    dentry_sb: 0,
    inode_ino: 0,
    sb_dev: 0,
};

/// A syscall argument (8 bytes in every syscall tracepoint record).
#[inline(always)]
fn arg(ctx: &TracePointContext, slot: usize) -> Result<u64, i64> {
    // SAFETY: a plain read of a global; `read_volatile` keeps the compiler from folding the
    // compile-time zero, so the value set at load time is the one read.
    let offset = unsafe { read_volatile(addr_of!(ARG_OFFSETS.0[slot])) };
    // SAFETY: user space checked the offset against the tracepoint's format (8-byte field).
    unsafe { ctx.read_at::<u64>(offset as usize) }.map_err(i64::from)
}

#[inline(always)]
fn offsets() -> KernelOffsets {
    // SAFETY: as in `arg`.
    unsafe { read_volatile(addr_of!(KERNEL_OFFSETS)) }
}

/// Reads a kernel pointer-sized value at `base + offset`.
#[inline(always)]
fn kernel_u64(base: u64, offset: u32) -> Result<u64, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const u64) }.map_err(i64::from)
}

#[inline(always)]
fn kernel_u32(base: u64, offset: u32) -> Result<u32, i64> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const u32) }.map_err(i64::from)
}

/// The device (kernel encoding) and inode of the folder `dentry`.
#[inline(always)]
fn folder_of(dentry: u64, o: &KernelOffsets) -> Result<Folder, i64> {
    let inode = kernel_u64(dentry, o.dentry_inode)?;
    let sb = kernel_u64(dentry, o.dentry_sb)?;
    Ok(Folder {
        dev: kernel_u32(sb, o.sb_dev)? as u64,
        ino: kernel_u64(inode, o.inode_ino)?,
    })
}

/// The dentry of the caller's open file `fd`.
#[inline(always)]
fn fd_dentry(fd: u64, o: &KernelOffsets) -> Result<u64, i64> {
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files = kernel_u64(task, o.task_files)?;
    let fdt = kernel_u64(files, o.files_fdt)?;
    let max = kernel_u32(fdt, o.fdtable_max_fds)? as u64;
    if fd >= max {
        return Err(-1);
    }
    let array = kernel_u64(fdt, o.fdtable_fd)?;
    let file = kernel_u64(array, (fd * 8) as u32)?;
    if file == 0 {
        return Err(-1);
    }
    kernel_u64(file, o.file_dentry)
}

/// The folder a relative path passed with `dfd` is relative to.
#[inline(always)]
fn base_folder(dfd: i64) -> Result<Folder, i64> {
    let o = offsets();
    let dentry = if dfd == AT_FDCWD {
        // SAFETY: the helper has no preconditions.
        let task = unsafe { bpf_get_current_task() };
        let fs = kernel_u64(task, o.task_fs)?;
        kernel_u64(fs, o.fs_pwd_dentry)?
    } else if dfd >= 0 {
        fd_dentry(dfd as u64, &o)?
    } else {
        return Err(-1);
    };
    folder_of(dentry, &o)
}

/// Whether the path at user address `path`, passed with `dfd`, is under a watched folder:
/// `Some(folder)` if so, where the folder is zero for an absolute path.
#[inline(always)]
fn watched(dfd: i64, path: u64) -> Result<Option<Folder>, i64> {
    let key = SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: `key` points at this CPU's slot, which nothing else uses while this program runs.
    let len = unsafe {
        bpf_probe_read_user_str(
            addr_of_mut!((*key).data).cast(),
            PREFIX_MAX as u32,
            path as *const core::ffi::c_void,
        )
    };
    if len <= 1 {
        return Err(len); // unreadable or empty
    }
    // SAFETY: as above; at least one byte was written.
    let first = unsafe { (*key).data[0] };
    if first != b'/' {
        let folder = base_folder(dfd)?;
        // SAFETY: a lookup. The value (1) is read, not just the pointer compared: LLVM would
        // otherwise merge the pointers of two lookups, which the verifier refuses.
        let found = unsafe { FOLDERS.get(folder) }.copied().unwrap_or(0);
        return Ok((found != 0).then_some(folder));
    }
    // Match on the bytes read (without the NUL): stale bytes of an earlier path stay out.
    // SAFETY: as above.
    unsafe { addr_of_mut!((*key).prefix_len).write_unaligned((len as u32 - 1) * 8) };
    // SAFETY: as above; the key is initialised up to `prefix_len` bits. The value is read for
    // the reason given above.
    let found = PREFIXES.get(unsafe { &*key }).copied().unwrap_or(0);
    Ok((found != 0).then_some(Folder::default()))
}

/// Reports `kind` for up to two paths (`(dfd, user address)`), when one of them is watched.
#[inline(always)]
fn report(kind: u32, flags: u64, paths: [(i64, u64); 2], count: usize) -> Result<(), i64> {
    let first = watched(paths[0].0, paths[0].1)?;
    let second = if count > 1 {
        watched(paths[1].0, paths[1].1).ok().flatten()
    } else {
        None
    };
    if first.is_none() && second.is_none() {
        return Ok(());
    }
    let record = STAGING.get_ptr_mut(0).ok_or(-1i64)?;
    let folders = [first.unwrap_or_default(), second.unwrap_or_default()];
    // SAFETY: `record` points at this CPU's slot, which nothing else uses while this program
    // runs; only raw field writes.
    unsafe {
        (*record).event = FileEvent {
            kind,
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            flags: flags as u32,
            count: count as u32,
            folders,
            lens: [0; 2],
        };
    }
    // The second path starts right after the first one's NUL.
    let mut at = 0usize;
    for (i, &(_, path)) in paths.iter().enumerate().take(count.min(2)) {
        // SAFETY: as above; `at` <= PATH_MAX, so PATH_MAX bytes from it stay in `paths`.
        let len = unsafe {
            bpf_probe_read_user_str(
                addr_of_mut!((*record).paths).cast::<u8>().add(at).cast(),
                PATH_MAX as u32,
                path as *const core::ffi::c_void,
            )
        };
        if len <= 1 || len > PATH_MAX as i64 {
            return Err(len);
        }
        // SAFETY: as above.
        unsafe { (*record).event.lens[i] = len as u32 - 1 };
        at += len as usize;
    }
    send(record, at);
    Ok(())
}

/// Sends the event of `record` and the first `paths` bytes of its paths, or counts it lost.
#[inline(always)]
fn send(record: *const FileRecord, paths: usize) {
    let len = FileRecord::sent_len(paths);
    if len > size_of::<FileRecord>() {
        return; // cannot happen; tells the verifier the bytes are in the map value
    }
    // SAFETY: `record` is this CPU's map value, `len` bytes of it are in bounds.
    let bytes = unsafe { core::slice::from_raw_parts(record.cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_lost();
    }
}

/// Counts an event [`EVENTS`] had no room for, so user space knows to rescan.
#[inline(always)]
fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; a tracepoint program does not preempt itself on one CPU.
        unsafe { *lost += 1 };
    }
}

#[inline(always)]
fn open(ctx: &TracePointContext, dfd: Option<usize>, path: usize, flags: u64) -> Result<(), i64> {
    if flags & WRITE_FLAGS == 0 {
        return Ok(()); // a read: changes nothing
    }
    let dfd = match dfd {
        Some(slot) => arg(ctx, slot)? as i32 as i64,
        None => AT_FDCWD,
    };
    report(kind::OPEN, flags, [(dfd, arg(ctx, path)?), (0, 0)], 1)
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // A failed read (a bad user pointer) means the syscall fails too: nothing to report. The
    // return value only tells perf whether to keep the trace record, which nobody reads.
    let _ = arg(&ctx, slot::OPENAT_FLAGS)
        .and_then(|flags| open(&ctx, Some(slot::OPENAT_DFD), slot::OPENAT_FILENAME, flags));
    0
}

#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    // `how` points at a `struct open_how` whose first field is the flags.
    let _ = arg(&ctx, slot::OPENAT2_HOW)
        .and_then(|how| {
            // SAFETY: bpf_probe_read_user checks the address.
            unsafe { bpf_probe_read_user(how as *const u64) }.map_err(i64::from)
        })
        .and_then(|flags| open(&ctx, Some(slot::OPENAT2_DFD), slot::OPENAT2_FILENAME, flags));
    0
}

#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let _ =
        arg(&ctx, slot::OPEN_FLAGS).and_then(|flags| open(&ctx, None, slot::OPEN_FILENAME, flags));
    0
}

#[tracepoint]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    // creat(2) is open(O_CREAT | O_WRONLY | O_TRUNC).
    let _ = open(&ctx, None, slot::CREAT_PATHNAME, 0o1101);
    0
}

#[inline(always)]
fn rename(
    ctx: &TracePointContext,
    slots: [Option<usize>; 2],
    paths: [usize; 2],
) -> Result<(), i64> {
    let dfd = |slot: Option<usize>| match slot {
        Some(slot) => arg(ctx, slot).map(|dfd| dfd as i32 as i64),
        None => Ok(AT_FDCWD),
    };
    report(
        kind::RENAME,
        0,
        [
            (dfd(slots[0])?, arg(ctx, paths[0])?),
            (dfd(slots[1])?, arg(ctx, paths[1])?),
        ],
        2,
    )
}

#[tracepoint]
pub fn sys_enter_rename(ctx: TracePointContext) -> u32 {
    let _ = rename(&ctx, [None, None], [slot::RENAME_OLD, slot::RENAME_NEW]);
    0
}

#[tracepoint]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    let _ = rename(
        &ctx,
        [Some(slot::RENAMEAT_OLDDFD), Some(slot::RENAMEAT_NEWDFD)],
        [slot::RENAMEAT_OLD, slot::RENAMEAT_NEW],
    );
    0
}

#[tracepoint]
pub fn sys_enter_renameat2(ctx: TracePointContext) -> u32 {
    let _ = rename(
        &ctx,
        [Some(slot::RENAMEAT2_OLDDFD), Some(slot::RENAMEAT2_NEWDFD)],
        [slot::RENAMEAT2_OLD, slot::RENAMEAT2_NEW],
    );
    0
}

#[tracepoint]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    let _ = arg(&ctx, slot::UNLINK_PATHNAME)
        .and_then(|path| report(kind::UNLINK, 0, [(AT_FDCWD, path), (0, 0)], 1));
    0
}

#[tracepoint]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    let _ = arg(&ctx, slot::UNLINKAT_DFD).and_then(|dfd| {
        let path = arg(&ctx, slot::UNLINKAT_PATHNAME)?;
        report(kind::UNLINK, 0, [(dfd as i32 as i64, path), (0, 0)], 1)
    });
    0
}

#[tracepoint]
pub fn sys_enter_truncate(ctx: TracePointContext) -> u32 {
    let _ = arg(&ctx, slot::TRUNCATE_PATH)
        .and_then(|path| report(kind::TRUNCATE, 0, [(AT_FDCWD, path), (0, 0)], 1));
    0
}

#[tracepoint]
pub fn sys_enter_ftruncate(ctx: TracePointContext) -> u32 {
    let _ = try_ftruncate(&ctx);
    0
}

/// `ftruncate(fd)`: the fd's file is reported by name if its parent folder is watched.
#[inline(always)]
fn try_ftruncate(ctx: &TracePointContext) -> Result<(), i64> {
    let fd = arg(ctx, slot::FTRUNCATE_FD)?;
    let o = offsets();
    let dentry = fd_dentry(fd, &o)?;
    let parent = kernel_u64(dentry, o.dentry_parent)?;
    let folder = folder_of(parent, &o)?;
    // SAFETY: a lookup.
    if unsafe { FOLDERS.get(folder) }.copied().unwrap_or(0) == 0 {
        return Ok(());
    }
    let name = kernel_u64(dentry, o.dentry_name)?;
    let record = STAGING.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: as in `report`; the name is a kernel string.
    let len = unsafe {
        (*record).event = FileEvent {
            kind: kind::FTRUNCATE,
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            flags: 0,
            count: 1,
            folders: [folder, Folder::default()],
            lens: [0; 2],
        };
        aya_ebpf::helpers::generated::bpf_probe_read_kernel_str(
            addr_of_mut!((*record).paths).cast(),
            PATH_MAX as u32,
            name as *const core::ffi::c_void,
        )
    };
    if len <= 1 || len > PATH_MAX as i64 {
        return Err(len);
    }
    // SAFETY: as above.
    unsafe { (*record).event.lens[0] = len as u32 - 1 };
    send(record, len as usize);
    Ok(())
}

/// A write-family syscall on `fd`: reported once if the file is armed in [`FILES`], which it
/// disarms, so an idle harvested file costs user space nothing until it is written again. Runs
/// on every write of the machine, so it bails out at the first lookup that misses.
#[inline(always)]
fn written(ctx: &TracePointContext, fd_slot: usize) -> Result<(), i64> {
    // `unsigned int fd` in some formats: the upper half of the 8-byte slot is not the fd's.
    let fd = arg(ctx, fd_slot)? & 0xffff_ffff;
    let o = offsets();
    let file = folder_of(fd_dentry(fd, &o)?, &o)?;
    // SAFETY: a pointer into the map's value; a racing writer on another CPU may report the
    // same write twice, which user space tolerates.
    let armed = FILES.get_ptr_mut(&file).ok_or(0i64)?;
    unsafe {
        if *armed == 0 {
            return Ok(());
        }
        *armed = 0;
    }
    let Some(mut entry) = EVENTS.reserve::<WriteEvent>(0) else {
        count_lost();
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: as in `report`.
    unsafe {
        (*event).kind = kind::WRITE;
        (*event).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*event).file = file;
    }
    entry.submit(0);
    Ok(())
}

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    let _ = written(&ctx, slot::WRITE_FD);
    0
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    let _ = written(&ctx, slot::WRITEV_FD);
    0
}

#[tracepoint]
pub fn sys_enter_pwrite64(ctx: TracePointContext) -> u32 {
    let _ = written(&ctx, slot::PWRITE64_FD);
    0
}

#[tracepoint]
pub fn sys_enter_pwritev(ctx: TracePointContext) -> u32 {
    let _ = written(&ctx, slot::PWRITEV_FD);
    0
}

#[tracepoint]
pub fn sys_enter_pwritev2(ctx: TracePointContext) -> u32 {
    let _ = written(&ctx, slot::PWRITEV2_FD);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel lets only GPL-compatible programs call `bpf_probe_read_*`.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
