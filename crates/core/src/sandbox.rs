//! Inside the sandbox: the setup that runs as the new namespaces' first process, the small init
//! it becomes (pid 1: reaps orphans, forwards signals, reports the command's end), and the
//! command's own last steps before execve. The order of the steps is the security model; see
//! DESIGN section 3.

use crate::error::{SetupError, Step};
use crate::plan::{EntryKind, HostFacts, MountOp, RootEntry, HOST_SECRETS, HOST_SYSTEM_DIRS};
use crate::protocol::Report;
use crate::spec::{Rootfs, Spec};
use crate::sys::{self, Ended};
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

/// Where the new root is assembled before pivot_root. Bind sources are opened before anything is
/// mounted here, so sources under the host's /tmp stay reachable; a source that holds it (the
/// host's /tmp, or /) is bound while the staging tmpfs is unbindable (see [`build_root`]).
const STAGING: &str = "/tmp";

/// The throw-away upper layers' tmpfs, detached before the sandbox starts. (It and the two below
/// are in [`crate::plan::SETUP_NAMES`]: a root entry of their name is left out of the root.)
const OVERLAY_AREA: &str = "/.isolate-overlay";

/// Placeholders bound over masked files and directories; removed once every mask is in place.
const MASK_FILE: &str = "/.isolate-mask";
const MASK_DIR: &str = "/.isolate-mask-dir";

/// The placeholders, each made (mode 000, empty) and opened once for all the masks: in the
/// overlays' scratch area when there is one (`area`), else in the staging root, whose names go
/// once the masks are bound. Never in an overlay root: that may be a kept layer, which an earlier
/// sandbox (or a setup that failed half way) may have left a placeholder of its own in.
#[derive(Default)]
struct MaskSources {
    file: Option<OwnedFd>,
    dir: Option<OwnedFd>,
    area: Option<OwnedFd>,
}

fn kind_of(path: &str, follow: bool) -> EntryKind {
    let st = if follow { nix::sys::stat::stat(path) } else { nix::sys::stat::lstat(path) };
    match st {
        Err(_) => EntryKind::Missing,
        Ok(st) => match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => match std::fs::read_link(path) {
                Ok(to) => EntryKind::Symlink(to.to_string_lossy().into_owned()),
                Err(_) => EntryKind::Missing,
            },
            _ => EntryKind::Other,
        },
    }
}

/// [`kind_of`] for `name` in the directory `dir`, not followed.
fn kind_at(dir: std::os::fd::BorrowedFd<'_>, name: &str) -> EntryKind {
    match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(_) => EntryKind::Missing,
        Ok(st) => match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => match nix::fcntl::readlinkat(dir, name) {
                Ok(to) => EntryKind::Symlink(to.to_string_lossy().into_owned()),
                Err(_) => EntryKind::Missing,
            },
            _ => EntryKind::Other,
        },
    }
}

/// The few host facts the mount plan depends on. Runs in the helper before clone, so a missing
/// rootfs or bind source fails before any namespace exists. For a host-root spec it reads
/// exactly [`host_fact_paths`].
pub fn gather_facts(spec: &Spec) -> Result<HostFacts, SetupError> {
    let mut facts = HostFacts::default();
    match &spec.rootfs {
        Rootfs::Host => {
            for name in HOST_SYSTEM_DIRS {
                facts.root_entries.push(RootEntry { name: (*name).into(), kind: kind_of(&format!("/{name}"), false) });
            }
            for path in HOST_SECRETS {
                facts.secrets.push(RootEntry { name: (*path).into(), kind: kind_of(path, false) });
            }
        }
        // By their real paths, no symlink on the way (sys::open_rooted): what the helper looks at
        // here is what the init opens later.
        Rootfs::Layers { paths } => {
            for p in paths {
                sys::open_rooted(p, libc::O_PATH | libc::O_DIRECTORY, Step::InspectSources).map_err(|e| match e.hint {
                    Some(_) => e,
                    None => e.with_hint("each rootfs layer must be a directory (importImage with layout: 'layers' makes them)"),
                })?;
            }
        }
        Rootfs::Dir { path } => {
            let dir = sys::open_rooted(path, libc::O_RDONLY | libc::O_DIRECTORY, Step::InspectSources).map_err(|e| match e.hint {
                Some(_) => e,
                None => e.with_hint("rootfs must be a directory holding a root filesystem (for example an unpacked Alpine minirootfs)"),
            })?;
            let (st, host) = (nix::sys::stat::fstat(&dir), nix::sys::stat::stat("/"));
            if let (Ok(st), Ok(host)) = (st, host) {
                if (st.st_dev, st.st_ino) == (host.st_dev, host.st_ino) {
                    return Err(SetupError::new(Step::InspectSources, format!("rootfs {path} is the host's root directory"))
                        .with_path(path.clone())
                        .with_hint("a rootfs of the host's '/' would expose the whole host; use 'host' for a read-only view of its system directories"));
                }
            }
            let mut names = Vec::new();
            let listed = dir.try_clone().map_err(|e| SetupError::sys(Step::InspectSources, e.raw_os_error().unwrap_or(libc::EIO), Some(path)))?;
            let mut entries = nix::dir::Dir::from_fd(listed).map_err(|e| SetupError::sys(Step::InspectSources, e as i32, Some(path)))?;
            for entry in entries.iter().flatten() {
                let name = entry.file_name().to_bytes();
                if name != b"." && name != b".." {
                    if let Ok(name) = std::str::from_utf8(name) {
                        names.push(name.to_owned());
                    }
                }
            }
            names.sort();
            for name in names {
                let kind = kind_at(std::os::fd::AsFd::as_fd(&dir), &name);
                facts.root_entries.push(RootEntry { name, kind });
            }
        }
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        facts.bind_sources.push(source_kind(i, m)?);
    }
    // Followed: the host's own choice of file (systemd-resolved's stub file behind a symlink).
    facts.host_resolv_conf = crate::plan::lends_resolv_conf(spec) && kind_of(crate::plan::HOST_RESOLV_CONF, true) == EntryKind::File;
    Ok(facts)
}

/// What `mounts[i]`'s host source is (None for a tmpfs); a missing one is an error naming it.
fn source_kind(i: usize, m: &crate::spec::Mount) -> Result<Option<EntryKind>, SetupError> {
    let (step, source) = match m {
        crate::spec::Mount::Bind { source, .. } => (Step::BindMount, source),
        crate::spec::Mount::Overlay { source, .. } => (Step::MountOverlay, source),
        _ => return Ok(None),
    };
    match kind_of(source, true) {
        EntryKind::Missing => Err(SetupError::sys(step, libc::ENOENT, Some(source))
            .with_hint(format!("mounts[{i}].source does not exist on the host; create it or fix mounts[{i}].source"))),
        k => Ok(Some(k)),
    }
}

/// `spec`'s facts from `base`'s, the facts of `spec` without its mounts made at the release
/// (`made`): the sources of those are read now.
pub fn facts_with_release_mounts(base: &HostFacts, spec: &Spec, made: &[bool]) -> Result<HostFacts, SetupError> {
    let mut kept = base.bind_sources.iter();
    let bind_sources = spec
        .mounts
        .iter()
        .zip(made)
        .enumerate()
        .map(|(i, (m, at_release))| if *at_release { source_kind(i, m) } else { Ok(kept.next().cloned().flatten()) })
        .collect::<Result<_, _>>()?;
    Ok(HostFacts { bind_sources, ..base.clone() })
}

