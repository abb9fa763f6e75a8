//! The helper's side: plan, clone the sandbox into its namespaces, write its id maps, release it,
//! then supervise it (wall clock, output bound, signals and cancel from Node, the lifeline) and
//! report its end. Single-threaded by design: the sandbox's first process is a fork of it.

use crate::cgroup::{CgroupLimits, SandboxCgroup};
use crate::command_clock::CommandClock;
use crate::error::{SetupError, Step};
use crate::execs::Execs;
use crate::plan::{plan_id_maps, plan_mounts, unprivileged_ids};
use crate::protocol::{signal_name, Event, Reason, Report, Request, Usage};
use crate::relay::{Relay, TtyRelay};
use crate::sandbox;
use crate::spec::{Ids, Spec};
use crate::warm::Warm;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The helper's whole job; returns its exit status (0 when everything was reported).
/// `execs`: a long-lived sandbox's exec socket from Node.
pub fn run(spec: &Spec, control: OwnedFd, execs: Option<OwnedFd>, filter: Option<Vec<u8>>) -> i32 {
    run_with(spec, Control::new(control), execs, None, filter)
}

/// The same, with what a warm helper made ahead (see [`crate::warm`]).
pub(crate) fn run_with(spec: &Spec, mut out: Control, execs: Option<OwnedFd>, warm: Option<Warm>, filter: Option<Vec<u8>>) -> i32 {
    let started = Instant::now();
    match launch(spec, warm, filter) {
        Err(e) => {
            out.send(&Event::Error(e));
            0
        }
        Ok(child) => Supervisor::new(spec, child, execs, started).run(&mut out),
    }
}

/// The control socket to Node: events out, requests in.
pub struct Control {
    fd: OwnedFd,
}

impl Control {
    pub fn new(fd: OwnedFd) -> Control {
        Control { fd }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn send(&mut self, ev: &Event) {
        // Node may already be gone; the lifeline handles that, so a failed write is not an error.
        let mut f = std::mem::ManuallyDrop::new(borrowed_file(&self.fd));
        let _ = f.write_all(&ev.to_line());
    }
}

fn borrowed_file(fd: &OwnedFd) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: wrapped in ManuallyDrop by the caller, so the fd is never closed twice.
    unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) }
}

struct Child {
    init: Pid,
    report: OwnedFd,
    relay: Option<Relay>,
    cgroup: Option<SandboxCgroup>,
    /// With a tty: the socket on which the init hands over the terminal's master.
    tty: Option<OwnedFd>,
    /// A long-lived sandbox: the work socket to its init.
    work: Option<OwnedFd>,
    /// The sandbox's mount namespace, let go once its end is reported ([`hold_mount_namespace`]).
    mount_ns: Option<OwnedFd>,
    /// A kept overlay upper directory, locked for this sandbox ([`prepare_kept_upper`]).
    upper_lock: Option<OwnedFd>,
}

/// The limits only a cgroup can enforce or measure for the whole sandbox.
fn cgroup_limits(spec: &Spec) -> Option<CgroupLimits> {
    let l = &spec.limits;
    // cpuTimeMs needs the cgroup's CPU accounting (every process, however it forked), no limit file.
    let limits = CgroupLimits { memory_bytes: l.memory_bytes, pids: l.pids, cpus: l.cpus, cpu_time: l.cpu_time_ms.is_some() };
    (!limits.is_empty()).then_some(limits)
}

/// The sandbox's cgroup, beneath the helper's own, when a limit needs one. A limit the host
/// cannot enforce fails here, before any namespace exists, naming what is missing.
fn create_cgroup(spec: &Spec) -> Result<Option<SandboxCgroup>, SetupError> {
    let Some(limits) = cgroup_limits(spec) else { return Ok(None) };
    let host = crate::cgroup::detect()?;
    if !host.can_create {
        let why = host.reason.clone().unwrap_or_else(|| "this process may not create cgroups".into());
        let asked = limits.options();
        let verb = if asked.len() == 1 { "needs" } else { "need" };
        let err = SetupError::new(Step::CreateCgroup, format!("{} {verb} a cgroup, and {why}", crate::error::listed(&asked)));
        if host.parent_refused {
            return Err(err.with_hint(format!("name this process's cgroup or one above it in {} (cgroup v2 only), as /proc/self/cgroup writes it, or unset it; it is read once per Node process, at its first sandbox or probe()", crate::cgroup::PARENT_ENV)));
        }
        return Err(err.with_hint(format!(
            "run as root on cgroup v1, or where the caller's cgroup is a cgroup v2 hierarchy's root (a VM or a machine of its own); a cgroup v2 subtree delegated to this user (systemd: Delegate=yes) allows cpuTimeMs only, as a cgroup that holds the caller cannot give its children memory, pids or cpu (the no-internal-process rule), unless {} names one above it that holds no process; `isolate doctor` says which limits hold here",
            crate::cgroup::PARENT_ENV
        )));
    }
    SandboxCgroup::create(&host, &crate::cgroup::unique_name(), &limits, crate::cgroup::Ending::WithInit).map(Some)
}

/// The host ids the sandbox's users are mapped onto: a root caller's subordinate range, else the
/// caller itself.
pub(crate) fn sandbox_host_ids(caller: Ids) -> Result<Ids, SetupError> {
    // Read once per process: the helper server reads it before it forks any helper (see
    // server::run), so a sandbox's start reads none of the four files it comes from. A change to
    // them applies from the caller's next helper server (the next Node process).
    if caller.uid != 0 {
        return Ok(caller);
    }
    roots_host_ids().map(|h| h.ids).ok_or_else(|| {
        let first = crate::plan::FALLBACK_FIRST_ID;
        SetupError::new(Step::WriteIdMaps, format!("no unprivileged host ids for the sandbox's root: root has no range in /etc/subuid and /etc/subgid, and every 65536-id block from {first} up is someone's range or account"))
            .with_hint("give root a range of its own: a line root:<first id>:65536 in /etc/subuid and in /etc/subgid, on a block no range or account uses; the ids are read once per Node process, so restart it after")
    })
}

/// A root caller's sandbox host ids and namespace owners ([`unprivileged_ids`]), read once per
/// process: the helper server reads them before it forks any helper (see server::run).
fn roots_host_ids() -> Option<crate::plan::HostIds> {
    static ROOTS: std::sync::OnceLock<Option<crate::plan::HostIds>> = std::sync::OnceLock::new();
    *ROOTS.get_or_init(|| unprivileged_ids(|path| std::fs::read_to_string(path).ok()))
}

/// The first uid of the block whose ids own a root caller's sandbox user namespaces, where they
/// can: a block is free for them, and this process holds what it needs over a namespace it does
/// not own (writing its id maps and opening its namespaces takes CAP_SYS_ADMIN and CAP_SYS_PTRACE,
/// ending its init CAP_KILL; the clone as the owner CAP_SETUID and CAP_SETPCAP). Otherwise None:
/// the namespaces are root's, as a root with fewer capabilities (a container's) can still run
/// them; `probe().namespaceOwners` says which. Found once per process, like the ids (the helper
/// server finds it before it forks any helper).
pub(crate) fn namespace_owners() -> Option<u32> {
    static OWNERS: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *OWNERS.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() || !crate::sys::has_effective_caps(&["SYS_ADMIN", "SYS_PTRACE", "KILL", "SETUID", "SETPCAP"]) {
            return None;
        }
        // A root in a user namespace of its own (a container's) may only become the ids it maps.
        let owners = owner_block()?;
        let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
        crate::plan::ids_mapped(&map, owners, crate::plan::OWNER_IDS).then_some(owners)
    })
}

