//! Whether a process of a sandbox waits to read its terminal right now: what a person at the
//! keyboard sees before typing ^D. The terminal's own state cannot tell a program that waits in
//! read from one still starting up (nothing is unread in either case), so this looks where the
//! kernel keeps it: each task's blocked system call (/proc/PID/task/TID/syscall, readable by
//! whoever may trace the task: the helper, which started the sandbox) and the descriptors that
//! call names, for read, readv, pread and preadv, poll and ppoll, select and pselect, and the
//! epoll waits (each watched descriptor, from the epoll descriptor's fdinfo).
//!
//! Pids are the host's; a pid reused meanwhile by an unrelated process cannot hold this
//! sandbox's terminal (its devpts is the sandbox's own), so it never looks like a reader.
//!
//! A poll or select call names its descriptors in the caller's memory, read through
//! /proc/PID/mem. A page there could make that read wait as long as the sandbox likes only
//! through a userfaultfd that handles the kernel's own faults, which an unprivileged process may
//! make only where `vm.unprivileged_userfaultfd` is 1; the default seccomp profile refuses
//! userfaultfd outright. Elsewhere such calls count as unknown, and the relay falls back to
//! watching the terminal alone.

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
    /// Some task could not be seen (not traceable, or more tasks than a look reads).
    Unknown,
}

/// At most this many tasks are looked at in one look; beyond, [`Readers::Unknown`].
const MAX_TASKS: usize = 512;
/// At most this many files are read or looked at in one look (a task's two, and each descriptor
/// a wait names); beyond, [`Readers::Unknown`]: a sandbox cannot make a look cost the helper much.
const MAX_FILES: usize = 4096;
/// At most this many descriptors of one poll or select call are looked at.
const MAX_FDS: u64 = 1024;

