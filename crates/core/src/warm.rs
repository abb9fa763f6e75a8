//! A helper made ahead of its sandbox. Moving a process into a cgroup waits for an RCU grace period
//! (several milliseconds, paid by whoever writes `cgroup.procs`; on cgroup v2 a cold start avoids
//! it with CLONE_INTO_CGROUP, on v1 nothing does), and a new network namespace and the helper's own
//! start cost about as much as the rest of a sandbox's setup together. A warm helper has detected
//! the host and created the sandbox's cgroup before any sandbox waited for it (where this process
//! may not create cgroups, as in a container whose cgroupfs is read-only, there is no cgroup and
//! the rest is the same, for the sandboxes that need none). On cgroup v1 it has forked a zygote
//! that moved itself into that cgroup, and the zygote clones, with CLONE_PARENT, an init ahead
//! into the namespaces of the spec given ahead (the root the caller's recent sandboxes had), or
//! else the default ones (user, mount, pid, uts, ipc, net); on v2, or without a cgroup, the helper
//! clones that init itself, on v2 straight into the cgroup (CLONE_INTO_CGROUP), and needs no
//! zygote. Either way the init is the helper's child, born inside the cgroup; the helper writes
//! its id maps and the init brings up its loopback (those of its own namespaces); given that
//! spec, it builds its root too, up to the pivot. Then it waits. When the spec arrives and wants
//! exactly those namespaces (and, for a root built ahead, the same root on the same host objects:
//! see [`Preborn::fits`]), that init takes it and does the rest of the setup; for any other
//! spec, or if the host's mount table is not, mount for mount, the one the init's namespace
//! copied (a mount the host added and removed again meanwhile leaves it so; one the host
//! unmounted ends that init at once), that init is killed and a fresh one is cloned now,
//! by the zygote on v1 (inside the cgroup), else by the helper (as a cold start clones it).
//! Nothing migrates on the hot path (the helper itself never enters the cgroup, so it can remove
//! it at the end). All of this runs at idle priority, so it takes little CPU from sandboxes
//! starting meanwhile; once ready, the helper, the zygote and the init are put back to the default
//! policy (they wait at it: the helper at nice 19, the zygote and the init at the caller's nice,
//! see [`crate::priority`]). Each warm helper serves one sandbox and is never reused; if Node
//! goes away first, the init made ahead and the zygote are killed and the cgroup removed.

use crate::cgroup::{CgroupHost, SandboxCgroup};
use crate::error::{SetupError, Step};
use crate::plan::MountOp;
use crate::protocol::{Event, SpecMessage};
use crate::sandbox::{Ahead, FactsAhead, HostObject, InitPipes};
use crate::spec::{Ids, Mount, Namespaces, Network, Overlay, Spec};
use crate::supervisor::Control;
use crate::sys::{self, MountsSince};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// The largest spec a warm helper takes on its handoff socket (the addon refuses bigger ones,
/// and such a sandbox starts the cold way).
pub const MAX_SPEC: usize = 256 << 10;

/// What a warm helper made ahead. Dropped unused (fields drop in order): the init made ahead and
/// the zygote end, then the cgroup is removed.
pub struct Warm {
    pub(crate) preborn: Option<Preborn>,
    /// On cgroup v1 with a cgroup only: where the init is cloned straight into its cgroup (v2) or
    /// has none, the helper clones it itself.
    pub(crate) zygote: Option<Zygote>,
    pub(crate) host: CgroupHost,
    /// None where this process may not create cgroups (a container's read-only cgroupfs): the
    /// init is still made ahead, for the sandboxes that need no cgroup; one whose limits need a
    /// cgroup starts the cold way, which says why it cannot have one.
    pub(crate) cgroup: Option<SandboxCgroup>,
}

/// A fork of the helper that waits inside the sandbox's cgroup to clone the sandbox's init.
pub struct Zygote {
    pid: Pid,
    sock: OwnedFd,
    done: bool,
}

/// An init cloned ahead into its namespaces, its id maps written and its loopback up (where it
/// has a user and a network namespace of its own), waiting for its spec on `sock`. Killed and
/// reaped when dropped unused.
pub struct Preborn {
    pid: Pid,
    sock: OwnedFd,
    /// The clone flags it was made with: its namespaces.
    flags: libc::c_ulong,
    /// The ids its setup runs as, which its id maps were written for ([`crate::plan::setup_ids`]):
    /// always root's for a root caller; for anyone else, the sandbox's user, mapped onto the
    /// caller (a sandbox that wants another user needs a fresh init).
    setup_ids: Ids,
    /// The host's mount table as of before the clone copied it: a watch that flags every change
    /// ([`sys::mounts_changed`]), and the table itself where it can be read exactly.
    mounts: OwnedFd,
    table: Option<sys::MountTable>,
    /// How the host's table stood against `table` when the watch last flagged a change.
    since: Cell<MountsSince>,
    /// Its root, when it was built ahead: for which specs, on which host objects, and from which
    /// host facts (for a host-root spec).
    built: Option<(RootKey, Vec<HostObject>, Option<FactsAhead>)>,
    done: bool,
}