/// Whether a root caller's sandbox ids and namespace owners all come from root's own subordinate
/// ranges (see [`crate::plan::HostIds::roots_own`]).
pub(crate) fn host_ids_roots_own() -> bool {
    roots_host_ids().is_some_and(|h| h.roots_own)
}

/// The block of namespace owners of this host (see [`crate::plan::unprivileged_ids`]), whether or
/// not this process can use it: no sandbox without a user namespace may run as one of its ids.
pub(crate) fn owner_block() -> Option<u32> {
    roots_host_ids()?.owners
}

/// Who owns the user namespace that a clone with `flags` makes (see [`crate::sys::clone_as_owner`]):
/// for a root caller, an id of the owner block keyed by the helper (the init's parent: this
/// process, or with CLONE_PARENT a zygote's parent); None otherwise, or with no user namespace.
pub(crate) fn namespace_owner(flags: libc::c_ulong) -> Option<u32> {
    if flags & libc::CLONE_NEWUSER as libc::c_ulong == 0 {
        return None;
    }
    let owners = namespace_owners()?;
    let helper = if flags & libc::CLONE_PARENT as libc::c_ulong != 0 { nix::unistd::getppid() } else { nix::unistd::getpid() };
    Some(crate::plan::namespace_owner(owners, helper.as_raw() as u32))
}

pub(crate) fn clone_flags(spec: &Spec) -> libc::c_ulong {
    namespace_clone_flags(spec.namespaces)
}

/// The clone(2) flags that make these namespaces (the cgroup one is unshared later, from inside).
pub(crate) fn namespace_clone_flags(ns: crate::spec::Namespaces) -> libc::c_ulong {
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    for (on, f) in [(ns.user, libc::CLONE_NEWUSER), (ns.uts, libc::CLONE_NEWUTS), (ns.ipc, libc::CLONE_NEWIPC), (ns.net, libc::CLONE_NEWNET)] {
        if on {
            flags |= f;
        }
    }
    flags as libc::c_ulong | libc::SIGCHLD as libc::c_ulong
}

