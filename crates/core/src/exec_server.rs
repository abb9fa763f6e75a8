//! Inside a long-lived sandbox: its init, once the sandbox is built, waits for work from the
//! helper and forks every exec from itself. An exec'd command so starts inside every namespace,
//! under the new root and in the cgroup, and nothing of the host (no fd, no binary, no cwd) is
//! within its reach while it joins: the class of `runc exec` escapes (CVE-2019-5736,
//! CVE-2024-21626) needs a process that enters from outside, and there is none. Each exec takes
//! the same last steps as a sandbox's first command ([`crate::sandbox::exec_command`]).

use crate::error::{SetupError, Step};
use crate::protocol::{ExecRequest, Report, TerminalHandoff, Work};
use crate::sandbox::{exec_command, forwarded_signals, send};
use crate::seccomp::Program;
use crate::spec::Spec;
use crate::sys::{self, Ended};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigmaskHow;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{ForkResult, Pid};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The largest exec request the addon sends (well under a unix socket's default send buffer);
/// the init reads with room for the helper's wrapping of it.
pub const MAX_REQUEST: usize = 128 << 10;
const MAX_WORK: usize = MAX_REQUEST + (4 << 10);

/// What the init needs beyond the capabilities its execs may keep: changing ids and groups and
/// shrinking the bounding set to fork them, and signalling them (a command of another uid than
/// the init's, `user: { uid: 1000 }`, is out of a signal's reach without CAP_KILL: its timeout,
/// its abort and kill() would do nothing). Each exec drops them.
pub(crate) const FORK_CAPS: [&str; 4] = ["SETGID", "SETUID", "SETPCAP", "KILL"];

/// What an exec's command writes on its status pipe as it goes to its execve: b'T' and when
/// (CLOCK_MONOTONIC ns, little-endian). An error, when one follows, is JSON (never a 'T').
fn exec_record(at: u64) -> [u8; 9] {
    let mut r = [b'T'; 9];
    r[1..].copy_from_slice(&at.to_le_bytes());
    r
}

/// Split the record [`exec_record`] made off what a status pipe held.
fn take_exec_record(buf: &mut Vec<u8>) -> Option<u64> {
    if buf.len() < 9 || buf[0] != b'T' {
        return None;
    }
    let at = u64::from_le_bytes(buf[1..9].try_into().ok()?);
    buf.drain(..9);
    Some(at)
}

/// An exec forked but not yet past execve: its status pipe tells which way it went.
struct Starting {
    id: u32,
    pid: Pid,
    status: OwnedFd,
    /// What the status pipe held so far: the [`exec_record`], then an error's JSON if any.
    error: Vec<u8>,
}

struct Server<'a> {
    spec: &'a Spec,
    seccomp: Option<&'a Program>,
    report: OwnedFd,
    work: OwnedFd,
    starting: Vec<Starting>,
    /// Commands past execve, by pid (as this namespace sees it).
    running: HashMap<Pid, u32>,
    /// The process groups of execs whose command ended while what it started in the background
    /// (`sleep 30 &`) still ran in them, by exec id: a group kill (the caller's `exec()` still
    /// waits on their output past its timeout or abort) still reaches them.
    left: HashMap<u32, Pid>,
    /// Terminal masters lent to the helper (see [`TerminalHandoff::lent`]), by exec id: kept open
    /// until it says it is done with one, so the number it takes names nothing else.
    lent: HashMap<u32, OwnedFd>,
    /// The helper asked for a graceful end ([`Work::StopAll`]): it hears once no child is left.
    emptying: bool,
}

fn fail(report: &OwnedFd, e: SetupError) -> ! {
    send(report, &Report::SetupFailed(e));
    sys::exit_now(125)
}