/// The paths [`gather_facts`] reads for a host-root spec, and whether it follows a symlink there
/// ([`FactsAhead`] relies on this being all of them).
fn host_fact_paths(spec: &Spec) -> impl Iterator<Item = (String, bool)> + '_ {
    let system = HOST_SYSTEM_DIRS.iter().map(|name| (format!("/{name}"), false));
    let secrets = HOST_SECRETS.iter().map(|path| ((*path).to_owned(), false));
    let sources = spec.mounts.iter().filter_map(|m| match m {
        crate::spec::Mount::Bind { source, .. } | crate::spec::Mount::Overlay { source, .. } => Some((source.clone(), true)),
        _ => None,
    });
    system.chain(secrets).chain(sources)
}

/// A path the host facts were read from, and the object it named then (None: nothing).
#[derive(Debug, Clone)]
struct SeenPath {
    path: String,
    follow: bool,
    id: Option<sys::FileIdentity>,
}

/// A host-root spec's facts gathered ahead (with the root built ahead), and every path they were
/// read from: they still hold while each of those paths names the same object, or still none
/// (an object's kind, and a symlink's target, cannot change without it becoming another object).
/// Not for a directory rootfs, whose facts list its entries: a directory stays the same object
/// when entries come and go.
#[derive(Debug, Clone)]
pub struct FactsAhead {
    mounts: Vec<crate::spec::Mount>,
    facts: HostFacts,
    seen: Vec<SeenPath>,
}

impl FactsAhead {
    /// `spec`'s facts, and where they came from (None for a rootfs other than the host's). The
    /// objects are named before the facts are read: a path that changes in between is then one
    /// whose object no longer matches, and the facts are read again on the start's path.
    pub fn gather(spec: &Spec) -> Result<Option<FactsAhead>, SetupError> {
        if spec.rootfs != Rootfs::Host {
            return Ok(None);
        }
        let seen = host_fact_paths(spec).map(|(path, follow)| SeenPath { id: sys::FileIdentity::of_path(&path, follow), path, follow }).collect();
        let facts = gather_facts(spec)?;
        Ok(Some(FactsAhead { mounts: spec.mounts.clone(), facts, seen }))
    }

    pub fn facts(&self) -> &HostFacts {
        &self.facts
    }

    /// The facts, when `spec` reads the same paths and each still names what it did (looked at
    /// now); None when `spec`'s facts must be read anew.
    pub fn still_for(&self, spec: &Spec) -> Option<&HostFacts> {
        let same = spec.rootfs == Rootfs::Host && spec.mounts == self.mounts;
        (same && self.seen.iter().all(|s| sys::FileIdentity::of_path(&s.path, s.follow) == s.id)).then_some(&self.facts)
    }

    /// Whether `held` is one of the objects these facts were read from, as it was then: once
    /// [`FactsAhead::still_for`] found them unchanged on this start, it need not be looked at again.
    pub fn saw(&self, held: &HostObject) -> bool {
        self.seen.iter().any(|s| s.path == held.path && s.follow == held.follow && s.id == Some(held.id))
    }
}

/// Fds the sandbox's first process receives from the helper.
pub struct InitPipes {
    /// Closed by the helper once id maps and cgroup are in place.
    pub go: OwnedFd,
    /// Reports to the helper.
    pub report: OwnedFd,
    /// The ids the setup takes once the maps exist (see plan::setup_ids).
    pub setup_ids: crate::spec::Ids,
    /// For a root caller's overlay: the socket on which the helper sends the lower layers as
    /// idmapped mount trees, one per overlay in plan order.
    pub layers: Option<OwnedFd>,
    /// A kept overlay upper directory as the helper prepared it, one layer per overlay.
    pub kept_uppers: Option<KeptUppers>,
    /// With a tty: where the init hands the terminal's master to the helper.
    pub tty: Option<OwnedFd>,
    /// A long-lived sandbox: where the helper sends execs (see [`crate::exec_server`]).
    pub work: Option<OwnedFd>,
    /// What an init cloned ahead did before its spec arrived (see [`crate::warm`]).
    pub ahead: Ahead,
    /// For an init whose root was built ahead: a detached tree ([`sys::bind_tree`]) for each bind
    /// it makes at its release, in plan order.
    pub trees: Vec<OwnedFd>,
}

/// How far an init got before its spec arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    /// Nothing: cloned for this spec.
    Nothing,
    /// Its namespaces exist, their id maps are written and the loopback is up.
    Namespaces,
    /// That, and its root is built ([`build_root`]) for a spec with the same [`crate::warm::RootKey`].
    Root,
}

/// A host object the new root holds on to (a bind's source, the file a mask covers), as it was
/// when the root was built: a root built ahead is used only while each is still what its path
/// names (a bind or a mask stays on the object it was made on, not on whatever replaced it).
/// See [`sys::FileIdentity`] for what tells two objects apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostObject {
    pub path: String,
    pub follow: bool,
    pub id: sys::FileIdentity,
}

impl HostObject {
    /// Whether `path` still names this object on the host (as seen from here).
    pub fn unchanged(&self) -> bool {
        sys::FileIdentity::of_path(&self.path, self.follow).is_some_and(|id| id == self.id)
    }
}

pub(crate) fn send(report_fd: &OwnedFd, r: &Report) {
    let line = r.to_line();
    let _ = nix::unistd::write(report_fd, &line);
}

/// The whole life of the sandbox's first process. Never returns.
pub fn run(spec: &Spec, plan: &[MountOp], seccomp: Option<&crate::seccomp::Program>, pipes: InitPipes) -> ! {
    let InitPipes { go, report, setup_ids, layers, kept_uppers, tty, work, ahead, trees } = pipes;
    // So `ps` inside and on the host tells the init from the helper it was forked from.
    let _ = nix::sys::prctl::set_name(c"isolate-init");
    // The init keeps what it was handed and nothing else of the helper (its control socket to
    // Node, a cgroup directory, the relay's ends).
    let keep: Vec<i32> = [Some(&go), Some(&report), layers.as_ref(), tty.as_ref(), work.as_ref()]
        .into_iter()
        .flatten()
        .chain(&trees)
        .map(std::os::fd::AsRawFd::as_raw_fd)
        .collect();
    sys::close_fds_except(&keep);
    if let Err(e) = setup(spec, plan, setup_ids, layers, kept_uppers, ahead, trees, &go, &report) {
        send(&report, &Report::SetupFailed(e));
        sys::exit_now(125);
    }
    // Once, in the built root, before anything of the sandbox runs: the rules' real paths, for
    // the command and every exec.
    let in_root;
    // A kept upper layer (overlay.upper) holds what earlier sandboxes left, their symlinks too:
    // its root's symlinks are no longer the host's alone, and none is followed, as in an image.
    let host_symlinks_only = spec.rootfs == Rootfs::Host && spec.overlay.as_ref().is_none_or(|o| o.upper.is_none());
    let spec = match &spec.landlock {
        Some(rules) => {
            in_root = Spec { landlock: Some(crate::landlock::resolved_in_root(rules, host_symlinks_only)), ..spec.clone() };
            &in_root
        }
        None => spec,
    };
    if let Some(rules) = &spec.landlock {
        // With every mount in place (a root built ahead has had its binds attached), and while
        // the init still holds CAP_SYS_ADMIN in the sandbox.
        if let Err(e) = crate::landlock::forbid_exec_outside(rules) {
            send(&report, &Report::SetupFailed(e));
            sys::exit_now(125);
        }
    }
    drop(go);
    match work {
        Some(work) => crate::exec_server::serve(spec, seccomp, report, work),
        None => init_loop(spec, seccomp, report, tty),
    }
}

