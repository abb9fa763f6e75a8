//! Thin syscall wrappers: one action each, each failure turned into a [`SetupError`] naming the
//! step, the path and the errno. Policy lives in the callers; nothing here decides what to do.

use crate::error::{SetupError, Step};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

pub type Result<T> = std::result::Result<T, SetupError>;

/// struct mount_attr of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn fail(step: Step, path: &str) -> impl FnOnce(Errno) -> SetupError + '_ {
    move |e| SetupError::sys(step, e as i32, Some(path))
}

/// A close-on-exec copy of `fd` numbered `min` or above (the lowest free such number).
pub fn dup_above(fd: std::os::fd::BorrowedFd<'_>, min: RawFd) -> nix::Result<OwnedFd> {
    let new = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC just made this descriptor; nobody else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}

/// Open a pipe's modes to all: a command reopens its stdio by path (`/dev/stdout`, `cat
/// /dev/stdin`, `/proc/self/fd/1`), and a pipe made by Node or the helper belongs to an id the
/// sandbox does not map (root's: "Permission denied"), or to its root where the command runs as
/// another uid. A pipe has no path of its own: /proc/<pid>/fd/N is the only way to it, open to
/// a process that may read-trace a holder: one of its host uid (a root caller's sandbox ids are
/// no host user's) or with CAP_SYS_PTRACE over it. So only for a sandbox with a user namespace of
/// its own; see docs/reference.md#stdio.
pub fn let_holders_reopen(pipe: &OwnedFd) -> nix::Result<()> {
    nix::sys::stat::fchmod(pipe, nix::sys::stat::Mode::from_bits_truncate(0o666))
}

/// Whether descriptor `fd` is the null device (character device 1:3).
pub fn is_dev_null(fd: RawFd) -> bool {
    // SAFETY: borrowed for the fstat only.
    nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3))
}

pub fn make_root_private() -> Result<()> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).map_err(fail(Step::MakeRootPrivate, "/"))
}

/// An O_PATH handle on a bind source, taken before anything is mounted over the host's tree.
pub fn open_source(path: &str, follow: bool) -> Result<OwnedFd> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    open(path, flags, Mode::empty()).map_err(fail(Step::BindMount, path))
}

/// `rel` beneath the directory `base`, with no symlink and no `..` on the way (openat2's
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): what another may have swapped in is refused (ELOOP,
/// EXDEV), never followed.
pub fn open_beneath(base: &OwnedFd, rel: &str, flags: i32) -> nix::Result<OwnedFd> {
    let path = std::ffi::CString::new(rel).map_err(|_| Errno::EINVAL)?;
    match openat2(std::os::fd::AsFd::as_fd(base), &path, flags, libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS) {
        // Before Linux 5.6, or a container profile older than openat2: one component at a time.
        Err(Errno::ENOSYS | Errno::EPERM) => open_beneath_by_steps(base, rel, flags),
        r => r,
    }
}

/// openat2(2): `path` resolved from `dir` under `resolve` (RESOLVE_* flags), close-on-exec.
pub fn openat2(dir: std::os::fd::BorrowedFd<'_>, path: &std::ffi::CStr, flags: i32, resolve: u64) -> nix::Result<OwnedFd> {
    // SAFETY: open_how is plain data; zero is its default for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: a valid directory fd, a NUL-terminated path and the struct with its size.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), path.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a descriptor the kernel just gave us.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as RawFd) })
}

/// [`open_beneath`] by hand: each component opened with O_NOFOLLOW, `..` and empty names refused.
fn open_beneath_by_steps(base: &OwnedFd, rel: &str, flags: i32) -> nix::Result<OwnedFd> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(Errno::EXDEV);
    }
    let mut dir: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let at = dir.as_ref().unwrap_or(base);
        let last = i + 1 == parts.len();
        let f = if last { OFlag::from_bits_truncate(flags) } else { OFlag::O_PATH | OFlag::O_DIRECTORY };
        dir = Some(nix::fcntl::openat(at, *part, f | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?);
    }
    dir.ok_or(Errno::EXDEV)
}

/// An absolute `path` with no symlink anywhere on it (and no `..`, as [`open_beneath`] from `/`):
/// a directory a caller names for others to write into must be the one its path says, whoever
/// else can write one of its parents. One openat2 where the kernel has it (it is on the spawn
/// path: the root's sources, Landlock's paths), with no descriptor of `/` opened for it.
pub fn open_without_symlinks(path: &str, flags: i32) -> nix::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.len() == path.len() {
        return Err(Errno::EINVAL);
    }
    if rel.split('/').any(|p| p == "..") {
        return Err(Errno::EXDEV);
    }
    let c = std::ffi::CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: AT_FDCWD is no descriptor to close; an absolute path ignores it anyway.
    let cwd = unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::AT_FDCWD) };
    match openat2(cwd, &c, flags, libc::RESOLVE_NO_SYMLINKS) {
        // Before Linux 5.6, or a container profile older than openat2: one component at a time.
        Err(Errno::ENOSYS | Errno::EPERM) => {
            let root = open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
            open_beneath_by_steps(&root, rel, flags)
        }
        r => r,
    }
}

/// A path the sandbox's root is made from (the rootfs directory, its entries, its layers) or one
/// of the host's own system paths, opened with no symlink anywhere on it: the library passes a
/// rootfs by its real path, the caller's symlinks followed once when its options were read, so a
/// symlink there now was swapped in since, by whoever may write one of its directories (another
/// user, another sandbox with a read-write bind of it), and would aim the root at the host.
pub fn open_rooted(path: &str, flags: i32, step: Step) -> Result<OwnedFd> {
    open_without_symlinks(path, flags).map_err(|e| {
        let err = SetupError::sys(step, e as i32, Some(path));
        match e {
            Errno::ELOOP => err.with_hint(
                "a path of the sandbox's root holds a symlink that was not there when the options were read (the rootfs's real path is taken then): something that may write one of its directories swapped it in; a rootfs must be writable by no one who should not choose what the sandbox sees",
            ),
            _ => err,
        }
    })
}

/// A handle on `pid`'s namespace of `kind` (`mnt`, `user`, ...): while it is open, the namespace
/// outlives the last process in it (a mount namespace: every mount in it and their superblocks).
pub fn open_namespace(pid: i32, kind: &str, step: Step) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/{kind}");
    open(path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| SetupError::sys(step, e as i32, Some(&path)))
}

fn mount_data(mode: u32, size: Option<u64>) -> String {
    match size {
        Some(s) => format!("mode={mode:o},size={s}"),
        None => format!("mode={mode:o}"),
    }
}

pub fn mount_tmpfs(target: &str, mode: u32, size: Option<u64>, flags: MsFlags) -> Result<()> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(mount_data(mode, size).as_str())).map_err(fail(Step::MountTmpfs, target))
}

/// Bind the object behind `source` (an O_PATH fd) onto `target`, with everything mounted below it.
pub fn bind_mount(source: &OwnedFd, source_name: &str, target: &str) -> Result<()> {
    let via = format!("/proc/self/fd/{}", source.as_raw_fd());
    mount(Some(via.as_str()), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| SetupError::sys(Step::BindMount, e as i32, Some(source_name)).with_path(source_name))
}

/// Set the propagation type (`MS_PRIVATE`, `MS_UNBINDABLE`...) of the one mount whose root
/// `root` (an O_PATH fd) is: through the fd, not a path, so a mount stacked on it later is not
/// the one changed; the mounts on and below it keep theirs.
pub fn set_propagation(root: &OwnedFd, name: &str, propagation: MsFlags, step: Step) -> Result<()> {
    let via = format!("/proc/self/fd/{}", root.as_raw_fd());
    mount(None::<&str>, via.as_str(), None::<&str>, propagation, None::<&str>).map_err(fail(step, name))
}

/// Make a mount and all mounts below it read-only.
pub fn remount_readonly(target: &str) -> Result<()> {
    restrict_mount(target, true)
}

/// A bind from the host: no device nodes and no setuid bits through it (a bound directory or an
/// unpacked rootfs may hold either), and read-only unless asked otherwise; for the mount and all
/// mounts below it. `mount_setattr` (5.12+) only adds flags; the older remount must repeat the
/// flags the kernel locked when the mount crossed into this user namespace, or it fails with EPERM.
pub fn restrict_mount(target: &str, readonly: bool) -> Result<()> {
    restrict_mount_with(target, readonly, false)
}

/// [`restrict_mount`], and with `noexec` no execution through it either.
pub fn restrict_mount_with(target: &str, readonly: bool, noexec: bool) -> Result<()> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    let c = CString::new(target).map_err(|_| SetupError::new(Step::RemountReadonly, "NUL in path"))?;
    let set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | if readonly { MOUNT_ATTR_RDONLY } else { 0 } | if noexec { MOUNT_ATTR_NOEXEC } else { 0 };
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: a valid NUL-terminated path and a properly sized mount_attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = Errno::last();
    if err != Errno::ENOSYS {
        return Err(SetupError::sys(Step::RemountReadonly, err as i32, Some(target)));
    }
    let st = nix::sys::statvfs::statvfs(target).map_err(fail(Step::RemountReadonly, target))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    use nix::sys::statvfs::FsFlags;
    for (f, m) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(fail(Step::RemountReadonly, target))
}

