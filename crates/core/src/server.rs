//! The helper server: one process per Node process (`isolate-helper --warm --server`) that forks
//! its helpers, warm and cold. A helper exec'd for each sandbox pays the exec, the loading of its pages and
//! the C library's start (which asks the CPU for its features and caches: in a VM, each of those
//! questions exits to the hypervisor), all of it work that has the same result every time; a
//! fork of this process, which has done that once and nothing else, skips it. The server holds
//! nothing of any sandbox: it only ever sees the descriptors it forks a helper with, and closes
//! its copies at once, so a forked helper starts as fresh as an exec'd one.
//!
//! Protocol on its socket (SOCK_SEQPACKET, fd 3): the addon sends `warm` or `cold` and its umask
//! (an `i32`, native byte order; -1 for none), with its working directory and then the helper's
//! descriptors attached, in the order of their slots in the layout an exec'd helper gets (warm:
//! 3 the control socket, 5 the handoff socket; cold: 0-2 the sandbox's stdio, 3 the control
//! socket, 4 the spec, 5 for a long-lived sandbox the exec socket). The forked helper takes the
//! working directory and the umask as an exec'd one would have inherited them at that moment.
//! The server answers with the new helper's pid (an `i32`), or a negative errno. The server reaps
//! its helpers; the addon never waits on them. It exits when the addon's end closes (Node is
//! gone): its helpers end on their own lifelines.

use crate::error::{SetupError, Step};
use crate::protocol::Event;
use crate::sys::{self, Ended};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{fork, ForkResult};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The server's socket, as the addon starts it.
pub const SOCKET_FD: i32 = 3;
/// What the addon asks for: a warm helper (`--warm`) or a cold one (a spec in slot 4).
pub const WARM: &[u8] = b"warm";
pub const COLD: &[u8] = b"cold";
/// The slots a helper's descriptors take, in the order they are attached.
pub const WARM_SLOTS: &[i32] = &[3, 5];
pub const COLD_SLOTS: &[i32] = &[0, 1, 2, 3, 4, 5];
/// Where the control socket sits in both layouts.
const CONTROL_SLOT: i32 = 3;
/// The longest request: the word and the umask.
const REQUEST: usize = 8;

/// How the server's loop ends for the process that returns from it.
pub enum Outcome {
    /// The server: the addon's end is closed (exit with this status).
    Exit(i32),
    /// A helper forked just now, its descriptors in their slots, its working directory and umask
    /// set: it runs as a warm helper or a cold one, for `caller` (the server's parent, Node).
    Helper { warm: bool, caller: i32 },
}