/// `filter`: the spec's seccomp filter as the addon compiled it ([`crate::protocol::SpecMessage`];
/// compiled here when none came).
fn launch(spec: &Spec, warm: Option<Warm>, filter: Option<Vec<u8>>) -> Result<Child, SetupError> {
    let caller = Ids { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
    // An init whose root was built ahead brought the facts it was planned from: while each path
    // they were read from names what it did (looked at now), they are not read again.
    // Such a root was built without the mounts made at the release (a bind of each sandbox's own
    // work dir): the facts it brought are those of the spec without them.
    let made = crate::plan::made_at_release(spec);
    let root_ahead = warm.as_ref().and_then(|w| w.preborn.as_ref()).is_some_and(crate::warm::Preborn::has_root);
    let base = (root_ahead && made.contains(&true)).then(|| crate::plan::without_made_at_release(spec, &made));
    let (plan, at_release, facts_checked) = {
        let lent = warm.as_ref().and_then(|w| w.preborn.as_ref()).and_then(|p| p.facts_for(base.as_ref().unwrap_or(spec)));
        let gathered;
        let with_release;
        let facts = match (lent, &base) {
            (Some(f), None) => f,
            (Some(f), Some(_)) => {
                with_release = sandbox::facts_with_release_mounts(f, spec, &made)?;
                &with_release
            }
            (None, _) => {
                gathered = sandbox::gather_facts(spec)?;
                &gathered
            }
        };
        // For a root built ahead: its own plan, and the mounts it makes at the release.
        let at_release = base.as_ref().map(|b| (plan_mounts(b, &facts.without_made_at_release(&made)), crate::plan::plan_release_mounts(spec, facts, &made)));
        (plan_mounts(spec, facts), at_release, lent.is_some())
    };
    // A warm helper's cgroup may lack a controller these limits need (on v2, one a cold start
    // would enable now), or it has none (it may not create one): then what it made ahead goes,
    // and this helper starts the cold way (which refuses limits it cannot enforce, saying why).
    let warm = warm.filter(|w| cgroup_limits(spec).is_none_or(|l| w.cgroup.as_ref().is_some_and(|cg| cg.covers(&w.host, &l))));
    // A caller that could not make room on the sockets a birth goes through (not root) starts a
    // spec whose birth would not fit the cold way (the birth is its spec, its plan and its filter).
    let warm = warm.filter(|w| {
        w.carries(crate::warm::MAX_BIRTH)
            || w.carries(spec.to_json().len() + serde_json::to_vec(&plan).map_or(usize::MAX / 2, |p| p.len()) + filter.as_ref().map_or(0, Vec::len) + 4096)
    });
    // Compiled once, in the addon (else by whoever clones the init): the sandbox's processes only
    // load it. A zygote or an init made ahead has the built-in one at hand, and is handed a
    // custom profile's in its birth.
    let custom = matches!(spec.seccomp, crate::spec::Seccomp::Profile { .. });
    // The program for an init this helper clones itself (cold, or warm without a zygote when the
    // init made ahead does not fit).
    let program = |filter: Option<&[u8]>| match filter {
        Some(f) if spec.seccomp != crate::spec::Seccomp::None => {
            Ok(Some(crate::seccomp::Program::from_bytes(f).map_err(|e| SetupError::new(Step::LoadSeccomp, e))?))
        }
        _ => compile_seccomp(spec),
    };
    let (mut seccomp, birth_filter) = match (&warm, filter) {
        (None, f) => (program(f.as_deref())?, None),
        (Some(_), f) => (None, f),
    };
    let (kept_uppers, upper_lock) = prepare_kept_upper(spec, &plan, caller)?;
    // A warm helper's cgroup exists already, its zygote inside; its limits go on once the spec
    // is here, before the init runs anything of it.
    let (cgroup, warm) = match warm {
        Some(Warm { preborn, zygote, host, cgroup, .. }) => (cgroup, Some((preborn, zygote, host))),
        None => (create_cgroup(spec)?, None),
    };
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SetupError::sys(Step::CreatePipes, e as i32, None));
    let (go_r, go_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    // A root caller's overlay lowers are idmapped by the helper, which alone may do that, and
    // handed over on this socket once the sandbox's user namespace exists.
    let idmap_layers = caller.uid == 0 && spec.namespaces.user && plan.iter().any(|op| matches!(op, crate::plan::MountOp::Overlay { .. }));
    let layers = if idmap_layers { Some(seqpacket_pair()?) } else { None };
    let tty = if spec.tty.is_some() { Some(seqpacket_pair()?) } else { None };
    let work = if spec.persistent { Some(seqpacket_pair()?) } else { None };
    // Before clone, so the sandbox inherits the relay's pipes as its stdout and stderr. A slot
    // that is /dev/null ('ignore') keeps it: what nobody receives is no output to bound.
    let relay = match spec.limits.output_bytes {
        Some(limit) => {
            let slots: Vec<std::os::fd::RawFd> = [1, 2].into_iter().filter(|&slot| !crate::sys::is_dev_null(slot)).collect();
            Some(Relay::install(&slots, limit, spec.namespaces.user).map_err(|e| SetupError::sys(Step::CreatePipes, e as i32, None))?)
        }
        None => None,
    };

    let setup_ids = crate::plan::setup_ids(spec.user, caller);
    let mut limits_host = None;
    let mut released_early = false;
    let mut spare_zygote = None;
    // On cgroup v2 the child is born in its cgroup (no migration, no RCU grace period to wait
    // for); from a warm helper, it is the init cloned ahead into its namespaces when the spec
    // wants those, else the zygote inside the v1 cgroup clones it now (on v2, or without a
    // cgroup, this helper does, as a cold start does).
    let into_cgroup = cgroup.as_ref().and_then(|cg| cg.dir_fd_v2()).map(|fd| fd.as_raw_fd());
    let (rc, born_in_cgroup) = match warm {
        Some((preborn, zygote, host)) => {
            // The whole mount plan for an init that builds its root; for one that built it ahead,
            // the mounts it makes at the release, with a tree for each bind among them.
            let birth = |plan: &[crate::plan::MountOp], trees: usize| crate::warm::Birth {
                filter: birth_filter.clone().filter(|_| custom),
                spec: spec.clone(),
                plan: plan.to_vec(),
                setup_ids,
                kept_uppers: kept_uppers.clone(),
                layers: layers.is_some(),
                tty: tty.is_some(),
                work: work.is_some(),
                trees,
            };
            let mut fds = vec![0, 1, 2, go_r.as_raw_fd(), report_w.as_raw_fd()];
            fds.extend([&layers, &tty, &work].into_iter().flatten().map(|(_, theirs)| theirs.as_raw_fd()));
            // An init made ahead that cannot serve this spec is killed now and reaped once the
            // zygote cloned the fresh one: its namespaces (and a root built ahead) go meanwhile.
            let fits = |p: &crate::warm::Preborn| match (&at_release, &base) {
                (Some((base_plan, _)), Some(base)) if p.has_root() => p.fits(base, base_plan, setup_ids, facts_checked),
                _ => p.fits(spec, &plan, setup_ids, facts_checked),
            };
            let (mut fit, mut unfit) = match preborn {
                Some(p) if fits(&p) => (Some(p), None),
                p => (None, p),
            };
            // The mounts a root built ahead makes at its release, and a tree for each bind among
            // them, opened here on the host before the init goes (its namespace may not reach
            // them). Where one cannot be opened (no open_tree before Linux 5.2, a source gone
            // meanwhile), a fresh init builds the whole root the cold way, and reports what fails.
            // (`at_release` is there only for an init whose root was built ahead.)
            let mut trees = Vec::new();
            if let (true, Some((_, ops))) = (fit.is_some(), &at_release) {
                match open_bind_trees(ops) {
                    Ok(t) => trees = t,
                    Err(_) => unfit = fit.take(),
                }
            }
            if let Some(p) = unfit.as_mut() {
                p.dismiss();
            }
            let born = match (fit, zygote) {
                (Some(p), zygote) => {
                    let own_plan: &[crate::plan::MountOp] = match &at_release {
                        _ if !p.has_root() => &plan,
                        Some((_, ops)) => ops,
                        None => &[],
                    };
                    fds.extend(trees.iter().map(AsRawFd::as_raw_fd));
                    // Released before it is handed the spec (its id maps are written already):
                    // it finds its go waiting and runs through its setup without a round trip.
                    let how = Release { limits: cgroup.as_ref().map(|cg| (&host, cg)), write_maps: false, rank_for_oom: false, attach_to: None };
                    release(spec, &plan, caller, p.pid(), &how, layers.as_ref().map(|(ours, _)| ours), &go_w)?;
                    released_early = true;
                    // The zygote, unused, is killed now and reaped once the init is on its way:
                    // gone before the init forks anything (a v1 pids cgroup counts it until reaped).
                    if let Some(mut zygote) = zygote {
                        zygote.dismiss();
                        spare_zygote = Some(zygote);
                    }
                    (p.give_birth(&birth(own_plan, trees.len()), &fds)?.as_raw() as libc::c_long, true)
                }
                (None, Some(zygote)) => (zygote.give_birth(&birth(&plan, 0), &fds)?.as_raw() as libc::c_long, true),
                // No zygote (a v2 cgroup, or none): cloned here, as a cold start clones it.
                (None, None) => {
                    seccomp = program(birth_filter.as_deref())?;
                    fork_into_namespaces(clone_flags(spec), into_cgroup)
                }
            };
            drop(unfit);
            limits_host = Some(host);
            born
        }
        None => fork_into_namespaces(clone_flags(spec), into_cgroup),
    };
    if rc < 0 {
        return Err(SetupError::sys(Step::CloneNamespaces, Errno::last() as i32, None));
    }
    if rc == 0 {
        drop(go_w);
        drop(report_r);
        drop(relay);
        let layers = layers.map(|(ours, theirs)| {
            drop(ours);
            theirs
        });
        let tty = tty.map(|(ours, theirs)| {
            drop(ours);
            theirs
        });
        let work = work.map(|(ours, theirs)| {
            drop(ours);
            theirs
        });
        sandbox::run(
            spec,
            &plan,
            seccomp.as_ref(),
            sandbox::InitPipes { go: go_r, report: report_w, setup_ids, layers, kept_uppers, tty, work, ahead: sandbox::Ahead::Nothing, trees: Vec::new() },
        );
    }
    let tty = tty.map(|(ours, _theirs)| ours);
    let work = work.map(|(ours, _theirs)| ours);
    let layers = layers.map(|(ours, _theirs)| ours);
    let init = Pid::from_raw(rc as i32);
    drop(go_r);
    drop(report_w);
    let released = if released_early {
        Ok(())
    } else {
        let how = Release {
            limits: limits_host.as_ref().zip(cgroup.as_ref()),
            write_maps: spec.namespaces.user,
            rank_for_oom: true,
            attach_to: cgroup.as_ref().filter(|_| !born_in_cgroup),
        };
        release(spec, &plan, caller, init, &how, layers.as_ref(), &go_w)
    };
    drop(spare_zygote);
    if let Err(e) = released {
        let _ = kill(init, Signal::SIGKILL);
        let _ = wait_with_usage(init);
        return Err(e);
    }
    // After the release, off the init's way (an init already gone has nothing left to hold).
    let mount_ns = hold_mount_namespace(&plan, init);
    Ok(Child { init, report: report_r, relay, cgroup, tty, work, mount_ns, upper_lock })
}

/// A detached tree ([`crate::sys::bind_tree`]) for each bind among `ops`, in order.
fn open_bind_trees(ops: &[crate::plan::MountOp]) -> Result<Vec<OwnedFd>, SetupError> {
    ops.iter().filter_map(|op| if let crate::plan::MountOp::Bind { source, .. } = op { Some(crate::sys::bind_tree(source)) } else { None }).collect()
}

/// The init's mount namespace, held by the helper so that its teardown (unmounting the whole root,
/// shutting down its tmpfs and proc superblocks: ~0.3 ms) runs after Node heard of the sandbox's
/// end instead of in the init's exit, which that report waits for. Nothing of the sandbox runs by
/// then: the init's exit still kills and reaps its pid namespace first. Not with an overlay: its
/// upper directory may be mounted again by the caller's next sandbox as soon as it hears of the end.
fn hold_mount_namespace(plan: &[crate::plan::MountOp], init: Pid) -> Option<OwnedFd> {
    if plan.iter().any(|op| matches!(op, crate::plan::MountOp::Overlay { .. })) {
        return None;
    }
    // An optimization only: a namespace that cannot be held goes with the init, as it would anyway.
    crate::sys::open_namespace(init.as_raw(), "mnt", Step::CloneNamespaces).ok()
}

/// What releasing a new init involves besides its go: a warm helper's cgroup limits (written
/// once the spec is known), its id maps and its place for the OOM killer (an init made ahead got
/// both before it changed its ids), its move into its cgroup (unless it was born there).
struct Release<'a> {
    limits: Option<(&'a crate::cgroup::CgroupHost, &'a SandboxCgroup)>,
    write_maps: bool,
    rank_for_oom: bool,
    attach_to: Option<&'a SandboxCgroup>,
}