/// Make the mount `fd` is on noexec, and nothing else about it (its submounts are each its own).
pub fn forbid_exec_on(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    let attr = MountAttr { attr_set: MOUNT_ATTR_NOEXEC, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: an open descriptor, an empty NUL-terminated path and a properly sized mount_attr.
    let rc = unsafe {
        libc::syscall(libc::SYS_mount_setattr, fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    };
    Errno::result(rc).map(drop)
}

/// The id of the mount `fd` is on (mountinfo's first field; statx, Linux 5.8+).
pub fn mount_id_of(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<u64> {
    // SAFETY: statx fills this plain-data struct; all zeros is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor, an empty NUL-terminated path and our own buffer.
    let rc = unsafe { libc::statx(fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut st) };
    Errno::result(rc)?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(st.stx_mnt_id)
}

/// OverlayFS with the object behind `lower` (an O_PATH fd) as its read-only layer. In a user
/// namespace its own metadata lives in `user.overlay.*` xattrs (`userxattr`); kernels without
/// that option get the plain form.
pub fn mount_overlay(lowers: &[OwnedFd], lower_name: &str, upper: &OwnedFd, work: &OwnedFd, target: &str) -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let fd = |f: &OwnedFd| format!("/proc/self/fd/{}", f.as_raw_fd());
    let lowerdir = lowers.iter().map(fd).collect::<Vec<_>>().join(":");
    let base = format!("lowerdir={lowerdir},upperdir={},workdir={}", fd(upper), fd(work));
    let with_userxattr = format!("{base},userxattr");
    match mount(Some("overlay"), target, Some("overlay"), flags, Some(with_userxattr.as_str())) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => mount(Some("overlay"), target, Some("overlay"), flags, Some(base.as_str())),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        SetupError::sys(Step::MountOverlay, e as i32, Some(lower_name))
            .with_hint("overlay needs Linux 5.11+ for user namespaces, and an upper directory the sandbox's root may write (see README: Overlay)")
    })
}

/// `/proc/self/fd/N`: a path to what `fd` holds, usable where the kernel wants a path.
pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// mkdir `name` inside the directory `dir` (no path walk) and return an O_PATH handle on it.
pub fn make_dir_at(dir: &OwnedFd, name: &str) -> Result<OwnedFd> {
    match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(SetupError::sys(Step::MountOverlay, e as i32, Some(name))),
    }
    open_at(dir, name)
}

/// A new empty mode-000 directory or file `name` in `dir`, as an O_PATH handle: nothing there
/// before (EEXIST otherwise), nothing followed.
pub fn make_placeholder_at(dir: &OwnedFd, name: &str, is_dir: bool) -> Result<OwnedFd> {
    let fail = |e: Errno| SetupError::sys(Step::MaskPath, e as i32, Some(name));
    if is_dir {
        nix::sys::stat::mkdirat(dir, name, Mode::empty()).map_err(fail)?;
    } else {
        drop(
            nix::fcntl::openat(dir, name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(fail)?,
        );
    }
    nix::fcntl::openat(dir, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(fail)
}

/// An O_PATH handle on the directory `name` inside `dir`, never following a symlink.
pub fn open_at(dir: &OwnedFd, name: &str) -> Result<OwnedFd> {
    nix::fcntl::openat(dir, name, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| SetupError::sys(Step::MountOverlay, e as i32, Some(name)))
}

/// Unmount lazily and remove the mountpoint.
pub fn detach(target: &str) -> Result<()> {
    umount2(target, MntFlags::MNT_DETACH).map_err(fail(Step::MountOverlay, target))?;
    std::fs::remove_dir(target).map_err(|e| SetupError::sys(Step::MountOverlay, e.raw_os_error().unwrap_or(libc::EIO), Some(target)))
}

pub fn mount_proc(target: &str) -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), target, Some("proc"), flags, None::<&str>).map_err(fail(Step::MountProc, target))
}

/// `max`: the terminals one sandbox may open (64). Every devpts but the host's own draws from one
/// pool for the whole host (kernel.pty.max less kernel.pty.reserve: 3072 by default), which no
/// cgroup bounds: without a bound, one sandbox could take them all and no other could open one.
const DEVPTS_OPTIONS: &str = "newinstance,ptmxmode=0666,mode=620,max=64";

pub fn mount_devpts(target: &str) -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(Some("devpts"), target, Some("devpts"), flags, Some(DEVPTS_OPTIONS)).map_err(fail(Step::MountDevpts, target))
}

/// mkdir -p, refusing to walk through a symlink (every component is created or already a dir).
/// Every missing directory of `path` below `root` (a directory the caller made, so not checked),
/// each existing one checked to be a directory and not a symlink, which could lead out of `root`.
pub fn create_dirs(root: &str, path: &str) -> Result<()> {
    made_dirs(root, path).map(drop)
}

/// [`create_dirs`], returning the last directory, open. Made and opened one component at a time,
/// each relative to the descriptor of the one before (mkdirat, then openat with O_NOFOLLOW): a
/// directory that another process (a sandbox with a read-write bind of the same tree) swaps for a
/// symlink meanwhile is refused, never walked through to make something on the host.
fn made_dirs(root: &str, path: &str) -> Result<OwnedFd> {
    let below = path.strip_prefix(root).filter(|rest| rest.is_empty() || rest.starts_with('/') || root.ends_with('/'));
    let Some(below) = below else {
        return Err(SetupError::sys(Step::CreateMountpoint, libc::EINVAL, Some(path)));
    };
    let mut dir = open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(fail(Step::CreateMountpoint, path))?;
    let open_below =
        |dir: &OwnedFd, comp: &str| nix::fcntl::openat(dir, comp, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty());
    for comp in below.split('/').filter(|c| !c.is_empty()) {
        // Opened first: most components are there already (a root's mount points share them).
        let next = match open_below(&dir, comp) {
            Err(Errno::ENOENT) => match nix::sys::stat::mkdirat(&dir, comp, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => open_below(&dir, comp),
                Err(e) => return Err(SetupError::sys(Step::CreateMountpoint, e as i32, Some(path))),
            },
            opened => opened,
        };
        dir = match next {
            Ok(next) => next,
            // A symlink (O_NOFOLLOW on a directory open), or something that is no directory.
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(SetupError::sys(Step::CreateMountpoint, libc::ENOTDIR, Some(path))),
            Err(e) => return Err(SetupError::sys(Step::CreateMountpoint, e as i32, Some(path))),
        };
    }
    Ok(dir)
}

/// `path`'s directory made below `root` ([`made_dirs`]) and open, and its last component.
fn made_parent<'p>(root: &str, path: &'p str) -> Result<(OwnedFd, &'p str)> {
    let (parent, leaf) = path.rsplit_once('/').ok_or_else(|| SetupError::sys(Step::CreateMountpoint, libc::EINVAL, Some(path)))?;
    let parent = if parent.is_empty() { "/" } else { parent };
    if leaf.is_empty() || leaf == "." || leaf == ".." {
        return Err(SetupError::sys(Step::CreateMountpoint, libc::EINVAL, Some(path)));
    }
    Ok((made_dirs(root, parent)?, leaf))
}

/// An empty file at `path` (its directories made below `root`, as [`create_dirs`]).
pub fn create_file(root: &str, path: &str, mode: u32) -> Result<()> {
    let (dir, leaf) = made_parent(root, path)?;
    // O_EXCL: a file already there (one of a read-only tree, that this process may not open for
    // writing) is the mount point as it is. A symlink there is not (O_NOFOLLOW's ELOOP before).
    match nix::fcntl::openat(
        &dir,
        leaf,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    ) {
        Ok(fd) => {
            drop(fd);
            Ok(())
        }
        Err(Errno::EEXIST) => match nix::sys::stat::fstatat(&dir, leaf, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => Err(SetupError::sys(Step::CreateMountpoint, libc::ELOOP, Some(path))),
            _ => Ok(()),
        },
        Err(e) => Err(SetupError::sys(Step::CreateMountpoint, e as i32, Some(path))),
    }
}

/// A symlink at `path` (its directories made below `root`, as [`create_dirs`]). Whatever is
/// there already stays: only a kept upper layer (overlay.upper) has anything there, and what a
/// sandbox left in it is its own, as every other change it kept.
pub fn create_symlink(points_to: &str, root: &str, path: &str) -> Result<()> {
    let (dir, leaf) = made_parent(root, path)?;
    match nix::unistd::symlinkat(points_to, &dir, leaf) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(SetupError::sys(Step::CreateMountpoint, e as i32, Some(path))),
    }
}

/// An empty directory that nobody but a privileged process may enter or list (mode 000: the
/// umask cannot add bits).
pub fn create_sealed_dir(path: &str) -> Result<()> {
    nix::unistd::mkdir(path, Mode::empty()).map_err(fail(Step::CreateMountpoint, path))
}

pub fn remove_dir(path: &str) -> Result<()> {
    std::fs::remove_dir(path).map_err(|e| SetupError::sys(Step::MaskPath, e.raw_os_error().unwrap_or(libc::EIO), Some(path)))
}

pub fn remove_file(path: &str) -> Result<()> {
    nix::unistd::unlink(path).map_err(fail(Step::MaskPath, path))
}

/// Enter `new_root` with the old root stacked beneath it, so no directory for the old root is
/// needed; the caller detaches it next.
pub fn pivot_root(new_root: &str) -> Result<()> {
    nix::unistd::chdir(new_root).map_err(fail(Step::PivotRoot, new_root))?;
    nix::unistd::pivot_root(".", ".").map_err(fail(Step::PivotRoot, new_root))
}

pub fn detach_old_root() -> Result<()> {
    umount2(".", MntFlags::MNT_DETACH).map_err(fail(Step::DetachOldRoot, "/"))?;
    nix::unistd::chdir("/").map_err(fail(Step::DetachOldRoot, "/"))
}

/// Writable again (a root built ahead, for the mountpoints of what is mounted at its release).
pub fn remount_root_writable() -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(fail(Step::RemountWritable, "/"))
}

pub fn remount_root_readonly() -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(fail(Step::RemountReadonly, "/"))
}

pub fn set_hostname(name: &str) -> Result<()> {
    nix::unistd::sethostname(name).map_err(|e| SetupError::sys(Step::SetHostname, e as i32, None))
}

