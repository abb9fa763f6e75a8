//! Where a helper's work stands in the CPU's queue. A helper sets up and supervises a sandbox on
//! its caller's behalf, in the caller's scheduling group (Node's autogroup, or its cpu cgroup):
//! at the default nice, thirty helpers starting at once each weigh as much there as Node's own
//! main thread, and the event loop waits behind them. So the helper steps back to nice 19 when it
//! starts: inside that group it yields to the caller's threads, and it still has the group's
//! whole share when the caller is idle (nice is relative within a group, so this never starves
//! it against the rest of the host). The sandbox's processes are its own work, not the helper's:
//! each is given the caller's nice back before it runs anything of the sandbox's (the command
//! must see the priority its caller had). Only a helper that can give it back steps back (raising
//! a process's priority takes CAP_SYS_NICE); any other runs at the caller's nice throughout.
//!
//! Work done ahead of need (a warm helper's) runs at idle priority on the same condition.

use crate::error::SetupError;
use crate::sys;
use std::sync::atomic::{AtomicI32, Ordering};

/// How far a helper steps back.
pub const BEHIND: i32 = 19;

/// The caller's nice when this helper stepped back; [`UNSET`] when it did not.
static CALLER: AtomicI32 = AtomicI32::new(UNSET);
const UNSET: i32 = i32::MIN;

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
/// nice, before it runs anything of the sandbox's.
pub fn as_caller(pid: i32) -> Result<(), SetupError> {
    let caller = CALLER.load(Ordering::Relaxed);
    if caller == UNSET {
        return Ok(());
    }
    sys::set_normal_priority(pid)?;
    sys::set_nice(pid, caller).map_err(|e| e.with_hint("the helper runs at nice 19 and could not give the sandbox its caller's nice back"))
}