fn wait_for_parent(go: &OwnedFd) -> sys::Result<()> {
    let mut byte = [0u8; 1];
    match nix::unistd::read(go, &mut byte) {
        Ok(1) => Ok(()),
        // EOF without the byte: the helper died or gave up before the maps were written.
        Ok(_) => Err(SetupError::new(Step::WaitForParent, "the helper went away before the sandbox was released")),
        Err(e) => Err(SetupError::sys(Step::WaitForParent, e as i32, None)),
    }
}

fn staged(target: &str) -> String {
    format!("{STAGING}{target}")
}

/// `plan`: the whole root's, or for a root built ahead only the mounts made at its release.
#[allow(clippy::too_many_arguments)]
fn setup(
    spec: &Spec,
    plan: &[MountOp],
    pipes_ids: crate::spec::Ids,
    layers: Option<OwnedFd>,
    kept_uppers: Option<KeptUppers>,
    ahead: Ahead,
    trees: Vec<OwnedFd>,
    go: &OwnedFd,
    report: &OwnedFd,
) -> sys::Result<()> {
    // Die with the helper; the pid namespace then takes everything else with us.
    sys::set_parent_death_signal()?;
    if ahead == Ahead::Nothing {
        // While the helper writes the id maps and releases this init, off the start's path (an
        // init made ahead did it ahead).
        empty_bounding_set(spec);
    }
    wait_for_parent(go)?;
    if ahead != Ahead::Root {
        build_root(spec, plan, pipes_ids, layers, kept_uppers, false)?;
    } else if !plan.is_empty() {
        mount_at_release(plan, trees)?;
    }
    // Entering the mapped ids (build_root, or ahead before the birth) cleared the parent-death
    // signal: a change of effective uid does (prctl(2)). Set again, then look whether the helper
    // died before that (it holds the report pipe's other end until it is done with us).
    sys::set_parent_death_signal()?;
    if sys::reader_gone(report) {
        return Err(SetupError::new(Step::WaitForParent, "the helper went away while the sandbox was being set up"));
    }
    if spec.namespaces.uts {
        sys::set_hostname(&spec.hostname)?;
    }
    if spec.namespaces.net && ahead == Ahead::Nothing {
        sys::bring_up_loopback()?;
    }
    // The caller's session keyring stays outside (an init whose root was built ahead joined a
    // new one then, with the ids it has now).
    if ahead != Ahead::Root {
        sys::join_new_session_keyring()?;
    }
    Ok(())
}

/// Empty this init's bounding set but for the capabilities its commands keep (and, in a
/// long-lived sandbox, what forking execs needs), and note it: each command then drops only
/// those few itself, where it read and dropped every capability. The set only limits what an
/// execve can gain: the setup keeps its own capabilities. A failure is left to the commands,
/// which drop the set step by step and report it.
fn empty_bounding_set(spec: &Spec) {
    let fork_caps = if spec.persistent { &crate::exec_server::FORK_CAPS[..] } else { &[] };
    let kept: Vec<u32> = spec.capabilities.iter().map(String::as_str).chain(fork_caps.iter().copied()).filter_map(crate::caps::number).collect();
    if sys::drop_bounding_set(&kept).is_ok() {
        sys::note_bounding_set(&kept);
    }
}

