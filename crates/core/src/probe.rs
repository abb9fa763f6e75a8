//! What this host allows, detected once and reported as data; `isolate doctor` and the tests read
//! the same answer.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub kernel: String,
    pub arch: String,
    pub uid: u32,
    pub rootless: bool,
    pub user_namespaces: UserNs,
    pub cgroup: Cgroup,
    /// What this process may do with cgroups (the detection the limits use).
    #[cfg(target_os = "linux")]
    pub cgroup_host: Option<crate::cgroup::CgroupHost>,
    /// The processes and threads a sandbox with a user namespace of its own may have per uid where
    /// it names no pids limit (its RLIMIT_NPROC, [`crate::spec::Limits::default_nproc`], lower
    /// where this process's own is); None on a kernel older than 5.14, whose count is the host
    /// user's, and then no default holds.
    pub default_pids: Option<u64>,
    pub overlay: bool,
    pub landlock_abi: Option<u32>,
    pub seccomp: bool,
    /// The seccomp mode this process already runs under (2 = filtered, as in a container).
    pub seccomp_mode: Option<u32>,
    /// The host ids the sandbox's root runs as: an unprivileged range's first ids for a root
    /// caller (what a read-write bind must let write), the caller's own ids otherwise. None for a
    /// root caller when no block of ids is free (its sandboxes are refused at write_id_maps).
    #[cfg(target_os = "linux")]
    pub sandbox_host_ids: Option<crate::spec::Ids>,
    /// The first of the plan::OWNER_IDS host uids that own a root caller's sandbox user namespaces
    /// (one per sandbox, mapped into none). None where they are the caller's: an ordinary user's, or root's
    /// when it lacks a capability that takes (see supervisor::namespace_owners) or no block is free.
    #[cfg(target_os = "linux")]
    pub namespace_owners: Option<u32>,
    /// For a root caller: whether those ids and owners all come from root's own subordinate ranges
    /// (/etc/subuid, /etc/subgid), not from blocks checked against /etc/passwd and the ranges only.
    #[cfg(target_os = "linux")]
    pub sandbox_ids_roots_own: bool,
    /// Whether a sandbox's place first in the OOM killer's line (`sys::OOM_SCORE_ADJ`) is also
    /// its floor: this process holds CAP_SYS_RESOURCE in the initial user namespace (not a
    /// container's), which its helper then holds too and which
    /// makes the helper's write the least `oom_score_adj` the sandbox may set. Otherwise the
    /// sandbox may lower it as far as this process itself may (its `oom_score_adj_min`).
    #[cfg(target_os = "linux")]
    pub oom_floor_held: bool,
    /// The program the kernel pipes core dumps to (`kernel.core_pattern` starting with `|`), if
    /// it does: it is started on the host, as root, for a crash of a dumpable process whatever
    /// its RLIMIT_CORE but 1 (a sandbox's, unless it asked for core dumps).
    pub core_pipe: Option<String>,
    /// The socket the kernel hands core dumps to (`kernel.core_pattern` starting with `@`, Linux
    /// 6.16+), if it does: for every crash of a dumpable process, a sandbox's too, whatever its
    /// RLIMIT_CORE.
    pub core_socket: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserNs {
    pub allowed: bool,
    /// Why not, when not: which sysctl or policy refuses.
    pub reason: Option<String>,
    pub max_user_namespaces: Option<u64>,
    pub unprivileged_userns_clone: Option<u64>,
    pub apparmor_restricted: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cgroup {
    /// "v2" (unified only), "v1" (legacy), "hybrid" (v1 controllers plus a v2 mount).
    pub mode: String,
    pub v2_controllers: Vec<String>,
    pub v1_controllers: Vec<String>,
    /// This process's own cgroup path per hierarchy ("0::/..." style lines).
    pub own: Vec<String>,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn read_num(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the documented version query: NULL attr, size 0.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, LANDLOCK_CREATE_RULESET_VERSION) };
    (v > 0).then_some(v as u32)
}