pub fn bring_up_loopback() -> Result<()> {
    let err = |e: Errno| SetupError::sys(Step::BringUpLoopback, e as i32, Some("lo"));
    let sock =
        nix::sys::socket::socket(nix::sys::socket::AddressFamily::Inet, nix::sys::socket::SockType::Datagram, nix::sys::socket::SockFlag::SOCK_CLOEXEC, None)
            .map_err(err)?;
    // SAFETY: ifreq is plain data; the name is NUL-terminated within IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(err(Errno::last()));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(err(Errno::last()));
        }
    }
    Ok(())
}

pub fn set_rlimit(resource: nix::sys::resource::Resource, value: u64) -> Result<()> {
    nix::sys::resource::setrlimit(resource, value, value).map_err(|e| SetupError::sys(Step::SetRlimits, e as i32, None))
}

pub fn set_umask(mask: u32) {
    nix::sys::stat::umask(Mode::from_bits_truncate(mask));
}

/// This process's file mode creation mask, read without changing it (Linux 4.7+ shows it in
/// /proc/self/status; umask(2) can only read it by setting it, racing other threads).
pub fn current_umask() -> Option<u32> {
    // Opened once: every spawn then costs one pread (the kernel renders the file anew at offset
    // 0), not a walk through /proc. Umask comes early in the file, so a short read is enough.
    static STATUS: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    let fd = STATUS.get_or_init(|| open("/proc/self/status", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ok()).as_ref()?;
    let mut buf = [0u8; 256];
    let n = nix::sys::uio::pread(fd, &mut buf, 0).ok()?;
    let status = std::str::from_utf8(&buf[..n]).ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

pub fn set_parent_death_signal() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| SetupError::sys(Step::WaitForParent, e as i32, None))
}

/// Whether the reading end of the pipe `fd` writes to is gone: a poll that does not wait.
pub fn reader_gone(fd: &OwnedFd) -> bool {
    let mut p = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(fd), nix::poll::PollFlags::POLLOUT)];
    matches!(nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO), Ok(1)) && p[0].revents().is_some_and(|r| r.contains(nix::poll::PollFlags::POLLERR))
}

pub fn set_ids(uid: u32, gid: u32) -> Result<()> {
    use nix::unistd::{setresgid, setresuid, Gid, Uid};
    let g = Gid::from_raw(gid);
    let u = Uid::from_raw(uid);
    setresgid(g, g, g).map_err(|e| SetupError::sys(Step::SetIds, e as i32, None))?;
    setresuid(u, u, u).map_err(|e| SetupError::sys(Step::SetIds, e as i32, None))
}

/// Supplementary groups: none. EPERM means setgroups was denied for this user namespace (a
/// rootless sandbox), where the process has none to drop anyway.
pub fn clear_groups() -> Result<()> {
    match nix::unistd::setgroups(&[]) {
        Ok(()) | Err(Errno::EPERM) => Ok(()),
        Err(e) => Err(SetupError::sys(Step::SetGroups, e as i32, None)),
    }
}

/// Read once per process tree: a fork inherits it, so the init and each command do not read it again.
pub fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40))
}

/// Empty every capability set (bounding, ambient, inheritable, permitted, effective) except
/// `keep`, so that not even a root-owned setuid or file-capability binary can regain one.
pub fn drop_capabilities(keep: &[u32]) -> Result<()> {
    drop_bounding_set(keep)?;
    set_capabilities(keep)
}

/// Which capabilities may still be in this process's bounding set (bit n: capability n), as far
/// as [`note_bounding_set`] knows: all until it is told. The set only ever shrinks, and a fork
/// copies it with this word, so a clear bit stays true in every descendant until an execve
/// (which starts this word over).
static MAYBE_BOUNDING: AtomicU64 = AtomicU64::new(u64::MAX);

/// Record that this process's bounding set holds at most `kept`, right after it dropped the
/// rest ([`drop_bounding_set`]): the commands its children run then only look at those. Only a
/// process of its own may call this, never a child that shares its memory until execve (what
/// that child drops the parent still has).
pub fn note_bounding_set(kept: &[u32]) {
    let mask = kept.iter().filter(|c| **c < 64).fold(0u64, |m, c| m | 1 << c);
    MAYBE_BOUNDING.fetch_and(mask, Ordering::Relaxed);
}

/// The bounding set and the ambient set, minus `keep`. Needs CAP_SETPCAP: call it before an id
/// change that would take that away.
pub fn drop_bounding_set(keep: &[u32]) -> Result<()> {
    let err = |e: Errno| SetupError::sys(Step::DropCapabilities, e as i32, None);
    let top = last_cap();
    let maybe = MAYBE_BOUNDING.load(Ordering::Relaxed);
    for cap in 0..=top {
        // Each drop commits new credentials: one already out of the set (an init made ahead
        // emptied it, and noted so) is not even read.
        let known_gone = cap < 64 && maybe & (1 << cap) == 0;
        // SAFETY: plain prctl with integer arguments.
        if known_gone || keep.contains(&cap) || unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } == 0 {
            continue;
        }
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let e = Errno::last();
            if e != Errno::EINVAL {
                return Err(err(e));
            }
        }
    }
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) } < 0 {
        let e = Errno::last();
        if e != Errno::EINVAL {
            return Err(err(e));
        }
    }
    Ok(())
}

/// capget(2)/capset(2)'s header, version 3 (two data words: capabilities 0-31 and 32-63).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

impl CapHeader {
    fn this_process() -> CapHeader {
        CapHeader { version: 0x2008_0522, pid: 0 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Permitted, effective and inheritable become exactly `keep`, and `keep` is raised in the
/// ambient set so that it survives execve for a non-root user.
pub fn set_capabilities(keep: &[u32]) -> Result<()> {
    let err = |e: Errno| SetupError::sys(Step::DropCapabilities, e as i32, None);
    capset(keep, true)?;
    for cap in keep {
        // SAFETY: plain prctl; raising an ambient cap that is permitted and inheritable.
        if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, *cap as libc::c_ulong, 0, 0) } < 0 {
            return Err(err(Errno::last()));
        }
    }
    Ok(())
}

/// Permitted and effective become exactly `keep`; inheritable too with `inherit` (else empty).
fn capset(keep: &[u32], inherit: bool) -> Result<()> {
    let mut data = [CapData::default(); 2];
    for cap in keep {
        let (i, bit) = ((*cap / 32) as usize, 1u32 << (cap % 32));
        if i < 2 {
            data[i].effective |= bit;
            data[i].permitted |= bit;
            if inherit {
                data[i].inheritable |= bit;
            }
        }
    }
    let header = CapHeader::this_process();
    // SAFETY: a version-3 header with two data words, as capset(2) requires.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } < 0 {
        return Err(SetupError::sys(Step::DropCapabilities, Errno::last() as i32, None));
    }
    Ok(())
}

/// Every capability set emptied but this process's own permitted and effective ones, which
/// become `keep`: for a process that runs no program (an execve would need the bounding,
/// inheritable and ambient sets, which hold nothing).
pub fn keep_only_own_capabilities(keep: &[u32]) -> Result<()> {
    drop_bounding_set(&[])?;
    capset(keep, false)
}

pub fn keep_capabilities_across_setuid() -> Result<()> {
    nix::sys::prctl::set_keepcaps(true).map_err(|e| SetupError::sys(Step::DropCapabilities, e as i32, None))
}

/// A new anonymous session keyring: the caller's own session keyring must not be reachable from
/// inside (with a profile that allows keyctl).
pub fn join_new_session_keyring() -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a NULL name creates and joins an anonymous keyring.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, std::ptr::null::<libc::c_char>()) };
    match rc {
        // ENOSYS: a kernel without keys has nothing to share either.
        r if r >= 0 => Ok(()),
        _ if Errno::last() == Errno::ENOSYS => Ok(()),
        _ => Err(SetupError::sys(Step::JoinSessionKeyring, Errno::last() as i32, None)),
    }
}

pub fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| SetupError::sys(Step::SetNoNewPrivs, e as i32, None))
}