/// The life of a long-lived sandbox's init after setup. Never returns; ends when the helper
/// closes the work socket (or kills it), taking the whole pid namespace with it.
pub fn serve(spec: &Spec, seccomp: Option<&Program>, report: OwnedFd, work: OwnedFd) -> ! {
    // Before anything inside runs: no process of the sandbox may trace the init or open its /proc
    // files (its exe is the host's helper binary, its fds are the helper's sockets).
    let _ = nix::sys::prctl::set_dumpable(false);
    let signals = forwarded_signals();
    // Signals from inside are read and dropped; SIGCHLD is the one the init acts on.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None);
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .unwrap_or_else(|e| fail(&report, SetupError::sys(Step::ForkCommand, e as i32, None)));
    sys::redirect_stdio_to_null();
    // The init keeps only what forking execs needs and what they may keep.
    let caps: Vec<u32> = spec.capabilities.iter().map(String::as_str).chain(FORK_CAPS).filter_map(crate::caps::number).collect();
    if let Err(e) = sys::drop_capabilities(&caps) {
        fail(&report, e);
    }
    // Each exec then looks only at those.
    sys::note_bounding_set(&caps);
    if let Err(e) = crate::sandbox::set_default_nproc(spec) {
        fail(&report, e);
    }
    send(&report, &Report::Ready);
    let mut server =
        Server { spec, seccomp, report, work, starting: Vec::new(), running: HashMap::new(), left: HashMap::new(), lent: HashMap::new(), emptying: false };
    loop {
        server.step(&sfd);
    }
}

