//! Landlock: filesystem access rules the command cannot lift, negotiated with the kernel's ABI.
//! Applied in the command's own process after no_new_privs and before seccomp.

use crate::error::{SetupError, Step};
use crate::spec::Landlock;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// The filesystem rights (`LANDLOCK_ACCESS_FS_*`).
pub const EXECUTE: u64 = 1 << 0;
pub const WRITE_FILE: u64 = 1 << 1;
pub const READ_FILE: u64 = 1 << 2;
pub const READ_DIR: u64 = 1 << 3;
pub const REMOVE_DIR: u64 = 1 << 4;
pub const REMOVE_FILE: u64 = 1 << 5;
pub const MAKE_CHAR: u64 = 1 << 6;
pub const MAKE_DIR: u64 = 1 << 7;
pub const MAKE_REG: u64 = 1 << 8;
pub const MAKE_SOCK: u64 = 1 << 9;
pub const MAKE_FIFO: u64 = 1 << 10;
pub const MAKE_BLOCK: u64 = 1 << 11;
pub const MAKE_SYM: u64 = 1 << 12;
/// ABI 2.
pub const REFER: u64 = 1 << 13;
/// ABI 3.
pub const TRUNCATE: u64 = 1 << 14;
/// ABI 5.
pub const IOCTL_DEV: u64 = 1 << 15;

// The network rights (`LANDLOCK_ACCESS_NET_*`, ABI 4).
pub const NET_BIND_TCP: u64 = 1 << 0;
pub const NET_CONNECT_TCP: u64 = 1 << 1;

// The scopes (`LANDLOCK_SCOPE_*`, ABI 6).
pub const SCOPE_ABSTRACT_UNIX: u64 = 1 << 0;
pub const SCOPE_SIGNAL: u64 = 1 << 1;

/// Rights that make sense on a file (the kernel refuses directory rights on a file rule).
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;
// MAKE_CHAR and MAKE_BLOCK are handled (so denied) by every ruleset of the sandbox and granted by
// no list: no device nodes inside.
const READ: u64 = READ_FILE | READ_DIR;
const WRITE: u64 = READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_SYM | REFER | TRUNCATE;
const EXEC: u64 = READ | EXECUTE;

/// What the sandbox's own devices need whatever the rules say: a shell's `>/dev/null`, a tty.
/// (`/dev/ptmx` is a symlink to `pts/ptmx`, which the rule on `/dev/pts` covers.)
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/pts"];

/// The filesystem rights each Landlock ABI version can handle.
pub fn handled_by_abi(abi: u32) -> u64 {
    let mut rights = (1 << 13) - 1; // ABI 1: EXECUTE..MAKE_SYM
    if abi >= 2 {
        rights |= REFER;
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    if abi >= 5 {
        rights |= IOCTL_DEV;
    }
    rights
}

/// The rules as (path, rights) pairs, in order: the caller's, then the devices'.
pub fn plan_rules(rules: &Landlock) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (paths, rights) in [(&rules.read, READ), (&rules.write, WRITE), (&rules.exec, EXEC)] {
        for p in paths {
            out.push((p.clone(), rights));
        }
    }
    for d in DEVICES {
        out.push(((*d).to_owned(), READ | WRITE_FILE | IOCTL_DEV));
    }
    out
}

/// The kernel's Landlock ABI version, or None without Landlock.
pub fn abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the documented version query: NULL attr, size 0.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, LANDLOCK_CREATE_RULESET_VERSION) };
    (v > 0).then_some(v as u32)
}

/// A Landlock ruleset being built: what it handles (so denies), then what each rule grants back.
pub struct Ruleset(OwnedFd);