/// Serve fork requests until the addon goes away. Returns in the server (to exit) and in each
/// forked helper (to run as the helper it was asked for); the helper has SIGCHLD unblocked again
/// and holds no descriptor of the server's.
pub fn run(sock: OwnedFd) -> Outcome {
    // SAFETY: getppid cannot fail.
    let caller = unsafe { libc::getppid() };
    // Apart from the helpers in a process list (they share its command line).
    let _ = nix::sys::prctl::set_name(c"isolate-server");
    // Once, for every helper it forks (they inherit it).
    let euid = nix::unistd::geteuid().as_raw();
    let _ = crate::supervisor::sandbox_host_ids(crate::spec::Ids { uid: euid, gid: nix::unistd::getegid().as_raw() });
    let _ = crate::supervisor::namespace_owners();
    // Every sandbox's command asks it (its default process bound): read here, not per command.
    let _ = crate::probe::nproc_counted_per_user_namespace();
    // Reaped between requests, from a signalfd: a handler would run in the forked helpers too.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    if chld.thread_block().is_err() {
        return Outcome::Exit(1);
    }
    let Ok(sfd) = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) else { return Outcome::Exit(1) };
    // What helpers killed with their whole service left (no server outlived them to sweep).
    sweep(crate::cgroup::remove_left_by_the_dead);
    loop {
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return Outcome::Exit(1),
            Ok(_) => {}
        }
        let request = fds[0].revents().unwrap_or(PollFlags::empty());
        let children = fds[1].revents().unwrap_or(PollFlags::empty());
        if children.contains(PollFlags::POLLIN) {
            while let Ok(Some(_)) = sfd.read_signal() {}
            reap_helpers();
        }
        if request.is_empty() {
            continue;
        }
        let (bytes, got) = match sys::recv_message(&sock, REQUEST, Step::ReadSpec) {
            Ok(Some(m)) => m,
            // The addon's end is closed, or unreadable: Node is gone.
            Ok(None) | Err(_) => return Outcome::Exit(0),
        };
        let Some((warm, umask)) = parse(&bytes, got.len()) else {
            if answer(&sock, -libc::EINVAL).is_err() {
                return Outcome::Exit(0);
            }
            continue;
        };
        // SAFETY: this process is single-threaded; the child only returns to main, which runs
        // the helper as an exec'd one would.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(sfd);
                drop(sock);
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&chld), None);
                let _ = nix::sys::prctl::set_name(c"isolate-helper");
                retitle(warm);
                if !take_place(got, if warm { WARM_SLOTS } else { COLD_SLOTS }, umask) {
                    // SAFETY: leaving the forked child at once; nothing of it needs unwinding.
                    unsafe { libc::_exit(1) };
                }
                return Outcome::Helper { warm, caller };
            }
            Ok(ForkResult::Parent { child }) => {
                // Ours go now: the helper holds the only copies besides the addon's.
                drop(got);
                if answer(&sock, child.as_raw()).is_err() {
                    return Outcome::Exit(0);
                }
            }
            Err(e) => {
                drop(got);
                if answer(&sock, -(e as i32)).is_err() {
                    return Outcome::Exit(0);
                }
            }
        }
    }
}

/// The kind of helper and the umask of a request with `fds` descriptors attached (the working
/// directory, then the helper's); None if it is not one.
fn parse(bytes: &[u8], fds: usize) -> Option<(bool, Option<u32>)> {
    let (word, umask) = bytes.split_at_checked(4)?;
    let umask = i32::from_ne_bytes(umask.try_into().ok()?);
    let umask = u32::try_from(umask).ok();
    match word {
        w if w == WARM && fds == 1 + WARM_SLOTS.len() => Some((true, umask)),
        w if w == COLD && (fds == COLD_SLOTS.len() || fds == 1 + COLD_SLOTS.len()) => Some((false, umask)),
        _ => None,
    }
}

/// In the forked helper: the addon's working directory and umask, and each descriptor in its slot
/// (moved out of the way first: one may already sit in another's slot); main then closes
/// whatever else is open, as for an exec'd helper. On a failure (out of descriptors), the error goes to the control socket, as the helper's own.
fn take_place(mut got: Vec<OwnedFd>, slots: &[i32], umask: Option<u32>) -> bool {
    let control = slots.iter().position(|&s| s == CONTROL_SLOT);
    let report = |to: Option<&OwnedFd>, e: Errno| {
        let error = SetupError::sys(Step::ReadSpec, e as i32, None)
            .with_hint("the helper server could not give a forked helper its descriptors: this process may be out of them (RLIMIT_NOFILE)");
        if let Some(fd) = to {
            let _ = nix::unistd::write(fd, &Event::Error(error).to_line());
        }
        false
    };
    let cwd = got.remove(0);
    if let Err(e) = nix::unistd::fchdir(&cwd) {
        return report(control.and_then(|i| got.get(i)), e);
    }
    drop(cwd);
    if let Some(mask) = umask {
        sys::set_umask(mask);
    }
    // Above every slot (not higher: the caller's RLIMIT_NOFILE may be small).
    let above = slots.iter().max().map_or(0, |s| s + 1);
    let high: Result<Vec<OwnedFd>, Errno> = got.iter().map(|fd| sys::dup_above(fd.as_fd(), above)).collect();
    let high = match high {
        Ok(h) => h,
        Err(e) => return report(control.and_then(|i| got.get(i)), e),
    };
    drop(got);
    for (fd, &slot) in high.iter().zip(slots) {
        // SAFETY: dup2 onto a slot of the layout; what was there (nothing of ours) is replaced.
        if unsafe { libc::dup2(fd.as_raw_fd(), slot) } < 0 {
            return report(control.and_then(|i| high.get(i)), Errno::last());
        }
    }
    true
}