/// The new root, from the host's objects to the pivot: what this process then sees as `/`.
/// With `note_held` (a root built ahead), returns the host objects it holds on to (see
/// [`HostObject`]); a root built for its spec now needs none, and spares the stat calls.
pub(crate) fn build_root(
    spec: &Spec,
    plan: &[MountOp],
    pipes_ids: crate::spec::Ids,
    layers: Option<OwnedFd>,
    kept_uppers: Option<KeptUppers>,
    note_held: bool,
) -> sys::Result<Vec<HostObject>> {
    // Everything the setup creates has its mode spelled out; the caller's mask is the commands'.
    sys::set_umask(0);
    // Sources are opened with the caller's own host ids (a root caller's private temp dirs stay
    // reachable), before the staging tmpfs covers the host's /tmp, and before anything the
    // sandbox could influence exists.
    let (sources, mut held) = open_sources(spec, plan, layers.as_ref(), note_held)?;
    let kept = open_kept_uppers(spec.overlay.as_ref().and_then(|o| o.upper.as_deref()), kept_uppers.as_ref())?;
    if spec.namespaces.user {
        // A root caller's child is still host uid 0, unmapped here; become the mapped user so
        // every file the setup creates belongs to the sandbox, keeping the namespace's caps.
        sys::set_ids(pipes_ids.uid, pipes_ids.gid).map_err(|e| SetupError { step: Step::EnterMappedIds, ..e })?;
    }
    if spec.namespaces.cgroup {
        // After the helper placed us in our cgroup, so that it becomes this namespace's root.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(|e| SetupError::sys(Step::UnshareCgroup, e as i32, None))?;
    }
    // Nothing we mount may propagate back to the host.
    sys::make_root_private()?;

    sys::mount_tmpfs(STAGING, 0o755, None, MsFlags::MS_NOSUID | MsFlags::MS_NODEV).map_err(|e| SetupError { step: Step::MountStagingRoot, ..e })?;
    // The staging tmpfs itself, whatever is later stacked on its path (an overlay root).
    // Followed: where the host's /tmp is a symlink, the tmpfs went to its target.
    let staging = sys::open_source(STAGING, true).map_err(|e| SetupError { step: Step::MountStagingRoot, ..e })?;

    // The overlays' scratch tmpfs beside the new root: throw-away upper layers (bounded by
    // overlay.sizeBytes) and the attach points of idmapped lowers. Reached only through its
    // descriptor, since an overlay root may cover its path; detached before the sandbox starts.
    let any_overlay = plan.iter().any(|op| matches!(op, MountOp::Overlay { .. }));
    let mut area = if any_overlay {
        let path = staged(OVERLAY_AREA);
        sys::create_dirs(STAGING, &path)?;
        let size = spec.overlay.as_ref().and_then(|o| o.size_bytes);
        sys::mount_tmpfs(&path, 0o700, size, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
        Some(UpperArea { dir: sys::open_source(&path, false)?, kept: kept.into_iter() })
    } else {
        None
    };
    let mut sources = sources.into_iter();
    let mut masks = MaskSources { area: area.as_ref().map(|a| sys::open_at(&a.dir, ".")).transpose()?, ..MaskSources::default() };
    // A host bind is recursive (the mounts below its source come with it), and a source that
    // holds the staging point (the host's /tmp, or /) would bring along the staging tmpfs with
    // the root half built on it: a second, unmasked copy of the sandbox's root instead of the
    // host's tree, writable with a read-write bind. Unbindable, the staging tmpfs and everything
    // on it are left out of such a copy, which then shows the host's tree as a bind made at a
    // root built ahead's release does (a tree the helper took on the host). Private again for the
    // steps that bind from the staging root itself (masks, read-only remounts), which an
    // unbindable source would refuse, and for pivot_root.
    let mut unbindable = false;
    for op in plan {
        let host_bind = matches!(op, MountOp::Bind { .. } | MountOp::HostFileIfRoom { .. });
        if host_bind != unbindable {
            let propagation = if host_bind { MsFlags::MS_UNBINDABLE } else { MsFlags::MS_PRIVATE };
            sys::set_propagation(&staging, STAGING, propagation, Step::MountStagingRoot)?;
            unbindable = host_bind;
        }
        if let (MountOp::Mask { target, .. }, true) = (op, note_held) {
            // A host secret, seen through its bound directory: the object this mask covers.
            if let Some(id) = sys::FileIdentity::of_path(&staged(target), false) {
                held.push(HostObject { path: target.clone(), follow: false, id });
            }
        }
        apply(op, &mut sources, area.as_mut(), &mut masks).map_err(|e| in_kept_layer(inside_path(e, op), spec))?;
    }
    if unbindable {
        sys::set_propagation(&staging, STAGING, MsFlags::MS_PRIVATE, Step::MountStagingRoot)?;
    }
    drop(staging);
    drop(area);
    let root_is_overlay = plan.iter().any(|op| matches!(op, MountOp::Overlay { target, .. } if target == "/"));
    if any_overlay && !root_is_overlay {
        sys::detach(&staged(OVERLAY_AREA))?;
    }
    // The binds keep what they cover; the names go (the area's go with it).
    if masks.file.take().is_some() && masks.area.is_none() {
        sys::remove_file(&staged(MASK_FILE))?;
    }
    if masks.dir.take().is_some() && masks.area.is_none() {
        sys::remove_dir(&staged(MASK_DIR))?;
    }

    // pivot_root, not chroot: a chroot is escaped by anyone who can chroot again.
    sys::pivot_root(STAGING)?;
    sys::detach_old_root()?;
    // Read-only last, after every mountpoint was created in it; an overlay root stays writable,
    // which is what it is for.
    if spec.overlay.is_none() {
        sys::remount_root_readonly()?;
    }
    Ok(held)
}

/// The caller's mounts that a root built ahead gets at its release ([`crate::plan::made_at_release`]),
/// in their order, into the root this process has pivoted into: each bind attaches the tree the
/// helper opened on the host (`trees`, in order), each tmpfs is mounted here. Then read-only
/// again, as the root was built.
fn mount_at_release(ops: &[MountOp], trees: Vec<OwnedFd>) -> sys::Result<()> {
    // Its mountpoints are made in it, as a root built in one go makes them before it is sealed.
    sys::remount_root_writable()?;
    let root = sys::open_source("/", false)?;
    let mut trees = trees.into_iter();
    for op in ops {
        match op {
            MountOp::Bind { source, target, readonly, is_dir } => {
                let tree = trees.next().ok_or_else(|| SetupError::new(Step::BindMount, "a bind made at the release came without its tree"))?;
                if *is_dir {
                    sys::create_dirs("/", target)?
                } else {
                    sys::create_file("/", target, 0o644)?
                }
                // As mount(2) refuses it for a root built in one go (move_mount says only EINVAL):
                // a file onto a directory there.
                if !*is_dir && kind_of(target, true) == EntryKind::Dir {
                    return Err(SetupError::sys(Step::BindMount, libc::ENOTDIR, Some(source)));
                }
                // Named as a bind made in place names its failure: by the host source.
                sys::attach_tree(&tree, &root, target.trim_start_matches('/'), Step::BindMount).map_err(|e| e.with_path(source.clone()))?;
                sys::restrict_mount(target, *readonly)?;
            }
            MountOp::Tmpfs { target, mode, size_bytes, flags } => {
                sys::create_dirs("/", target)?;
                sys::mount_tmpfs(target, *mode, *size_bytes, ms_flags(*flags))?;
            }
            other => return Err(SetupError::new(Step::MountStagingRoot, format!("{} cannot be mounted at the release", other.target()))),
        }
    }
    sys::remount_root_readonly()
}

/// RLIMIT_CORE without core dumps: 1 byte, not 0. For a core_pattern that pipes to a program
/// (systemd-coredump, apport) the kernel enforces no core limit but this one value, which it
/// keeps to stop a crashing dump program's own dump: it then starts no program on the host. A
/// core file needs a page at least, so none is written either. The default seccomp profile keeps
/// it there (crates/core/src/seccomp.rs).
const NO_CORE_DUMP: u64 = 1;

/// Inherited by the command and everything it starts.
fn set_rlimits(spec: &Spec) -> sys::Result<()> {
    use nix::sys::resource::Resource;
    let limits = &spec.limits;
    // No core dumps unless asked: a file lands in the sandbox's cwd and can hold the process's
    // secrets, and a core_pattern that pipes starts a program on the host, as root, per crash.
    let (_, hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_CORE).map_err(|e| SetupError::sys(Step::SetRlimits, e as i32, None))?;
    // As far as the hard limit the sandbox was given allows (it cannot raise it).
    sys::set_rlimit(Resource::RLIMIT_CORE, if limits.core_dumps { hard } else { NO_CORE_DUMP.min(hard) })?;
    if let Some(n) = limits.file_size_bytes {
        sys::set_rlimit(Resource::RLIMIT_FSIZE, n)?;
    }
    if let Some(n) = limits.stack_bytes {
        sys::set_rlimit(Resource::RLIMIT_STACK, n)?;
    }
    set_default_nproc(spec)
}

/// The default process bound ([`crate::spec::Limits::default_nproc`]) on this process: the
/// command's, and a long-lived sandbox's init's, which forks each exec (a fork is checked against
/// the forking process's limit: else every exec into a full sandbox would get in one over).
pub(crate) fn set_default_nproc(spec: &Spec) -> sys::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Some(n) = spec.limits.default_nproc(spec.namespaces.user, crate::probe::nproc_counted_per_user_namespace()) {
        // Never above what the sandbox was given (a caller under a lower `ulimit -u`): inside
        // its user namespace it cannot raise a hard limit, and a lower soft one is the caller's wish.
        let (soft, hard) = getrlimit(Resource::RLIMIT_NPROC).map_err(|e| SetupError::sys(Step::SetRlimits, e as i32, None))?;
        setrlimit(Resource::RLIMIT_NPROC, n.min(soft), n.min(hard)).map_err(|e| SetupError::sys(Step::SetRlimits, e as i32, None))?;
    }
    Ok(())
}

/// The command's RLIMIT_NOFILE ([`set_rlimits`] has the others).
fn set_open_files_limit(limits: &crate::spec::Limits) -> sys::Result<()> {
    match limits.open_files {
        Some(n) => sys::set_rlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n),
        None => Ok(()),
    }
}

/// Errors name the path as the sandbox sees it, not the staging path (bind sources stay host paths).
fn inside_path(mut e: SetupError, op: &MountOp) -> SetupError {
    if e.step != Step::BindMount && e.path.as_deref().is_some_and(|p| p.starts_with(STAGING)) {
        e.path = Some(op.target().to_owned());
    }
    e
}

/// A mount point of the wrong kind under a root whose upper layer is kept: most likely what an
/// earlier sandbox left there (a file where a directory was, a symlink), which no option of this
/// start can change, so the hint says where to look.
fn in_kept_layer(mut e: SetupError, spec: &Spec) -> SetupError {
    let Some(upper) = spec.overlay.as_ref().and_then(|o| o.upper.as_deref()) else { return e };
    let wrong_kind = matches!((e.step, e.errno.as_deref()), (Step::CreateMountpoint, Some("ENOTDIR")) | (Step::BindMount, Some("ENOTDIR" | "EISDIR")));
    if let (true, Some(path)) = (wrong_kind, e.path.as_deref()) {
        let kept = format!(
            "overlay.upper ({upper}) keeps what earlier sandboxes wrote to the root: one of them may have left a file or a symlink at {path} or above it; remove it from {upper}'s layers, or start from an empty directory"
        );
        e.hint = Some(match e.hint.take() {
            Some(h) => format!("{kept}; else: {h}"),
            None => kept,
        });
    }
    e
}