/// Put everything in place that the init waits for, then let it go.
#[allow(clippy::too_many_arguments)]
fn release(
    spec: &Spec,
    plan: &[crate::plan::MountOp],
    caller: Ids,
    init: Pid,
    how: &Release,
    layers: Option<&OwnedFd>,
    go: &OwnedFd,
) -> Result<(), SetupError> {
    // The init was born of a helper (or zygote) that steps back behind the caller; what it runs
    // for the sandbox, and the command it starts, run at the caller's priority.
    crate::priority::as_caller(init.as_raw())?;
    if let (Some((host, cg)), Some(limits)) = (how.limits, cgroup_limits(spec)) {
        cg.apply_limits(host, &limits)?;
    }
    if how.write_maps {
        // Read once per process, before any helper was forked (see sandbox_host_ids): only
        // sandboxes that map ids need them, so only those fail when there are none.
        write_id_maps(init, &plan_id_maps(spec.user, caller, sandbox_host_ids(caller)?))?;
    }
    // While the init still has the ids it was born with, which own its /proc files.
    if how.rank_for_oom {
        crate::sys::rank_first_for_oom_killer(init.as_raw())?;
    }
    if let Some(sock) = layers {
        send_idmapped_layers(init, plan, sock)?;
    }
    // Before the child proceeds: it then makes this cgroup its cgroup namespace's root.
    if let Some(cg) = how.attach_to {
        cg.attach(init.as_raw())?;
    }
    nix::unistd::write(go, b"g").map_err(|e| SetupError::sys(Step::WaitForParent, e as i32, None))?;
    Ok(())
}

/// A close-on-exec SOCK_SEQPACKET pair: messages keep their bounds and can carry fds.
fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), SetupError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(|e| SetupError::sys(Step::CreatePipes, e as i32, None))
}

/// Each overlay's lower layer as a detached mount tree idmapped into the sandbox's user
/// namespace: the host's root-owned files then belong to the sandbox's root there, so its writes
/// can copy them up (the lower layer itself stays read-only and untouched).
fn send_idmapped_layers(init: Pid, plan: &[crate::plan::MountOp], sock: &OwnedFd) -> Result<(), SetupError> {
    let userns = crate::sys::open_namespace(init.as_raw(), "user", Step::MountOverlay)?;
    let mut trees = Vec::new();
    for op in plan {
        if let crate::plan::MountOp::Overlay { lowers, layer, .. } = op {
            for lower in lowers {
                let dir = crate::sandbox::open_lower(lower, layer)?;
                trees.push(crate::sys::idmapped_tree(&dir, lower, &userns)?);
            }
        }
    }
    let raw: Vec<i32> = trees.iter().map(|t| t.as_raw_fd()).collect();
    crate::sys::send_fds(sock, &raw)
}

/// A kept upper directory gets one `<layer>/{upper,work}` pair per overlay, owned by the
/// sandbox's root as the host sees it, so the sandbox can write its layer and nothing else of
/// the host. Created here, on the caller's side, before any namespace exists; the sandbox opens
/// them before it gives up the caller's ids (overlayfs wants them from its own mount namespace).
/// The directory must be the caller's and writable by no one else, and what lies in it is made
/// and changed through descriptors, never through a symlink: the sandbox's own id owns each layer
/// and may have swapped its parts since the last run.
/// Also returns the directory, locked (flock) for this sandbox: two overlays at once on one upper
/// directory are undefined behaviour to the kernel (it only warns), so a second sandbox naming it
/// while the first runs is refused.
fn prepare_kept_upper(spec: &Spec, plan: &[crate::plan::MountOp], caller: Ids) -> Result<(Option<sandbox::KeptUppers>, Option<OwnedFd>), SetupError> {
    use nix::sys::stat::Mode;
    let Some(dir) = spec.overlay.as_ref().and_then(|o| o.upper.as_deref()) else { return Ok((None, None)) };
    let dir = dir.trim_end_matches('/');
    let fail = |e: nix::errno::Errno, p: &str| SetupError::sys(Step::MountOverlay, e as i32, Some(p));
    let owner = sandbox_host_ids(caller)?;
    // Its own layers are made in it, never the directory itself: a mistyped path must not become
    // new host directories.
    let base = crate::sys::open_without_symlinks(dir, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| {
        let hint = match e {
            nix::errno::Errno::ELOOP => "overlay.upper's path must hold no symlink (whoever may write where one points could aim it): give its real path",
            _ => "overlay.upper must name an existing directory: create it first",
        };
        fail(e, dir).with_hint(hint)
    })?;
    // SAFETY: flock(2) on our own descriptor.
    if unsafe { libc::flock(base.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = nix::errno::Errno::last();
        let err = fail(e, dir);
        return Err(if e == nix::errno::Errno::EWOULDBLOCK {
            SetupError { message: format!("{dir} is the kept upper directory of another sandbox that is running"), ..err }
                .with_hint("one sandbox at a time per overlay.upper: wait for the other's end (or destroy it), or give this one a directory of its own")
        } else {
            err
        });
    }
    let st = nix::sys::stat::fstat(&base).map_err(|e| fail(e, dir))?;
    if st.st_uid != caller.uid || st.st_mode & 0o022 != 0 {
        return Err(SetupError::new(
            Step::MountOverlay,
            format!("{dir} is not owned by uid {} alone (owner {}, mode {:o})", caller.uid, st.st_uid, st.st_mode & 0o7777),
        )
        .with_path(dir)
        .with_hint(
            "overlay.upper must be a directory of the caller's that no one else may write: whoever may could swap a layer for a symlink to a host directory",
        ));
    }
    // Each layer directory is its owner's alone (0700): what copy-up brought into its upper (a
    // file's set-id bits, kept, under content the sandbox may then write through a shared
    // mapping: SECURITY.md) is out of other host users' reach.
    let made_owned = |parent: &OwnedFd, name: &str, shown: &str, mode: u32| -> Result<OwnedFd, SetupError> {
        match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(fail(e, shown)),
        }
        let fd = crate::sys::open_beneath(parent, name, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| fail(e, shown))?;
        nix::unistd::fchown(&fd, Some(nix::unistd::Uid::from_raw(owner.uid)), Some(nix::unistd::Gid::from_raw(owner.gid))).map_err(|e| fail(e, shown))?;
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| fail(e, shown))?;
        Ok(fd)
    };
    let mut pairs = Vec::new();
    for op in plan {
        let crate::plan::MountOp::Overlay { layer, .. } = op else { continue };
        let layer_fd = made_owned(&base, layer, &format!("{dir}/{layer}"), 0o700)?;
        for part in ["upper", "work"] {
            made_owned(&layer_fd, part, &format!("{dir}/{layer}/{part}"), 0o755)?;
        }
        pairs.push((format!("{dir}/{layer}/upper"), format!("{dir}/{layer}/work")));
    }
    Ok((Some(sandbox::KeptUppers { dir: (st.st_dev, st.st_ino), pairs }), Some(base)))
}

/// The spec's seccomp filter: the built-in one, a custom profile compiled, or none.
pub fn compile_seccomp(spec: &Spec) -> Result<Option<crate::seccomp::Program>, SetupError> {
    use crate::spec::Seccomp;
    match &spec.seccomp {
        Seccomp::None => Ok(None),
        Seccomp::Default => Ok(Some(crate::seccomp::default_program_for(spec.limits.core_dumps))),
        Seccomp::Profile { json } => {
            // A rule that a kept capability enables must stay in, as Docker resolves it.
            let opts = crate::seccomp::OciOptions { capabilities: spec.capabilities.clone(), kernel: None };
            crate::seccomp::compile_oci_with(json.as_bytes(), &opts).map(Some).map_err(|msg| {
                SetupError::new(Step::LoadSeccomp, format!("the seccomp profile does not compile: {msg}"))
                    .with_hint("options.seccomp must be a Docker/OCI seccomp profile (defaultAction, syscalls[].names/action/args)")
            })
        }
    }
}

