//! Whether a process of a sandbox waits to read its terminal right now: what a person at the
//! keyboard sees before typing ^D. The terminal's own state cannot tell a program that waits in
//! read from one still starting up (nothing is unread in either case), so this looks where the
//! kernel keeps it: each task's blocked system call (/proc/PID/task/TID/syscall, readable by
//! whoever may trace the task: the helper, which started the sandbox), its state (a stopped task
//! waits for nothing), and the descriptors that call names: for read, readv, pread, preadv,
//! splice, tee, sendfile and copy_file_range the one it reads; for poll, ppoll, select and pselect those it waits to read (from the
//! caller's arguments in its memory). An epoll set does not tell cheaply which descriptors it
//! reads: its fdinfo is formatted whole by the kernel, and kcmp(KCMP_EPOLL_TFD) walks the whole
//! set under a lock that the sandbox can hold, either way as long as the sandbox likes (a set may
//! hold millions of entries). So a task waiting in epoll (or in a call restarted after a stop,
//! whose first form is gone) counts as a reader when it holds this terminal, as its controlling
//! terminal, in the terminal's foreground process group: what a person sees of a program waiting
//! for keys, whether or not it reads them yet. Descriptors are looked up in the task's own table
//! (a thread may have one of its own; a thread group whose leader has exited has none at the
//! process's path).
//!
//! Pids are the host's; a pid reused meanwhile by an unrelated process cannot hold this
//! sandbox's terminal (its devpts is the sandbox's own), so it never looks like a reader.
//!
//! A poll or select call names its descriptors in the caller's memory, read through
//! /proc/PID/task/TID/mem. A page there could make that read wait as long as the sandbox likes
//! only through a userfaultfd that handles the kernel's own faults, which an unprivileged process
//! may make only where `vm.unprivileged_userfaultfd` is 1; the default seccomp profile refuses
//! userfaultfd outright. Elsewhere such calls count as unknown, and the relay falls back to
//! watching the terminal alone.
//!
//! What a look costs is bounded (tasks, files opened, bytes of memory read), and it makes no call
//! that waits on a lock or a page the sandbox controls: the one read that takes such a lock, of
//! a task's memory (its mmap lock), is made by a child given 20 ms, once per look at most when
//! it fails; the relay spaces looks by their cost.

use std::collections::HashSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// One terminal: the devpts instance and device number of its slave.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Terminal {
    dev: u64,
    rdev: u64,
}

impl Terminal {
    /// The terminal whose slave `fd` is.
    pub fn of(fd: &OwnedFd) -> Option<Terminal> {
        let st = nix::sys::stat::fstat(fd).ok()?;
        (st.st_mode & libc::S_IFMT == libc::S_IFCHR).then_some(Terminal { dev: st.st_dev, rdev: st.st_rdev })
    }
}

/// The sandbox whose tasks are looked at.
#[derive(Clone, Copy, Debug)]
pub struct Sandbox {
    /// Its pid 1, a host pid.
    pub init: i32,
    /// Whether its tasks' memory can be read without waiting on them (see the module's notes).
    pub memory: bool,
}

impl Sandbox {
    pub fn of(spec: &crate::spec::Spec, init: i32) -> Sandbox {
        let no_user_faults = || std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").is_ok_and(|v| v.trim() == "0");
        // Only a sandbox that has or may start terminals reads the setting. Without a user
        // namespace a kept CAP_SYS_PTRACE is the host's, which may make any userfaultfd.
        let terminals = spec.tty.is_some() || spec.persistent;
        let memory = terminals && (spec.seccomp == crate::spec::Seccomp::Default || (spec.namespaces.user && no_user_faults()));
        Sandbox { init, memory }
    }
}

/// What a look found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Readers {
    /// A task waits in a call that returns once the terminal has input.
    Waiting,
    /// Every task was seen, and none waits for the terminal.
    NoneWaiting,
    /// Some task could not be seen (not traceable, gone meanwhile).
    Unknown,
    /// More tasks than a look reads: as unknown, and likely to stay so for a while.
    TooMany,
}

