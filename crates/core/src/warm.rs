//! A helper made ahead of its sandbox, for cgroup v1, where moving a process into a cgroup waits
//! for an RCU grace period (several milliseconds, paid by whoever writes `cgroup.procs`). A warm
//! helper has detected the host, created the sandbox's cgroup, and forked a zygote that moved
//! itself into that cgroup before any sandbox waited for it. When the spec arrives, the zygote
//! clones the sandbox's init with CLONE_PARENT: the init is the helper's child, born inside the
//! cgroup, and nothing migrates on the hot path (the helper itself never enters the cgroup, so it
//! can remove it at the end). Each warm helper serves one sandbox and is never reused; if Node
//! goes away first, the zygote is killed and the cgroup removed.

use crate::cgroup::{CgroupHost, SandboxCgroup};
use crate::error::{SetupError, Step};
use crate::plan::MountOp;
use crate::protocol::Event;
use crate::sandbox::InitPipes;
use crate::spec::{Ids, Spec};
use crate::supervisor::Control;
use crate::sys;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// The largest spec a warm helper takes on its handoff socket (the addon refuses bigger ones,
/// and such a sandbox starts the cold way).
pub const MAX_SPEC: usize = 256 << 10;

/// What a warm helper made ahead. Dropped unused: the zygote ends, then the cgroup is removed.
pub struct Warm {
    pub(crate) zygote: Zygote,
    pub(crate) host: CgroupHost,
    pub(crate) cgroup: SandboxCgroup,
}

/// A fork of the helper that waits inside the sandbox's cgroup to clone the sandbox's init.
pub struct Zygote {
    pid: Pid,
    sock: OwnedFd,
    done: bool,
}

/// Everything the zygote needs to clone the init, besides its fds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Birth {
    pub spec: Spec,
    pub plan: Vec<MountOp>,
    pub setup_ids: Ids,
    pub kept_uppers: Vec<(String, String)>,
    /// Which optional fds follow stdio, go and report, in this order.
    pub layers: bool,
    pub tty: bool,
    pub work: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum BirthReply {
    Born { pid: i32 },
    Failed(SetupError),
}

/// The warm phase: detect, create the cgroup, fork the zygote into it.
fn prepare() -> Result<Warm, SetupError> {
    let host = crate::cgroup::detect()?;
    if !host.can_create {
        return Err(SetupError::new(Step::CreateCgroup, host.reason.clone().unwrap_or_else(|| "this process may not create cgroups".into())));
    }
    let cgroup = SandboxCgroup::prepare_v1(&host, &crate::cgroup::unique_name())?;
    // Assembled ahead, before the fork, so the zygote has the default filter at hand.
    let default_seccomp = crate::seccomp::default_program();
    let zygote = Zygote::fork_into(&cgroup, &default_seccomp)?;
    Ok(Warm { zygote, host, cgroup })
}

/// A warm helper's whole job: prepare, say so, wait for the spec (or the lifeline's end), then
/// supervise that one sandbox. `handoff` carries the spec and the sandbox's stdio, and for a
/// long-lived sandbox then its execs.
pub fn run(control: OwnedFd, handoff: OwnedFd) -> i32 {
    let mut out = Control::new(control);
    let warm = match prepare() {
        Ok(w) => w,
        Err(e) => {
            out.send(&Event::Error(e));
            return 0;
        }
    };
    out.send(&Event::Warm);
    // Node writes requests only after it handed over the spec, so until then the control socket
    // can only end (Node is gone): then `warm` is dropped, which ends the zygote and the cgroup.
    let mut fds = [nix::poll::PollFd::new(out.fd().as_fd(), nix::poll::PollFlags::POLLIN), nix::poll::PollFd::new(handoff.as_fd(), nix::poll::PollFlags::POLLIN)];
    loop {
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 0,
        }
    }
    if !fds[1].revents().is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN)) {
        return 0;
    }
    let (bytes, stdio) = match sys::recv_message(&handoff, MAX_SPEC, Step::ReadSpec) {
        Ok(Some(m)) => m,
        Ok(None) | Err(_) => return 0,
    };
    let spec = match Spec::from_json(&bytes).and_then(|s| crate::validate::validate(&s).map(|_| s).map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(msg) => {
            out.send(&Event::Error(SetupError::new(Step::ReadSpec, msg)));
            return 0;
        }
    };
    if let Err(e) = sys::install_stdio(&stdio) {
        out.send(&Event::Error(e));
        return 0;
    }
    drop(stdio);
    let execs = spec.persistent.then_some(handoff);
    crate::supervisor::run_with(&spec, out, execs, Some(warm))
}

