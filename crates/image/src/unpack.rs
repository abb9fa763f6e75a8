//! A tar stream applied to a [`Tree`]: every entry checked, then created by the tree's `*at`
//! operations. Used for a plain rootfs tarball and for each layer of an image.

use crate::error::{self, Result, SetupError, Step};
use crate::names::{self, Trick, Whiteout};
use crate::sys::cstring;
use crate::tree::{Attrs, HardlinkOutcome, Tree, TreeError};
use serde::Serialize;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::AsFd;

/// The longest path Linux takes (PATH_MAX, its NUL included).
const PATH_MAX: usize = 4096;

/// Whose ids the files get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// The uid/gid numbers recorded in the archive (needs root).
    Archive,
    /// The caller's own ids (the only choice without root; the sandbox maps the caller to root).
    Caller,
}

/// What happens to character and block devices and fifos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Specials {
    Refuse,
    Skip,
}

/// What `.wh.` entries mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// A plain tarball: they are ordinary files.
    Keep,
    /// Image layers merged into one tree: they delete what lower layers made.
    Apply,
    /// One image layer per directory, for overlayfs: they become overlayfs whiteouts (char 0/0
    /// devices) and opaque-directory xattrs (`user.overlay.opaque`, and `trusted.overlay.opaque`
    /// when `trusted` is true, i.e. as root).
    Overlay { trusted: bool },
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub ownership: Ownership,
    pub specials: Specials,
    pub whiteouts: Whiteouts,
    pub bounds: Bounds,
}

/// What the caller lets one call write, all layers together (`maxBytes`, `maxEntries`): a few KiB
/// of zstd hold gigabytes of one repeated byte, and a gzip of millions of empty files takes a
/// filesystem's inodes. None: no bound but the filesystem's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Bytes of file content (each regular file's size, holes included), and what the importer
    /// writes of its own (layers.json).
    pub bytes: Option<u64>,
    /// Entries read from the archive, the directories their paths imply and the importer's own.
    pub entries: Option<u64>,
}

/// Room in a compressed image archive's decompressed copy for what is not file content: each
/// entry's header and padding (up to 1536 bytes with a PAX record), manifests and configs.
const COPY_PER_ENTRY: u64 = 2048;
const COPY_SLACK: u64 = 64 << 20;

impl Bounds {
    /// The largest decompressed copy of a compressed image archive that can hold no more than
    /// these bounds allow: twice the content (its layers' own tar headers and padding count there
    /// too), room per entry, and some slack; None without a bytes bound.
    pub fn copy_cap(&self) -> Option<u64> {
        let per_entry = self.entries.map_or(0, |n| n.saturating_mul(COPY_PER_ENTRY));
        self.bytes.map(|b| b.saturating_mul(2).saturating_add(per_entry).saturating_add(COPY_SLACK))
    }

    /// The call's error once `count` (entries read and directories made) passes `maxEntries`.
    pub(crate) fn check_entries(&self, count: u64, name: &str) -> Result<()> {
        match self.entries {
            Some(most) if count > most => Err(SetupError {
                message: format!(
                    "at entry '{name}', the call has read or made more than the {most} entries maxEntries (isolate rootfs --max-entries) allows (the directories entries' paths imply count too)"
                ),
                ..SetupError::sys(Step::CheckEntry, libc::EFBIG, Some(name))
            }
            .with_hint("the archive (all layers together) holds more entries than that bound: raise it if the archive is one you expect to be this large")),
            _ => Ok(()),
        }
    }