/// Every bind's and overlay layer's source, in plan order: the helper's idmapped trees where it
/// sent them (a root caller's overlay), else the host path opened here; and, with `note_held`,
/// the host objects the binds hold on to.
fn open_sources(spec: &Spec, plan: &[MountOp], layers: Option<&OwnedFd>, note_held: bool) -> sys::Result<(Vec<Source>, Vec<HostObject>)> {
    let mut trees = match layers {
        Some(sock) => sys::recv_fds(sock)?.into_iter(),
        None => Vec::new().into_iter(),
    };
    let mut sources = Vec::new();
    let mut held = Vec::new();
    for op in plan {
        match op {
            MountOp::Bind { source, .. } => {
                let follow = spec.mounts.iter().any(|m| matches!(m, crate::spec::Mount::Bind { source: s, .. } if s == source));
                // The caller's own bind source is followed; the rootfs's entries, the host's system
                // directories and device nodes never pass a symlink.
                let fd = if follow { sys::open_source(source, true)? } else { sys::open_rooted(source, libc::O_PATH, Step::BindMount)? };
                if let Some(id) = note_held.then(|| sys::FileIdentity::of_fd(&fd)).flatten() {
                    held.push(HostObject { path: source.clone(), follow, id });
                }
                sources.push(Source::Path(fd));
            }
            // Never in a root built ahead (warm.rs): nothing of it is held.
            MountOp::HostFileIfRoom { source, .. } => sources.push(Source::Path(sys::open_source(source, true)?)),
            MountOp::Overlay { lowers, layer, .. } => {
                for lower in lowers {
                    sources.push(match trees.next() {
                        Some(tree) => Source::Tree(tree),
                        None => Source::Path(open_lower(lower, layer)?),
                    })
                }
            }
            _ => {}
        }
    }
    Ok((sources, held))
}

/// An overlay's lower layer: a caller's overlay mount's source is followed as a bind's is; the
/// root's layers (a rootfs's, by their real paths) and the host's system directories never pass a
/// symlink ([`sys::open_rooted`]).
pub(crate) fn open_lower(lower: &str, layer: &str) -> sys::Result<OwnedFd> {
    if layer.starts_with("mount") {
        sys::open_source(lower, true).map_err(|e| SetupError { step: Step::MountOverlay, ..e })
    } else {
        sys::open_rooted(lower, libc::O_PATH | libc::O_DIRECTORY, Step::MountOverlay)
    }
}

/// A kept overlay upper directory (overlay.upper) as the helper checked and locked it: which
/// directory that was (device, inode), and each overlay's (upper, work) paths in it, in plan order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptUppers {
    pub dir: (u64, u64),
    pub pairs: Vec<(String, String)>,
}

/// The kept upper directories the helper prepared in `base` (overlay.upper), each opened beneath it
/// with no symlink on the way: the sandbox's own id owns them, and may have swapped a part for a
/// symlink since the helper looked. Opened again here by its path (overlayfs takes only mounts
/// of this process's own mount namespace), `base` must be the directory the helper checked: one
/// that another user renamed into its place meanwhile (who may write its parent) would give the
/// sandbox a root of theirs, and them all the sandbox writes.
fn open_kept_uppers(base: Option<&str>, kept: Option<&KeptUppers>) -> sys::Result<Vec<(OwnedFd, OwnedFd)>> {
    let (Some(base), Some(kept)) = (base, kept.filter(|k| !k.pairs.is_empty())) else { return Ok(Vec::new()) };
    let base = base.trim_end_matches('/');
    let dir = sys::open_without_symlinks(base, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| SetupError::sys(Step::MountOverlay, e as i32, Some(base)))?;
    let st = nix::sys::stat::fstat(&dir).map_err(|e| SetupError::sys(Step::MountOverlay, e as i32, Some(base)))?;
    if (st.st_dev, st.st_ino) != kept.dir {
        return Err(SetupError::sys(Step::MountOverlay, libc::ESTALE, Some(base))
            .with_hint("overlay.upper was replaced by another directory between the check and the mount (renamed by someone who may write its parent?): keep it in a directory only its owner may write"));
    }
    let open = |path: &str| {
        let rel = path.strip_prefix(base).and_then(|r| r.strip_prefix('/')).unwrap_or(path);
        sys::open_beneath(&dir, rel, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| SetupError::sys(Step::MountOverlay, e as i32, Some(path)))
    };
    kept.pairs.iter().map(|(upper, work)| Ok((open(upper)?, open(work)?))).collect()
}

/// What a bind or an overlay mounts from: a path opened before the new root existed, or (a root
/// caller's overlay) a detached, idmapped mount tree the helper made.
enum Source {
    Path(OwnedFd),
    Tree(OwnedFd),
}

/// Where the overlays' upper layers come from: kept pairs the helper prepared (one per overlay,
/// in plan order), else new directories in the scratch tmpfs `dir`.
struct UpperArea {
    dir: OwnedFd,
    kept: std::vec::IntoIter<(OwnedFd, OwnedFd)>,
}

