//! The agent with exactly the capabilities the DaemonSet grants it (`manifests/base/
//! agent-daemonset.yaml`: uid 0, `drop: [ALL]`, `add: [BPF, PERFMON]`): its eBPF watch
//! attaches, and it reads the runtime's root-owned 0640 log files without CAP_DAC_READ_SEARCH
//! or CAP_DAC_OVERRIDE, by the owner's permission bits. A file of another user that only its
//! owner may read stays unread, which shows the DAC capabilities are really gone. The kernel is
//! the peer, so the test needs root (skipped otherwise, except under CI).

#[path = "harvest_support/mod.rs"]
mod support;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use support::{Agent, delivered, line, wait_until};

/// The numbers of the capabilities a DaemonSet may add (linux/capability.h).
const CAPABILITIES: [(&str, u32); 6] = [
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("SYS_ADMIN", 21),
    ("SYS_RESOURCE", 24),
    ("PERFMON", 38),
    ("BPF", 39),
];
/// Lines of each file.
const LINES: u64 = 100;

/// The capabilities the shipped DaemonSet adds to the agent's container (it drops all others).
fn granted() -> Vec<u32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/base/agent-daemonset.yaml");
    let daemonset: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let capabilities =
        &daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"];
    assert_eq!(capabilities["drop"][0], "ALL");
    capabilities["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|name| {
            let name = name.as_str().unwrap();
            CAPABILITIES
                .iter()
                .find(|(known, _)| *known == name)
                .unwrap_or_else(|| panic!("{name}: add its number to CAPABILITIES"))
                .1
        })
        .collect()
}

/// The capability set `set` (`CapEff`, `CapBnd`, …) of process `pid`, from /proc.
fn capabilities(pid: &str, set: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(set)?.strip_prefix(':'))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no {set} in /proc/{pid}/status"))
}

#[test]
fn the_daemonsets_capabilities_watch_with_ebpf_and_read_root_owned_logs_only() {
    if !skiff_tests::ebpf_sandbox() {
        return;
    }
    // The DaemonSet mounts the host's tracefs (the agent cannot mount it without SYS_ADMIN):
    // here it is mounted in the test's own mount namespace.
    match nix::mount::mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
        Err(err) => panic!("mounting tracefs in the test's namespace: {err}"),
    }
    let dir = tempfile::tempdir().unwrap();
    // As the kubelet makes a pod's log folder.
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
    let write = |name: &str, mode: u32| {
        let path = logs.join(format!("{name}.log"));
        fs::write(
            &path,
            (0..LINES).map(|seq| line(name, seq)).collect::<String>(),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    // As containerd writes a container's log: root's, 0640.
    write("root", 0o640);
    // nobody's, for nobody only.
    let other = write("other", 0o600);
    nix::unistd::chown(
        &other,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let granted = granted();
    let last_cap: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let agent = Agent::start_with(
        &dir.path().join("state"),
        "ebpf",
        &format!(
            "  - {{ type: filestream, id: pods, paths: ['{}/*.log'] }}\n",
            logs.display()
        ),
        "",
        |command| {
            let keep = granted.clone();
            let drop_others = move || {
                for cap in (0..=last_cap).filter(|cap| !keep.contains(cap)) {
                    // SAFETY: prctl(PR_CAPBSET_DROP) takes plain integers and touches no memory
                    // of ours; a raw syscall is async-signal-safe, as a pre_exec hook must be.
                    let dropped = unsafe {
                        nix::libc::prctl(
                            nix::libc::PR_CAPBSET_DROP,
                            cap as nix::libc::c_ulong,
                            0,
                            0,
                            0,
                        )
                    };
                    if dropped != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            };
            // SAFETY: the hook runs between fork and exec, where only async-signal-safe calls
            // are allowed: it makes only prctl calls and allocates nothing (`keep` was
            // allocated before the fork). Uid 0's permitted
            // and effective sets after exec are its bounding set: the DaemonSet's two.
            unsafe { command.pre_exec(drop_others) };
        },
    );
    // What the DaemonSet adds, less what this machine's bounding set lacks (a container may
    // run the tests without some, e.g. SYS_RESOURCE).
    let mask = granted.iter().map(|cap| 1 << cap).sum::<u64>() & capabilities("self", "CapBnd");
    assert_eq!(
        capabilities(&agent.pid().to_string(), "CapEff"),
        mask,
        "the agent's capabilities"
    );

    let count = |stream: &str| {
        delivered(&agent.output)
            .0
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with(stream)))
            .count() as u64
    };
    wait_until(
        || format!("the root-owned file's lines; log:\n{}", agent.log()),
        || count("root ") == LINES,
    );
    wait_until(
        || {
            format!(
                "the agent to say it cannot open other.log; log:\n{}",
                agent.log()
            )
        },
        || agent.log().contains("other.log") && agent.log().contains("cannot open"),
    );
    let log = agent.log();
    assert!(log.contains("eBPF watch attached"), "{log}");
    assert_eq!(count("other "), 0, "read a file only its owner may read");
    assert!(agent.terminate().success());
}
