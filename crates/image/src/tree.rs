//! The target directory as an fd, and every write into it made relative to that fd.
//!
//! A parent directory is found with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` relative to the root fd, or, where openat2 is missing or has to explain
//! a failure, by a walk that opens one component at a time with `O_NOFOLLOW | O_DIRECTORY`. Either
//! way no symlink is ever followed, whoever made it, and no path is ever built by string
//! concatenation and opened. The last component is then created with `O_CREAT | O_EXCL |
//! O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat` or `mknodat`, which never follow it either.
//!
//! Directories are created 0700 and get their final mode, owner and mtime in [`Tree::finish`],
//! deepest first: a directory the archive makes read-only can still be filled, and its mtime is
//! not disturbed by the entries written into it afterwards.

use crate::sys::{self, cstring, SysResult};
use nix::errno::Errno;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

/// Why an operation failed, before it is given the entry's name.
#[derive(Debug)]
pub enum TreeError {
    /// The path runs through this symlink (the components up to and including it).
    Symlink(Vec<u8>),
    /// This component exists and is not a directory.
    NotDir(Vec<u8>),
    /// A syscall failed: errno, what it was doing.
    Sys(Errno, &'static str),
}

pub type TreeResult<T> = std::result::Result<T, TreeError>;

fn sys_err(what: &'static str) -> impl FnOnce(Errno) -> TreeError {
    move |e| TreeError::Sys(e, what)
}

/// The final attributes of an entry. `owner` None leaves the caller's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    pub mtime: Option<i64>,
}

/// Directories made implicitly (a file whose parent has no entry of its own) end up like this.
const IMPLICIT_DIR: Attrs = Attrs { mode: 0o755, owner: None, mtime: None };

pub struct Tree {
    root: OwnedFd,
    /// Cleared after the first ENOSYS/EPERM from openat2 (old kernels, old container profiles).
    openat2: bool,
    /// The last parent resolved, by its canonical path: archives write many entries in a row into
    /// one directory. Dropped whenever a directory is removed.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories whose attributes [`Tree::finish`] applies, by canonical path.
    dirs: HashMap<Vec<u8>, Attrs>,
    /// The root keeps its own owner, mode and times, whatever the archive's `./` says.
    keep_root: bool,
    /// Directories made for paths that had none yet, since [`Tree::take_implied`] last asked.
    implied: u64,
}

impl Tree {
    /// `root` is the target directory, opened by the caller (any open mode; O_PATH is enough).
    pub fn new(root: OwnedFd) -> Tree {
        Tree { root, openat2: true, cache: None, dirs: HashMap::new(), keep_root: false, implied: 0 }
    }

    /// How many directories were made for paths that had none (an entry's missing parents) since
    /// the last call: `maxEntries` counts them, as each takes an inode as an entry does.
    pub fn take_implied(&mut self) -> u64 {
        std::mem::take(&mut self.implied)
    }

    /// The root is the caller's directory, perhaps one that was there before: an archive's `./`
    /// entry must not give it another owner or mode (0777, set-id bits) than the caller gave it.
    pub fn keep_root_attrs(mut self) -> Tree {
        self.keep_root = true;
        self
    }

    /// An O_PATH fd on the directory `comps` (the root when empty). With `create`, missing
    /// directories are made (and remembered for [`Tree::finish`]).
    pub fn dir(&mut self, comps: &[&[u8]], create: bool) -> TreeResult<Rc<OwnedFd>> {
        let key = crate::names::join(comps);
        if let Some((k, fd)) = &self.cache {
            if *k == key {
                return Ok(fd.clone());
            }
        }
        let fd = Rc::new(self.resolve(comps, &key, create)?);
        self.cache = Some((key, fd.clone()));
        Ok(fd)
    }