impl Zygote {
    fn fork_into(cgroup: &SandboxCgroup, default_seccomp: &crate::seccomp::Program) -> Result<Zygote, SetupError> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(|e| SetupError::sys(Step::CreatePipes, e as i32, None))?;
        // SAFETY: the helper is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(ours);
                zygote_main(cgroup, default_seccomp, theirs)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                // A birth carries the spec and its mount plan in one message: room for the
                // largest (the default send buffer would refuse what a cold start accepts).
                // Only root may go past wmem_max, and only root has warm helpers.
                let room = (4 * MAX_SPEC) as libc::c_int;
                // SAFETY: setsockopt with an int value on our own socket.
                unsafe { libc::setsockopt(ours.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &room as *const _ as *const libc::c_void, std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
                let mut z = Zygote { pid: child, sock: ours, done: false };
                // The migration happens now, in the warm phase; the zygote says when it is inside.
                match sys::recv_message(&z.sock, 64 << 10, Step::AttachCgroup) {
                    Ok(Some((b, _))) if b == b"in" => Ok(z),
                    Ok(Some((b, _))) => Err(serde_json::from_slice(&b).unwrap_or_else(|_| SetupError::new(Step::AttachCgroup, "the zygote failed"))),
                    Ok(None) => Err(SetupError::new(Step::AttachCgroup, "the zygote ended before it entered the cgroup")),
                    Err(e) => {
                        z.end();
                        Err(e)
                    }
                }
            }
            Err(e) => Err(SetupError::sys(Step::CloneNamespaces, e as i32, None)),
        }
    }

    /// Hand the zygote the init's fds (stdio, go, report, then the optional ones `birth` names)
    /// and what it needs to clone it; it does, answers with the pid, and ends.
    pub(crate) fn give_birth(mut self, birth: &Birth, fds: &[RawFd]) -> Result<Pid, SetupError> {
        let msg = serde_json::to_vec(birth).map_err(|e| SetupError::new(Step::CloneNamespaces, e.to_string()))?;
        sys::send_message(&self.sock, &msg, fds, Step::CloneNamespaces)?;
        let reply = sys::recv_message(&self.sock, 64 << 10, Step::CloneNamespaces)?;
        self.end();
        match reply.map(|(b, _)| serde_json::from_slice::<BirthReply>(&b)) {
            Some(Ok(BirthReply::Born { pid })) => Ok(Pid::from_raw(pid)),
            Some(Ok(BirthReply::Failed(e))) => Err(e),
            _ => Err(SetupError::new(Step::CloneNamespaces, "the zygote ended without cloning the sandbox")),
        }
    }

    /// The zygote exits on its own after a birth; otherwise it is killed. Reaped either way.
    fn end(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.end();
    }
}

/// The zygote: enter the cgroup, wait for one birth, clone the init into the sandbox's
/// namespaces as the helper's child, answer, exit. Never returns, never runs a destructor (the
/// cgroup it holds a copy of belongs to the helper).
fn zygote_main(cgroup: &SandboxCgroup, default_seccomp: &crate::seccomp::Program, sock: OwnedFd) -> ! {
    let _ = nix::sys::prctl::set_name(c"isolate-zygote");
    // Nothing of the helper's (its control and handoff sockets) reaches the zygote, so nothing
    // reaches the init it clones.
    sys::close_fds_except(&[std::os::fd::AsRawFd::as_raw_fd(&sock)]);
    let reply = |r: &BirthReply| {
        let _ = sys::send_message(&sock, &serde_json::to_vec(r).unwrap_or_default(), &[], Step::CloneNamespaces);
    };
    if sys::set_parent_death_signal().is_err() {
        // SAFETY: leaving the fork without running the helper's destructors.
        unsafe { libc::_exit(1) }
    }
    match cgroup.attach(std::process::id() as i32) {
        Ok(()) => {
            let _ = sys::send_message(&sock, b"in", &[], Step::AttachCgroup);
        }
        Err(e) => {
            let _ = sys::send_message(&sock, &serde_json::to_vec(&e).unwrap_or_default(), &[], Step::AttachCgroup);
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    }
    let Ok(Some((bytes, fds))) = sys::recv_message(&sock, 4 * MAX_SPEC, Step::CloneNamespaces) else {
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    };
    match birth(&bytes, fds, default_seccomp, std::os::fd::AsRawFd::as_raw_fd(&sock)) {
        Ok(pid) => reply(&BirthReply::Born { pid }),
        Err(e) => reply(&BirthReply::Failed(e)),
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

fn birth(bytes: &[u8], fds: Vec<OwnedFd>, default_seccomp: &crate::seccomp::Program, sock: RawFd) -> Result<i32, SetupError> {
    let b: Birth = serde_json::from_slice(bytes).map_err(|e| SetupError::new(Step::CloneNamespaces, e.to_string()))?;
    let want = 5 + b.layers as usize + b.tty as usize + b.work as usize;
    if fds.len() != want {
        return Err(SetupError::new(Step::CloneNamespaces, format!("expected {want} descriptors, got {}", fds.len())));
    }
    let mut fds = fds.into_iter();
    let stdio: Vec<OwnedFd> = fds.by_ref().take(3).collect();
    sys::install_stdio(&stdio)?;
    drop(stdio);
    let go = fds.next().expect("counted");
    let report = fds.next().expect("counted");
    let layers = if b.layers { fds.next() } else { None };
    let tty = if b.tty { fds.next() } else { None };
    let work = if b.work { fds.next() } else { None };
    let seccomp = match b.spec.seccomp {
        crate::spec::Seccomp::Default => Some(default_seccomp.clone()),
        _ => crate::supervisor::compile_seccomp(&b.spec)?,
    };
    // CLONE_PARENT: the init is the helper's child (it waits for it, writes its id maps and is
    // its parent-death signal), born in this process's cgroup.
    let flags = crate::supervisor::clone_flags(&b.spec) | libc::CLONE_PARENT as libc::c_ulong;
    // SAFETY: fork-like clone(2) of this single-threaded process: no stack, no tids, no tls.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        return Err(SetupError::sys(Step::CloneNamespaces, nix::errno::Errno::last() as i32, None));
    }
    if rc == 0 {
        // SAFETY: the init keeps nothing of the zygote's conversation with the helper.
        unsafe { libc::close(sock) };
        let pipes = InitPipes { go, report, setup_ids: b.setup_ids, layers, kept_uppers: b.kept_uppers, tty, work };
        crate::sandbox::run(&b.spec, &b.plan, seccomp.as_ref(), pipes);
    }
    Ok(rc as i32)
}
