//! The unpacker confines itself before it reads a byte of the archive: Landlock allows writing
//! only beneath the target directory (and reading beneath an image directory); the archive itself
//! is already open. This is defence in depth behind the fd-relative writes of `tree`: a bug there,
//! or in the C decompressors, still cannot reach the rest of the filesystem. No TCP either, and
//! (ABI 6) no signals or abstract sockets outside this process.
//!
//! Best effort: without Landlock (or with ABI 1, which refuses hard links across directories) the
//! unpack proceeds unconfined and says so in its report.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const WRITE_FILE: u64 = 1 << 1;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_DIR: u64 = 1 << 7;
const MAKE_REG: u64 = 1 << 8;
const MAKE_SYM: u64 = 1 << 12;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;

/// Every filesystem right a given ABI knows (ABI 1: bits 0..=12; 2: +REFER; 3: +TRUNCATE;
/// 5: +IOCTL_DEV).
fn fs_rights(abi: u32) -> u64 {
    let mut r = (1u64 << 13) - 1;
    if abi >= 2 {
        r |= REFER;
    }
    if abi >= 3 {
        r |= TRUNCATE;
    }
    if abi >= 5 {
        r |= 1 << 15;
    }
    r
}

/// What the target directory needs: files, directories, symlinks, hard links, removal; char
/// devices only for overlayfs whiteouts. Never execute, sockets, fifos, block devices or ioctls.
fn target_rights(abi: u32, whiteouts: bool) -> u64 {
    let mut r = READ_FILE | READ_DIR | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | REFER | TRUNCATE;
    if whiteouts {
        r |= MAKE_CHAR;
    }
    r & fs_rights(abi)
}

fn abi() -> Option<u32> {
    // SAFETY: the documented version query (NULL attr, size 0, LANDLOCK_CREATE_RULESET_VERSION).
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    (v > 0).then_some(v as u32)
}

/// Confine this process. Returns how, for the report: `landlock (ABI n)` or `none: why`.
pub fn confine(target: BorrowedFd<'_>, read_beneath: Option<BorrowedFd<'_>>, whiteouts: bool) -> String {
    match apply(target, read_beneath, whiteouts) {
        Ok(abi) => format!("landlock (ABI {abi})"),
        Err(why) => format!("none: {why}"),
    }
}

fn apply(target: BorrowedFd<'_>, read_beneath: Option<BorrowedFd<'_>>, whiteouts: bool) -> Result<u32, String> {
    let abi = abi().ok_or("this kernel has no Landlock")?;
    if abi < 2 {
        return Err("Landlock ABI 1 refuses hard links across directories".into());
    }
    #[repr(C)]
    struct RulesetAttr {
        fs: u64,
        net: u64,
        scoped: u64,
    }
    #[repr(C, packed)]
    struct PathBeneath {
        allowed: u64,
        fd: i32,
    }
    const NET_BIND_TCP: u64 = 1 << 0;
    const NET_CONNECT_TCP: u64 = 1 << 1;
    const SCOPE_ABSTRACT_UNIX: u64 = 1 << 0;
    const SCOPE_SIGNAL: u64 = 1 << 1;
    let attr = RulesetAttr {
        fs: fs_rights(abi),
        net: if abi >= 4 { NET_BIND_TCP | NET_CONNECT_TCP } else { 0 },
        scoped: if abi >= 6 { SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL } else { 0 },
    };
    let size = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: a valid attr; `size` covers only the fields this ABI knows.
    let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
    if fd < 0 {
        return Err(format!("landlock_create_ruleset: {}", nix::errno::Errno::last().desc()));
    }
    // SAFETY: the kernel just returned this descriptor.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut rules = vec![(target, target_rights(abi, whiteouts))];
    if let Some(r) = read_beneath {
        rules.push((r, READ_FILE | READ_DIR));
    }
    for (fd, allowed) in rules {
        let rule = PathBeneath { allowed, fd: fd.as_raw_fd() };
        // SAFETY: a packed path_beneath_attr naming an open fd.
        let rc = unsafe { libc::syscall(libc::SYS_landlock_add_rule, ruleset.as_raw_fd(), 1u32, &rule as *const PathBeneath, 0u32) };
        if rc < 0 {
            return Err(format!("landlock_add_rule: {}", nix::errno::Errno::last().desc()));
        }
    }
    // SAFETY: prctl and landlock_restrict_self on this process with our own ruleset.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(format!("no_new_privs: {}", nix::errno::Errno::last().desc()));
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) != 0 {
            return Err(format!("landlock_restrict_self: {}", nix::errno::Errno::last().desc()));
        }
    }
    Ok(abi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_follow_the_abi_and_the_mode() {
        assert_eq!(target_rights(2, false) & TRUNCATE, 0);
        assert_ne!(target_rights(3, false) & TRUNCATE, 0);
        assert_eq!(target_rights(6, false) & MAKE_CHAR, 0, "no devices unless whiteouts are made");
        assert_ne!(target_rights(6, true) & MAKE_CHAR, 0);
        assert_eq!(target_rights(6, true) & (1 << 0), 0, "never execute");
        assert_eq!(target_rights(6, true) & ((1 << 9) | (1 << 10) | (1 << 11)), 0, "no sockets, fifos, block devices");
    }
}