/// At most this many tasks are looked at in one look; beyond, [`Readers::TooMany`].
const MAX_TASKS: usize = 512;
/// At most this many files are read or looked at in one look (a task's few, and each of its
/// descriptors a wait needs); beyond, [`Readers::Unknown`].
const MAX_FILES: usize = 4096;
/// At most this many entries of one poll array or descriptors of one select set are looked at;
/// beyond, unknown.
const MAX_FDS: u64 = 16384;
/// At most this many bytes of the tasks' memory in one look; beyond, unknown.
const MAX_MEMORY: usize = 1 << 20;

/// Whether a task of the process tree under the sandbox's init waits to read `tty`.
pub fn look(sandbox: &Sandbox, tty: Terminal) -> Readers {
    let init = sandbox.init;
    let mut pending = vec![init];
    let mut seen = 0usize;
    let mut unknown = false;
    let mut budget = Budget { files: MAX_FILES, memory: MAX_MEMORY };
    while let Some(pid) = pending.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for tid in tasks.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
            seen += 1;
            if seen > MAX_TASKS {
                return Readers::TooMany;
            }
            if !budget.take(3) {
                return Readers::Unknown;
            }
            let dir = format!("/proc/{pid}/task/{tid}");
            match read_small(&format!("{dir}/children")) {
                Some(text) => pending.extend(text.split_whitespace().filter_map(|c| c.parse::<i32>().ok())),
                // No children file (a kernel without CONFIG_PROC_CHILDREN): the tree cannot be walked.
                None if std::path::Path::new(&dir).exists() => unknown = true,
                None => {}
            }
            // The init reads no terminal; it is not dumpable, so a helper that is not root may
            // not look at it anyway.
            if pid == init {
                continue;
            }
            let task = Task { dir: &dir };
            match read_small(&format!("{dir}/syscall")).map(|s| blocked_call(&s)) {
                Some(Some(call)) if !matches!(watched(&call), Watched::Nothing) => match task.waits_for(&call, tty, sandbox.memory, &mut budget) {
                    Some(true) => return Readers::Waiting,
                    Some(false) => {}
                    None => unknown = true,
                },
                Some(_) => {}
                // Gone meanwhile, or not ours to see.
                None => unknown |= std::path::Path::new(&dir).exists(),
            }
        }
    }
    if unknown {
        Readers::Unknown
    } else {
        Readers::NoneWaiting
    }
}

/// What a look may still do.
struct Budget {
    files: usize,
    memory: usize,
}

impl Budget {
    fn take(&mut self, files: usize) -> bool {
        self.files = self.files.saturating_sub(files);
        self.files > 0
    }

    fn take_memory(&mut self, bytes: u64) -> bool {
        let Some(left) = usize::try_from(bytes).ok().and_then(|b| self.memory.checked_sub(b)) else { return false };
        self.memory = left;
        true
    }

    /// A read of memory failed (or ran out of its time): none more in this look, so one look
    /// waits at most one read's bound, however many tasks poll. Always None.
    fn spend_memory<T>(&mut self) -> Option<T> {
        self.memory = 0;
        None
    }
}

