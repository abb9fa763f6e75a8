//! The helper's side: plan, clone the sandbox into its namespaces, write its id maps, release it,
//! then supervise it (wall clock, signals and cancel from Node, the lifeline) and report its end.
//! Single-threaded by design: the sandbox's first process is a fork of it.

use crate::error::{SetupError, Step};
use crate::plan::{plan_id_maps, plan_mounts, unprivileged_ids};
use crate::protocol::{signal_name, Event, Reason, Report, Request};
use crate::sandbox;
use crate::spec::{Ids, Spec};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

/// The helper's whole job; returns its exit status (0 when everything was reported).
pub fn run(spec: &Spec, control: OwnedFd) -> i32 {
    let started = Instant::now();
    let mut out = Control { fd: control };
    match launch(spec) {
        Err(e) => {
            out.send(&Event::Error(e));
            0
        }
        Ok(child) => supervise(spec, child, &mut out, started),
    }
}

struct Control {
    fd: OwnedFd,
}

impl Control {
    fn send(&mut self, ev: &Event) {
        // Node may already be gone; the lifeline handles that, so a failed write is not an error.
        let mut f = std::mem::ManuallyDrop::new(unsafe_file(&self.fd));
        let _ = f.write_all(&ev.to_line());
    }
}

fn unsafe_file(fd: &OwnedFd) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: wrapped in ManuallyDrop by the caller, so the fd is never closed twice.
    unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) }
}

struct Child {
    init: Pid,
    report: OwnedFd,
}

fn clone_flags(spec: &Spec) -> libc::c_ulong {
    let ns = spec.namespaces;
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    for (on, f) in [(ns.user, libc::CLONE_NEWUSER), (ns.uts, libc::CLONE_NEWUTS), (ns.ipc, libc::CLONE_NEWIPC), (ns.net, libc::CLONE_NEWNET)] {
        if on {
            flags |= f;
        }
    }
    flags as libc::c_ulong | libc::SIGCHLD as libc::c_ulong
}

fn launch(spec: &Spec) -> Result<Child, SetupError> {
    let facts = sandbox::gather_facts(spec)?;
    let plan = plan_mounts(spec, &facts);
    let caller = Ids { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SetupError::sys(Step::CreatePipes, e as i32, None));
    let (go_r, go_w) = pipe()?;
    let (report_r, report_w) = pipe()?;

    // SAFETY: fork-like clone (no new stack, no CLONE_VM) of a single-threaded process; the child
    // only continues in sandbox::run and never returns here.
    let rc = unsafe { libc::syscall(libc::SYS_clone, clone_flags(spec), 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        return Err(SetupError::sys(Step::CloneNamespaces, Errno::last() as i32, None));
    }
    if rc == 0 {
        drop(go_w);
        drop(report_r);
        sandbox::run(spec, &plan, sandbox::InitPipes { go: go_r, report: report_w });
    }
    let init = Pid::from_raw(rc as i32);
    drop(go_r);
    drop(report_w);
    let child = Child { init, report: report_r };
    let release = || -> Result<(), SetupError> {
        if spec.namespaces.user {
            let unpriv = if caller.uid == 0 {
                unprivileged_ids(std::fs::read_to_string("/etc/subuid").ok().as_deref(), std::fs::read_to_string("/etc/subgid").ok().as_deref())
            } else {
                caller
            };
            write_id_maps(init, &plan_id_maps(spec.user, caller, unpriv))?;
        }
        nix::unistd::write(&go_w, b"g").map_err(|e| SetupError::sys(Step::WaitForParent, e as i32, None))?;
        Ok(())
    };
    if let Err(e) = release() {
        let _ = kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        return Err(e);
    }
    Ok(child)
}

fn write_id_maps(pid: Pid, maps: &crate::plan::IdMaps) -> Result<(), SetupError> {
    let write = |name: &str, text: &str| {
        let path = format!("/proc/{}/{name}", pid.as_raw());
        std::fs::write(&path, text).map_err(|e| SetupError::sys(Step::WriteIdMaps, e.raw_os_error().unwrap_or(libc::EIO), Some(&path)))
    };
    if maps.deny_setgroups {
        write("setgroups", "deny")?;
    }
    write("uid_map", &maps.uid_map)?;
    write("gid_map", &maps.gid_map)
}

/// Kill the whole sandbox (its init, and with it the pid namespace). `why` becomes the result's
/// reason unless the command had already ended on its own.
fn end_sandbox(init: Pid, why: Option<Reason>, ended: &Option<Report>, forced: &mut Option<Reason>) {
    if ended.is_some() {
        return;
    }
    if forced.is_none() {
        *forced = why;
    }
    let _ = kill(init, Signal::SIGKILL);
}

/// The host pid of the command: the init's one child right after exec.
fn command_pid(init: Pid) -> i32 {
    let path = format!("/proc/{0}/task/{0}/children", init.as_raw());
    std::fs::read_to_string(path).ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(init.as_raw())
}

struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    /// Read what is available; None on EOF.
    fn fill(&mut self, fd: &OwnedFd) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match nix::unistd::read(fd, &mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
            Err(Errno::EINTR | Errno::EAGAIN) => Some(()),
            Err(_) => None,
        }
    }

    fn next_line(&mut self) -> Option<String> {
        let pos = self.buf.iter().position(|b| *b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=pos).collect();
        Some(String::from_utf8_lossy(&line[..pos]).into_owned())
    }
}