    /// The call's error if `n` more bytes would pass `maxBytes`.
    pub(crate) fn check_bytes(&self, written: u64, n: u64, name: &str) -> Result<()> {
        match self.bytes {
            Some(most) if written.saturating_add(n) > most => Err(SetupError {
                message: format!("writing '{name}' would pass the {most} bytes of file content maxBytes (isolate rootfs --max-size) allows"),
                ..SetupError::sys(Step::WriteEntry, libc::EFBIG, Some(name))
            }
            .with_hint("the archive (all layers together, holes and runs of zeros at their size) holds more file content than that bound: raise it if the archive is one you expect to be this large")),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Every entry read (including refused-to-matter ones such as skipped specials).
    pub entries: u64,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// `.wh.` entries applied (merged) or converted (layers).
    pub whiteouts: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Regular files whose setuid/setgid bits were dropped.
    pub setid_dropped: u64,
    /// Special files skipped (with `Specials::Skip`).
    pub skipped: u64,
    /// Directories made that no entry named (an entry's missing parents, the importer's own
    /// `layers/<n>`): `maxEntries` counts them with the entries.
    #[serde(rename = "impliedDirectories")]
    pub implied_dirs: u64,
}

/// How often the copy loop reports progress while one large file is written.
const TICK_BYTES: u64 = 1 << 20;

/// Unpack every entry of the tar stream `r` into `tree`. `tick` is called after each entry and
/// every MiB of file data (the caller throttles).
pub fn unpack(r: &mut dyn Read, tree: &mut Tree, policy: &Policy, stats: &mut Stats, tick: &mut dyn FnMut(&Stats)) -> Result<()> {
    let mut archive = tar::Archive::new(r);
    let entries = archive.entries().map_err(|e| error::io(Step::ReadArchive, &e, "", "reading the archive"))?;
    // Paths this stream created: a whiteout only removes what lower layers made.
    let mut created: HashSet<Vec<u8>> = HashSet::new();
    let track = policy.whiteouts == Whiteouts::Apply;
    let mut buf = vec![0u8; 256 << 10];
    let mut last_name = String::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            let before = (!last_name.is_empty()).then(|| format!("reading the archive after entry '{last_name}'"));
            let mut err = error::tar_header(Step::ReadArchive, &e, "", before.as_deref());
            err.path = None;
            err
        })?;
        let raw = entry.path_bytes().into_owned();
        if raw.len() > PATH_MAX {
            // Named in part: the whole name (any length a GNU or PAX header gives) would be the report.
            let shown = names::printable(&String::from_utf8_lossy(&raw[..200]), 200);
            return Err(SetupError::new(
                Step::CheckEntry,
                format!("entry '{shown}' has a name of {} bytes, more than a path may have ({PATH_MAX})", raw.len()),
            )
            .with_path(shown));
        }
        let name = names::lossy(&raw);
        last_name.clone_from(&name);
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        stats.entries += 1;
        // The previous entry's missing parents too (at most one entry's are made past the bound).
        stats.implied_dirs += tree.take_implied();
        policy.bounds.check_entries(stats.entries + stats.implied_dirs, &name)?;
        let refuse = |msg: String| SetupError::new(Step::CheckEntry, msg).with_path(&name);
        let comps = names::components(&raw).map_err(|t| refuse(t.describe(&format!("entry '{name}'"))))?;
        // A plain unpack (an image's layers have their whiteouts applied, or kept as overlayfs's)
        // of an image archive would leave its manifest and layer blobs as files: nothing to run.
        if policy.whiteouts == Whiteouts::Keep && matches!(comps.as_slice(), [b"manifest.json" | b"oci-layout"]) {
            return Err(refuse(format!(
                "entry '{name}': this is an image archive ('docker save', or an OCI layout packed as a tar), not a root filesystem tarball"
            ))
            .with_hint("importImage (isolate rootfs import IMAGE DIR) turns an image into a root filesystem"));
        }
        let header = entry.header();
        let bad_header = |e: std::io::Error| error::io(Step::ReadArchive, &e, &name, "a corrupt header");
        let mode = header.mode().map_err(bad_header)? & 0o7777;
        let (uid, gid) = (header.uid().map_err(bad_header)?, header.gid().map_err(bad_header)?);
        let mut mtime = header.mtime().map_err(bad_header)? as i64;
        if let Some(t) = pax_mtime(&mut entry) {
            mtime = t;
        }
        // Checked only where they are given to chown: the caller's own ids ignore them.
        let owner = match policy.ownership {
            Ownership::Archive => Some((id(uid, &name)?, id(gid, &name)?)),
            Ownership::Caller => None,
        };
        let attrs = Attrs { mode, owner, mtime: Some(mtime) };
        let fail = |e: TreeError| tree_error(e, &name);