/// A fork-like clone (no new stack, no CLONE_VM) of this single-threaded process into new
/// namespaces: clone3 with CLONE_INTO_CGROUP when a v2 cgroup fd is given, else clone. Returns
/// what clone returns (0 in the child) and whether the child started inside the cgroup.
fn fork_into_namespaces(flags: libc::c_ulong, cgroup_fd: Option<i32>) -> (libc::c_long, bool) {
    let owner = namespace_owner(flags);
    if let Some(fd) = cgroup_fd {
        let rc = crate::sys::clone_as_owner(owner, || crate::sys::clone3_into_cgroup(flags & !0xff, flags & 0xff, fd));
        if rc >= 0 {
            return (rc, true);
        }
        // Kernels before 5.7 (or a filter refusing clone3): the plain clone and a migration.
        if !matches!(Errno::last(), Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EPERM) {
            return (rc, false);
        }
    }
    // SAFETY: fork-like clone(2): no stack, no tids, no tls; the child continues on a copy of ours.
    (crate::sys::clone_as_owner(owner, || unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) }), false)
}

pub(crate) fn write_id_maps(pid: Pid, maps: &crate::plan::IdMaps) -> Result<(), SetupError> {
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

/// The host pid of the command: the init's one child right after exec.
fn command_pid(init: Pid) -> i32 {
    let path = format!("/proc/{0}/task/{0}/children", init.as_raw());
    std::fs::read_to_string(path).ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(init.as_raw())
}

/// waitpid that also returns the rusage of the init and everything it reaped.
fn wait_with_usage(pid: Pid) -> (Option<i32>, libc::rusage) {
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let rc = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut ru) };
        if rc == pid.as_raw() {
            return (Some(status), ru);
        }
        if rc < 0 && Errno::last() != Errno::EINTR {
            return (None, ru);
        }
    }
}