/// Every fd from `from` up gets close-on-exec: nothing of the helper or of Node survives execve,
/// while the exec-status pipe still works until the moment of exec.
pub fn mark_fds_cloexec(from: u32) -> Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with flags only marks descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| SetupError::sys(Step::CloseFds, e.raw_os_error().unwrap_or(libc::EIO), Some("/proc/self/fd")))?;
    let fds: Vec<RawFd> = dir.filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok()).collect();
    for fd in fds {
        if fd >= from as RawFd {
            // SAFETY: setting FD_CLOEXEC on a descriptor number; a stale one fails harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Clear O_NONBLOCK on descriptors 0-2 (their open file descriptions, which the caller may
/// share). Best effort: a slot that is closed or refuses is left as it is.
pub fn make_stdio_blocking() {
    for fd in 0..3 {
        // SAFETY: fcntl on a descriptor number; a closed one fails harmlessly.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
            // SAFETY: as above, with the flags just read less O_NONBLOCK.
            unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
        }
    }
}

pub fn new_session() -> Result<()> {
    nix::unistd::setsid().map(|_| ()).map_err(|e| SetupError::sys(Step::NewSession, e as i32, None))
}

pub fn chdir(path: &str) -> Result<()> {
    nix::unistd::chdir(path).map_err(fail(Step::Chdir, path))
}

/// The kernel's struct sigaction (rt_sigaction(2)), the same on x86_64 and aarch64. Raw, because
/// glibc's sigaction refuses its own two internal signals (32 and 33), which its posix_spawn
/// leaves ignored in the helper.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The highest signal number (the kernel's _NSIG, 64 on Linux).
const LAST_SIGNAL: i32 = 64;

fn is_unchangeable(sig: i32) -> bool {
    sig == libc::SIGKILL || sig == libc::SIGSTOP
}

/// The signals whose action in this process is not the default (bit n-1: signal n), once
/// [`note_signal_actions`] looked; every one of them until then (no real mask has them all:
/// SIGKILL and SIGSTOP never have an action).
static NON_DEFAULT_SIGNALS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Look once at which signals this process ignores or catches (the kernel's own masks in
/// /proc/self/status: one read, where asking for each action is 62 calls), so that every command
/// started from it resets only those ([`reset_signals`]). The helper does this at its start,
/// before it forks anything (a warm one ahead); nothing of ours changes an action after that
/// (Rust's runtime set its own before main). Without /proc, nothing is noted.
pub fn note_signal_actions() {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return };
    let mask = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    if let (Some(ignored), Some(caught)) = (mask("SigIgn:"), mask("SigCgt:")) {
        NON_DEFAULT_SIGNALS.store(ignored | caught, Ordering::Relaxed);
    }
}

/// Ignore the signals that stop a service (SIGTERM, SIGHUP, SIGINT): systemd's stop, and any
/// kill of a whole cgroup or process tree, signals the helpers with their caller. A helper ends
/// when its caller does (its control socket closes), ending its sandbox and removing its cgroups
/// on its way out; one a signal killed outright would leave them. Before [`note_signal_actions`],
/// so every command resets them ([`reset_signals`]); the init blocks and reads them as before.
pub fn ignore_stop_signals() {
    let ign = KernelSigaction { handler: libc::SIG_IGN, flags: 0, restorer: 0, mask: 0 };
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: rt_sigaction installing SIG_IGN, with the kernel's sigset size.
        unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &ign, std::ptr::null_mut::<KernelSigaction>(), 8usize) };
    }
}

/// Every signal back to its default action, none blocked, before the command's execve: an
/// ignored signal stays ignored across execve (Node ignores SIGPIPE; glibc's posix_spawn leaves
/// its internal 32 and 33 ignored), a caught one must not run its handler in a child that shares
/// the init's memory, and the init's blocked mask is its own. Only the signals noted as not at
/// their default ([`note_signal_actions`]), else all of them.
pub fn reset_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow};
    let mask = NON_DEFAULT_SIGNALS.load(Ordering::Relaxed);
    let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for sig in (1..=LAST_SIGNAL).filter(|s| !is_unchangeable(*s) && mask & (1 << (s - 1)) != 0) {
        // SAFETY: rt_sigaction installing SIG_DFL, with the kernel's sigset size.
        unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &dfl, std::ptr::null_mut::<KernelSigaction>(), 8usize) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// execve, searching `PATH` from the command's own environment when `file` has no slash. The
/// first error other than ENOENT/ENOTDIR wins, as in execvp.
pub fn execve(file: &str, argv: &[CString], envp: &[CString]) -> SetupError {
    let err = |e: Errno, p: &str| SetupError::sys(Step::Execve, e as i32, Some(p));
    if file.contains('/') {
        let Ok(path) = CString::new(file) else { return err(Errno::EINVAL, file) };
        let e = nix::unistd::execve(&path, argv, envp).unwrap_err();
        return err(e, file);
    }
    let path_var = envp
        .iter()
        .filter_map(|kv| kv.to_str().ok()?.strip_prefix("PATH=").map(str::to_owned))
        .next()
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    let mut first = None;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{}/{}", dir.trim_end_matches('/'), file);
        let Ok(c) = CString::new(candidate.as_str()) else { continue };
        let e = nix::unistd::execve(&c, argv, envp).unwrap_err();
        if !matches!(e, Errno::ENOENT | Errno::ENOTDIR) && first.is_none() {
            first = Some((e, candidate));
        }
    }
    match first {
        Some((e, p)) => err(e, &p),
        None => err(Errno::ENOENT, file),
    }
}

/// Leave this process now, without the exit handlers: for the init and what it forks, copies of
/// the helper's memory, where Rust's and libc's cleanup would flush the helper's buffers (its
/// stdout is the sandbox's there) or run its atexit handlers a second time.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process; nothing of it is used after.
    unsafe { libc::_exit(code) }
}

/// Whether descriptors `a` and `b` of this process write to one place: one open file
/// description (a dup), by kcmp(2); where kcmp is refused (Docker's and Kubernetes' default
/// seccomp profiles, gVisor, a kernel without CONFIG_KCMP), one pipe, by its inode (a pipe has
/// no offset or flags of a description's that would tell two opens of it apart).
pub fn same_open_file(a: RawFd, b: RawFd) -> bool {
    const KCMP_FILE: libc::c_int = 0;
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: kcmp compares two descriptor numbers of our own process; it touches no memory.
    match unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) } {
        0 => true,
        r if r > 0 => false,
        _ => same_pipe(a, b),
    }
}

/// Whether `a` and `b` are both ends onto one pipe.
fn same_pipe(a: RawFd, b: RawFd) -> bool {
    // SAFETY: descriptors of this process's, open while it asks.
    let pipe = |fd| {
        nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
            .ok()
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
            .map(|st| (st.st_dev, st.st_ino))
    };
    pipe(a).is_some_and(|x| pipe(b) == Some(x))
}

/// CLOCK_MONOTONIC in ns: the clock of [`Instant`](std::time::Instant), readable in another
/// process of the same time namespace (a sandbox has none of its own).
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The [`Instant`](std::time::Instant) of a [`monotonic_ns`] reading taken earlier (by another
/// process too); `now` for 0 (unknown) or a reading from the future.
pub fn instant_of_monotonic(ns: u64) -> std::time::Instant {
    let now = std::time::Instant::now();
    if ns == 0 {
        return now;
    }
    let ago = monotonic_ns().saturating_sub(ns);
    now.checked_sub(std::time::Duration::from_nanos(ago)).unwrap_or(now)
}

/// Close every descriptor from 3 up but those in `keep`: for a fork that must not hold its
/// parent's, and for the helper, which must not pass on what Node inherited and leaked to it.
pub fn close_fds_except(keep: &[RawFd]) {
    // close_range over the gaps between the kept ones: a few syscalls on the spawn path, where
    // reading /proc/self/fd would take a dozen (and needs /proc).
    let mut kept: Vec<u32> = keep.iter().filter(|fd| **fd > 2).map(|fd| *fd as u32).collect();
    kept.sort_unstable();
    let mut from = 3u32;
    for fd in kept.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > from {
            // SAFETY: close_range over descriptor numbers of our own process.
            if unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) } < 0 {
                return close_listed_fds_except(keep);
            }
        }
        from = fd.saturating_add(1);
    }
}

/// Kernels before 5.9 have no close_range: close what /proc/self/fd lists.
fn close_listed_fds_except(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<RawFd> = dir.filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok()).collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing descriptor numbers of our own process; the directory's own fd is
            // already gone (a failed close is harmless).
            unsafe { libc::close(fd) };
        }
    }
}

