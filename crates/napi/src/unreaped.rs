//! Children a JavaScript thread started on its own thread and has not reaped (image tools and
//! probes), and the directories its unpacks and imports made and have not settled.
//!
//! An unpack or import runs in the `isolate-image` process for as long as the archive takes;
//! JavaScript reaps it and, when it failed, removes the directory the call made. A worker thread
//! terminated meanwhile runs none of that: the tool would go on writing until its next report met
//! the closed pipe, stay a zombie of the process, and leave its half-made tree. So the thread
//! remembers each such child until it is reaped ([`forget`]), and each directory a call made until
//! that call has settled (`settleMade`: it succeeded, or its failure removed the directory), and
//! its environment's teardown ([`end_unreaped`]; also called at the process's `exit`) ends what is
//! left as a failed call ends: a tool is asked to stop (SIGTERM: it empties a target it made while
//! it holds its lock), a probe (which may be making the namespaces and cgroup it tries) is waited
//! for; a probe is killed after a second, a tool after two (as lib/rootfs.ts kills one asked to
//! stop: on a loaded machine its emptying took more than a second), each is reaped, then the
//! directories go if empty (not while a tool is still unreaped after 4 s: it could still write
//! there). A pid is safe to signal while it is remembered: an unreaped child's pid is not reused.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::cell::RefCell;
use std::path::PathBuf;

/// How a child that is still unreaped at the teardown ends.
pub(crate) enum End {
    /// An image tool.
    Kill,
    /// A probe: waited for (a second).
    Wait,
}

thread_local! {
    static CHILDREN: RefCell<Vec<(i32, End)>> = const { RefCell::new(Vec::new()) };
    static MADE: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Remember `pid`, started on `env`'s thread, until it is reaped, and `made` until its call
/// settles (not where the environment refuses a cleanup hook: nothing would end them then).
pub(crate) fn remember(env: &Env, pid: i32, end: End, made: Option<PathBuf>) {
    if !crate::teardown::watch(env) {
        return;
    }
    CHILDREN.with_borrow_mut(|children| children.push((pid, end)));
    MADE.with_borrow_mut(|made_dirs| made_dirs.extend(made));
}

/// `pid` was reaped: nothing is left to end.
pub(crate) fn forget(pid: i32) {
    CHILDREN.with_borrow_mut(|children| children.retain(|(p, _)| *p != pid));
}

/// The call that made `dir` has settled: it is the caller's now (or gone).
#[napi]
pub fn settle_made(dir: String) {
    let dir = PathBuf::from(dir);
    // One entry: another call into the same new directory (which found it made) has its own.
    MADE.with_borrow_mut(|made_dirs| {
        if let Some(i) = made_dirs.iter().position(|d| *d == dir) {
            made_dirs.swap_remove(i);
        }
    });
}

/// End this thread's unreaped children and remove the directories of its unsettled calls. Its
/// environment's teardown runs it ([`crate::teardown`]); JavaScript runs it at the process's `exit`, where Node runs no
/// cleanup hook.
#[napi]
pub fn end_unreaped() {
    use nix::sys::signal::{kill, Signal};
    use std::time::{Duration, Instant};
    let mut left = CHILDREN.with_borrow_mut(std::mem::take);
    for (pid, end) in &left {
        if matches!(end, End::Kill) {
            // Asked to stop: it empties a target it made while it still holds its lock.
            let _ = kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGTERM);
        }
    }
    // Bounded: a teardown never hangs on a child (a probe that hangs, a tool in an uninterruptible
    // read of a hung NFS mount).
    let start = Instant::now();
    let grace = |end: &End| Duration::from_secs(if matches!(end, End::Kill) { 2 } else { 1 });
    let mut killed: Vec<i32> = Vec::new();
    loop {
        // A probe or an image tool: no cgroup of theirs to look for.
        left.retain(|(pid, _)| !crate::reap_helper(*pid, Some(false)));
        if left.is_empty() || start.elapsed() > Duration::from_secs(4) {
            break;
        }
        for (pid, end) in &left {
            if start.elapsed() > grace(end) && !killed.contains(pid) {
                let _ = kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
                killed.push(*pid);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // A tool not reaped could still write into its tree: that tree stays (and the pids are not
    // remembered any more: nothing signals them later, when their numbers may be another's).
    if left.iter().any(|(_, end)| matches!(end, End::Kill)) {
        MADE.with_borrow_mut(std::mem::take);
        return;
    }
    for dir in MADE.with_borrow_mut(std::mem::take) {
        // Emptied by its tool if that tool made it (another call may have, and holds it): only
        // an empty directory goes, never a symlink that took its place.
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}