    fn resolve(&mut self, comps: &[&[u8]], key: &[u8], create: bool) -> TreeResult<OwnedFd> {
        if comps.is_empty() {
            return sys::dup(self.root.as_fd()).map_err(sys_err("dup"));
        }
        if self.openat2 {
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            match sys::openat2(self.root.as_fd(), &cstring(key), flags, sys::resolve_flags()) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOSYS | Errno::EPERM | Errno::EINVAL | Errno::E2BIG) => self.openat2 = false,
                // ENOENT, ELOOP, ENOTDIR...: the walk creates what is missing or says what is wrong.
                Err(_) => {}
            }
        }
        self.walk(comps, create)
    }

    /// One component at a time, never following a symlink.
    fn walk(&mut self, comps: &[&[u8]], create: bool) -> TreeResult<OwnedFd> {
        let mut cur = sys::dup(self.root.as_fd()).map_err(sys_err("dup"))?;
        for (i, c) in comps.iter().enumerate() {
            let name = cstring(c);
            let mut made = false;
            loop {
                match sys::openat(cur.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
                    Ok(fd) => {
                        cur = fd;
                        break;
                    }
                    Err(Errno::ENOENT) if create && !made => {
                        match sys::mkdirat(cur.as_fd(), &name, 0o700) {
                            Ok(()) => {
                                self.dirs.entry(crate::names::join(&comps[..=i])).or_insert(IMPLICIT_DIR);
                                self.implied += 1;
                            }
                            Err(Errno::EEXIST) => {}
                            Err(e) => return Err(TreeError::Sys(e, "mkdirat")),
                        }
                        made = true;
                    }
                    Err(Errno::ENOTDIR | Errno::ELOOP) => {
                        let prefix = crate::names::join(&comps[..=i]);
                        return match sys::lstatat(cur.as_fd(), &name) {
                            Ok(st) if sys::is_symlink(&st) => Err(TreeError::Symlink(prefix)),
                            _ => Err(TreeError::NotDir(prefix)),
                        };
                    }
                    Err(e) => return Err(TreeError::Sys(e, "openat")),
                }
            }
        }
        Ok(cur)
    }

    /// The attributes [`Tree::finish`] gives the directory `comps`, when an entry set them.
    pub fn dir_attrs(&self, comps: &[&[u8]]) -> Option<Attrs> {
        self.dirs.get(&crate::names::join(comps)).copied()
    }

    /// The parent fd and the leaf name of `comps` (which must not be empty).
    pub fn parent(&mut self, comps: &[&[u8]], create: bool) -> TreeResult<(Rc<OwnedFd>, CString)> {
        let (leaf, parent) = comps.split_last().expect("a leaf");
        Ok((self.dir(parent, create)?, cstring(leaf)))
    }

    /// Remove whatever is at `name` (recursively for a directory). Returns whether it existed.
    pub fn remove_at(&mut self, parent: BorrowedFd<'_>, name: &CStr) -> TreeResult<bool> {
        let st = match sys::lstatat(parent, name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(TreeError::Sys(e, "fstatat")),
        };
        if sys::is_dir(&st) {
            self.cache = None;
            remove_tree(parent, name).map_err(sys_err("remove directory"))?;
        } else {
            sys::unlinkat(parent, name, false).map_err(sys_err("unlinkat"))?;
        }
        Ok(true)
    }

    /// Make room for a new non-directory at `name`: whatever is there goes.
    fn clear_for(&mut self, parent: BorrowedFd<'_>, name: &CStr) -> TreeResult<()> {
        self.remove_at(parent, name).map(|_| ())
    }

    /// A new empty regular file, open for writing. The caller writes it, then [`Tree::finish_file`].
    pub fn create_file(&mut self, comps: &[&[u8]]) -> TreeResult<OwnedFd> {
        let (parent, name) = self.parent(comps, true)?;
        self.clear_for(parent.as_fd(), &name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        sys::openat(parent.as_fd(), &name, flags, 0o600).map_err(sys_err("openat"))
    }

    /// Owner first: chown clears set-id bits, so a mode set before it would not be the final one.
    pub fn finish_file(&mut self, fd: BorrowedFd<'_>, attrs: &Attrs) -> TreeResult<()> {
        if let Some((uid, gid)) = attrs.owner {
            sys::fchown(fd, uid, gid).map_err(sys_err("fchown"))?;
        }
        sys::fchmod(fd, attrs.mode).map_err(sys_err("fchmod"))?;
        if let Some(t) = attrs.mtime {
            sys::futimens(fd, t).map_err(sys_err("futimens"))?;
        }
        Ok(())
    }

    /// A directory (an existing one is kept and merged into); its attributes are set in `finish`.
    pub fn make_dir(&mut self, comps: &[&[u8]], attrs: Attrs) -> TreeResult<()> {
        if !comps.is_empty() {
            let (parent, name) = self.parent(comps, true)?;
            match sys::mkdirat(parent.as_fd(), &name, 0o700) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let st = sys::lstatat(parent.as_fd(), &name).map_err(sys_err("fstatat"))?;
                    if !sys::is_dir(&st) {
                        self.clear_for(parent.as_fd(), &name)?;
                        sys::mkdirat(parent.as_fd(), &name, 0o700).map_err(sys_err("mkdirat"))?;
                    }
                }
                Err(e) => return Err(TreeError::Sys(e, "mkdirat")),
            }
        }
        self.dirs.insert(crate::names::join(comps), attrs);
        Ok(())
    }

    /// A symlink, created as it is and never followed; its target may say anything.
    pub fn symlink(&mut self, comps: &[&[u8]], target: &CStr, attrs: &Attrs) -> TreeResult<()> {
        let (parent, name) = self.parent(comps, true)?;
        self.clear_for(parent.as_fd(), &name)?;
        sys::symlinkat(target, parent.as_fd(), &name).map_err(sys_err("symlinkat"))?;
        if let Some((uid, gid)) = attrs.owner {
            sys::lchownat(parent.as_fd(), &name, uid, gid).map_err(sys_err("fchownat"))?;
        }
        if let Some(t) = attrs.mtime {
            sys::lutimensat(parent.as_fd(), &name, t).map_err(sys_err("utimensat"))?;
        }
        Ok(())
    }

    /// A hard link at `comps` to the existing non-directory at `target`, both inside the root.
    pub fn hardlink(&mut self, comps: &[&[u8]], target: &[&[u8]]) -> TreeResult<HardlinkOutcome> {
        let (tparent, tname) = match self.parent(target, false) {
            Err(TreeError::Sys(Errno::ENOENT, _)) => return Ok(HardlinkOutcome::TargetMissing),
            Err(TreeError::Symlink(p)) => return Ok(HardlinkOutcome::TargetBehindSymlink(p)),
            r => r?,
        };
        let tst = match sys::lstatat(tparent.as_fd(), &tname) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(HardlinkOutcome::TargetMissing),
            Err(e) => return Err(TreeError::Sys(e, "fstatat")),
        };
        if sys::is_dir(&tst) {
            return Ok(HardlinkOutcome::TargetIsDir);
        }
        let (parent, name) = self.parent(comps, true)?;
        if let Ok(st) = sys::lstatat(parent.as_fd(), &name) {
            if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                return Ok(HardlinkOutcome::Linked);
            }
        }
        self.clear_for(parent.as_fd(), &name)?;
        sys::linkat(tparent.as_fd(), &tname, parent.as_fd(), &name).map_err(sys_err("linkat"))?;
        Ok(HardlinkOutcome::Linked)
    }

    /// A special file (only overlay whiteouts reach here: char 0/0).
    pub fn mknod(&mut self, comps: &[&[u8]], mode: u32, dev: libc::dev_t) -> TreeResult<()> {
        let (parent, name) = self.parent(comps, true)?;
        self.clear_for(parent.as_fd(), &name)?;
        sys::mknodat(parent.as_fd(), &name, mode, dev).map_err(sys_err("mknodat"))
    }

    /// Set extended attributes on the directory `comps` (made if missing). Returns, per
    /// attribute, the errno it failed with (None: set).
    pub fn set_dir_xattrs(&mut self, comps: &[&[u8]], xattrs: &[(&CStr, &[u8])]) -> TreeResult<Vec<Option<Errno>>> {
        if !comps.is_empty() && !self.dirs.contains_key(&crate::names::join(comps)) {
            self.make_dir(comps, IMPLICIT_DIR)?;
        }
        let dir = self.dir(comps, true)?;
        let fd = sys::openat(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(sys_err("openat"))?;
        Ok(xattrs.iter().map(|(k, v)| sys::fsetxattr(fd.as_fd(), k, v).err()).collect())
    }

    /// Remove what lies at `comps`, if anything. Returns whether something was removed.
    pub fn remove(&mut self, comps: &[&[u8]]) -> TreeResult<bool> {
        let (parent, name) = match self.parent(comps, false) {
            Err(TreeError::Sys(Errno::ENOENT, _)) | Err(TreeError::NotDir(_)) => return Ok(false),
            r => r?,
        };
        self.remove_at(parent.as_fd(), &name)
    }

    /// Empty the directory `comps` of everything `keep` does not name (by canonical path);
    /// directories kept are emptied the same way. How an opaque whiteout applies to lower layers
    /// when layers are merged into one tree.
    pub fn clear_dir(&mut self, comps: &[&[u8]], keep: &dyn Fn(&[u8]) -> bool) -> TreeResult<()> {
        let dir = match self.dir(comps, false) {
            Err(TreeError::Sys(Errno::ENOENT, _)) | Err(TreeError::NotDir(_)) => return Ok(()),
            r => r?,
        };
        let base = crate::names::join(comps);
        for (name, is_dir) in sys::list_dir(dir.as_fd()).map_err(sys_err("readdir"))? {
            let mut path = base.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            if keep(&path) {
                let is_dir = match is_dir {
                    Some(d) => d,
                    None => sys::lstatat(dir.as_fd(), &name).map(|st| sys::is_dir(&st)).unwrap_or(false),
                };
                if is_dir {
                    let mut sub: Vec<&[u8]> = comps.to_vec();
                    sub.push(name.to_bytes());
                    self.clear_dir(&sub, keep)?;
                }
            } else {
                self.remove_at(dir.as_fd(), &name)?;
            }
        }
        Ok(())
    }

    /// Apply the remembered directory attributes, deepest first. A directory that has since been
    /// replaced by something else is skipped.
    pub fn finish(&mut self) -> TreeResult<()> {
        self.cache = None;
        let mut dirs: Vec<(Vec<u8>, Attrs)> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by(|a, b| depth(&b.0).cmp(&depth(&a.0)).then_with(|| a.0.cmp(&b.0)));
        for (path, attrs) in dirs {
            if path.is_empty() && self.keep_root {
                continue;
            }
            let fd = match self.open_dir_rdonly(&path) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(TreeError::Sys(e, "open directory")),
            };
            // The root, made for this tree, is still the caller's: an archive's `./` that names
            // a host account, or lets group or others write there, would give them the tree's
            // top, where they could swap the parts a root caller's sandbox later opens. Nor set-id
            // bits, which nothing unpacked keeps either.
            let (owner, mode) = if path.is_empty() { (None, attrs.mode & !0o6022) } else { (attrs.owner, attrs.mode) };
            if let Some((uid, gid)) = owner {
                sys::fchown(fd.as_fd(), uid, gid).map_err(sys_err("fchown"))?;
            }
            sys::fchmod(fd.as_fd(), mode).map_err(sys_err("fchmod"))?;
            if let Some(t) = attrs.mtime {
                sys::futimens(fd.as_fd(), t).map_err(sys_err("futimens"))?;
            }
        }
        Ok(())
    }

    fn open_dir_rdonly(&mut self, path: &[u8]) -> SysResult<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let comps: Vec<&[u8]> = if path.is_empty() { Vec::new() } else { path.split(|b| *b == b'/').collect() };
        let Some((leaf, parent)) = comps.split_last() else {
            return sys::openat(self.root.as_fd(), c".", flags, 0);
        };
        let dir = match self.resolve(parent, &crate::names::join(parent), false) {
            Ok(fd) => fd,
            Err(TreeError::Sys(e, _)) => return Err(e),
            Err(_) => return Err(Errno::ENOTDIR),
        };
        sys::openat(dir.as_fd(), &cstring(leaf), flags, 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardlinkOutcome {
    Linked,
    TargetMissing,
    TargetIsDir,
    /// The target's path runs through this symlink (never followed).
    TargetBehindSymlink(Vec<u8>),
}

fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.iter().filter(|b| **b == b'/').count()
    }
}

