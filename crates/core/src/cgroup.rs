//! cgroups v2 and v1: detection, the planned writes for limits, and the sandbox's own cgroup.
//!
//! Three layers, as elsewhere in the core:
//! - [`detect`] reads `/proc/self/cgroup` and `/proc/self/mountinfo` once and describes the host
//!   as plain data ([`CgroupHost`], serializable for `probe()` and `isolate doctor`);
//! - [`plan_writes`] turns the asked limits into the ordered file writes for that host, a pure
//!   function tested without root, failing closed when a controller is missing;
//! - [`SandboxCgroup`] applies it: one directory beneath this process's own cgroup (v2) or one per
//!   hierarchy used (v1), attach, usage counters, kill, removal.
//!
//! Sandbox cgroups are created only beneath the calling process's own cgroup, and removed.
//!
//! Order that matters to the caller (the helper):
//! - attach the sandbox's first process before it runs anything of the command (the child waits
//!   for the helper's "go"), so nothing it starts escapes the limits or the kill;
//! - the child unshares its cgroup namespace only after it was attached, so that the namespace's
//!   root is the sandbox cgroup and not the helper's (with `clone3(CLONE_INTO_CGROUP |
//!   CLONE_NEWCGROUP)` the kernel already roots the new namespace at the target cgroup);
//! - a `cgroup.procs` attach of an existing process costs an RCU grace period (7.5 ms median
//!   measured on this v1 host for the whole attach; 0.1 ms for one right after another); on v2
//!   `clone3(CLONE_INTO_CGROUP)` with [`SandboxCgroup::dir_fd_v2`] avoids that migration.
//!
//! cgroup v2's no-internal-process rule: a non-root cgroup that holds processes (the caller's own,
//! always) cannot give memory to child cgroups, and giving it cpu or pids would turn it into a
//! thread root. Limits work beneath the caller's cgroup when it is the root, or when its
//! subtree_control already enables them; otherwise they fail closed with a hint. A sandbox cgroup
//! without limits (kill, cpu accounting) works beneath any delegated cgroup.

use crate::error::{SetupError, Step};
use crate::sys;
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const STEP_CREATE: Step = Step::CreateCgroup;
const STEP_WRITE_LIMITS: Step = Step::WriteCgroupLimits;
const STEP_ATTACH: Step = Step::AttachCgroup;
const STEP_REMOVE: Step = Step::RemoveCgroup;
/// Killing what runs in the cgroup is part of supervising it.
const STEP_KILL: Step = Step::Supervise;

/// The CFS period written with every cpu limit, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses CFS quotas below 1 ms.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// v1 controllers the kernel may mount; other mount options (rw, xattr, name=...) are not.
const V1_CONTROLLERS: &[&str] =
    &["cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"];

// ---------------------------------------------------------------------------------------------
// Detection

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CgroupMode {
    /// Only the unified hierarchy.
    #[serde(rename = "v2")]
    V2,
    /// Only v1 hierarchies.
    #[serde(rename = "v1")]
    V1,
    /// v1 controllers plus a v2 mount (systemd's "hybrid"): limits go through v1.
    #[serde(rename = "hybrid")]
    Hybrid,
    /// No cgroup filesystem is mounted.
    #[serde(rename = "none")]
    Unavailable,
}

impl CgroupMode {
    /// Whether limits, attach and usage go through the unified hierarchy.
    pub fn uses_v2(self) -> bool {
        self == CgroupMode::V2
    }
}

/// The controllers this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
    /// v1 only: CPU time accounting (on v2 `cpu.stat` is always there).
    Cpuacct,
    /// v1 only: freeze before kill (on v2 `cgroup.freeze`/`cgroup.kill` are core files).
    Freezer,
}

impl Controller {
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Freezer => "freezer",
        }
    }
}

/// The unified (v2) hierarchy as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnifiedHierarchy {
    /// Where it is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
    pub mount: String,
    /// The cgroup beneath which sandbox cgroups are made, as `/proc/self/cgroup` names cgroups:
    /// this process's own (`0::<path>`), or the one [`PARENT_ENV`] names (`from_env`).
    pub own_path: String,
    /// That cgroup's directory, when the mount shows it (a container may mount a subtree only).
    pub own_dir: Option<String>,
    /// `own_path` is [`PARENT_ENV`]'s cgroup, above this process's own.
    pub from_env: bool,
    /// The own cgroup is the hierarchy's real root (it has no `cgroup.type`), where the
    /// no-internal-process rule does not apply.
    pub is_root: bool,
    /// `cgroup.controllers` of the own cgroup: what its parent delegates to it.
    pub controllers: Vec<String>,
    /// `cgroup.subtree_control` of the own cgroup: what its children get today.
    pub subtree_control: Vec<String>,
    pub subtree_control_writable: bool,
    /// Processes in the own cgroup, this one included (the no-internal-process rule's subject);
    /// not counted (0) in the hierarchy's root, which the rule exempts: listing the root's
    /// processes walks every process of the host, on every cold start.
    pub processes: usize,
    /// This process may mkdir in the own cgroup.
    pub writable: bool,
    /// This process may write the own cgroup's `cgroup.procs`: needed to move a child from it
    /// into a sandbox cgroup (the common ancestor's `cgroup.procs` rule of delegation).
    pub procs_writable: bool,
    /// Controllers a child cgroup can have: enabled already, or enable-able by this process.
    pub usable: Vec<String>,
}

/// Why a v2 controller can or cannot be used by a child of the own cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Availability {
    Enabled,
    /// Available in the own cgroup and this process may write `+name` to its subtree_control.
    Enableable,
    /// The parent does not delegate it: not in the own `cgroup.controllers`.
    NotDelegated,
    /// Not enabled, and the own cgroup is not the root and holds processes: the kernel refuses a
    /// domain controller (EBUSY, the no-internal-process rule) and would turn the caller's cgroup
    /// into a thread root for a threaded one; neither is done.
    NoInternalProcess,
    /// Available, but the own `cgroup.subtree_control` is not writable by this process.
    NotWritable,
    /// The own cgroup is not visible through any mount.
    Unreachable,
}

impl UnifiedHierarchy {
    pub fn availability(&self, controller: &str) -> V2Availability {
        let has = |list: &[String]| list.iter().any(|c| c == controller);
        if self.own_dir.is_none() {
            V2Availability::Unreachable
        } else if has(&self.subtree_control) {
            V2Availability::Enabled
        } else if !has(&self.controllers) {
            V2Availability::NotDelegated
        } else if !self.is_root && self.processes > 0 {
            // Domain controllers (memory, io) get EBUSY. The threaded-capable ones (cpu, pids,
            // cpuset, perf_event) would be accepted, but make the cgroup a thread root whose new
            // children take processes only as threaded cgroups: not done to the caller's cgroup.
            V2Availability::NoInternalProcess
        } else if !self.subtree_control_writable {
            V2Availability::NotWritable
        } else {
            V2Availability::Enableable
        }
    }
}

/// `total` (exact) split into user and system time in the proportion of `user` to `sys` (sampled
/// at timer ticks), as the kernel's cputime_adjust does for a task's times: all user time when
/// no tick saw it. The parts sum to `total`, in nanoseconds.
fn split_exact(total: u64, user: u64, sys: u64) -> (u64, u64) {
    let sampled = user as u128 + sys as u128;
    if sampled == 0 {
        return (total, 0);
    }
    let sys = (total as u128 * sys as u128 / sampled) as u64;
    (total - sys, sys)
}

/// One v1 hierarchy (one mount; merged ones such as `cpu,cpuacct` carry several controllers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct V1Hierarchy {
    pub controllers: Vec<String>,
    pub mount: String,
    pub own_path: String,
    pub own_dir: Option<String>,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupHost {
    pub mode: CgroupMode,
    /// The unified hierarchy; on hybrid hosts reported only.
    pub unified: Option<UnifiedHierarchy>,
    /// v1 hierarchies that carry at least one controller.
    pub v1: Vec<V1Hierarchy>,
    /// Whether swap can be limited per cgroup (v1 `memory.memsw.*`, v2 `memory.swap.max`);
    /// None when it cannot be told from the own cgroup (the v2 root has no memory files).
    pub swap_accounting: Option<bool>,
    /// Whether this process may create a sandbox cgroup at all.
    pub can_create: bool,
    /// Why not, when it may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// It may not because [`PARENT_ENV`] names no cgroup it could use (`reason` says why).
    pub parent_refused: bool,
    /// What [`CgroupHost::refused_limits`] says, filled in for the probe only: a sandbox's start,
    /// which detects the host too, finds out from its own limits' plan.
    pub refused: Vec<RefusedLimit>,
    /// What [`parent_that_would_hold`] says, filled in for the probe only ([`detect_for_probe`]).
    pub parent_would_hold: Option<String>,
}

/// A limit that fails closed where a sandbox cgroup may be made, as its error would say why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedLimit {
    /// The option, as `limits.memoryBytes`.
    pub option: &'static str,
    pub controller: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The cgroup limits and the controller each needs (cpuTimeMs: cpuacct on v1, nothing on v2).
const LIMIT_CONTROLLERS: [(&str, &str); 4] =
    [("limits.memoryBytes", "memory"), ("limits.pids", "pids"), ("limits.cpus", "cpu"), ("limits.cpuTimeMs", "cpuacct")];

impl CgroupHost {
    /// The v1 hierarchy carrying `controller`, if mounted.
    pub fn v1_hierarchy(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.v1.iter().find(|h| h.controllers.iter().any(|c| c == controller))
    }

    /// A sandbox cgroup of this host can have `controller` (`cpuacct`: its CPU time is counted).
    fn usable(&self, controller: &str) -> bool {
        match self.mode {
            // cpu.stat is in every v2 cgroup.
            CgroupMode::V2 if controller == "cpuacct" => true,
            CgroupMode::V2 => self.unified.as_ref().is_some_and(|u| matches!(u.availability(controller), V2Availability::Enabled | V2Availability::Enableable)),
            CgroupMode::V1 | CgroupMode::Hybrid => self.v1_hierarchy(controller).is_some_and(|h| h.own_dir.is_some() && h.writable),
            CgroupMode::Unavailable => false,
        }
    }

    /// The limits that fail closed although a sandbox cgroup may be made (none where it may not:
    /// then all of them do, for [`CgroupHost::reason`]), with what their error says: `isolate
    /// doctor` and the tests read them from the probe.
    pub fn refused_limits(&self) -> Vec<RefusedLimit> {
        if !self.can_create {
            return Vec::new();
        }
        LIMIT_CONTROLLERS
            .iter()
            .filter(|(_, c)| !self.usable(c))
            .map(|&(option, controller)| {
                let (message, hint) = missing_hint(self, controller);
                RefusedLimit { option, controller, message, hint }
            })
            .collect()
    }
}

/// What `/proc/self/cgroup` and `/proc/self/mountinfo` say, before looking at any cgroup file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Layout {
    /// (mount, own path, own dir, the mount's root in the hierarchy)
    unified: Option<(String, String, Option<String>, String)>,
    /// (controllers, mount, own path, own dir)
    v1: Vec<(Vec<String>, String, String, Option<String>)>,
    /// The unified own path and dir are [`PARENT_ENV`]'s cgroup, not this process's.
    parent_from_env: bool,
}

/// Undo mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `own` through a mount of `root` at `mountpoint`, if it shows it.
fn dir_through(mountpoint: &str, root: &str, own: &str) -> Option<String> {
    let rel = if root == "/" {
        own
    } else if own == root {
        "/"
    } else {
        own.strip_prefix(root).filter(|r| r.starts_with('/'))?
    };
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    let dir = format!("{}{}", mountpoint.trim_end_matches('/'), rel.trim_end_matches('/'));
    Some(if dir.is_empty() { "/".to_owned() } else { dir })
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn parse_layout(proc_cgroup: &str, mountinfo: &str) -> Layout {
    // Own cgroup per hierarchy: "0::/path" (v2), "4:memory:/path", "1:cpu,cpuacct:/path".
    let mut own_v2 = None;
    let mut own_v1: Vec<(Vec<String>, String)> = Vec::new();
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if id == "0" && ctrls.is_empty() {
            own_v2 = Some(path.to_owned());
        } else {
            let set: Vec<String> = ctrls.split(',').filter(|c| V1_CONTROLLERS.contains(c)).map(str::to_owned).collect();
            if !set.is_empty() {
                own_v1.push((sorted(set), path.to_owned()));
            }
        }
    }
    let mut layout = Layout::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (root, mountpoint) = (unescape(l[3]), unescape(l[4]));
        match r[0] {
            "cgroup2" => {
                if layout.unified.as_ref().is_some_and(|u| u.2.is_some()) {
                    continue;
                }
                let own = own_v2.clone().unwrap_or_else(|| "/".to_owned());
                let dir = dir_through(&mountpoint, &root, &own);
                layout.unified = Some((mountpoint, own, dir, root));
            }
            "cgroup" => {
                let set = sorted(r[2].split(',').filter(|o| V1_CONTROLLERS.contains(o)).map(str::to_owned).collect());
                if set.is_empty() {
                    continue;
                }
                let own = own_v1.iter().find(|(s, _)| *s == set).map(|(_, p)| p.clone()).unwrap_or_else(|| "/".to_owned());
                let dir = dir_through(&mountpoint, &root, &own);
                match layout.v1.iter_mut().find(|h| h.0 == set) {
                    // The same hierarchy mounted twice: keep the first mount that shows our cgroup.
                    Some(h) if h.3.is_none() && dir.is_some() => *h = (set, mountpoint, own, dir),
                    Some(_) => {}
                    None => layout.v1.push((set, mountpoint, own, dir)),
                }
            }
            _ => {}
        }
    }
    layout
}

fn may_write(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else { return false };
    // SAFETY: a NUL-terminated path; faccessat only reads it. AT_EACCESS: the effective ids.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
}

fn words(path: &str) -> Vec<String> {
    std::fs::read_to_string(path).map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

fn exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

/// The environment variable that names the cgroup v2 parent of the sandbox cgroups, in place of
/// the caller's own cgroup: that cgroup or one above it, as `/proc/self/cgroup` writes paths
/// (`/system.slice/app.service`). Where the caller's own cgroup holds the caller, the kernel's
/// no-internal-process rule gives its children no memory, pids or cpu; a cgroup above it that
/// holds no process can (systemd: `Delegate=yes` with `DelegateSubgroup=`). The addon passes it
/// to the helpers, whose environment is otherwise empty.
pub const PARENT_ENV: &str = "ISOLATE_CGROUP_PARENT";

/// Describe this host's cgroups as this process sees them. Call once and pass the answer on.
pub fn detect() -> Result<CgroupHost, SetupError> {
    Ok(host_of(read_layout()?))
}

/// [`detect`], with what only `probe()` and `isolate doctor` show filled in: the limits that fail
/// closed and the parent beneath which they would hold.
pub fn detect_for_probe() -> Result<CgroupHost, SetupError> {
    let layout = read_layout()?;
    let mut host = host_of(layout.clone());
    host.refused = host.refused_limits();
    host.parent_would_hold = parent_that_would_hold(&host, &layout);
    Ok(host)
}

fn read_layout() -> Result<Layout, SetupError> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| SetupError::sys(STEP_CREATE, e.raw_os_error().unwrap_or(libc::EIO), Some(path)));
    Ok(parse_layout(&read("/proc/self/cgroup")?, &read("/proc/self/mountinfo")?))
}

/// [`PARENT_ENV`]'s value, as a process that reads its environment only once fixed it.
static PARENT_FIXED: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();