impl Server<'_> {
    fn step(&mut self, sfd: &SignalFd) {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN), PollFd::new(self.work.as_fd(), PollFlags::POLLIN)];
        fds.extend(self.starting.iter().map(|s| PollFd::new(s.status.as_fd(), PollFlags::POLLIN)));
        if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
            if e == Errno::EINTR {
                return;
            }
            sys::exit_now(1);
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        // Status pipes first: an exec that ran and already exited must be reported started first.
        let ready_starts: Vec<Pid> = ready[2..].iter().zip(&self.starting).filter(|(r, _)| **r).map(|(_, s)| s.pid).collect();
        for pid in ready_starts {
            self.read_status(pid);
        }
        if ready[1] {
            self.take_work();
        }
        if ready[0] {
            while let Ok(Some(_)) = sfd.read_signal() {}
            self.reap();
        }
    }

    fn take_work(&mut self) {
        let (bytes, fds) = match sys::recv_message(&self.work, MAX_WORK, Step::SendExec) {
            Ok(Some(m)) => m,
            // The helper is gone: so is the sandbox (our exit ends the pid namespace).
            Ok(None) => sys::exit_now(0),
            // A message that cannot be read whole (the helper never sends one) is dropped; any
            // other failure means the socket is unusable.
            Err(e) if matches!(e.errno.as_deref(), Some("EMSGSIZE" | "ENOMEM" | "ENOBUFS")) => return,
            Err(_) => sys::exit_now(0),
        };
        match serde_json::from_slice::<Work>(&bytes) {
            Ok(Work::Exec(req)) => self.start(req, fds),
            Ok(Work::Signal { id, signal, group }) => self.signal(id, signal, group),
            Ok(Work::TerminalTaken { id }) => drop(self.lent.remove(&id)),
            Ok(Work::KillAll) => self.kill_all(),
            Ok(Work::StopAll { signal }) => self.stop_all(signal),
            Err(_) => {}
        }
    }

    /// `group`: the command's whole process group (it leads its own session), else the command;
    /// after the command's end, what is left of its group.
    fn signal(&mut self, id: u32, signal: i32, group: bool) {
        let pid = self.running.iter().find(|(_, i)| **i == id).map(|(p, _)| *p).or_else(|| self.starting.iter().find(|s| s.id == id).map(|s| s.pid));
        if let Some(pid) = pid {
            let target = if group && self.running.contains_key(&pid) { -pid.as_raw() } else { pid.as_raw() };
            // SAFETY: kill(2) on a child of ours (or its process group).
            unsafe { libc::kill(target, signal) };
        } else if let (true, Some(&pgid)) = (group, self.left.get(&id)) {
            if signal_group(pgid, signal) == Err(Errno::ESRCH) {
                self.left.remove(&id);
            }
        }
    }

    fn start(&mut self, req: ExecRequest, stdio: Vec<OwnedFd>) {
        if let Err(e) = self.fork_exec(&req, stdio) {
            send(&self.report, &Report::ExecFailed { id: req.id, error: e });
        }
    }

    fn fork_exec(&mut self, req: &ExecRequest, stdio: Vec<OwnedFd>) -> sys::Result<()> {
        // A terminal is opened here, in the sandbox's devpts; its master goes to the helper.
        let terminal = match req.tty {
            Some(size) => {
                let (master, slave) = sys::open_pty(size.rows, size.cols)?;
                let note = serde_json::to_vec(&TerminalHandoff { terminal: req.id, lent: None }).unwrap_or_default();
                match sys::send_message(&self.work, &note, &[master.as_raw_fd()], Step::OpenPty) {
                    Ok(()) => {}
                    // Another sandbox of this host user filled its count of fds in flight.
                    Err(e) if sys::too_many_in_flight(&e) => {
                        let note = serde_json::to_vec(&TerminalHandoff { terminal: req.id, lent: Some(master.as_raw_fd()) }).unwrap_or_default();
                        sys::send_message(&self.work, &note, &[], Step::OpenPty)?;
                        self.lent.insert(req.id, master);
                    }
                    Err(e) => return Err(e),
                }
                Some(slave)
            }
            None => None,
        };
        let (status_r, status_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).map_err(|e| SetupError::sys(Step::ForkCommand, e as i32, None))?;
        // SAFETY: the init is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(status_r);
                // Nothing of the init's (its report pipe, work socket, signalfd, other execs'
                // status pipes) stays in a joining process, not even until execve.
                let e = match prepare_joiner(&stdio, terminal.as_ref(), &status_w) {
                    Err(e) => e,
                    // A record the init reads before any error: a 9 bytes' write to an empty pipe.
                    Ok(()) => exec_command(self.spec, req.into(), self.seccomp, terminal.as_ref(), &mut |at| {
                        let _ = nix::unistd::write(&status_w, &exec_record(at));
                    }),
                };
                let _ = nix::fcntl::fcntl(&status_w, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()));
                let _ = std::fs::File::from(status_w).write_all(&e.to_bounded_json());
                // SAFETY: leaving the forked child without running the init's atexit handlers.
                unsafe { libc::_exit(127) }
            }
            Ok(ForkResult::Parent { child }) => {
                // Its pid was free: no process of a group by that number is left.
                self.left.retain(|_, pgid| *pgid != child);
                self.starting.push(Starting { id: req.id, pid: child, status: status_r, error: Vec::new() });
                Ok(())
            }
            Err(e) => Err(SetupError::sys(Step::ForkCommand, e as i32, None)),
        }
    }

    /// Read what the exec's status pipe holds; at its end (execve closed it, or the child is
    /// gone) report the exec started or failed.
    fn read_status(&mut self, pid: Pid) {
        let Some(i) = self.starting.iter().position(|s| s.pid == pid) else { return };
        let s = &mut self.starting[i];
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(&s.status, &mut buf) {
                Ok(0) => break,
                Ok(n) => s.error.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                // Not at its end yet (a failure still being written).
                Err(_) => return,
            }
        }
        let mut s = self.starting.remove(i);
        let at = take_exec_record(&mut s.error);
        if s.error.is_empty() {
            self.running.insert(s.pid, s.id);
            send(&self.report, &Report::ExecStarted { id: s.id, pid: s.pid.as_raw(), at: at.unwrap_or(0) });
        } else {
            let e = serde_json::from_slice(&s.error).unwrap_or_else(|_| SetupError::new(Step::Execve, "the command failed before execve"));
            send(&self.report, &Report::ExecFailed { id: s.id, error: e });
        }
    }

    /// Every other process of the sandbox killed and reaped, the sandbox kept (the caller's way
    /// back from a fork bomb that holds every pid, or background processes run wild). As pid 1,
    /// kill(-1) reaches them all; the orphans of the killed come to this init, so once it has no
    /// child none is left. Again until then: one forked while the first kill went round.
    fn kill_all(&mut self) {
        loop {
            // SAFETY: kill(2) as pid 1 of the sandbox's pid namespace: every process in it but this one.
            unsafe { libc::kill(-1, libc::SIGKILL) };
            if self.reap() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.left.clear();
        send(&self.report, &Report::KilledAll);
    }

    /// The sandbox's graceful end: every other process is sent `signal` (as pid 1, kill(-1)
    /// reaches them all); the helper hears once none is left, and kills the sandbox when its
    /// grace has passed before that.
    fn stop_all(&mut self, signal: i32) {
        self.emptying = true;
        // SAFETY: kill(2) as pid 1 of the sandbox's pid namespace: every process in it but this one.
        unsafe { libc::kill(-1, signal) };
        self.reap();
    }

    /// Reap every exited process: the execs' commands are reported, orphans just reaped. True
    /// when no child is left.
    fn reap(&mut self) -> bool {
        let mut none_left = false;
        loop {
            let (pid, report, used) = match sys::wait_child_counted(None, false) {
                Ok((Ended::Exited(pid, code), used)) => (pid, Some((code, None)), Some(used)),
                Ok((Ended::Signaled(pid, signal), used)) => (pid, Some((0, Some(signal))), Some(used)),
                Err(Errno::ECHILD) => {
                    none_left = true;
                    break;
                }
                Ok((Ended::StillAlive, _)) | Err(_) => break,
                Ok((Ended::Other(_), _)) => continue,
            };
            // Its status pipe is at its end now: settle whether it ever ran.
            self.read_status(pid);
            if let (Some(id), Some((code, signal))) = (self.running.remove(&pid), report) {
                if signal_group(pid, 0).is_ok() {
                    self.left.insert(id, pid);
                }
                send(
                    &self.report,
                    &match signal {
                        Some(signal) => Report::ExecSignaled { id, signal, used },
                        None => Report::ExecExited { id, code, used },
                    },
                );
            }
        }
        // Groups emptied since are forgotten: their number may be a new process's (after the
        // pid counter wraps) and its group that of something else.
        self.left.retain(|_, pgid| signal_group(*pgid, 0) != Err(Errno::ESRCH));
        if none_left && self.emptying {
            self.emptying = false;
            send(&self.report, &Report::Emptied);
        }
        none_left
    }
}

