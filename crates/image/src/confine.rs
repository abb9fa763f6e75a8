//! The unpacker confines itself before it reads a byte of the archive: Landlock allows writing
//! only beneath the target directory (and reading beneath an image directory); the archive itself
//! is already open. This is defence in depth behind the fd-relative writes of `tree`: a bug there,
//! or in the C decompressors, still cannot reach the rest of the filesystem. No TCP either, and
//! (ABI 6) no signals or abstract sockets outside this process.
//!
//! Best effort: without Landlock (or with ABI 1, which refuses hard links across directories) the
//! unpack proceeds unconfined and says so in its report.

use isolate_core::landlock::{
    self, Ruleset, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SYM, NET_BIND_TCP, NET_CONNECT_TCP, READ_DIR, READ_FILE, REFER, REMOVE_DIR, REMOVE_FILE,
    SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL, TRUNCATE, WRITE_FILE,
};
use std::os::fd::BorrowedFd;

/// What the target directory needs: files, directories, symlinks, hard links, removal; char
/// devices only for overlayfs whiteouts. Never execute, sockets, fifos, block devices or ioctls.
fn target_rights(abi: u32, whiteouts: bool) -> u64 {
    let mut r = READ_FILE | READ_DIR | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | REFER | TRUNCATE;
    if whiteouts {
        r |= MAKE_CHAR;
    }
    r & landlock::handled_by_abi(abi)
}

/// Confine this process. Returns how, for the report: `landlock (ABI n)` or `none: why`.
pub fn confine(target: BorrowedFd<'_>, read_beneath: Option<BorrowedFd<'_>>, whiteouts: bool) -> String {
    match apply(target, read_beneath, whiteouts) {
        Ok(abi) => format!("landlock (ABI {abi})"),
        Err(why) => format!("none: {why}"),
    }
}

fn apply(target: BorrowedFd<'_>, read_beneath: Option<BorrowedFd<'_>>, whiteouts: bool) -> Result<u32, String> {
    let abi = landlock::abi().ok_or("this kernel has no Landlock")?;
    if abi < 2 {
        return Err("Landlock ABI 1 refuses hard links across directories".into());
    }
    let net = if abi >= 4 { NET_BIND_TCP | NET_CONNECT_TCP } else { 0 };
    let scoped = if abi >= 6 { SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL } else { 0 };
    let ruleset = Ruleset::create(landlock::handled_by_abi(abi), net, scoped).map_err(|e| format!("landlock_create_ruleset: {}", e.desc()))?;
    let mut rules = vec![(target, target_rights(abi, whiteouts))];
    if let Some(r) = read_beneath {
        rules.push((r, READ_FILE | READ_DIR));
    }
    for (fd, allowed) in rules {
        ruleset.allow_beneath(fd, allowed).map_err(|e| format!("landlock_add_rule: {}", e.desc()))?;
    }
    // SAFETY: prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", nix::errno::Errno::last().desc()));
    }
    ruleset.restrict_self().map_err(|e| format!("landlock_restrict_self: {}", e.desc()))?;
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
        assert_eq!(target_rights(6, true) & landlock::EXECUTE, 0, "never execute");
        assert_eq!(
            target_rights(6, true) & (landlock::MAKE_SOCK | landlock::MAKE_FIFO | landlock::MAKE_BLOCK | landlock::IOCTL_DEV),
            0,
            "no sockets, fifos, block devices, ioctls"
        );
    }
}