fn ms(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0
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

struct Supervisor {
    init: Pid,
    report: OwnedFd,
    relay: Option<Relay>,
    cgroup: Option<SandboxCgroup>,
    /// With a tty: the handoff socket until the master arrives, then the terminal relay with
    /// the caller's stdin and stdout (kept from before they were let go).
    tty_handoff: Option<OwnedFd>,
    tty_io: Option<(OwnedFd, OwnedFd)>,
    tty: Option<TtyRelay>,
    /// A size asked for before the terminal existed.
    tty_size: Option<(u16, u16)>,
    /// A long-lived sandbox's execs.
    execs: Option<Execs>,
    /// CPU time allowed to the whole sandbox, checked from the cgroup's counters.
    cpu_time_ms: Option<u64>,
    /// `limits.pids` is set: the cgroup counts the forks it refuses.
    pids_limited: bool,
    next_cpu_check: Option<Instant>,
    /// `limits.timeoutMs`, and what `wall_ms` counts from: the helper's start, then the command's.
    clock: CommandClock,
    reports: LineReader,
    requests: LineReader,
    control_open: bool,
    report_open: bool,
    /// The command's own end, as the init reported it.
    ended: Option<Report>,
    /// What the sandbox used, when the init reported its end alone (see [`Supervisor::run`]).
    reaped: Option<crate::protocol::Reaped>,
    setup_error: Option<SetupError>,
    /// Why we ended it, when we did.
    forced: Option<Reason>,
    mount_ns: Option<OwnedFd>,
    /// Once the sandbox is being ended: when the terminal relay stops waiting for its caller.
    tty_cutoff: Option<Instant>,
    /// Whose tasks the terminal relays look at.
    sandbox: crate::terminal_readers::Sandbox,
    /// Without a cgroup, the init counts what the sandbox used: to end it, the init is asked to
    /// kill and reap everything first ([`Supervisor::kill_all`]); false once asked.
    init_counts: bool,
    /// Once the init was asked: when it is killed all the same.
    kill_init_at: Option<Instant>,
    /// The command runs: the init reads the helper's signals (before, it would not see the ask).
    command_started: bool,
    /// A long-lived sandbox's init waits for work: it can take a graceful end.
    ready: bool,
    /// Past the deadline: the relay is closed once the init has ended it.
    close_relay_at_end: bool,
    /// `spec.stop`: a timeout or a cancel signals the command first.
    stop: Option<crate::spec::Stop>,
    /// A graceful stop is under way: when the sandbox is killed all the same.
    stop_by: Option<Instant>,
    /// Held until the overlay on it is gone, let go before the caller hears of the end.
    upper_lock: Option<OwnedFd>,
}

/// How long an init asked to end its sandbox has before it is killed: killing and reaping a few
/// thousand processes takes a few ms, but on a loaded machine the init may wait that long and
/// more to run at all (100 ms was missed in CI's rootless lane: the usage then lost the command's
/// 1 s of CPU). It ends as soon as it is done; this only bounds an init that never is.
const END_WITHIN: Duration = Duration::from_secs(1);

/// How long an ended sandbox's terminal output is still relayed to a caller that is slow to read.
const TTY_DRAIN: Duration = Duration::from_millis(250);

/// What the sandbox used: the init's rusage (itself and everything it reaped), with the cgroup's
/// counts where it kept them. Those count every process, also one whose parent let the kernel
/// reap it (SIGCHLD ignored), which no rusage holds; a cgroup without CPU accounting keeps the
/// rusage's CPU time rather than a 0.
/// `pids_limited`: the spec's `limits.pids` is the cgroup's (its refusals are counted there).
fn merged_usage(ru: &libc::rusage, cg: Option<crate::cgroup::Usage>, wall_ms: f64, pids_limited: bool) -> Usage {
    let mut usage =
        Usage { cpu_user_ms: ms(ru.ru_utime), cpu_system_ms: ms(ru.ru_stime), peak_memory_bytes: ru.ru_maxrss as u64 * 1024, wall_ms, pids_limit_hits: None };
    if let Some(u) = cg {
        if pids_limited {
            usage.pids_limit_hits = Some(u.pids_limit_hits);
        }
        if u.cpu_counted {
            usage.cpu_user_ms = u.cpu_user_ms as f64;
            usage.cpu_system_ms = u.cpu_system_ms as f64;
        }
        if u.peak_memory_bytes > 0 {
            usage.peak_memory_bytes = u.peak_memory_bytes;
        }
    }
    usage
}

impl Supervisor {
    fn new(spec: &Spec, child: Child, execs: Option<OwnedFd>, started: Instant) -> Supervisor {
        // With a terminal, the caller's stdin and stdout are the relay's ends, not the sandbox's.
        let tty_io = child.tty.as_ref().and_then(|_| {
            // SAFETY: 0 and 1 are open for the whole life of this process (the helper's stdio).
            let dup = |fd| crate::sys::dup_above(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, 10).ok();
            Some((dup(0)?, dup(1)?))
        });
        // The helper's own stdio is the sandbox's; let go of it so the caller sees EOF exactly
        // when the sandbox's last writer is gone.
        crate::sys::redirect_stdio_to_null();
        let sandbox = crate::terminal_readers::Sandbox::of(spec, child.init.as_raw());
        // The init reaches every process of the sandbox: with the command's own ids while the
        // command keeps no capability that could change them, and with CAP_KILL, which it keeps
        // for a command of other ids (crate::sandbox::runs_as_other_uid). Elsewhere it is killed
        // at once, as with a cgroup, and what its children used goes uncounted.
        let caller = crate::spec::Ids { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
        // Signals go by uid alone.
        let same_uid = crate::plan::setup_ids(spec.user, caller).uid == spec.user.uid;
        let init_kills = spec.namespaces.pid && spec.namespaces.user && (spec.capabilities.is_empty() || !same_uid);
        let init_counts = child.cgroup.is_none() && execs.is_none() && init_kills;
        Supervisor {
            sandbox,
            init: child.init,
            report: child.report,
            relay: child.relay,
            cgroup: child.cgroup,
            tty_handoff: child.tty,
            mount_ns: child.mount_ns,
            tty_io,
            tty: None,
            tty_size: None,
            execs: execs.zip(child.work).map(|(requests, work)| Execs::new(requests, work, sandbox)),
            cpu_time_ms: spec.limits.cpu_time_ms,
            pids_limited: spec.limits.pids.is_some(),
            next_cpu_check: spec.limits.cpu_time_ms.map(|_| started),
            clock: CommandClock::new(started, spec.limits.timeout_ms),
            reports: LineReader { buf: Vec::new() },
            requests: LineReader { buf: Vec::new() },
            control_open: true,
            report_open: true,
            ended: None,
            reaped: None,
            setup_error: None,
            forced: None,
            tty_cutoff: None,
            init_counts,
            kill_init_at: None,
            command_started: false,
            ready: false,
            close_relay_at_end: false,
            stop: spec.stop,
            stop_by: None,
            upper_lock: child.upper_lock,
        }
    }

    /// End the sandbox for `why` (its timeout, a cancel): with a graceful stop the running
    /// command (a long-lived sandbox's every process) is sent its signal and has the grace to end
    /// (its output still relayed); else, and before the command runs, at once.
    fn stop_sandbox(&mut self, why: Reason, out: &mut Control) {
        if self.stop_by.is_some() {
            return;
        }
        let grace = self.stop.filter(|_| (self.command_started || self.ready) && self.ended.is_none() && self.report_open);
        match grace.and_then(|s| Some((s, Instant::now().checked_add(Duration::from_millis(s.grace_ms))?))) {
            Some((stop, by)) => {
                self.forced.get_or_insert(why);
                if let Some(execs) = &mut self.execs {
                    let cgroup = &self.cgroup;
                    execs.stop_all(stop.signal, why, out, &|| cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills));
                } else if !(stop.group && self.signal_command_group(stop.signal)) {
                    // SAFETY: kill(2) on our own child; the init forwards it to the command.
                    unsafe { libc::kill(self.init.as_raw(), stop.signal) };
                }
                self.stop_by = Some(by);
            }
            None => self.end_now(why),
        }
    }

    /// Ask the init to send `signal` to the command's process group; false when it could not be
    /// queued (the command's uid filled its RLIMIT_SIGPENDING): the command alone gets it then.
    fn signal_command_group(&self, signal: i32) -> bool {
        let value = libc::sigval { sival_ptr: crate::sandbox::group_stop_value(signal) as *mut libc::c_void };
        // SAFETY: sigqueue(3) to our own child; the init signals the command's group (see STOP_CARRIER).
        unsafe { libc::sigqueue(self.init.as_raw(), crate::sandbox::STOP_CARRIER, value) == 0 }
    }

    /// End the sandbox for `why` at once; past the deadline, what its relay still holds is not
    /// waited for.
    fn end_now(&mut self, why: Reason) {
        self.end_sandbox(Some(why));
        if why == Reason::Timeout {
            self.close_relay_at_end = true;
        }
    }

    /// Kill the whole sandbox (its init, and with it the pid namespace). `why` becomes the
    /// result's reason unless the command had already ended on its own.
    fn end_sandbox(&mut self, why: Option<Reason>) {
        // What the terminal still holds is delivered for a moment, not waited for: a caller that
        // reads no more must not keep a sandbox it ends (a timeout, cancel, a kill, a limit),
        // even one whose command had already ended on its own.
        self.tty_cutoff.get_or_insert(Instant::now() + TTY_DRAIN);
        if self.ended.is_some() {
            return;
        }
        if self.forced.is_none() {
            self.forced = why;
        }
        self.kill_all();
    }

    /// Kill every process of the sandbox. A dead init's children are reaped by the kernel
    /// uncounted (it ignores SIGCHLD for them), so where the init's rusage is the only count of
    /// what the sandbox used, the init is asked first to kill them all and reap them (counted),
    /// then to report and leave; it is killed itself if it has not ended within END_WITHIN.
    fn kill_all(&mut self) {
        // Only once the command runs: during the setup the init reads no signal, and would
        // start the command before it saw the ask.
        if self.init_counts && self.command_started {
            // Asked once: from then on (its time is up, or another reason came) it is killed.
            self.init_counts = false;
            let mark = libc::sigval { sival_ptr: crate::sandbox::END_MARK as usize as *mut libc::c_void };
            // SAFETY: sigqueue(3) to our own child (see STOP_CARRIER).
            if unsafe { libc::sigqueue(self.init.as_raw(), crate::sandbox::STOP_CARRIER, mark) } == 0 {
                self.kill_init_at = Some(Instant::now() + END_WITHIN);
                return;
            }
        }
        self.kill_init_at = None;
        let _ = kill(self.init, Signal::SIGKILL);
    }

    fn poll_timeout(&self) -> PollTimeout {
        let tty = self.tty.as_ref().filter(|t| !t.finished());
        let tty_due = [tty.and_then(TtyRelay::next_due), tty.and(self.tty_cutoff)];
        let next = [self.clock.deadline(), self.stop_by, self.next_cpu_check, self.kill_init_at, self.execs.as_ref().and_then(Execs::next_due)]
            .into_iter()
            .chain(tty_due)
            .flatten()
            .min();
        match next {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        }
    }

    /// CPU time is summed over every process of the sandbox by its cgroup; checked often enough
    /// that a busy sandbox overruns by at most a few milliseconds per core.
    fn check_cpu_time(&mut self) {
        let (Some(limit), Some(at), Some(cg)) = (self.cpu_time_ms, self.next_cpu_check, &self.cgroup) else { return };
        if Instant::now() < at {
            return;
        }
        let u = cg.usage();
        let used = u.cpu_user_ms + u.cpu_system_ms;
        if used >= limit {
            self.next_cpu_check = None;
            self.end_sandbox(Some(Reason::CpuTime));
        } else {
            // Never sooner than 5 ms, never later than the time left could run out on 2 cores.
            let wait = ((limit - used) / 4).clamp(5, 100);
            self.next_cpu_check = Some(Instant::now() + Duration::from_millis(wait));
        }
    }

    fn run(mut self, out: &mut Control) -> i32 {
        // Until the init is gone, and then until the relay has delivered what the sandbox wrote.
        while self.report_open || self.relay.as_ref().is_some_and(|r| !r.finished()) || self.tty.as_ref().is_some_and(|t| !t.finished()) {
            self.step(out);
        }
        // An init that reaped every other process of the sandbox reported its end and what they
        // used: its own exit (unmapping its memory, letting go of its namespaces, ~0.2 ms) runs
        // while the caller hears of the end; nothing of the command's is left to run.
        // With a kept upper directory, the caller's next sandbox may take it once it hears of
        // the end: the overlay goes with the init's exit, waited for first, and the lock after it.
        let early = self.reaped.take().filter(|_| self.upper_lock.is_none());
        let (status, ru) = match early {
            Some(r) => (None, r.as_rusage()),
            None => wait_with_usage(self.init),
        };
        // The pid namespace is gone with the init; the cgroup's count is the last word.
        let cg_usage = self.cgroup.as_ref().map(|cg| cg.usage());
        let ev = self.end_event(status, ru, cg_usage, out);
        drop(self.upper_lock.take());
        out.send(&ev);
        if early.is_some() {
            // Reaped before its cgroup goes (a cgroup with a process in it cannot be removed).
            let _ = wait_with_usage(self.init);
        }
        // Its mounts go now that Node knows (the helper's own exit waits for their teardown).
        drop(self.mount_ns.take());
        // After the report: a v1 rmdir waits for cgroup_mutex, which a migration elsewhere (a warm
        // helper's zygote entering its cgroup) holds through an RCU grace period, ~10 ms here.
        // The helper exits only once it is done, so nothing outlives it.
        if let Some(cg) = self.cgroup.take() {
            // Ends whatever could still be in it (nothing, once the init is reaped), then removes it.
            let _ = cg.remove();
        }
        0
    }

    /// The sandbox's end as Node hears it: its setup's failure, or how the command ended and what it used.
    fn end_event(&mut self, status: Option<i32>, ru: libc::rusage, cg_usage: Option<crate::cgroup::Usage>, out: &mut Control) -> Event {
        if let Some(e) = self.setup_error.take() {
            return Event::Error(e);
        }
        let wall_ms = self.clock.ms_until(Instant::now());
        let (exit_code, signal) = match (&self.ended, status) {
            (Some(Report::Exited { code, .. }), _) => (Some(*code), None),
            (Some(Report::Signaled { signal, .. }), _) => (None, Some(signal_name(*signal))),
            (_, Some(st)) if libc::WIFSIGNALED(st) => (None, Some(signal_name(libc::WTERMSIG(st)))),
            (_, Some(st)) if libc::WIFEXITED(st) => (Some(libc::WEXITSTATUS(st)), None),
            _ => (None, None),
        };
        let usage = merged_usage(&ru, cg_usage, wall_ms, self.pids_limited);
        // A one-shot sandbox's OOM at any point is its verdict; a long-lived one's only since its
        // last exec started or ended.
        let oom = cg_usage.is_some_and(|u| self.execs.as_ref().map_or(u.oom_kills > 0, |x| x.oom_since(u.oom_kills)));
        // Checked while it runs, every few ms: one that used it up and ended between two checks
        // used it up all the same.
        let over_cpu_time = used_up_cpu_time(self.cpu_time_ms, cg_usage);
        let reason = match self.forced {
            Some(r) => r,
            // From the cgroup's own counter, not guessed from a SIGKILL.
            None if oom => Reason::Oom,
            None if over_cpu_time => Reason::CpuTime,
            None if signal.is_some() => Reason::Signaled,
            None => Reason::Exited,
        };
        if let Some(execs) = &mut self.execs {
            // What ended the sandbox ended them: destroy() (canceled), its limits, its OOM, a
            // signal that killed its init from outside (signaled: nobody canceled them).
            execs.end_all(if reason == Reason::Exited { Reason::Canceled } else { reason }, out);
        }
        Event::Exit { exit_code, signal, reason, duration_ms: wall_ms, usage }
    }

    fn step(&mut self, out: &mut Control) {
        let mut fds = Vec::with_capacity(6);
        if self.report_open {
            fds.push(PollFd::new(self.report.as_fd(), PollFlags::POLLIN));
        }
        let control_at = fds.len();
        if self.control_open {
            fds.push(PollFd::new(out.fd.as_fd(), PollFlags::POLLIN));
        }
        let relay_at = fds.len();
        if let Some(relay) = &self.relay {
            for i in relay.interests() {
                fds.push(PollFd::new(i.fd, if i.writable { PollFlags::POLLOUT } else { PollFlags::POLLIN }));
            }
        }
        let tty_at = fds.len();
        if let Some(tty) = &self.tty {
            for i in tty.interests() {
                fds.push(PollFd::new(i.fd, if i.writable { PollFlags::POLLOUT } else { PollFlags::POLLIN }));
            }
        }
        let handoff_at = fds.len();
        if let Some(h) = &self.tty_handoff {
            fds.push(PollFd::new(h.as_fd(), PollFlags::POLLIN));
        }
        if let Some(execs) = &self.execs {
            for i in execs.interests() {
                fds.push(PollFd::new(i.fd, if i.writable { PollFlags::POLLOUT } else { PollFlags::POLLIN }));
            }
        }
        match poll(&mut fds, self.poll_timeout()) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => {
                // Nothing here can be watched any more (the deadline, the caller's end): the
                // sandbox ends now, rather than run unwatched while run() waits for its init.
                let _ = kill(self.init, Signal::SIGKILL);
                self.report_open = false;
                if let Some(relay) = &mut self.relay {
                    relay.close();
                }
                if let Some(tty) = &mut self.tty {
                    tty.close();
                }
                return;
            }
        }
        let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
        let report_ready = self.report_open && ready(0);
        let control_ready = self.control_open && ready(control_at);
        let relay_ready = (relay_at..tty_at).any(ready);
        let tty_ready = (tty_at..handoff_at).any(ready);
        let handoff_ready = self.tty_handoff.is_some() && ready(handoff_at);
        drop(fds);
        if handoff_ready {
            self.take_terminal();
        }
        if report_ready {
            self.read_reports(out);
        }
        // Keystrokes are read first, then the requests, then the keystrokes go to the terminal:
        // Node writes a resize before the keystrokes that follow it, so once those are read here
        // the resize is in the control socket, and it takes effect before the command can read
        // them (the relays read their input whenever they run, not only when poll flagged it).
        let took_input = self.tty.as_mut().is_some_and(TtyRelay::take_input) | self.execs.as_mut().is_some_and(Execs::take_tty_input);
        if control_ready || (took_input && self.control_open && crate::sys::readable_now(&out.fd)) {
            self.read_requests(out);
        }
        if tty_ready || self.tty.as_ref().is_some_and(TtyRelay::due) {
            if let Some(tty) = &mut self.tty {
                tty.pump();
            }
        }
        if self.tty_cutoff.is_some_and(|c| Instant::now() >= c) {
            if let Some(tty) = &mut self.tty {
                tty.close();
            }
        }
        if let Some(execs) = &mut self.execs {
            let cgroup = &self.cgroup;
            execs.pump(out, &|| cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills));
        }
        if relay_ready {
            if let Some(relay) = &mut self.relay {
                relay.pump();
                if relay.exceeded() {
                    // Even when the command already exited: its output was cut, and the result
                    // must say so. Killed before its pipes close, so it ends by our SIGKILL.
                    if self.forced.is_none() {
                        self.forced = Some(Reason::OutputLimit);
                    }
                    // Not through the init (kill_all): its kill would come after the close, and
                    // the command could end by SIGPIPE first. Its children's use goes uncounted
                    // where no cgroup counts it (README).
                    let _ = kill(self.init, Signal::SIGKILL);
                    relay.close();
                }
            }
        }
        if self.report_open {
            self.check_cpu_time();
        }
        if self.kill_init_at.is_some_and(|d| Instant::now() >= d) {
            self.kill_all();
        }
        if self.clock.expired(Instant::now()) {
            self.stop_sandbox(Reason::Timeout, out);
        }
        if self.stop_by.is_some_and(|d| Instant::now() >= d) {
            self.stop_by = None;
            self.end_now(self.forced.unwrap_or(Reason::Timeout));
        }
        // Whatever is still buffered past the deadline is not waited for; while the init kills
        // and reaps (kill_all), the pipes stay open: closed now, the command could end by
        // SIGPIPE before the init's SIGKILL.
        if self.close_relay_at_end && (self.kill_init_at.is_none() || !self.report_open) {
            self.close_relay_at_end = false;
            if let Some(relay) = &mut self.relay {
                relay.pump();
                relay.close();
            }
        }
    }

    /// The init's terminal master arrives once; from then on the helper relays it.
    fn take_terminal(&mut self) {
        let Some(handoff) = self.tty_handoff.take() else { return };
        let master = match crate::sys::recv_message(&handoff, 64, Step::OpenPty) {
            Ok(Some((_, mut fds))) if !fds.is_empty() => Some(fds.remove(0)),
            // Lent (see sandbox.rs open_terminal): taken, and the init told so; else the init
            // sees this end close and fails its setup.
            Ok(Some((note, _))) => crate::sys::lent_fd(&note)
                .and_then(|fd| crate::sys::take_fd_of(self.init.as_raw(), fd).ok())
                .filter(|_| crate::sys::send_message(&handoff, b"t", &[], Step::OpenPty).is_ok()),
            _ => None,
        };
        if let (Some(master), Some((input, output))) = (master, self.tty_io.take()) {
            self.tty = TtyRelay::new(master, input, output, self.ended.is_some() || !self.report_open, self.sandbox).ok();
            if let (Some(tty), Some((rows, cols))) = (&self.tty, self.tty_size.take()) {
                tty.resize(rows, cols);
            }
        }
    }

    fn read_reports(&mut self, out: &mut Control) {
        if self.reports.fill(&self.report).is_none() {
            self.report_open = false;
            // The init is gone, and every process of its pid namespace with it.
            if let Some(tty) = &mut self.tty {
                tty.command_ended();
            }
        }
        while let Some(line) = self.reports.next_line() {
            let cgroup = &self.cgroup;
            let oom = || cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills);
            match serde_json::from_str::<Report>(&line) {
                Ok(Report::Started { at }) => {
                    self.command_started = true;
                    self.clock.command_started(crate::sys::instant_of_monotonic(at));
                    out.send(&Event::Spawned { pid: command_pid(self.init) })
                }
                Ok(Report::Ready) => {
                    self.ready = true;
                    out.send(&Event::Ready { pid: self.init.as_raw() })
                }
                Ok(r) if self.execs.as_mut().is_some_and(|x| x.on_report(&r, out, &oom)) => {}
                // A graceful end found nothing left to wait for.
                Ok(Report::Emptied) => {
                    if self.stop_by.take().is_some() {
                        self.end_now(self.forced.unwrap_or(Reason::Canceled));
                    }
                }
                Ok(Report::SetupFailed(e)) => self.setup_error = Some(e),
                Ok(r @ (Report::Exited { reaped, .. } | Report::Signaled { reaped, .. })) => {
                    // Nothing but the init is left, and the sandbox's mounts are held here until
                    // the end is reported: the caller may hear of it now (see `run`).
                    if reaped.is_some() && self.mount_ns.is_some() && self.execs.is_none() {
                        self.reaped = reaped;
                        self.report_open = false;
                    }
                    self.ended = Some(r);
                    if let Some(tty) = &mut self.tty {
                        tty.command_ended();
                    }
                }
                Ok(_) | Err(_) => {}
            }
        }
    }

    fn read_requests(&mut self, out: &mut Control) {
        if self.requests.fill(&out.fd).is_none() {
            // Lifeline: Node is gone, so is the sandbox.
            self.control_open = false;
            self.end_sandbox(Some(Reason::Canceled));
            if let Some(relay) = &mut self.relay {
                relay.close();
            }
            if let Some(tty) = &mut self.tty {
                tty.close();
            }
        }
        while let Some(line) = self.requests.next_line() {
            match Request::parse(&line) {
                Some(Request::Cancel) => self.stop_sandbox(Reason::Canceled, out),
                Some(Request::Signal(libc::SIGKILL)) => self.end_sandbox(None),
                Some(Request::Resize(rows, cols)) => match &self.tty {
                    Some(tty) => tty.resize(rows, cols),
                    // Before the terminal is handed over: applied when it is.
                    None => self.tty_size = Some((rows, cols)),
                },
                Some(Request::ExecSignal(id, n)) => {
                    if let Some(execs) = &mut self.execs {
                        execs.signal(id, n, false);
                    }
                }
                Some(Request::ExecSignalGroup(id, n)) => {
                    if let Some(execs) = &mut self.execs {
                        execs.signal(id, n, true);
                    }
                }
                Some(Request::ExecCancel(id)) => {
                    if let Some(execs) = &mut self.execs {
                        execs.cancel(id);
                    }
                }
                Some(Request::KillAll) => {
                    let cgroup = &self.cgroup;
                    if let Some(execs) = &mut self.execs {
                        execs.kill_all(out, &|| cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills));
                    }
                }
                Some(Request::ExecResize(id, rows, cols)) => {
                    if let Some(execs) = &mut self.execs {
                        execs.resize(id, rows, cols);
                    }
                }
                Some(Request::Signal(n)) if n == libc::SIGSTOP => {
                    let mark = libc::sigval { sival_ptr: crate::sandbox::STOP_MARK as usize as *mut libc::c_void };
                    // SAFETY: sigqueue(3) to our own child; the init stops the command (see STOP_CARRIER).
                    unsafe { libc::sigqueue(self.init.as_raw(), crate::sandbox::STOP_CARRIER, mark) };
                }
                Some(Request::Signal(n)) => {
                    // SAFETY: kill(2) on our own child; the init forwards it to the command.
                    unsafe { libc::kill(self.init.as_raw(), n) };
                }
                None => {}
            }
        }
    }
}