/// kill(2) on process group `pgid` (signal 0: whether any process is left in it).
fn signal_group(pgid: Pid, signal: i32) -> Result<(), Errno> {
    // SAFETY: kill(2) with a negative pid, a group of this sandbox's (the init's namespace).
    Errno::result(unsafe { libc::kill(-pgid.as_raw(), signal) }).map(drop)
}

/// A joining process's first steps: its stdio in place (a terminal's slave is put there by
/// `exec_command`), then every other descriptor of the init closed, not left for execve.
fn prepare_joiner(stdio: &[OwnedFd], terminal: Option<&OwnedFd>, status: &OwnedFd) -> sys::Result<()> {
    if terminal.is_none() {
        sys::install_stdio(stdio)?;
    }
    let mut keep = vec![status.as_raw_fd()];
    keep.extend(terminal.map(|t| t.as_raw_fd()));
    sys::close_fds_except(&keep);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_record_comes_off_before_an_error_and_a_bare_error_stays() {
        let mut started = exec_record(123_456_789).to_vec();
        assert_eq!(take_exec_record(&mut started), Some(123_456_789));
        assert!(started.is_empty());
        let mut failed = [exec_record(7).as_slice(), br#"{"step":"execve"}"#].concat();
        assert_eq!(take_exec_record(&mut failed), Some(7));
        assert_eq!(failed, br#"{"step":"execve"}"#);
        let mut early = br#"{"step":"chdir"}"#.to_vec();
        assert_eq!(take_exec_record(&mut early), None);
        assert_eq!(early, br#"{"step":"chdir"}"#);
    }
}