/// Everything the root's building reads ([`crate::sandbox::build_root`]): two specs with equal
/// keys get the same root. The mount plan holds what the host looked like when it was made.
#[derive(Debug, Clone)]
pub struct RootKey {
    plan: Vec<MountOp>,
    namespaces: Namespaces,
    network: Network,
    mounts: Vec<Mount>,
    overlay: Option<Overlay>,
    setup_ids: Ids,
}

impl RootKey {
    pub(crate) fn of(spec: &Spec, plan: &[MountOp], setup_ids: Ids) -> RootKey {
        RootKey {
            plan: plan.to_vec(),
            namespaces: spec.namespaces,
            network: spec.network,
            mounts: spec.mounts.clone(),
            overlay: spec.overlay.clone(),
            setup_ids,
        }
    }

    /// Whether `spec`, planned as `plan`, has this key (compared in place: no copy on a start's path).
    fn is_of(&self, spec: &Spec, plan: &[MountOp], setup_ids: Ids) -> bool {
        self.plan == plan
            && self.namespaces == spec.namespaces
            && self.network == spec.network
            && self.mounts == spec.mounts
            && self.overlay == spec.overlay
            && self.setup_ids == setup_ids
    }
}

/// What the init made ahead builds its root for, before any spec arrived.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prebuild {
    spec: Spec,
    plan: Vec<MountOp>,
    setup_ids: Ids,
}

/// The namespaces an init is made ahead in: those of the spec whose root is built ahead (the
/// commonest of the caller's recent sandboxes), else the default ones.
fn ahead_flags(ahead: Option<&Spec>) -> libc::c_ulong {
    ahead.map_or_else(|| crate::supervisor::namespace_clone_flags(crate::spec::Namespaces::default()), crate::supervisor::clone_flags)
}

/// Everything the zygote needs to clone the init, besides its fds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Birth {
    /// A custom profile's filter as the addon compiled it ([`crate::seccomp::Program::to_bytes`]);
    /// the built-in one the zygote and the init made ahead have at hand. It travels as raw bytes
    /// after the JSON ([`Birth::encode`]), not as a JSON array of numbers.
    #[serde(skip)]
    pub filter: Option<Vec<u8>>,
    pub spec: Spec,
    pub plan: Vec<MountOp>,
    pub setup_ids: Ids,
    pub kept_uppers: Option<crate::sandbox::KeptUppers>,
    /// Which optional fds follow stdio, go and report, in this order.
    pub layers: bool,
    pub tty: bool,
    pub work: bool,
    /// Then, for an init whose root was built ahead, this many trees to attach at its release
    /// (one per bind in `plan`, which then holds only the mounts made at the release).
    pub trees: usize,
}