        if policy.whiteouts != Whiteouts::Keep {
            if let Some(w) = comps.last().and_then(|leaf| names::whiteout(leaf)) {
                apply_whiteout(tree, policy, &comps, w, &created, &name)?;
                stats.whiteouts += 1;
                tick(stats);
                continue;
            }
        }
        if comps.is_empty() && !kind.is_dir() {
            return Err(refuse(Trick::Empty.describe(&format!("entry '{name}'"))));
        }

        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                // Set-id bits are dropped from every regular file, whoever owns it. Inside a
                // sandbox they grant nothing (no_new_privs, nosuid binds), but DIR is on the host:
                // kept, an archive's 0:0 mode 4755 entry would be a setuid-root program there
                // for any local user who can reach DIR. A directory keeps its setgid bit: it only
                // makes new entries take the directory's group, and the kernel strips setgid from
                // a file created there by someone outside that group.
                let mut mode = mode;
                if mode & 0o6000 != 0 {
                    mode &= !0o6000;
                    stats.setid_dropped += 1;
                }
                let fd = tree.create_file(&comps).map_err(fail)?;
                let mut file = std::fs::File::from(fd);
                let mut since_tick = 0u64;
                // Runs of zeros (a sparse entry's holes, or a compressed bomb of zeros) are skipped,
                // not written: the file keeps its size, and the disk holds only what is data.
                let (mut pos, mut skipped) = (0u64, false);
                loop {
                    crate::digest::check_abort().map_err(|e| error::io(Step::ReadArchive, &e, &name, "reading the entry's data"))?;
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(error::io(Step::ReadArchive, &e, &name, "reading the entry's data")),
                    };
                    policy.bounds.check_bytes(stats.bytes, n as u64, &name)?;
                    pos += n as u64;
                    skipped = buf[..n].iter().all(|b| *b == 0);
                    if skipped {
                        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(pos)).map_err(|e| error::io(Step::WriteEntry, &e, &name, "seek"))?;
                    } else {
                        file.write_all(&buf[..n]).map_err(|e| error::io(Step::WriteEntry, &e, &name, "write"))?;
                    }
                    stats.bytes += n as u64;
                    since_tick += n as u64;
                    if since_tick >= TICK_BYTES {
                        since_tick = 0;
                        tick(stats);
                    }
                }
                if skipped {
                    // A file that ends in a hole: its size is where the data would have ended.
                    file.set_len(pos).map_err(|e| error::io(Step::WriteEntry, &e, &name, "set the size"))?;
                }
                tree.finish_file(file.as_fd(), &Attrs { mode, ..attrs }).map_err(fail)?;
                stats.files += 1;
            }
            T::Directory => {
                tree.make_dir(&comps, attrs).map_err(fail)?;
                stats.directories += 1;
            }
            T::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(refuse(format!("symlink '{name}' has an empty or invalid target")));
                }
                tree.symlink(&comps, &cstring(&target), &attrs).map_err(fail)?;
                stats.symlinks += 1;
            }
            T::Link => {
                let target_raw = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let target_name = names::lossy(&target_raw);
                let target = names::components(&target_raw).map_err(|t| {
                    let what = format!("the target '{target_name}' of hardlink '{name}'");
                    refuse(match t {
                        Trick::Absolute => format!("hardlink '{name}' points to the absolute path '{target_name}' (hardlink-outside trick): a hardlink may only point to an earlier entry of the archive"),
                        Trick::DotDot => format!("hardlink '{name}' points to '{target_name}', which leaves the target directory with '..' (hardlink-outside trick)"),
                        t => t.describe(&what),
                    })
                })?;
                if target.is_empty() {
                    return Err(refuse(format!("hardlink '{name}' points to the target directory itself")));
                }
                match tree.hardlink(&comps, &target) {
                    Ok(HardlinkOutcome::Linked) => {}
                    Ok(HardlinkOutcome::TargetMissing) => {
                        return Err(SetupError::new(
                            Step::CheckEntry,
                            format!(
                                "hardlink '{name}' points to '{target_name}', which does not exist (a hardlink must point to an earlier entry of the archive)"
                            ),
                        )
                        .with_path(&name))
                    }
                    Ok(HardlinkOutcome::TargetIsDir) => return Err(refuse(format!("hardlink '{name}' points to the directory '{target_name}'"))),
                    Ok(HardlinkOutcome::TargetBehindSymlink(p)) => {
                        let via = names::lossy(&p);
                        return Err(refuse(format!(
                            "hardlink '{name}' points to '{target_name}' through the symlink '{via}' (symlink trick): nothing is ever resolved through a symlink while unpacking"
                        )));
                    }
                    Err(e) => return Err(fail(e)),
                }
                stats.hardlinks += 1;
            }
            T::Char | T::Block | T::Fifo => {
                let what = match kind {
                    T::Char => "a character device",
                    T::Block => "a block device",
                    _ => "a fifo",
                };
                match policy.specials {
                    Specials::Skip => {
                        stats.skipped += 1;
                        tick(stats);
                        continue;
                    }
                    Specials::Refuse => {
                        return Err(refuse(format!("entry '{name}' is {what} (device-node trick): special files are refused")).with_hint(
                            "a sandbox gets its own minimal /dev; to unpack such an archive without its special files, pass specialFiles: 'skip' (isolate rootfs ... --skip-special)",
                        ))
                    }
                }
            }
            other => {
                let byte = other.as_byte();
                let shown = if byte.is_ascii_graphic() { format!("'{}'", byte as char) } else { format!("byte {byte}") };
                return Err(refuse(format!("entry '{name}' has a type this unpacker does not handle ({shown})"))
                    .with_hint("a rootfs archive holds files, directories, symlinks, hard links and (skipped or refused) special files; one with other kinds (a tape's volume label, a multi-volume part) is no rootfs: make it again with ordinary tar"));
            }
        }
        if track {
            created.insert(names::join(&comps));
        }
        tick(stats);
    }
    stats.implied_dirs += tree.take_implied();
    policy.bounds.check_entries(stats.entries + stats.implied_dirs, &last_name)
}