/// A small /proc file's text (a task's name in it may be any bytes); None when it is missing,
/// unreadable, or longer than a look reads (a cut list of pids would name a wrong last one).
fn read_small(path: &str) -> Option<String> {
    const CAP: u64 = 64 << 10;
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(CAP).read_to_end(&mut bytes).ok()?;
    (bytes.len() < CAP as usize).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// A task's blocked call as /proc/PID/syscall shows it: the number and six arguments.
#[derive(Debug, PartialEq, Eq)]
struct Call {
    nr: i64,
    args: [u64; 6],
}

/// The call in a /proc/PID/syscall line: "NR ARG1..ARG6 SP PC" for a task blocked in a call;
/// "running", or "-1 SP PC" for one blocked outside a call, are none.
fn blocked_call(line: &str) -> Option<Call> {
    let mut fields = line.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some(Call { nr, args })
}

/// Which descriptors a call waits to read, where it names them in its arguments.
enum Watched {
    One(u64),
    PollArray {
        at: u64,
        count: u64,
    },
    SelectSet {
        at: u64,
        nfds: u64,
    },
    /// An epoll wait, or a call restarted after a stop (restart_syscall): see the module's notes.
    Holder,
    Nothing,
}

fn watched(call: &Call) -> Watched {
    let a = call.args;
    let nr = call.nr;
    if [libc::SYS_read, libc::SYS_readv, libc::SYS_pread64, libc::SYS_preadv, libc::SYS_preadv2, libc::SYS_splice, libc::SYS_tee, libc::SYS_copy_file_range]
        .contains(&nr)
    {
        return Watched::One(a[0]);
    }
    if nr == libc::SYS_sendfile {
        return Watched::One(a[1]);
    }
    if nr == libc::SYS_ppoll {
        return Watched::PollArray { at: a[0], count: a[1] };
    }
    if nr == libc::SYS_pselect6 {
        return Watched::SelectSet { at: a[1], nfds: a[0] };
    }
    if [libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2, libc::SYS_restart_syscall].contains(&nr) {
        return Watched::Holder;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_poll {
            return Watched::PollArray { at: a[0], count: a[1] };
        }
        if nr == libc::SYS_select {
            return Watched::SelectSet { at: a[1], nfds: a[0] };
        }
        if nr == libc::SYS_epoll_wait {
            return Watched::Holder;
        }
    }
    Watched::Nothing
}

/// `/dev/tty`: whoever opens it gets its controlling terminal.
const DEV_TTY: u64 = 5 << 8;

/// One task of the sandbox, by its /proc/PID/task/TID directory.
struct Task<'a> {
    dir: &'a str,
}

impl Task<'_> {
    /// Whether `call`, which this task is blocked in, waits for `tty` to have input; None when
    /// what it names cannot be read (or may not be: its memory, where `memory` is false).
    fn waits_for(&self, call: &Call, tty: Terminal, memory: bool, budget: &mut Budget) -> Option<bool> {
        // Sleeping in the call: a stopped task (SIGSTOP, or SIGTTIN for a background job) still
        // shows the call it stopped in, but reads nothing until it is continued.
        let stat = TaskStat::parse(&read_small(&format!("{}/stat", self.dir))?)?;
        if stat.state != 'S' {
            return Some(false);
        }
        let ctty = stat.terminal;
        let fd_is_tty = |fd: u64, budget: &mut Budget| -> Option<bool> {
            if !budget.take(1) {
                return None;
            }
            self.is_tty(fd, tty, ctty)
        };
        match watched(call) {
            Watched::Nothing => Some(false),
            Watched::One(fd) => fd_is_tty(fd, budget),
            Watched::PollArray { at, count } => {
                let ttys = self.tty_fds(tty, ctty, budget)?;
                if ttys.is_empty() {
                    return Some(false);
                }
                if !memory || count > MAX_FDS || !budget.take_memory(count * 8) {
                    return None;
                }
                let bytes = self.memory(at, count * 8).or_else(|| budget.spend_memory())?;
                let reads = (libc::POLLIN | libc::POLLRDNORM) as u16;
                Some(bytes.chunks_exact(8).any(|p| {
                    let fd = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                    u16::from_ne_bytes([p[4], p[5]]) & reads != 0 && fd >= 0 && ttys.contains(&(fd as u64))
                }))
            }
            Watched::SelectSet { at, nfds } => {
                let ttys = self.tty_fds(tty, ctty, budget)?;
                if at == 0 || ttys.is_empty() {
                    return Some(false);
                }
                if !memory || nfds > MAX_FDS || !budget.take_memory(nfds.div_ceil(64) * 8) {
                    return None;
                }
                let bytes = self.memory(at, nfds.div_ceil(64) * 8).or_else(|| budget.spend_memory())?;
                Some(ttys.iter().any(|&fd| fd < nfds && bytes[(fd / 8) as usize] & (1 << (fd % 8)) != 0))
            }
            Watched::Holder => {
                if ctty != tty.rdev || stat.pgrp != stat.foreground {
                    return Some(false);
                }
                Some(!self.tty_fds(tty, ctty, budget)?.is_empty())
            }
        }
    }

    /// Whether the task's descriptor `fd` is `tty` (or `/dev/tty` while `tty` is its controlling
    /// terminal `ctty`). Only a device's path is looked at further (readlink does not ask the file
    /// system; stat would, of any file).
    fn is_tty(&self, fd: u64, tty: Terminal, ctty: u64) -> Option<bool> {
        let path = format!("{}/fd/{fd}", self.dir);
        match std::fs::read_link(&path) {
            Ok(to) if !to.starts_with("/dev/") => return Some(false),
            Ok(_) => {}
            // A closed descriptor is no reader.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Some(false),
            Err(_) => return None,
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.mode() & libc::S_IFMT != libc::S_IFCHR => Some(false),
            Ok(m) if m.rdev() == DEV_TTY => Some(ctty == tty.rdev),
            Ok(m) => Some(m.dev() == tty.dev && m.rdev() == tty.rdev),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Some(false),
            Err(_) => None,
        }
    }

    /// The task's descriptors that are `tty`.
    fn tty_fds(&self, tty: Terminal, ctty: u64, budget: &mut Budget) -> Option<HashSet<u64>> {
        let mut out = HashSet::new();
        for fd in std::fs::read_dir(format!("{}/fd", self.dir)).ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok()) {
            if !budget.take(1) {
                return None;
            }
            if self.is_tty(fd, tty, ctty)? {
                out.insert(fd);
            }
        }
        Some(out)
    }

    /// `len` bytes of the task's memory at `at` (a call's arguments: a poll array, a select set).
    /// Read by a child of this process, given [`MEMORY_WITHIN`]: the read takes the task's mmap
    /// lock, which the sandbox can keep contended for seconds (a writer queued behind a long
    /// `madvise(MADV_POPULATE_READ)`), and this process enforces the sandbox's deadline. The
    /// kernel takes that lock killably, so a child still waiting then is killed. None: not read.
    fn memory(&self, at: u64, len: u64) -> Option<Vec<u8>> {
        let path = format!("{}/mem", self.dir);
        let mut buf = vec![0u8; len as usize];
        let (from_child, to_parent) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        // SAFETY: this process is single-threaded (the helper); the child only reads, writes
        // and exits.
        match unsafe { nix::unistd::fork() }.ok()? {
            nix::unistd::ForkResult::Child => {
                drop(from_child);
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                let read = std::fs::File::open(&path).and_then(|mem| mem.read_exact_at(&mut buf, at));
                if read.is_ok() {
                    let _ = std::io::Write::write_all(&mut std::fs::File::from(to_parent), &buf);
                }
                // SAFETY: ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(to_parent);
                let got = read_within(from_child, &mut buf, MEMORY_WITHIN);
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = crate::sys::wait_child(Some(child), true);
                got.then_some(buf)
            }
        }
    }
}