/// Whether a task of the process tree under the sandbox's init waits to read `tty`.
pub fn look(sandbox: &Sandbox, tty: Terminal) -> Readers {
    let init = sandbox.init;
    let mut pending = vec![init];
    let mut seen = 0usize;
    let mut unknown = false;
    let mut budget = Budget(MAX_FILES);
    while let Some(pid) = pending.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for tid in tasks.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
            seen += 1;
            if seen > MAX_TASKS || !budget.take(2) {
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
            match read_small(&format!("{dir}/syscall")).map(|s| blocked_call(&s)) {
                Some(Some(call)) => match waits_for(pid, tid, &call, tty, sandbox.memory, &mut budget) {
                    Some(true) => return Readers::Waiting,
                    Some(false) => {}
                    None => unknown = true,
                },
                Some(None) => {}
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

/// Files a look may still read.
struct Budget(usize);

impl Budget {
    fn take(&mut self, n: usize) -> bool {
        self.0 = self.0.saturating_sub(n);
        self.0 > 0
    }
}

fn read_small(path: &str) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(path).ok()?.take(64 << 10).read_to_string(&mut s).ok()?;
    Some(s)
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
    PollArray { at: u64, count: u64 },
    SelectSet { at: u64, nfds: u64 },
    Epoll(u64),
    Nothing,
}

fn watched(call: &Call) -> Watched {
    let a = call.args;
    let nr = call.nr;
    if [libc::SYS_read, libc::SYS_readv, libc::SYS_pread64, libc::SYS_preadv, libc::SYS_preadv2].contains(&nr) {
        return Watched::One(a[0]);
    }
    if nr == libc::SYS_ppoll {
        return Watched::PollArray { at: a[0], count: a[1] };
    }
    if nr == libc::SYS_pselect6 {
        return Watched::SelectSet { at: a[1], nfds: a[0] };
    }
    if nr == libc::SYS_epoll_pwait || nr == libc::SYS_epoll_pwait2 {
        return Watched::Epoll(a[0]);
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
            return Watched::Epoll(a[0]);
        }
    }
    Watched::Nothing
}

/// `/dev/tty`: whoever opens it gets its controlling terminal.
const DEV_TTY: u64 = 5 << 8;

/// Whether `call` of the task `tid` of `pid` waits for `tty` to have input; None when what it
/// names cannot be read (or may not be: its memory, where `memory` is false).
fn waits_for(pid: i32, tid: i32, call: &Call, tty: Terminal, memory: bool, budget: &mut Budget) -> Option<bool> {
    let mut is_tty = |fd: u64| -> Option<bool> {
        if !budget.take(1) {
            return None;
        }
        match std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            Ok(m) if m.mode() & libc::S_IFMT != libc::S_IFCHR => Some(false),
            Ok(m) if m.rdev() == DEV_TTY => Some(controlling_terminal(pid, tid)? == tty.rdev),
            Ok(m) => Some(m.dev() == tty.dev && m.rdev() == tty.rdev),
            // A closed descriptor is no reader.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Some(false),
            Err(_) => None,
        }
    };
    match watched(call) {
        Watched::Nothing => Some(false),
        Watched::One(fd) => is_tty(fd),
        Watched::PollArray { .. } | Watched::SelectSet { .. } if !memory => None,
        Watched::PollArray { at, count } => {
            let bytes = read_memory(pid, at, count.min(MAX_FDS) * 8)?;
            let reads = (libc::POLLIN | libc::POLLRDNORM) as u16;
            for p in bytes.chunks_exact(8) {
                let fd = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                let events = u16::from_ne_bytes([p[4], p[5]]);
                if fd >= 0 && events & reads != 0 && is_tty(fd as u64)? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Watched::SelectSet { at, nfds } => {
            if at == 0 {
                return Some(false);
            }
            let nfds = nfds.min(MAX_FDS);
            let bytes = read_memory(pid, at, nfds.div_ceil(64) * 8)?;
            for fd in 0..nfds {
                if bytes[(fd / 8) as usize] & (1 << (fd % 8)) != 0 && is_tty(fd)? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Watched::Epoll(epfd) => {
            let info = read_small(&format!("/proc/{pid}/fdinfo/{epfd}"))?;
            for (fd, events) in epoll_targets(&info) {
                if events & libc::EPOLLIN as u32 != 0 && is_tty(fd)? {
                    return Some(true);
                }
            }
            Some(false)
        }
    }
}

/// The device number of a task's controlling terminal (/proc/PID/task/TID/stat's seventh field,
/// in the encoding stat(2) gives), 0 for none.
fn controlling_terminal(pid: i32, tid: i32) -> Option<u64> {
    tty_nr(&read_small(&format!("/proc/{pid}/task/{tid}/stat"))?)
}

fn tty_nr(stat: &str) -> Option<u64> {
    // The name in parentheses may hold spaces and parentheses of its own.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let tty_nr: i64 = after_name.split_whitespace().nth(4)?.parse().ok()?;
    Some(tty_nr as u32 as u64)
}

/// The watched descriptors of an epoll descriptor's fdinfo: "tfd: FD events: HEX ..." lines.
fn epoll_targets(info: &str) -> Vec<(u64, u32)> {
    info.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "tfd:").then_some(())?;
            let fd = f.next()?.parse().ok()?;
            (f.next()? == "events:").then_some(())?;
            Some((fd, u32::from_str_radix(f.next()?, 16).ok()?))
        })
        .collect()
}

/// `len` bytes of a task's memory at `at` (the caller's arguments: a poll array, a select set).
fn read_memory(pid: i32, at: u64, len: u64) -> Option<Vec<u8>> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len as usize];
    mem.read_exact_at(&mut buf, at).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_call_is_read_from_its_syscall_line() {
        assert_eq!(blocked_call("0 0x0 0x7ffd4849bcb0 0x400 0x0 0x0 0x0 0x7ffd4849bb90 0x7ff8d226baec\n"), Some(Call { nr: 0, args: [0, 0x7ffd4849bcb0, 0x400, 0, 0, 0] }));
        assert_eq!(blocked_call("running\n"), None);
        assert_eq!(blocked_call("-1 0x7ffd4849bb90 0x7ff8d226baec\n"), None);
        assert_eq!(blocked_call("7 0x1\n"), None, "a line cut short");
    }

    #[test]
    fn a_controlling_terminal_is_read_past_a_name_with_parentheses_in_stat_s_encoding() {
        // /dev/pts/3 (136:3) and /dev/pts/300 (136:300: the minor's high bits go above the major).
        assert_eq!(tty_nr("42 (a) b (c)) S 1 42 42 34819 42 4194560 0 0"), Some(libc::makedev(136, 3)));
        assert_eq!(tty_nr("42 (sh) S 1 42 42 1083436 42 0"), Some(libc::makedev(136, 300)));
        assert_eq!(tty_nr("42 (sh) S 1 42 42 0 -1 0"), Some(0));
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
    fn an_epoll_fdinfo_lists_its_watched_descriptors() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\ntfd:        0 events:       19 data:                0  pos:0 ino:3 sdev:19\ntfd:        7 events:        4 data:                7  pos:0 ino:9 sdev:d\n";
        assert_eq!(epoll_targets(info), vec![(0, 0x19), (7, 0x4)]);
    }

    #[test]
    fn the_calls_that_wait_for_input_name_their_descriptors() {
        let call = |nr: i64, args: [u64; 6]| watched(&Call { nr, args });
        assert!(matches!(call(libc::SYS_read, [3, 0, 0, 0, 0, 0]), Watched::One(3)));
        assert!(matches!(call(libc::SYS_ppoll, [0x1000, 2, 0, 0, 0, 0]), Watched::PollArray { at: 0x1000, count: 2 }));
        assert!(matches!(call(libc::SYS_pselect6, [5, 0x2000, 0, 0, 0, 0]), Watched::SelectSet { at: 0x2000, nfds: 5 }));
        assert!(matches!(call(libc::SYS_epoll_pwait, [4, 0, 0, 0, 0, 0]), Watched::Epoll(4)));
        assert!(matches!(call(libc::SYS_nanosleep, [0; 6]), Watched::Nothing));
    }
}