/// From now on [`detect`] takes `value` for [`PARENT_ENV`] and never reads the environment: the
/// addon, whose threads must not (a getenv there races a setenv of Node's main thread).
pub fn fix_parent_env(value: Option<std::ffi::OsString>) {
    let _ = PARENT_FIXED.set(value);
}

fn parent_env() -> Option<std::ffi::OsString> {
    match PARENT_FIXED.get() {
        Some(fixed) => fixed.clone(),
        None => std::env::var_os(PARENT_ENV),
    }
}

/// The host `layout` shows, beneath the parent [`PARENT_ENV`] names if it does.
fn host_of(layout: Layout) -> CgroupHost {
    let chosen = parent_env().filter(|p| !p.is_empty()).map(|p| {
        // Refused, never taken as unset.
        let text = p.into_string().map_err(|p| format!("{PARENT_ENV}={} is not UTF-8 text, as cgroup paths here are", p.to_string_lossy()))?;
        with_parent(layout.clone(), &text)
    });
    match chosen {
        None => host_from_layout(layout),
        Some(Ok(chosen)) => host_from_layout(chosen),
        // Named but unusable: no sandbox cgroup anywhere else (limits fail closed, saying why).
        Some(Err(why)) => {
            let mut host = host_from_layout(layout);
            host.can_create = false;
            host.reason = Some(why);
            host.parent_refused = true;
            host
        }
    }
}

/// `layout` with the sandbox cgroups' parent the cgroup `parent` ([`PARENT_ENV`]) in place of this
/// process's own: only a cgroup v2 host's, only the own cgroup or one above it (the subtree the
/// caller's cgroup is in: never a cgroup beside it), visible through the mount. Why not, otherwise.
fn with_parent(mut layout: Layout, parent: &str) -> Result<Layout, String> {
    let named = format!("{PARENT_ENV}={parent}");
    // A trailing slash names the same cgroup.
    let parent = if parent.len() > 1 && parent.ends_with('/') { &parent[..parent.len() - 1] } else { parent };
    let parts: Vec<&str> = parent.split('/').skip(1).collect();
    let well_formed = parent.starts_with('/') && (parent == "/" || parts.iter().all(|c| !c.is_empty() && *c != "." && *c != ".." && !c.contains('\n')));
    if !well_formed {
        return Err(format!("{named} is not a cgroup path as /proc/self/cgroup writes them (absolute, no empty, . or .. parts: /system.slice/app.service)"));
    }
    if !layout.v1.is_empty() {
        return Err(format!("{named} names a parent in the cgroup v2 hierarchy, but the limits of this host are cgroup v1's (leave it unset here)"));
    }
    let Some((mount, own, dir, root)) = layout.unified.as_mut() else {
        return Err(format!("{named}, but no cgroup v2 hierarchy is mounted"));
    };
    // A cgroup outside this process's cgroup namespace (`/..`) has no ancestor the namespace shows.
    let own_outside = own.split('/').any(|c| c == "..");
    if own_outside || !(parent == "/" || own == parent || own.starts_with(&format!("{parent}/"))) {
        return Err(format!("{named} is neither this process's cgroup ({own}) nor one above it"));
    }
    let Some(through) = dir_through(mount, root, parent) else {
        return Err(format!("{named} is not visible under {mount}, which shows the cgroups beneath {root}"));
    };
    (*own, *dir) = (parent.to_owned(), Some(through));
    layout.parent_from_env = true;
    Ok(layout)
}

/// Where a limit fails closed beneath this process's own cgroup v2 cgroup (no parent named in
/// [`PARENT_ENV`]): the nearest cgroup above it, delegated to this process, beneath which every
/// limit would hold (it holds no process): what [`PARENT_ENV`] could name. Only up through
/// delegated cgroups, never the hierarchy's root, and never past a cgroup marked as a delegation:
/// above it the tree is its manager's (a user's systemd owns the slices above a `Delegate=yes`
/// scope, writable as they are, and takes back controllers it did not enable there).
/// `isolate doctor` prints it. `layout`: what `host` was found from.
fn parent_that_would_hold(host: &CgroupHost, layout: &Layout) -> Option<String> {
    let u = host.unified.as_ref().filter(|u| host.mode == CgroupMode::V2 && !u.from_env && host.can_create)?;
    if host.refused.is_empty() {
        return None;
    }
    let ancestors = std::iter::successors(Some(u.own_path.clone()), |p| p.rfind('/').filter(|&cut| cut > 0).map(|cut| p[..cut].to_owned())).skip(1);
    let above = ancestors.map_while(|path| {
        let candidate = host_from_layout(with_parent(layout.clone(), &path).ok()?);
        let dir = candidate.unified.as_ref().and_then(|c| c.own_dir.clone());
        Some(Above {
            marked: dir.as_deref().is_some_and(marked_delegation),
            delegated: dir.as_deref().is_some_and(delegated),
            holds: candidate.can_create && candidate.refused_limits().is_empty(),
            path,
        })
    });
    nearest_that_holds(u.own_dir.as_deref().is_some_and(marked_delegation), above)
}

/// A cgroup above the caller's, as [`parent_that_would_hold`] weighs it.
struct Above {
    path: String,
    /// Marked as a delegation's top ([`marked_delegation`]).
    marked: bool,
    delegated: bool,
    /// Every limit would hold beneath it.
    holds: bool,
}

/// The first of `above` (nearest first) beneath which every limit holds, climbing only through
/// delegated cgroups and not past a delegation's top (`own_marked`: the caller's own is one).
fn nearest_that_holds(own_marked: bool, above: impl IntoIterator<Item = Above>) -> Option<String> {
    if own_marked {
        return None;
    }
    for a in above {
        if !a.delegated {
            return None;
        }
        if a.holds {
            return Some(a.path);
        }
        if a.marked {
            return None;
        }
    }
    None
}

/// systemd marks the cgroups it delegates (`Delegate=yes`) with the attribute `trusted.delegate`
/// (`user.delegate` from a user's manager): the top of a delegated subtree.
fn marked_delegation(dir: &str) -> bool {
    let Ok(path) = std::ffi::CString::new(dir) else { return false };
    [c"trusted.delegate", c"user.delegate"].iter().any(|name| {
        let mut value = [0u8; 8];
        // SAFETY: a NUL-terminated path and attribute name; the buffer is ours and its size given.
        let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        n > 0 && value[..n as usize].starts_with(b"1")
    })
}

/// The cgroup directory `dir` is delegated to this process: marked so ([`marked_delegation`]), or,
/// to a caller other than root, given to it (its directory writable).
fn delegated(dir: &str) -> bool {
    marked_delegation(dir) || (!nix::unistd::geteuid().is_root() && may_write(dir))
}

fn host_from_layout(layout: Layout) -> CgroupHost {
    let from_env = layout.parent_from_env;
    let unified = layout.unified.map(|(mount, own_path, own_dir, _)| {
        let file = |name: &str| own_dir.as_ref().map(|d| format!("{d}/{name}")).unwrap_or_default();
        let is_root = own_dir.is_some() && !exists(&file("cgroup.type"));
        let mut u = UnifiedHierarchy {
            is_root,
            controllers: words(&file("cgroup.controllers")),
            subtree_control: words(&file("cgroup.subtree_control")),
            subtree_control_writable: own_dir.is_some() && may_write(&file("cgroup.subtree_control")),
            processes: if is_root { 0 } else { words(&file("cgroup.procs")).len() },
            writable: own_dir.as_deref().is_some_and(may_write),
            procs_writable: own_dir.is_some() && may_write(&file("cgroup.procs")),
            usable: Vec::new(),
            mount,
            own_path,
            own_dir,
            from_env,
        };
        u.usable = u.controllers.iter().filter(|c| matches!(u.availability(c), V2Availability::Enabled | V2Availability::Enableable)).cloned().collect();
        u
    });
    let v1: Vec<V1Hierarchy> = layout
        .v1
        .into_iter()
        .map(|(controllers, mount, own_path, own_dir)| V1Hierarchy {
            writable: own_dir.as_deref().is_some_and(may_write),
            controllers,
            mount,
            own_path,
            own_dir,
        })
        .collect();
    let mode = match (&unified, v1.is_empty()) {
        (Some(_), true) => CgroupMode::V2,
        (Some(_), false) => CgroupMode::Hybrid,
        (None, false) => CgroupMode::V1,
        (None, true) => CgroupMode::Unavailable,
    };
    let mut host = CgroupHost {
        mode,
        unified,
        v1,
        swap_accounting: None,
        can_create: false,
        reason: None,
        parent_refused: false,
        refused: Vec::new(),
        parent_would_hold: None,
    };
    host.swap_accounting = match mode {
        CgroupMode::V2 => host.unified.as_ref().filter(|u| !u.is_root).and_then(|u| u.own_dir.as_ref()).map(|d| exists(&format!("{d}/memory.swap.max"))),
        CgroupMode::V1 | CgroupMode::Hybrid => {
            host.v1_hierarchy("memory").and_then(|h| h.own_dir.as_ref()).map(|d| exists(&format!("{d}/memory.memsw.limit_in_bytes")))
        }
        CgroupMode::Unavailable => None,
    };
    let (can, reason) = match mode {
        CgroupMode::Unavailable => (false, Some("no cgroup filesystem is mounted".to_owned())),
        CgroupMode::V2 => {
            let u = host.unified.as_ref().expect("v2 mode has the unified hierarchy");
            match &u.own_dir {
                None => (false, Some(format!("this process's cgroup {} is not visible under {}", u.own_path, u.mount))),
                Some(d) if !u.writable => (false, Some(format!("{d} is not writable by this process (no delegation)"))),
                Some(d) if !u.procs_writable => (false, Some(format!("{d}/cgroup.procs is not writable by this process (no delegation)"))),
                Some(_) => (true, None),
            }
        }
        CgroupMode::V1 | CgroupMode::Hybrid => {
            let used = ["memory", "pids", "cpu", "cpuacct", "freezer"];
            if host.v1.iter().any(|h| h.writable && h.controllers.iter().any(|c| used.contains(&c.as_str()))) {
                (true, None)
            } else {
                (false, Some("no v1 hierarchy of memory, pids, cpu, cpuacct or freezer is writable by this process here".to_owned()))
            }
        }
    };
    host.can_create = can;
    host.reason = reason;
    host
}

// ---------------------------------------------------------------------------------------------
// The plan

/// The limits enforced through cgroups (the rest, such as cpu time and open files, are rlimits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupLimits {
    /// Memory, with swap off.
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// A fraction of cores: 0.5 is half a core's time per period, 2 is two cores'.
    pub cpus: Option<f64>,
    /// The sandbox's CPU time is counted (cpuTimeMs): v2 counts it in every cgroup, v1 only with
    /// the cpuacct controller, without which the limit would never be reached.
    #[serde(default)]
    pub cpu_time: bool,
}

impl CgroupLimits {
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.pids.is_none() && self.cpus.is_none() && !self.cpu_time
    }

    /// The options that asked for these limits, as the caller wrote them.
    pub fn options(&self) -> Vec<&'static str> {
        let given = [self.memory_bytes.is_some(), self.pids.is_some(), self.cpus.is_some(), self.cpu_time];
        LIMIT_CONTROLLERS.iter().zip(given).filter(|(_, given)| *given).map(|((option, _), _)| *option).collect()
    }
}

/// One write into the sandbox cgroup's directory for `controller`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    /// Skipped when the kernel has no such file (swap accounting compiled out or disabled).
    pub optional: bool,
}

fn write(controller: Controller, file: &'static str, value: impl ToString, optional: bool) -> CgroupWrite {
    CgroupWrite { controller, file, value: value.to_string(), optional }
}

fn invalid(message: String) -> SetupError {
    SetupError::new(STEP_WRITE_LIMITS, message)
}

fn cpu_quota_us(cpus: f64) -> Result<u64, SetupError> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(invalid(format!("cpus must be a positive number of cores, not {cpus}")));
    }
    let quota = (cpus * CPU_PERIOD_US as f64).round();
    if quota < CPU_MIN_QUOTA_US as f64 {
        return Err(invalid(format!("cpus {cpus} is below the kernel's smallest quota (0.01 of a core)")));
    }
    Ok(quota as u64)
}

/// Why a controller cannot be had, as the hint of a fail-closed error.
fn missing_hint(host: &CgroupHost, controller: &str) -> (String, Option<String>) {
    let v1_mount = |c: &str| {
        format!(
            "cgroup v1: the `{c}` controller is not mounted; mount it (`mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}`; if /proc/cgroups shows it disabled, boot with cgroup_enable={c}), or boot with cgroup v2 only (systemd.unified_cgroup_hierarchy=1)"
        )
    };
    match host.mode {
        CgroupMode::Unavailable => (
            "no cgroup filesystem is mounted".to_owned(),
            Some("mount cgroup v2 (`mount -t cgroup2 none /sys/fs/cgroup`), or run where /sys/fs/cgroup is mounted".to_owned()),
        ),
        CgroupMode::V1 | CgroupMode::Hybrid => match host.v1_hierarchy(controller) {
            None => (format!("the {controller} cgroup controller is not mounted"), Some(v1_mount(controller))),
            Some(h) if h.own_dir.is_some() && !h.writable => (
                format!("this process may not create {controller} cgroups in {}", h.own_dir.as_deref().unwrap_or_default()),
                Some("cgroup v1 lets root create cgroups (or a user for whom an administrator made one); run as root".to_owned()),
            ),
            Some(h) => (
                format!("this process's {controller} cgroup {} is not visible under {}", h.own_path, h.mount),
                Some(format!(
                    "mount the {controller} hierarchy's root (or run in the cgroup the mount shows), e.g. a container started with a private cgroup namespace"
                )),
            ),
        },
        CgroupMode::V2 => {
            let u = host.unified.as_ref().expect("v2 mode has the unified hierarchy");
            let own = u.own_dir.clone().unwrap_or_else(|| u.own_path.clone());
            // One text for every controller, so that the hints of several limits read it once. At
            // the root of a cgroup namespace that is not the hierarchy's (a container's own
            // cgroup) nothing above is visible to name: the caller moves first.
            // (Also with the variable naming "/" itself: the cgroup still holds processes.)
            let no_internal_process = if u.own_path == "/" && !u.is_root {
                format!("the root of this process's cgroup namespace (a container's cgroup) holds processes, this one included, and cgroup v2 lets such a cgroup give memory, pids or cpu to its child cgroups only while it holds none (the no-internal-process rule); isolate neither moves the caller's processes nor restructures its cgroup: with a writable cgroupfs, have the container's entrypoint move itself into a child cgroup first, before it starts anything (`mkdir {m}/main && echo $$ > {m}/main/cgroup.procs`, then `exec node ...`), and set {PARENT_ENV}=/, or run without these limits", m = u.mount)
            } else {
                format!("cgroup v2 lets a cgroup other than the hierarchy's root give memory, pids or cpu to its child cgroups only while it holds no processes (the no-internal-process rule; for cpu and pids the kernel would instead turn it into a thread root), and isolate neither moves the caller's processes nor restructures its cgroup; name a cgroup above the caller's that holds no process and is delegated to it in {PARENT_ENV} (systemd: Delegate=yes with DelegateSubgroup=, the cgroup of the service; as root where no manager owns the hierarchy, such as a VM's or a container's own without systemd, {PARENT_ENV}=/ also does: the root is exempt from the rule), run the caller where its cgroup is the hierarchy's root (a VM or a dedicated machine), or run without these limits")
            };
            match u.availability(controller) {
                V2Availability::Enabled | V2Availability::Enableable => (format!("the {controller} controller is usable"), None),
                V2Availability::NotDelegated if u.is_root => (
                    format!("the {controller} cgroup controller is not available in {own} (cgroup.controllers)"),
                    Some(format!("at the hierarchy's root, this kernel offers no {controller} controller (not built, or turned off with cgroup_disable= on its command line)")),
                ),
                // Delegating it would not do: the caller's own cgroup holds the caller.
                V2Availability::NotDelegated => (
                    format!("the {controller} cgroup controller is not available in {own} (cgroup.controllers)"),
                    Some(format!("delegating it would not be enough: {no_internal_process}")),
                ),
                V2Availability::NoInternalProcess => (
                    format!("the {controller} cgroup controller cannot be enabled for the children of {own}: it holds {} process(es), this one included", u.processes),
                    Some(no_internal_process),
                ),
                // Only where the rule above does not apply: the hierarchy's root, which only root may write.
                V2Availability::NotWritable => (
                    format!("the {controller} cgroup controller is not enabled in {own}/cgroup.subtree_control, which this process may not write"),
                    Some(format!("as root, add `+{controller}` to {own}/cgroup.subtree_control, or run the caller as root")),
                ),
                V2Availability::Unreachable => (
                    format!("this process's cgroup {} is not visible under {}", u.own_path, u.mount),
                    Some("mount the cgroup2 hierarchy so that this process's cgroup is visible (a private cgroup namespace does this)".to_owned()),
                ),
            }
        }
    }
}

