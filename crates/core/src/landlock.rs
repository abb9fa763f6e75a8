//! Landlock: filesystem access rules the command cannot lift, negotiated with the kernel's ABI.
//! Applied in the command's own process after no_new_privs and before seccomp.

use crate::error::{SetupError, Step};
use crate::spec::Landlock;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
// Handled (so denied) by every ruleset, granted by no list: no device nodes inside.
#[allow(dead_code)]
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_DIR: u64 = 1 << 7;
const MAKE_REG: u64 = 1 << 8;
const MAKE_SOCK: u64 = 1 << 9;
const MAKE_FIFO: u64 = 1 << 10;
#[allow(dead_code)]
const MAKE_BLOCK: u64 = 1 << 11;
const MAKE_SYM: u64 = 1 << 12;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

/// Rights that make sense on a file (the kernel refuses directory rights on a file rule).
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;
const READ: u64 = READ_FILE | READ_DIR;
const WRITE: u64 = READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_SYM | REFER | TRUNCATE;
const EXEC: u64 = READ | EXECUTE;

/// What the sandbox's own devices need whatever the rules say: a shell's `>/dev/null`, a tty.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts"];

/// The rights each Landlock ABI version can handle.
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

pub fn abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the documented version query: NULL attr, size 0.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, LANDLOCK_CREATE_RULESET_VERSION) };
    (v > 0).then_some(v as u32)
}

fn err(errno: i32, path: Option<&str>) -> SetupError {
    SetupError::sys(Step::ApplyLandlock, errno, path)
}

/// Restrict this process (and what it execs) to `rules`. Fails closed: no Landlock in the kernel
/// is an error, never a silent no-op.
pub fn apply(rules: &Landlock) -> Result<(), SetupError> {
    let Some(abi) = abi() else {
        return Err(err(libc::EOPNOTSUPP, None).with_hint(
            "this kernel has no Landlock (it needs Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK and `landlock` in the lsm= boot list); drop the landlock option or use another host",
        ));
    };
    let handled = handled_by_abi(abi);
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
    }
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    let attr = RulesetAttr { handled_access_fs: handled };
    // SAFETY: a valid attr of the size we pass (the ABI 1 layout, accepted by every version).
    let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, std::mem::size_of::<RulesetAttr>(), 0u32) };
    if fd < 0 {
        return Err(err(nix::errno::Errno::last() as i32, None));
    }
    // SAFETY: the kernel just returned this descriptor.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for (path, rights) in plan_rules(rules) {
        let target = match nix::fcntl::open(path.as_str(), nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) {
            Ok(t) => t,
            // The devices are a convenience; a missing one is not the caller's mistake.
            Err(nix::errno::Errno::ENOENT) if DEVICES.contains(&path.as_str()) => continue,
            Err(e) => return Err(err(e as i32, Some(&path)).with_hint("every landlock path must exist inside the sandbox")),
        };
        let is_dir = nix::sys::stat::fstat(&target).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(false);
        let allowed = rights & handled & if is_dir { u64::MAX } else { FILE_RIGHTS };
        let rule = PathBeneath { allowed_access: allowed, parent_fd: target.as_raw_fd() };
        const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;
        // SAFETY: a packed path_beneath_attr with an open O_PATH fd.
        let rc = unsafe { libc::syscall(libc::SYS_landlock_add_rule, ruleset.as_raw_fd(), LANDLOCK_RULE_PATH_BENEATH, &rule as *const PathBeneath, 0u32) };
        if rc < 0 {
            return Err(err(nix::errno::Errno::last() as i32, Some(&path)));
        }
    }
    // SAFETY: restricting ourselves with our own ruleset fd.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) } < 0 {
        return Err(err(nix::errno::Errno::last() as i32, None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