impl Ruleset {
    /// A ruleset handling the filesystem rights `fs`, the network rights `net` (0 before ABI 4)
    /// and the scopes `scoped` (0 before ABI 6). The attr passed covers only the fields in use,
    /// so older kernels accept it.
    pub fn create(fs: u64, net: u64, scoped: u64) -> Result<Ruleset, Errno> {
        #[repr(C)]
        struct RulesetAttr {
            handled_access_fs: u64,
            handled_access_net: u64,
            scoped: u64,
        }
        let attr = RulesetAttr { handled_access_fs: fs, handled_access_net: net, scoped };
        let size = if scoped != 0 {
            std::mem::size_of::<RulesetAttr>()
        } else if net != 0 {
            16
        } else {
            8 // the ABI 1 layout, accepted by every version
        };
        // SAFETY: a valid attr; `size` covers only the fields in use.
        let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the kernel just returned this descriptor.
        Ok(Ruleset(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Grant `rights` beneath `parent` (an open fd, O_PATH is enough).
    pub fn allow_beneath(&self, parent: BorrowedFd<'_>, rights: u64) -> Result<(), Errno> {
        #[repr(C, packed)]
        struct PathBeneath {
            allowed_access: u64,
            parent_fd: i32,
        }
        const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;
        let rule = PathBeneath { allowed_access: rights, parent_fd: parent.as_raw_fd() };
        // SAFETY: a packed path_beneath_attr naming an open fd.
        let rc = unsafe { libc::syscall(libc::SYS_landlock_add_rule, self.0.as_raw_fd(), LANDLOCK_RULE_PATH_BENEATH, &rule as *const PathBeneath, 0u32) };
        if rc < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// Restrict the calling thread (and what it execs) to this ruleset. Needs no_new_privs (or
    /// CAP_SYS_ADMIN) already set.
    pub fn restrict_self(self) -> Result<(), Errno> {
        // SAFETY: restricting ourselves with our own ruleset fd.
        if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, self.0.as_raw_fd(), 0u32) } < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }
}

fn err(errno: i32, path: Option<&str>) -> SetupError {
    SetupError::sys(Step::ApplyLandlock, errno, path)
}

/// The rules with each path as it really is in the new root, for a root made from the host's
/// system directories: their symlinks are the host's (`/bin` -> `usr/bin`, `/etc/os-release`),
/// followed here once, by the init, after the root is built and before anything of the sandbox
/// runs. Every command and exec then opens these real paths with no symlink on the way ([`apply`]),
/// so one that an earlier exec of a long-lived sandbox made (in its overlay, a read-write bind, a
/// tmpfs) is refused, not followed. An image's symlinks are never followed: it chose them. A path
/// that cannot be opened stays as given, for [`apply`] to report.
pub fn resolved_in_root(rules: &Landlock, host_root: bool) -> Landlock {
    let real = |path: &String| -> String {
        if !host_root {
            return path.clone();
        }
        let Ok(fd) = nix::fcntl::open(path.as_str(), nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) else {
            return path.clone();
        };
        match nix::fcntl::readlink(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)).as_str()) {
            Ok(p) if p.to_str().is_some_and(|p| p.starts_with('/')) => p.to_string_lossy().into_owned(),
            _ => path.clone(),
        }
    };
    Landlock { read: rules.read.iter().map(real).collect(), write: rules.write.iter().map(real).collect(), exec: rules.exec.iter().map(real).collect() }
}

/// Restrict this process (and what it execs) to `rules`. Fails closed: no Landlock in the kernel
/// is an error, never a silent no-op. Each path is opened with no symlink on the way (the host's
/// own were resolved once: [`resolved_in_root`]): one an image holds, or one a long-lived
/// sandbox's earlier exec made, would aim the rule elsewhere (`/work -> /` grants `/` what the
/// caller gave `/work`).
pub fn apply(rules: &Landlock) -> Result<(), SetupError> {
    let Some(abi) = abi() else {
        return Err(err(libc::EOPNOTSUPP, None).with_hint(
            "this kernel has no Landlock (it needs Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK and `landlock` in the lsm= boot list); drop the landlock option or use another host",
        ));
    };
    let handled = handled_by_abi(abi);
    let ruleset = Ruleset::create(handled, 0, 0).map_err(|e| err(e as i32, None))?;
    for (path, rights) in plan_rules(rules) {
        let opened = match path.trim_end_matches('/') {
            "" => nix::fcntl::open("/", nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()),
            p => crate::sys::open_without_symlinks(p, libc::O_PATH),
        };
        let target = match opened {
            Ok(t) => t,
            // The devices are a convenience; a missing one is not the caller's mistake.
            Err(Errno::ENOENT) if DEVICES.contains(&path.as_str()) => continue,
            Err(Errno::ELOOP) => {
                return Err(err(libc::ELOOP, Some(&path)).with_hint(
                    "a landlock path must be the real path inside the sandbox, with no symlink on the way (an image's symlink, or one a sandbox made, could aim the rule at more; only the host's own, in a root made from the host's system directories, are followed, once): name where it points, e.g. /usr/lib rather than /lib on a merged-usr image",
                ))
            }
            Err(e) => return Err(err(e as i32, Some(&path)).with_hint("every landlock path must exist inside the sandbox")),
        };
        let is_dir = nix::sys::stat::fstat(&target).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(false);
        let allowed = rights & handled & if is_dir { u64::MAX } else { FILE_RIGHTS };
        ruleset.allow_beneath(target.as_fd(), allowed).map_err(|e| err(e as i32, Some(&path)))?;
    }
    ruleset.restrict_self().map_err(|e| err(e as i32, None))
}

/// The mounts (id and mount point, of mountinfo's `text`) to make noexec under rules whose exec
/// list is `exec`: each mount that holds no exec path and lies beneath none, and is not noexec
/// already. Landlock checks execve alone: a loader (`ld.so FILE`) or any mmap(PROT_EXEC) runs a
/// file it may only read, where its mount allows, such as one the command wrote to /tmp.
pub fn mounts_to_make_noexec(text: &str, exec: &[String]) -> Vec<(u64, String)> {
    let exec: Vec<&str> = exec.iter().map(|p| p.trim_end_matches('/')).map(|p| if p.is_empty() { "/" } else { p }).collect();
    let beneath = |path: &str, mount: &str| mount == "/" || path == mount || path.strip_prefix(mount).is_some_and(|rest| rest.starts_with('/'));
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(id), Some(point), Some(options)) = (fields.first().and_then(|i| i.parse().ok()), fields.get(4), fields.get(5)) else { continue };
        let point = crate::cgroup::unescape(point);
        if options.split(',').any(|o| o == "noexec") || exec.iter().any(|p| beneath(p, &point) || beneath(&point, p)) {
            continue;
        }
        out.push((id, point));
    }
    out
}