/// Every file [`plan_writes`] may write, by controller: what a cgroup made ahead opens ahead.
fn limit_files(v2: bool) -> &'static [(Controller, &'static str)] {
    if v2 {
        &[(Controller::Memory, "memory.max"), (Controller::Memory, "memory.swap.max"), (Controller::Pids, "pids.max"), (Controller::Cpu, "cpu.max")]
    } else {
        &[
            (Controller::Memory, "memory.limit_in_bytes"),
            (Controller::Memory, "memory.memsw.limit_in_bytes"),
            (Controller::Memory, "memory.swappiness"),
            (Controller::Memory, "memory.kmem.tcp.limit_in_bytes"),
            (Controller::Pids, "pids.max"),
            (Controller::Cpu, "cpu.cfs_period_us"),
            (Controller::Cpu, "cpu.cfs_quota_us"),
        ]
    }
}

/// The writes that put `limits` on a fresh sandbox cgroup of `host`, in order. Fails closed, naming
/// every missing controller, when a limit cannot be enforced here.
pub fn plan_writes(host: &CgroupHost, limits: &CgroupLimits) -> Result<Vec<CgroupWrite>, SetupError> {
    if limits.memory_bytes == Some(0) {
        return Err(invalid("memoryBytes must be more than 0".to_owned()));
    }
    if limits.pids == Some(0) {
        return Err(invalid("pids must be at least 1".to_owned()));
    }
    let quota = limits.cpus.map(cpu_quota_us).transpose()?;
    let mut wanted = Vec::new();
    if limits.memory_bytes.is_some() {
        wanted.push("memory");
    }
    if limits.pids.is_some() {
        wanted.push("pids");
    }
    if limits.cpus.is_some() {
        wanted.push("cpu");
    }
    if limits.cpu_time {
        wanted.push("cpuacct");
    }
    let v2 = host.mode.uses_v2();
    let missing: Vec<&str> = wanted.iter().copied().filter(|c| !host.usable(c)).collect();
    if !missing.is_empty() {
        let parts: Vec<(String, Option<String>)> = missing.iter().map(|c| missing_hint(host, c)).collect();
        let mut message = format!("cannot enforce the asked limits: missing cgroup controller(s) {}: ", missing.join(", "));
        message.push_str(&parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join("; "));
        let mut hints: Vec<String> = parts.into_iter().filter_map(|p| p.1).collect();
        hints.dedup();
        hints.push("`isolate doctor` says which limits hold here".to_owned());
        let mut e = SetupError::new(STEP_CREATE, message);
        if !hints.is_empty() {
            e = e.with_hint(hints.join("; "));
        }
        let path = match host.mode {
            CgroupMode::V2 => host.unified.as_ref().and_then(|u| u.own_dir.clone()),
            _ => None,
        };
        if let Some(p) = path {
            e = e.with_path(p);
        }
        return Err(e);
    }
    let mut plan = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        if v2 {
            plan.push(write(Controller::Memory, "memory.max", bytes, false));
            plan.push(write(Controller::Memory, "memory.swap.max", 0, true));
        } else {
            // limit before memsw: the kernel keeps memsw >= limit at every step.
            plan.push(write(Controller::Memory, "memory.limit_in_bytes", bytes, false));
            if host.swap_accounting == Some(true) {
                plan.push(write(Controller::Memory, "memory.memsw.limit_in_bytes", bytes, false));
            }
            // On v1, swappiness 0 keeps limit reclaim from swapping even without memsw.
            plan.push(write(Controller::Memory, "memory.swappiness", 0, true));
            // v1 charges TCP buffers to a counter of their own, and counts them at all only once
            // it has a limit: without one, loopback connections that nobody reads pin host memory
            // far past limit_in_bytes. (v2 charges them to memory.max.)
            plan.push(write(Controller::Memory, "memory.kmem.tcp.limit_in_bytes", bytes, true));
        }
    }
    if let Some(n) = limits.pids {
        plan.push(write(Controller::Pids, "pids.max", n, false));
    }
    if let Some(q) = quota {
        if v2 {
            plan.push(write(Controller::Cpu, "cpu.max", format!("{q} {CPU_PERIOD_US}"), false));
        } else {
            plan.push(write(Controller::Cpu, "cpu.cfs_period_us", CPU_PERIOD_US, false));
            plan.push(write(Controller::Cpu, "cpu.cfs_quota_us", q, false));
        }
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// The sandbox cgroup

static NEXT: AtomicU64 = AtomicU64::new(0);
/// The process whose counter [`NEXT`] is (a forked helper starts with its server's).
static NEXT_FOR: AtomicU32 = AtomicU32::new(0);
/// When that process started ([`sys::own_start_time`]; 0 where /proc does not say, which the
/// sweeps read as unknown).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// `isolate-<pid>-<start>-<counter>`, after the helper that makes it: its pid and when it
/// started (which process has that pid: a pid is given again once its process is reaped, and
/// processes of other pid namespaces have theirs), so that a sweep of what a killed helper left
/// ([`remove_left_by`], [`remove_left_by_the_dead`]) never takes a live helper's cgroup (across
/// pid namespaces, where a pid names another process, the lock of [`make_held`] tells). The
/// counter starts, in each process, at a random number: two helpers of one pid and one clock
/// tick (in two pid namespaces) still name theirs apart.
pub fn unique_name() -> String {
    let pid = std::process::id();
    if NEXT_FOR.load(Ordering::Acquire) != pid {
        let mut bytes = [0u8; 8];
        // SAFETY: getrandom into a buffer of ours, of its length. Without it (ENOSYS), the time.
        let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) } == bytes.len() as isize;
        let seed =
            if got { u64::from_ne_bytes(bytes) } else { std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) };
        // 40 bits: at most 13 digits, room left for every sandbox a helper could make.
        NEXT.store(seed >> 24, Ordering::Relaxed);
        STARTED.store(sys::own_start_time().unwrap_or(0), Ordering::Relaxed);
        // Last: a thread that sees it sees both (two threads at once may both seed: names apart all the same).
        NEXT_FOR.store(pid, Ordering::Release);
    }
    format!("isolate-{pid}-{}-{}", STARTED.load(Ordering::Relaxed), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Write one value with one write(2), to an existing file only (cgroupfs has no O_CREAT).
fn write_file(path: &str, value: &str) -> Result<(), i32> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| errno_of(&e))?;
    f.write_all(value.as_bytes()).map_err(|e| errno_of(&e))
}

fn read_file(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The value of `key` in a flat-keyed file ("key value" lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What the sandbox used, from the cgroup's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    /// Whether the cgroup counted the CPU time (v2's cpu.stat, v1's cpuacct): without that the
    /// two above are 0, not a count, and the init's reaped usage is the better figure.
    #[serde(skip)]
    pub cpu_counted: bool,
    /// The high-water mark of the cgroup's memory (0 without the memory controller).
    pub peak_memory_bytes: u64,
    /// Processes the kernel OOM-killed inside the sandbox.
    pub oom_kills: u64,
    /// Forks refused by the pids limit (`pids.events` max).
    pub pids_limit_hits: u64,
}

/// How the processes of a sandbox cgroup end when they outlive the process that started them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// They share a pid namespace with that process, its init (every sandbox has one: validation
    /// refuses `namespaces.pid: false`): the kernel kills them when the init dies, and nothing
    /// can fork into that namespace after. Its cgroup is empty once the init is reaped, so on v1
    /// a freezer directory would be made, joined and removed for nothing on every start.
    WithInit,
    /// Anything may outlive it (daemonized, in the caller's pid namespace): on v1 the freezer holds
    /// them still while each is killed, so none forks between the listing and the kill.
    Frozen,
}

#[derive(Debug)]
struct Dir {
    path: String,
    controllers: Vec<Controller>,
    /// The directory, open and flock'ed while it is ours ([`make_held`]); None only in tests.
    held: Option<OwnedFd>,
}

/// A sandbox's cgroup: one directory on v2, one per hierarchy used on v1. Removed by
/// [`SandboxCgroup::remove`], or on drop (best effort), ending whatever still runs in it.
#[derive(Debug)]
pub struct SandboxCgroup {
    name: String,
    v2: bool,
    dirs: Vec<Dir>,
    /// The largest `memory.current` seen, for kernels without `memory.peak`.
    peak_seen: AtomicU64,
    /// The counter files [`SandboxCgroup::usage`] reads, kept open once opened
    /// ([`SandboxCgroup::open_counters`]): the sandbox's end then costs one pread per counter,
    /// not a path walk through cgroupfs and an open, stat and close.
    counters: Mutex<Vec<(String, OwnedFd)>>,
    /// A cgroup made ahead ([`SandboxCgroup::prepare`]): every file a limit may go to, opened
    /// ahead, so that the limits known at the spec are one write each.
    limit_files: Mutex<Vec<(String, OwnedFd)>>,
    removed: bool,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.starts_with("cgroup.")
        && !name.bytes().any(|b| b == b'/' || b == b'\n' || b == 0)
}

fn mkdir(path: &str) -> Result<(), SetupError> {
    nix::unistd::mkdir(path, nix::sys::stat::Mode::from_bits_truncate(0o755)).map_err(|e| {
        let err = SetupError::sys(STEP_CREATE, e as i32, Some(path));
        match e {
            Errno::EEXIST => err.with_hint("a cgroup of this name already exists (left by a process that died?); choose another name"),
            Errno::EACCES | Errno::EPERM | Errno::EROFS => err.with_hint(
                format!("this process may not create cgroups here: cgroup v2 needs the cgroup delegated to this user (systemd Delegate=yes), which allows cpuTimeMs (memory, pids and cpu also need a cgroup that holds no process: the hierarchy's root, or one above the caller's named in {PARENT_ENV}); cgroup v1 needs root or a cgroup an administrator created for this user; `isolate doctor` says which limits hold here"),
            ),
            _ => err,
        }
    })
}

/// Make the cgroup directory `path` and hold it: open, with an exclusive flock kept while the
/// cgroup is ours (its descriptor is close-on-exec, and every child of a helper closes what it was
/// not handed). A sweep of what dead helpers left ([`remove_left_by_the_dead`]) judges a helper by
/// the pid in a cgroup's name, which in another pid namespace (a service in a container sharing
/// the parent cgroup) is another process's or none; a lock is held exactly as long as its holder
/// lives, so the sweep passes over a held cgroup, empty or not.
fn make_held(path: &str) -> Result<OwnedFd, SetupError> {
    // A sweeper that took the new directory between the mkdir and our lock removes it while it
    // holds the lock: one found gone once locked is made again.
    for _ in 0..3 {
        mkdir(path)?;
        let fd = match open_dir(path) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(SetupError::sys(STEP_CREATE, e as i32, Some(path))),
        };
        // Blocking: a sweeper holds it only for its rmdir.
        // SAFETY: flock(2) on our own descriptor.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::LOCK_EX) } != 0 {
            return Err(SetupError::sys(STEP_CREATE, Errno::last() as i32, Some(path)));
        }
        if nix::sys::stat::fstatat(&fd, "cgroup.procs", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            return Ok(fd);
        }
    }
    Err(SetupError::sys(STEP_CREATE, libc::ENOENT, Some(path))
        .with_hint("the new cgroup was removed as soon as it was made, three times: another process sweeps this cgroup's children"))
}

/// A sweep's hold on a cgroup it may remove: None while a living process holds it ([`make_held`]).
fn try_hold(path: &str) -> Option<OwnedFd> {
    let fd = open_dir(path).ok()?;
    // SAFETY: flock(2) on our own descriptor.
    (unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::LOCK_EX | libc::LOCK_NB) } == 0).then_some(fd)
}

