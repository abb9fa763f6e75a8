//! New namespaces by every route: unshare, raw clone, clone3, alone and combined.

use crate::sys::{self, ename, syscall};
use crate::{contained, error, escaped, note, Ctx, Res};

/// Errnos that mean the namespace was refused: permission (caps, seccomp, LSM), no syscall, or a
/// namespace count limit of 0 (user.max_*_namespaces).
const NS_REFUSED: &[i32] = &[libc::EPERM, libc::EACCES, libc::ENOSYS, libc::ENOSPC, libc::EUSERS];

fn judge(what: &str, r: Result<i64, i32>) -> Res {
    match r {
        Ok(_) => escaped!("{what} succeeded"),
        Err(e) if NS_REFUSED.contains(&e) => contained!("{what}: {}", ename(e)),
        Err(e) => error!("{what}: {} (undecided)", ename(e)),
    }
}

pub fn unshare_user(_ctx: &Ctx) -> Res {
    // This process is a throwaway child: it may end up in a new namespace.
    note("unshare(CLONE_NEWUSER)");
    judge("unshare(CLONE_NEWUSER)", syscall!(sys::nr::UNSHARE, libc::CLONE_NEWUSER as i64))
}

pub fn clone_newuser(_ctx: &Ctx) -> Res {
    note("clone(CLONE_NEWUSER|SIGCHLD) raw");
    // Raw clone with no new stack behaves like fork: the child leaves at once.
    let r = syscall!(sys::nr::CLONE, (libc::CLONE_NEWUSER | libc::SIGCHLD) as i64, 0i64, 0i64, 0i64, 0i64);
    match r {
        Ok(0) => sys::exit_now(0),
        Ok(pid) => {
            let ended = sys::wait_pid(pid as i32);
            escaped!("clone(CLONE_NEWUSER) made a child in a new user namespace ({ended})")
        }
        Err(e) => judge("clone(CLONE_NEWUSER)", Err(e)),
    }
}

#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
}

/// clone3 with these flags, fork-like (no new stack, no CLONE_VM); the child leaves at once.
pub fn clone3_fork(flags: u64) -> Result<i64, i32> {
    let args = CloneArgs { flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    let r = syscall!(sys::nr::CLONE3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>());
    match r {
        Ok(0) => sys::exit_now(0),
        Ok(pid) => {
            sys::wait_pid(pid as i32);
            Ok(pid)
        }
        Err(e) => Err(e),
    }
}

pub fn clone3_newuser(_ctx: &Ctx) -> Res {
    note("clone3(CLONE_NEWUSER)");
    judge("clone3(CLONE_NEWUSER)", clone3_fork(libc::CLONE_NEWUSER as u64))
}

pub fn unshare_user_combined(_ctx: &Ctx) -> Res {
    let flags =
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP | libc::CLONE_NEWPID;
    note("unshare(CLONE_NEWUSER|NEWNS|NEWNET|NEWUTS|NEWIPC|NEWCGROUP|NEWPID)");
    judge("unshare(CLONE_NEWUSER with every other namespace)", syscall!(sys::nr::UNSHARE, flags as i64))
}

pub fn unshare_other_ns(_ctx: &Ctx) -> Res {
    let mut seen = Vec::new();
    for (name, flag) in [
        ("NEWNS", libc::CLONE_NEWNS as i64),
        ("NEWNET", libc::CLONE_NEWNET as i64),
        ("NEWUTS", libc::CLONE_NEWUTS as i64),
        ("NEWIPC", libc::CLONE_NEWIPC as i64),
        ("NEWPID", libc::CLONE_NEWPID as i64),
        ("NEWCGROUP", libc::CLONE_NEWCGROUP as i64),
        ("NEWTIME", 0x80),
    ] {
        note(&format!("unshare(CLONE_{name})"));
        match syscall!(sys::nr::UNSHARE, flag) {
            Ok(_) => return escaped!("unshare(CLONE_{name}) succeeded"),
            Err(e) if NS_REFUSED.contains(&e) || (name == "NEWTIME" && e == libc::EINVAL) => seen.push(format!("{name}: {}", ename(e))),
            Err(e) => return error!("unshare(CLONE_{name}): {} (undecided)", ename(e)),
        }
    }
    contained!("{}", seen.join(", "))
}