fn apply(op: &MountOp, sources: &mut impl Iterator<Item = Source>, area: Option<&mut UpperArea>, masks: &mut MaskSources) -> sys::Result<()> {
    match op {
        MountOp::Overlay { lowers, target, layer } => {
            let area = area.expect("an overlay has its area");
            let (upper, work) = match area.kept.next() {
                Some(pair) => pair,
                None => {
                    let dir = sys::make_dir_at(&area.dir, layer)?;
                    (sys::make_dir_at(&dir, "upper")?, sys::make_dir_at(&dir, "work")?)
                }
            };
            let mut fds = Vec::with_capacity(lowers.len().max(1));
            if lowers.is_empty() {
                // A layer with nothing below it (the host root's own): overlayfs wants a lower.
                fds.push(sys::make_dir_at(&area.dir, &format!("{layer}.lower"))?);
            }
            for (i, _) in lowers.iter().enumerate() {
                fds.push(match sources.next().expect("one source per lower layer") {
                    Source::Path(fd) => fd,
                    Source::Tree(tree) => {
                        let name = format!("{layer}.lower{i}");
                        drop(sys::make_dir_at(&area.dir, &name)?);
                        sys::attach_tree(&tree, &area.dir, &name, Step::MountOverlay)?;
                        sys::open_at(&area.dir, &name)?
                    }
                });
            }
            let t = if target == "/" { STAGING.to_owned() } else { staged(target) };
            if target != "/" {
                sys::create_dirs(STAGING, &t)?;
            }
            sys::mount_overlay(&fds, lowers.first().map_or(target, String::as_str), &upper, &work, &t)?;
        }
        MountOp::Bind { source, target, readonly, is_dir } => {
            let (Source::Path(fd) | Source::Tree(fd)) = sources.next().expect("one source per bind");
            let t = staged(target);
            if *is_dir {
                sys::create_dirs(STAGING, &t)?
            } else {
                sys::create_file(STAGING, &t, 0o644)?
            }
            sys::bind_mount(&fd, source, &t)?;
            // The device binds of /dev are the only ones that must keep working as devices.
            if !target.starts_with("/dev/") {
                sys::restrict_mount(&t, *readonly)?;
            }
        }
        MountOp::Tmpfs { target, mode, size_bytes, flags } => {
            let t = staged(target);
            sys::create_dirs(STAGING, &t)?;
            sys::mount_tmpfs(&t, *mode, *size_bytes, ms_flags(*flags))?;
        }
        MountOp::HostFileIfRoom { source, target } => {
            let (Source::Path(fd) | Source::Tree(fd)) = sources.next().expect("one source per host file");
            let t = staged(target);
            // The parent first, not followed: the kinds below are then looked at in the root.
            let parent = t.rsplit_once('/').map_or(STAGING, |(dir, _)| dir);
            let room = kind_of(parent, false) == EntryKind::Dir
                && match kind_of(&t, false) {
                    EntryKind::File => true,
                    // No room is a read-only root, and as well an /etc the sandbox's ids may not
                    // write (a caller's overlay of a root-owned tree): the sandbox starts without.
                    EntryKind::Missing => sys::create_file(STAGING, &t, 0o644).is_ok(),
                    _ => false,
                };
            if room {
                sys::bind_mount(&fd, source, &t)?;
                sys::restrict_mount(&t, true)?;
            }
        }
        MountOp::Symlink { target, points_to } => sys::create_symlink(points_to, STAGING, &staged(target))?,
        MountOp::Proc { target } => {
            let t = staged(target);
            sys::create_dirs(STAGING, &t)?;
            sys::mount_proc(&t)?;
        }
        MountOp::Devpts { target } => {
            let t = staged(target);
            sys::create_dirs(STAGING, &t)?;
            sys::mount_devpts(&t)?;
        }
        MountOp::MaskIfPresent { target } => {
            let t = staged(target);
            match kind_of(&t, false) {
                // A symlink is never followed (a caller's tree may name another place with it);
                // what it leads to is masked, or not, where it is.
                EntryKind::Missing | EntryKind::Symlink(_) => {}
                EntryKind::Dir => mask(&t, target, true, masks)?,
                _ => mask(&t, target, false, masks)?,
            }
        }
        MountOp::ReadonlyIfPresent { target } => {
            let t = staged(target);
            if kind_of(&t, false) != EntryKind::Missing {
                let fd = sys::open_source(&t, false)?;
                sys::bind_mount(&fd, target, &t).map_err(|e| SetupError { step: Step::RemountReadonly, ..e })?;
                sys::remount_readonly(&t)?;
            }
        }
        MountOp::Mask { target, is_dir } => mask(&staged(target), target, *is_dir, masks)?,
    }
    Ok(())
}

/// Cover `staged` with an inaccessible placeholder: an empty mode-000 file or directory of the
/// staging root (one of each for all masks: no filesystem of its own per mask), bound read-only,
/// nosuid, nodev, and for a directory noexec.
fn mask(t: &str, target: &str, is_dir: bool, masks: &mut MaskSources) -> sys::Result<()> {
    let slot = if is_dir { &mut masks.dir } else { &mut masks.file };
    let source = match (slot, &masks.area) {
        (Some(fd), _) => fd,
        (slot, Some(area)) => slot.insert(sys::make_placeholder_at(area, if is_dir { ".mask-dir" } else { ".mask-file" }, is_dir)?),
        (slot, None) => {
            let name = staged(if is_dir { MASK_DIR } else { MASK_FILE });
            if is_dir {
                sys::create_sealed_dir(&name)?;
            } else {
                sys::create_file(STAGING, &name, 0)?;
            }
            slot.insert(sys::open_source(&name, false)?)
        }
    };
    sys::bind_mount(source, target, t).map_err(|e| e.at(Step::MaskPath))?;
    sys::restrict_mount_with(t, true, is_dir).map_err(|e| e.at(Step::MaskPath))
}

fn ms_flags(f: crate::plan::MountFlags) -> MsFlags {
    let mut m = MsFlags::empty();
    m.set(MsFlags::MS_NOSUID, f.nosuid);
    m.set(MsFlags::MS_NODEV, f.nodev);
    m.set(MsFlags::MS_NOEXEC, f.noexec);
    m
}

/// How the helper asks the init to stop the command: SIGSTOP itself would stop the init (no
/// process can catch it), so it comes as this real-time signal queued with [`STOP_MARK`], and the
/// init stops its own child (never a pid it has reaped). A process inside could queue the same
/// (the init blocks the signal, so the kernel delivers it): it gains nothing, as it can stop
/// the command itself.
pub(crate) const STOP_CARRIER: i32 = 64;
pub(crate) const STOP_MARK: i32 = 0x5354_4f50;
/// Queued on [`STOP_CARRIER`] by the helper to end the sandbox: the init kills every other
/// process of its pid namespace and reaps them, so its rusage counts them (a killed init's
/// children are reaped by the kernel, uncounted), then reports and leaves.
pub(crate) const END_MARK: i32 = 0x454e_4421;
/// Queued on [`STOP_CARRIER`] by the helper for a graceful stop of the command's whole process
/// group (`stop.group`): the mark in the value's low 32 bits, the signal in its high 32.
const GROUP_MARK: u32 = 0x4752_5550;

/// The value queued with [`GROUP_MARK`] to send `signal` to the command's process group.
pub(crate) fn group_stop_value(signal: i32) -> usize {
    ((signal as u32 as u64) << 32 | GROUP_MARK as u64) as usize
}

/// The signal a [`group_stop_value`] carries, if `value` is one.
fn group_stop_signal(value: u64) -> Option<i32> {
    let signal = (value >> 32) as i32;
    (value as u32 == GROUP_MARK && crate::protocol::init_forwards(signal)).then_some(signal)
}