/// Whether the cgroup's count says the sandbox used its whole `cpuTimeMs`.
fn used_up_cpu_time(limit: Option<u64>, usage: Option<crate::cgroup::Usage>) -> bool {
    limit.zip(usage).is_some_and(|(limit, u)| u.cpu_counted && u.cpu_user_ms + u.cpu_system_ms >= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_that_used_up_its_cpu_time_between_two_checks_used_it_up() {
        let used = |user, system| Some(crate::cgroup::Usage { cpu_user_ms: user, cpu_system_ms: system, cpu_counted: true, ..Default::default() });
        assert!(used_up_cpu_time(Some(1000), used(1003, 0)));
        assert!(used_up_cpu_time(Some(1000), used(700, 300)));
        assert!(!used_up_cpu_time(Some(1000), used(700, 299)));
        // No limit, no cgroup, or a cgroup that does not count CPU time: nothing to say.
        assert!(!used_up_cpu_time(None, used(5000, 0)));
        assert!(!used_up_cpu_time(Some(1000), None));
        assert!(!used_up_cpu_time(Some(1000), Some(crate::cgroup::Usage { cpu_user_ms: 5000, ..Default::default() })));
    }

    #[test]
    fn a_cgroup_without_cpu_accounting_keeps_the_rusage_cpu_time() {
        // SAFETY: rusage is plain data; all zeros is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        ru.ru_utime = libc::timeval { tv_sec: 1, tv_usec: 500_000 };
        ru.ru_stime = libc::timeval { tv_sec: 0, tv_usec: 250_000 };
        ru.ru_maxrss = 2048;
        let no_cpu = crate::cgroup::Usage { peak_memory_bytes: 8 << 20, ..Default::default() };
        let u = merged_usage(&ru, Some(no_cpu), 3.0, false);
        assert_eq!((u.cpu_user_ms, u.cpu_system_ms, u.peak_memory_bytes), (1500.0, 250.0, 8 << 20));
        let counted = crate::cgroup::Usage { cpu_user_ms: 1700, cpu_system_ms: 300, cpu_counted: true, ..Default::default() };
        let u = merged_usage(&ru, Some(counted), 3.0, false);
        // A process reaped by the kernel (its parent ignored SIGCHLD) is in the cgroup's count only.
        assert_eq!((u.cpu_user_ms, u.cpu_system_ms, u.peak_memory_bytes), (1700.0, 300.0, 2048 * 1024));
        assert_eq!(merged_usage(&ru, None, 3.0, false).cpu_user_ms, 1500.0);
        // Refused forks are told only where limits.pids is the cgroup's.
        let refused = crate::cgroup::Usage { pids_limit_hits: 7, ..Default::default() };
        assert_eq!(merged_usage(&ru, Some(refused), 3.0, true).pids_limit_hits, Some(7));
        assert_eq!(merged_usage(&ru, Some(refused), 3.0, false).pids_limit_hits, None);
    }
}