fn id(v: u64, name: &str) -> Result<u32> {
    // 2^32-1 is no id: chown(2) reads it as "leave as it is" (the file would stay the unpacker's).
    u32::try_from(v).ok().filter(|id| *id != u32::MAX).ok_or_else(|| {
        SetupError::new(Step::CheckEntry, format!("entry '{name}' has an owner id that is no id: beyond 32 bits, or 4294967295 ({v})")).with_path(name)
    })
}

/// A PAX `mtime` (seconds, maybe with a fraction) overrides the header's.
fn pax_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> Option<i64> {
    let exts = entry.pax_extensions().ok()??;
    for ext in exts.flatten() {
        if ext.key_bytes() == b"mtime" {
            let v = std::str::from_utf8(ext.value_bytes()).ok()?;
            let secs = v.split('.').next()?;
            return secs.parse().ok();
        }
    }
    None
}

pub fn tree_error(e: TreeError, name: &str) -> SetupError {
    match e {
        TreeError::Symlink(p) => {
            let via = names::lossy(&p);
            SetupError::new(
                Step::CheckEntry,
                format!("entry '{name}' would be written through the symlink '{via}' (symlink-then-file trick): nothing is ever written through a symlink while unpacking"),
            )
            .with_path(name)
        }
        TreeError::NotDir(p) => {
            let mut e =
                SetupError::new(Step::WriteEntry, format!("entry '{name}' needs '{}' to be a directory, and it is not", names::lossy(&p))).with_path(name);
            e.errno = Some("ENOTDIR".into());
            e
        }
        // The unpacker may write only beneath its target (Landlock): a directory of the tree that
        // another process moved out of it meanwhile is out of reach.
        TreeError::Sys(errno @ nix::errno::Errno::EACCES, what) => error::sys(Step::WriteEntry, errno, name, what)
            .with_hint("the unpacker writes only beneath its target directory: was a directory of the tree moved out of it, or made unwritable, while it ran?"),
        TreeError::Sys(errno, what) => error::sys(Step::WriteEntry, errno, name, what),
    }
}