/// Signals the init reads: those it forwards to the command ([`init_forwards`], the real-time
/// ones among them) and SIGCHLD, for its reaping; everything else keeps its default.
pub(crate) fn forwarded_signals() -> SigSet {
    let mut raw = *SigSet::empty().as_ref();
    for n in (1..=64).filter(|n| crate::protocol::init_forwards(*n) || *n == libc::SIGCHLD) {
        // SAFETY: sigaddset on a local, initialized set; 1 to 64 are valid signal numbers.
        unsafe { libc::sigaddset(&mut raw, n) };
    }
    // SAFETY: `raw` came from a valid SigSet and only had valid signals added.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

/// The terminal, opened inside (so it belongs to the sandbox's devpts), its master handed to the
/// helper; the slave is for the command.
fn open_terminal(size: crate::spec::Tty, handoff: &OwnedFd) -> sys::Result<OwnedFd> {
    let (master, slave) = sys::open_pty(size.rows, size.cols)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
    match sys::send_fds(handoff, &[fd]) {
        Ok(()) => {}
        // Another sandbox of this host user filled its count of fds in flight: lend it, and
        // keep it open until the helper says it took it (an EOF: it could not).
        Err(e) if sys::too_many_in_flight(&e) => {
            sys::send_message(handoff, &sys::lent_note(fd), &[], Step::OpenPty)?;
            if !matches!(sys::recv_message(handoff, 1, Step::OpenPty)?, Some((b, _)) if b == b"t") {
                return Err(SetupError::sys(Step::OpenPty, libc::ETOOMANYREFS, None));
            }
        }
        Err(e) => return Err(SetupError { step: Step::OpenPty, ..e }),
    }
    Ok(slave)
}

fn init_loop(spec: &Spec, seccomp: Option<&crate::seccomp::Program>, report: OwnedFd, tty: Option<OwnedFd>) -> ! {
    // Before the fork, so the command never sees an init it could trace or take fds from (its own
    // execve makes the command dumpable again, for itself only).
    let _ = nix::sys::prctl::set_dumpable(false);
    let signals = forwarded_signals();
    // Blocked before fork so no signal meant for the command is lost in between.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None);
    let slave = match (spec.tty, &tty) {
        (Some(size), Some(handoff)) => match open_terminal(size, handoff) {
            Ok(slave) => Some(slave),
            Err(e) => {
                send(&report, &Report::SetupFailed(e));
                sys::exit_now(125);
            }
        },
        _ => None,
    };
    drop(tty);
    let (status_r, status_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            send(&report, &Report::SetupFailed(SetupError::sys(Step::ForkCommand, e as i32, None)));
            sys::exit_now(125);
        }
    };
    // The command shares the init's memory until its execve (the init waits meanwhile): it takes
    // no copy of the init's page tables and no copy-on-write fault, and the init's own steps
    // below wait until the command is on its way. The init is single-threaded.
    // Written by the command as it goes to its execve: the one datum of the init's it changes
    // (see spawn_sharing_memory), made for it, read once the init runs again after that execve.
    let exec_at = std::cell::Cell::new(0u64);
    let mut run_command = || -> i32 {
        let e = exec_command(spec, spec.command(), seccomp, slave.as_ref(), &mut |at| exec_at.set(at));
        // One write that fits the empty pipe: the init reads it only once this child is gone.
        let _ = nix::unistd::write(&status_w, &e.to_bounded_json());
        // SAFETY: leaving the child without running anything of the init's (atexit handlers).
        unsafe { libc::_exit(127) }
    };
    let child = match sys::spawn_sharing_memory(&mut run_command) {
        Ok(child) => child,
        Err(e) => {
            send(&report, &Report::SetupFailed(SetupError::sys(Step::ForkCommand, e as i32, None)));
            sys::exit_now(125);
        }
    };
    drop(status_w);
    drop(slave);
    // The init holds no stdio: the command's output ends when the command (and its children) do.
    sys::redirect_stdio_to_null();
    // The init needs no privilege from here on (a hostile command must not be able to take it
    // over) but to signal a command of another uid (`user: { uid: 1000 }`): else the signals it
    // forwards (kill(), SIGTERM to the sandbox) and its kill of everything at the end would fail
    // with EPERM. In its own pid namespace, CAP_KILL names no process outside the sandbox.
    let kill: Vec<u32> = crate::caps::number("KILL").into_iter().filter(|_| runs_as_other_uid(spec)).collect();
    if let Err(e) = sys::keep_only_own_capabilities(&kill) {
        // Fails closed: the command does not run beside an init that kept its privileges.
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        send(&report, &Report::SetupFailed(e));
        sys::exit_now(125);
    }
    let _ = sys::set_no_new_privs();

    let mut buf = Vec::new();
    let _ = std::fs::File::from(status_r).read_to_end(&mut buf);
    if !buf.is_empty() {
        let e = serde_json::from_slice(&buf).unwrap_or_else(|_| SetupError::new(Step::Execve, "the command failed before execve"));
        let _ = waitpid(child, None);
        send(&report, &Report::SetupFailed(e));
        sys::exit_now(125);
    }
    send(&report, &Report::Started { at: exec_at.get() });

    let sfd = match nix::sys::signalfd::SignalFd::new(&signals) {
        Ok(s) => s,
        Err(_) => {
            // Without a signalfd we can still be a correct reaper, only not a forwarder.
            reap_blocking(child, &report, false)
        }
    };
    loop {
        if let Some((done, alone)) = reap_all(child) {
            finish(&report, done, alone);
        }
        match sfd.read_signal() {
            Ok(Some(info)) => {
                let signo = info.ssi_signo as i32;
                // The whole sigval (ssi_ptr), whatever the byte order.
                // Queued by the helper: from outside this pid namespace, its sender's pid shows as
                // 0 here (a process inside that queued the same is named, and only forwarded).
                let queued = signo == STOP_CARRIER && info.ssi_code == libc::SI_QUEUE && info.ssi_pid == 0;
                let marked = |mark: i32| queued && info.ssi_ptr == mark as u64;
                let stop = marked(STOP_MARK);
                // Only as pid 1 of its namespace: kill(-1) there reaches the sandbox alone.
                if marked(END_MARK) && std::process::id() == 1 {
                    // SAFETY: kill(2); every process of this pid namespace but this one.
                    unsafe { libc::kill(-1, libc::SIGKILL) };
                    reap_blocking(child, &report, true);
                } else if let Some(signal) = group_stop_signal(info.ssi_ptr).filter(|_| queued) {
                    // SAFETY: kill(2) on our own child's process group (it leads its own session).
                    unsafe { libc::kill(-child.as_raw(), signal) };
                } else if signo != libc::SIGCHLD {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(child.as_raw(), if stop { libc::SIGSTOP } else { signo }) };
                }
            }
            Ok(None) | Err(Errno::EINTR) => {}
            Err(_) => reap_blocking(child, &report, false),
        }
    }
}

/// Whether the command runs as another uid than this init (which no signal of an unprivileged
/// init then reaches).
pub(crate) fn runs_as_other_uid(spec: &Spec) -> bool {
    nix::unistd::geteuid().as_raw() != spec.user.uid
}

/// Reap every exited process. Once the command itself is among them: its status, and whether
/// that left this init alone, pid 1 of its namespace with no child left (every orphan of the
/// sandbox is reparented to it, so none runs).
fn reap_all(command: Pid) -> Option<(Ended, bool)> {
    let mut result = None;
    loop {
        match sys::wait_child(None, false) {
            Err(Errno::ECHILD) => return result.map(|st| (st, std::process::id() == 1)),
            Ok(Ended::StillAlive) | Err(_) => return result.map(|st| (st, false)),
            Ok(st @ (Ended::Exited(pid, _) | Ended::Signaled(pid, _))) if pid == command => result = Some(st),
            Ok(_) => {}
        }
    }
}

/// Wait for children until the command has ended, then report it. With `everything` (every other
/// process was killed), until none is left: each reaped here is counted in this init's rusage,
/// and the report says the init is alone.
fn reap_blocking(command: Pid, report: &OwnedFd, everything: bool) -> ! {
    let mut status = None;
    loop {
        match sys::wait_child(None, true) {
            Ok(st @ (Ended::Exited(pid, _) | Ended::Signaled(pid, _))) if pid == command => {
                if !everything {
                    finish(report, st, false)
                }
                status = Some(st);
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) if everything => match status {
                Some(st) => finish(report, st, true),
                None => sys::exit_now(1),
            },
            Err(_) => sys::exit_now(1),
        }
    }
}

/// The command is done; report and leave. Our exit takes down everything left in the namespace.
/// Alone, the report says so (with what was used): the helper may then tell the caller at once,
/// while this process's own exit (its memory, its namespaces) runs.
fn finish(report: &OwnedFd, st: Ended, alone: bool) -> ! {
    let reaped = alone.then(crate::protocol::Reaped::of_init);
    match st {
        Ended::Exited(_, code) => send(report, &Report::Exited { code, reaped }),
        Ended::Signaled(_, signal) => send(report, &Report::Signaled { signal, reaped }),
        _ => {}
    }
    // SAFETY: leaving without the exit handlers: nothing of this process is left to flush.
    unsafe { libc::_exit(0) }
}