/// How long a look waits for a task's memory: about what a read of 1 MiB takes when nothing
/// holds it up.
const MEMORY_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Fill `buf` from `fd` before `within` has passed: whether it was filled.
fn read_within(fd: OwnedFd, buf: &mut [u8], within: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let until = std::time::Instant::now() + within;
    let mut filled = 0;
    while filled < buf.len() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().max(1) as i32).unwrap_or(PollTimeout::ZERO);
        match poll(&mut [PollFd::new(std::os::fd::AsFd::as_fd(&fd), PollFlags::POLLIN)], ms) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) if !left.is_zero() => continue,
            Err(_) => return false,
        }
        match nix::unistd::read(&fd, &mut buf[filled..]) {
            Ok(0) => return false,
            Ok(n) => filled += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// What a look needs of /proc/PID/task/TID/stat.
#[derive(Debug, PartialEq, Eq)]
struct TaskStat {
    state: char,
    pgrp: i64,
    /// The controlling terminal's device number, in the encoding stat(2) gives; 0 for none.
    terminal: u64,
    /// The foreground process group of that terminal (-1 for none).
    foreground: i64,
}

impl TaskStat {
    fn parse(stat: &str) -> Option<TaskStat> {
        // The name in parentheses may hold spaces and parentheses of its own.
        let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().take(6).collect();
        let [state, _ppid, pgrp, _session, tty_nr, tpgid] = f.as_slice() else { return None };
        let tty_nr: i64 = tty_nr.parse().ok()?;
        Some(TaskStat { state: state.chars().next()?, pgrp: pgrp.parse().ok()?, terminal: tty_nr as u32 as u64, foreground: tpgid.parse().ok()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_call_is_read_from_its_syscall_line() {
        assert_eq!(
            blocked_call("0 0x0 0x7ffd4849bcb0 0x400 0x0 0x0 0x0 0x7ffd4849bb90 0x7ff8d226baec\n"),
            Some(Call { nr: 0, args: [0, 0x7ffd4849bcb0, 0x400, 0, 0, 0] })
        );
        assert_eq!(blocked_call("running\n"), None);
        assert_eq!(blocked_call("-1 0x7ffd4849bb90 0x7ff8d226baec\n"), None);
        assert_eq!(blocked_call("7 0x1\n"), None, "a line cut short");
    }

    #[test]
    fn a_task_s_state_group_and_terminal_are_read_past_a_name_with_parentheses_in_stat_s_encoding() {
        // /dev/pts/3 (136:3) and /dev/pts/300 (136:300: the minor's high bits go above the major).
        let stat = |state, pgrp, terminal, foreground| Some(TaskStat { state, pgrp, terminal, foreground });
        assert_eq!(TaskStat::parse("42 (a) b (c)) S 1 42 42 34819 42 4194560 0 0"), stat('S', 42, libc::makedev(136, 3), 42));
        assert_eq!(TaskStat::parse("42 (sh) T 1 40 40 1083436 41 0"), stat('T', 40, libc::makedev(136, 300), 41));
        assert_eq!(TaskStat::parse("42 (sh) S 1 42 42 0 -1 0"), stat('S', 42, 0, -1));
        assert_eq!(TaskStat::parse("42 (\u{fffd}) S 1 42 42 0 -1 0"), stat('S', 42, 0, -1), "a name that was not UTF-8");
        assert_eq!(TaskStat::parse("42 (sh) S 1"), None, "a line cut short");
        assert_eq!(DEV_TTY, libc::makedev(5, 0));
    }

    #[test]
    fn memory_is_read_only_where_no_userfaultfd_of_the_sandbox_can_hold_the_read() {
        use crate::spec::{Seccomp, Spec};
        let with = |seccomp: Seccomp, user: bool, tty: bool| {
            let mut spec = Spec::new("/bin/true", Vec::new());
            (spec.seccomp, spec.namespaces.user, spec.persistent) = (seccomp, user, tty);
            Sandbox::of(&spec, 1).memory
        };
        assert!(with(Seccomp::Default, true, true), "the default profile refuses userfaultfd");
        assert!(with(Seccomp::Default, false, true));
        assert!(!with(Seccomp::None, false, true), "no user namespace: a kept CAP_SYS_PTRACE is the host's");
        let sysctl = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").unwrap_or_default();
        assert_eq!(with(Seccomp::None, true, true), sysctl.trim() == "0", "vm.unprivileged_userfaultfd = {sysctl:?}");
        assert!(!with(Seccomp::Default, true, false), "no terminal: nothing to read");
    }

    #[test]
    fn the_calls_that_wait_for_input_name_their_descriptors() {
        let call = |nr: i64, args: [u64; 6]| watched(&Call { nr, args });
        assert!(matches!(call(libc::SYS_read, [3, 0, 0, 0, 0, 0]), Watched::One(3)));
        assert!(matches!(call(libc::SYS_splice, [0, 0, 5, 0, 4096, 0]), Watched::One(0)));
        assert!(matches!(call(libc::SYS_sendfile, [5, 0, 0, 4096, 0, 0]), Watched::One(0)));
        assert!(matches!(call(libc::SYS_ppoll, [0x1000, 2, 0, 0, 0, 0]), Watched::PollArray { at: 0x1000, count: 2 }));
        assert!(matches!(call(libc::SYS_pselect6, [5, 0x2000, 0, 0, 0, 0]), Watched::SelectSet { at: 0x2000, nfds: 5 }));
        assert!(matches!(call(libc::SYS_epoll_pwait, [4, 0, 0, 0, 0, 0]), Watched::Holder));
        assert!(matches!(call(libc::SYS_restart_syscall, [0; 6]), Watched::Holder));
        assert!(matches!(call(libc::SYS_nanosleep, [0; 6]), Watched::Nothing));
    }
}
