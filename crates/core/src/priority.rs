//! Where a helper's work stands in the CPU's queue. A helper sets up and supervises a sandbox on
//! its caller's behalf. It runs in the helper server's session (or a session of its own when Node
//! spawned it), away from the caller's terminal and its signals; where the kernel's scheduling
//! autogroups apply (Node in the root cpu group), a session is a scheduling group, so every
//! helper, zygote and init of one Node process works in one group beside Node's: a storm of
//! starts weighs as much as Node's group, however many run (each command, in a session of its
//! own, is a group of its own). A helper Node spawns itself, where the helper server could not
//! start, is a group of its own too. In a cpu cgroup they share the caller's; a sandbox in a cpu
//! cgroup of its own (`limits.cpus`; on v1 any warm one) has its init and command weighed by that
//! cgroup (no autogroup applies beneath the root cpu group). Within its group the
//! helper steps back to nice 19: behind the processes of sandboxes starting (and, in a shared
//! cpu cgroup, behind the caller's own threads), and still with the group's whole share when they
//! are idle. The sandbox's processes are its own work, not the helper's: each is given the
//! caller's nice back before it runs anything of the sandbox's (the command must see the priority
//! its caller had). Only a helper that can give it back steps back (raising a process's priority
//! takes CAP_SYS_NICE); any other runs at the caller's nice throughout.
//!
//! Work done ahead of need (a warm helper's) runs at idle priority on the same condition: behind
//! every start in its group. Measured on a 2-core VM with autogroups (2026-12-01): helpers in
//! Node's own session and group put each init of a 32-way storm, at the caller's nice, beside
//! Node's main thread, and the event loop's p99 delay rose from ~2.8 to ~3.9 ms.

use crate::error::SetupError;
use crate::sys;
use std::sync::atomic::{AtomicI32, Ordering};

/// How far a helper steps back.
pub const BEHIND: i32 = 19;

/// The caller's nice when this helper stepped back; [`UNSET`] when it did not.
static CALLER: AtomicI32 = AtomicI32::new(UNSET);
const UNSET: i32 = i32::MIN;
/// The caller's pid, whose nice [`as_caller`] reads again: a warm helper may wait a long time
/// for its spec, and the caller may have changed its nice meanwhile (`os.setPriority`).
static CALLER_PID: AtomicI32 = AtomicI32::new(0);

/// At the helper's start, before any work: record the caller's nice (its parent's: Node's main
/// thread, what `os.getPriority()` says) and step back behind it.
pub fn step_back() {
    // SAFETY: getppid cannot fail.
    step_back_behind(unsafe { libc::getppid() });
}

/// [`step_back`] behind `caller` (a pid): a helper forked by the helper server
/// ([`crate::server`]) reads its caller's nice as it is now, not as it was when the server started.
pub fn step_back_behind(caller: i32) {
    CALLER.store(UNSET, Ordering::Relaxed);
    CALLER_PID.store(caller, Ordering::Relaxed);
    let Ok(caller) = sys::nice(caller).or_else(|_| sys::nice(0)) else { return };
    if caller < BEHIND && sys::may_renice() && sys::set_nice(0, BEHIND).is_ok() {
        CALLER.store(caller, Ordering::Relaxed);
        return;
    }
    // Nothing will be given back: the helper, and so its sandbox, run at the caller's nice where
    // this thread may take it (a lower nice than the spawning thread's takes CAP_SYS_NICE).
    let _ = sys::set_nice(0, caller);
}

/// Run `spawn` (a posix_spawn of a helper, on one of the caller's threads) with this thread
/// behind for its length, so that the helper is born behind: its exec and its start are work
/// for the caller too, and a spawning thread at the caller's nice would be woken ahead of the
/// caller's main thread. Only where the thread's nice can be put back.
pub fn born_behind<T>(spawn: impl FnOnce() -> T) -> T {
    let before = if sys::may_renice() { sys::nice(0).ok().filter(|n| *n < BEHIND) } else { None };
    let before = before.filter(|_| sys::set_nice(0, BEHIND).is_ok());
    let out = spawn();
    if let Some(n) = before {
        let _ = sys::set_nice(0, n);
    }
    out
}

/// Whether this helper stepped back (and so may put its work ahead at idle priority).
pub fn stepped_back() -> bool {
    CALLER.load(Ordering::Relaxed) != UNSET
}

/// Run work done ahead of need (0: this process) only on CPU time nobody else wants.
pub fn idle_ahead(pid: i32) {
    if stepped_back() {
        let _ = sys::set_idle_priority(pid);
    }
}

/// The helper itself, done with work ahead: back to the default policy, still behind its caller.
pub fn leave_idle() {
    if stepped_back() {
        let _ = sys::set_normal_priority(0);
    }
}

/// Give a process of the sandbox (made by this helper, or by its zygote) the caller's policy and
/// nice as they are now (else as they were when this helper stepped back), before it runs
/// anything of the sandbox's.
pub fn as_caller(pid: i32) -> Result<(), SetupError> {
    let now = match CALLER_PID.load(Ordering::Relaxed) {
        0 => None,
        caller => sys::nice(caller).ok(),
    };
    let recorded = CALLER.load(Ordering::Relaxed);
    if recorded == UNSET {
        // Not stepped back: the process has the caller's nice as it was at this helper's start.
        // One the caller raised since is followed (that takes no privilege); one it lowered
        // cannot be without CAP_SYS_NICE, and stays.
        if let Some(n) = now {
            let _ = sys::set_nice(pid, n);
        }
        return Ok(());
    }
    let caller = now.unwrap_or(recorded);
    sys::set_normal_priority(pid)?;
    sys::set_nice(pid, caller).map_err(|e| e.with_hint("the helper runs at nice 19 and could not give the sandbox its caller's nice back"))
}