/// What a `kernel.core_pattern` hands core dumps to after `mark` (`|`: a program's command line;
/// `@`: a socket's path, `@@` too), else None (a file name).
fn core_handler(pattern: &str, mark: char) -> Option<String> {
    pattern.trim_end_matches('\n').strip_prefix(mark).map(|c| c.trim_start_matches('@').trim().to_owned())
}

/// The initial user namespace's inode number, fixed by the kernel (PROC_USER_INIT_INO).
#[cfg(target_os = "linux")]
const INITIAL_USER_NAMESPACE_INO: u64 = 0xEFFF_FFFD;

#[cfg(target_os = "linux")]
fn in_initial_user_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/user").is_ok_and(|m| m.ino() == INITIAL_USER_NAMESPACE_INO)
}

fn status_field(name: &str) -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

fn cgroup() -> Cgroup {
    let own: Vec<String> = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default().lines().map(str::to_owned).collect();
    let mut v1 = Vec::new();
    let mut has_v2_mount = false;
    let mut v2_dir = None;
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        let Some((_, after)) = line.split_once(" - ") else { continue };
        let mut f = after.split_whitespace();
        let fstype = f.next().unwrap_or("");
        let _src = f.next();
        let opts = f.next().unwrap_or("");
        let mountpoint = line.split_whitespace().nth(4).unwrap_or("");
        match fstype {
            "cgroup2" => {
                has_v2_mount = true;
                v2_dir.get_or_insert_with(|| mountpoint.to_owned());
            }
            "cgroup" => {
                for o in opts.split(',') {
                    if [
                        "cpu",
                        "cpuacct",
                        "cpuset",
                        "memory",
                        "pids",
                        "blkio",
                        "freezer",
                        "devices",
                        "net_cls",
                        "net_prio",
                        "perf_event",
                        "hugetlb",
                        "rdma",
                        "misc",
                    ]
                    .contains(&o)
                    {
                        v1.push(o.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let v2_controllers: Vec<String> = v2_dir
        .and_then(|d| std::fs::read_to_string(format!("{d}/cgroup.controllers")).ok())
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mode = match (has_v2_mount, v1.is_empty()) {
        (true, true) => "v2",
        (true, false) => "hybrid",
        (false, false) => "v1",
        (false, true) => "none",
    };
    v1.sort();
    v1.dedup();
    Cgroup { mode: mode.into(), v2_controllers, v1_controllers: v1, own }
}

pub fn probe() -> Probe {
    let uts = nix::sys::utsname::uname().ok();
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let uid = nix::unistd::geteuid().as_raw();
    let max = read_num("/proc/sys/user/max_user_namespaces");
    let clone = read_num("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read_num("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1);
    let reason = if max == Some(0) {
        Some("user.max_user_namespaces is 0: `sysctl -w user.max_user_namespaces=15000`".to_owned())
    } else if uid != 0 && clone == Some(0) {
        Some("kernel.unprivileged_userns_clone is 0: `sysctl -w kernel.unprivileged_userns_clone=1`".to_owned())
    } else if uid != 0 && apparmor {
        Some("AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): add an AppArmor profile granting `userns` to node, or `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`".to_owned())
    } else {
        None
    };
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    Probe {
        kernel: uts.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        arch: uts.as_ref().map(|u| u.machine().to_string_lossy().into_owned()).unwrap_or_default(),
        uid,
        rootless: uid != 0,
        user_namespaces: UserNs {
            allowed: reason.is_none(),
            reason,
            max_user_namespaces: max,
            unprivileged_userns_clone: clone,
            apparmor_restricted: apparmor,
        },
        cgroup: cgroup(),
        #[cfg(target_os = "linux")]
        cgroup_host: crate::cgroup::detect_for_probe().ok(),
        default_pids: crate::spec::Limits::default()
            .default_nproc(true, nproc_counted_per_user_namespace())
            .map(|n| nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC).map_or(n, |(soft, _)| n.min(soft))),
        overlay: filesystems.lines().any(|l| l.trim_end().ends_with("overlay")),
        landlock_abi: landlock_abi(),
        seccomp: std::path::Path::new("/proc/sys/kernel/seccomp/actions_avail").exists(),
        seccomp_mode: status_field("Seccomp:"),
        #[cfg(target_os = "linux")]
        sandbox_host_ids: crate::supervisor::sandbox_host_ids(crate::spec::Ids { uid, gid: nix::unistd::getegid().as_raw() }).ok(),
        #[cfg(target_os = "linux")]
        namespace_owners: crate::supervisor::namespace_owners(),
        #[cfg(target_os = "linux")]
        sandbox_ids_roots_own: uid == 0 && crate::supervisor::host_ids_roots_own(),
        // CAP_SYS_RESOURCE in a user namespace of a container's is not the one the floor takes.
        #[cfg(target_os = "linux")]
        oom_floor_held: crate::sys::has_effective_caps(&["SYS_RESOURCE"]) && in_initial_user_namespace(),
        core_pipe: core_handler(&core_pattern, '|'),
        core_socket: core_handler(&core_pattern, '@'),
    }
}

/// The result of really creating what a sandbox creates, in a throw-away child.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// None when it worked, else the errno's name.
    pub user_namespace: Option<String>,
    /// A new user namespace plus mount, pid, uts, ipc, net namespaces together.
    pub all_namespaces: Option<String>,
}

/// Clone a child into new namespaces that exits at once; report the errno if the kernel refuses.
/// Runs in the helper (single-threaded), never in Node.
#[cfg(target_os = "linux")]
pub fn attempt() -> Attempt {
    fn try_clone(flags: libc::c_int) -> Option<String> {
        // SAFETY: fork-like clone of the single-threaded helper; the child only calls _exit.
        let rc = unsafe { libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
        if rc < 0 {
            return Some(crate::error::errno_name(nix::errno::Errno::last() as i32));
        }
        if rc == 0 {
            // SAFETY: leaving the child at once.
            unsafe { libc::_exit(0) }
        }
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(rc as i32), None);
        None
    }
    let all = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET;
    Attempt { user_namespace: try_clone(libc::CLONE_NEWUSER), all_namespaces: try_clone(all) }
}

/// The running kernel's (major, minor), from uname(2).
pub(crate) fn running_kernel() -> Option<(u32, u32)> {
    // SAFETY: uname fills the struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    parse_kernel_version(release.to_str().ok()?)
}

/// "6.18.44-fc" or "4.8" → (major, minor)
pub(crate) fn parse_kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().filter(|p| !p.is_empty()).map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor))
}