fn apply_whiteout(tree: &mut Tree, policy: &Policy, comps: &[&[u8]], w: Whiteout<'_>, created: &HashSet<Vec<u8>>, name: &str) -> Result<()> {
    let parent = &comps[..comps.len() - 1];
    let fail = |e: TreeError| tree_error(e, name);
    match (w, policy.whiteouts) {
        (Whiteout::AufsMeta, _) | (_, Whiteouts::Keep) => Ok(()),
        (Whiteout::Remove(target), _) if target.is_empty() || target == b"." || target == b".." => {
            Err(SetupError::new(Step::CheckEntry, format!("whiteout '{name}' names no file, or '.' or '..' (path traversal trick)")).with_path(name))
        }
        (Whiteout::Remove(target), Whiteouts::Apply) => {
            let mut path: Vec<&[u8]> = parent.to_vec();
            path.push(target);
            if !created.contains(&names::join(&path)) {
                tree.remove(&path).map_err(fail)?;
            }
            Ok(())
        }
        (Whiteout::Opaque, Whiteouts::Apply) => tree.clear_dir(parent, &|p| created.contains(p)).map_err(fail),
        (Whiteout::Remove(target), Whiteouts::Overlay { .. }) => {
            let mut path: Vec<&[u8]> = parent.to_vec();
            path.push(target);
            tree.mknod(&path, libc::S_IFCHR, libc::makedev(0, 0)).map_err(|e| match e {
                TreeError::Sys(nix::errno::Errno::EPERM, _) => {
                    error::sys(Step::WriteEntry, nix::errno::Errno::EPERM, name, "mknod of an overlayfs whiteout (char 0/0)")
                        .with_hint("creating whiteouts without root needs Linux 5.8 or newer; use layout 'flat' instead")
                }
                e => fail(e),
            })
        }
        (Whiteout::Opaque, Whiteouts::Overlay { trusted }) => {
            let mut xattrs: Vec<(&std::ffi::CStr, &[u8])> = vec![(c"user.overlay.opaque", b"y")];
            if trusted {
                xattrs.push((c"trusted.overlay.opaque", b"y"));
            }
            let results = tree.set_dir_xattrs(parent, &xattrs).map_err(fail)?;
            if let Some(errno) = results[0] {
                return Err(error::sys(Step::WriteEntry, errno, name, "setting user.overlay.opaque on an opaque directory")
                    .with_hint("the filesystem of the target directory must support user extended attributes (ext4, xfs, btrfs, tmpfs on Linux 6.6+); or use layout 'flat'"));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_id_is_one_chown_takes_as_an_id() {
        assert_eq!(id(0, "a").unwrap(), 0);
        assert_eq!(id(u64::from(u32::MAX) - 1, "a").unwrap(), u32::MAX - 1);
        for no_id in [u64::from(u32::MAX), 1 << 40] {
            let e = id(no_id, "etc/x").unwrap_err();
            assert_eq!((e.step, e.path.as_deref()), (Step::CheckEntry, Some("etc/x")), "{no_id}");
        }
    }

    #[test]
    fn bounds_let_a_call_write_up_to_them_and_refuse_what_passes_them() {
        let b = Bounds { bytes: Some(100), entries: Some(2) };
        assert!(b.check_bytes(60, 40, "f").is_ok(), "exactly the bound");
        let e = b.check_bytes(60, 41, "f").unwrap_err();
        assert_eq!((e.step, e.errno.as_deref(), e.path.as_deref()), (Step::WriteEntry, Some("EFBIG"), Some("f")));
        assert!(e.message.contains("maxBytes (isolate rootfs --max-size)") && e.hint.is_some());
        assert!(b.check_entries(2, "g").is_ok());
        let e = b.check_entries(3, "g").unwrap_err();
        assert_eq!((e.step, e.errno.as_deref()), (Step::CheckEntry, Some("EFBIG")));
        assert!(e.message.contains("maxEntries (isolate rootfs --max-entries)"));
        let none = Bounds::default();
        assert!(none.check_bytes(u64::MAX - 1, 1 << 20, "f").is_ok() && none.check_entries(u64::MAX, "g").is_ok());
        assert_eq!(none.copy_cap(), None);
        assert_eq!(Bounds { bytes: Some(1 << 20), entries: None }.copy_cap(), Some((2 << 20) + COPY_SLACK));
        assert_eq!(b.copy_cap(), Some(200 + 2 * COPY_PER_ENTRY + COPY_SLACK));
        assert_eq!(Bounds { bytes: Some(u64::MAX), entries: Some(u64::MAX) }.copy_cap(), Some(u64::MAX));
    }
}