/// rm -r of `name` in `parent`, by fds only. A directory we own but may not write (the archive
/// made it read-only) is given u+rwx first, so a non-root caller can empty it.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    let fd = sys::openat(parent, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)?;
    let st = sys::fstat(fd.as_fd())?;
    if st.st_mode & 0o700 != 0o700 {
        let _ = sys::fchmod(fd.as_fd(), (st.st_mode & 0o7777) | 0o700);
    }
    for (child, is_dir) in sys::list_dir(fd.as_fd())? {
        let is_dir = match is_dir {
            Some(d) => d,
            None => sys::is_dir(&sys::lstatat(fd.as_fd(), &child)?),
        };
        if is_dir {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            sys::unlinkat(fd.as_fd(), &child, false)?;
        }
    }
    sys::unlinkat(parent, name, true)
}

/// Remove everything in `dir` (by fds: no path is too deep), leaving `dir` itself, given u+rwx.
pub(crate) fn empty_dir(dir: BorrowedFd<'_>) -> SysResult<()> {
    let st = sys::fstat(dir)?;
    if st.st_mode & 0o700 != 0o700 {
        sys::fchmod(dir, (st.st_mode & 0o7777) | 0o700)?;
    }
    for (child, is_dir) in sys::list_dir(dir)? {
        let is_dir = match is_dir {
            Some(d) => d,
            None => sys::is_dir(&sys::lstatat(dir, &child)?),
        };
        if is_dir {
            remove_tree(dir, &child)?;
        } else {
            sys::unlinkat(dir, &child, false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn temp() -> std::path::PathBuf {
        let base = std::env::temp_dir().join(format!("isolate-image-tree-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        base
    }

    fn tree(base: &std::path::Path) -> Tree {
        let p = cstring(base.join("root").as_os_str().as_encoded_bytes());
        Tree::new(sys::open(&p, libc::O_PATH | libc::O_DIRECTORY).unwrap())
    }

    fn c(s: &str) -> Vec<&[u8]> {
        crate::names::components(s.as_bytes()).unwrap()
    }

    const FILE: Attrs = Attrs { mode: 0o644, owner: None, mtime: Some(1_000_000) };

    #[test]
    fn never_writes_through_a_symlink() {
        let base = temp();
        let mut t = tree(&base);
        t.symlink(&c("a"), &cstring(base.join("outside").as_os_str().as_encoded_bytes()), &FILE).unwrap();
        match t.create_file(&c("a/pwned")) {
            Err(TreeError::Symlink(p)) => assert_eq!(p, b"a"),
            other => panic!("{other:?}"),
        }
        t.symlink(&c("rel"), c"../outside", &FILE).unwrap();
        assert!(matches!(t.make_dir(&c("rel/x"), FILE), Err(TreeError::Symlink(_))));
        assert_eq!(t.hardlink(&c("h"), &c("a/x")).unwrap(), HardlinkOutcome::TargetBehindSymlink(b"a".to_vec()));
        assert!(matches!(t.hardlink(&c("a/h"), &c("rel")), Err(TreeError::Symlink(_))), "nor is a link made through one");
        assert_eq!(std::fs::read_dir(base.join("outside")).unwrap().count(), 0);
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn files_dirs_links_and_finish() {
        let base = temp();
        let mut t = tree(&base);
        t.make_dir(&c("ro"), Attrs { mode: 0o555, owner: None, mtime: Some(2_000_000) }).unwrap();
        let fd = t.create_file(&c("ro/deep/f")).unwrap();
        std::fs::File::from(fd.try_clone().unwrap()).write_all(b"hello").unwrap();
        t.finish_file(fd.as_fd(), &FILE).unwrap();
        assert_eq!(t.hardlink(&c("ro/h"), &c("ro/deep/f")).unwrap(), HardlinkOutcome::Linked);
        assert_eq!(t.hardlink(&c("x"), &c("nope")).unwrap(), HardlinkOutcome::TargetMissing);
        assert_eq!(t.hardlink(&c("x"), &c("ro")).unwrap(), HardlinkOutcome::TargetIsDir);
        t.finish().unwrap();
        let root = base.join("root");
        let ro = std::fs::metadata(root.join("ro")).unwrap();
        assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
        assert_eq!(ro.mtime(), 2_000_000);
        assert_eq!(std::fs::metadata(root.join("ro/deep")).unwrap().permissions().mode() & 0o777, 0o755, "implicit dirs end 0755");
        let f = std::fs::metadata(root.join("ro/deep/f")).unwrap();
        assert_eq!((f.mtime(), f.nlink()), (1_000_000, 2));
        assert_eq!(std::fs::metadata(root.join("ro/h")).unwrap().ino(), f.ino());
        // Replacing a read-only directory tree works for its owner.
        let mut t = tree(&base);
        assert!(t.remove(&c("ro")).unwrap());
        assert!(!root.join("ro").exists());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn clear_dir_keeps_only_what_is_named() {
        let base = temp();
        let mut t = tree(&base);
        for f in ["d/old", "d/sub/old", "d/sub/new", "d/new"] {
            drop(t.create_file(&c(f)).unwrap());
        }
        t.clear_dir(&c("d"), &|p| p == b"d/sub" || p == b"d/sub/new" || p == b"d/new").unwrap();
        let root = base.join("root");
        assert!(!root.join("d/old").exists() && !root.join("d/sub/old").exists());
        assert!(root.join("d/sub/new").exists() && root.join("d/new").exists());
        std::fs::remove_dir_all(base).unwrap();
    }
}