impl Birth {
    /// The JSON, then a NUL and the filter's bytes when there is one (JSON text never holds a
    /// NUL byte: serde_json writes one inside a string as `\u0000`).
    fn encode(&self) -> Result<Vec<u8>, SetupError> {
        let mut out = serde_json::to_vec(self).map_err(|e| SetupError::new(Step::CloneNamespaces, e.to_string()))?;
        if let Some(f) = &self.filter {
            out.push(0);
            out.extend_from_slice(f);
        }
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Birth, SetupError> {
        let (json, filter) = match bytes.iter().position(|b| *b == 0) {
            Some(nul) => (&bytes[..nul], Some(bytes[nul + 1..].to_vec())),
            None => (bytes, None),
        };
        let mut b: Birth = serde_json::from_slice(json).map_err(|e| SetupError::new(Step::CloneNamespaces, e.to_string()))?;
        b.filter = filter;
        Ok(b)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum BuildReply {
    Built(Vec<HostObject>),
    Failed(SetupError),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum BirthReply {
    Born { pid: i32 },
    Failed(SetupError),
}

/// The warm phase: detect, create the cgroup, fork the zygote into it; the zygote clones an init
/// ahead in the namespaces of `ahead`'s spec (else the default ones), which also builds that
/// spec's root when asked to.
fn prepare(ahead: Option<(Spec, bool)>) -> Result<Warm, SetupError> {
    // Before anything is made: an init ahead is mapped onto these (read once per process).
    let caller = Ids { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
    let unpriv = crate::supervisor::sandbox_host_ids(caller)?;
    // Work done ahead takes only CPU time nobody else wants (where the sandbox's processes can
    // be given their caller's priority back afterwards).
    crate::priority::idle_ahead(0);
    let host = crate::cgroup::detect()?;
    let cgroup = if host.can_create { Some(SandboxCgroup::prepare(&host, &crate::cgroup::unique_name(), crate::cgroup::Ending::WithInit)?) } else { None };
    // Assembled ahead, before the fork, so the zygote has the default filter at hand (and the
    // init and its commands the count of capabilities to drop).
    let default_seccomp = crate::seccomp::default_program();
    sys::last_cap();
    // Opened and read before the zygote clones the init ahead, whose mount namespace copies the
    // table (a change in between only makes that init unfit).
    let mounts = sys::watch_mounts()?;
    let table = sys::MountTable::now();
    let flags = ahead_flags(ahead.as_ref().map(|(spec, _)| spec));
    // Only a v1 cgroup needs a zygote: a process moved into it waits for an RCU grace period, so
    // one waits inside, ahead, to clone a fresh init there should the one made ahead not fit. A v2
    // child is born in its cgroup, and without a cgroup there is nothing to be born in.
    let cloned_here = match cgroup.as_ref() {
        Some(cg) if !cg.is_v2() => None,
        cg => {
            let into = cg.and_then(SandboxCgroup::dir_fd_v2).map(|fd| fd.as_raw_fd());
            match clone_init_ahead(&default_seccomp, flags, into, None) {
                Ok(init) => Some(Some(init)),
                // A kernel that cannot clone into a cgroup (before 5.7, or a filter refusing
                // clone3): a zygote moves into it instead.
                Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG | nix::errno::Errno::EINVAL | nix::errno::Errno::EPERM) if into.is_some() => None,
                // No init ahead: the birth clones one.
                Err(_) => Some(None),
            }
        }
    };
    let (zygote, inits_ahead) = match cloned_here {
        Some(ahead) => (None, ahead),
        None => Zygote::fork_into(cgroup.as_ref(), &default_seccomp, flags).map(|(z, a)| (Some(z), a))?,
    };
    // An init that cannot get ready ahead is no loss: a fresh one is cloned at the birth, and
    // then whatever failed is reported with its step.
    // The user the recent sandboxes ran as (root inside when none came twice).
    let inside = ahead.as_ref().map_or_else(Ids::default, |(spec, _)| spec.user);
    let setup_ids = crate::plan::setup_ids(inside, caller);
    let preborn = inits_ahead.and_then(|(pid, sock)| {
        Preborn { pid, sock, flags, setup_ids, mounts, table, since: Cell::new(MountsSince::Same), built: None, done: false }
            .get_ready(inside, caller, unpriv)
            .ok()
    });
    // A root that cannot be built ahead is no loss either: that init goes, as above.
    let preborn = match (preborn, ahead) {
        (Some(p), Some((spec, true))) => p.build_root(&spec).ok(),
        (p, _) => p,
    };
    Ok(Warm { preborn, zygote, host, cgroup })
}

/// A warm helper's whole job: prepare, say so, wait for the spec (or the lifeline's end), then
/// supervise that one sandbox. `handoff` carries the spec and the sandbox's stdio, and for a
/// long-lived sandbox then its execs.
pub fn run(control: OwnedFd, handoff: OwnedFd) -> i32 {
    let mut out = Control::new(control);
    let ahead = match read_ahead(&handoff) {
        Ok(a) => a,
        Err(e) => {
            out.send(&Event::Error(e));
            return 0;
        }
    };
    let mut warm = match prepare(ahead) {
        Ok(w) => w,
        Err(e) => {
            out.send(&Event::Error(e));
            return 0;
        }
    };
    // Only the making ahead runs at idle priority. A ready helper, zygote and init wait at the
    // default policy (the helper behind its caller, the zygote and init at the caller's nice), so
    // the spec's arrival wakes them at once: an idle task waits for the CPU behind every other
    // task, and behind the next refill (idle too) for a whole slice.
    warm.leave_idle_priority();
    out.send(&Event::Warm);
    if !wait_for_spec(&mut out, &handoff, &mut warm) {
        return 0;
    }
    let (bytes, stdio) = match sys::recv_message(&handoff, MAX_SPEC, Step::ReadSpec) {
        Ok(Some(m)) => m,
        Ok(None) | Err(_) => return 0,
    };
    let SpecMessage { spec, filter } = match SpecMessage::decode(&bytes) {
        Ok(m) => m,
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
    crate::supervisor::run_with(&spec, out, execs, Some(warm), filter)
}

/// Wait until the spec arrives (true) or Node is gone (false). Node writes requests only after
/// it handed over the spec, so until then the control socket can only end: then `warm` is
/// dropped, which ends the zygote and the cgroup. An init made ahead whose copy of the host's
/// mount table holds a mount the host has since unmounted is ended at once: it could serve no
/// sandbox any more, and would keep that filesystem alive. One that only misses a mount the
/// host added waits on: the host may take it away again (runc and crun mount and unmount on the
/// host on every run), and then the copy is the host's table again. Node hears of an init that
/// went (`stale`) and makes a helper with a fresh one ahead to take this one's place.
fn wait_for_spec(out: &mut Control, handoff: &OwnedFd, warm: &mut Warm) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = vec![PollFd::new(out.fd().as_fd(), PollFlags::POLLIN), PollFd::new(handoff.as_fd(), PollFlags::POLLIN)];
        fn watch<'a>(fds: &mut Vec<PollFd<'a>>, fd: &'a OwnedFd, what: PollFlags) -> Option<usize> {
            fds.push(PollFd::new(fd.as_fd(), what));
            Some(fds.len() - 1)
        }
        // The zygote and the init made ahead say nothing while they wait: their socket turns
        // readable only once they ended (killed, out of memory).
        let zygote = warm.zygote.as_ref().and_then(|z| watch(&mut fds, &z.sock, PollFlags::POLLIN));
        let init = warm.preborn.as_ref().and_then(|p| watch(&mut fds, &p.sock, PollFlags::POLLIN));
        let mounts = warm.preborn.as_ref().and_then(|p| watch(&mut fds, &p.mounts, PollFlags::POLLPRI));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
        let fired = |i: Option<usize>, what: PollFlags| i.and_then(|i| fds.get(i)).and_then(|f| f.revents()).is_some_and(|r| r.intersects(what));
        let (spec, ended) = (fired(Some(1), PollFlags::POLLIN), fired(Some(0), PollFlags::all()) || fired(Some(1), PollFlags::all()));
        let changed = fired(mounts, PollFlags::POLLPRI | PollFlags::POLLERR);
        let (zygote_went, init_went) = (fired(zygote, PollFlags::all()), fired(init, PollFlags::all()));
        drop(fds);
        // The poll took the watch's news, even when the spec came with it (a later look would
        // find none): look at the table now.
        let unmounted = !init_went && changed && warm.preborn.as_ref().is_some_and(|p| p.look_at_mounts() == MountsSince::Gone);
        if init_went || unmounted {
            warm.preborn = None;
        }
        // Without its zygote, a v1 helper clones the init itself and moves it into the cgroup
        // (the migration the zygote was there to spare): it still serves, slower.
        if zygote_went {
            warm.zygote = None;
        }
        // Told only while it still waits: a spec that came with the news is served at once.
        if !spec && !ended {
            if unmounted {
                out.send(&Event::Stale);
            }
            if init_went || zygote_went {
                out.send(&Event::Lost);
            }
        }
        if spec {
            return true;
        }
        if ended {
            return false;
        }
    }
}

/// The first message on the handoff socket, which the addon writes before the exec: `ahead`;
/// `ahead ` and a spec whose root to build ahead, in its namespaces (the root of the caller's
/// last sandboxes); or `namespaces ` and a spec in whose namespaces only to make the init ahead.
/// A spec that does not parse or validate is only a guess that missed: nothing is built ahead.
fn read_ahead(handoff: &OwnedFd) -> Result<Option<(Spec, bool)>, SetupError> {
    let step = Step::ReadSpec;
    let Some((bytes, _)) = sys::recv_message(handoff, MAX_AHEAD, step)? else {
        return Err(SetupError::new(step, "the caller went away before the helper started"));
    };
    let valid = |json: &[u8]| Spec::from_json(json).ok().filter(|s| crate::validate::validate(s).is_ok());
    if bytes == AHEAD_ROOT.as_bytes() {
        return Ok(None);
    }
    for (word, build) in [(AHEAD_ROOT, true), (AHEAD_NAMESPACES, false)] {
        if let Some(json) = bytes.strip_prefix(word.as_bytes()).and_then(|rest| rest.strip_prefix(b" ")) {
            return Ok(valid(json).map(|s| (s, build)));
        }
    }
    Err(SetupError::new(step, "the handoff socket did not start with `ahead` or `namespaces`"))
}

/// The first words of a warm helper's first message: see [`read_ahead`].
pub const AHEAD_ROOT: &str = "ahead";
pub const AHEAD_NAMESPACES: &str = "namespaces";

/// The room [`room_for_births`] asks for: the largest birth (a spec of [`MAX_SPEC`], its plan and
/// its filter) fits.
pub const MAX_BIRTH: usize = 4 * MAX_SPEC;

/// The largest spec sent ahead (the addon sends none bigger).
pub const MAX_AHEAD: usize = 64 << 10;

impl Warm {
    /// Whether a birth of `len` bytes goes to the zygote and to the init made ahead in one message
    /// (any birth does where root made room for the largest, [`MAX_BIRTH`]).
    pub(crate) fn carries(&self, len: usize) -> bool {
        let fits = |sock: &OwnedFd| sys::send_room(sock).is_some_and(|room| len <= room);
        self.zygote.as_ref().is_none_or(|z| fits(&z.sock)) && self.preborn.as_ref().is_none_or(|p| fits(&p.sock))
    }

    fn leave_idle_priority(&self) {
        crate::priority::leave_idle();
        // What the zygote clones at the birth inherits its priority.
        if let Some(z) = &self.zygote {
            let _ = crate::priority::as_caller(z.pid.as_raw());
        }
        if let Some(p) = &self.preborn {
            let _ = crate::priority::as_caller(p.pid.as_raw());
        }
    }
}

impl Zygote {
    /// The zygote, inside the cgroup, and the init it cloned ahead (its pid and socket), if it could.
    fn fork_into(
        cgroup: Option<&SandboxCgroup>,
        default_seccomp: &crate::seccomp::Program,
        flags: libc::c_ulong,
    ) -> Result<(Zygote, Option<(Pid, OwnedFd)>), SetupError> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| SetupError::sys(Step::CreatePipes, e as i32, None))?;
        // SAFETY: the helper is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(ours);
                zygote_main(cgroup, default_seccomp, theirs, flags)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                room_for_births(&ours);
                let mut z = Zygote { pid: child, sock: ours, done: false };
                // The migration happens now, in the warm phase; the zygote says when it is inside.
                match sys::recv_message(&z.sock, 64 << 10, Step::AttachCgroup) {
                    Ok(Some((b, _))) if b == b"in" => {
                        let ahead = match sys::recv_message(&z.sock, 64, Step::CloneNamespaces) {
                            Ok(Some((b, mut fds))) if fds.len() == 1 => {
                                std::str::from_utf8(&b).ok().and_then(|t| t.strip_prefix("ahead ")?.parse().ok()).map(|pid| (Pid::from_raw(pid), fds.remove(0)))
                            }
                            _ => None,
                        };
                        Ok((z, ahead))
                    }
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
        let reply = exchange_birth(&self.sock, birth, fds);
        self.end();
        match reply? {
            Some(BirthReply::Born { pid }) => Ok(Pid::from_raw(pid)),
            Some(BirthReply::Failed(e)) => Err(e),
            None => Err(SetupError::new(Step::CloneNamespaces, "the zygote ended without cloning the sandbox")),
        }
    }

    /// Kill it (at the default policy, so that it goes at once); [`Zygote::end`] reaps it.
    pub(crate) fn dismiss(&mut self) {
        if !self.done {
            let _ = sys::set_normal_priority(self.pid.as_raw());
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }

    /// The zygote exits on its own after a birth; otherwise it is killed (at the default policy,
    /// so that it goes at once). Reaped either way.
    fn end(&mut self) {
        if self.done {
            return;
        }
        self.dismiss();
        self.done = true;
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.end();
    }
}

impl Preborn {
    /// Write the id maps (a root caller's do not depend on the spec; anyone else's map `inside`,
    /// the sandbox's user, onto the caller) and rank it for the OOM killer, then let the init
    /// bring up its loopback.
    fn get_ready(self, inside: Ids, caller: Ids, unpriv: Ids) -> Result<Preborn, SetupError> {
        if self.flags & libc::CLONE_NEWUSER as libc::c_ulong != 0 {
            crate::supervisor::write_id_maps(self.pid, &crate::plan::plan_id_maps(inside, caller, unpriv))?;
        }
        // Now, not at its release: by then it may have entered the mapped ids (a root built
        // ahead), after which its /proc files are root's, not its caller's.
        sys::rank_first_for_oom_killer(self.pid.as_raw())?;
        sys::send_message(&self.sock, b"mapped", &[], Step::BringUpLoopback)?;
        match sys::recv_message(&self.sock, 64 << 10, Step::BringUpLoopback)? {
            Some((b, _)) if b == b"up" => Ok(self),
            Some((b, _)) => Err(serde_json::from_slice(&b).unwrap_or_else(|_| SetupError::new(Step::BringUpLoopback, "the init made ahead failed"))),
            None => Err(SetupError::new(Step::BringUpLoopback, "the init made ahead ended")),
        }
    }

    /// Have the init build its root for `spec` now (not for a spec with overlays: their layers
    /// come from this helper at the release; nor for one given the host's resolv.conf). The root
    /// is what a sandbox started now with that spec would get; [`Preborn::fits`] says for which
    /// specs, and until when, it still is.
    fn build_root(mut self, spec: &Spec) -> Result<Preborn, SetupError> {
        let step = Step::MountStagingRoot;
        // Without what its sandbox mounts at the release, which may differ from one to the next.
        let spec = &crate::plan::without_made_at_release(spec, &crate::plan::made_at_release(spec));
        let ahead = FactsAhead::gather(spec)?;
        let plan = match &ahead {
            Some(a) => crate::plan::plan_mounts(spec, a.facts()),
            None => crate::plan::plan_mounts(spec, &crate::sandbox::gather_facts(spec)?),
        };
        // Nor one that lends a host file where its root has room: whether it has is the
        // rootfs's say at each start (its owner may add the file), which no held object tells.
        if plan.iter().any(|op| matches!(op, MountOp::Overlay { .. } | MountOp::HostFileIfRoom { .. })) || crate::supervisor::clone_flags(spec) != self.flags {
            return Ok(self);
        }
        let caller = Ids { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
        let setup_ids = crate::plan::setup_ids(spec.user, caller);
        let mut msg = b"build ".to_vec();
        msg.extend(serde_json::to_vec(&Prebuild { spec: spec.clone(), plan: plan.clone(), setup_ids }).map_err(|e| SetupError::new(step, e.to_string()))?);
        sys::send_message(&self.sock, &msg, &[], step)?;
        match sys::recv_message(&self.sock, 4 * MAX_SPEC, step)?.map(|(b, _)| serde_json::from_slice::<BuildReply>(&b)) {
            Some(Ok(BuildReply::Built(held))) => {
                self.built = Some((RootKey::of(spec, &plan, setup_ids), held, ahead));
                Ok(self)
            }
            Some(Ok(BuildReply::Failed(e))) => Err(e),
            _ => Err(SetupError::new(step, "the init made ahead ended while it built its root")),
        }
    }

    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Whether it built its root ahead (and needs no mount plan at its birth).
    pub(crate) fn has_root(&self) -> bool {
        self.built.is_some()
    }

    /// How the host's mount table stands against the one this init's namespace copied, looked
    /// at again only when the watch flagged a change since.
    fn mounts_since(&self) -> MountsSince {
        if sys::mounts_changed(&self.mounts) {
            self.look_at_mounts();
        }
        self.since.get()
    }

    /// Compare the host's mount table with the copied one now. Without the exact table, any
    /// change counts as gone: the copy could hold what the host unmounted.
    fn look_at_mounts(&self) -> MountsSince {
        let since = self.table.as_ref().map_or(MountsSince::Gone, |t| t.since(sys::MountTable::now().as_ref()));
        self.since.set(since);
        since
    }

    /// Kill it now; dropping it reaps it.
    pub(crate) fn dismiss(&mut self) {
        if !self.done {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }

    /// The host facts its root was built from, for `spec` (see [`FactsAhead::still_for`]).
    pub(crate) fn facts_for(&self, spec: &Spec) -> Option<&crate::plan::HostFacts> {
        self.built.as_ref()?.2.as_ref()?.still_for(spec)
    }

    /// Whether this init can serve `spec` (planned as `plan`): it keeps no capability, it wants
    /// exactly these namespaces, and the host's mount table is the one the init's mount
    /// namespace copied, mount for mount (bind sources are opened in there). An init whose root was built ahead serves
    /// only a spec whose root is the same, and only while every host object it holds is still
    /// what its path names (`facts_checked`: its facts were found unchanged on this start, so the
    /// objects they were read from need no second look).
    pub(crate) fn fits(&self, spec: &Spec, plan: &[MountOp], setup_ids: Ids, facts_checked: bool) -> bool {
        let same_root = |(key, held, facts): &(RootKey, Vec<HostObject>, Option<FactsAhead>)| {
            let seen = |h: &HostObject| facts_checked && facts.as_ref().is_some_and(|f| f.saw(h));
            key.is_of(spec, plan, setup_ids) && held.iter().all(|h| seen(h) || h.unchanged())
        };
        // Its bounding set is emptied ahead: a command that keeps a capability needs a fresh init.
        spec.capabilities.is_empty()
            && setup_ids == self.setup_ids
            && crate::supervisor::clone_flags(spec) == self.flags
            && self.mounts_since() == MountsSince::Same
            && self.built.as_ref().is_none_or(same_root)
    }

    /// Hand the init its fds (as [`Zygote::give_birth`]) and the spec; it answers once it took them.
    pub(crate) fn give_birth(mut self, birth: &Birth, fds: &[RawFd]) -> Result<Pid, SetupError> {
        match exchange_birth(&self.sock, birth, fds)? {
            Some(BirthReply::Born { .. }) => {
                self.done = true;
                Ok(self.pid)
            }
            Some(BirthReply::Failed(e)) => Err(e),
            None => Err(SetupError::new(Step::CloneNamespaces, "the init made ahead ended before it took the spec")),
        }
    }
}

/// Hand a zygote or an init made ahead `birth` with its fds on `sock`, and read its answer
/// (None: it ended).
fn exchange_birth(sock: &OwnedFd, birth: &Birth, fds: &[RawFd]) -> Result<Option<BirthReply>, SetupError> {
    sys::send_message(sock, &birth.encode()?, fds, Step::CloneNamespaces)?;
    let reply = sys::recv_message(sock, 64 << 10, Step::CloneNamespaces)?;
    Ok(reply.and_then(|(b, _)| serde_json::from_slice::<BirthReply>(&b).ok()))
}

/// The answer to a birth, from the zygote or the init made ahead.
fn send_reply(sock: &OwnedFd, r: &BirthReply) {
    let _ = sys::send_message(sock, &serde_json::to_vec(r).unwrap_or_default(), &[], Step::CloneNamespaces);
}

impl Drop for Preborn {
    fn drop(&mut self) {
        if !self.done {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

/// The zygote: enter the cgroup (where there is one), clone an init ahead, wait for one birth,
/// clone the init into the sandbox's namespaces as the helper's child, answer, exit. Never
/// returns, never runs a destructor (the cgroup it holds a copy of belongs to the helper).
fn zygote_main(cgroup: Option<&SandboxCgroup>, default_seccomp: &crate::seccomp::Program, sock: OwnedFd, ahead_flags: libc::c_ulong) -> ! {
    let _ = nix::sys::prctl::set_name(c"isolate-zygote");
    // Nothing of the helper's (its control and handoff sockets) reaches the zygote, so nothing
    // reaches the init it clones.
    sys::close_fds_except(&[std::os::fd::AsRawFd::as_raw_fd(&sock)]);
    let reply = |r: &BirthReply| send_reply(&sock, r);
    if sys::set_parent_death_signal().is_err() {
        // SAFETY: leaving the fork without running the helper's destructors.
        unsafe { libc::_exit(1) }
    }
    match cgroup.map_or(Ok(()), |cg| cg.attach(std::process::id() as i32)) {
        Ok(()) => {
            let _ = sys::send_message(&sock, b"in", &[], Step::AttachCgroup);
            clone_ahead(default_seccomp, &sock, ahead_flags);
        }
        Err(e) => {
            let _ = sys::send_message(&sock, &serde_json::to_vec(&e).unwrap_or_default(), &[], Step::AttachCgroup);
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    }
    let Ok(Some((bytes, fds))) = sys::recv_message(&sock, MAX_BIRTH, Step::CloneNamespaces) else {
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

/// A birth carries the spec and its mount plan in one message: room on `sock` for the largest (the
/// default send buffer, ~208 KiB, refuses what a cold start accepts: EMSGSIZE). Only root may go
/// past wmem_max; anyone else gets as far as wmem_max, and a birth that does not fit
/// ([`Warm::carries`]) starts the cold way.
fn room_for_births(sock: &OwnedFd) {
    let room = MAX_BIRTH as libc::c_int;
    let set = |opt: libc::c_int| {
        // SAFETY: setsockopt with an int value on our own socket.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &room as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_SNDBUFFORCE) {
        set(libc::SO_SNDBUF);
    }
}

/// Clone an init ahead into the namespaces of `flags` (with `cgroup_fd`, straight into that v2
/// cgroup): its pid and the socket that reaches it, where its birth will come. `keep_out`: an fd of
/// this process's that the init must not keep (closed in the child before anything else).
fn clone_init_ahead(
    default_seccomp: &crate::seccomp::Program,
    flags: libc::c_ulong,
    cgroup_fd: Option<RawFd>,
    keep_out: Option<RawFd>,
) -> Result<(Pid, OwnedFd), nix::errno::Errno> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    let rc = sys::clone_as_owner(crate::supervisor::namespace_owner(flags), || match cgroup_fd {
        Some(fd) => sys::clone3_into_cgroup(flags & !0xff, flags & 0xff, fd),
        // SAFETY: fork-like clone(2) of this single-threaded process: no stack, no tids, no tls.
        None => unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) },
    });
    if rc < 0 {
        return Err(nix::errno::Errno::last());
    }
    if rc == 0 {
        if let Some(fd) = keep_out {
            // SAFETY: the child's copy of a descriptor nothing else in it uses.
            unsafe { libc::close(fd) };
        }
        drop(ours);
        preborn_main(theirs, default_seccomp, flags & libc::CLONE_NEWNET as libc::c_ulong != 0);
    }
    // The helper hands the init made ahead its birth on this socket, as it hands the zygote's.
    room_for_births(&ours);
    Ok((Pid::from_raw(rc as i32), ours))
}

/// The zygote's clone of the init ahead: tell the helper its pid, with the socket that reaches
/// it, or that nothing came of it.
fn clone_ahead(default_seccomp: &crate::seccomp::Program, helper: &OwnedFd, flags: libc::c_ulong) {
    // CLONE_PARENT: the init is the helper's child, as one cloned at the birth would be; it keeps
    // nothing of the zygote's conversation with the helper.
    let _ = match clone_init_ahead(default_seccomp, flags | libc::CLONE_PARENT as libc::c_ulong, None, Some(helper.as_raw_fd())) {
        Ok((pid, ours)) => sys::send_message(helper, format!("ahead {pid}").as_bytes(), &[ours.as_raw_fd()], Step::CloneNamespaces),
        Err(_) => sys::send_message(helper, b"none", &[], Step::CloneNamespaces),
    };
}

/// The init made ahead: wait for its id maps, bring up the loopback of its own network
/// namespace, wait for the spec, then run the sandbox like any init. Whatever goes wrong before
/// the spec arrives just ends it (a fresh one is then cloned at the birth, which reports the
/// failure properly).
fn preborn_main(sock: OwnedFd, default_seccomp: &crate::seccomp::Program, own_net: bool) -> ! {
    // Until its birth: one can tell it from a sandbox's init (ps, the tests).
    let _ = nix::sys::prctl::set_name(c"isolate-ahead");
    // SAFETY: leaving the clone without running the helper's destructors.
    let leave = |code: i32| -> ! { unsafe { libc::_exit(code) } };
    // Its parent is the helper (cloned by it, or by its zygote with CLONE_PARENT). Had the helper
    // died before this, every other end of `sock` is gone with it (and with the zygote), and the
    // first receive below ends this process.
    if sys::set_parent_death_signal().is_err() {
        leave(1);
    }
    sys::close_fds_except(&[sock.as_raw_fd()]);
    match sys::recv_message(&sock, 64, Step::WriteIdMaps) {
        Ok(Some((b, _))) if b == b"mapped" => {}
        _ => leave(0),
    }
    // Its commands keep no capability (the only specs it serves, see `Preborn::fits`): their
    // bounding set is emptied here, ahead, but for what a long-lived init keeps to fork its execs
    // (each command drops those itself).
    let fork_caps: Vec<u32> = crate::exec_server::FORK_CAPS.iter().filter_map(|c| crate::caps::number(c)).collect();
    let ready = if own_net { sys::bring_up_loopback() } else { Ok(()) }.and_then(|()| sys::drop_bounding_set(&fork_caps));
    if ready.is_ok() {
        // Its commands then look only at those.
        sys::note_bounding_set(&fork_caps);
    }
    if let Err(e) = ready {
        let _ = sys::send_message(&sock, &serde_json::to_vec(&e).unwrap_or_default(), &[], Step::BringUpLoopback);
        leave(1);
    }
    let _ = sys::send_message(&sock, b"up", &[], Step::BringUpLoopback);
    let Ok(Some((mut bytes, mut fds))) = sys::recv_message(&sock, MAX_BIRTH, Step::CloneNamespaces) else { leave(0) };
    let mut ahead = Ahead::Namespaces;
    if let Some(json) = bytes.strip_prefix(b"build ") {
        let built = serde_json::from_slice::<Prebuild>(json)
            .map_err(|e| SetupError::new(Step::MountStagingRoot, e.to_string()))
            .and_then(|b| crate::sandbox::build_root(&b.spec, &b.plan, b.setup_ids, None, None, true))
            // With its final ids now: the session keyring its sandbox will have, made ahead too.
            .and_then(|held| sys::join_new_session_keyring().map(|()| held));
        let _ = sys::send_message(
            &sock,
            &serde_json::to_vec(&built.as_ref().map_or_else(|e| BuildReply::Failed(e.clone()), |h| BuildReply::Built(h.clone()))).unwrap_or_default(),
            &[],
            Step::MountStagingRoot,
        );
        if built.is_err() {
            leave(1);
        }
        ahead = Ahead::Root;
        let Ok(Some(birth)) = sys::recv_message(&sock, MAX_BIRTH, Step::CloneNamespaces) else { leave(0) };
        (bytes, fds) = birth;
    }
    let reply = |r: &BirthReply| send_reply(&sock, r);
    match unpack(&bytes, fds, default_seccomp) {
        Ok((spec, plan, seccomp, mut pipes)) => {
            let _ = nix::sys::prctl::set_name(c"isolate-init");
            pipes.ahead = ahead;
            reply(&BirthReply::Born { pid: 1 });
            drop(sock);
            crate::sandbox::run(&spec, &plan, seccomp.as_ref(), pipes)
        }
        Err(e) => {
            reply(&BirthReply::Failed(e));
            leave(1)
        }
    }
}

/// A birth message taken apart: its stdio installed as this process's, its fds sorted into the
/// init's pipes, the seccomp program at hand (the default one is assembled already).
fn unpack(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    default_seccomp: &crate::seccomp::Program,
) -> Result<(Spec, Vec<MountOp>, Option<crate::seccomp::Program>, InitPipes), SetupError> {
    let b = Birth::decode(bytes)?;
    let want = 5 + b.layers as usize + b.tty as usize + b.work as usize + b.trees;
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
    let trees = fds.collect();
    let seccomp = match (&b.spec.seccomp, &b.filter) {
        // The one built ahead is for a sandbox without core dumps.
        (crate::spec::Seccomp::Default, _) if !b.spec.limits.core_dumps => Some(default_seccomp.clone()),
        (crate::spec::Seccomp::Profile { .. }, Some(bytes)) => {
            Some(crate::seccomp::Program::from_bytes(bytes).map_err(|e| SetupError::new(Step::LoadSeccomp, e))?)
        }
        _ => crate::supervisor::compile_seccomp(&b.spec)?,
    };
    let pipes = InitPipes { go, report, setup_ids: b.setup_ids, layers, kept_uppers: b.kept_uppers, tty, work, ahead: Ahead::Nothing, trees };
    Ok((b.spec, b.plan, seccomp, pipes))
}

fn birth(bytes: &[u8], fds: Vec<OwnedFd>, default_seccomp: &crate::seccomp::Program, sock: RawFd) -> Result<i32, SetupError> {
    let (spec, plan, seccomp, pipes) = unpack(bytes, fds, default_seccomp)?;
    // CLONE_PARENT: the init is the helper's child (it waits for it, writes its id maps and is
    // its parent-death signal), born in this process's cgroup.
    let flags = crate::supervisor::clone_flags(&spec) | libc::CLONE_PARENT as libc::c_ulong;
    // SAFETY: fork-like clone(2) of this single-threaded process: no stack, no tids, no tls.
    let rc =
        sys::clone_as_owner(crate::supervisor::namespace_owner(flags), || unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) });
    if rc < 0 {
        return Err(SetupError::sys(Step::CloneNamespaces, nix::errno::Errno::last() as i32, None));
    }
    if rc == 0 {
        // SAFETY: the init keeps nothing of the zygote's conversation with the helper.
        unsafe { libc::close(sock) };
        crate::sandbox::run(&spec, &plan, seccomp.as_ref(), pipes);
    }
    Ok(rc as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn birth(filter: Option<Vec<u8>>) -> Birth {
        // A NUL inside a string must not be taken for the end of the JSON.
        let spec = Spec::new("/bin/true", vec!["a\u{0}b".into()]);
        Birth { filter, spec, plan: Vec::new(), setup_ids: Ids { uid: 0, gid: 0 }, kept_uppers: None, layers: false, tty: true, work: false, trees: 2 }
    }

    #[test]
    fn a_birth_carries_a_custom_filter_as_raw_bytes_after_its_json() {
        let filter = crate::seccomp::default_program().to_bytes();
        let bytes = birth(Some(filter.clone())).encode().unwrap();
        let nul = bytes.iter().position(|b| *b == 0).unwrap();
        assert_eq!(&bytes[nul + 1..], &filter[..], "the filter follows the JSON as it is");
        assert!(!String::from_utf8_lossy(&bytes[..nul]).contains("filter"), "not also inside the JSON");
        let back = Birth::decode(&bytes).unwrap();
        assert_eq!(back.filter.as_deref(), Some(&filter[..]));
        assert_eq!(back.spec.args, vec!["a\u{0}b".to_string()]);
        assert_eq!((back.tty, back.trees), (true, 2));
    }

    #[test]
    fn a_birth_without_a_filter_is_its_json_alone() {
        let bytes = birth(None).encode().unwrap();
        assert!(!bytes.contains(&0));
        assert!(Birth::decode(&bytes).unwrap().filter.is_none());
    }
}