fn supervise(spec: &Spec, child: Child, out: &mut Control, started: Instant) -> i32 {
    let Child { init, report } = child;
    // The helper's own stdio is the sandbox's; let go of it so the caller sees EOF exactly when
    // the sandbox's last writer is gone.
    crate::sys::redirect_stdio_to_null();
    let mut deadline = spec.limits.timeout_ms.map(|ms| started + std::time::Duration::from_millis(ms));
    let mut reports = LineReader { buf: Vec::new() };
    let mut requests = LineReader { buf: Vec::new() };
    let mut control_open = true;
    let mut report_open = true;
    let mut ended: Option<Report> = None;
    let mut setup_error = None;
    let mut forced: Option<Reason> = None;

    while report_open {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(report.as_fd(), PollFlags::POLLIN)];
        if control_open {
            fds.push(PollFd::new(out.fd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
        let (report_ready, control_ready) = (ready(0), ready(1));
        drop(fds);
        if report_ready {
            if reports.fill(&report).is_none() {
                report_open = false;
            }
            while let Some(line) = reports.next_line() {
                match serde_json::from_str::<Report>(&line) {
                    Ok(Report::Started) => out.send(&Event::Spawned { pid: command_pid(init) }),
                    Ok(Report::SetupFailed(e)) => setup_error = Some(e),
                    Ok(r @ (Report::Exited { .. } | Report::Signaled { .. })) => ended = Some(r),
                    Err(_) => {}
                }
            }
        }
        if control_ready {
            if requests.fill(&out.fd).is_none() {
                // Lifeline: Node is gone, so is the sandbox.
                control_open = false;
                end_sandbox(init, Some(Reason::Canceled), &ended, &mut forced);
            }
            while let Some(line) = requests.next_line() {
                match Request::parse(&line) {
                    Some(Request::Cancel) => end_sandbox(init, Some(Reason::Canceled), &ended, &mut forced),
                    Some(Request::Signal(libc::SIGKILL)) => end_sandbox(init, None, &ended, &mut forced),
                    Some(Request::Signal(n)) => {
                        // SAFETY: kill(2) on our own child; the init forwards it to the command.
                        unsafe { libc::kill(init.as_raw(), n) };
                    }
                    None => {}
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            deadline = None;
            end_sandbox(init, Some(Reason::Timeout), &ended, &mut forced);
        }
    }

    // The init is gone or going; its exit took the whole pid namespace with it.
    let status = loop {
        match waitpid(init, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    if let Some(e) = setup_error {
        out.send(&Event::Error(e));
        return 0;
    }
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (exit_code, signal) = match (&ended, status) {
        (Some(Report::Exited { code }), _) => (Some(*code), None),
        (Some(Report::Signaled { signal }), _) => (None, Some(signal_name(*signal))),
        (_, Ok(WaitStatus::Signaled(_, sig, _))) => (None, Some(signal_name(sig as i32))),
        (_, Ok(WaitStatus::Exited(_, code))) => (Some(code), None),
        _ => (None, None),
    };
    let reason = match forced {
        Some(r) => r,
        None if signal.is_some() => Reason::Signaled,
        None => Reason::Exited,
    };
    out.send(&Event::Exit { exit_code, signal, reason, duration_ms });
    0
}