/// Run `child` in a new process that shares this one's memory (clone with CLONE_VM | CLONE_VFORK,
/// on a stack of its own), as posix_spawn does: no page tables are copied and no copy-on-write
/// fault is taken, and this process is suspended until the child has called execve or exited.
/// `child` must end in one of those two (its return value becomes the child's exit status), must
/// not unwind, and must leave alone what this process owns in memory: it may allocate and free
/// its own allocations (the heap is the caller's and stays consistent, the caller being
/// suspended; what an execve leaves allocated is a few bytes per command) but must not free or
/// change the caller's data. Only for a single-threaded caller: its heap and TLS are the child's.
pub fn spawn_sharing_memory(child: &mut dyn FnMut() -> i32) -> std::result::Result<nix::unistd::Pid, Errno> {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut dyn FnMut` below, alive while the caller is suspended.
        let f = unsafe { &mut *(arg as *mut &mut dyn FnMut() -> i32) };
        f()
    }
    // The child's stack: what the setup steps and execve need, with a guard page below it.
    const STACK: usize = 1 << 20;
    const GUARD: usize = 4096;
    // SAFETY: a fresh private anonymous mapping, unmapped below once the child left it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: the lowest page of the mapping just made.
    unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) };
    let mut f: &mut dyn FnMut() -> i32 = child;
    // SAFETY: the stack top is the end of our mapping (16-byte aligned); CLONE_VFORK keeps this
    // frame, `f` and the mapping alive until the child no longer uses them.
    let rc = unsafe {
        libc::clone(
            trampoline,
            (base as *mut u8).add(STACK) as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut f as *mut &mut dyn FnMut() -> i32 as *mut libc::c_void,
        )
    };
    let err = Errno::last();
    // SAFETY: the mapping made above; the child has exec'd or exited (CLONE_VFORK).
    unsafe { libc::munmap(base, STACK) };
    if rc < 0 {
        return Err(err);
    }
    Ok(nix::unistd::Pid::from_raw(rc))
}

/// The C library's first real-time signal (glibc and musl alike: 32 and 33 are its own).
pub const SIGRTMIN: i32 = 34;

/// How a child ended, as waitpid(2) told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(nix::unistd::Pid, i32),
    /// By this signal: any number, real-time ones too.
    Signaled(nix::unistd::Pid, i32),
    /// Stopped or continued (a traced child).
    Other(nix::unistd::Pid),
    StillAlive,
}

/// waitpid(2) for `pid` (None: any child), without waiting unless `block`. Not nix's: its
/// status cannot hold a real-time signal, so it reaps a child that one killed, then returns
/// EINVAL, and that end is lost (a command killed by signal 40 was never reported).
pub fn wait_child(pid: Option<nix::unistd::Pid>, block: bool) -> nix::Result<Ended> {
    wait_child_counted(pid, block).map(|(ended, _)| ended)
}

/// [`wait_child`] (as wait4(2)), with what the child used: itself and the descendants it
/// waited for, as time(1) counts a command.
pub fn wait_child_counted(pid: Option<nix::unistd::Pid>, block: bool) -> nix::Result<(Ended, crate::protocol::Reaped)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4(2) with valid out-pointers.
    let rc = unsafe { libc::wait4(pid.map_or(-1, nix::unistd::Pid::as_raw), &mut status, if block { 0 } else { libc::WNOHANG }, &mut ru) };
    if rc < 0 {
        return Err(Errno::last());
    }
    let pid = nix::unistd::Pid::from_raw(rc);
    let ended = match rc {
        0 => Ended::StillAlive,
        _ if libc::WIFEXITED(status) => Ended::Exited(pid, libc::WEXITSTATUS(status)),
        _ if libc::WIFSIGNALED(status) => Ended::Signaled(pid, libc::WTERMSIG(status)),
        _ => Ended::Other(pid),
    };
    Ok((ended, crate::protocol::Reaped::of(&ru)))
}

/// Reap a child that ended (`pid`, or any), without waiting; for one a signal ended, also when
/// it started ([`start_time`]), read from its zombie: once reaped, its pid may be another
/// process's, so the pid alone no longer says whose the cgroups named after it are.
pub fn reap_child(pid: Option<nix::unistd::Pid>) -> nix::Result<(Ended, Option<u64>)> {
    // SAFETY: siginfo_t is plain data; zeroed, si_pid reads 0 when no child has ended (WNOHANG).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let (idtype, id) = match pid {
        Some(p) => (libc::P_PID, p.as_raw() as libc::id_t),
        None => (libc::P_ALL, 0),
    };
    // SAFETY: waitid(2) with a valid out-pointer; WNOWAIT leaves the child to be reaped below.
    if unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: filled in by waitid for a SIGCHLD-type siginfo (or left zeroed).
    let child = unsafe { info.si_pid() };
    if child == 0 {
        return Ok((Ended::StillAlive, None));
    }
    let start = if matches!(info.si_code, libc::CLD_KILLED | libc::CLD_DUMPED) { start_time(child) } else { None };
    Ok((wait_child(Some(nix::unistd::Pid::from_raw(child)), false)?, start))
}

/// When process `pid` started, in clock ticks after boot (the 22nd field of /proc/PID/stat; a
/// zombie's too): with its pid, which process it is.
pub fn start_time(pid: i32) -> Option<u64> {
    start_time_in(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// This process's [`start_time`] (through /proc/self: whichever pid namespace /proc was mounted for).
pub fn own_start_time() -> Option<u64> {
    start_time_in(&std::fs::read("/proc/self/stat").ok()?)
}

fn start_time_in(stat: &[u8]) -> Option<u64> {
    // The command name (field 2) may hold spaces, parentheses and any bytes: field 3 on follows
    // its last ')'.
    let rest = std::str::from_utf8(&stat[stat.iter().rposition(|b| *b == b')')? + 1..]).ok()?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Point fds 0-2 at /dev/null: for processes that must not hold the sandbox's stdio open.
pub fn redirect_stdio_to_null() {
    if let Ok(null) = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of our own process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// A detached copy of the mount tree at `path` (symlinks followed), with everything mounted
/// below it; a failure is reported as `step`'s.
fn clone_tree(path: &str, step: Step) -> Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| SetupError::sys(step, libc::EINVAL, Some(path)))?;
    clone_tree_at(libc::AT_FDCWD, &c, 0, path, step)
}

/// [`clone_tree`] of what `dir` (any open mode, O_PATH too) is, not of what a path names now.
fn clone_tree_of(dir: &OwnedFd, shown: &str, step: Step) -> Result<OwnedFd> {
    clone_tree_at(dir.as_raw_fd(), c"", libc::AT_EMPTY_PATH as libc::c_uint, shown, step)
}

fn clone_tree_at(dirfd: RawFd, path: &std::ffi::CStr, flags: libc::c_uint, shown: &str, step: Step) -> Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: open_tree with a valid directory fd and path; returns a new fd we own.
    let fd = unsafe {
        libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), OPEN_TREE_CLONE | flags | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint)
    };
    if fd < 0 {
        return Err(SetupError::sys(step, Errno::last() as i32, Some(shown)));
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// mount_setattr on every mount of a detached tree.
fn set_tree_attr(tree: &OwnedFd, attr: &MountAttr) -> std::result::Result<(), Errno> {
    let empty = CString::default();
    // SAFETY: mount_setattr on our detached tree with a properly sized attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// A detached copy of the mount tree at `path` whose files appear to the user namespace `userns`
/// as that namespace maps their on-disk owners (host root's files become the sandbox root's),
/// read-only, nosuid, nodev. Only a process privileged over the host's mounts may make one.
/// `layer`: the directory, opened by the caller as its kind of path wants ([`open_rooted`] or
/// followed); `path`: its name in errors.
pub fn idmapped_tree(layer: &OwnedFd, path: &str, userns: &OwnedFd) -> Result<OwnedFd> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let tree = clone_tree_of(layer, path, Step::MountOverlay)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    set_tree_attr(&tree, &attr).map_err(|e| {
        SetupError::sys(Step::MountOverlay, e as i32, Some(path))
            .with_hint("the filesystem under the overlay's lower layer must support idmapped mounts (ext4, xfs, btrfs, tmpfs on Linux 5.12+)")
    })?;
    Ok(tree)
}

/// What binding `path` (symlinks followed, as a caller's bind source is) would mount, as a
/// detached tree, private: to be attached by the init of another mount namespace
/// ([`attach_tree`]), where the path may not reach.
pub fn bind_tree(path: &str) -> Result<OwnedFd> {
    let tree = clone_tree(path, Step::BindMount)?;
    // A clone of a shared mount joins its peer group: nothing may propagate between the host and
    // the sandbox through it (a bind made inside the init's namespace is private like its root).
    let attr = MountAttr { attr_set: 0, attr_clr: 0, propagation: libc::MS_PRIVATE, userns_fd: 0 };
    set_tree_attr(&tree, &attr).map_err(|e| SetupError::sys(Step::BindMount, e as i32, Some(path)))?;
    Ok(tree)
}

/// Attach a detached mount tree (from [`idmapped_tree`] or [`bind_tree`]) on `name` inside the
/// directory `dir`; a failure is reported as `step`'s.
pub fn attach_tree(tree: &OwnedFd, dir: &OwnedFd, name: &str, step: Step) -> Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let target = name;
    let c = CString::new(target).map_err(|_| SetupError::sys(step, libc::EINVAL, Some(target)))?;
    let empty = CString::default();
    // SAFETY: move_mount from our tree fd onto a name under a directory fd.
    let rc = unsafe { libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), empty.as_ptr(), dir.as_raw_fd(), c.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH) };
    if rc < 0 {
        return Err(SetupError::sys(step, Errno::last() as i32, Some(target)));
    }
    Ok(())
}

/// Whether `fd` has something to read (or has hung up) right now: a poll that does not wait.
pub fn readable_now(fd: &OwnedFd) -> bool {
    ready_now(std::os::fd::AsFd::as_fd(fd), nix::poll::PollFlags::POLLIN)
}

/// Whether poll, without waiting, says `fd` has one of `events` now.
pub fn ready_now(fd: std::os::fd::BorrowedFd<'_>, events: nix::poll::PollFlags) -> bool {
    let mut p = [nix::poll::PollFd::new(fd, events)];
    matches!(nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO), Ok(1))
}

/// Send `fds` (SCM_RIGHTS) on `sock` with a one-byte message; [`recv_fds`] takes them.
pub fn send_fds(sock: &OwnedFd, fds: &[std::os::fd::RawFd]) -> Result<()> {
    send_message(sock, b"f", fds, Step::MountOverlay)
}

/// Whether an SCM_RIGHTS send failed only because its sender's host user has too many
/// descriptors in flight (ETOOMANYREFS). The kernel counts those per host user, not per user
/// namespace, so every sandbox of a root caller (one host id) shares one count, which any of
/// them can fill; the fd is then lent instead (see [`lent_note`], [`take_fd_of`]).
pub fn too_many_in_flight(e: &SetupError) -> bool {
    e.errno.as_deref() == Some("ETOOMANYREFS")
}

/// The message that lends descriptor `fd` instead of sending it: its number, for the receiver to
/// take with [`take_fd_of`] while the sender keeps it open.
pub fn lent_note(fd: RawFd) -> Vec<u8> {
    format!("lent {fd}").into_bytes()
}

/// The descriptor number a [`lent_note`] names.
pub fn lent_fd(note: &[u8]) -> Option<RawFd> {
    std::str::from_utf8(note).ok()?.strip_prefix("lent ")?.parse().ok().filter(|n: &RawFd| *n >= 0)
}

/// Descriptor `fd` of process `pid` (a child of ours, not yet reaped), duplicated into this one,
/// close-on-exec (pidfd_getfd): nothing is in flight, so no host user's count can refuse it. It
/// needs ptrace rights over that process, which a root caller's helper has over its init.
pub fn take_fd_of(pid: i32, fd: RawFd) -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open of a pid with no flags; a child we have not reaped cannot be another's.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just gave us this descriptor.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd on a pidfd we own, no flags: the new descriptor is ours, close-on-exec.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(Errno::last());
    }
    // SAFETY: as above.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(got as RawFd) })
}

/// Receive the fds of one [`send_fds`] message.
pub fn recv_fds(sock: &OwnedFd) -> Result<Vec<OwnedFd>> {
    Ok(recv_message(sock, 1, Step::MountOverlay)?.map(|(_, fds)| fds).unwrap_or_default())
}

/// The largest message `sock` (a unix datagram or seqpacket socket) sends in one piece: its send
/// buffer, less what the kernel keeps back for itself. None when it cannot be read.
pub fn send_room(sock: &OwnedFd) -> Option<usize> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt with an int-sized buffer on our own socket.
    let rc = unsafe { libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, &mut v as *mut _ as *mut libc::c_void, &mut len) };
    (rc == 0).then(|| (v as usize).saturating_sub(32))
}

/// One message on a SOCK_SEQPACKET socket, with `fds` attached (SCM_RIGHTS).
pub fn send_message(sock: &OwnedFd, bytes: &[u8], fds: &[std::os::fd::RawFd], step: Step) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsg: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            r => return r.map(|_| ()).map_err(|e| SetupError::sys(step, e as i32, None)),
        }
    }
}

/// One message of at most `max` bytes and the fds attached to it (close-on-exec); None at EOF.
/// A longer message is an error, never silently cut; fds the kernel could not install (this
/// process is at its fd limit) are simply missing, for the caller to notice.
pub fn recv_message(sock: &OwnedFd, max: usize, step: Step) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    use nix::sys::socket::MsgFlags;
    // The message's length first: a zeroed buffer of `max` bytes costs a page fault per 4 KiB
    // touched, hundreds of microseconds for the largest, on a start's path.
    let len = loop {
        // SAFETY: a zero-length peek; on a SOCK_SEQPACKET socket MSG_TRUNC makes it return the
        // next message's whole length.
        let rc = unsafe { libc::recv(sock.as_raw_fd(), std::ptr::null_mut(), 0, libc::MSG_PEEK | libc::MSG_TRUNC) };
        match rc {
            0.. => break rc as usize,
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return Err(SetupError::sys(step, Errno::last() as i32, None)),
        }
    };
    // One longer than `max` is received truncated, and refused below.
    let mut buf = vec![0u8; len.clamp(1, max.max(1))];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 200]);
    // recvmsg by hand: with MSG_CTRUNC (fds the kernel could not install, at our fd limit) nix
    // refuses to list the control messages, which would leak the fds that were installed.
    let (n, flags, fds) = loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers just below.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = space.as_mut_ptr().cast();
        hdr.msg_controllen = space.len() as _;
        // SAFETY: recvmsg into the buffers hdr points at, which outlive the call.
        let rc = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if rc < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(SetupError::sys(step, e as i32, None)),
            }
        }
        let mut fds = Vec::new();
        // SAFETY: the CMSG_* walk stays within msg_controllen bytes the kernel filled in; each
        // SCM_RIGHTS payload is whole descriptors it just installed in this process for us.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<std::os::fd::RawFd>();
                    let count = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / std::mem::size_of::<std::os::fd::RawFd>();
                    for i in 0..count {
                        fds.push(<OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&hdr, c);
            }
        }
        break (rc as usize, MsgFlags::from_bits_truncate(hdr.msg_flags), fds);
    };
    if flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(SetupError::sys(step, libc::EMSGSIZE, None));
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

/// `fds` become this process's stdin, stdout and stderr (without close-on-exec).
pub fn install_stdio(fds: &[OwnedFd]) -> Result<()> {
    if fds.len() != 3 {
        let why = if fds.len() < 3 { " (the others could not be received: this process is at its open-files limit)" } else { "" };
        return Err(SetupError::new(Step::InstallStdio, format!("expected 3 stdio descriptors, got {}{why}", fds.len())));
    }
    for (slot, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 onto our own stdio slots; the sources are open descriptors we own.
        if unsafe { libc::dup2(fd.as_raw_fd(), slot as i32) } < 0 {
            return Err(SetupError::sys(Step::InstallStdio, Errno::last() as i32, None));
        }
    }
    Ok(())
}

/// A new pseudo-terminal from the devpts instance at /dev/pts: (master, slave), both
/// close-on-exec, the slave not yet anyone's controlling terminal, sized rows x cols.
pub fn open_pty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd)> {
    let err = |e: Errno| SetupError::sys(Step::OpenPty, e as i32, Some("/dev/ptmx"));
    let master = open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(err(Errno::last()));
        }
    }
    let slave = pty_peer_or_errno(&master).map_err(err)?;
    set_window_size(&master, rows, cols).map_err(err)?;
    Ok((master, slave))
}

/// The slave of the pty whose master is `master` (TIOCGPTPEER: the very terminal, whichever
/// devpts instance or mount namespace it belongs to), close-on-exec, never a controlling terminal.
pub fn pty_peer(master: &OwnedFd) -> Option<OwnedFd> {
    pty_peer_or_errno(master).ok()
}

fn pty_peer_or_errno(master: &OwnedFd) -> std::result::Result<OwnedFd, Errno> {
    const TIOCGPTPEER: libc::c_ulong = 0x5441;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor we own.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), TIOCGPTPEER as _, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if slave < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) })
}

pub fn set_window_size(fd: &OwnedFd, rows: u16, cols: u16) -> std::result::Result<(), Errno> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads the winsize we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Make `slave` this session's controlling terminal and the command's stdin, stdout and stderr.
pub fn take_terminal(slave: &OwnedFd) -> Result<()> {
    let err = |e: Errno| SetupError::sys(Step::OpenPty, e as i32, None);
    // SAFETY: TIOCSCTTY on a terminal of our own new session; dup2 onto our stdio slots.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(err(Errno::last()));
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(err(Errno::last()));
            }
        }
    }
    Ok(())
}

/// Run `clone` (a fork-like clone of this single-threaded process into a new user namespace) with
/// `owner` as this thread's effective uid, so that the namespace is owned by `owner`: the kernel
/// charges what is counted per user (inotify instances and watches, user namespaces, fanotify
/// groups, queued signals, message-queue bytes) to a user namespace's owner in its parent as well,
/// and for a root caller's sandbox that owner would otherwise be host root, whose counts the
/// sandbox could use up (128 inotify instances here) for every root process of the host.
///
/// Capabilities stay (SECBIT_NO_SETUID_FIXUP) and the file-system uid stays 0 for the clone itself
/// (CLONE_INTO_CGROUP's write check) and for the child, which opens the caller's sources as host
/// root until it enters its mapped ids; the new namespace gives the child default securebits. The
/// child is born not dumpable, so its /proc files are root's (0:0), not the owner's: the helper
/// writes its id maps and the child reads its own files as before. Everything is put back in the
/// parent, also the parent-death signal and the dumpable flag that a change of effective uid
/// clears. `None` (an ordinary user's sandbox, no user namespace, or see
/// [`crate::supervisor::namespace_owners`]): `clone` runs as it is. Where the switch is refused,
/// the namespace is root's. Returns what `clone` returns, errno kept.
pub fn clone_as_owner(owner: Option<u32>, clone: impl FnOnce() -> libc::c_long) -> libc::c_long {
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    let Some(owner) = owner else { return clone() };
    // SAFETY: prctl and raw setresuid/setfsuid act on this thread's own credentials only.
    unsafe {
        let bits = libc::prctl(libc::PR_GET_SECUREBITS);
        let dumpable = libc::prctl(libc::PR_GET_DUMPABLE);
        let mut pdeath: libc::c_int = 0;
        libc::prctl(libc::PR_GET_PDEATHSIG, &mut pdeath as *mut libc::c_int);
        let parent = libc::getppid();
        if bits < 0 || dumpable < 0 || libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong | SECBIT_NO_SETUID_FIXUP) != 0 {
            return clone();
        }
        let switched = libc::syscall(libc::SYS_setresuid, -1i32, owner, -1i32) == 0;
        if switched {
            libc::syscall(libc::SYS_setfsuid, 0);
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
        }
        let rc = clone();
        if rc == 0 {
            return rc;
        }
        let errno = *libc::__errno_location();
        // Back to 0 (the saved uid), which brings the file-system uid back too. It cannot be
        // refused; were it, this process would go on as someone else: it stops instead.
        if switched && libc::syscall(libc::SYS_setresuid, -1i32, 0, -1i32) != 0 {
            std::process::abort();
        }
        libc::prctl(libc::PR_SET_DUMPABLE, dumpable as libc::c_ulong);
        libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong);
        if switched && pdeath != 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, pdeath as libc::c_ulong);
            if libc::getppid() != parent {
                // The parent died while the signal was off: as it would have had it been on.
                libc::raise(pdeath);
            }
        }
        *libc::__errno_location() = errno;
        rc
    }
}

/// A fork-like clone3 (no new stack, no CLONE_VM) of a single-threaded process whose child starts
/// inside the cgroup v2 directory `cgroup_fd` (CLONE_INTO_CGROUP), with `flags` (namespaces) and
/// `exit_signal`. Returns what clone3 returns: 0 in the child, its pid in the parent, -1 on error.
pub fn clone3_into_cgroup(flags: u64, exit_signal: u64, cgroup_fd: RawFd) -> libc::c_long {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs { flags: flags | CLONE_INTO_CGROUP, exit_signal, cgroup: cgroup_fd as u64, ..CloneArgs::default() };
    // SAFETY: clone3 with no stack behaves like fork: the child continues on a copy of ours.
    unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) }
}

/// Whether this process may raise a process's priority (CAP_SYS_NICE): back from idle priority,
/// or to a lower nice (see [`crate::priority`]).
pub fn may_renice() -> bool {
    has_effective_caps(&["SYS_NICE"])
}

/// Whether every one of `caps` (names as [`crate::caps::number`] reads them) is in this thread's
/// effective set.
pub fn has_effective_caps(caps: &[&str]) -> bool {
    let mut header = CapHeader::this_process();
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two data structs for version 3 headers.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    let held = |cap: u32| cap < 64 && data[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0;
    rc == 0 && caps.iter().all(|name| crate::caps::number(name).is_some_and(held))
}

/// Run `pid` (0: this process) only on CPU time nobody else wants: work done ahead of need must
/// not slow the sandboxes that are starting now.
pub fn set_idle_priority(pid: i32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler with a valid param struct.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_IDLE, &param) } < 0 {
        return Err(SetupError::sys(Step::SetPriority, Errno::last() as i32, None));
    }
    Ok(())
}

/// Back to the default policy (SCHED_OTHER); the nice stays as it is.
pub fn set_normal_priority(pid: i32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_OTHER, &param) } < 0 {
        return Err(SetupError::sys(Step::SetPriority, Errno::last() as i32, None));
    }
    Ok(())
}

/// The nice of `pid` (0: this thread).
pub fn nice(pid: i32) -> Result<i32> {
    Errno::clear();
    // SAFETY: getpriority reads; -1 is a valid nice, so errno tells a failure apart.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t) };
    if n == -1 && Errno::last_raw() != 0 {
        return Err(SetupError::sys(Step::SetPriority, Errno::last() as i32, None));
    }
    Ok(n)
}

/// Set the nice of `pid` (0: this thread; a single-threaded process is its one thread).
pub fn set_nice(pid: i32, nice: i32) -> Result<()> {
    // SAFETY: setpriority with plain integers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) } < 0 {
        return Err(SetupError::sys(Step::SetPriority, Errno::last() as i32, None));
    }
    Ok(())
}

/// What a sandbox's init is given as its `oom_score_adj`: the most, as Kubernetes gives a
/// BestEffort pod. See [`rank_first_for_oom_killer`].
pub const OOM_SCORE_ADJ: i32 = 1000;

/// Put `pid` (a sandbox's init, before it runs anything of the sandbox's) first in line for the
/// kernel's OOM killer; its processes inherit the place. Without `limits.memoryBytes` a sandbox
/// can hold memory no process owns (its tmpfs files: half the host's memory each by default),
/// which an OOM kill of any other process would not free, while the kill of its own processes
/// ends the sandbox and frees it (among sandboxes the killer takes the largest first, not
/// necessarily the one holding the files). Written by a holder of CAP_SYS_RESOURCE (a root
/// helper), the value is also the least the sandbox may set (`oom_score_adj_min`); otherwise it
/// may lower it as far as its caller may (the floor it inherited).
pub fn rank_first_for_oom_killer(pid: i32) -> Result<()> {
    let path = format!("/proc/{pid}/oom_score_adj");
    std::fs::write(&path, OOM_SCORE_ADJ.to_string()).map_err(|e| SetupError::sys(Step::RankForOomKiller, e.raw_os_error().unwrap_or(libc::EIO), Some(&path)))
}

/// A watch on this process's mount table: see [`mounts_changed`].
pub fn watch_mounts() -> Result<OwnedFd> {
    open("/proc/self/mountinfo", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(fail(Step::CloneNamespaces, "/proc/self/mountinfo"))
}

/// Whether anything was mounted or unmounted in this mount namespace since `watch` was opened
/// (or last asked): the kernel flags the mount table's poll with POLLPRI on every change.
pub fn mounts_changed(watch: &OwnedFd) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(watch.as_fd(), nix::poll::PollFlags::POLLPRI)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_none_or(|r| r.intersects(nix::poll::PollFlags::POLLPRI | nix::poll::PollFlags::POLLERR)),
        // Unknown: assume it changed, which costs only speed.
        Err(_) => true,
    }
}

/// What tells a file from one that later took its place, even on its inode number (ext4 gives a
/// freed number to the next new file at once): device, inode and birth time; where the
/// filesystem keeps no birth time, the change time, which also moves when the file's own
/// metadata does (a chmod, an entry added to a directory): then a root built on it is only
/// rebuilt, never wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    dev: (u32, u32),
    ino: u64,
    /// Seconds and nanoseconds of the birth (true) or change (false) time.
    stamp: (i64, u32, bool),
}

impl FileIdentity {
    pub fn of_fd(fd: &OwnedFd) -> Option<FileIdentity> {
        Self::statx(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
    }

    pub fn of_path(path: &str, follow: bool) -> Option<FileIdentity> {
        let c = std::ffi::CString::new(path).ok()?;
        Self::statx(libc::AT_FDCWD, &c, if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW })
    }

    fn statx(dirfd: RawFd, path: &std::ffi::CStr, flags: i32) -> Option<FileIdentity> {
        // SAFETY: statx fills the zeroed struct we own.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        let mask = libc::STATX_INO | libc::STATX_BTIME | libc::STATX_CTIME;
        // SAFETY: a valid path pointer and struct; the flags ask for no automount.
        if unsafe { libc::statx(dirfd, path.as_ptr(), flags | libc::AT_NO_AUTOMOUNT, mask, &mut st) } < 0 {
            return None;
        }
        let born = st.stx_mask & libc::STATX_BTIME != 0;
        let t = if born { st.stx_btime } else { st.stx_ctime };
        Some(FileIdentity { dev: (st.stx_dev_major, st.stx_dev_minor), ino: st.stx_ino, stamp: (t.tv_sec, t.tv_nsec, born) })
    }
}

/// The host's mount table, exactly: every mount's unique id (listmount(2), Linux 6.8+: never
/// reused, unlike mountinfo's ids and anonymous device numbers) and mountinfo's text (each
/// mount's place, flags, propagation and source). Two equal values are the same mounts with the
/// same attributes. None where listmount is unavailable (older kernels, a filter refusing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountTable {
    ids: Vec<u64>,
    text: Vec<u8>,
}

/// How the host's mount table stands against one taken earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountsSince {
    Same,
    /// Every mount of then is still there; some were added or changed their attributes.
    Changed,
    /// A mount of then is gone: a copy of that table keeps the host's filesystem alive.
    Gone,
}

impl MountTable {
    pub fn now() -> Option<MountTable> {
        let ids = mount_ids()?;
        let text = std::fs::read("/proc/self/mountinfo").ok()?;
        Some(MountTable { ids, text })
    }

    /// This table against the host's now (`None`: now unknown, which counts as gone).
    pub fn since(&self, now: Option<&MountTable>) -> MountsSince {
        match now {
            Some(n) if *n == *self => MountsSince::Same,
            // Both sorted.
            Some(n) if self.ids.iter().all(|id| n.ids.binary_search(id).is_ok()) => MountsSince::Changed,
            _ => MountsSince::Gone,
        }
    }
}

/// The unique ids of every mount in this mount namespace, sorted.
fn mount_ids() -> Option<Vec<u64>> {
    #[repr(C)]
    struct MntIdReq {
        size: u32,
        spare: u32,
        mnt_id: u64,
        param: u64,
    }
    const SYS_LISTMOUNT: libc::c_long = 458; // the same number on every architecture
    const LSMT_ROOT: u64 = u64::MAX; // the mount namespace's root: all of it
    let mut ids = Vec::new();
    let mut buf = vec![0u64; 512];
    let mut last = 0u64;
    loop {
        let req = MntIdReq { size: std::mem::size_of::<MntIdReq>() as u32, spare: 0, mnt_id: LSMT_ROOT, param: last };
        // SAFETY: listmount fills at most buf.len() ids into buf.
        let n = unsafe { libc::syscall(SYS_LISTMOUNT, &req as *const MntIdReq, buf.as_mut_ptr(), buf.len(), 0u32) };
        if n < 0 {
            return None;
        }
        let got = &buf[..n as usize];
        ids.extend_from_slice(got);
        match got.last() {
            // A full buffer: ask again from the last id given.
            Some(&l) if got.len() == buf.len() => last = l,
            _ => break,
        }
    }
    ids.sort_unstable();
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_ends_onto_one_pipe_are_one_place_and_two_pipes_or_files_are_not() {
        use std::os::fd::AsRawFd;
        let (_r1, w1) = nix::unistd::pipe().unwrap();
        let (_r2, w2) = nix::unistd::pipe().unwrap();
        let dup = nix::unistd::dup(&w1).unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let file2 = std::fs::File::open("/proc/self/stat").unwrap();
        // Where kcmp is refused (Docker's default profile), the pipe's inode decides.
        assert!(same_pipe(w1.as_raw_fd(), dup.as_raw_fd()));
        assert!(!same_pipe(w1.as_raw_fd(), w2.as_raw_fd()));
        assert!(!same_pipe(file.as_raw_fd(), file2.as_raw_fd()), "only pipes: two opens of a file have offsets of their own");
        assert!(same_open_file(w1.as_raw_fd(), dup.as_raw_fd()));
        assert!(!same_open_file(w1.as_raw_fd(), w2.as_raw_fd()));
        assert!(!same_open_file(file.as_raw_fd(), file2.as_raw_fd()));
    }

    #[test]
    fn a_killed_childs_start_time_is_read_from_its_zombie_before_the_reap_gives_its_pid_away() {
        let stat = b"42 (a) b\xff) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(start_time_in(stat), Some(98765), "the fields after the name's last ')', whatever bytes the name holds");
        assert_eq!(start_time_in(b"42 (a S 1"), None);
        assert!(own_start_time().is_some());
        let pausing = || {
            // SAFETY: the child only pauses (async-signal-safe) until it is killed or exits.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => loop {
                    unsafe { libc::pause() };
                },
                nix::unistd::ForkResult::Parent { child } => child,
            }
        };
        let reaped = |child| loop {
            match reap_child(Some(child)).unwrap() {
                (Ended::StillAlive, _) => std::thread::sleep(std::time::Duration::from_millis(1)),
                r => return r,
            }
        };
        let child = pausing();
        let started = start_time(child.as_raw());
        assert!(started.is_some());
        assert_eq!(reap_child(Some(child)).unwrap(), (Ended::StillAlive, None));
        nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
        assert_eq!(reaped(child), (Ended::Signaled(child, libc::SIGKILL), started));
        assert_eq!(wait_child(Some(child), false), Err(Errno::ECHILD), "reaped");
        // One that exited needs none: it removed what it made.
        // SAFETY: the child only exits.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe { libc::_exit(3) },
            nix::unistd::ForkResult::Parent { child } => child,
        };
        assert_eq!(reaped(child), (Ended::Exited(child, 3), None));
    }

    #[test]
    fn a_lent_note_names_its_descriptor_and_nothing_else_does() {
        assert_eq!(lent_fd(&lent_note(7)), Some(7));
        assert_eq!(lent_fd(b"f"), None, "a send_fds message");
        assert_eq!(lent_fd(b"lent -1"), None);
        assert_eq!(lent_fd(b"lent 7x"), None);
    }

    #[test]
    fn opening_beneath_refuses_symlinks_and_escapes_with_openat2_and_without() {
        let dir = std::env::temp_dir().join(format!("isolate-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("a/link")).unwrap();
        let base = open(&dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        for open in [open_beneath, open_beneath_by_steps] {
            assert!(open(&base, "a/b", flags).is_ok());
            // ELOOP from openat2; by steps, O_NOFOLLOW with O_DIRECTORY says ENOTDIR.
            assert!(matches!(open(&base, "a/link", flags).unwrap_err(), Errno::ELOOP | Errno::ENOTDIR));
            assert!(open(&base, "a/link/ssl", flags).is_err());
            assert!(open(&base, "../x", flags).is_err(), "nothing above the base");
        }
        let whole = dir.join("a/b");
        assert!(open_without_symlinks(whole.to_str().unwrap(), flags).is_ok());
        assert_eq!(open_without_symlinks(dir.join("a/link").to_str().unwrap(), flags).unwrap_err(), Errno::ELOOP);
        assert_eq!(open_without_symlinks(dir.join("a/link/ssl").to_str().unwrap(), flags).unwrap_err(), Errno::ELOOP, "a symlink on the way");
        assert_eq!(open_without_symlinks(&format!("{}/a/../a/b", dir.display()), flags).unwrap_err(), Errno::EXDEV, "no `..`, as from `/` beneath");
        assert_eq!(open_without_symlinks("a/b", flags).unwrap_err(), Errno::EINVAL, "absolute paths only");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The action of `sig` in this process, read raw (as the kernel keeps it).
    fn action(sig: i32) -> usize {
        let mut old = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
        // SAFETY: rt_sigaction only reading into `old`.
        assert_eq!(unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, std::ptr::null::<KernelSigaction>(), &mut old, 8usize) }, 0);
        old.handler
    }

    #[test]
    fn a_command_gets_every_noted_signal_back_at_its_default() {
        // In a child of its own: the test harness's actions and the noted mask stay untouched.
        // SAFETY: the child only makes syscalls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let fail = |code: i32| -> ! { unsafe { libc::_exit(code) } };
            // SAFETY: SIG_IGN for a signal nothing here relies on.
            unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
            let ign = KernelSigaction { handler: libc::SIG_IGN, flags: 0, restorer: 0, mask: 0 };
            // SAFETY: rt_sigaction setting SIG_IGN on 33, which glibc's own sigaction refuses.
            unsafe { libc::syscall(libc::SYS_rt_sigaction, 33, &ign, std::ptr::null_mut::<KernelSigaction>(), 8usize) };
            note_signal_actions();
            let mask = NON_DEFAULT_SIGNALS.load(Ordering::Relaxed);
            let noted = |sig: i32| mask & (1 << (sig - 1)) != 0;
            // Rust's runtime ignores SIGPIPE; SIGUSR2 and 33 were just ignored; SIGUSR1 is at its default.
            if !(noted(libc::SIGPIPE) && noted(libc::SIGUSR2) && noted(33) && !noted(libc::SIGUSR1) && !noted(libc::SIGKILL)) {
                fail(2);
            }
            reset_signals();
            if [libc::SIGPIPE, libc::SIGUSR2, 33].iter().any(|s| action(*s) != libc::SIG_DFL) {
                fail(3);
            }
            fail(0);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "2: the mask missed a signal, 3: one was not reset");
    }

    #[test]
    fn a_noted_bounding_set_only_shrinks() {
        assert_eq!(MAYBE_BOUNDING.load(Ordering::Relaxed), u64::MAX, "nothing noted in the test process");
        // SAFETY: the child only makes syscalls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            note_bounding_set(&[6, 7, 8]);
            note_bounding_set(&[7, 40]);
            let ok = MAYBE_BOUNDING.load(Ordering::Relaxed) == 1 << 7;
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn a_mount_table_is_the_same_only_mount_for_mount() {
        let t = |ids: &[u64], text: &str| MountTable { ids: ids.to_vec(), text: text.as_bytes().to_vec() };
        let then = t(&[10, 11, 12], "a\nb\nc\n");
        assert_eq!(then.since(Some(&t(&[10, 11, 12], "a\nb\nc\n"))), MountsSince::Same);
        assert_eq!(then.since(Some(&t(&[10, 11, 12, 13], "a\nb\nc\nd\n"))), MountsSince::Changed, "one added");
        assert_eq!(then.since(Some(&t(&[10, 11, 12], "a\nb ro\nc\n"))), MountsSince::Changed, "same mounts, other flags");
        assert_eq!(then.since(Some(&t(&[10, 12], "a\nc\n"))), MountsSince::Gone, "one unmounted");
        assert_eq!(then.since(Some(&t(&[10, 11, 14], "a\nb\nc\n"))), MountsSince::Gone, "the same text on another mount");
        assert_eq!(then.since(None), MountsSince::Gone, "unknown now");
        let here = MountTable::now().expect("listmount on this kernel (6.8+)");
        assert_eq!(here.since(MountTable::now().as_ref()), MountsSince::Same);
    }

    #[test]
    fn a_copy_above_a_number_is_there_and_closed_on_exec() {
        // Low numbers free below it, as a pipe made while a caller's fd 4 was free would be.
        let low = open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        let high = dup_above(std::os::fd::AsFd::as_fd(&low), 10).unwrap();
        assert!(high.as_raw_fd() >= 10, "fd {}", high.as_raw_fd());
        let flags = nix::fcntl::fcntl(&high, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        assert_eq!(dup_above(std::os::fd::AsFd::as_fd(&low), 1 << 30).unwrap_err(), Errno::EINVAL, "above RLIMIT_NOFILE");
    }

    #[test]
    fn mountpoints_are_made_only_below_their_root() {
        let dir = std::env::temp_dir().join(format!("isolate-sys-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.to_str().unwrap().to_owned();
        let outside = format!("{root}x/a");
        assert_eq!(create_dirs(&root, &outside).unwrap_err().errno.as_deref(), Some("EINVAL"), "a sibling that only shares the prefix");
        create_dirs(&root, &format!("{root}/a/b")).unwrap();
        assert!(dir.join("a/b").is_dir());
        // An existing symlink on the way is refused, never followed.
        std::os::unix::fs::symlink("/", dir.join("link")).unwrap();
        assert_eq!(create_dirs(&root, &format!("{root}/link/etc/x")).unwrap_err().errno.as_deref(), Some("ENOTDIR"));
        assert!(!std::path::Path::new("/etc/x").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_meanwhile_is_never_walked_through() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // root/a flips between a directory and a symlink to outside, as a sandbox with a
        // read-write bind of the same tree could flip it while another's mount points are made.
        let dir = std::env::temp_dir().join(format!("isolate-sys-swap-{}", std::process::id()));
        let (root, outside) = (dir.join("root"), dir.join("outside"));
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("b")).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, a, b) = (
                stop.clone(),
                std::ffi::CString::new(root.join("a").to_str().unwrap()).unwrap(),
                std::ffi::CString::new(root.join("b").to_str().unwrap()).unwrap(),
            );
            std::thread::spawn(move || {
                let mut flips = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: renameat2 with two NUL-terminated paths of ours.
                    unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
                    flips += 1;
                }
                flips
            })
        };
        let r = root.to_str().unwrap();
        let mut made = 0;
        for i in 0..3000 {
            made += usize::from(create_dirs(r, &format!("{r}/a/d{i}/e")).is_ok());
            made += usize::from(create_file(r, &format!("{r}/a/f{i}"), 0o644).is_ok());
            made += usize::from(create_symlink("x", r, &format!("{r}/a/s{i}")).is_ok());
        }
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        let escaped: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(flips > 1000 && made > 100, "the race ran: {flips} flips, {made} made inside");
        assert!(escaped.is_empty(), "made through the symlink, outside the root: {escaped:?}");
    }

    #[test]
    fn a_message_is_received_whole_at_its_own_length_and_one_too_long_is_refused() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let big = vec![7u8; 100_000];
        send_message(&a, &big, &[], Step::ReadSpec).unwrap();
        let (got, fds) = recv_message(&b, 256 << 10, Step::ReadSpec).unwrap().unwrap();
        assert_eq!((got.len(), got.capacity(), fds.len()), (100_000, 100_000, 0));
        assert!(got.iter().all(|&x| x == 7));
        let null = open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        send_message(&a, b"", &[null.as_raw_fd()], Step::ReadSpec).unwrap();
        let (got, fds) = recv_message(&b, 64, Step::ReadSpec).unwrap().unwrap();
        assert_eq!((got.len(), fds.len()), (0, 1), "no bytes, one descriptor");
        send_message(&a, &[1u8; 65], &[], Step::ReadSpec).unwrap();
        assert_eq!(recv_message(&b, 64, Step::ReadSpec).unwrap_err().errno.as_deref(), Some("EMSGSIZE"));
        drop(a);
        assert!(recv_message(&b, 64, Step::ReadSpec).unwrap().is_none(), "the other end closed");
    }
}