/// Whether the kernel counts RLIMIT_NPROC per user namespace (Linux 5.14, ucounts): a sandbox's
/// own user namespace then has a count of its own, which the default pids bound relies on
/// ([`crate::spec::Limits::default_nproc`]). Before, the count was the host user's, shared by
/// every process of those host ids. Read once per process.
pub(crate) fn nproc_counted_per_user_namespace() -> bool {
    static PER_NS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PER_NS.get_or_init(|| running_kernel().is_some_and(|v| v >= (5, 14)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse_to_major_and_minor() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5"), Some((5, 0)));
        assert_eq!(parse_kernel_version("5.13.0-1-generic"), Some((5, 13)));
        assert!(running_kernel().is_some());
    }

    #[test]
    fn a_core_pattern_pipes_only_where_it_starts_with_a_bar_and_goes_to_a_socket_after_an_at() {
        let pipe = |p: &str| core_handler(p, '|');
        let socket = |p: &str| core_handler(p, '@');
        assert_eq!(
            pipe("|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n").as_deref(),
            Some("/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h")
        );
        assert_eq!(socket("|/usr/lib/systemd/systemd-coredump %P\n"), None);
        assert_eq!(socket("@/run/systemd/coredump\n").as_deref(), Some("/run/systemd/coredump"));
        assert_eq!(socket("@@/run/systemd/coredump\n").as_deref(), Some("/run/systemd/coredump"));
        for file in ["core\n", "/var/crash/core.%p", ""] {
            assert_eq!((pipe(file), socket(file)), (None, None));
        }
    }
}