fn open_dir(path: &str) -> nix::Result<OwnedFd> {
    nix::fcntl::open(path, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
}

fn write_hint(err: SetupError, file: &str, errno: i32) -> SetupError {
    match (file, Errno::from_raw(errno)) {
        (f, Errno::EINVAL) if f.starts_with("cpu.") => err.with_hint("the kernel refused this cpu quota: give cpus between 0.01 and the number of cores"),
        (f, Errno::EBUSY) if f.starts_with("memory.") => err.with_hint("the memory limit is below what the cgroup already uses"),
        ("cgroup.subtree_control", Errno::EBUSY) => err.with_hint(
            format!("cgroup v2's no-internal-process rule: this cgroup holds processes, so domain controllers cannot be enabled for its children; isolate does not move the caller's processes (name a cgroup above the caller's that holds none in {PARENT_ENV})"),
        ),
        ("cgroup.subtree_control", Errno::EACCES | Errno::EPERM) => err.with_hint(format!("this process may not enable controllers for its cgroup's children; even where it may (a cgroup delegated to it), a cgroup that holds the caller gives its children no memory, pids or cpu (the no-internal-process rule): run the caller as root where its cgroup is the hierarchy's root, or name a delegated cgroup above the caller's that holds no process in {PARENT_ENV}")),
        _ => err,
    }
}

impl SandboxCgroup {
    /// Create the sandbox cgroup `name` beneath this process's own cgroup and apply `limits`. On
    /// any failure nothing created is left behind.
    pub fn create(host: &CgroupHost, name: &str, limits: &CgroupLimits, ending: Ending) -> Result<SandboxCgroup, SetupError> {
        let plan = plan_writes(host, limits)?;
        let mut needed: Vec<Controller> = plan.iter().map(|w| w.controller).collect();
        // Counting CPU time writes nothing, but on v1 it is required all the same.
        if limits.cpu_time && !host.mode.uses_v2() {
            needed.push(Controller::Cpuacct);
        }
        needed.sort();
        needed.dedup();
        let cg = SandboxCgroup::create_dirs(host, name, &needed, ending)?;
        // From here on a failure drops `cg`, which removes what was created.
        cg.write_plan(&plan)?;
        Ok(cg)
    }

    /// A sandbox cgroup made ahead of its sandbox, with every controller a limit could need that
    /// this host lets it have (on v2 enabled for the own cgroup's children now, as a cold start
    /// needing it would) and no limit yet ([`SandboxCgroup::apply_limits`] sets them once they
    /// are known; [`SandboxCgroup::covers`] says whether it can).
    pub fn prepare(host: &CgroupHost, name: &str, ending: Ending) -> Result<SandboxCgroup, SetupError> {
        let all = [Controller::Memory, Controller::Pids, Controller::Cpu].into_iter();
        let offered: Vec<Controller> = match host.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => all.filter(|c| host.v1_hierarchy(c.as_str()).is_some_and(|h| h.own_dir.is_some() && h.writable)).collect(),
            CgroupMode::V2 => {
                let u = host.unified.as_ref().expect("v2 mode has the unified hierarchy");
                all.filter(|c| matches!(u.availability(c.as_str()), V2Availability::Enabled | V2Availability::Enableable)).collect()
            }
            CgroupMode::Unavailable => Vec::new(),
        };
        let cg = SandboxCgroup::create_dirs(host, name, &offered, ending)?;
        cg.open_limit_files();
        Ok(cg)
    }

    /// Open every limit file of this cgroup's controllers ([`limit_files`]) for writing.
    fn open_limit_files(&self) {
        let mut open = self.limit_files.lock().unwrap_or_else(|e| e.into_inner());
        for &(c, name) in limit_files(self.v2) {
            let Some(path) = self.file(c, name) else { continue };
            if let Ok(fd) = nix::fcntl::open(path.as_str(), nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) {
                open.push((path, fd));
            }
        }
    }

    /// One value in one write(2): to the file's fd opened ahead, else by its path.
    fn write_limit(&self, path: &str, value: &str) -> Result<(), i32> {
        let open = self.limit_files.lock().unwrap_or_else(|e| e.into_inner());
        match open.iter().find(|(p, _)| p == path) {
            Some((_, fd)) => match nix::sys::uio::pwrite(fd, value.as_bytes(), 0) {
                Ok(n) if n == value.len() => Ok(()),
                Ok(_) => Err(libc::EIO),
                Err(e) => Err(e as i32),
            },
            None => write_file(path, value),
        }
    }

    /// Whether [`SandboxCgroup::apply_limits`] can put `limits` on this cgroup: it has the
    /// directory of every controller they need.
    pub fn covers(&self, host: &CgroupHost, limits: &CgroupLimits) -> bool {
        let counts_cpu = !limits.cpu_time || self.v2 || self.dir_of(Controller::Cpuacct).is_some();
        counts_cpu && plan_writes(host, limits).is_ok_and(|plan| plan.iter().all(|w| self.dir_of(w.controller).is_some()))
    }

    /// Put `limits` on a cgroup made by [`SandboxCgroup::prepare`]. Fails closed, as
    /// [`SandboxCgroup::create`] does, when a limit's controller is missing here.
    pub fn apply_limits(&self, host: &CgroupHost, limits: &CgroupLimits) -> Result<(), SetupError> {
        let plan = plan_writes(host, limits)?;
        self.write_plan(&plan)
    }

    fn create_dirs(host: &CgroupHost, name: &str, needed: &[Controller], ending: Ending) -> Result<SandboxCgroup, SetupError> {
        if !valid_name(name) {
            return Err(SetupError::new(STEP_CREATE, format!("invalid cgroup name {name:?}")));
        }
        let mut cg = SandboxCgroup {
            name: name.to_owned(),
            v2: host.mode.uses_v2(),
            dirs: Vec::new(),
            peak_seen: AtomicU64::new(0),
            counters: Mutex::new(Vec::new()),
            limit_files: Mutex::new(Vec::new()),
            removed: false,
        };
        match host.mode {
            CgroupMode::Unavailable => {
                return Err(SetupError::new(STEP_CREATE, "no cgroup filesystem is mounted").with_hint(missing_hint(host, "memory").1.unwrap_or_default()))
            }
            CgroupMode::V2 => cg.create_v2(host, needed)?,
            CgroupMode::V1 | CgroupMode::Hybrid => cg.create_v1(host, needed, ending)?,
        }
        cg.open_counters();
        Ok(cg)
    }

    fn write_plan(&self, plan: &[CgroupWrite]) -> Result<(), SetupError> {
        for w in plan {
            let Some(dir) = self.dir_of(w.controller) else {
                return Err(SetupError::new(STEP_WRITE_LIMITS, format!("no cgroup directory for the {} controller", w.controller.as_str())));
            };
            let path = format!("{dir}/{}", w.file);
            match self.write_limit(&path, &w.value) {
                Ok(()) => {}
                Err(libc::ENOENT) if w.optional => {}
                Err(errno) => {
                    let e = SetupError::sys(STEP_WRITE_LIMITS, errno, Some(&path));
                    return Err(write_hint(e, w.file, errno));
                }
            }
        }
        Ok(())
    }

    fn create_v2(&mut self, host: &CgroupHost, needed: &[Controller]) -> Result<(), SetupError> {
        let u = host.unified.as_ref().expect("v2 mode has the unified hierarchy");
        let own = u.own_dir.as_deref().ok_or_else(|| {
            let (m, h) = missing_hint(host, "memory");
            SetupError::new(STEP_CREATE, m).with_hint(h.unwrap_or_default())
        })?;
        // Controllers the limits need that the own cgroup does not yet give its children. The
        // plan vouched that they can be enabled: only in the root cgroup (or one without processes).
        let enable: Vec<String> = needed.iter().map(|c| c.as_str()).filter(|c| !u.subtree_control.iter().any(|s| s == c)).map(|c| format!("+{c}")).collect();
        if !enable.is_empty() {
            let path = format!("{own}/cgroup.subtree_control");
            write_file(&path, &enable.join(" "))
                .map_err(|errno| write_hint(SetupError::sys(STEP_CREATE, errno, Some(&path)), "cgroup.subtree_control", errno))?;
        }
        let path = format!("{own}/{}", self.name);
        let held = make_held(&path)?;
        // Memory and pids are accounted whenever the own cgroup gives them, limit or not.
        let mut controllers: Vec<Controller> = [Controller::Memory, Controller::Pids, Controller::Cpu]
            .into_iter()
            .filter(|c| needed.contains(c) || u.subtree_control.iter().any(|s| s == c.as_str()))
            .collect();
        controllers.sort();
        self.dirs.push(Dir { path: path.clone(), controllers, held: Some(held) });
        // A cgroup that holds processes and gives threaded controllers (cpu, pids) to its children
        // is a thread root: its new children are "domain invalid" and could take processes only
        // as threaded cgroups, which have no cgroup.kill, no cgroup.procs to read and no domain
        // controllers. Fail closed instead of building a sandbox on that.
        let type_file = format!("{path}/cgroup.type");
        if read_file(&type_file).is_some_and(|t| t.trim() == "domain invalid") {
            return Err(SetupError::new(STEP_CREATE, format!("{own} is a cgroup v2 thread root (it holds processes and enables threaded controllers for its children), so a child cgroup cannot hold a sandbox"))
                .with_path(own.to_owned())
                .with_hint(format!("remove the threaded controllers from {own}/cgroup.subtree_control, or run the caller in a cgroup that does not enable controllers for its children")));
        }
        Ok(())
    }

    fn create_v1(&mut self, host: &CgroupHost, needed: &[Controller], ending: Ending) -> Result<(), SetupError> {
        // Limits need their controllers; accounting (memory, pids, cpuacct) and the freezer (where
        // processes may outlive the init) are taken where this process may have them.
        let all = [Controller::Memory, Controller::Pids, Controller::Cpu, Controller::Cpuacct, Controller::Freezer];
        for c in all {
            let required = needed.contains(&c);
            if (c == Controller::Cpu && !required) || (c == Controller::Freezer && ending == Ending::WithInit) {
                continue;
            }
            let Some(h) = host.v1_hierarchy(c.as_str()) else { continue };
            let Some(own) = &h.own_dir else { continue };
            let path = format!("{own}/{}", self.name);
            if let Some(d) = self.dirs.iter_mut().find(|d| d.path == path) {
                d.controllers.push(c); // a merged hierarchy such as cpu,cpuacct
                continue;
            }
            if !required && !h.writable {
                continue;
            }
            match make_held(&path) {
                Ok(held) => self.dirs.push(Dir { path, controllers: vec![c], held: Some(held) }),
                // Accounting and the freezer are taken where this process may have them.
                Err(e) if !required && matches!(e.errno.as_deref(), Some("EACCES" | "EPERM" | "EROFS")) => {}
                Err(e) => return Err(e),
            }
        }
        if self.dirs.is_empty() {
            return Err(SetupError::new(STEP_CREATE, "no cgroup v1 hierarchy of memory, pids, cpuacct or freezer could be used")
                .with_hint("run as root; `isolate doctor` says which limits hold here"));
        }
        Ok(())
    }

    fn dir_of(&self, c: Controller) -> Option<&str> {
        self.dirs.iter().find(|d| d.controllers.contains(&c)).map(|d| d.path.as_str())
    }

    /// v2: the one directory holds every file; v1: the directory of `c`'s hierarchy.
    fn file(&self, c: Controller, name: &str) -> Option<String> {
        let dir = if self.v2 { self.dirs.first().map(|d| d.path.as_str()) } else { self.dir_of(c) }?;
        Some(format!("{dir}/{name}"))
    }

    /// v2 `cgroup.kill`, when the kernel has it (5.14+).
    fn kill_file(&self) -> Option<String> {
        let dir = self.dirs.first().filter(|_| self.v2)?;
        Some(format!("{}/cgroup.kill", dir.path)).filter(|p| exists(p))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// Every directory created, one per hierarchy.
    pub fn paths(&self) -> Vec<&str> {
        self.dirs.iter().map(|d| d.path.as_str()).collect()
    }

    /// The controllers the sandbox cgroup has (limited or accounted).
    pub fn controllers(&self) -> Vec<Controller> {
        let mut v: Vec<Controller> = self.dirs.iter().flat_map(|d| d.controllers.iter().copied()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// An `O_DIRECTORY` fd on the v2 cgroup, for `clone3(CLONE_INTO_CGROUP)`: the child starts
    /// inside the cgroup, with no migration to pay for. None on v1.
    pub fn dir_fd_v2(&self) -> Option<BorrowedFd<'_>> {
        self.dirs.first().filter(|_| self.v2).and_then(|d| d.held.as_ref()).map(|f| f.as_fd())
    }

    /// Move `pid` (the whole thread group) into the sandbox cgroup, in every hierarchy. Do it
    /// before the process runs anything of the command.
    pub fn attach(&self, pid: i32) -> Result<(), SetupError> {
        if pid <= 0 {
            return Err(SetupError::new(STEP_ATTACH, format!("invalid pid {pid}")));
        }
        let value = pid.to_string();
        for d in &self.dirs {
            let path = format!("{}/cgroup.procs", d.path);
            write_file(&path, &value).map_err(|errno| {
                let e = SetupError::sys(STEP_ATTACH, errno, Some(&path));
                match Errno::from_raw(errno) {
                    Errno::EACCES | Errno::EPERM => e.with_hint(
                        "moving a process needs write access to cgroup.procs of the common ancestor (this process's own cgroup): delegate it to this user",
                    ),
                    Errno::ESRCH => e.with_hint("the process is gone"),
                    _ => e,
                }
            })?;
        }
        Ok(())
    }

    /// The processes in the cgroup and in any cgroup below it (as this process's pid namespace
    /// numbers them; 0 for one outside it), in every hierarchy.
    pub fn pids(&self) -> Vec<i32> {
        self.list().unwrap_or_default()
    }

    fn list(&self) -> Result<Vec<i32>, SetupError> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            for dir in subtree(&d.path) {
                pids.extend(procs_in(&dir).map_err(|errno| SetupError::sys(STEP_KILL, errno, Some(&format!("{dir}/cgroup.procs"))))?);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// What the sandbox used so far; counters that the kernel lacks read as 0.
    /// Every counter file [`SandboxCgroup::usage`] reads, by the directory it is in.
    fn counter_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.v2 {
            out.extend(self.file(Controller::Cpu, "cpu.stat"));
            if self.controllers().contains(&Controller::Memory) {
                out.extend(["memory.current", "memory.peak", "memory.events"].iter().filter_map(|f| self.file(Controller::Memory, f)));
            }
        } else {
            if let Some(dir) = self.dir_of(Controller::Cpuacct) {
                out.extend(["cpuacct.usage", "cpuacct.usage_user", "cpuacct.usage_sys"].iter().map(|f| format!("{dir}/{f}")));
            }
            if let Some(dir) = self.dir_of(Controller::Memory) {
                out.extend(["memory.max_usage_in_bytes", "memory.oom_control"].iter().map(|f| format!("{dir}/{f}")));
            }
        }
        out.extend(self.file(Controller::Pids, "pids.events"));
        out
    }

    /// Open the counters now (a warm helper: ahead of its sandbox), so that reading them later is
    /// one pread each. One missing (an older kernel's) is opened, and missed, at each read.
    fn open_counters(&self) {
        let mut open = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for path in self.counter_paths() {
            if !open.iter().any(|(p, _)| *p == path) {
                if let Ok(fd) = nix::fcntl::open(path.as_str(), nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) {
                    open.push((path, fd));
                }
            }
        }
    }

    /// A counter file's text, from its open fd where there is one (cgroupfs regenerates the text
    /// on every read at offset 0).
    fn read_counter(&self, path: &str) -> Option<String> {
        let open = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, fd)) = open.iter().find(|(p, _)| p == path) else { return read_file(path) };
        let mut buf = [0u8; 512];
        let n = nix::sys::uio::pread(fd, &mut buf, 0).ok()?;
        // Every counter file here is short; a longer one is read whole from its path.
        if n == buf.len() {
            return read_file(path);
        }
        String::from_utf8(buf[..n].to_vec()).ok()
    }

    fn read_counter_u64(&self, path: &str) -> Option<u64> {
        self.read_counter(path)?.trim().parse().ok()
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        let (file, name) = if self.v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        // v1's oom_kill counter is there since 4.13.
        self.file(Controller::Memory, file).and_then(|p| self.read_counter(&p)).and_then(|text| keyed(&text, name)).unwrap_or(0)
    }

    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        if self.v2 {
            if let Some(stat) = self.file(Controller::Cpu, "cpu.stat").and_then(|p| self.read_counter(&p)) {
                u.cpu_user_ms = keyed(&stat, "user_usec").unwrap_or(0) / 1000;
                u.cpu_system_ms = keyed(&stat, "system_usec").unwrap_or(0) / 1000;
                u.cpu_counted = true;
            }
            if self.controllers().contains(&Controller::Memory) {
                let current = self.file(Controller::Memory, "memory.current").and_then(|p| self.read_counter_u64(&p)).unwrap_or(0);
                let seen = self.peak_seen.fetch_max(current, Ordering::Relaxed).max(current);
                // memory.peak: 5.19+; before that, the largest memory.current seen by usage().
                let peak = self.file(Controller::Memory, "memory.peak").and_then(|p| self.read_counter_u64(&p));
                u.peak_memory_bytes = peak.unwrap_or(seen).max(seen);
                u.oom_kills = self.oom_kills();
            }
        } else {
            if let Some(dir) = self.dir_of(Controller::Cpuacct) {
                // cpuacct.usage is exact (the scheduler adds every stretch a task ran); its split
                // into user and system time is sampled at each timer tick, which a program that
                // runs only between ticks escapes. So the total is the exact one, split as the
                // ticks saw it.
                let total = self.read_counter_u64(&format!("{dir}/cpuacct.usage"));
                let user = self.read_counter_u64(&format!("{dir}/cpuacct.usage_user"));
                let sys = self.read_counter_u64(&format!("{dir}/cpuacct.usage_sys"));
                if let (Some(total), Some(user), Some(sys)) = (total, user, sys) {
                    let (_, sys) = split_exact(total, user, sys);
                    // In whole milliseconds that still sum to the total's.
                    u.cpu_system_ms = sys / 1_000_000;
                    u.cpu_user_ms = total / 1_000_000 - u.cpu_system_ms;
                    u.cpu_counted = true;
                } else if let Some(stat) = self.read_counter(&format!("{dir}/cpuacct.stat")) {
                    // USER_HZ ticks.
                    // SAFETY: sysconf has no preconditions.
                    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
                    u.cpu_user_ms = keyed(&stat, "user").unwrap_or(0) * 1000 / hz;
                    u.cpu_system_ms = keyed(&stat, "system").unwrap_or(0) * 1000 / hz;
                    u.cpu_counted = true;
                }
            }
            if let Some(dir) = self.dir_of(Controller::Memory) {
                u.peak_memory_bytes = self.read_counter_u64(&format!("{dir}/memory.max_usage_in_bytes")).unwrap_or(0);
                u.oom_kills = self.oom_kills();
            }
        }
        if let Some(events) = self.file(Controller::Pids, "pids.events").and_then(|p| self.read_counter(&p)) {
            u.pids_limit_hits = keyed(&events, "max").unwrap_or(0);
        }
        u
    }

    /// End every process in the cgroup, however it daemonized, and wait until none is left:
    /// v2 `cgroup.kill` (5.14+); else freeze, SIGKILL each, thaw, until empty.
    pub fn kill_all(&self) -> Result<(), SetupError> {
        self.kill_all_by(self.kill_file().is_some())
    }

    fn freeze(&self, on: bool) -> bool {
        let wait_for = |file: &str, key: Option<&str>, want: &str| {
            let until = Instant::now() + Duration::from_millis(500);
            loop {
                let text = read_file(file).unwrap_or_default();
                let done = match key {
                    Some(k) => keyed(&text, k).map(|v| v.to_string()).as_deref() == Some(want),
                    None => text.trim() == want,
                };
                if done || Instant::now() > until {
                    return done;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        if self.v2 {
            let Some(dir) = self.dirs.first().map(|d| d.path.as_str()) else { return false };
            if write_file(&format!("{dir}/cgroup.freeze"), if on { "1" } else { "0" }).is_err() {
                return false;
            }
            !on || wait_for(&format!("{dir}/cgroup.events"), Some("frozen"), "1")
        } else {
            let Some(dir) = self.dir_of(Controller::Freezer) else { return false };
            let state = format!("{dir}/freezer.state");
            if write_file(&state, if on { "FROZEN" } else { "THAWED" }).is_err() {
                return false;
            }
            !on || wait_for(&state, None, "FROZEN")
        }
    }

    fn kill_all_by(&self, use_kill_file: bool) -> Result<(), SetupError> {
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Pid 0 stands for processes outside this pid namespace: never signal it (it would
            // mean our own process group).
            let pids: Vec<i32> = self.list()?.into_iter().filter(|p| *p > 0).collect();
            if pids.is_empty() {
                return Ok(());
            }
            if pids.contains(&me) {
                return Err(SetupError::new(STEP_KILL, "this process is inside the sandbox cgroup; not killing it").with_path(self.dirs[0].path.clone()));
            }
            if Instant::now() > deadline {
                return Err(SetupError::sys(STEP_KILL, libc::EBUSY, Some(&self.dirs[0].path))
                    .with_hint(format!("{} process(es) survived SIGKILL (stuck in the kernel?)", pids.len())));
            }
            let killed = use_kill_file && self.kill_file().is_some_and(|f| write_file(&f, "1").is_ok());
            if !killed {
                self.freeze(true);
                // Frozen, nobody can fork between this listing and the kill.
                self.kill_members(me);
                // Thaw even after a freeze that did not finish, so that the signals land.
                self.freeze(false);
            }
            // Give the kernel a moment to take them down before listing again.
            let until = Instant::now() + Duration::from_millis(100);
            while Instant::now() < until && self.pids().iter().any(|p| *p > 0) {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }

    /// SIGKILL every listed process. Each is pinned by a pidfd and signalled only if it is still
    /// listed after that, so a pid reused by an unrelated process is never hit.
    fn kill_members(&self, me: i32) {
        kill_pinned(|| self.pids(), me);
    }

    fn remove_dirs(&mut self) -> Result<(), SetupError> {
        if self.removed {
            return Ok(());
        }
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.limit_files.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // The common case first: the sandbox's init was reaped, so each directory is empty and
        // has no children; what does not go that simply is emptied and removed below.
        self.dirs.retain(|d| std::fs::remove_dir(&d.path).is_err());
        if self.dirs.is_empty() {
            self.removed = true;
            return Ok(());
        }
        let killed = self.kill_all();
        let mut first_err = killed.err();
        // Children go before parents; ours are siblings, but keep the order of creation reversed.
        while let Some(d) = self.dirs.pop() {
            // Cgroups made below it (by a sandbox allowed to) go first, deepest first.
            for dir in subtree(&d.path) {
                if let Err(e) = rmdir_retrying(&dir) {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.removed = true;
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// End what still runs in the cgroup and remove its directories.
    pub fn remove(mut self) -> Result<(), SetupError> {
        self.remove_dirs()
    }
}

/// SIGKILL what `list` names (but `me` and pid 0), each pinned by a pidfd and still listed after
/// that: a pid that ended meanwhile and was reused is never signalled.
fn kill_pinned(list: impl Fn() -> Vec<i32>, me: i32) {
    use std::os::fd::FromRawFd;
    let listed: Vec<i32> = list().into_iter().filter(|p| *p > 0 && *p != me).collect();
    let mut pinned = Vec::with_capacity(listed.len());
    for pid in listed {
        // SAFETY: pidfd_open with a pid and no flags.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: a new descriptor that nothing else owns.
            pinned.push((pid, Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })));
        } else if Errno::last() == Errno::ENOSYS {
            pinned.push((pid, None)); // before 5.3: the plain pid
        }
    }
    let still = list();
    for (pid, fd) in pinned {
        if !still.contains(&pid) {
            continue;
        }
        match fd {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo, no flags.
            Some(fd) => unsafe {
                libc::syscall(libc::SYS_pidfd_send_signal, std::os::fd::AsRawFd::as_raw_fd(&fd), libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0);
            },
            None => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Remove the sandbox cgroups a helper left when it died without cleaning up (killed by a
/// signal): those named after its pid beneath this process's own cgroups, the processes still in
/// them (its sandbox's, whose init dies with it) killed first. For the helper server, whose
/// children the helpers are.
/// `started`: when that helper started ([`sys::reap_child`]), which tells its cgroups from those
/// of a process given its pid since (None where /proc could not say: by the pid alone).
pub fn remove_left_by(helper: i32, started: Option<u64>) {
    remove_left(|pid, start| named_after(helper, started, pid, start), true);
}

/// A cgroup named after `pid` and `start` is the one of the helper `helper` that started at
/// `started`. Either start unknown (None here; 0 in a name: the helper could not read its own):
/// by the pid alone.
fn named_after(helper: i32, started: Option<u64>, pid: i32, start: u64) -> bool {
    pid == helper && (start == 0 || started.is_none_or(|s| s == start))
}

/// Remove the empty sandbox cgroups that helpers no longer alive left beneath this process's own
/// cgroups (named after a pid no process has now): what a SIGKILL of a whole service leaves, its
/// helpers and their server killed at once, with no one to clean up after them. Only empty ones,
/// and nothing is killed: a cgroup that holds a process is someone's, and so is one a living
/// process holds ([`make_held`]: a helper of another pid namespace, whose pid names another
/// process here or none, between making its cgroup and moving a process in). For the helper
/// server, as it starts.
pub fn remove_left_by_the_dead() {
    // kill(pid, 0): ESRCH is no process at all (EPERM is someone's); a process of that pid that
    // started at another time is another one.
    let gone = |pid: i32, start: u64| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH) || (start != 0 && sys::start_time(pid).is_some_and(|s| s != start))
    };
    remove_left(gone, false);
}

/// Sandbox cgroups beneath this process's own cgroups whose helper's pid `left_by` picks, each
/// subtree removed deepest first; with `kill`, its processes are killed first (else a cgroup
/// that holds any stays).
fn remove_left(left_by: impl Fn(i32, u64) -> bool, kill: bool) {
    let Ok(host) = detect() else { return };
    let mut parents: Vec<String> = host.v1.iter().filter_map(|h| h.own_dir.clone()).collect();
    if host.mode == CgroupMode::V2 {
        parents.extend(host.unified.as_ref().and_then(|u| u.own_dir.clone()));
    }
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| valid_name(n)) else { continue };
            if !helper_of(name).is_some_and(|(pid, start)| left_by(pid, start)) {
                continue;
            }
            let top = format!("{parent}/{name}");
            // Without killing, only what no living process holds (a helper of another pid
            // namespace, whose pid means nothing here). The killing sweep follows a helper this
            // process itself reaped.
            let _held = match kill {
                true => None,
                false => match try_hold(&top) {
                    Some(fd) => Some(fd),
                    None => continue,
                },
            };
            for dir in subtree(&top) {
                if kill {
                    kill_pinned(|| procs_in(&dir).unwrap_or_default(), std::process::id() as i32);
                    let _ = rmdir_retrying(&dir);
                } else {
                    rmdir_once(&dir);
                }
            }
        }
    }
}

/// The helper's pid and start time in a sandbox cgroup's name ([`unique_name`]).
fn helper_of(name: &str) -> Option<(i32, u64)> {
    let mut parts = name.strip_prefix("isolate-")?.split('-');
    let (pid, start, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || n.parse::<u64>().is_err() {
        return None;
    }
    Some((pid.parse().ok().filter(|p: &i32| *p > 0)?, start.parse().ok()?))
}

/// Every cgroup directory at and below `dir`, deepest first.
fn subtree(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(p) = e.path().to_str() {
                    out.extend(subtree(p));
                }
            }
        }
    }
    out.push(dir.to_owned());
    out
}

/// The processes of one cgroup. A threaded v2 cgroup refuses to list processes (EOPNOTSUPP):
/// its threads are listed and mapped to their processes.
fn procs_in(dir: &str) -> Result<Vec<i32>, i32> {
    let parse = |s: &str| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>();
    match std::fs::read_to_string(format!("{dir}/cgroup.procs")) {
        Ok(s) => Ok(parse(&s)),
        Err(e) if errno_of(&e) == libc::ENOENT || errno_of(&e) == libc::ENODEV => Ok(Vec::new()),
        Err(e) if errno_of(&e) == libc::EOPNOTSUPP => {
            let threads = std::fs::read_to_string(format!("{dir}/cgroup.threads")).map_err(|e| errno_of(&e))?;
            Ok(parse(&threads)
                .into_iter()
                .map(|tid| {
                    let status = read_file(&format!("/proc/{tid}/status")).unwrap_or_default();
                    status.lines().find_map(|l| l.strip_prefix("Tgid:")?.trim().parse().ok()).unwrap_or(tid)
                })
                .collect())
        }
        Err(e) => Err(errno_of(&e)),
    }
}

/// One rmdir: true when `path` is gone.
fn rmdir_once(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else { return false };
    // SAFETY: a NUL-terminated path.
    let removed = unsafe { libc::rmdir(c.as_ptr()) } == 0;
    removed || Errno::last() == Errno::ENOENT
}

/// rmdir, retrying while the kernel finishes tearing down the cgroup's last processes (EBUSY).
fn rmdir_retrying(path: &str) -> Result<(), SetupError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(200);
    let c = std::ffi::CString::new(path).map_err(|_| SetupError::new(STEP_REMOVE, "NUL in path"))?;
    loop {
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::rmdir(c.as_ptr()) } == 0 {
            return Ok(());
        }
        let e = Errno::last();
        match e {
            Errno::ENOENT => return Ok(()),
            Errno::EBUSY if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            _ => return Err(SetupError::sys(STEP_REMOVE, e as i32, Some(path))),
        }
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        let _ = self.remove_dirs();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_is_the_exact_total_split_as_the_ticks_saw_it() {
        use super::split_exact;
        // Ticks saw 3 parts user to 1 system: the exact total split so.
        assert_eq!(split_exact(1_000, 300, 100), (750, 250));
        // No tick saw it run (it ran between them): all of it, as user time.
        assert_eq!(split_exact(3_000_000_000, 0, 0), (3_000_000_000, 0));
        // The parts always sum to the total, whatever the samples say.
        let (u, s) = split_exact(999_999_999, 7, 13);
        assert_eq!(u + s, 999_999_999);
        assert_eq!(split_exact(u64::MAX, u64::MAX, u64::MAX), (u64::MAX - u64::MAX / 2, u64::MAX / 2));
    }

    use super::*;

    #[test]
    fn the_limits_that_need_a_cgroup_are_named_as_options() {
        let none = CgroupLimits { memory_bytes: None, pids: None, cpus: None, cpu_time: false };
        assert!(none.options().is_empty());
        let all = CgroupLimits { memory_bytes: Some(1), pids: Some(2), cpus: Some(0.5), cpu_time: true };
        assert_eq!(all.options(), ["limits.memoryBytes", "limits.pids", "limits.cpus", "limits.cpuTimeMs"]);
        assert_eq!(CgroupLimits { pids: Some(2), ..none }.options(), ["limits.pids"]);
    }
    use std::os::fd::AsRawFd;

    // ----- pure: the layout, the host's answers, the plans -----

    const V1_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n6:freezer:/\n0::/\n";
    const V1_MOUNTS: &str = "\
31 23 0:28 / /nowhere/cg rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /nowhere/cg/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /nowhere/cg/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /nowhere/cg/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /nowhere/cg/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /nowhere/cg/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /nowhere/cg/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn layout_of_a_hybrid_host_with_merged_hierarchies() {
        let l = parse_layout(V1_CGROUP, V1_MOUNTS);
        assert_eq!(l.unified, Some(("/nowhere/cg/unified".into(), "/".into(), Some("/nowhere/cg/unified".into()), "/".into())));
        let find = |c: &str| l.v1.iter().find(|h| h.0.iter().any(|x| x == c)).cloned().unwrap();
        assert_eq!(
            find("cpu"),
            (vec!["cpu".to_owned(), "cpuacct".to_owned()], "/nowhere/cg/cpu,cpuacct".into(), "/".into(), Some("/nowhere/cg/cpu,cpuacct".into()))
        );
        assert_eq!(find("cpuacct").1, "/nowhere/cg/cpu,cpuacct");
        assert_eq!(find("memory").3.as_deref(), Some("/nowhere/cg/memory/process_api/abc"));
        assert_eq!(l.v1.len(), 4, "name=systemd carries no controller: {l:?}");
        let host = host_from_layout(l);
        assert_eq!(host.mode, CgroupMode::Hybrid);
        assert!(!host.mode.uses_v2());
        assert_eq!(host.v1_hierarchy("cpuacct").unwrap().mount, "/nowhere/cg/cpu,cpuacct");
        let json = serde_json::to_value(&host).unwrap();
        assert_eq!(json["mode"], "hybrid");
        assert_eq!(json["v1"][0]["ownDir"], "/nowhere/cg/cpu,cpuacct");
        assert!(json["canCreate"].is_boolean());
    }

    #[test]
    fn layout_of_v2_only_and_of_a_container_view() {
        let mounts = "39 33 0:34 / /nowhere/cg rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = parse_layout("0::/user.slice/app.scope\n", mounts);
        assert_eq!(l.unified.as_ref().unwrap().2.as_deref(), Some("/nowhere/cg/user.slice/app.scope"));
        assert!(l.v1.is_empty());
        assert_eq!(host_from_layout(l).mode, CgroupMode::V2);
        // A mount of a subtree (root field) shows only cgroups inside it.
        let sub = "50 33 0:34 /docker/abc /nowhere/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_layout("0::/docker/abc/x\n", sub).unified.unwrap().2.as_deref(), Some("/nowhere/cg/x"));
        assert_eq!(parse_layout("0::/docker/abc\n", sub).unified.unwrap().2.as_deref(), Some("/nowhere/cg"));
        assert_eq!(parse_layout("0::/docker/abcdef\n", sub).unified.unwrap().2, None);
        assert_eq!(parse_layout("0::/../other\n", mounts).unified.unwrap().2, None);
        // Escaped mount points.
        let esc = "39 33 0:34 / /no\\040where rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_layout("0::/a\n", esc).unified.unwrap().2.as_deref(), Some("/no where/a"));
        // Nothing mounted.
        assert_eq!(host_from_layout(parse_layout("0::/\n", "")).mode, CgroupMode::Unavailable);
    }

    #[test]
    fn a_parent_named_in_the_environment_is_the_own_cgroup_or_one_above_it() {
        let mounts = "39 33 0:34 / /nowhere/cg rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = parse_layout("0::/system.slice/app.service/main\n", mounts);
        let chosen = |p: &str| with_parent(l.clone(), p).map(|l| (l.unified.clone().unwrap().1, l.unified.unwrap().2, l.parent_from_env));
        assert_eq!(chosen("/system.slice/app.service"), Ok(("/system.slice/app.service".into(), Some("/nowhere/cg/system.slice/app.service".into()), true)));
        assert_eq!(chosen("/system.slice/app.service/main").unwrap().1.as_deref(), Some("/nowhere/cg/system.slice/app.service/main"));
        assert_eq!(chosen("/").unwrap().1.as_deref(), Some("/nowhere/cg"));
        assert_eq!(chosen("/system.slice/app.service/").unwrap().0, "/system.slice/app.service");
        // Beside it, below it, or a prefix that is no ancestor: refused, naming the variable.
        for beside in ["/system.slice/other.service", "/system.slice/app.service/main/x", "/system.slice/app", "/user.slice"] {
            let why = chosen(beside).unwrap_err();
            assert!(why.contains("ISOLATE_CGROUP_PARENT=") && why.contains("nor one above it"), "{beside}: {why}");
        }
        for bad in ["system.slice", "/system.slice/../x", "/system.slice//app.service", "/./system.slice", "/a\nb"] {
            assert!(chosen(bad).unwrap_err().contains("is not a cgroup path"), "{bad}");
        }
        // A mount of a subtree shows nothing above its root.
        let sub = "50 33 0:34 /system.slice/app.service /nowhere/cg rw - cgroup2 cgroup2 rw\n";
        let l = parse_layout("0::/system.slice/app.service/main\n", sub);
        assert_eq!(with_parent(l.clone(), "/system.slice/app.service").unwrap().unified.unwrap().2.as_deref(), Some("/nowhere/cg"));
        assert!(with_parent(l, "/system.slice").unwrap_err().contains("is not visible under /nowhere/cg"));
        // cgroup v1 (or hybrid) hosts keep their limits in v1 hierarchies: the variable has no place there.
        assert!(with_parent(parse_layout(V1_CGROUP, V1_MOUNTS), "/").unwrap_err().contains("cgroup v1"));
        assert!(with_parent(parse_layout("", ""), "/").unwrap_err().contains("no cgroup v2 hierarchy"));
        // This process's cgroup outside its cgroup namespace's view: nothing shown is above it.
        assert!(with_parent(parse_layout("0::/../elsewhere\n", mounts), "/").unwrap_err().contains("nor one above it"));
        // Serialized for the probe.
        let host = host_from_layout(with_parent(parse_layout("0::/a/b\n", mounts), "/a").unwrap());
        assert_eq!(serde_json::to_value(&host).unwrap()["unified"]["fromEnv"], true);
    }

    fn v2_host(controllers: &[&str], enabled: &[&str], is_root: bool, processes: usize) -> CgroupHost {
        let mut u = UnifiedHierarchy {
            mount: "/sys/fs/cgroup".into(),
            own_path: if is_root { "/".into() } else { "/app.slice/app.service".into() },
            own_dir: Some(if is_root { "/sys/fs/cgroup".into() } else { "/sys/fs/cgroup/app.slice/app.service".into() }),
            is_root,
            controllers: controllers.iter().map(|s| s.to_string()).collect(),
            subtree_control: enabled.iter().map(|s| s.to_string()).collect(),
            subtree_control_writable: true,
            processes,
            writable: true,
            procs_writable: true,
            usable: Vec::new(),
            from_env: false,
        };
        u.usable = u.controllers.iter().filter(|c| matches!(u.availability(c), V2Availability::Enabled | V2Availability::Enableable)).cloned().collect();
        CgroupHost {
            mode: CgroupMode::V2,
            unified: Some(u),
            v1: Vec::new(),
            swap_accounting: Some(true),
            can_create: true,
            reason: None,
            parent_refused: false,
            refused: Vec::new(),
            parent_would_hold: None,
        }
    }

    fn v1_host(controllers: &[&str], memsw: bool) -> CgroupHost {
        let v1 = controllers
            .iter()
            .map(|c| V1Hierarchy {
                controllers: c.split(',').map(str::to_owned).collect(),
                mount: format!("/sys/fs/cgroup/{c}"),
                own_path: "/".into(),
                own_dir: Some(format!("/sys/fs/cgroup/{c}")),
                writable: true,
            })
            .collect();
        CgroupHost {
            mode: CgroupMode::V1,
            unified: None,
            v1,
            swap_accounting: Some(memsw),
            can_create: true,
            reason: None,
            parent_refused: false,
            refused: Vec::new(),
            parent_would_hold: None,
        }
    }

    /// A cgroup value with these directories, as if made (nothing is created or removed).
    fn made(v2: bool, dirs: &[(&str, &[Controller])]) -> SandboxCgroup {
        let dirs = dirs.iter().map(|(p, c)| Dir { path: (*p).into(), controllers: c.to_vec(), held: None }).collect();
        SandboxCgroup {
            name: "isolate-test".into(),
            v2,
            dirs,
            peak_seen: AtomicU64::new(0),
            counters: Mutex::new(Vec::new()),
            limit_files: Mutex::new(Vec::new()),
            removed: true,
        }
    }

    #[test]
    fn a_cgroup_made_ahead_covers_only_limits_whose_controllers_it_has() {
        let host = v1_host(&["memory", "pids", "cpu,cpuacct"], true);
        let cg = made(false, &[("/sys/fs/cgroup/memory/x", &[Controller::Memory]), ("/sys/fs/cgroup/pids/x", &[Controller::Pids])]);
        assert!(cg.covers(&host, &CgroupLimits { memory_bytes: Some(1 << 20), pids: Some(4), cpus: None, cpu_time: false }));
        assert!(cg.covers(&host, &CgroupLimits::default()));
        assert!(!cg.covers(&host, &CgroupLimits { cpus: Some(0.5), ..Default::default() }), "no cpu directory");
        let v2 = v2_host(&["cpu", "memory", "pids"], &["memory", "pids"], true, 1);
        let cg = made(true, &[("/sys/fs/cgroup/x", &[Controller::Memory, Controller::Pids])]);
        assert!(cg.covers(&v2, &CgroupLimits { pids: Some(4), ..Default::default() }));
        assert!(!cg.covers(&v2, &all_limits()), "cpu was not enabled for it");
        // Limits no cgroup could take are not covered either (the cold path then reports why).
        assert!(!cg.covers(&v2, &CgroupLimits { pids: Some(0), ..Default::default() }));
    }

    #[test]
    fn a_cgroup_made_ahead_opens_ahead_every_file_a_limit_may_go_to() {
        let hosts = [
            (v1_host(&["memory", "pids", "cpu,cpuacct"], true), false),
            (v1_host(&["memory", "pids", "cpu"], false), false),
            (v2_host(&["cpu", "memory", "pids"], &["cpu", "memory", "pids"], true, 1), true),
        ];
        for (host, v2) in hosts {
            let plan = plan_writes(&host, &all_limits()).unwrap();
            assert!(!plan.is_empty());
            for w in plan {
                assert!(limit_files(v2).contains(&(w.controller, w.file)), "{} (v2: {v2}) is not opened ahead", w.file);
            }
        }
    }

    fn all_limits() -> CgroupLimits {
        CgroupLimits { memory_bytes: Some(64 << 20), pids: Some(16), cpus: Some(0.5), cpu_time: false }
    }

    fn triples(plan: &[CgroupWrite]) -> Vec<(&'static str, &'static str, String, bool)> {
        plan.iter().map(|w| (w.controller.as_str(), w.file, w.value.clone(), w.optional)).collect()
    }

    #[test]
    fn v2_plan() {
        let host = v2_host(&["cpu", "memory", "pids", "io"], &["cpu", "memory", "pids"], true, 60);
        let plan = plan_writes(&host, &all_limits()).unwrap();
        assert_eq!(
            triples(&plan),
            vec![
                ("memory", "memory.max", "67108864".into(), false),
                ("memory", "memory.swap.max", "0".into(), true),
                ("pids", "pids.max", "16".into(), false),
                ("cpu", "cpu.max", "50000 100000".into(), false),
            ]
        );
        let two_and_a_half = CgroupLimits { cpus: Some(2.5), ..Default::default() };
        assert_eq!(plan_writes(&host, &two_and_a_half).unwrap()[0].value, "250000 100000");
        assert!(plan_writes(&host, &CgroupLimits::default()).unwrap().is_empty());
    }

    #[test]
    fn v1_plan_with_and_without_swap_accounting() {
        let host = v1_host(&["memory", "pids", "cpu,cpuacct", "freezer"], true);
        assert_eq!(
            triples(&plan_writes(&host, &all_limits()).unwrap()),
            vec![
                ("memory", "memory.limit_in_bytes", "67108864".into(), false),
                ("memory", "memory.memsw.limit_in_bytes", "67108864".into(), false),
                ("memory", "memory.swappiness", "0".into(), true),
                ("memory", "memory.kmem.tcp.limit_in_bytes", "67108864".into(), true),
                ("pids", "pids.max", "16".into(), false),
                ("cpu", "cpu.cfs_period_us", "100000".into(), false),
                ("cpu", "cpu.cfs_quota_us", "50000".into(), false),
            ]
        );
        let no_memsw = v1_host(&["memory"], false);
        let files: Vec<&str> =
            plan_writes(&no_memsw, &CgroupLimits { memory_bytes: Some(1 << 20), ..Default::default() }).unwrap().iter().map(|w| w.file).collect();
        assert_eq!(files, ["memory.limit_in_bytes", "memory.swappiness", "memory.kmem.tcp.limit_in_bytes"]);
    }

    #[test]
    fn the_probe_names_the_limits_that_fail_closed_with_their_errors_words() {
        // Delegated, but holding the caller: what plan_writes refuses, by option, with its reason.
        let host = v2_host(&["cpu", "memory", "pids"], &["pids"], false, 2);
        let refused = host.refused_limits();
        assert_eq!(refused.iter().map(|r| r.option).collect::<Vec<_>>(), ["limits.memoryBytes", "limits.cpus"]);
        let e = plan_writes(&host, &CgroupLimits { memory_bytes: Some(1 << 20), ..Default::default() }).unwrap_err();
        assert!(e.message.ends_with(&refused[0].message), "{e:?} / {refused:?}");
        assert!(e.hint.as_deref().unwrap().starts_with(refused[0].hint.as_deref().unwrap()), "{e:?} / {refused:?}");
        // v1 without pids and cpuacct mounted (cpuTimeMs is then refused: nothing would count its
        // CPU time); none where a cgroup may not be made at all (reason says why).
        assert_eq!(v1_host(&["memory", "cpu"], true).refused_limits().iter().map(|r| r.option).collect::<Vec<_>>(), ["limits.pids", "limits.cpuTimeMs"]);
        assert!(v1_host(&["memory", "pids", "cpu,cpuacct"], true).refused_limits().is_empty());
        let mut host = v1_host(&["memory"], true);
        host.can_create = false;
        assert!(host.refused_limits().is_empty());
        assert!(v2_host(&["cpu", "memory", "pids"], &[], true, 0).refused_limits().is_empty());
        // At the root, a controller missing from cgroup.controllers is the kernel's doing.
        let at_root = v2_host(&["cpu", "pids"], &[], true, 0).refused_limits();
        assert_eq!(at_root.len(), 1);
        assert!(at_root[0].hint.as_deref().unwrap().contains("cgroup_disable="), "{at_root:?}");
    }

    #[test]
    fn a_sweep_takes_the_cgroups_of_the_helper_that_died_not_of_another_process_of_its_pid() {
        assert!(named_after(42, Some(1000), 42, 1000));
        assert!(!named_after(42, Some(1000), 42, 1001), "a process given the pid since, or a helper of another pid namespace");
        assert!(!named_after(42, Some(1000), 43, 1000));
        assert!(named_after(42, None, 42, 1001), "the dead helper's start unread: by the pid");
        assert!(named_after(42, Some(1000), 42, 0), "a helper that could not read its own start: by the pid");
    }

    #[test]
    fn a_sandbox_cgroup_names_its_helper_and_when_it_started() {
        assert_eq!(helper_of("isolate-123-4567-0"), Some((123, 4567)));
        let own = (std::process::id() as i32, sys::own_start_time().unwrap());
        assert_eq!(helper_of(&unique_name()), Some(own));
        assert_eq!(sys::start_time(own.0), Some(own.1), "what a sweep reads of a helper's zombie");
        // A process's names follow on from a random start.
        let (a, b) = (unique_name(), unique_name());
        let n = |name: &str| name.rsplit('-').next().unwrap().parse::<u64>().unwrap();
        assert_eq!(n(&b), n(&a) + 1);
        assert!(n(&a) > 1000, "{a}");
        for other in
            ["isolate-123-0", "isolate-123", "isolate-x-1-0", "isolate-0-1-1", "isolate-12-3-4x", "isolated-1-2-3", "isolate--1-2-0", "isolate-1-2-3-4"]
        {
            assert_eq!(helper_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_parent_is_suggested_only_up_to_the_top_of_a_delegation() {
        let above = |path: &str, marked: bool, delegated: bool, holds: bool| Above { path: path.into(), marked, delegated, holds };
        // A service with Delegate=yes and DelegateSubgroup=main: the caller is in main, the mark on the service.
        assert_eq!(nearest_that_holds(false, [above("/app.service", true, true, true)]), Some("/app.service".into()));
        // A user's Delegate=yes scope (marked) in a slice of the user's manager, writable by the user: not the slice.
        assert_eq!(nearest_that_holds(true, [above("/user@1001.service/app.slice", false, true, true)]), None);
        // A marked top that holds processes: nothing above it either.
        assert_eq!(nearest_that_holds(false, [above("/a", true, true, false), above("/", false, true, true)]), None);
        // Directories given to the caller (no marks): up through them, to the first that holds.
        assert_eq!(nearest_that_holds(false, [above("/d/s", false, true, false), above("/d", false, true, true)]), Some("/d".into()));
        // Not delegated: the climb ends.
        assert_eq!(nearest_that_holds(false, [above("/d", false, false, true)]), None);
    }

    #[test]
    fn cpu_time_needs_cpuacct_on_v1_and_nothing_more_on_v2() {
        let cpu_time = CgroupLimits { cpu_time: true, ..Default::default() };
        // Without cpuacct nothing counts the sandbox's CPU time: refused, never a limit that no
        // count ever reaches.
        let e = plan_writes(&v1_host(&["memory", "pids"], true), &cpu_time).unwrap_err();
        assert!(e.message.contains("missing cgroup controller(s) cpuacct"), "{e:?}");
        assert_eq!(plan_writes(&v1_host(&["memory", "cpu,cpuacct"], true), &cpu_time).map(|p| p.len()), Ok(0));
        assert_eq!(plan_writes(&v2_host(&["memory"], &[], false, 1), &cpu_time).map(|p| p.len()), Ok(0));
        // A v1 hierarchy this process may not write is no more usable than a missing one.
        let mut host = v1_host(&["memory", "cpu,cpuacct"], true);
        host.v1.iter_mut().for_each(|h| h.writable = false);
        let e = plan_writes(&host, &cpu_time).unwrap_err();
        assert!(e.message.contains("may not create cpuacct cgroups"), "{e:?}");
        assert!(!cpu_time.is_empty());
    }

    #[test]
    fn missing_controllers_fail_closed_with_a_hint() {
        // v1 without pids and cpu mounted.
        let e = plan_writes(&v1_host(&["memory"], true), &all_limits()).unwrap_err();
        assert_eq!(e.errno, None);
        assert!(e.message.contains("pids, cpu"), "{e:?}");
        assert!(e.hint.as_deref().unwrap().contains("mount -t cgroup -o pids"), "{e:?}");
        // Only what was asked is needed.
        assert!(plan_writes(&v1_host(&["memory"], true), &CgroupLimits { memory_bytes: Some(1 << 20), ..Default::default() }).is_ok());

        // v2: memory not delegated to the own cgroup.
        let host = v2_host(&["cpu", "pids"], &[], false, 3);
        let e = plan_writes(&host, &CgroupLimits { memory_bytes: Some(1 << 20), ..Default::default() }).unwrap_err();
        assert!(e.message.contains("memory") && e.message.contains("cgroup.controllers"), "{e:?}");
        // Delegating it would not do while the cgroup holds the caller.
        assert!(
            e.hint.as_deref().unwrap().starts_with("delegating it would not be enough: ") && e.hint.as_deref().unwrap().contains("no-internal-process"),
            "{e:?}"
        );
        assert_eq!(e.path.as_deref(), Some("/sys/fs/cgroup/app.slice/app.service"));

        // v2: delegated, but the own cgroup holds processes (the no-internal-process rule);
        // what the own cgroup already enables for its children is usable all the same.
        let host = v2_host(&["cpu", "memory", "pids"], &["pids"], false, 2);
        let u = host.unified.as_ref().unwrap();
        assert_eq!(u.availability("memory"), V2Availability::NoInternalProcess);
        assert_eq!(u.availability("cpu"), V2Availability::NoInternalProcess);
        assert_eq!(u.availability("pids"), V2Availability::Enabled);
        assert_eq!(u.availability("io"), V2Availability::NotDelegated);
        let e = plan_writes(&host, &all_limits()).unwrap_err();
        assert!(e.message.starts_with("cannot enforce the asked limits: missing cgroup controller(s) memory, cpu:"), "{e:?}");
        assert!(e.hint.as_deref().unwrap().contains("no-internal-process"), "{e:?}");
        assert!(plan_writes(&host, &CgroupLimits { pids: Some(8), ..Default::default() }).is_ok());
        // Not writable: the hint is delegation.
        let mut host = v2_host(&["cpu", "memory", "pids"], &[], true, 2);
        host.unified.as_mut().unwrap().subtree_control_writable = false;
        assert_eq!(host.unified.as_ref().unwrap().availability("memory"), V2Availability::NotWritable);
        // The root cgroup may enable anything it has, processes or not.
        assert_eq!(v2_host(&["memory"], &[], true, 50).unified.unwrap().availability("memory"), V2Availability::Enableable);

        // At the root of a container's cgroup namespace: the hint is the entrypoint's move.
        let mut host = v2_host(&["cpu", "memory", "pids"], &[], false, 2);
        host.unified.as_mut().unwrap().own_path = "/".into();
        host.unified.as_mut().unwrap().own_dir = Some("/sys/fs/cgroup".into());
        let e = plan_writes(&host, &CgroupLimits { memory_bytes: Some(1 << 20), ..Default::default() }).unwrap_err();
        let hint = e.hint.as_deref().unwrap();
        assert!(
            hint.contains("root of this process's cgroup namespace")
                && hint.contains("echo $$ > /sys/fs/cgroup/main/cgroup.procs")
                && hint.contains("ISOLATE_CGROUP_PARENT=/"),
            "{e:?}"
        );
        // The same where the variable names that root while it still holds the processes.
        host.unified.as_mut().unwrap().from_env = true;
        let e = plan_writes(&host, &CgroupLimits { memory_bytes: Some(1 << 20), ..Default::default() }).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("echo $$ > /sys/fs/cgroup/main/cgroup.procs"), "{e:?}");

        // No cgroups at all: limits fail, no limits is fine.
        let none = host_from_layout(parse_layout("", ""));
        let e = plan_writes(&none, &all_limits()).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("mount -t cgroup2"), "{e:?}");
        assert!(plan_writes(&none, &CgroupLimits::default()).unwrap().is_empty());
    }

    #[test]
    fn invalid_limits_are_refused() {
        let host = v2_host(&["cpu", "memory", "pids"], &["cpu", "memory", "pids"], true, 1);
        for bad in [
            CgroupLimits { cpus: Some(0.0), ..Default::default() },
            CgroupLimits { cpus: Some(-1.0), ..Default::default() },
            CgroupLimits { cpus: Some(f64::NAN), ..Default::default() },
            CgroupLimits { cpus: Some(0.001), ..Default::default() },
            CgroupLimits { memory_bytes: Some(0), ..Default::default() },
            CgroupLimits { pids: Some(0), ..Default::default() },
        ] {
            assert!(plan_writes(&host, &bad).is_err(), "{bad:?}");
        }
        assert_eq!(plan_writes(&host, &CgroupLimits { cpus: Some(0.01), ..Default::default() }).unwrap()[0].value, "1000 100000");
    }

    #[test]
    fn names_and_keyed_files() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("isolate-{}-", std::process::id())));
        for bad in ["", ".", "..", "a/b", "cgroup.procs", "a\nb"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let stat = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n";
        assert_eq!(keyed(stat, "user_usec"), Some(2000));
        assert_eq!(keyed(stat, "usec"), None);
        assert_eq!(keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"), Some(3));
    }

    // ----- real cgroups on this host (v1 here, v2 in the cgroup2 lane) -----

    /// The host, when this process may create cgroups with all three limits here; otherwise why not.
    fn real_host() -> Option<CgroupHost> {
        let host = detect().expect("detect");
        let why = if !crate::probe::is_root() {
            Some("not root".to_owned())
        } else if !host.can_create {
            host.reason.clone()
        } else {
            plan_writes(&host, &all_limits()).err().map(|e| format!("{e}: {}", e.hint.clone().unwrap_or_default()))
        };
        match why {
            Some(w) => {
                eprintln!("SKIP: cgroup tests need a host where this process may create limited cgroups: {w}");
                None
            }
            None => Some(host),
        }
    }

    /// A forked child that waits for `go`, then runs `body` (async-signal-safe calls only: the
    /// test process has threads) and exits with its return value.
    struct Kid {
        pid: i32,
        go: Option<OwnedFd>,
        out: OwnedFd,
        reaped: bool,
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    fn pause_forever() -> ! {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }

    impl Kid {
        fn spawn(body: fn(i32) -> i32) -> Kid {
            let (go_r, go_w) = pipe();
            let (out_r, out_w) = pipe();
            // SAFETY: the child only calls async-signal-safe functions and leaves through _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", Errno::last());
            if pid == 0 {
                let mut b = 0u8;
                // SAFETY: plain read/_exit on descriptors this process owns.
                unsafe {
                    if libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 1 {
                        libc::_exit(100);
                    }
                    libc::_exit(body(out_w.as_raw_fd()));
                }
            }
            drop(go_r);
            drop(out_w);
            Kid { pid, go: Some(go_w), out: out_r, reaped: false }
        }

        fn go(&mut self) {
            let go = self.go.take().unwrap();
            assert_eq!(nix::unistd::write(&go, b"g"), Ok(1));
        }

        /// Read `n` bytes the child (or its descendants) wrote, within `secs`.
        fn read(&self, n: usize, secs: u64) -> Vec<u8> {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut got = Vec::new();
            while got.len() < n {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "timed out reading from the child (got {got:?})");
                let mut fds = [PollFd::new(self.out.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::try_from(left.as_millis() as i32 + 1).unwrap());
                let mut buf = [0u8; 64];
                match nix::unistd::read(&self.out, &mut buf[..n - got.len()]) {
                    Ok(0) => panic!("the child closed its output early (got {got:?})"),
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
            got
        }

        fn wait(&mut self) -> nix::sys::wait::WaitStatus {
            let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None).unwrap();
            self.reaped = true;
            st
        }
    }

    impl Drop for Kid {
        fn drop(&mut self) {
            if !self.reaped {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
            }
        }
    }

    fn write_out(fd: i32, bytes: &[u8]) {
        // SAFETY: write of a live buffer.
        unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    }

    fn read_trim(path: &str) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_owned()
    }

    /// Remove and check that no directory is left.
    fn remove_and_check(cg: SandboxCgroup) {
        let paths: Vec<String> = cg.paths().iter().map(|p| p.to_string()).collect();
        assert!(!paths.is_empty());
        cg.remove().expect("remove");
        for p in paths {
            assert!(!exists(&p), "{p} left behind");
        }
    }

    #[test]
    fn detect_describes_this_host() {
        let host = detect().unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        match host.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => {
                let mem = host.v1_hierarchy("memory").expect("memory hierarchy");
                let line = own.lines().find(|l| l.split(':').nth(1) == Some("memory")).unwrap();
                assert_eq!(mem.own_path, line.splitn(3, ':').nth(2).unwrap());
                assert!(mem.own_dir.as_deref().unwrap().ends_with(mem.own_path.trim_end_matches('/')));
            }
            CgroupMode::V2 => {
                let u = host.unified.as_ref().unwrap();
                assert_eq!(Some(u.own_path.as_str()), own.lines().find_map(|l| l.strip_prefix("0::")));
                assert!(u.is_root || u.processes >= 1, "this process is in its own cgroup: {u:?}");
                assert!(!u.controllers.is_empty());
            }
            CgroupMode::Unavailable => {}
        }
        eprintln!("{}", serde_json::to_string(&host).unwrap());
    }

    #[test]
    fn limits_are_written_and_a_child_is_attached() {
        let Some(host) = real_host() else { return };
        let cg = SandboxCgroup::create(&host, &unique_name(), &all_limits(), Ending::Frozen).unwrap();
        let file = |c: Controller, f: &str| cg.file(c, f).unwrap();
        if cg.is_v2() {
            assert!(cg.dir_fd_v2().is_some());
            assert_eq!(read_trim(&file(Controller::Memory, "memory.max")), "67108864");
            if exists(&file(Controller::Memory, "memory.swap.max")) {
                assert_eq!(read_trim(&file(Controller::Memory, "memory.swap.max")), "0");
            }
            assert_eq!(read_trim(&file(Controller::Cpu, "cpu.max")), "50000 100000");
        } else {
            assert!(cg.dir_fd_v2().is_none());
            assert_eq!(read_trim(&file(Controller::Memory, "memory.limit_in_bytes")), "67108864");
            if host.swap_accounting == Some(true) {
                assert_eq!(read_trim(&file(Controller::Memory, "memory.memsw.limit_in_bytes")), "67108864");
            }
            assert_eq!(read_trim(&file(Controller::Memory, "memory.swappiness")), "0");
            if exists(&file(Controller::Memory, "memory.kmem.tcp.limit_in_bytes")) {
                assert_eq!(read_trim(&file(Controller::Memory, "memory.kmem.tcp.limit_in_bytes")), "67108864");
            } else {
                eprintln!("this kernel has no memory.kmem.tcp.limit_in_bytes: TCP buffers are not bounded on v1 here");
            }
            assert_eq!(read_trim(&file(Controller::Cpu, "cpu.cfs_quota_us")), "50000");
            assert_eq!(read_trim(&file(Controller::Cpu, "cpu.cfs_period_us")), "100000");
            for c in [Controller::Cpuacct, Controller::Freezer, Controller::Pids] {
                assert!(cg.controllers().contains(&c), "{c:?} in {:?}", cg.controllers());
            }
        }
        assert_eq!(read_trim(&file(Controller::Pids, "pids.max")), "16");
        for p in cg.paths() {
            assert!(p.starts_with("/sys/fs/cgroup/") && p.ends_with(cg.name()), "{p}");
        }

        let mut kid = Kid::spawn(|_| pause_forever());
        cg.attach(kid.pid).unwrap();
        assert_eq!(cg.pids(), vec![kid.pid]);
        let view = std::fs::read_to_string(format!("/proc/{}/cgroup", kid.pid)).unwrap();
        assert_eq!(view.lines().filter(|l| l.ends_with(&format!("/{}", cg.name()))).count(), cg.paths().len(), "{view}");
        kid.go();
        cg.kill_all().unwrap();
        assert!(matches!(kid.wait(), nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)));
        remove_and_check(cg);
    }

    /// A sandbox's cgroup (its processes end with its init's pid namespace) joins no freezer on
    /// v1, and is otherwise the same as one whose processes may outlive their first; a process
    /// in it still ends by kill_all (listed and killed, no freeze).
    #[test]
    fn a_cgroup_whose_processes_end_with_their_init_has_no_freezer() {
        let Some(host) = real_host() else { return };
        let limits = CgroupLimits { memory_bytes: Some(64 << 20), pids: Some(8), ..Default::default() };
        let frozen = SandboxCgroup::create(&host, &unique_name(), &limits, Ending::Frozen).unwrap();
        let with_init = SandboxCgroup::create(&host, &unique_name(), &limits, Ending::WithInit).unwrap();
        let freezer_here = !host.mode.uses_v2() && host.v1_hierarchy("freezer").is_some_and(|h| h.own_dir.is_some() && h.writable);
        assert_eq!(frozen.controllers().contains(&Controller::Freezer), freezer_here, "{:?}", frozen.controllers());
        assert!(!with_init.controllers().contains(&Controller::Freezer), "{:?}", with_init.controllers());
        let others = |cg: &SandboxCgroup| cg.controllers().into_iter().filter(|c| *c != Controller::Freezer).collect::<Vec<_>>();
        assert_eq!(others(&with_init), others(&frozen));
        assert_eq!(with_init.paths().len() + freezer_here as usize, frozen.paths().len());
        let mut kid = Kid::spawn(|_| pause_forever());
        with_init.attach(kid.pid).unwrap();
        kid.go();
        with_init.kill_all().unwrap();
        assert!(matches!(kid.wait(), nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)));
        remove_and_check(with_init);
        remove_and_check(frozen);
    }

    fn hog(_: i32) -> i32 {
        const SIZE: usize = 512 << 20;
        // SAFETY: a private anonymous mapping, touched page by page.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return 2;
            }
            let mut off = 0;
            while off < SIZE {
                std::ptr::write_volatile(p.cast::<u8>().add(off), 1);
                off += 4096;
            }
        }
        0
    }

    #[test]
    fn a_memory_hog_is_oom_killed_and_counted() {
        let Some(host) = real_host() else { return };
        const LIMIT: u64 = 32 << 20;
        let cg = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits { memory_bytes: Some(LIMIT), ..Default::default() }, Ending::Frozen).unwrap();
        let mut kid = Kid::spawn(hog);
        cg.attach(kid.pid).unwrap();
        kid.go();
        let st = kid.wait();
        assert!(matches!(st, nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)), "{st:?}");
        let u = cg.usage();
        assert!(u.oom_kills >= 1, "{u:?}");
        assert!(u.peak_memory_bytes >= LIMIT * 3 / 4 && u.peak_memory_bytes <= LIMIT, "{u:?}");
        remove_and_check(cg);
    }

    fn forker(out: i32) -> i32 {
        let mut ok: u32 = 0;
        let mut err: i32 = 0;
        for _ in 0..64 {
            // SAFETY: fork in a single-threaded child.
            let p = unsafe { libc::fork() };
            if p == 0 {
                pause_forever();
            }
            if p < 0 {
                // SAFETY: reading this thread's errno.
                err = unsafe { *libc::__errno_location() };
                break;
            }
            ok += 1;
        }
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&ok.to_ne_bytes());
        msg[4..].copy_from_slice(&err.to_ne_bytes());
        write_out(out, &msg);
        pause_forever()
    }

    #[test]
    fn the_pids_limit_stops_forks() {
        let Some(host) = real_host() else { return };
        let cg = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits { pids: Some(8), ..Default::default() }, Ending::Frozen).unwrap();
        let mut kid = Kid::spawn(forker);
        cg.attach(kid.pid).unwrap();
        kid.go();
        let msg = kid.read(8, 60);
        let ok = u32::from_ne_bytes(msg[..4].try_into().unwrap());
        let err = i32::from_ne_bytes(msg[4..].try_into().unwrap());
        assert_eq!((ok, err), (7, libc::EAGAIN), "forks that worked, then the errno");
        assert_eq!(cg.pids().len(), 8);
        assert!(cg.usage().pids_limit_hits >= 1, "{:?}", cg.usage());
        cg.kill_all().unwrap();
        assert!(cg.pids().is_empty());
        kid.wait();
        remove_and_check(cg);
    }

    fn tree(out: i32) -> i32 {
        // SAFETY: fork/setsid/write/_exit in a single-threaded child.
        unsafe {
            for i in 0..3 {
                if libc::fork() == 0 {
                    if i == 0 {
                        // A daemon: new session, double fork, the middle process exits.
                        libc::setsid();
                        if libc::fork() == 0 {
                            write_out(out, b"d");
                            pause_forever();
                        }
                        libc::_exit(0);
                    }
                    pause_forever();
                }
            }
        }
        write_out(out, b"r");
        pause_forever()
    }

    fn kill_a_tree(use_kill_file: Option<bool>) {
        let Some(host) = real_host() else { return };
        let cg = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits { pids: Some(32), ..Default::default() }, Ending::Frozen).unwrap();
        let mut kid = Kid::spawn(tree);
        cg.attach(kid.pid).unwrap();
        kid.go();
        let mut got = kid.read(2, 60);
        got.sort();
        assert_eq!(got, b"dr");
        // The child, two sleepers and the daemon (the exited middle one is a zombie, not listed).
        let deadline = Instant::now() + Duration::from_secs(20);
        while cg.pids().len() != 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cg.pids().len(), 4, "{:?}", cg.pids());
        match use_kill_file {
            None => cg.kill_all().unwrap(),
            Some(k) => cg.kill_all_by(k).unwrap(),
        }
        assert!(cg.pids().is_empty());
        assert!(matches!(kid.wait(), nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)));
        remove_and_check(cg);
    }

    #[test]
    fn kill_all_ends_a_tree_with_a_daemon() {
        kill_a_tree(None);
    }

    /// A cgroup made below the sandbox's (as a sandbox allowed to could): its processes are
    /// listed and killed, and it is removed first.
    #[test]
    fn cgroups_made_inside_are_killed_and_removed() {
        let Some(host) = real_host() else { return };
        let cg = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits { pids: Some(16), ..Default::default() }, Ending::Frozen).unwrap();
        let mut kid = Kid::spawn(tree);
        cg.attach(kid.pid).unwrap();
        for p in cg.paths() {
            let sub = format!("{p}/inner/deeper");
            std::fs::create_dir_all(&sub).unwrap();
            write_file(&format!("{sub}/cgroup.procs"), &kid.pid.to_string()).unwrap();
        }
        kid.go();
        kid.read(2, 60);
        let deadline = Instant::now() + Duration::from_secs(20);
        while cg.pids().len() != 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cg.pids().len(), 4, "{:?}", cg.pids());
        cg.kill_all().unwrap();
        assert!(matches!(kid.wait(), nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)));
        remove_and_check(cg);
    }

    /// The freeze, SIGKILL, thaw path (the only one on v1; on v2 before 5.14).
    #[test]
    fn kill_all_by_freezing_ends_a_tree() {
        kill_a_tree(Some(false));
    }

    fn cpu_time() -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn busy(_: i32) -> i32 {
        // User time: a long stretch of arithmetic between clock reads (each one is a syscall).
        let start = cpu_time();
        let mut x: u64 = 1;
        while cpu_time() - start < Duration::from_millis(300) {
            for i in 0..2_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
        }
        (x == 0) as i32
    }

    #[test]
    fn cpu_time_is_accounted_and_the_quota_throttles() {
        let Some(host) = real_host() else { return };
        let cg = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits { cpus: Some(0.5), ..Default::default() }, Ending::Frozen).unwrap();
        let mut kid = Kid::spawn(busy);
        cg.attach(kid.pid).unwrap();
        kid.go();
        assert_eq!(kid.wait(), nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(kid.pid), 0));
        let u = cg.usage();
        assert!(u.cpu_user_ms + u.cpu_system_ms >= 250, "{u:?}");
        assert!(u.cpu_user_ms >= 150, "{u:?}");
        let stat = std::fs::read_to_string(cg.file(Controller::Cpu, "cpu.stat").unwrap()).unwrap();
        assert!(keyed(&stat, "nr_throttled").unwrap() >= 1, "{stat}");
        remove_and_check(cg);
    }

    #[test]
    fn the_sweep_of_the_dead_passes_over_a_cgroup_a_living_process_holds() {
        let Some(host) = real_host() else { return };
        // Named after a pid no process has here: to this process, a helper of another pid
        // namespace, between making its cgroup and moving its init in.
        let absent = (2..4_000_000).rev().find(|&p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) == Err(Errno::ESRCH)).unwrap();
        let own = unique_name();
        let name = format!("isolate-{absent}-1-{}", own.rsplit('-').next().unwrap());
        let mut cg = SandboxCgroup::create(&host, &name, &CgroupLimits { pids: Some(8), ..Default::default() }, Ending::WithInit).unwrap();
        assert!(!cg.paths().is_empty());
        for p in cg.paths() {
            assert!(try_hold(p).is_none(), "{p}: its maker holds it");
        }
        remove_left_by_the_dead();
        assert!(cg.paths().iter().all(|p| exists(p)), "a held cgroup is left alone, empty as it is");
        // Its maker gone without removing it (the descriptors close with the process).
        for d in &mut cg.dirs {
            d.held = None;
        }
        remove_left_by_the_dead();
        assert!(cg.paths().iter().all(|p| !exists(p)), "unheld and named after no process: swept");
        cg.removed = true;
    }

    #[test]
    fn a_held_cgroup_removed_meanwhile_is_seen_gone() {
        let Some(host) = real_host() else { return };
        let own = host.v1.iter().find_map(|h| h.own_dir.clone()).or_else(|| host.unified.as_ref().and_then(|u| u.own_dir.clone())).unwrap();
        let path = format!("{own}/{}", unique_name());
        let fd = make_held(&path).unwrap();
        assert!(nix::sys::stat::fstatat(&fd, "cgroup.procs", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok());
        // What make_held looks at once locked, to make it again (a sweeper took it first).
        std::fs::remove_dir(&path).unwrap();
        assert_eq!(nix::sys::stat::fstatat(&fd, "cgroup.procs", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).err(), Some(Errno::ENOENT));
    }

    #[test]
    fn a_failed_create_leaves_nothing() {
        let Some(host) = real_host() else { return };
        let name = unique_name();
        // Passes the plan, refused by the kernel (quota above its ~203 days maximum).
        let e =
            SandboxCgroup::create(&host, &name, &CgroupLimits { memory_bytes: Some(1 << 30), pids: Some(4), cpus: Some(1e9), cpu_time: false }, Ending::Frozen)
                .unwrap_err();
        assert_eq!(e.errno.as_deref(), Some("EINVAL"), "{e:?}");
        assert!(e.path.as_deref().unwrap().contains("cpu"), "{e:?}");
        assert!(e.hint.is_some());
        let mut dirs: Vec<String> = host.v1.iter().filter_map(|h| h.own_dir.clone()).collect();
        dirs.extend(host.unified.iter().filter_map(|u| u.own_dir.clone()));
        for d in dirs {
            assert!(!exists(&format!("{d}/{name}")), "{d}/{name} left behind");
        }
        // An existing name is refused, and its directory is not taken over or removed.
        let cg = SandboxCgroup::create(&host, &name, &CgroupLimits::default(), Ending::Frozen).unwrap();
        let mut kid = Kid::spawn(|_| pause_forever());
        cg.attach(kid.pid).unwrap();
        let e = SandboxCgroup::create(&host, &name, &CgroupLimits::default(), Ending::Frozen).unwrap_err();
        assert_eq!(e.errno.as_deref(), Some("EEXIST"));
        assert!(cg.paths().iter().all(|p| exists(p)));
        kid.go();
        cg.kill_all().unwrap();
        kid.wait();
        remove_and_check(cg);
    }

    /// clone3(CLONE_INTO_CGROUP) with the v2 directory fd: the child starts inside, no attach.
    #[test]
    fn clone_into_the_v2_cgroup() {
        let Some(host) = real_host() else { return };
        if !host.mode.uses_v2() {
            eprintln!("SKIP: CLONE_INTO_CGROUP exists for cgroup v2 only; this host runs {:?}", host.mode);
            return;
        }
        let cg = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits { pids: Some(4), ..Default::default() }, Ending::Frozen).unwrap();
        let (r, w) = pipe();
        let pid = crate::sys::clone3_into_cgroup(libc::CLONE_NEWCGROUP as u64, libc::SIGCHLD as u64, cg.dir_fd_v2().unwrap().as_raw_fd());
        assert!(pid >= 0, "clone3: {}", Errno::last());
        if pid == 0 {
            let mut buf = [0u8; 256];
            // SAFETY: open/read/write on buffers and descriptors of this process, then pause.
            unsafe {
                let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                libc::write(w.as_raw_fd(), buf.as_ptr().cast(), n.max(0) as usize);
            }
            pause_forever();
        }
        drop(w);
        let mut view = Vec::new();
        while !view.ends_with(b"\n") {
            let mut buf = [0u8; 256];
            match nix::unistd::read(&r, &mut buf) {
                Ok(0) => break,
                Ok(n) => view.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        let view = String::from_utf8_lossy(&view);
        // Started inside, with no attach; and a cgroup namespace asked for in the same clone3 is
        // rooted at the target cgroup, not at the parent's.
        assert_eq!(cg.pids(), vec![pid as i32]);
        assert_eq!(view, "0::/\n");
        cg.kill_all().unwrap();
        let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        assert!(matches!(st, nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)), "{st:?}");
        remove_and_check(cg);
    }

    /// A process in a non-root cgroup of its own (one this test created): on v2 the kernel's
    /// no-internal-process rule keeps `memory` from its children, while the threaded-capable
    /// `pids` and `cpu` can still be enabled; on v1 there is no such rule.
    #[test]
    fn nested_in_a_non_root_cgroup() {
        if std::env::var_os("ISOLATE_CGROUP_NESTED").is_some() {
            return nested_body();
        }
        let Some(host) = real_host() else { return };
        use std::os::unix::process::CommandExt;
        let outer = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits::default(), Ending::Frozen).unwrap();
        let procs: Vec<std::ffi::CString> = outer.paths().iter().map(|p| std::ffi::CString::new(format!("{p}/cgroup.procs")).unwrap()).collect();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["cgroup::tests::nested_in_a_non_root_cgroup", "--exact", "--test-threads=1", "--nocapture"]).env("ISOLATE_CGROUP_NESTED", "1");
        // SAFETY: between fork and exec only open/write/close of prepared paths ("0" = this process).
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let out = std::thread::scope(|scope| {
            // A hung nested run must not hang the suite: end everything in the outer cgroup.
            let outer = &outer;
            scope.spawn(move || {
                if finished.recv_timeout(Duration::from_secs(300)).is_err() {
                    let _ = outer.kill_all();
                }
            });
            let out = cmd.output();
            let _ = done.send(());
            out.unwrap()
        });
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        assert!(text.contains("nested: checked"), "{text}");
        remove_and_check(outer);
    }

    fn nested_body() {
        let host = detect().unwrap();
        if host.mode.uses_v2() {
            let u = host.unified.as_ref().unwrap();
            assert!(!u.is_root && u.processes == 1, "{u:?}");
            for c in ["memory", "pids", "cpu"] {
                assert_eq!(u.availability(c), V2Availability::NoInternalProcess, "{c}");
            }
            let e = SandboxCgroup::create(
                &host,
                &unique_name(),
                &CgroupLimits { memory_bytes: Some(64 << 20), pids: Some(8), ..Default::default() },
                Ending::Frozen,
            )
            .unwrap_err();
            assert_eq!(e.errno, None);
            assert!(e.message.contains("memory, pids"), "{e:?}");
            assert!(e.hint.as_deref().unwrap().contains("no-internal-process"), "{e:?}");
            let own = u.own_dir.clone().unwrap();
            let subtree = format!("{own}/cgroup.subtree_control");
            // What the plan foresaw is what the kernel says: EBUSY for a domain controller.
            assert_eq!(write_file(&subtree, "+memory"), Err(libc::EBUSY));

            // Without limits a sandbox cgroup still works here: kill and cpu accounting.
            let cg = SandboxCgroup::create(&host, &unique_name(), &CgroupLimits::default(), Ending::Frozen).unwrap();
            assert!(cg.controllers().is_empty());
            let mut kid = Kid::spawn(busy);
            cg.attach(kid.pid).unwrap();
            kid.go();
            kid.wait();
            assert!(cg.usage().cpu_user_ms >= 150, "{:?}", cg.usage());
            let mut kid = Kid::spawn(tree);
            cg.attach(kid.pid).unwrap();
            kid.go();
            kid.read(2, 60);
            cg.kill_all().unwrap();
            kid.wait();
            remove_and_check(cg);

            // A cgroup made a thread root by someone else (processes plus +pids): its children
            // could only be threaded cgroups; create fails closed and leaves nothing.
            write_file(&subtree, "+pids").unwrap();
            let host = detect().unwrap();
            assert_eq!(host.unified.as_ref().unwrap().availability("pids"), V2Availability::Enabled);
            let name = unique_name();
            let e = SandboxCgroup::create(&host, &name, &CgroupLimits { pids: Some(8), ..Default::default() }, Ending::Frozen).unwrap_err();
            assert!(e.message.contains("thread root"), "{e:?}");
            assert!(!exists(&format!("{own}/{name}")));
            write_file(&subtree, "-pids").unwrap();
        } else {
            let cg = SandboxCgroup::create(&host, &unique_name(), &all_limits(), Ending::Frozen).unwrap();
            for p in cg.paths() {
                assert!(p.contains("/isolate-"), "{p}");
            }
            remove_and_check(cg);
        }
        eprintln!("nested: checked");
    }
}