/// Make [`mounts_to_make_noexec`] so, in the sandbox's mount namespace (the init, before it drops
/// its capabilities; once for the command and every exec). A mount that its path no longer
/// reaches (another mounted over it or over a directory above it) is left: nothing can reach it
/// to run anything from it.
pub fn forbid_exec_outside(rules: &Landlock) -> Result<(), SetupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| err(e.raw_os_error().unwrap_or(libc::EIO), Some("/proc/self/mountinfo")))?;
    for (id, point) in mounts_to_make_noexec(&text, &rules.exec) {
        let fd = match nix::fcntl::open(
            point.as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
            Err(e) => return Err(err(e as i32, Some(&point))),
        };
        match crate::sys::mount_id_of(fd.as_fd()) {
            Ok(on) if on == id => {}
            Ok(_) => continue,
            Err(e) => return Err(err(e as i32, Some(&point))),
        }
        crate::sys::forbid_exec_on(fd.as_fd()).map_err(|e| err(e as i32, Some(&point)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_without_an_exec_path_become_noexec() {
        let text = "\
1 0 0:1 / / ro,nosuid,nodev,relatime - tmpfs tmpfs ro
2 1 8:1 /usr /usr ro,nosuid,nodev,relatime - ext4 /dev/vda rw
3 1 8:1 /etc /etc ro,nosuid,nodev,relatime - ext4 /dev/vda rw
4 1 0:2 / /tmp rw,nosuid,nodev,relatime - tmpfs tmpfs rw
5 1 0:3 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
6 1 8:1 /srv/job\\0401 /work\\040dir rw,nosuid,nodev,relatime - ext4 /dev/vda rw
7 2 8:1 /opt /usr/local/x ro,nosuid,nodev,relatime - ext4 /dev/vda rw
8 1 0:2 / /tmp rw,nosuid,nodev,relatime - tmpfs tmpfs rw
9 1 8:1 /usrx /usrx ro,nosuid,nodev,relatime - ext4 /dev/vda rw
";
        let exec = |paths: &[&str]| {
            mounts_to_make_noexec(text, &paths.iter().map(|p| p.to_string()).collect::<Vec<_>>()).into_iter().map(|(_, p)| p).collect::<Vec<_>>()
        };
        // "/" holds every path; /usr holds /usr/bin; /usrx is not /usr; /usr/local/x is not beneath
        // /usr/bin, but beneath /usr.
        assert_eq!(exec(&["/usr/bin/"]), ["/etc", "/tmp", "/work dir", "/usr/local/x", "/tmp", "/usrx"]);
        assert_eq!(exec(&["/usr", "/tmp/tools"]), ["/etc", "/work dir", "/usrx"]);
        assert_eq!(exec(&["/"]), Vec::<String>::new());
        // No exec path at all: nothing may run anywhere, "/" included.
        // Two mounts at one point (8 over 4) are each listed: the lower one's path reaches the
        // upper one, and forbid_exec_outside tells them apart by id.
        assert_eq!(exec(&[]), ["/", "/usr", "/etc", "/tmp", "/work dir", "/usr/local/x", "/tmp", "/usrx"]);
        assert_eq!(mounts_to_make_noexec(text, &["/usr".into()]).iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3, 4, 6, 8, 9]);
    }

    #[test]
    fn abi_negotiation() {
        assert_eq!(handled_by_abi(1) & (REFER | TRUNCATE | IOCTL_DEV), 0);
        assert_ne!(handled_by_abi(2) & REFER, 0);
        assert_ne!(handled_by_abi(3) & TRUNCATE, 0);
        assert_ne!(handled_by_abi(6) & IOCTL_DEV, 0);
        assert_ne!(handled_by_abi(1) & MAKE_BLOCK, 0);
        assert_ne!(handled_by_abi(1) & MAKE_CHAR, 0);
    }

    #[test]
    fn rules_grant_what_each_list_means() {
        let r = plan_rules(&Landlock { read: vec!["/usr".into()], write: vec!["/tmp".into()], exec: vec!["/bin".into()] });
        assert_eq!(r[0], ("/usr".into(), READ));
        assert_eq!(r[1].1 & WRITE_FILE, WRITE_FILE);
        assert_eq!(r[1].1 & EXECUTE, 0, "write does not imply exec");
        assert_eq!(r[2].1 & EXECUTE, EXECUTE);
        assert_eq!(r[2].1 & WRITE_FILE, 0);
        assert!(r.iter().any(|(p, _)| p == "/dev/null"));
        assert_eq!(READ & (MAKE_CHAR | MAKE_BLOCK), 0);
        assert_eq!(WRITE & (MAKE_CHAR | MAKE_BLOCK), 0, "no device nodes even where writing is allowed");
    }
}