/// The command's last steps, in the order DESIGN section 3 gives: the same for a sandbox's own
/// command and for every exec into a long-lived one. Returns only on failure.
/// `at_exec` is told CLOCK_MONOTONIC right before the last step: when the command's time starts.
pub(crate) fn exec_command(
    spec: &Spec,
    cmd: crate::spec::Command,
    seccomp: Option<&crate::seccomp::Program>,
    terminal: Option<&OwnedFd>,
    at_exec: &mut dyn FnMut(u64),
) -> SetupError {
    let argv: Vec<CString> = std::iter::once(cmd.file).chain(cmd.args.iter().map(String::as_str)).map(|a| CString::new(a).unwrap_or_default()).collect();
    let envp: Vec<CString> = cmd.env.iter().map(|kv| CString::new(kv.as_str()).unwrap_or_default()).collect();
    let keep: Vec<u32> = spec.capabilities.iter().filter_map(|c| crate::caps::number(c)).collect();
    let mut steps = || -> sys::Result<()> {
        sys::reset_signals();
        sys::set_umask(spec.umask.unwrap_or(0o022));
        // The command's, not the init's: a long-lived init must stay able to take execs' fds.
        set_rlimits(spec)?;
        sys::clear_groups()?;
        // While still root inside: dropping from the bounding set needs CAP_SETPCAP.
        sys::drop_bounding_set(&keep)?;
        if !keep.is_empty() {
            // Kept capabilities must survive a change to a non-root uid.
            sys::keep_capabilities_across_setuid()?;
        }
        sys::set_ids(spec.user.uid, spec.user.gid)?;
        // The id change may have made it dumpable (fs.suid_dumpable=1); until execve it is
        // still the init's copy.
        let _ = nix::sys::prctl::set_dumpable(false);
        // After the id change, which would otherwise clear (or, for root, keep) caps by its own rules.
        sys::set_capabilities(&keep)?;
        // A setuid or file-capability binary inside gains nothing from here on.
        sys::set_no_new_privs()?;
        // As the final user, so a cwd it may not enter fails here and not in the command.
        sys::chdir(cmd.cwd)?;
        if let Some(rules) = &spec.landlock {
            crate::landlock::apply(rules)?;
        }
        sys::mark_fds_cloexec(3)?;
        // A stdio descriptor the caller shares (inherit) may be non-blocking on its side (Node
        // makes a pipe so once it writes to it): the command's writes would fail with EAGAIN.
        // Blocking, as child_process leaves them.
        sys::make_stdio_blocking();
        // Its own session: no TIOCSTI into the caller's terminal, no signals from its job control.
        sys::new_session()?;
        if let Some(slave) = terminal {
            // The new session's controlling terminal: Ctrl-C reaches its foreground job.
            sys::take_terminal(slave)?;
        }
        // After the steps that open descriptors (Landlock's ruleset and paths, the /proc walk
        // where close_range is missing): a small limit is the command's, not theirs.
        set_open_files_limit(&spec.limits)?;
        // Before the filter, which may refuse clock_gettime (a clock the vDSO cannot read) or
        // the write that tells it.
        at_exec(sys::monotonic_ns());
        // Last, so the filter (the caller's own profile included) need not allow any setup step.
        if let Some(program) = seccomp {
            crate::seccomp::load(program)?;
        }
        Ok(())
    };
    if let Err(e) = steps() {
        return e;
    }
    sys::execve(cmd.file, &argv, &envp)
}

/// Build an [`InitPipes`] end from a raw fd inherited across clone.
///
/// # Safety
/// `fd` must be an open descriptor owned by the caller.
pub unsafe fn owned(fd: i32) -> OwnedFd {
    OwnedFd::from_raw_fd(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Mount;

    fn spec_binding(source: &str) -> Spec {
        let mut spec = Spec::new("/bin/true", Vec::new());
        spec.mounts = vec![Mount::Bind { source: source.into(), target: "/data".into(), readonly: true }];
        spec
    }

    #[test]
    fn a_group_stop_carries_its_signal_and_nothing_else_reads_as_one() {
        assert_eq!(group_stop_signal(group_stop_value(libc::SIGTERM) as u64), Some(libc::SIGTERM));
        assert_eq!(group_stop_signal(group_stop_value(40) as u64), Some(40));
        // What the init does not forward is no group stop either (a process inside may queue anything).
        assert_eq!(group_stop_signal(group_stop_value(libc::SIGKILL) as u64), None);
        assert_eq!(group_stop_signal(STOP_MARK as u64), None);
        assert_eq!(group_stop_signal(END_MARK as u64), None);
    }

    #[test]
    fn the_init_reads_what_it_forwards_and_the_ends_of_its_children() {
        let set = forwarded_signals();
        for n in 1..=64 {
            // SAFETY: sigismember on an initialized set; 1 to 64 are valid signal numbers.
            let member = unsafe { libc::sigismember(set.as_ref(), n) } == 1;
            assert_eq!(member, crate::protocol::init_forwards(n) || n == libc::SIGCHLD, "{n}");
        }
        assert!(crate::protocol::init_forwards(libc::SIGTERM) && crate::protocol::init_forwards(STOP_CARRIER));
        assert!(!crate::protocol::init_forwards(libc::SIGSTOP) && !crate::protocol::init_forwards(33));
    }

    #[test]
    fn the_setups_own_names_are_those_the_plan_leaves_out_of_the_root() {
        for name in [OVERLAY_AREA, MASK_FILE, MASK_DIR] {
            assert!(crate::plan::SETUP_NAMES.contains(&name.trim_start_matches('/')), "{name}");
        }
    }

    #[test]
    fn facts_gathered_ahead_hold_only_while_every_path_names_what_it_did() {
        let dir = std::env::temp_dir().join(format!("isolate-facts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let source = dir.join("src");
        std::fs::create_dir(&source).unwrap();
        let spec = spec_binding(source.to_str().unwrap());
        let ahead = FactsAhead::gather(&spec).unwrap().expect("a host-root spec");
        let facts = ahead.still_for(&spec).expect("nothing changed");
        assert_eq!(*facts, gather_facts(&spec).unwrap());
        let held = HostObject { path: source.to_str().unwrap().into(), follow: true, id: sys::FileIdentity::of_path(source.to_str().unwrap(), true).unwrap() };
        assert!(ahead.saw(&held), "the bind source was among the paths looked at");
        assert!(!ahead.saw(&HostObject { follow: false, ..held.clone() }), "not followed, it is another look");
        // Another spec's paths (other mounts), or another rootfs: its facts are read anew.
        assert!(ahead.still_for(&spec_binding("/usr")).is_none());
        let mut dir_root = spec.clone();
        dir_root.rootfs = Rootfs::Dir { path: dir.to_str().unwrap().into() };
        assert!(ahead.still_for(&dir_root).is_none());
        assert!(FactsAhead::gather(&dir_root).unwrap().is_none(), "a directory rootfs's entries are not facts an identity covers");
        // The source replaced by another directory: the facts no longer hold.
        std::fs::remove_dir(&source).unwrap();
        std::fs::create_dir(&source).unwrap();
        assert!(ahead.still_for(&spec).is_none());
        let replaced = HostObject { id: sys::FileIdentity::of_path(source.to_str().unwrap(), true).unwrap(), ..held };
        assert!(!ahead.saw(&replaced), "the new directory is not what the facts were read from");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