/// Show a forked helper in a process list as what it is: `isolate-helper --warm --forked` or
/// `isolate-helper --cold --forked`, written over the server's own `--warm --server` (the same
/// lengths: nothing beyond the arguments' memory is touched), as setproctitle does.
fn retitle(warm: bool) {
    extern "C" {
        /// glibc's and musl's pointer to argv[0], the start of the arguments' memory.
        static program_invocation_name: *mut libc::c_char;
    }
    // SAFETY: program_invocation_name points at argv[0] as the kernel laid it out, followed by
    // the other arguments, each NUL-terminated; only bytes of arguments that are checked to be
    // exactly `--warm` and `--server` are written, with strings of the same lengths.
    unsafe {
        let argv0 = program_invocation_name;
        if argv0.is_null() {
            return;
        }
        let first = argv0.add(libc::strlen(argv0) + 1);
        if std::ffi::CStr::from_ptr(first).to_bytes() != b"--warm" {
            return;
        }
        let second = first.add(b"--warm".len() + 1);
        if std::ffi::CStr::from_ptr(second).to_bytes() != b"--server" {
            return;
        }
        let kind: &[u8; 6] = if warm { b"--warm" } else { b"--cold" };
        std::ptr::copy_nonoverlapping(kind.as_ptr(), first.cast::<u8>(), kind.len());
        std::ptr::copy_nonoverlapping(b"--forked".as_ptr(), second.cast::<u8>(), b"--forked".len());
    }
}

fn answer(sock: &OwnedFd, value: i32) -> Result<(), crate::SetupError> {
    sys::send_message(sock, &value.to_ne_bytes(), &[], Step::ReadSpec)
}

/// Reap every helper that ended. One killed by a signal (or crashed) removed no cgroup: a child
/// of the server removes what it left, off the server's loop (rmdir may wait for its sandbox's
/// last processes to go), known by its pid and by when it started (the pid is free once reaped).
fn reap_helpers() {
    while let Ok(status) = sys::reap_child(None) {
        match status {
            (Ended::StillAlive, _) => break,
            (Ended::Signaled(pid, _), started) => sweep(|| crate::cgroup::remove_left_by(pid.as_raw(), started)),
            _ => {}
        }
    }
}

/// Cgroup removal in a child of its own (reaped as a helper is), off the server's loop.
fn sweep(remove: impl FnOnce()) {
    // SAFETY: this process is single-threaded; the child runs no destructor and exits.
    if let Ok(ForkResult::Child) = unsafe { fork() } {
        sys::close_fds_except(&[]);
        let _ = nix::sys::prctl::set_name(c"isolate-sweep");
        remove();
        // SAFETY: leaving the forked child without unwinding.
        unsafe { libc::_exit(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(word: &[u8], umask: i32) -> Vec<u8> {
        [word, &umask.to_ne_bytes()].concat()
    }

    #[test]
    fn a_request_names_its_kind_its_umask_and_brings_the_descriptors_of_its_layout() {
        assert_eq!(parse(&request(WARM, 0o022), 3), Some((true, Some(0o022))), "the working directory, control, handoff");
        assert_eq!(parse(&request(COLD, 0o077), 6), Some((false, Some(0o077))), "the working directory, stdio, control, spec");
        assert_eq!(parse(&request(COLD, -1), 7), Some((false, None)), "and a long-lived sandbox's exec socket; no umask known");
        assert_eq!(parse(&request(WARM, 0), 2), None, "a descriptor missing (the server out of them)");
        assert_eq!(parse(&request(COLD, 0), 5), None);
        assert_eq!(parse(&request(COLD, 0), 8), None, "one too many");
        assert_eq!(parse(b"warm", 3), None, "no umask");
        assert_eq!(parse(&request(b"exec", 0), 3), None, "no such kind");
    }
}
